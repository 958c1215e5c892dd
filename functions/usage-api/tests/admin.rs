//! Admin routes: tenants, plans, keys and rejected messages, against DynamoDB Local.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::schema::assert_documented;
use common::*;
use serde_json::{Value, json};
use tollgate_core::message::{MessageError, Rejection};
use tollgate_core::tenant::ApiKeyHash;

async fn put(h: &Harness, uri: &str, key: &str, body: &str) -> Reply {
    h.call("PUT", uri, Some(key), Some(body)).await
}

async fn delete(h: &Harness, uri: &str, key: &str) -> Reply {
    h.call("DELETE", uri, Some(key), None).await
}

fn ids(reply: &Reply, list: &str, field: &str) -> Vec<String> {
    reply.json[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t[field].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn tenants_are_listed_in_pages() {
    let h = harness("admin-tenants-list").await;
    let first = h.get("/v1/admin/tenants?limit=2", ADMIN_KEY).await;
    first.expect(200);
    assert_documented("GET", "/v1/admin/tenants", 200, &first.json);
    assert_eq!(ids(&first, "tenants", "tenant"), ["acme", "globex"]);
    assert_eq!(first.json["next"], "globex");
    let second = h
        .get("/v1/admin/tenants?limit=2&after=globex", ADMIN_KEY)
        .await;
    assert_eq!(ids(&second, "tenants", "tenant"), ["podco"]);
    assert_eq!(second.json["next"], Value::Null);
    for uri in [
        "/v1/admin/tenants?limit=0",
        "/v1/admin/tenants?limit=lots",
        "/v1/admin/tenants?after=a%23b",
    ] {
        let reply = h.get(uri, ADMIN_KEY).await;
        reply.expect(400);
        assert_documented("GET", "/v1/admin/tenants", 400, &reply.json);
    }
}

#[tokio::test]
async fn a_tenant_is_created_once_on_an_existing_plan() {
    let h = harness("admin-tenants-create").await;
    let body = r#"{"tenant": "initech", "displayName": "Initech", "plan": "professional",
                   "stripeCustomerId": "cus_123"}"#;
    let created = h.post("/v1/admin/tenants", ADMIN_KEY, body).await;
    created.expect(201);
    assert_documented("POST", "/v1/admin/tenants", 201, &created.json);
    assert_eq!(created.json["status"], "active");
    assert_eq!(created.json["createdAt"], NOW);
    let stored = h.get("/v1/admin/tenants/initech", ADMIN_KEY).await;
    assert_eq!(stored.json, created.json);
    h.post("/v1/admin/tenants", ADMIN_KEY, body)
        .await
        .expect_error(409, "tenant_exists");
}

#[tokio::test]
async fn a_tenant_creation_with_a_bad_body_is_refused() {
    let h = harness("admin-tenants-create-bad").await;
    for (body, code) in [
        ("{", "bad_json"),
        (
            r#"{"tenant": "a#b", "displayName": "x", "plan": "starter"}"#,
            "bad_json",
        ),
        (
            r#"{"tenant": "x", "displayName": "x", "plan": "starter", "colour": 1}"#,
            "bad_json",
        ),
        (
            r#"{"tenant": "x", "displayName": " ", "plan": "starter"}"#,
            "bad_display_name",
        ),
        (
            r#"{"tenant": "x", "displayName": "x", "plan": "platinum"}"#,
            "unknown_plan",
        ),
        (
            r#"{"tenant": "x", "displayName": "x", "plan": "starter", "stripeCustomerId": "acct_1"}"#,
            "bad_stripe_customer_id",
        ),
    ] {
        let reply = h.post("/v1/admin/tenants", ADMIN_KEY, body).await;
        reply.expect_error(400, code);
        assert_documented("POST", "/v1/admin/tenants", 400, &reply.json);
    }
}

#[tokio::test]
async fn a_tenant_is_read_and_replaced_by_id() {
    let h = harness("admin-tenants-put").await;
    let read = h.get("/v1/admin/tenants/acme", ADMIN_KEY).await;
    read.expect(200);
    assert_documented("GET", "/v1/admin/tenants/{id}", 200, &read.json);
    // What GET returns can be PUT back with changes; createdAt stays.
    let mut profile = read.json.clone();
    profile["plan"] = json!("professional");
    profile["status"] = json!("suspended");
    profile["createdAt"] = json!("2030-01-01T00:00:00Z");
    let replaced = put(
        &h,
        "/v1/admin/tenants/acme",
        ADMIN_KEY,
        &profile.to_string(),
    )
    .await;
    replaced.expect(200);
    assert_documented("PUT", "/v1/admin/tenants/{id}", 200, &replaced.json);
    assert_eq!(replaced.json["plan"], "professional");
    assert_eq!(replaced.json["createdAt"], "2026-09-01T00:00:00Z");
    let again = h.get("/v1/admin/tenants/acme", ADMIN_KEY).await;
    assert_eq!(again.json, replaced.json);
}

#[tokio::test]
async fn reading_or_replacing_a_tenant_checks_the_id_and_body() {
    let h = harness("admin-tenants-bad").await;
    h.get("/v1/admin/tenants/nobody", ADMIN_KEY)
        .await
        .expect_error(404, "not_found");
    h.get("/v1/admin/tenants/a%23b", ADMIN_KEY)
        .await
        .expect_error(400, "bad_path_parameter");
    let body = r#"{"displayName": "A", "plan": "starter", "status": "active"}"#;
    put(&h, "/v1/admin/tenants/nobody", ADMIN_KEY, body)
        .await
        .expect_error(404, "not_found");
    put(
        &h,
        "/v1/admin/tenants/acme",
        ADMIN_KEY,
        r#"{"tenant": "globex", "displayName": "A", "plan": "starter", "status": "active"}"#,
    )
    .await
    .expect_error(400, "tenant_mismatch");
    put(
        &h,
        "/v1/admin/tenants/acme",
        ADMIN_KEY,
        r#"{"displayName": "A"}"#,
    )
    .await
    .expect_error(400, "bad_json");
}

fn plan_version(effective_from: &str, currency: &str, base_fee: &str) -> String {
    json!({"name": "starter", "effectiveFrom": effective_from, "currency": currency,
           "baseFee": base_fee, "meters": []})
    .to_string()
}

#[tokio::test]
async fn plans_are_listed_and_new_versions_added() {
    let h = harness("admin-plans").await;
    let all = h.get("/v1/admin/plans", ADMIN_KEY).await;
    all.expect(200);
    assert_documented("GET", "/v1/admin/plans", 200, &all.json);
    assert_eq!(all.json["plans"].as_array().unwrap().len(), 5);
    let created = h
        .post(
            "/v1/admin/plans",
            ADMIN_KEY,
            &plan_version("2027-01-01T00:00:00Z", "USD", "35"),
        )
        .await;
    created.expect(201);
    assert_documented("POST", "/v1/admin/plans", 201, &created.json);
    let starter = h.get("/v1/admin/plans?name=starter", ADMIN_KEY).await;
    let versions: Vec<&str> = starter.json["plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["effectiveFrom"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z"]);
    // A brand-new plan may start in the past.
    let new_plan = json!({"name": "legacy", "effectiveFrom": "2020-01-01T00:00:00Z",
                          "currency": "EUR", "baseFee": "5"});
    h.post("/v1/admin/plans", ADMIN_KEY, &new_plan.to_string())
        .await
        .expect(201);
}

