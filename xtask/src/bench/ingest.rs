//! Ingest against DynamoDB Local: rows applied per second per invocation, and DynamoDB
//! write requests and items per 1,000 events, for single CloudEvents in SQS batches of 10
//! and of 100, CloudEvents batch messages (what the usage API sends), and edge batches.

use std::time::{Duration, Instant};

use anyhow::Result;
use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use chrono::{DateTime, Utc};
use serde_json::json;
use tollgate_core::message::EDGE_BATCH_SCHEMA;
use tollgate_core::meter::MeterCatalog;
use tollgate_core::window::EventTimePolicy;
use tollgate_ingest::Ingest;
use tollgate_store::DynamoDbStore;

use super::calls::Recorder;

struct Scenario {
    name: &'static str,
    /// Usage events represented (one per CloudEvent; the request count for edge rows).
    events: u64,
    invocations: Vec<SqsEvent>,
}

const TENANTS: usize = 20;

fn catalog() -> Result<MeterCatalog> {
    Ok(MeterCatalog::from_json(
        r#"[
          {"name": "requests", "eventTypes": ["api.request"], "aggregation": {"kind": "count"}, "unit": "requests"},
          {"name": "bytes_out", "eventTypes": ["api.request"], "valueField": "bytes", "aggregation": {"kind": "sum"}, "unit": "bytes"}
        ]"#,
    )?)
}

fn tenant_profile(t: usize) -> Result<tollgate_core::tenant::TenantProfile> {
    Ok(tollgate_core::tenant::TenantProfile {
        tenant: tollgate_core::ids::TenantId::new(format!("tenant-{t}"))?,
        display_name: format!("tenant {t}"),
        plan: tollgate_core::ids::PlanName::new("starter")?,
        status: tollgate_core::tenant::TenantStatus::Active,
        stripe_customer_id: None,
        created_at: Utc::now(),
    })
}

fn sqs_event(bodies: &[(String, String)]) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = bodies
        .iter()
        .map(|(id, body)| {
            let mut record = SqsMessage::default();
            record.message_id = Some(id.clone());
            record.body = Some(body.clone());
            record
        })
        .collect();
    event
}

/// `count` CloudEvents spread over the tenants and the last hour, in SQS batches of `per`.
fn cloudevents(name: &'static str, count: usize, per: usize, now: DateTime<Utc>) -> Scenario {
    let bodies: Vec<(String, String)> = (0..count)
        .map(|i| {
            let time = now - chrono::Duration::seconds((i % 3600) as i64);
            let body = json!({"specversion": "1.0", "id": format!("{name}-{i}"), "source": "bench",
                              "type": "api.request", "subject": format!("tenant-{}", i % TENANTS),
                              "time": time.to_rfc3339(), "data": {"bytes": (i % 5000) + 100}});
            (format!("m-{name}-{i}"), body.to_string())
        })
        .collect();
    Scenario {
        name,
        events: count as u64,
        invocations: bodies.chunks(per).map(sqs_event).collect(),
    }
}

/// `count` CloudEvents packed `per_message` to a message (the CloudEvents batch format the
/// usage API sends), 10 messages per invocation.
fn cloudevent_batches(count: usize, per_message: usize, now: DateTime<Utc>) -> Scenario {
    let single = cloudevents("batched", count, 1, now);
    let events: Vec<String> = single
        .invocations
        .iter()
        .flat_map(|e| e.records.iter().filter_map(|r| r.body.clone()))
        .collect();
    let bodies: Vec<(String, String)> = events
        .chunks(per_message)
        .enumerate()
        .map(|(i, chunk)| (format!("m-batched-{i}"), format!("[{}]", chunk.join(","))))
        .collect();
    Scenario {
        name: "CloudEvents batches of 100, 10 per invocation",
        events: count as u64,
        invocations: bodies.chunks(10).map(sqs_event).collect(),
    }
}

