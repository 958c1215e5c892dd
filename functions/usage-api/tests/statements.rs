//! `GET /v1/statements`, `GET /v1/statements/{month}` and
//! `GET /v1/admin/billing/reconciliation`, against DynamoDB Local.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use common::schema::assert_documented;
use common::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::json;
use tollgate_core::billing::{EventStatus, LedgerEvent, MeterLedger, MonthLedger};
use tollgate_core::ids::MeterName;
use tollgate_core::invoice::{Statement, preview_invoice};
use tollgate_core::plan::{Plan, PlanTimeline};
use tollgate_core::window::{Granularity, Window};

fn month(key: &str) -> Window {
    Window::parse_key(Granularity::Month, key).unwrap()
}

/// The statement of `tenant`'s `month` on the starter plan for `requests` requests.
fn statement(tenant: &str, key: &str, requests: i64) -> Statement {
    let plans: Vec<Plan> = serde_json::from_str(PLANS).unwrap();
    let starter: Vec<Plan> = plans
        .into_iter()
        .filter(|p| p.name().as_str() == "starter")
        .collect();
    let timeline = PlanTimeline::from_versions(&starter).unwrap();
    let usage = BTreeMap::from([(
        MeterName::new("api_requests").unwrap(),
        Decimal::from(requests),
    )]);
    Statement {
        invoice: preview_invoice(&tenant_id(tenant), month(key), &timeline, &usage).unwrap(),
        plan_versions: starter.clone(),
        closed_at: month(key).end() + chrono::Duration::hours(2),
    }
}

async fn with_statements(name: &str) -> Harness {
    let h = harness(name).await;
    for statement in [
        statement("acme", "2026-10", 250_000),
        statement("acme", "2026-09", 1_000),
    ] {
        assert!(h.store().create_statement(&statement).await.unwrap());
    }
    h
}

