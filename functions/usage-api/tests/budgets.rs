//! `GET/PUT /v1/budget`, `GET /v1/alerts`, `POST /v1/alerts/{id}/ack`, the budget blocks
//! in the edge snapshot and the admin webhook routes, against DynamoDB Local.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;

use common::schema::assert_documented;
use common::*;
use rust_decimal_macros::dec;
use serde_json::{Value, json};
use tollgate_core::alert::alerts_due;
use tollgate_core::budget::{Budget, evaluate};
use tollgate_core::money::Currency;
use tollgate_core::webhook::WebhookSecret;
use tollgate_core::window::{Granularity, Window};
use tollgate_store::BudgetBlock;

async fn put(h: &Harness, uri: &str, key: &str, body: &str) -> Reply {
    h.call("PUT", uri, Some(key), Some(body)).await
}

async fn delete(h: &Harness, uri: &str, key: &str) -> Reply {
    h.call("DELETE", uri, Some(key), None).await
}

/// acme's month so far: 3,500 requests, inside the starter allowance, so the spend is
/// the 29 USD base fee.
async fn with_usage(name: &str) -> Harness {
    let h = harness(name).await;
    h.apply(vec![
        requests_row("acme", "2026-11-02T00", None, 3500),
        requests_row("globex", "2026-11-02T00", None, 10),
    ])
    .await;
    h
}

fn blocked(snapshot: &Value, id: &str) -> Value {
    snapshot["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant"] == id)
        .unwrap_or_else(|| panic!("{id} is not in the snapshot"))["blocked"]
        .clone()
}

fn month(key: &str) -> Window {
    Window::parse_key(Granularity::Month, key).unwrap()
}

#[tokio::test]
async fn a_tenant_sets_its_budget_and_reads_it_with_the_months_evaluation() {
    let h = with_usage("budget-put-get").await;
    h.get("/v1/budget", ACME_KEY)
        .await
        .expect_error(404, "no_budget");
    let body = r#"{"monthlyAmount": "50", "currency": "USD", "thresholds": [50, 100]}"#;
    let set = put(&h, "/v1/budget", ACME_KEY, body).await;
    set.expect(200);
    assert_documented("PUT", "/v1/budget", 200, &set.json);
    assert_eq!(set.json["tenant"], "acme");
    assert_eq!(set.json["asOf"], NOW);
    assert_eq!(set.json["period"]["key"], "2026-11");
    assert_eq!(
        set.json["budget"],
        json!({"monthlyAmount": "50", "currency": "USD", "thresholds": [50, 100],
               "severities": {"warningAt": 80, "criticalAt": 95}, "hardLimit": false})
    );
    let evaluation = &set.json["evaluation"];
    assert_eq!(evaluation["spent"], "29.00");
    assert_eq!(evaluation["percentUsed"], "58.00");
    assert_eq!(evaluation["verdict"], "allow");
    assert_eq!(
        evaluation["crossed"],
        json!([{"threshold": 50, "severity": "info"}])
    );
    assert_eq!(set.json["spend"]["total"], "29.00");
    let read = h.get("/v1/budget", ACME_KEY).await;
    read.expect(200);
    assert_documented("GET", "/v1/budget", 200, &read.json);
    assert_eq!(read.json, set.json);
    // An admin names the tenant; the budget is the one acme set.
    let admin = h.get("/v1/budget?tenant=acme", ADMIN_KEY).await;
    assert_eq!(admin.json, set.json);
}

#[tokio::test]
async fn the_base_fee_is_not_extrapolated_in_the_budget_forecast() {
    // 29 USD after three quarters of the month is all base fee: the month ends at 29,
    // under a 30 USD budget, where a straight line through 29 would end near 38.6.
    let h = with_usage("budget-forecast").await;
    let body = r#"{"monthlyAmount": "30", "currency": "USD"}"#;
    let set = put(&h, "/v1/budget", ACME_KEY, body).await;
    set.expect(200);
    let forecast = &set.json["evaluation"]["forecast"];
    assert_eq!(forecast["outlook"], json!({"status": "withinBudget"}));
    assert_eq!(forecast["projectedSpend"], "29.00");
    let reply = h.get("/v1/forecast", ACME_KEY).await;
    reply.expect(200);
    assert_documented("GET", "/v1/forecast", 200, &reply.json);
    assert_eq!(reply.json["budget"]["evaluation"], set.json["evaluation"]);
}

