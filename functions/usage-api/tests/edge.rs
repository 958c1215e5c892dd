//! `GET /v1/edge/snapshot`, against DynamoDB Local, and the per-instance snapshot cache
//! (DynamoDB calls counted on the API's client).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use common::schema::assert_documented;
use common::*;
use serde_json::{Value, json};
use tollgate_core::edge_snapshot::EdgeSnapshot;
use tollgate_core::tenant::ApiKeyHash;
use tollgate_store::table::{PK, SK};

const PATH: &str = "/v1/edge/snapshot";

fn tenant<'a>(body: &'a Value, id: &str) -> &'a Value {
    body["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant"] == id)
        .unwrap_or_else(|| panic!("{id} is not in the snapshot"))
}

#[tokio::test]
async fn the_snapshot_lists_every_tenant_its_limits_quota_use_and_active_keys() {
    let h = harness("edge-snapshot").await;
    h.apply(vec![
        requests_row("acme", "2026-11-23T09", None, 1000),
        requests_row("acme", "2026-11-02T00", None, 2000),
        requests_row("globex", "2026-11-23T12", None, 99),
    ])
    .await;
    let reply = h.get(PATH, ADMIN_KEY).await;
    reply.expect(200);
    assert_documented("GET", PATH, 200, &reply.json);
    let body = &reply.json;
    assert_eq!(body["schema"], "tollgate.edge-snapshot/1");
    assert_eq!(body["generatedAt"], NOW);
    let ids: Vec<&str> = body["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["acme", "globex", "podco"]);
    let acme = tenant(body, "acme");
    assert_eq!(acme["plan"], "starter");
    assert_eq!(acme["blocked"], Value::Null);
    let day = acme["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["meter"] == "api_requests" && q["period"] == "day")
        .unwrap();
    assert_eq!(day["limit"], "20000");
    assert_eq!(day["used"], "1000");
    assert_eq!(day["windowStart"], "2026-11-23T00:00:00Z");
    assert_eq!(tenant(body, "globex")["quotas"][0]["used"], "99");
    // Active tenant keys only: no admin key, no revoked key, never a secret.
    let keys = body["apiKeys"].as_array().unwrap();
    let digests: Vec<&str> = keys.iter().map(|k| k["sha256"].as_str().unwrap()).collect();
    for (secret, tenant_id) in [
        (ACME_KEY, "acme"),
        (GLOBEX_KEY, "globex"),
        (PODCO_KEY, "podco"),
    ] {
        let digest = ApiKeyHash::of(secret);
        let listed = keys
            .iter()
            .find(|k| k["sha256"] == digest.as_hex())
            .unwrap();
        assert_eq!(listed["tenant"], tenant_id);
    }
    assert_eq!(digests.len(), 3);
    assert!(!digests.contains(&ApiKeyHash::of(ADMIN_KEY).as_hex()));
    assert!(!digests.contains(&ApiKeyHash::of(REVOKED_KEY).as_hex()));
    assert!(!reply.text.contains(ACME_KEY));
    // The reply is the contract the gateway reads.
    let snapshot: EdgeSnapshot = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(snapshot.tenants.len(), 3);
}

#[tokio::test]
async fn a_suspended_tenant_is_listed_as_blocked() {
    let h = harness("edge-snapshot-suspended").await;
    let mut profile = h.get("/v1/admin/tenants/globex", ADMIN_KEY).await.json;
    profile["status"] = json!("suspended");
    h.call(
        "PUT",
        "/v1/admin/tenants/globex",
        Some(ADMIN_KEY),
        Some(&profile.to_string()),
    )
    .await
    .expect(200);
    let reply = h.get(PATH, ADMIN_KEY).await;
    reply.expect(200);
    assert_documented("GET", PATH, 200, &reply.json);
    assert_eq!(tenant(&reply.json, "globex")["blocked"], "suspended");
    assert_eq!(tenant(&reply.json, "acme")["blocked"], Value::Null);
}

#[tokio::test]
async fn the_snapshot_is_for_admin_keys_only() {
    let h = harness("edge-snapshot-auth").await;
    let reply = h.get(PATH, ACME_KEY).await;
    reply.expect_error(403, "forbidden");
    assert_documented("GET", PATH, 403, &reply.json);
    let reply = h.call("GET", PATH, None, None).await;
    reply.expect_error(401, "unauthorized");
    assert_documented("GET", PATH, 401, &reply.json);
    h.get("/v1/edge/snapshot?tenant=acme", ADMIN_KEY)
        .await
        .expect(400);
}

/// Long enough that no test outlives it.
const LONG: Duration = Duration::from_secs(600);

/// The `used` of the tenant's `api_requests` day quota.
fn used_today(body: &Value, id: &str) -> String {
    tenant(body, id)["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["meter"] == "api_requests" && q["period"] == "day")
        .unwrap()["used"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The calls of a request served from the cache: the caller's key is still checked, so
/// a revoked gateway key stops working at once; nothing else is read.
fn key_check_only() -> BTreeMap<String, u64> {
    BTreeMap::from([("GetItem".to_owned(), 1)])
}

fn queries(calls: &BTreeMap<String, u64>) -> u64 {
    calls.get("Query").copied().unwrap_or(0)
}

#[tokio::test]
async fn within_the_max_age_the_snapshot_is_served_again_byte_for_byte_without_reading_the_table() {
    let (h, calls) = counted_harness("edge-cache-hit", LONG).await;
    h.apply(vec![requests_row("acme", "2026-11-23T09", None, 1000)])
        .await;
    calls.take();
    let first = h.get(PATH, ADMIN_KEY).await;
    first.expect(200);
    let built = calls.take();
    assert!(queries(&built) >= 5, "{built:?}");
    assert_eq!(used_today(&first.json, "acme"), "1000");
    // The cached reply is the reply an uncached API gives for the same data and instant.
    let twin = h.uncached_twin();
    let uncached = twin.get(PATH, ADMIN_KEY).await;
    assert_eq!(first.text, uncached.text);
    assert_eq!(first.headers, uncached.headers);
    calls.take();

    h.apply(vec![requests_row("acme", "2026-11-23T10", None, 500)])
        .await;
    calls.take();
    let second = h.get(PATH, ADMIN_KEY).await;
    second.expect(200);
    assert_eq!(calls.take(), key_check_only());
    assert_eq!(second.text, first.text);
    assert_eq!(second.headers, first.headers);
    assert_eq!(second.json["generatedAt"], NOW);
    // The new usage is there, only not in this instance's snapshot yet.
    assert_eq!(
        used_today(&twin.get(PATH, ADMIN_KEY).await.json, "acme"),
        "1500"
    );
}

#[tokio::test]
async fn a_snapshot_older_than_the_max_age_is_built_again() {
    let max_age = Duration::from_millis(800);
    let (h, calls) = counted_harness("edge-cache-expiry", max_age).await;
    h.apply(vec![requests_row("acme", "2026-11-23T09", None, 1000)])
        .await;
    let first = h.get(PATH, ADMIN_KEY).await;
    assert_eq!(used_today(&first.json, "acme"), "1000");
    h.apply(vec![requests_row("acme", "2026-11-23T10", None, 500)])
        .await;
    tokio::time::sleep(max_age + Duration::from_millis(100)).await;
    calls.take();
    let second = h.get(PATH, ADMIN_KEY).await;
    second.expect(200);
    let rebuilt = calls.take();
    assert!(queries(&rebuilt) >= 5, "{rebuilt:?}");
    assert_eq!(used_today(&second.json, "acme"), "1500");
}

#[tokio::test]
async fn a_max_age_of_zero_builds_every_snapshot() {
    let (h, calls) = counted_harness("edge-cache-off", Duration::ZERO).await;
    let first = h.get(PATH, ADMIN_KEY).await;
    first.expect(200);
    let built = calls.take();
    assert!(queries(&built) >= 5, "{built:?}");
    h.apply(vec![requests_row("acme", "2026-11-23T09", None, 1000)])
        .await;
    calls.take();
    let second = h.get(PATH, ADMIN_KEY).await;
    assert_eq!(calls.take(), built, "the same reads again");
    assert_eq!(used_today(&first.json, "acme"), "0");
    assert_eq!(used_today(&second.json, "acme"), "1000");
}

#[tokio::test]
async fn requests_arriving_during_a_build_are_served_its_result_instead_of_building() {
    let (h, calls) = counted_harness("edge-cache-single-flight", LONG).await;
    let uncached = h.uncached_twin().get(PATH, ADMIN_KEY).await;
    let one_build = calls.take();
    let (a, b, c, d) = tokio::join!(
        h.get(PATH, ADMIN_KEY),
        h.get(PATH, ADMIN_KEY),
        h.get(PATH, ADMIN_KEY),
        h.get(PATH, ADMIN_KEY),
    );
    for reply in [&a, &b, &c, &d] {
        reply.expect(200);
        assert_eq!(reply.text, uncached.text);
    }
    // One build's reads, plus the other three requests' key checks.
    let mut expected = one_build;
    *expected.entry("GetItem".to_owned()).or_default() += 3;
    assert_eq!(calls.take(), expected);
}

#[tokio::test]
async fn a_failed_build_is_not_kept_and_the_next_request_builds_again() {
    let (h, calls) = counted_harness("edge-cache-error", LONG).await;
    let client = h.store().client();
    let table = h.store().table();
    // A block with no document: the store refuses to read the block list.
    client
        .put_item()
        .table_name(table)
        .item(PK, AttributeValue::S("BUDGET_BLOCKS".into()))
        .item(SK, AttributeValue::S("TENANT#broken".into()))
        .send()
        .await
        .unwrap();
    h.get(PATH, ADMIN_KEY).await.expect_error(500, "internal");
    client
        .delete_item()
        .table_name(table)
        .key(PK, AttributeValue::S("BUDGET_BLOCKS".into()))
        .key(SK, AttributeValue::S("TENANT#broken".into()))
        .send()
        .await
        .unwrap();
    calls.take();
    let reply = h.get(PATH, ADMIN_KEY).await;
    reply.expect(200);
    let rebuilt = calls.take();
    assert!(queries(&rebuilt) >= 5, "{rebuilt:?}");
    assert_eq!(h.get(PATH, ADMIN_KEY).await.text, reply.text);
    assert_eq!(calls.take(), key_check_only());
}

#[tokio::test]
async fn refused_requests_never_reach_the_cache() {
    let (h, calls) = counted_harness("edge-cache-refused", LONG).await;
    let built = h.get(PATH, ADMIN_KEY).await;
    built.expect(200);
    h.get(PATH, ACME_KEY).await.expect_error(403, "forbidden");
    h.call("GET", PATH, None, None)
        .await
        .expect_error(401, "unauthorized");
    h.get(&format!("{PATH}?tenant=acme"), ADMIN_KEY)
        .await
        .expect(400);
    calls.take();
    assert_eq!(h.get(PATH, ADMIN_KEY).await.text, built.text);
    assert_eq!(calls.take(), key_check_only());
}
