//! `GET /v1/usage`, `/v1/usage/history`, `/v1/usage/realtime`, `/v1/usage/export.csv`,
//! against DynamoDB Local.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::schema::assert_documented;
use common::*;
use serde_json::json;

/// acme (starter: 100,000 included, 20,000 per day): 1,500 requests today over two
/// routes and hours, 2,000 earlier this month, 700 last month; globex has usage too.
async fn with_usage(name: &str) -> Harness {
    let h = harness(name).await;
    h.apply(vec![
        requests_row("acme", "2026-11-23T09", Some("/v1/items"), 1000),
        requests_row("acme", "2026-11-23T12", Some("/v1/orders"), 500),
        requests_row("acme", "2026-11-02T00", Some("/v1/items"), 2000),
        requests_row("acme", "2026-10-31T23", Some("/v1/items"), 700),
        requests_row("globex", "2026-11-23T12", Some("/v1/items"), 99),
    ])
    .await;
    h
}

#[tokio::test]
async fn current_usage_shows_month_to_date_quantity_quotas_and_cost() {
    let h = with_usage("usage-current").await;
    let reply = h.get("/v1/usage", ACME_KEY).await;
    reply.expect(200);
    assert_documented("GET", "/v1/usage", 200, &reply.json);
    let body = &reply.json;
    assert_eq!(body["tenant"], "acme");
    assert_eq!(body["plan"], "starter");
    assert_eq!(body["period"]["key"], "2026-11");
    assert_eq!(body["asOf"], NOW);
    let meter = &body["meters"][0];
    assert_eq!(meter["meter"], "api_requests");
    assert_eq!(meter["unit"], "requests");
    assert_eq!(meter["quantity"], "3500");
    assert_eq!(meter["today"], "1500");
    assert_eq!(meter["included"], "100000");
    assert_eq!(meter["quotas"]["perDay"]["limit"], "20000");
    assert_eq!(meter["quotas"]["perDay"]["remaining"], "18500");
    assert_eq!(
        meter["quotas"]["perDay"]["resetsAt"],
        "2026-11-24T00:00:00Z"
    );
    assert_eq!(meter["quotas"]["perMonth"], json!(null));
    assert_eq!(meter["cost"], "0.00", "within the allowance");
    assert_eq!(body["costSoFar"], "29.00", "the base fee");
}

#[tokio::test]
async fn current_usage_of_a_tenant_without_usage_lists_its_plan_meters_at_zero() {
    let h = harness("usage-empty").await;
    let reply = h.get("/v1/usage", PODCO_KEY).await;
    reply.expect(200);
    assert_documented("GET", "/v1/usage", 200, &reply.json);
    let meters = reply.json["meters"].as_array().unwrap();
    assert_eq!(meters.len(), 5, "every meter the pod-hourly plan prices");
    assert!(meters.iter().all(|m| m["quantity"] == "0"));
}

#[tokio::test]
async fn current_usage_refuses_unknown_parameters_and_hides_other_tenants() {
    let h = with_usage("usage-current-bad").await;
    h.get("/v1/usage?granularity=day", ACME_KEY)
        .await
        .expect_error(400, "unknown_query_parameter");
    h.get("/v1/usage?tenant=globex", ACME_KEY)
        .await
        .expect_error(404, "not_found");
    h.get("/v1/usage?tenant=nobody", ACME_KEY)
        .await
        .expect_error(404, "not_found");
}

#[tokio::test]
async fn admins_read_any_tenants_usage_by_naming_it() {
    let h = with_usage("usage-admin").await;
    let reply = h.get("/v1/usage?tenant=globex", ADMIN_KEY).await;
    reply.expect(200);
    assert_eq!(reply.json["meters"][0]["quantity"], "99");
    h.get("/v1/usage", ADMIN_KEY)
        .await
        .expect_error(400, "tenant_required");
    h.get("/v1/usage?tenant=nobody", ADMIN_KEY)
        .await
        .expect_error(404, "not_found");
}