#[tokio::test]
async fn an_invalid_budget_is_refused_with_every_problem_and_nothing_is_stored() {
    let h = with_usage("budget-invalid").await;
    let reply = put(
        &h,
        "/v1/budget",
        ACME_KEY,
        r#"{"monthlyAmount": "-5", "currency": "XYZ", "thresholds": [0, 50, 50],
            "severities": {"warningAt": 90, "criticalAt": 80}}"#,
    )
    .await;
    reply.expect_error(400, "invalid_budget");
    assert_documented("PUT", "/v1/budget", 400, &reply.json);
    let message = reply.json["message"].as_str().unwrap();
    for path in [
        "monthlyAmount:",
        "currency:",
        "thresholds[0]:",
        "thresholds[2]:",
        "severities:",
    ] {
        assert!(message.contains(path), "{path} missing from {message}");
    }
    for (body, code) in [
        ("", "bad_json"),
        ("{", "bad_json"),
        (r#"{"currency": "USD"}"#, "bad_json"),
        (
            r#"{"monthlyAmount": "5", "currency": "USD", "colour": 1}"#,
            "bad_json",
        ),
        (
            r#"{"monthlyAmount": "5", "currency": "EUR"}"#,
            "currency_mismatch",
        ),
    ] {
        let reply = put(&h, "/v1/budget", ACME_KEY, body).await;
        reply.expect_error(400, code);
        assert_documented("PUT", "/v1/budget", 400, &reply.json);
    }
    h.get("/v1/budget", ACME_KEY)
        .await
        .expect_error(404, "no_budget");
    h.get("/v1/budget?extra=1", ACME_KEY)
        .await
        .expect_error(400, "unknown_query_parameter");
}

