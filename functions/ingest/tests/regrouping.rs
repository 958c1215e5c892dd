//! Exactly-once under any regrouping: messages are delivered 1–3 times each, shuffled,
//! cut into SQS batches of random sizes and handled partly concurrently, some by runs
//! that die part-way (their messages come back, as after a crash); the stored totals must
//! equal a ground truth computed here, independently of the code under test. With 3
//! tenants a run's messages fit one transaction; with 40 they are claimed into journals.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde_json::json;
use tollgate_core::ids::TenantId;
use tollgate_core::message::EDGE_BATCH_SCHEMA;
use tollgate_core::meter::MeterCatalog;
use tollgate_core::window::{EventTimePolicy, Granularity};
use tollgate_ingest::Ingest;
use tollgate_store::DynamoDbStore;

fn tenants(count: usize) -> Vec<String> {
    ["acme", "globex", "initech"]
        .into_iter()
        .map(str::to_owned)
        .chain((3..count).map(|t| format!("tenant-{t:02}")))
        .take(count)
        .collect()
}

/// A small deterministic generator (xorshift64*), so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn catalog() -> MeterCatalog {
    MeterCatalog::from_json(
        r#"[
          {"name": "requests", "eventTypes": ["api.request"], "aggregation": {"kind": "count"}, "unit": "requests"},
          {"name": "bytes_out", "eventTypes": ["api.request"], "valueField": "bytes", "aggregation": {"kind": "sum"}, "unit": "bytes"},
          {"name": "largest_response", "eventTypes": ["api.request"], "valueField": "bytes", "aggregation": {"kind": "max"}, "unit": "bytes"}
        ]"#,
    )
    .unwrap()
}

#[derive(Default, Debug, PartialEq)]
struct Truth {
    requests: u64,
    bytes: Decimal,
    largest: Decimal,
}

struct Message {
    id: String,
    body: String,
}

/// 240 CloudEvents, 12 edge batches and 4 malformed messages, with the ground truth.
fn messages(
    now: DateTime<Utc>,
    rng: &mut Rng,
    tenants: &[String],
) -> (Vec<Message>, BTreeMap<String, Truth>) {
    let mut truth: BTreeMap<String, Truth> = BTreeMap::new();
    let mut messages = Vec::new();
    for i in 0..240u64 {
        let tenant = tenants[rng.below(tenants.len() as u64) as usize].as_str();
        let bytes = Decimal::from(rng.below(5000));
        let time = now - Duration::minutes(rng.below(180) as i64);
        let body = json!({"specversion": "1.0", "id": format!("evt-{i}"), "source": "sdk", "type": "api.request",
                          "subject": tenant, "time": time.to_rfc3339(), "data": {"bytes": bytes.to_string()}});
        let t = truth.entry(tenant.to_owned()).or_default();
        t.requests += 1;
        t.bytes += bytes;
        t.largest = t.largest.max(bytes);
        messages.push(Message {
            id: format!("sqs-evt-{i}"),
            body: body.to_string(),
        });
    }
    for b in 0..12u64 {
        let mut rows = Vec::new();
        for tenant in tenants {
            let minute = now - Duration::minutes(rng.below(120) as i64);
            let minute = minute.format("%Y-%m-%dT%H:%M").to_string();
            let n = rng.below(50) + 1;
            let bytes = Decimal::from(rng.below(100_000));
            let largest = Decimal::from(rng.below(9000));
            rows.push(json!({"tenant": tenant, "meter": "requests", "minute": minute, "state": {"kind": "count", "n": n}}));
            rows.push(json!({"tenant": tenant, "meter": "bytes_out", "minute": minute, "state": {"kind": "sum", "sum": bytes.to_string()}}));
            rows.push(json!({"tenant": tenant, "meter": "largest_response", "minute": minute, "state": {"kind": "max", "max": largest.to_string()}}));
            let t = truth.entry(tenant.clone()).or_default();
            t.requests += n;
            t.bytes += bytes;
            t.largest = t.largest.max(largest);
        }
        let body = json!({"schema": EDGE_BATCH_SCHEMA, "batchId": format!("flush-{b}"), "gateway": "gw-1",
                          "flushedAt": now.to_rfc3339(), "rows": rows});
        messages.push(Message {
            id: format!("sqs-edge-{b}"),
            body: body.to_string(),
        });
    }
    let malformed = [
        "{not json".to_owned(),
        json!({"hello": "world"}).to_string(),
        json!({"specversion": "1.0", "id": "x", "source": "s", "type": "api.request", "subject": "acme",
               "time": (now - Duration::days(30)).to_rfc3339(), "data": {"bytes": 1}}).to_string(),
        json!({"specversion": "1.0", "id": "y", "source": "s", "type": "api.request", "subject": "acme",
               "time": now.to_rfc3339(), "data": {"bytes": "lots"}}).to_string(),
    ];
    for (i, body) in malformed.into_iter().enumerate() {
        messages.push(Message {
            id: format!("sqs-bad-{i}"),
            body,
        });
    }
    (messages, truth)
}