#[tokio::test]
async fn history_returns_rows_per_window_meter_and_dimensions() {
    let h = with_usage("usage-history").await;
    let reply = h
        .get(
            "/v1/usage/history?granularity=hour&from=2026-11-23T00:00:00Z&to=2026-11-24T00:00:00Z",
            ACME_KEY,
        )
        .await;
    reply.expect(200);
    assert_documented("GET", "/v1/usage/history", 200, &reply.json);
    let rows = reply.json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["window"]["key"], "2026-11-23T09");
    assert_eq!(rows[0]["window"]["start"], "2026-11-23T09:00:00Z");
    assert_eq!(rows[0]["window"]["end"], "2026-11-23T10:00:00Z");
    assert_eq!(rows[0]["meter"], "api_requests");
    assert_eq!(rows[0]["dimensions"], json!({"route": "/v1/items"}));
    assert_eq!(rows[0]["quantity"], "1000");
    assert_eq!(rows[1]["dimensions"], json!({"route": "/v1/orders"}));
}

#[tokio::test]
async fn history_by_day_and_month_folds_hours_not_yet_rolled_up() {
    let h = with_usage("usage-history-days").await;
    let days = h
        .get(
            "/v1/usage/history?granularity=day&from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z&meter=api_requests",
            ACME_KEY,
        )
        .await;
    days.expect(200);
    let keys: Vec<(&str, &str)> = days.json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["window"]["key"].as_str().unwrap(),
                r["quantity"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("2026-11-02", "2000"),
            ("2026-11-23", "1000"),
            ("2026-11-23", "500")
        ]
    );
    let months = h
        .get(
            "/v1/usage/history?granularity=month&from=2026-10-01T00:00:00Z&to=2026-12-01T00:00:00Z",
            ACME_KEY,
        )
        .await;
    months.expect(200);
    assert_documented("GET", "/v1/usage/history", 200, &months.json);
    let total: i64 = months.json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["quantity"].as_str().unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(total, 4200);
}

#[tokio::test]
async fn history_by_meter_folds_dimensions_so_clients_never_add_rows_up() {
    let h = with_usage("usage-history-by-meter").await;
    let days = h
        .get(
            "/v1/usage/history?granularity=day&by=meter&from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z",
            ACME_KEY,
        )
        .await;
    days.expect(200);
    assert_documented("GET", "/v1/usage/history", 200, &days.json);
    let rows: Vec<(&str, &str, &serde_json::Value)> = days.json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["window"]["key"].as_str().unwrap(),
                r["quantity"].as_str().unwrap(),
                &r["dimensions"],
            )
        })
        .collect();
    let none = json!({});
    assert_eq!(
        rows,
        [("2026-11-02", "2000", &none), ("2026-11-23", "1500", &none)]
    );
    let csv = h
        .get(
            "/v1/usage/export.csv?granularity=day&by=meter&from=2026-11-23T00:00:00Z&to=2026-11-24T00:00:00Z",
            ACME_KEY,
        )
        .await;
    csv.expect(200);
    assert_eq!(
        csv.text.lines().nth(1).unwrap(),
        "2026-11-23T00:00:00Z,2026-11-24T00:00:00Z,day,api_requests,,1500,requests"
    );
    h.get("/v1/usage/history?by=route", ACME_KEY)
        .await
        .expect_error(400, "bad_query_parameter");
}

#[tokio::test]
async fn history_validates_granularity_times_and_ranges() {
    let h = with_usage("usage-history-bad").await;
    for (uri, code) in [
        ("/v1/usage/history?granularity=week", "bad_granularity"),
        ("/v1/usage/history?granularity=minute", "bad_granularity"),
        ("/v1/usage/history?from=yesterday", "bad_query_parameter"),
        (
            "/v1/usage/history?from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z",
            "bad_range",
        ),
        (
            "/v1/usage/history?granularity=hour&from=2026-10-01T00:00:00Z&to=2026-11-02T00:00:00Z",
            "range_too_large",
        ),
        (
            "/v1/usage/history?granularity=day&from=2025-01-01T00:00:00Z&to=2026-11-02T00:00:00Z",
            "range_too_large",
        ),
        ("/v1/usage/history?meter=a%23b", "bad_query_parameter"),
        (
            "/v1/usage/history?granularity=day&granularity=hour",
            "bad_query_parameter",
        ),
        ("/v1/usage/history?page=2", "unknown_query_parameter"),
    ] {
        let reply = h.get(uri, ACME_KEY).await;
        reply.expect_error(400, code);
        assert_documented("GET", "/v1/usage/history", 400, &reply.json);
    }
}