#[tokio::test]
async fn a_tenant_can_neither_read_nor_set_another_tenants_budget() {
    let h = with_usage("budget-isolation").await;
    let body = r#"{"monthlyAmount": "500", "currency": "USD"}"#;
    put(&h, "/v1/budget?tenant=globex", ADMIN_KEY, body)
        .await
        .expect(200);
    let reply = h.get("/v1/budget?tenant=globex", ACME_KEY).await;
    reply.expect_error(404, "not_found");
    assert_documented("GET", "/v1/budget", 404, &reply.json);
    let low = r#"{"monthlyAmount": "1", "currency": "USD", "hardLimit": true}"#;
    put(&h, "/v1/budget?tenant=globex", ACME_KEY, low)
        .await
        .expect_error(404, "not_found");
    let globex = h.get("/v1/budget", GLOBEX_KEY).await;
    assert_eq!(globex.json["budget"]["monthlyAmount"], "500");
    h.get("/v1/budget", ACME_KEY)
        .await
        .expect_error(404, "no_budget");
    put(&h, "/v1/budget", ADMIN_KEY, body)
        .await
        .expect_error(400, "tenant_required");
    h.call("PUT", "/v1/budget", None, Some(body))
        .await
        .expect_error(401, "unauthorized");
    assert!(h.store().budget_blocks().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_used_up_hard_limit_blocks_at_the_edge_at_once_and_raising_the_budget_lifts_it() {
    let h = with_usage("budget-block-flow").await;
    let snapshot = h.get("/v1/edge/snapshot", ADMIN_KEY).await;
    assert_eq!(blocked(&snapshot.json, "acme"), Value::Null);

    let low = r#"{"monthlyAmount": "20", "currency": "USD", "hardLimit": true}"#;
    let set = put(&h, "/v1/budget", ACME_KEY, low).await;
    set.expect(200);
    assert_eq!(set.json["evaluation"]["verdict"], "block");
    assert_eq!(
        set.json["evaluation"]["forecast"]["outlook"]["status"],
        "exceeded"
    );
    let snapshot = h.get("/v1/edge/snapshot", ADMIN_KEY).await;
    snapshot.expect(200);
    assert_documented("GET", "/v1/edge/snapshot", 200, &snapshot.json);
    assert_eq!(blocked(&snapshot.json, "acme"), "budget_hard_limit");
    assert_eq!(blocked(&snapshot.json, "globex"), Value::Null);
    assert_eq!(
        h.store().budget_blocks().await.unwrap(),
        [BudgetBlock {
            tenant: tenant_id("acme"),
            month: month("2026-11"),
            since: now(),
        }]
    );
    // Setting a blocking budget again keeps the block as it was.
    put(&h, "/v1/budget", ACME_KEY, low).await.expect(200);
    assert_eq!(h.store().budget_blocks().await.unwrap().len(), 1);

    let raised = r#"{"monthlyAmount": "100", "currency": "USD", "hardLimit": true}"#;
    let set = put(&h, "/v1/budget", ACME_KEY, raised).await;
    set.expect(200);
    assert_eq!(set.json["evaluation"]["verdict"], "allow");
    let snapshot = h.get("/v1/edge/snapshot", ADMIN_KEY).await;
    assert_eq!(blocked(&snapshot.json, "acme"), Value::Null);
    assert!(h.store().budget_blocks().await.unwrap().is_empty());

    // Without a hard limit nothing blocks, however far over the budget.
    let soft = r#"{"monthlyAmount": "1", "currency": "USD"}"#;
    let set = put(&h, "/v1/budget", ACME_KEY, soft).await;
    assert_eq!(set.json["evaluation"]["verdict"], "allow");
    assert!(h.store().budget_blocks().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_snapshot_skips_blocks_of_earlier_months_and_prefers_suspension() {
    let h = with_usage("budget-block-snapshot").await;
    for (tenant, key) in [("globex", "2026-11"), ("podco", "2026-10")] {
        h.store()
            .block_for_budget(&BudgetBlock {
                tenant: tenant_id(tenant),
                month: month(key),
                since: at("2026-10-20T00:00:00Z"),
            })
            .await
            .unwrap();
    }
    let mut profile = h.get("/v1/admin/tenants/globex", ADMIN_KEY).await.json;
    profile["status"] = json!("suspended");
    put(
        &h,
        "/v1/admin/tenants/globex",
        ADMIN_KEY,
        &profile.to_string(),
    )
    .await
    .expect(200);
    let snapshot = h.get("/v1/edge/snapshot", ADMIN_KEY).await;
    snapshot.expect(200);
    assert_documented("GET", "/v1/edge/snapshot", 200, &snapshot.json);
    assert_eq!(blocked(&snapshot.json, "globex"), "suspended");
    assert_eq!(blocked(&snapshot.json, "podco"), Value::Null);
    assert_eq!(blocked(&snapshot.json, "acme"), Value::Null);
}

/// Alerts as the budget Lambda raises them: acme's November run (85 of 100 spent:
/// 50 %, 80 % and the forecast) and an October 100 % alert raised a month earlier;
/// globex's November 50 %.
async fn with_alerts(name: &str) -> Harness {
    let h = harness(name).await;
    let budget = Budget::new(dec!(100), Currency::USD).unwrap();
    let mut raised = Vec::new();
    for (tenant, spent, at_text) in [
        ("acme", dec!(85), NOW),
        ("acme", dec!(100), "2026-10-30T08:00:00Z"),
        ("globex", dec!(55), NOW),
    ] {
        let at_time = at(at_text);
        let window = Window::containing(Granularity::Month, at_time);
        let evaluation = evaluate(&budget, spent, at_time, window);
        let tenant = tenant_id(tenant);
        let mut due = alerts_due(
            &tenant,
            window,
            &budget,
            &evaluation,
            &BTreeSet::new(),
            false,
            at_time,
        );
        if spent == dec!(100) {
            due.retain(|a| a.id.as_str().ends_with("threshold-100"));
        }
        raised.extend(due);
    }
    for alert in &raised {
        assert!(h.store().create_alert(alert).await.unwrap());
    }
    h
}

fn alert_ids(reply: &Reply) -> Vec<String> {
    reply.json["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn alerts_are_listed_newest_first_and_by_month() {
    let h = with_alerts("alerts-list").await;
    let reply = h.get("/v1/alerts", ACME_KEY).await;
    reply.expect(200);
    assert_documented("GET", "/v1/alerts", 200, &reply.json);
    assert_eq!(
        alert_ids(&reply),
        [
            "2026-11.forecast",
            "2026-11.threshold-80",
            "2026-11.threshold-50",
            "2026-10.threshold-100",
        ]
    );
    let first = &reply.json["alerts"][1];
    assert_eq!(first["tenant"], "acme");
    assert_eq!(
        first["trigger"],
        json!({"kind": "threshold", "threshold": 80})
    );
    assert_eq!(first["severity"], "warning");
    assert_eq!(first["spent"], "85");
    assert_eq!(first["delivery"]["status"], "no_webhook");
    assert!(first.get("acknowledgedAt").is_none());
    let october = h.get("/v1/alerts?month=2026-10", ACME_KEY).await;
    october.expect(200);
    assert_eq!(alert_ids(&october), ["2026-10.threshold-100"]);
    let none = h.get("/v1/alerts?month=2026-09", ACME_KEY).await;
    assert_eq!(none.json, json!({"alerts": []}));
    for uri in ["/v1/alerts?month=2026-13", "/v1/alerts?month=november"] {
        let reply = h.get(uri, ACME_KEY).await;
        reply.expect_error(400, "bad_query_parameter");
        assert_documented("GET", "/v1/alerts", 400, &reply.json);
    }
    let admin = h.get("/v1/alerts?tenant=globex", ADMIN_KEY).await;
    assert_eq!(alert_ids(&admin), ["2026-11.threshold-50"]);
}

#[tokio::test]
async fn an_alert_is_acknowledged_by_its_tenant_only() {
    let h = with_alerts("alerts-ack").await;
    let uri = "/v1/alerts/2026-10.threshold-100/ack";
    // globex has no such alert: it cannot acknowledge acme's.
    let reply = h.post(uri, GLOBEX_KEY, "").await;
    reply.expect_error(404, "no_alert");
    assert_documented("POST", "/v1/alerts/{id}/ack", 404, &reply.json);
    h.post(&format!("{uri}?tenant=acme"), GLOBEX_KEY, "")
        .await
        .expect_error(404, "not_found");
    let listed = h.get("/v1/alerts?month=2026-10", ACME_KEY).await;
    assert!(listed.json["alerts"][0].get("acknowledgedAt").is_none());

    let acked = h.post(uri, ACME_KEY, "").await;
    acked.expect(200);
    assert_documented("POST", "/v1/alerts/{id}/ack", 200, &acked.json);
    assert_eq!(acked.json["id"], "2026-10.threshold-100");
    assert_eq!(acked.json["acknowledgedAt"], NOW);
    let listed = h.get("/v1/alerts?month=2026-10", ACME_KEY).await;
    assert_eq!(listed.json["alerts"][0], acked.json);
    // Admins acknowledge for a named tenant; acknowledging twice is harmless.
    h.post("/v1/alerts/2026-11.forecast/ack?tenant=acme", ADMIN_KEY, "")
        .await
        .expect(200);
    h.post(uri, ACME_KEY, "").await.expect(200);
    // globex's own alerts are untouched.
    let globex = h.get("/v1/alerts", GLOBEX_KEY).await;
    assert!(globex.json["alerts"][0].get("acknowledgedAt").is_none());
}

#[tokio::test]
async fn acknowledging_a_malformed_or_unknown_alert_id_fails() {
    let h = with_alerts("alerts-ack-bad").await;
    for id in [
        "2026-11.threshold-080",
        "2026-13.forecast",
        "forecast",
        "2026-11.threshold-1001",
    ] {
        let reply = h.post(&format!("/v1/alerts/{id}/ack"), ACME_KEY, "").await;
        reply.expect_error(400, "bad_path_parameter");
        assert_documented("POST", "/v1/alerts/{id}/ack", 400, &reply.json);
    }
    h.post("/v1/alerts/2026-11.threshold-90/ack", ACME_KEY, "")
        .await
        .expect_error(404, "no_alert");
    h.get("/v1/alerts/2026-11.forecast/ack", ACME_KEY)
        .await
        .expect_error(405, "method_not_allowed");
}

const WEBHOOK: &str = "/v1/admin/tenants/acme/webhook";

#[tokio::test]
async fn a_webhook_secret_is_shown_once_and_never_read_back() {
    let h = harness("webhook-put-get").await;
    h.get(WEBHOOK, ADMIN_KEY)
        .await
        .expect_error(404, "no_webhook");
    let body = r#"{"url": "https://hooks.example.com/tollgate?token=t1"}"#;
    let set = put(&h, WEBHOOK, ADMIN_KEY, body).await;
    set.expect(200);
    assert_documented("PUT", "/v1/admin/tenants/{id}/webhook", 200, &set.json);
    assert_eq!(
        set.json["url"],
        "https://hooks.example.com/tollgate?token=t1"
    );
    assert_eq!(set.json["createdAt"], NOW);
    let secret = set.json["secret"].as_str().unwrap().to_owned();
    WebhookSecret::parse(&secret).unwrap();
    let stored = h
        .store()
        .webhook(&tenant_id("acme"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.secret, secret);
    assert_eq!(stored.url, "https://hooks.example.com/tollgate?token=t1");

    let read = h.get(WEBHOOK, ADMIN_KEY).await;
    read.expect(200);
    assert_documented("GET", "/v1/admin/tenants/{id}/webhook", 200, &read.json);
    assert_eq!(
        read.json,
        json!({"url": "https://hooks.example.com/tollgate?token=t1", "createdAt": NOW})
    );
    assert!(!read.text.contains(&secret));
    assert!(!read.text.contains("whsec_"));

    // Setting it again makes a new secret.
    let again = put(&h, WEBHOOK, ADMIN_KEY, body).await;
    again.expect(200);
    assert_ne!(again.json["secret"], set.json["secret"]);
    // An admin may bring its own secret, to rotate without losing deliveries.
    let own = WebhookSecret::from_random_bytes([7; 32]);
    let body = json!({"url": "http://127.0.0.1:8080/hook", "secret": own.expose()});
    let set = put(&h, WEBHOOK, ADMIN_KEY, &body.to_string()).await;
    set.expect(200);
    assert_eq!(set.json["secret"], own.expose());
    let stored = h
        .store()
        .webhook(&tenant_id("acme"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.secret, own.expose());
}

#[tokio::test]
async fn a_webhook_needs_a_safe_url_and_a_known_tenant() {
    let h = harness("webhook-bad").await;
    for (body, code) in [
        (r#"{"url": "http://hooks.example.com/"}"#, "bad_webhook_url"),
        (
            r#"{"url": "https://user:pw@hooks.example.com/"}"#,
            "bad_webhook_url",
        ),
        (r#"{"url": "ftp://hooks.example.com/"}"#, "bad_webhook_url"),
        (
            r#"{"url": "hooks.example.com/tollgate"}"#,
            "bad_webhook_url",
        ),
        (r#"{"url": ""}"#, "bad_webhook_url"),
        (
            r#"{"url": "https://hooks.example.com/", "colour": 1}"#,
            "bad_json",
        ),
        (
            r#"{"url": "https://hooks.example.com/", "secret": "hunter2"}"#,
            "bad_json",
        ),
        ("{}", "bad_json"),
        ("", "bad_json"),
    ] {
        let reply = put(&h, WEBHOOK, ADMIN_KEY, body).await;
        reply.expect_error(400, code);
        assert_documented("PUT", "/v1/admin/tenants/{id}/webhook", 400, &reply.json);
        assert!(!reply.text.contains("hunter2"), "{}", reply.text);
    }
    assert!(
        h.store()
            .webhook(&tenant_id("acme"))
            .await
            .unwrap()
            .is_none()
    );
    let body = r#"{"url": "https://hooks.example.com/"}"#;
    let reply = put(&h, "/v1/admin/tenants/nobody/webhook", ADMIN_KEY, body).await;
    reply.expect_error(404, "not_found");
    assert_documented("PUT", "/v1/admin/tenants/{id}/webhook", 404, &reply.json);
    h.get("/v1/admin/tenants/nobody/webhook", ADMIN_KEY)
        .await
        .expect_error(404, "not_found");
    delete(&h, "/v1/admin/tenants/nobody/webhook", ADMIN_KEY)
        .await
        .expect_error(404, "not_found");
    put(&h, "/v1/admin/tenants/a%23b/webhook", ADMIN_KEY, body)
        .await
        .expect_error(400, "bad_path_parameter");
}

#[tokio::test]
async fn webhook_routes_are_for_admin_keys_only() {
    let h = harness("webhook-auth").await;
    let body = r#"{"url": "https://hooks.example.com/"}"#;
    let reply = put(&h, WEBHOOK, ACME_KEY, body).await;
    reply.expect_error(403, "forbidden");
    assert_documented("PUT", "/v1/admin/tenants/{id}/webhook", 403, &reply.json);
    h.get(WEBHOOK, ACME_KEY)
        .await
        .expect_error(403, "forbidden");
    delete(&h, WEBHOOK, ACME_KEY)
        .await
        .expect_error(403, "forbidden");
    h.call("GET", WEBHOOK, None, None)
        .await
        .expect_error(401, "unauthorized");
    assert!(
        h.store()
            .webhook(&tenant_id("acme"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_webhook_is_removed_once() {
    let h = harness("webhook-delete").await;
    let body = r#"{"url": "https://hooks.example.com/"}"#;
    put(&h, WEBHOOK, ADMIN_KEY, body).await.expect(200);
    let removed = delete(&h, WEBHOOK, ADMIN_KEY).await;
    removed.expect(204);
    assert!(removed.text.is_empty());
    h.get(WEBHOOK, ADMIN_KEY)
        .await
        .expect_error(404, "no_webhook");
    let again = delete(&h, WEBHOOK, ADMIN_KEY).await;
    again.expect_error(404, "no_webhook");
    assert_documented("DELETE", "/v1/admin/tenants/{id}/webhook", 404, &again.json);
}
