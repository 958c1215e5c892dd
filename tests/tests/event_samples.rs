//! Every sample in `events/` is valid against its JSON Schema and against the Rust types
//! that consume it, so the documented contracts and the code cannot drift apart.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use aws_lambda_events::lambda_function_urls::LambdaFunctionUrlRequest;
use aws_lambda_events::sqs::SqsEvent;
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use tollgate_billing_sync::SyncRequest;
use tollgate_budget::BudgetRequest;
use tollgate_budget::run::AlertNotification;
use tollgate_core::alert::{Alert, alerts_due};
use tollgate_core::budget::{Budget, evaluate};
use tollgate_core::edge_snapshot::{BlockReason, EdgeSnapshot};
use tollgate_core::event::UsageEvent;
use tollgate_core::message::{EdgeBatch, parse_message};
use tollgate_core::meter::MeterCatalog;
use tollgate_core::window::EventTimePolicy;
use tollgate_core::window::{Granularity, Window};
use tollgate_rollup::RollupRequest;

fn events_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../events")
}

fn json(path: &str) -> Value {
    let text = std::fs::read_to_string(events_dir().join(path)).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A compiled schema, formats asserted.
struct Schema(boon::Schemas, boon::SchemaIndex);

impl Schema {
    fn load(schema_path: &str) -> Schema {
        let mut schemas = boon::Schemas::new();
        let mut compiler = boon::Compiler::new();
        compiler.enable_format_assertions();
        // The batch schema refers to the event schema by its `$id`.
        compiler
            .add_resource(
                "https://tollgate.dev/schemas/usage-event.schema.json",
                json("schemas/usage-event.schema.json"),
            )
            .unwrap();
        let url = format!("file:///{schema_path}");
        compiler.add_resource(&url, json(schema_path)).unwrap();
        let index = compiler.compile(&url, &mut schemas).unwrap();
        Schema(schemas, index)
    }

    fn validate(&self, instance: &Value) -> Result<(), String> {
        self.0
            .validate(instance, self.1)
            .map_err(|e| format!("{e:#}"))
    }
}

fn validate(schema_path: &str, instance: &Value) -> Result<(), String> {
    Schema::load(schema_path).validate(instance)
}

fn catalog() -> MeterCatalog {
    let text = std::fs::read_to_string(events_dir().join("samples/meters.json")).unwrap();
    MeterCatalog::from_json(&text).unwrap()
}

fn time(value: &Value, field: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value[field].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

#[test]
fn the_usage_event_sample_matches_its_schema_and_the_parser() {
    let sample = json("samples/usage-event.json");
    validate("schemas/usage-event.schema.json", &sample).unwrap();
    let now = time(&sample, "time") + Duration::minutes(1);
    let event = UsageEvent::from_json(&sample, &EventTimePolicy::default(), now).unwrap();
    assert_eq!(catalog().measure(&event).unwrap().len(), 1);
}

#[test]
fn the_usage_event_batch_sample_matches_its_schema_and_applies_event_by_event() {
    let sample = json("samples/usage-event-batch.json");
    validate("schemas/usage-event-batch.schema.json", &sample).unwrap();
    let now = time(&sample[0], "time") + Duration::minutes(1);
    let parsed = parse_message(
        &sample.to_string(),
        &catalog(),
        &EventTimePolicy::default(),
        now,
    )
    .unwrap();
    assert_eq!(parsed.batches.len(), 3);
    assert!(parsed.rejected.is_empty());
    assert!(
        validate(
            "schemas/usage-event-batch.schema.json",
            &serde_json::json!([])
        )
        .is_err()
    );
}

#[test]
fn every_demo_month_event_matches_the_usage_event_schema_unless_meant_to_be_broken() {
    let text = std::fs::read_to_string(events_dir().join("samples/demo-month.jsonl")).unwrap();
    let schema = Schema::load("schemas/usage-event.schema.json");
    let invalid: Vec<String> = text
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|event| schema.validate(event).is_err())
        .map(|event| event["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(invalid.is_empty(), "schema-invalid events: {invalid:?}");
}

#[test]
fn the_edge_batch_sample_matches_its_schema_and_the_contract() {
    let sample = json("samples/edge-batch.json");
    validate("schemas/edge-batch.schema.json", &sample).unwrap();
    let batch: EdgeBatch = serde_json::from_value(sample.clone()).unwrap();
    assert_eq!(batch.rows.len(), 3);
    let now = time(&sample, "flushedAt");
    let parsed = parse_message(
        &sample.to_string(),
        &catalog(),
        &EventTimePolicy::default(),
        now,
    )
    .unwrap();
    assert_eq!(parsed.batches[0].rows.len(), 3);
}

#[test]
fn the_edge_snapshot_sample_matches_its_schema_and_the_contract() {
    let sample = json("samples/edge-snapshot.json");
    validate("schemas/edge-snapshot.schema.json", &sample).unwrap();
    let snapshot: EdgeSnapshot = serde_json::from_value(sample.clone()).unwrap();
    assert_eq!(snapshot.tenants.len(), 3);
    assert_eq!(snapshot.tenants[1].blocked, Some(BlockReason::Suspended));
    assert_eq!(serde_json::to_value(&snapshot).unwrap(), sample);
    let mut other = sample.clone();
    other["schema"] = Value::from("tollgate.edge-snapshot/2");
    assert!(validate("schemas/edge-snapshot.schema.json", &other).is_err());
    assert!(serde_json::from_value::<EdgeSnapshot>(other).is_err());
}

#[test]
fn the_schemas_refuse_what_the_parsers_refuse() {
    let mut event = json("samples/usage-event.json");
    event["subject"] = Value::from("acme#2");
    assert!(validate("schemas/usage-event.schema.json", &event).is_err());
    let mut batch = json("samples/edge-batch.json");
    batch["rows"][0]["minute"] = Value::from("2026-10-14T09");
    assert!(validate("schemas/edge-batch.schema.json", &batch).is_err());
    batch = json("samples/edge-batch.json");
    batch["extra"] = Value::from(1);
    assert!(validate("schemas/edge-batch.schema.json", &batch).is_err());
    assert!(
        validate(
            "schemas/rollup-request.schema.json",
            &serde_json::json!({"lookbackDays": 3})
        )
        .is_err()
    );
}

#[test]
fn the_ingest_trigger_sample_is_an_sqs_event_whose_bodies_are_contracts() {
    let sample = json("samples/triggers/ingest-sqs-event.json");
    let event: SqsEvent = serde_json::from_value(sample).unwrap();
    assert_eq!(event.records.len(), 3);
    let catalog = catalog();
    let now = DateTime::parse_from_rfc3339("2026-10-14T10:01:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let outcomes: Vec<Result<String, &str>> = event
        .records
        .iter()
        .map(|r| {
            parse_message(
                r.body.as_deref().unwrap(),
                &catalog,
                &EventTimePolicy::default(),
                now,
            )
            .map(|p| p.batches[0].batch_id.clone())
            .map_err(|e| e.code())
        })
        .collect();
    assert!(outcomes[0].is_ok() && outcomes[1].is_ok(), "{outcomes:?}");
    assert_eq!(
        outcomes[2],
        Err("missing_attribute"),
        "the third message is broken on purpose"
    );
}

#[test]
fn the_rollup_trigger_sample_matches_its_schema_and_the_request_type() {
    let sample = json("samples/triggers/rollup-schedule.json");
    validate("schemas/rollup-request.schema.json", &sample).unwrap();
    let request: RollupRequest = serde_json::from_value(sample).unwrap();
    assert_eq!(request.lookback_days, None);
}

#[test]
fn the_usage_api_trigger_sample_is_a_function_url_request() {
    let sample = json("samples/triggers/usage-api-function-url.json");
    let request: LambdaFunctionUrlRequest = serde_json::from_value(sample).unwrap();
    assert_eq!(request.raw_path.as_deref(), Some("/v1/usage"));
    assert_eq!(request.request_context.http.method.as_deref(), Some("GET"));
}

#[test]
fn the_budget_and_billing_sync_trigger_samples_match_their_schema_and_request_types() {
    for (path, parse) in [
        (
            "samples/triggers/budget-schedule.json",
            (|v: Value| serde_json::from_value::<BudgetRequest>(v).map(|_| ()))
                as fn(Value) -> Result<(), serde_json::Error>,
        ),
        ("samples/triggers/billing-sync-schedule.json", |v: Value| {
            serde_json::from_value::<SyncRequest>(v).map(|_| ())
        }),
    ] {
        let sample = json(path);
        validate("schemas/scheduled-request.schema.json", &sample).unwrap();
        parse(sample).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}

/// The webhook body the budget function sends: generated here from a real alert, checked
/// against its schema, and the documented sample is the same shape.
#[test]
fn budget_alert_webhooks_match_their_schema_and_sample() {
    let budget: Budget = serde_json::from_value(serde_json::json!(
        {"monthlyAmount": "100", "currency": "USD", "hardLimit": true}
    ))
    .unwrap();
    let now = DateTime::parse_from_rfc3339("2026-11-10T12:00:00Z")
        .unwrap()
        .to_utc();
    let month = Window::containing(Granularity::Month, now);
    let evaluation = evaluate(&budget, "85".parse().unwrap(), now, month);
    let tenant = tollgate_core::ids::TenantId::new("acme").unwrap();
    let alerts = alerts_due(
        &tenant,
        month,
        &budget,
        &evaluation,
        &BTreeSet::new(),
        true,
        now,
    );
    assert_eq!(alerts.len(), 3);
    for alert in &alerts {
        let body = serde_json::to_value(AlertNotification::of(alert)).unwrap();
        validate("schemas/budget-alert-webhook.schema.json", &body).unwrap();
    }
    let sample = json("samples/budget-alert-webhook.json");
    validate("schemas/budget-alert-webhook.schema.json", &sample).unwrap();
    let alert: Alert = serde_json::from_value(sample["alert"].clone()).unwrap();
    assert_eq!(
        serde_json::to_value(AlertNotification::of(&alert)).unwrap(),
        sample
    );
}