#[tokio::test]
async fn plan_versions_are_validated_and_immutable() {
    let h = harness("admin-plans-bad").await;
    for (body, status, code) in [
        ("[]".to_owned(), 400, "bad_json"),
        (
            plan_version("2027-01-01T00:00:00Z", "USD", "-1"),
            400,
            "invalid_plan",
        ),
        (
            plan_version("2027-01-01T00:00:00Z", "XYZ", "1"),
            400,
            "invalid_plan",
        ),
        (
            plan_version("2026-11-01T00:00:00Z", "USD", "1"),
            400,
            "effective_in_past",
        ),
        (
            plan_version("2027-01-01T00:00:00Z", "EUR", "1"),
            400,
            "currency_mismatch",
        ),
    ] {
        let reply = h.post("/v1/admin/plans", ADMIN_KEY, &body).await;
        reply.expect_error(status, code);
        assert_documented("POST", "/v1/admin/plans", status, &reply.json);
    }
    let body = plan_version("2027-01-01T00:00:00Z", "USD", "35");
    h.post("/v1/admin/plans", ADMIN_KEY, &body)
        .await
        .expect(201);
    let again = h.post("/v1/admin/plans", ADMIN_KEY, &body).await;
    again.expect_error(409, "plan_version_exists");
    assert_documented("POST", "/v1/admin/plans", 409, &again.json);
    h.get("/v1/admin/plans?name=a%23b", ADMIN_KEY)
        .await
        .expect_error(400, "bad_query_parameter");
}

