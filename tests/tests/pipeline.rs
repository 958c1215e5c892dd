//! The serverless pipeline end to end, through the local stack: 100,000 usage events sent
//! to the SQS emulator as CloudEvents batches of 100 — 10 % of them a second time in
//! another message, some pulled by a crashing consumer so they are redelivered after their
//! visibility timeout, some late, some malformed (alone in a batch, or a whole broken
//! message) — ingested
//! by the real `ingest` binary behind the event source mapping, rolled up by the real
//! `rollup` binary, read back through DynamoDB and the real `usage-api` binary.
//!
//! The expected totals are computed here from the generated events alone (plain maps
//! keyed by formatted times), independently of the code under test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Duration as TimeDelta, Utc};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tollgate_core::ids::{MeterName, PlanName, TenantId};
use tollgate_core::tenant::{ApiKeyHash, ApiKeyRecord, ApiKeyRole, TenantProfile, TenantStatus};
use tollgate_core::usage::UsageRow;
use tollgate_core::window::Granularity;
use tollgate_local::{LocalStack, StackConfig, build_functions};

use common::{http_get, queue_depth};

const EVENTS: u64 = 100_000;
const TENANTS: [&str; 5] = ["acme", "globex", "initech", "umbrella", "hooli"];
const ADMIN_KEY: &str = "tg_admin_e2e_pipeline_key";

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// Expected (requests, bytes) per tenant and window key.
#[derive(Default)]
struct Truth {
    hours: BTreeMap<(String, String), (u64, u64)>,
    days: BTreeMap<(String, String), (u64, u64)>,
    months: BTreeMap<(String, String), (u64, u64)>,
}

impl Truth {
    fn add(&mut self, tenant: &str, time: DateTime<Utc>, bytes: u64) {
        for (map, format) in [
            (&mut self.hours, "%Y-%m-%dT%H"),
            (&mut self.days, "%Y-%m-%d"),
            (&mut self.months, "%Y-%m"),
        ] {
            let entry = map
                .entry((tenant.to_owned(), time.format(format).to_string()))
                .or_default();
            entry.0 += 1;
            entry.1 += bytes;
        }
    }
}

/// One queue message: a CloudEvents batch, or a raw body that is broken as a whole.
enum Message {
    Events(Vec<Value>),
    Raw(String),
}

impl Message {
    fn body(&self) -> String {
        match self {
            Message::Events(events) => Value::Array(events.clone()).to_string(),
            Message::Raw(body) => body.clone(),
        }
    }
}

struct Generated {
    messages: Vec<Message>,
    truth: Truth,
    /// (message index, element index) of malformed events; `None` for a broken message.
    malformed: BTreeSet<(usize, Option<usize>)>,
    events_sent: usize,
}

const EVENTS_PER_MESSAGE: usize = 100;

fn generate(now: DateTime<Utc>) -> Generated {
    let mut rng = Rng(0xE2E0_0000_0000_0001);
    let mut truth = Truth::default();
    // (event, malformed?)
    let mut events: Vec<(Value, bool)> = Vec::new();
    for i in 0..EVENTS {
        // Every 200th event is malformed, in one of four ways.
        if i % 200 == 7 {
            let event = match (i / 200) % 4 {
                0 => {
                    json!({"specversion": "1.0", "id": format!("e-{i}"), "source": "e2e", "type": "api.request",
                            "subject": "acme", "time": "yesterday", "data": {"bytes": 1}})
                }
                1 => {
                    json!({"specversion": "1.0", "id": format!("e-{i}"), "source": "e2e", "type": "api.request",
                            "time": now.to_rfc3339(), "data": {"bytes": 1}})
                }
                2 => {
                    json!({"specversion": "1.0", "id": format!("e-{i}"), "source": "e2e", "type": "api.request",
                            "subject": "acme", "time": (now - TimeDelta::days(9)).to_rfc3339(), "data": {"bytes": 1}})
                }
                _ => {
                    json!({"specversion": "1.0", "id": format!("e-{i}"), "source": "e2e", "type": "api.request",
                            "subject": "acme", "time": now.to_rfc3339(), "data": {"bytes": "many"}})
                }
            };
            events.push((event, true));
            continue;
        }
        let tenant = TENANTS[rng.below(TENANTS.len() as u64) as usize];
        // Mostly the last two days; every 50th event is 3 to 6 days late.
        let age = if i % 50 == 3 {
            TimeDelta::hours(72 + rng.below(72) as i64)
        } else {
            TimeDelta::seconds(rng.below(48 * 3600) as i64)
        };
        let time = now - age;
        let bytes = rng.below(10_000);
        truth.add(tenant, time, bytes);
        events.push((
            json!({"specversion": "1.0", "id": format!("e-{i}"), "source": "e2e", "type": "api.request",
                   "subject": tenant, "time": time.to_rfc3339(), "data": {"bytes": bytes}}),
            false,
        ));
    }
    // 10 % of the valid events are sent a second time, each into a random later place.
    let duplicates: Vec<(Value, bool)> = events
        .iter()
        .filter(|(_, malformed)| !malformed)
        .step_by(10)
        .cloned()
        .collect();
    for duplicate in duplicates {
        let at = rng.below(events.len() as u64 + 1) as usize;
        events.insert(at, duplicate);
    }
    let events_sent = events.len();
    let mut messages = Vec::new();
    let mut malformed = BTreeSet::new();
    for chunk in events.chunks(EVENTS_PER_MESSAGE) {
        for (i, (_, bad)) in chunk.iter().enumerate() {
            if *bad {
                malformed.insert((messages.len(), Some(i)));
            }
        }
        messages.push(Message::Events(
            chunk.iter().map(|(e, _)| e.clone()).collect(),
        ));
    }
    for raw in [
        "{\"specversion\": \"1.0\", \"id\"",
        "[]",
        "{\"hello\": \"world\"}",
    ] {
        malformed.insert((messages.len(), None));
        messages.push(Message::Raw(raw.to_owned()));
    }
    Generated {
        messages,
        truth,
        malformed,
        events_sent,
    }
}

