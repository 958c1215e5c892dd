//! Keys, roles, isolation and routing across every route, against DynamoDB Local.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::schema::assert_documented;
use common::*;
use lambda_http::Body;
use tollgate_core::tenant::ApiKeyHash;
use tollgate_usage_api::router::{Access, ROUTES};

/// A concrete URI for a route pattern.
fn concrete(pattern: &str) -> String {
    pattern
        .replace("{id}", "acme")
        .replace("{sha256}", ApiKeyHash::of(ACME_KEY).as_hex())
}

#[tokio::test]
async fn every_protected_route_needs_a_valid_unrevoked_key() {
    let h = harness("auth-401").await;
    let keys: [Option<&str>; 4] = [None, Some(REVOKED_KEY), Some("tg_never_issued"), Some("")];
    for route in ROUTES.iter().filter(|r| r.access != Access::Public) {
        for key in keys {
            let reply = h
                .call(route.method, &concrete(route.pattern), key, Some("{}"))
                .await;
            reply.expect_error(401, "unauthorized");
            assert_eq!(reply.headers["www-authenticate"], "Bearer");
            assert_documented(route.method, route.pattern, 401, &reply.json);
        }
    }
}

#[tokio::test]
async fn keys_are_read_from_bearer_authorization_or_x_api_key_only() {
    let h = harness("auth-headers").await;
    let with_header = |name: &str, value: &str| {
        lambda_http::http::Request::builder()
            .uri("/v1/usage")
            .header(name, value)
            .body(Body::Empty)
            .unwrap()
    };
    h.send(with_header("x-api-key", ACME_KEY)).await.expect(200);
    h.send(with_header("authorization", &format!("bearer {ACME_KEY}")))
        .await
        .expect(200);
    h.send(with_header("authorization", &format!("Basic {ACME_KEY}")))
        .await
        .expect_error(401, "unauthorized");
    h.send(with_header("authorization", ACME_KEY))
        .await
        .expect_error(401, "unauthorized");
    // A key is its whole text: a prefix or an extension of a valid key is unknown.
    h.get("/v1/usage", &ACME_KEY[..ACME_KEY.len() - 1])
        .await
        .expect_error(401, "unauthorized");
    h.get("/v1/usage", &format!("{ACME_KEY}x"))
        .await
        .expect_error(401, "unauthorized");
    h.get("/v1/usage", &"k".repeat(10_000))
        .await
        .expect_error(401, "unauthorized");
}

#[tokio::test]
async fn tenant_keys_are_forbidden_on_every_admin_route() {
    let h = harness("auth-403").await;
    for route in ROUTES.iter().filter(|r| r.access == Access::Admin) {
        let reply = h
            .call(
                route.method,
                &concrete(route.pattern),
                Some(ACME_KEY),
                Some("{}"),
            )
            .await;
        reply.expect_error(403, "forbidden");
        assert_documented(route.method, route.pattern, 403, &reply.json);
    }
}

#[tokio::test]
async fn tenant_keys_naming_another_tenant_get_404_on_every_tenant_route() {
    let h = harness("auth-isolation").await;
    for route in ROUTES.iter().filter(|r| r.access == Access::Tenant) {
        for other in ["globex", "nobody", "a%23b"] {
            let uri = format!("{}?tenant={other}", route.pattern);
            let reply = h.call(route.method, &uri, Some(ACME_KEY), Some("{}")).await;
            reply.expect_error(404, "not_found");
            assert_documented(route.method, route.pattern, 404, &reply.json);
        }
    }
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405_before_any_key_is_checked() {
    let h = harness("auth-routing").await;
    for uri in ["/v1/nope", "/v2/usage", "/v1/usage/", "/"] {
        h.call("GET", uri, None, None)
            .await
            .expect_error(404, "no_such_route");
    }
    let reply = h.call("DELETE", "/v1/usage", None, None).await;
    reply.expect_error(405, "method_not_allowed");
    assert_eq!(reply.headers["allow"], "GET");
    let reply = h.call("PATCH", "/v1/admin/tenants/acme", None, None).await;
    reply.expect_error(405, "method_not_allowed");
    assert_eq!(reply.headers["allow"], "GET, PUT");
}

#[tokio::test]
async fn the_openapi_document_is_served_without_a_key() {
    let h = harness("auth-openapi").await;
    let reply = h.call("GET", "/v1/openapi.json", None, None).await;
    reply.expect(200);
    assert_eq!(reply.text, tollgate_usage_api::openapi::DOCUMENT);
    assert_eq!(reply.json["openapi"], "3.1.0");
    h.call("GET", "/v1/openapi.json?format=yaml", None, None)
        .await
        .expect_error(400, "unknown_query_parameter");
}