#[tokio::test]
async fn statements_are_listed_oldest_first_and_read_by_month() {
    let h = with_statements("statements").await;
    let list = h.get("/v1/statements", ACME_KEY).await;
    list.expect(200);
    assert_documented("GET", "/v1/statements", 200, &list.json);
    assert_eq!(list.json["tenant"], "acme");
    let periods: Vec<&str> = list.json["statements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["invoice"]["period"]["start"].as_str().unwrap())
        .collect();
    assert_eq!(periods, ["2026-09-01T00:00:00Z", "2026-10-01T00:00:00Z"]);
    let october = h.get("/v1/statements/2026-10", ACME_KEY).await;
    october.expect(200);
    assert_documented("GET", "/v1/statements/{month}", 200, &october.json);
    assert_eq!(october.json, list.json["statements"][1]);
    // 150,000 requests over the allowance at 0.50 per thousand, plus the base fee.
    assert_eq!(october.json["invoice"]["total"], "104.00");
    assert_eq!(october.json["closedAt"], "2026-11-01T02:00:00Z");
    assert_eq!(october.json["planVersions"][0]["name"], "starter");
    let stored: Statement = serde_json::from_value(october.json.clone()).unwrap();
    assert_eq!(stored, statement("acme", "2026-10", 250_000));
    let admin = h.get("/v1/statements/2026-10?tenant=acme", ADMIN_KEY).await;
    assert_eq!(admin.json, october.json);
}

#[tokio::test]
async fn a_month_without_a_statement_or_a_malformed_month_is_refused() {
    let h = with_statements("statements-missing").await;
    let reply = h.get("/v1/statements/2026-11", ACME_KEY).await;
    reply.expect_error(404, "no_statement");
    assert_documented("GET", "/v1/statements/{month}", 404, &reply.json);
    for month in ["2026-13", "october", "2026-10-01"] {
        let reply = h.get(&format!("/v1/statements/{month}"), ACME_KEY).await;
        reply.expect_error(400, "bad_path_parameter");
        assert_documented("GET", "/v1/statements/{month}", 400, &reply.json);
    }
    h.get("/v1/statements?month=2026-10", ACME_KEY)
        .await
        .expect_error(400, "unknown_query_parameter");
    h.get("/v1/statements", ADMIN_KEY)
        .await
        .expect_error(400, "tenant_required");
}

#[tokio::test]
async fn a_tenant_never_sees_another_tenants_statements() {
    let h = with_statements("statements-isolation").await;
    let globex = h.get("/v1/statements", GLOBEX_KEY).await;
    globex.expect(200);
    assert_eq!(globex.json, json!({"tenant": "globex", "statements": []}));
    h.get("/v1/statements/2026-10", GLOBEX_KEY)
        .await
        .expect_error(404, "no_statement");
    let reply = h.get("/v1/statements?tenant=acme", GLOBEX_KEY).await;
    reply.expect_error(404, "not_found");
    assert_documented("GET", "/v1/statements", 404, &reply.json);
    h.get("/v1/statements/2026-10?tenant=acme", GLOBEX_KEY)
        .await
        .expect_error(404, "not_found");
}

/// The sample meters with `api_requests` reported to Stripe, one unit per thousand.
fn stripe_meters() -> String {
    let mut meters: serde_json::Value = serde_json::from_str(METERS).unwrap();
    meters[0]["stripe"] = json!({"eventName": "api_requests", "unitsPerQuantity": "0.001"});
    meters.to_string()
}

/// acme's November: 3,500 requests, all reported and accepted (3 units, 0.5 carried);
/// globex's 10 requests not reported yet; podco has no usage.
async fn with_ledger(name: &str) -> Harness {
    let h = harness_with_meters(name, &stripe_meters()).await;
    h.apply(vec![
        requests_row("acme", "2026-11-02T00", None, 3500),
        requests_row("globex", "2026-11-02T00", None, 10),
    ])
    .await;
    let hour = Window::parse_key(Granularity::Hour, "2026-11-02T00").unwrap();
    let event = LedgerEvent {
        tenant: tenant_id("acme"),
        meter: MeterName::new("api_requests").unwrap(),
        hour,
        sequence: 0,
        identifier: "acme/api_requests/2026-11-02T00/0".to_owned(),
        event_name: "api_requests".to_owned(),
        customer: "cus_acme".to_owned(),
        value: 3,
        quantity: dec!(3500),
        timestamp: hour.start(),
        status: EventStatus::Sent,
        recorded_at: at("2026-11-02T01:00:00Z"),
        settled_at: Some(at("2026-11-02T01:00:01Z")),
        error: None,
    };
    let after = MeterLedger {
        recorded: MonthLedger {
            covered: dec!(3500),
            exact: dec!(3.5),
            sent: 3,
            events: 1,
        },
        units_accepted: 3,
        version: 1,
        ..MeterLedger::default()
    };
    assert!(
        h.store()
            .record_ledger_event(&event, None, &after)
            .await
            .unwrap()
    );
    h
}

const RECONCILIATION: &str = "/v1/admin/billing/reconciliation";

#[tokio::test]
async fn the_reconciliation_holds_every_tenants_ledger_against_its_usage() {
    let h = with_ledger("reconciliation").await;
    let reply = h
        .get(&format!("{RECONCILIATION}?month=2026-11"), ADMIN_KEY)
        .await;
    reply.expect(200);
    assert_documented("GET", RECONCILIATION, 200, &reply.json);
    assert_eq!(reply.json["month"]["key"], "2026-11");
    assert_eq!(reply.json["differences"], 1);
    assert_eq!(reply.json["settled"], false);
    let lines = reply.json["lines"].as_array().unwrap();
    let tenants: Vec<&str> = lines
        .iter()
        .map(|l| l["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(tenants, ["acme", "globex", "podco"]);
    assert_eq!(
        lines[0],
        json!({"tenant": "acme", "meter": "api_requests",
               "month": {"start": "2026-11-01T00:00:00Z", "granularity": "month"},
               "usage": "3500", "reported": "3500", "difference": "0",
               "unitsAccepted": 3, "unitsPending": 0, "rejected": "0"})
    );
    assert_eq!(lines[1]["usage"], "10");
    assert_eq!(lines[1]["difference"], "10");
    assert_eq!(lines[2]["difference"], "0");
    // The current month by default.
    let current = h.get(RECONCILIATION, ADMIN_KEY).await;
    assert_eq!(current.json, reply.json);
    let acme = h
        .get(
            &format!("{RECONCILIATION}?month=2026-11&tenant=acme"),
            ADMIN_KEY,
        )
        .await;
    acme.expect(200);
    assert_eq!(acme.json["lines"].as_array().unwrap().len(), 1);
    assert_eq!(acme.json["differences"], 0);
    assert_eq!(acme.json["settled"], true);
}

#[tokio::test]
async fn the_reconciliation_is_for_admins_and_validates_its_parameters() {
    let h = with_ledger("reconciliation-bad").await;
    let reply = h.get(RECONCILIATION, ACME_KEY).await;
    reply.expect_error(403, "forbidden");
    assert_documented("GET", RECONCILIATION, 403, &reply.json);
    h.get(&format!("{RECONCILIATION}?tenant=acme"), ACME_KEY)
        .await
        .expect_error(403, "forbidden");
    for uri in [
        "?month=2026-13",
        "?month=2028-01",
        "?tenant=a%23b",
        "?meter=api_requests",
    ] {
        let reply = h.get(&format!("{RECONCILIATION}{uri}"), ADMIN_KEY).await;
        reply.expect(400);
        assert_documented("GET", RECONCILIATION, 400, &reply.json);
    }
    let reply = h
        .get(&format!("{RECONCILIATION}?tenant=nobody"), ADMIN_KEY)
        .await;
    reply.expect_error(404, "not_found");
    assert_documented("GET", RECONCILIATION, 404, &reply.json);
}

#[tokio::test]
async fn without_stripe_meters_the_reconciliation_is_empty_and_settled() {
    let h = harness("reconciliation-none").await;
    let reply = h.get(RECONCILIATION, ADMIN_KEY).await;
    reply.expect(200);
    assert_eq!(reply.json["lines"], json!([]));
    assert_eq!(reply.json["differences"], 0);
    assert_eq!(reply.json["settled"], true);
}
