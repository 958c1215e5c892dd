//! `GET /v1/edge/snapshot`, against DynamoDB Local.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::schema::assert_documented;
use common::*;
use serde_json::{Value, json};
use tollgate_core::edge_snapshot::EdgeSnapshot;
use tollgate_core::tenant::ApiKeyHash;

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