/// Sends every message; returns the queue's message id of each, in order.
async fn send_all(stack: &LocalStack, messages: &[Message]) -> Vec<String> {
    let mut ids = vec![String::new(); messages.len()];
    for (n, chunk) in messages.chunks(10).enumerate() {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, message)| {
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(format!("m{}", n * 10 + i))
                    .message_body(message.body())
                    .build()
                    .unwrap()
            })
            .collect::<Vec<_>>();
        let sent = stack
            .sqs
            .send_message_batch()
            .queue_url(&stack.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .unwrap();
        assert!(
            sent.failed().is_empty(),
            "SendMessageBatch failures: {:?}",
            sent.failed()
        );
        for ok in sent.successful() {
            let index: usize = ok.id()[1..].parse().unwrap();
            ids[index] = ok.message_id().to_owned();
        }
    }
    ids
}

/// A consumer that takes messages and dies before deleting them: they come back after
/// their visibility timeout (15 s, longer than all its receives take, so it never takes
/// a message twice) and go through ingest on redelivery.
async fn crash_while_holding(stack: &LocalStack, receives: usize) -> usize {
    let mut held = 0;
    for _ in 0..receives {
        let got = stack
            .sqs
            .receive_message()
            .queue_url(&stack.queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(15)
            .send()
            .await
            .unwrap();
        held += got.messages().len();
    }
    held
}

async fn wait_until_drained(stack: &LocalStack, deadline: Duration) {
    let started = Instant::now();
    let mut quiet_polls = 0;
    while quiet_polls < 3 {
        assert!(
            started.elapsed() < deadline,
            "the queue did not drain in {deadline:?}: {:?}",
            stack.mapping_metrics()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        let pending = queue_depth(stack, &stack.queue_url).await;
        let metrics = stack.mapping_metrics();
        let in_hand = metrics.received - metrics.deleted - metrics.returned_for_retry;
        quiet_polls = if pending == 0 && in_hand == 0 {
            quiet_polls + 1
        } else {
            0
        };
    }
}

fn totals(rows: &[UsageRow]) -> BTreeMap<(String, String), (u64, u64)> {
    let requests = MeterName::new("requests").unwrap();
    let mut out: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for row in rows {
        let entry = out
            .entry((row.key.tenant.to_string(), row.key.window.key()))
            .or_default();
        let quantity = row.state.quantity(&if row.key.meter == requests {
            tollgate_core::aggregate::Aggregation::Count
        } else {
            tollgate_core::aggregate::Aggregation::Sum
        });
        let value: u64 = quantity.unwrap_or(Decimal::ZERO).try_into().unwrap();
        if row.key.meter == requests {
            entry.0 += value;
        } else {
            entry.1 += value;
        }
    }
    out
}

fn subset(
    truth: &BTreeMap<(String, String), (u64, u64)>,
    tenant: &str,
) -> BTreeMap<(String, String), (u64, u64)> {
    truth
        .iter()
        .filter(|((t, _), _)| t == tenant)
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_events_end_with_exact_hourly_daily_and_monthly_totals() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let binaries = build_functions(&workspace).unwrap();
    let meters =
        std::env::temp_dir().join(format!("tollgate-e2e-meters-{}.json", std::process::id()));
    std::fs::write(
        &meters,
        r#"[
          {"name": "requests", "eventTypes": ["api.request"], "aggregation": {"kind": "count"}, "unit": "requests"},
          {"name": "bytes_out", "eventTypes": ["api.request"], "valueField": "bytes", "aggregation": {"kind": "sum"}, "unit": "bytes"}
        ]"#,
    )
    .unwrap();
    let mut config = StackConfig::new(binaries, &meters);
    config.visibility_timeout = Duration::from_secs(30);
    let stack = LocalStack::start(&config).await.unwrap();
    for tenant in TENANTS {
        stack
            .store
            .create_tenant(&TenantProfile {
                tenant: TenantId::new(tenant).unwrap(),
                display_name: tenant.to_owned(),
                plan: PlanName::new("starter").unwrap(),
                status: TenantStatus::Active,
                stripe_customer_id: None,
                created_at: Utc::now(),
            })
            .await
            .unwrap();
    }

    let now = Utc::now();
    let generated = generate(now);
    let ids = send_all(&stack, &generated.messages).await;
    let held = crash_while_holding(&stack, 20).await;
    assert!(held > 0, "the crashing consumer took some messages");
    wait_until_drained(&stack, Duration::from_secs(900)).await;

    let dlq_depth = stack
        .sqs
        .get_queue_attributes()
        .queue_url(&stack.dlq_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .unwrap();
    eprintln!(
        "pipeline: held by the crashing consumer: {held}; DLQ {:?}; mapping {:?}",
        dlq_depth.attributes(),
        stack.mapping_metrics()
    );
    // Hourly counters, straight from ingest.
    let from = now - TimeDelta::days(8);
    let to = now + TimeDelta::hours(1);
    for tenant in TENANTS {
        let id = TenantId::new(tenant).unwrap();
        let hours = stack
            .store
            .usage_view(&id, Granularity::Hour, from, to, Utc::now())
            .await
            .unwrap();
        assert_eq!(
            totals(&hours),
            subset(&generated.truth.hours, tenant),
            "hourly totals of {tenant}"
        );
    }

    // Roll up, then daily and monthly views.
    let reply = stack.run_rollup(now).await.unwrap();
    assert_eq!(reply["complete"], json!(true), "{reply}");
    for tenant in TENANTS {
        let id = TenantId::new(tenant).unwrap();
        let days = stack
            .store
            .usage_view(&id, Granularity::Day, from, to, Utc::now())
            .await
            .unwrap();
        assert_eq!(
            totals(&days),
            subset(&generated.truth.days, tenant),
            "daily totals of {tenant}"
        );
        let months = stack
            .store
            .usage_view(
                &id,
                Granularity::Month,
                from - TimeDelta::days(31),
                to,
                Utc::now(),
            )
            .await
            .unwrap();
        assert_eq!(
            totals(&months),
            subset(&generated.truth.months, tenant),
            "monthly totals of {tenant}"
        );
    }

    // Every malformed event is listed as rejected, with its reason.
    let rejected = stack.store.rejections(None, 10_000).await.unwrap();
    let expected: BTreeSet<String> = generated
        .malformed
        .iter()
        .map(|(m, element)| match element {
            Some(i) => format!("{}#{i}", ids[*m]),
            None => ids[*m].clone(),
        })
        .collect();
    let recorded: BTreeSet<String> = rejected.iter().map(|r| r.message_id.clone()).collect();
    assert_eq!(
        recorded, expected,
        "exactly the malformed events and messages are recorded"
    );
    assert!(
        rejected
            .iter()
            .all(|r| !r.reason.is_empty() && !r.code.is_empty())
    );
    let codes: BTreeSet<&str> = rejected.iter().map(|r| r.code.as_str()).collect();
    assert_eq!(
        codes,
        BTreeSet::from([
            "bad_event_count",
            "bad_time",
            "missing_attribute",
            "not_json",
            "time_too_old",
            "unknown_contract",
            "wrong_value_type"
        ])
    );

    // The usage API (the real binary behind the Function URL) serves the same month.
    stack
        .store
        .create_api_key(&ApiKeyRecord {
            hash: ApiKeyHash::of(ADMIN_KEY),
            role: ApiKeyRole::Admin,
            tenant: None,
            label: "e2e".into(),
            created_at: Utc::now(),
            revoked_at: None,
        })
        .await
        .unwrap();
    let month = now.format("%Y-%m").to_string();
    let url = format!(
        "{}v1/usage/history?tenant=acme&granularity=month&from={}&to={}",
        stack.usage_api_url(),
        (now - TimeDelta::days(40)).format("%Y-%m-%dT%H:%M:%SZ"),
        to.format("%Y-%m-%dT%H:%M:%SZ")
    );
    let (status, body) = http_get(&url, ADMIN_KEY).await;
    assert_eq!(status, 200, "{body}");
    let expected = generated.truth.months[&("acme".to_owned(), month.clone())];
    let served = body.to_string();
    assert!(
        served.contains(&expected.0.to_string()),
        "monthly requests {} of acme in {body}",
        expected.0
    );

    let metrics = stack.mapping_metrics();
    assert_eq!(metrics.whole_batch_failures, 0, "{metrics:?}");
    // At-least-once: on a loaded machine a batch can outlive its visibility timeout and
    // be received again; the redelivery is a duplicate (the totals above are exact) and
    // is deleted too. What must hold: every message received, every receive deleted.
    assert!(
        metrics.received >= generated.messages.len() as u64,
        "every message received: {metrics:?}"
    );
    assert_eq!(
        metrics.deleted, metrics.received,
        "every message deleted once processed, redeliveries included"
    );
    let dlq = stack
        .sqs
        .receive_message()
        .queue_url(&stack.dlq_url)
        .send()
        .await
        .unwrap();
    assert!(dlq.messages().is_empty(), "nothing in the DLQ");

    eprintln!(
        "pipeline: {} events in {} messages; mapping {:?}",
        generated.events_sent,
        generated.messages.len(),
        stack.mapping_metrics()
    );
    stack.stop().await;
    let _ = std::fs::remove_file(meters);
}