/// Edge batches: each flush carries every tenant's counts for 5 minutes, as a gateway
/// flushing every 5 minutes would, 10 flushes per invocation.
fn edge_batches(flushes: usize, now: DateTime<Utc>) -> Scenario {
    let mut events = 0;
    let bodies: Vec<(String, String)> = (0..flushes)
        .map(|f| {
            let mut rows = Vec::new();
            for t in 0..TENANTS {
                for m in 0..5 {
                    let minute = (now - chrono::Duration::minutes((f * 5 + m) as i64 % 55))
                        .format("%Y-%m-%dT%H:%M")
                        .to_string();
                    let n = 50 + (t * 7 + m) as u64;
                    events += n;
                    rows.push(json!({"tenant": format!("tenant-{t}"), "meter": "requests", "minute": minute,
                                     "state": {"kind": "count", "n": n}}));
                    rows.push(json!({"tenant": format!("tenant-{t}"), "meter": "bytes_out", "minute": minute,
                                     "state": {"kind": "sum", "sum": (n * 1500).to_string()}}));
                }
            }
            let body = json!({"schema": EDGE_BATCH_SCHEMA, "batchId": format!("flush-{f}"), "gateway": "gw-bench",
                              "flushedAt": now.to_rfc3339(), "rows": rows});
            (format!("m-edge-{f}"), body.to_string())
        })
        .collect();
    Scenario {
        name: "edge batches, 10 flushes per invocation",
        events,
        invocations: bodies.chunks(10).map(sqs_event).collect(),
    }
}

/// Rows/s per invocation and DynamoDB writes per 1,000 events, per scenario.
pub async fn run(endpoint: &str) -> Result<()> {
    let now = Utc::now();
    let scenarios = [
        cloudevents("CloudEvents, 10 per invocation", 2_000, 10, now),
        cloudevents("CloudEvents, 100 per invocation", 2_000, 100, now),
        cloudevent_batches(5_000, 100, now),
        edge_batches(40, now),
    ];
    println!("==> ingest against DynamoDB Local ({endpoint}), {TENANTS} tenants, 2 meters");
    println!(
        "    {:<46} {:>7} {:>6} {:>10} {:>10} {:>12} {:>10} {:>9}",
        "scenario", "events", "invoc.", "rows/s", "events/s", "write calls", "items", "rows"
    );
    println!(
        "    {:<46} {:>7} {:>6} {:>10} {:>10} {:>12} {:>10} {:>9}",
        "", "", "", "per invoc.", "per invoc.", "per 1k ev.", "per 1k ev.", "per 1k ev."
    );
    for (i, scenario) in scenarios.into_iter().enumerate() {
        let counter = Recorder::default();
        let base = tollgate_store::local_client(endpoint);
        let config = base
            .config()
            .to_builder()
            .interceptor(counter.clone())
            .build();
        let store = DynamoDbStore::new(
            aws_sdk_dynamodb::Client::from_conf(config),
            format!("bench-ingest-{i}"),
        );
        store.ensure_table().await?;
        for t in 0..TENANTS {
            store.create_tenant(&tenant_profile(t)?).await?;
        }
        // Only ingest's own writes count: not the table or tenant set-up.
        counter.take();
        let ingest = Ingest::new(store, catalog()?, EventTimePolicy::default());
        let mut rates = Vec::new();
        let mut event_rates = Vec::new();
        let events_per_invocation =
            scenario.events as f64 / scenario.invocations.len().max(1) as f64;
        let mut rows = 0usize;
        let mut items = 0usize;
        for event in &scenario.invocations {
            let started = Instant::now();
            let (response, stats) = ingest.handle(event, now).await;
            let elapsed = started.elapsed().max(Duration::from_micros(1));
            anyhow::ensure!(
                response.batch_item_failures.is_empty(),
                "ingest asked for retries"
            );
            rows += stats.rows_written;
            items += stats.items_written;
            rates.push(stats.rows_written as f64 / elapsed.as_secs_f64());
            event_rates.push(events_per_invocation / elapsed.as_secs_f64());
        }
        let median = |mut values: Vec<f64>| {
            values.sort_by(f64::total_cmp);
            values.get(values.len() / 2).copied().unwrap_or(0.0)
        };
        let (rows_per_second, events_per_second) = (median(rates), median(event_rates));
        let calls = counter.take().by_operation;
        let writes: u64 = [
            "TransactWriteItems",
            "BatchWriteItem",
            "PutItem",
            "UpdateItem",
            "DeleteItem",
        ]
        .iter()
        .filter_map(|operation| calls.get(*operation))
        .sum();
        let per_k = |n: usize| n as f64 * 1000.0 / scenario.events as f64;
        println!(
            "    {:<46} {:>7} {:>6} {:>10.0} {:>10.0} {:>12.3} {:>10.1} {:>9.1}",
            scenario.name,
            scenario.events,
            scenario.invocations.len(),
            rows_per_second,
            events_per_second,
            per_k(writes as usize),
            per_k(items),
            per_k(rows)
        );
    }
    println!(
        "    (write calls: TransactWriteItems + BatchWriteItem + PutItem; items: markers + counters,"
    );
    println!("     each billed 2 write units per started KB as transactional writes)");
    Ok(())
}