#[tokio::test]
async fn history_of_another_tenant_is_not_found() {
    let h = with_usage("usage-history-foreign").await;
    let reply = h.get("/v1/usage/history?tenant=globex", ACME_KEY).await;
    reply.expect_error(404, "not_found");
    assert_documented("GET", "/v1/usage/history", 404, &reply.json);
}

#[tokio::test]
async fn realtime_shows_the_current_hour_and_day() {
    let h = with_usage("usage-realtime").await;
    let reply = h.get("/v1/usage/realtime", ACME_KEY).await;
    reply.expect(200);
    assert_documented("GET", "/v1/usage/realtime", 200, &reply.json);
    assert_eq!(reply.json["hour"]["window"]["key"], "2026-11-23T12");
    assert_eq!(reply.json["hour"]["meters"][0]["quantity"], "500");
    assert_eq!(reply.json["day"]["window"]["key"], "2026-11-23");
    assert_eq!(reply.json["day"]["meters"][0]["quantity"], "1500");
    assert_eq!(reply.json["day"]["meters"][0]["unit"], "requests");
}

#[tokio::test]
async fn realtime_refuses_parameters_and_other_tenants() {
    let h = with_usage("usage-realtime-bad").await;
    h.get("/v1/usage/realtime?from=2026-11-23T00:00:00Z", ACME_KEY)
        .await
        .expect_error(400, "unknown_query_parameter");
    h.get("/v1/usage/realtime?tenant=globex", ACME_KEY)
        .await
        .expect_error(404, "not_found");
}

#[tokio::test]
async fn export_is_rfc_4180_csv_with_a_header_row() {
    let h = with_usage("usage-export").await;
    let reply = h
        .get(
            "/v1/usage/export.csv?granularity=hour&from=2026-11-23T00:00:00Z&to=2026-11-24T00:00:00Z",
            ACME_KEY,
        )
        .await;
    reply.expect(200);
    assert!(
        reply.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert_eq!(
        reply.text,
        "window_start,window_end,granularity,meter,dimensions,quantity,unit\r\n\
         2026-11-23T09:00:00Z,2026-11-23T10:00:00Z,hour,api_requests,route=/v1/items,1000,requests\r\n\
         2026-11-23T12:00:00Z,2026-11-23T13:00:00Z,hour,api_requests,route=/v1/orders,500,requests\r\n"
    );
}

#[tokio::test]
async fn export_quotes_fields_that_need_it() {
    let h = harness("usage-export-quoting").await;
    h.apply(vec![requests_row(
        "acme",
        "2026-11-23T10",
        Some("/a,\"b\""),
        3,
    )])
    .await;
    let reply = h
        .get(
            "/v1/usage/export.csv?granularity=day&from=2026-11-23T00:00:00Z&to=2026-11-24T00:00:00Z",
            ACME_KEY,
        )
        .await;
    reply.expect(200);
    let line = reply.text.lines().nth(1).unwrap();
    assert_eq!(
        line,
        "2026-11-23T00:00:00Z,2026-11-24T00:00:00Z,day,api_requests,\"route=/a%2C\"\"b\"\"\",3,requests"
    );
}

#[tokio::test]
async fn export_validates_its_range_and_hides_other_tenants() {
    let h = with_usage("usage-export-bad").await;
    h.get("/v1/usage/export.csv?granularity=fortnight", ACME_KEY)
        .await
        .expect_error(400, "bad_granularity");
    h.get("/v1/usage/export.csv?tenant=globex", ACME_KEY)
        .await
        .expect_error(404, "not_found");
}