fn profile(tenant: &str) -> tollgate_core::tenant::TenantProfile {
    tollgate_core::tenant::TenantProfile {
        tenant: TenantId::new(tenant).unwrap(),
        display_name: tenant.to_owned(),
        plan: "starter".parse().unwrap(),
        status: tollgate_core::tenant::TenantStatus::Active,
        stripe_customer_id: None,
        created_at: Utc::now(),
    }
}

fn sqs_event(deliveries: &[&Message]) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = deliveries
        .iter()
        .map(|m| {
            let mut record = SqsMessage::default();
            record.message_id = Some(m.id.clone());
            record.body = Some(m.body.clone());
            record.event_source = Some("aws:sqs".to_owned());
            record
        })
        .collect();
    event
}

async fn regrouped(name: &str, tenant_count: usize, seed: u64, kills: bool) {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let endpoint = tollgate_devstack::dynamodb_endpoint_for_tests();
    let store = DynamoDbStore::new(
        tollgate_store::local_client(&endpoint),
        format!("ingest-{name}-{}", std::process::id()),
    );
    store.ensure_table().await.unwrap();
    let now = Utc::now();
    let mut rng = Rng(seed);
    let tenants = tenants(tenant_count);
    let (messages, truth) = messages(now, &mut rng, &tenants);

    let mut deliveries: Vec<&Message> = Vec::new();
    for m in &messages {
        for _ in 0..=rng.below(3) {
            deliveries.push(m);
        }
    }
    for i in (1..deliveries.len()).rev() {
        deliveries.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut batches = Vec::new();
    let mut rest = deliveries.as_slice();
    while !rest.is_empty() {
        let size = (rng.below(10) as usize + 1).min(rest.len());
        batches.push(rest[..size].to_vec());
        rest = &rest[size..];
    }

    for tenant in &tenants {
        store.create_tenant(&profile(tenant)).await.unwrap();
    }
    let ingest = Arc::new(Ingest::new(
        store.clone(),
        catalog(),
        EventTimePolicy::default(),
    ));
    let mut totals = tollgate_ingest::IngestStats::default();
    let mut comebacks: Vec<&Message> = Vec::new();
    let mut killed = 0;
    // Two invocations at a time, as with an event source mapping's concurrency of 2.
    for pair in batches.chunks(2) {
        let mut runs = Vec::new();
        for deliveries in pair {
            // A run that dies after 1–4 transactions: everything it was given comes back.
            let dies = kills && rng.below(4) == 0;
            let ingest = if dies {
                killed += 1;
                comebacks.extend(deliveries.iter().copied());
                let client = tollgate_devstack::faults::dying_dynamodb(
                    store.client(),
                    rng.below(4) as u32 + 1,
                    rng.below(2) == 0,
                );
                Arc::new(Ingest::new(
                    DynamoDbStore::new(client, store.table()),
                    catalog(),
                    EventTimePolicy::default(),
                ))
            } else {
                Arc::clone(&ingest)
            };
            let event = sqs_event(deliveries);
            runs.push((
                dies,
                tokio::spawn(async move { ingest.handle(&event, now).await }),
            ));
        }
        for (dies, run) in runs {
            let (response, stats) = run.await.unwrap();
            if dies {
                continue;
            }
            assert!(
                response.batch_item_failures.is_empty(),
                "no transient failures expected"
            );
            totals.messages += stats.messages;
            totals.applied += stats.applied;
            totals.duplicates += stats.duplicates;
            totals.rejected += stats.rejected;
        }
    }
    if kills {
        assert!(killed > 0, "the seed kills some runs");
    }
    // The dead runs' messages come back after the visibility timeout, in new groups; the
    // runs that take them finish the journals the dead ones claimed.
    let later = now + Duration::minutes(3);
    for deliveries in comebacks.chunks(7) {
        let (response, stats) = ingest.handle(&sqs_event(deliveries), later).await;
        assert!(response.batch_item_failures.is_empty());
        totals.messages += stats.messages;
        totals.applied += stats.applied;
        totals.duplicates += stats.duplicates;
        totals.rejected += stats.rejected;
    }
    // Every delivery was handled once by a live run: the dead runs' ones as comebacks.
    assert_eq!(totals.messages, deliveries.len());
    if !kills {
        assert_eq!(
            totals.applied,
            messages.len() - 4,
            "each valid message applied once"
        );
    }
    assert_eq!(
        totals.applied + totals.duplicates + totals.rejected,
        deliveries.len()
    );

    let catalog = catalog();
    for tenant in &tenants {
        let rows = store
            .usage(
                &TenantId::new(tenant).unwrap(),
                Granularity::Hour,
                now - Duration::days(1),
                now + Duration::hours(1),
            )
            .await
            .unwrap();
        let quantities = tollgate_core::usage::quantities_by_meter(&rows, &catalog).unwrap();
        let expected = &truth[tenant.as_str()];
        let got = Truth {
            requests: quantities[&"requests".parse().unwrap()].try_into().unwrap(),
            bytes: quantities[&"bytes_out".parse().unwrap()],
            largest: quantities[&"largest_response".parse().unwrap()],
        };
        assert_eq!(&got, expected, "tenant {tenant}");
    }

    let rejected = store.rejections(None, 100).await.unwrap();
    let mut codes: Vec<&str> = rejected.iter().map(|r| r.code.as_str()).collect();
    codes.sort_unstable();
    assert_eq!(
        codes,
        [
            "not_json",
            "time_too_old",
            "unknown_contract",
            "wrong_value_type"
        ]
    );
}

#[tokio::test]
async fn any_grouping_and_redelivery_counts_every_message_exactly_once() {
    regrouped("regrouping", 3, 0x5EED_1234_ABCD_0001, false).await;
}

#[tokio::test]
async fn journalled_runs_count_every_message_exactly_once_under_regrouping() {
    regrouped("journalled", 40, 0x5EED_1234_ABCD_0002, false).await;
}

#[tokio::test]
async fn runs_that_die_part_way_lose_nothing_and_count_nothing_twice() {
    regrouped("killed", 40, 0x5EED_1234_ABCD_0003, true).await;
}

#[tokio::test]
async fn usage_of_an_unregistered_tenant_is_rejected_and_the_rest_of_an_edge_batch_applies() {
    let endpoint = tollgate_devstack::dynamodb_endpoint_for_tests();
    let store = DynamoDbStore::new(
        tollgate_store::local_client(&endpoint),
        format!("ingest-unregistered-{}", std::process::id()),
    );
    store.ensure_table().await.unwrap();
    store.create_tenant(&profile("acme")).await.unwrap();
    let ingest = Ingest::new(store.clone(), catalog(), EventTimePolicy::default());
    let now = Utc::now();
    let minute = now.format("%Y-%m-%dT%H:%M").to_string();
    let edge = json!({"schema": EDGE_BATCH_SCHEMA, "batchId": "f-1", "gateway": "gw", "flushedAt": now.to_rfc3339(),
                      "rows": [{"tenant": "acme", "meter": "requests", "minute": minute, "state": {"kind": "count", "n": 5}},
                               {"tenant": "ghost", "meter": "requests", "minute": minute, "state": {"kind": "count", "n": 7}}]});
    let single = json!({"specversion": "1.0", "id": "g-1", "source": "sdk", "type": "api.request", "subject": "ghost",
                        "time": now.to_rfc3339(), "data": {"bytes": 3}});
    let event = sqs_event(&[
        &Message {
            id: "m-edge".into(),
            body: edge.to_string(),
        },
        &Message {
            id: "m-ghost".into(),
            body: single.to_string(),
        },
    ]);
    let (response, stats) = ingest.handle(&event, now).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!((stats.applied, stats.rejected), (1, 2));
    let acme = store
        .usage(
            &TenantId::new("acme").unwrap(),
            Granularity::Hour,
            now - Duration::hours(1),
            now + Duration::hours(1),
        )
        .await
        .unwrap();
    assert_eq!(
        tollgate_core::usage::quantities_by_meter(&acme, &catalog()).unwrap()
            [&"requests".parse().unwrap()],
        Decimal::from(5)
    );
    let ghost = store
        .usage(
            &TenantId::new("ghost").unwrap(),
            Granularity::Hour,
            now - Duration::hours(1),
            now + Duration::hours(1),
        )
        .await
        .unwrap();
    assert!(
        ghost.is_empty(),
        "nothing counted for an unregistered tenant"
    );
    let rejected = store.rejections(None, 10).await.unwrap();
    let ids: BTreeSet<&str> = rejected.iter().map(|r| r.message_id.as_str()).collect();
    assert_eq!(ids, BTreeSet::from(["m-edge#ghost", "m-ghost#ghost"]));
    assert!(rejected.iter().all(|r| r.code == "unregistered_tenant"));
}