#[tokio::test]
async fn a_created_key_is_shown_once_works_and_stops_working_when_revoked() {
    let h = harness("admin-keys").await;
    let created = h
        .post(
            "/v1/admin/tenants/globex/keys",
            ADMIN_KEY,
            r#"{"label": "ci-deploy"}"#,
        )
        .await;
    created.expect(201);
    assert_documented("POST", "/v1/admin/tenants/{id}/keys", 201, &created.json);
    let secret = created.json["key"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("tg_") && secret.len() == 67, "{secret}");
    let digest = ApiKeyHash::of(&secret).as_hex().to_owned();
    assert_eq!(created.json["hash"], digest.as_str());
    assert_eq!(created.json["tenant"], "globex");
    assert_eq!(created.json["role"], "tenant");

    let usage = h.get("/v1/usage", &secret).await;
    usage.expect(200);
    assert_eq!(usage.json["tenant"], "globex");

    let listed = h.get("/v1/admin/tenants/globex/keys", ADMIN_KEY).await;
    listed.expect(200);
    assert_documented("GET", "/v1/admin/tenants/{id}/keys", 200, &listed.json);
    assert_eq!(ids(&listed, "keys", "hash").len(), 2);
    assert!(ids(&listed, "keys", "hash").contains(&digest));
    assert!(
        !listed.text.contains(&secret),
        "listings never show secrets"
    );

    let revoked = delete(&h, &format!("/v1/admin/keys/{digest}"), ADMIN_KEY).await;
    revoked.expect(200);
    assert_documented("DELETE", "/v1/admin/keys/{sha256}", 200, &revoked.json);
    assert_eq!(revoked.json["revokedAt"], NOW);
    h.get("/v1/usage", &secret)
        .await
        .expect_error(401, "unauthorized");
}

#[tokio::test]
async fn keys_are_created_with_an_empty_body_too() {
    let h = harness("admin-keys-empty").await;
    let created = h
        .call("POST", "/v1/admin/tenants/acme/keys", Some(ADMIN_KEY), None)
        .await;
    created.expect(201);
    assert_eq!(created.json["label"], "");
}

#[tokio::test]
async fn key_routes_check_tenants_digests_and_labels() {
    let h = harness("admin-keys-bad").await;
    h.post("/v1/admin/tenants/nobody/keys", ADMIN_KEY, "{}")
        .await
        .expect_error(404, "not_found");
    h.get("/v1/admin/tenants/nobody/keys", ADMIN_KEY)
        .await
        .expect_error(404, "not_found");
    h.post(
        "/v1/admin/tenants/acme/keys",
        ADMIN_KEY,
        &json!({"label": "x".repeat(65)}).to_string(),
    )
    .await
    .expect_error(400, "bad_label");
    h.post(
        "/v1/admin/tenants/acme/keys",
        ADMIN_KEY,
        r#"{"role": "admin"}"#,
    )
    .await
    .expect_error(400, "bad_json");
    delete(&h, "/v1/admin/keys/not-a-digest", ADMIN_KEY)
        .await
        .expect_error(400, "bad_path_parameter");
    let unknown = ApiKeyHash::of("never issued").as_hex().to_owned();
    let reply = delete(&h, &format!("/v1/admin/keys/{unknown}"), ADMIN_KEY).await;
    reply.expect_error(404, "not_found");
    assert_documented("DELETE", "/v1/admin/keys/{sha256}", 404, &reply.json);
}

#[tokio::test]
async fn rejected_messages_are_listed_in_pages() {
    let h = harness("admin-rejected").await;
    for i in 0..3 {
        let rejection = Rejection::new(
            &format!("msg-{i}"),
            "{not json",
            &MessageError::NotJson("expected value".into()),
            at(&format!("2026-11-23T1{i}:00:00Z")),
        );
        h.store().record_rejection(&rejection).await.unwrap();
    }
    let first = h.get("/v1/admin/rejected?limit=2", ADMIN_KEY).await;
    first.expect(200);
    assert_documented("GET", "/v1/admin/rejected", 200, &first.json);
    assert_eq!(ids(&first, "rejections", "messageId"), ["msg-0", "msg-1"]);
    assert_eq!(first.json["rejections"][0]["code"], "not_json");
    let next = first.json["next"].as_str().unwrap();
    let second = h
        .get(
            &format!("/v1/admin/rejected?limit=2&after={}", encode(next)),
            ADMIN_KEY,
        )
        .await;
    second.expect(200);
    assert_eq!(ids(&second, "rejections", "messageId"), ["msg-2"]);
    assert_eq!(second.json["next"], Value::Null);
    h.get("/v1/admin/rejected?limit=5000", ADMIN_KEY)
        .await
        .expect_error(400, "bad_query_parameter");
}

/// Percent-encodes a query value (cursors hold `:` `#` `+`).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
