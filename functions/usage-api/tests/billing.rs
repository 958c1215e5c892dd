//! `GET /v1/pricing`, `POST /v1/estimate`, `GET /v1/forecast`, `GET /v1/invoice/preview`,
//! against DynamoDB Local.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::schema::assert_documented;
use common::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::json;
use tollgate_core::budget::Budget;
use tollgate_core::money::Currency;
use tollgate_core::plan::Plan;

async fn with_usage(name: &str) -> Harness {
    let h = harness(name).await;
    h.apply(vec![
        requests_row("acme", "2026-11-02T00", None, 3500),
        requests_row("acme", "2026-10-25T10", None, 700),
        requests_row("globex", "2026-11-02T00", None, 1),
    ])
    .await;
    h
}

fn starter_2027() -> Plan {
    serde_json::from_value(json!({
        "name": "starter", "effectiveFrom": "2027-01-01T00:00:00Z", "currency": "USD",
        "baseFee": "35",
        "meters": [{"meter": "api_requests", "included": "100000",
                    "price": {"type": "perPackage", "packageSize": "1000", "packagePrice": "0.45"}}]
    }))
    .unwrap()
}

#[tokio::test]
async fn pricing_shows_the_version_in_force_and_upcoming_ones() {
    let h = harness("pricing").await;
    h.store()
        .create_plan_version(&starter_2027())
        .await
        .unwrap();
    let reply = h.get("/v1/pricing", ACME_KEY).await;
    reply.expect(200);
    assert_documented("GET", "/v1/pricing", 200, &reply.json);
    assert_eq!(reply.json["plan"], "starter");
    assert_eq!(
        reply.json["current"]["effectiveFrom"],
        "2026-01-01T00:00:00Z"
    );
    assert_eq!(reply.json["current"]["baseFee"], "29");
    assert_eq!(
        reply.json["current"]["meters"][0]["price"],
        json!({"type": "perPackage", "packageSize": "1000", "packagePrice": "0.50"})
    );
    assert_eq!(
        reply.json["upcoming"][0]["effectiveFrom"],
        "2027-01-01T00:00:00Z"
    );
    assert_eq!(reply.json["upcoming"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn pricing_refuses_parameters_and_other_tenants() {
    let h = harness("pricing-bad").await;
    h.get("/v1/pricing?plan=pro", ACME_KEY)
        .await
        .expect_error(400, "unknown_query_parameter");
    h.get("/v1/pricing?tenant=globex", ACME_KEY)
        .await
        .expect_error(404, "not_found");
}

#[tokio::test]
async fn an_estimate_prices_the_given_quantities_on_the_tenants_plan() {
    let h = harness("estimate").await;
    let reply = h
        .post(
            "/v1/estimate",
            ACME_KEY,
            r#"{"usage": {"api_requests": "250000"}}"#,
        )
        .await;
    reply.expect(200);
    assert_documented("POST", "/v1/estimate", 200, &reply.json);
    // 29 base fee + 150 started packages of 1,000 beyond the 100,000 included at 0.50.
    assert_eq!(reply.json["total"], "104.00");
    assert_eq!(reply.json["period"]["start"], "2026-11-01T00:00:00Z");
    let lines = reply.json["lines"].as_array().unwrap();
    assert_eq!(lines[0]["kind"], "baseFee");
    assert_eq!(lines[1]["kind"], "usage");
    assert_eq!(lines[1]["billable"], "150000");
    assert_eq!(lines[1]["amount"], "75.00");
    // Numbers are accepted, and a month picks that month's plan version.
    h.store()
        .create_plan_version(&starter_2027())
        .await
        .unwrap();
    let later = h
        .post(
            "/v1/estimate",
            ACME_KEY,
            r#"{"usage": {"api_requests": 250000}, "month": "2027-02"}"#,
        )
        .await;
    later.expect(200);
    assert_eq!(later.json["total"], "102.50", "35 + 150 × 0.45");
}

#[tokio::test]
async fn an_estimate_refuses_bad_bodies() {
    let h = harness("estimate-bad").await;
    for (body, code) in [
        ("", "bad_json"),
        ("{", "bad_json"),
        (r#"{"usage": {}, "extra": 1}"#, "bad_json"),
        (r#"{"usage": {"a#b": "1"}}"#, "bad_meter"),
        (r#"{"usage": {"nope": "1"}}"#, "unknown_meter"),
        (r#"{"usage": {"api_requests": "lots"}}"#, "bad_quantity"),
        (r#"{"usage": {"api_requests": "-1"}}"#, "bad_quantity"),
        (r#"{"usage": {}, "month": "2026-13"}"#, "bad_month"),
    ] {
        let reply = h.post("/v1/estimate", ACME_KEY, body).await;
        reply.expect_error(400, code);
        assert_documented("POST", "/v1/estimate", 400, &reply.json);
    }
    let huge = format!(
        r#"{{"usage": {{}}, "month": "{}"}}"#,
        "x".repeat(1024 * 1024)
    );
    h.post("/v1/estimate", ACME_KEY, &huge)
        .await
        .expect_error(413, "payload_too_large");
}

#[tokio::test]
async fn an_estimate_for_another_tenant_is_not_found() {
    let h = harness("estimate-foreign").await;
    h.post("/v1/estimate?tenant=globex", ACME_KEY, r#"{"usage": {}}"#)
        .await
        .expect_error(404, "not_found");
}

#[tokio::test]
async fn the_forecast_extrapolates_usage_and_cost_and_evaluates_the_budget() {
    let h = with_usage("forecast").await;
    h.store()
        .put_budget(
            &tenant_id("acme"),
            &Budget::new(dec!(100), Currency::USD).unwrap(),
        )
        .await
        .unwrap();
    let reply = h.get("/v1/forecast", ACME_KEY).await;
    reply.expect(200);
    assert_documented("GET", "/v1/forecast", 200, &reply.json);
    // 22 days 12.5 hours of November's 30 days have elapsed.
    let expected = (dec!(3500) * Decimal::from(2_592_000) / Decimal::from(1_945_800)).round_dp(6);
    assert_eq!(reply.json["meters"][0]["quantity"], "3500");
    assert_eq!(reply.json["meters"][0]["projected"], expected.to_string());
    assert_eq!(reply.json["elapsedFraction"], "0.7506");
    assert_eq!(
        reply.json["cost"],
        json!({"soFar": "29.00", "projected": "29.00"})
    );
    let evaluation = &reply.json["budget"]["evaluation"];
    assert_eq!(evaluation["spent"], "29.00");
    assert_eq!(evaluation["percentUsed"], "29.00");
    assert_eq!(evaluation["verdict"], "allow");
    assert_eq!(reply.json["budget"]["budget"]["monthlyAmount"], "100");
}

#[tokio::test]
async fn the_forecast_without_a_budget_has_none() {
    let h = with_usage("forecast-no-budget").await;
    let reply = h.get("/v1/forecast?tenant=acme", ADMIN_KEY).await;
    reply.expect(200);
    assert_documented("GET", "/v1/forecast", 200, &reply.json);
    assert_eq!(reply.json["budget"], json!(null));
}

#[tokio::test]
async fn the_forecast_refuses_parameters_and_other_tenants() {
    let h = harness("forecast-bad").await;
    h.get("/v1/forecast?month=2026-11", ACME_KEY)
        .await
        .expect_error(400, "unknown_query_parameter");
    h.get("/v1/forecast?tenant=globex", ACME_KEY)
        .await
        .expect_error(404, "not_found");
}

#[tokio::test]
async fn an_invoice_preview_prices_a_months_usage() {
    let h = with_usage("invoice").await;
    let october = h.get("/v1/invoice/preview?month=2026-10", ACME_KEY).await;
    october.expect(200);
    assert_documented("GET", "/v1/invoice/preview", 200, &october.json);
    assert_eq!(october.json["period"]["start"], "2026-10-01T00:00:00Z");
    assert_eq!(october.json["lines"][1]["quantity"], "700");
    assert_eq!(october.json["total"], "29.00");
    let current = h.get("/v1/invoice/preview", ACME_KEY).await;
    current.expect(200);
    assert_eq!(current.json["lines"][1]["quantity"], "3500");
}

#[tokio::test]
async fn an_invoice_preview_validates_the_month() {
    let h = with_usage("invoice-bad").await;
    for (uri, status, code) in [
        (
            "/v1/invoice/preview?month=2026-13",
            400,
            "bad_query_parameter",
        ),
        (
            "/v1/invoice/preview?month=november",
            400,
            "bad_query_parameter",
        ),
        (
            "/v1/invoice/preview?month=2028-01",
            400,
            "month_out_of_range",
        ),
        ("/v1/invoice/preview?month=2025-06", 409, "no_plan_in_force"),
    ] {
        let reply = h.get(uri, ACME_KEY).await;
        reply.expect_error(status, code);
        assert_documented("GET", "/v1/invoice/preview", status, &reply.json);
    }
}

#[tokio::test]
async fn an_invoice_preview_of_another_tenant_is_not_found() {
    let h = with_usage("invoice-foreign").await;
    h.get("/v1/invoice/preview?tenant=globex&month=2026-10", ACME_KEY)
        .await
        .expect_error(404, "not_found");
}
