//! The pipeline under injected faults, end to end through the local stack, against a
//! ground truth computed here from the generated events alone (plain maps keyed by
//! formatted times), independently of the code under test.
//!
//! Every queue message is delivered 1 to 10 times. While the real `ingest` binary works
//! through them behind the event source mapping, its DynamoDB (through a
//! [`FaultProxy`](tollgate_devstack::fault_proxy::FaultProxy)) throttles, reports
//! throughput exceeded and transaction conflicts, and the process is killed mid-batch,
//! right after a transaction committed and before it hears so; the SQS endpoint of the
//! mapping and the functions goes down and comes back (a server restart as clients see
//! it). Then `rollup` is killed mid-run and rerun, and `billing-sync` is killed after
//! recording a Stripe meter event as pending, and meets a storm of Stripe 429s and 500s
//! (one of them after Stripe accepted the event), rerun until settled.
//!
//! Checked exactly: hourly, daily and monthly totals per tenant and meter; each month's
//! invoice preview (the real usage API) against the plan priced by hand; Stripe's
//! accepted units per customer and meter (the closed hours' usage, whole units; no
//! identifier accepted twice); every malformed event rejected with a reason, once per
//! delivered copy, and nothing valid rejected; the DLQ empty. The run prints one
//! `tollgate-report` line; `cargo xtask soak faults` runs it ten times larger.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Duration as TimeDelta, Utc};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tollgate_core::ids::{MeterName, PlanName, TenantId};
use tollgate_core::plan::PlanConfig;
use tollgate_core::tenant::{ApiKeyHash, ApiKeyRecord, ApiKeyRole, TenantProfile, TenantStatus};
use tollgate_core::usage::UsageRow;
use tollgate_core::window::{Granularity, Window};
use tollgate_devstack::fault_proxy::{Fault, FaultRule, RequestMatch};
use tollgate_devstack::report::{report, soak};
use tollgate_devstack::stripe::Fault as StripeFault;
use tollgate_local::{LocalStack, StackConfig, build_functions};

use common::{http_get, queue_depth};

const TENANTS: [&str; 3] = ["acme", "globex", "initech"];
const ADMIN_KEY: &str = "tg_admin_faults_suite_key";
const EVENTS_PER_MESSAGE: usize = 50;

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

/// (tenant, window key) → (requests, bytes), per granularity.
type Totals = BTreeMap<(String, String), (u64, u64)>;

#[derive(Default)]
struct Truth {
    hours: Totals,
    days: Totals,
    months: Totals,
    /// (tenant, meter) → requests / bytes of hours closed before the run's billing time.
    billable: BTreeMap<(String, String), u64>,
}

impl Truth {
    fn add(&mut self, tenant: &str, time: DateTime<Utc>, bytes: u64, open_hour: DateTime<Utc>) {
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
        if time < open_hour {
            *self
                .billable
                .entry((tenant.to_owned(), "requests".to_owned()))
                .or_default() += 1;
            *self
                .billable
                .entry((tenant.to_owned(), "bytes_out".to_owned()))
                .or_default() += bytes;
        }
    }
}

struct Generated {
    /// Message bodies (CloudEvents batches).
    messages: Vec<String>,
    /// Per message: the element indexes that are malformed.
    malformed: Vec<Vec<usize>>,
    events: usize,
    truth: Truth,
}

fn generate(events: usize, now: DateTime<Utc>) -> Generated {
    let open_hour = Window::containing(Granularity::Hour, now).start();
    let mut rng = Rng(0xFA17_0000_0000_0001);
    let mut truth = Truth::default();
    let mut messages = Vec::new();
    let mut malformed = Vec::new();
    for (m, chunk) in (0..events)
        .collect::<Vec<_>>()
        .chunks(EVENTS_PER_MESSAGE)
        .enumerate()
    {
        let mut batch = Vec::new();
        let mut bad = Vec::new();
        for (i, n) in chunk.iter().enumerate() {
            let tenant = TENANTS[rng.below(TENANTS.len() as u64) as usize];
            if n % 97 == 13 {
                // Malformed in one of two ways; each must come back as a rejection.
                bad.push(i);
                batch.push(if m % 2 == 0 {
                    json!({"specversion": "1.0", "id": format!("f-{n}"), "source": "faults",
                           "type": "api.request", "subject": tenant, "time": "soon",
                           "data": {"bytes": 1}})
                } else {
                    json!({"specversion": "1.0", "id": format!("f-{n}"), "source": "faults",
                           "type": "api.request", "subject": tenant,
                           "time": now.to_rfc3339(), "data": {"bytes": "many"}})
                });
                continue;
            }
            let time = now - TimeDelta::seconds(rng.below(40 * 3600) as i64);
            let bytes = rng.below(5_000);
            truth.add(tenant, time, bytes, open_hour);
            batch.push(
                json!({"specversion": "1.0", "id": format!("f-{n}"), "source": "faults",
                              "type": "api.request", "subject": tenant,
                              "time": time.to_rfc3339(), "data": {"bytes": bytes}}),
            );
        }
        messages.push(Value::Array(batch).to_string());
        malformed.push(bad);
    }
    Generated {
        messages,
        malformed,
        events,
        truth,
    }
}

/// Sends every message 1 to 10 times, the copies shuffled; returns, per message, the
/// SQS ids of its copies.
async fn deliver(stack: &LocalStack, messages: &[String], rng: &mut Rng) -> Vec<Vec<String>> {
    let mut copies: Vec<usize> = Vec::new();
    for (m, _) in messages.iter().enumerate() {
        for _ in 0..=rng.below(10) {
            copies.push(m);
        }
    }
    for i in (1..copies.len()).rev() {
        copies.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut ids = vec![Vec::new(); messages.len()];
    for chunk in copies.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, m)| {
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(format!("c{i}"))
                    .message_body(&messages[*m])
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
        assert!(sent.failed().is_empty(), "{:?}", sent.failed());
        for ok in sent.successful() {
            let i: usize = ok.id()[1..].parse().unwrap();
            ids[chunk[i]].push(ok.message_id().to_owned());
        }
    }
    ids
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
        if started.elapsed().as_secs() % 30 < 2 {
            eprintln!("faults: draining; {:?}", stack.mapping_metrics());
        }
        // Visible and in flight: a message received but not deleted (its invocation
        // killed, its delete lost in an outage) counts until it is deleted.
        let pending = queue_depth(stack, &stack.queue_url).await;
        quiet_polls = if pending == 0 { quiet_polls + 1 } else { 0 };
    }
}

/// Per (tenant, window) totals from rows of the `requests` (count) and `bytes_out` (sum)
/// meters.
fn totals(rows: &[UsageRow]) -> Totals {
    let requests = MeterName::new("requests").unwrap();
    let mut out = Totals::new();
    for row in rows {
        let entry = out
            .entry((row.key.tenant.to_string(), row.key.window.key()))
            .or_default();
        let aggregation = if row.key.meter == requests {
            tollgate_core::aggregate::Aggregation::Count
        } else {
            tollgate_core::aggregate::Aggregation::Sum
        };
        let value: u64 = row
            .state
            .quantity(&aggregation)
            .unwrap_or(Decimal::ZERO)
            .try_into()
            .unwrap();
        if row.key.meter == requests {
            entry.0 += value;
        } else {
            entry.1 += value;
        }
    }
    out
}

/// Σ |a − b| over the union of keys: the difference from the ground truth.
fn difference(served: &Totals, truth: &Totals) -> u64 {
    let keys: BTreeSet<_> = served.keys().chain(truth.keys()).collect();
    keys.into_iter()
        .map(|key| {
            let a = served.get(key).copied().unwrap_or_default();
            let b = truth.get(key).copied().unwrap_or_default();
            a.0.abs_diff(b.0) + a.1.abs_diff(b.1)
        })
        .sum()
}

fn subset(totals: &Totals, tenant: &str) -> Totals {
    totals
        .iter()
        .filter(|((t, _), _)| t == tenant)
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_total_is_exact_under_duplicates_kills_throttling_outages_and_stripe_storms() {
    let scale: u32 = if soak() { 10 } else { 1 };
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let binaries = build_functions(&workspace).unwrap();
    let meters = std::env::temp_dir().join(format!(
        "tollgate-faults-meters-{}.json",
        std::process::id()
    ));
    std::fs::write(
        &meters,
        r#"[
          {"name": "requests", "eventTypes": ["api.request"], "aggregation": {"kind": "count"},
           "unit": "requests", "stripe": {"eventName": "requests", "unitsPerQuantity": "1"}},
          {"name": "bytes_out", "eventTypes": ["api.request"], "valueField": "bytes",
           "aggregation": {"kind": "sum"}, "unit": "bytes",
           "stripe": {"eventName": "bytes_out", "unitsPerQuantity": "1"}}
        ]"#,
    )
    .unwrap();
    let mut config = StackConfig::new(binaries, &meters);
    config.fault_proxies = true;
    // Redeliveries come sooner than the template's 300 s; receives are counted high
    // enough that a message whose claimer was killed outlives the journal's 60 s grace
    // instead of going to the DLQ.
    config.visibility_timeout = Duration::from_secs(30);

    config.max_receive_count = 20;
    let stack = LocalStack::start(&config).await.unwrap();
    let faults = stack.faults.as_ref().unwrap();
    for tenant in TENANTS {
        stack
            .store
            .create_tenant(&TenantProfile {
                tenant: TenantId::new(tenant).unwrap(),
                display_name: tenant.to_owned(),
                plan: PlanName::new("starter").unwrap(),
                status: TenantStatus::Active,
                stripe_customer_id: Some(format!("cus_{tenant}")),
                created_at: Utc::now(),
            })
            .await
            .unwrap();
    }

    let plan: PlanConfig = serde_json::from_value(json!({
        "name": "starter", "effectiveFrom": "2026-01-01T00:00:00Z", "currency": "USD",
        "baseFee": "10",
        "meters": [
            {"meter": "requests", "included": "100", "price": {"type": "perUnit", "unitPrice": "0.003"}},
            {"meter": "bytes_out", "price": {"type": "perUnit", "unitPrice": "0.00001"}}
        ]
    }))
    .unwrap();
    stack
        .store
        .create_plan_version(&plan.compile().unwrap())
        .await
        .unwrap();
    stack
        .store
        .create_api_key(&ApiKeyRecord {
            hash: ApiKeyHash::of(ADMIN_KEY),
            role: ApiKeyRole::Admin,
            tenant: None,
            label: "faults".into(),
            created_at: Utc::now(),
            revoked_at: None,
        })
        .await
        .unwrap();

    let now = Utc::now();
    let generated = generate(4_000 * scale as usize, now);
    let mut rng = Rng(0xD0D0_0000_0000_0007);

    // Ingest's DynamoDB: a throttling storm, throughput exceeded, conflicts, and kills
    // right after a transaction committed (the process never hears it did).
    let ingest = Arc::clone(&stack.ingest);
    let last_kill = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let kill_ingest: Fault = Fault::Hook(Arc::new({
        let last_kill = Arc::clone(&last_kill);
        move || {
            ingest.kill_running_instances();
            *last_kill.lock().unwrap() = Some(Instant::now());
        }
    }));
    let transactions = |skip, count, fault| FaultRule {
        matching: RequestMatch::AmzTarget("TransactWriteItems"),
        skip,
        count,
        fault,
    };
    faults.ingest_dynamodb.inject(FaultRule {
        matching: RequestMatch::Any,
        skip: 2,
        count: 6 * scale,
        fault: Fault::Throttle,
    });
    faults
        .ingest_dynamodb
        .inject(transactions(4, 3 * scale, Fault::ThroughputExceeded));
    faults
        .ingest_dynamodb
        .inject(transactions(8, 4 * scale, Fault::TransactionConflict));
    for k in 0..2 * scale {
        faults
            .ingest_dynamodb
            .inject(transactions(3 + 15 * k, 1, kill_ingest.clone()));
    }

    let started = Instant::now();
    let ids = deliver(&stack, &generated.messages, &mut rng).await;
    let delivered: usize = ids.iter().map(Vec::len).sum();

    // SQS outages (server restarts as clients see them) while the mapping works.
    let mut sqs_restarts = 0;
    for _ in 0..2 * scale {
        tokio::time::sleep(Duration::from_secs(3)).await;
        faults.sqs.set_down(true);
        tokio::time::sleep(Duration::from_secs(3)).await;
        faults.sqs.set_down(false);
        sqs_restarts += 1;
    }
    wait_until_drained(&stack, Duration::from_secs(600 * u64::from(scale))).await;
    let ingest_faults = faults.ingest_dynamodb.stats();
    let ingest_killed = ingest_faults.injected.get("hook").copied().unwrap_or(0);
    eprintln!(
        "faults: ingest drained in {:?}; ingest's DynamoDB {ingest_faults:?}; SQS {:?}; mapping {:?}; ingest {:?}",
        started.elapsed(),
        faults.sqs.stats(),
        stack.mapping_metrics(),
        stack.ingest.stats(),
    );
    assert!(ingest_killed > 0, "ingest was killed mid-batch");
    // A killed claimer's journal is finished by the next ingest or rollup run once its
    // grace has passed (a live claimer may still be applying it before that): the
    // queue is empty by now, so the rollup's run is the one that finishes it.
    let killed_at = last_kill.lock().unwrap().unwrap();
    let grace = Duration::from_secs(tollgate_store::JOURNAL_GRACE.num_seconds() as u64 + 2);
    tokio::time::sleep(grace.saturating_sub(killed_at.elapsed())).await;
    let reply = stack.run_rollup(Utc::now()).await.unwrap();
    eprintln!("faults: the rollup after the grace: {reply}");

    let mut diff = 0;
    let from = now - TimeDelta::days(3);
    let to = now + TimeDelta::hours(1);
    let view = |granularity, from| {
        let store = &stack.store;
        async move {
            let mut rows = Vec::new();
            for tenant in TENANTS {
                rows.extend(
                    store
                        .usage_view(
                            &TenantId::new(tenant).unwrap(),
                            granularity,
                            from,
                            to,
                            Utc::now(),
                        )
                        .await
                        .unwrap(),
                );
            }
            totals(&rows)
        }
    };
    let hours = view(Granularity::Hour, from).await;
    diff += difference(&hours, &generated.truth.hours);
    for tenant in TENANTS {
        assert_eq!(
            subset(&hours, tenant),
            subset(&generated.truth.hours, tenant),
            "hourly totals of {tenant}"
        );
    }

    // Rollup, killed mid-run, then run again.
    let rollup = Arc::clone(&stack.rollup);
    faults.rollup_dynamodb.inject(FaultRule {
        matching: RequestMatch::Any,
        skip: 6,
        count: 1,
        fault: Fault::Hook(Arc::new(move || {
            rollup.kill_running_instances();
        })),
    });
    let killed = stack.run_rollup(now).await;
    assert!(killed.is_err(), "the rollup was killed: {killed:?}");
    let rollup_killed = faults.rollup_dynamodb.stats().faults();
    let reply = stack.run_rollup(now).await.unwrap();
    assert_eq!(reply["complete"], json!(true), "{reply}");
    let days = view(Granularity::Day, from).await;
    let months = view(Granularity::Month, from - TimeDelta::days(31)).await;
    diff += difference(&days, &generated.truth.days);
    diff += difference(&months, &generated.truth.months);
    assert_eq!(days, generated.truth.days, "daily totals");
    assert_eq!(months, generated.truth.months, "monthly totals");

    // Invoices: the usage API's preview of each month against the plan priced by hand
    // (base fee 10; requests over 100 at 0.003; bytes at 0.00001; each line rounded
    // half-even to the cent).
    let mut invoices_checked = 0;
    for ((tenant, month), (requests, bytes)) in &generated.truth.months {
        let cents = |d: Decimal| {
            d.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointNearestEven)
        };
        let expected = Decimal::from(10)
            + cents(Decimal::from(requests.saturating_sub(100)) * Decimal::new(3, 3))
            + cents(Decimal::from(*bytes) * Decimal::new(1, 5));
        let url = format!(
            "{}v1/invoice/preview?tenant={tenant}&month={month}",
            stack.usage_api_url()
        );
        let (status, body) = http_get(&url, ADMIN_KEY).await;
        assert_eq!(status, 200, "{body}");
        let served: Decimal = body["total"].as_str().unwrap().parse().unwrap();
        diff += u64::try_from((served - expected).abs() * Decimal::from(100)).unwrap_or(u64::MAX);
        assert_eq!(served, expected, "invoice of {tenant} for {month}: {body}");
        invoices_checked += 1;
    }

    // Every malformed event is rejected with a reason, once per delivered copy.
    let rejected = stack.store.rejections(None, 100_000).await.unwrap();
    let expected: BTreeSet<String> = ids
        .iter()
        .zip(&generated.malformed)
        .flat_map(|(copies, bad)| {
            copies
                .iter()
                .flat_map(move |id| bad.iter().map(move |i| format!("{id}#{i}")))
        })
        .collect();
    let recorded: BTreeSet<String> = rejected.iter().map(|r| r.message_id.clone()).collect();
    assert_eq!(
        recorded, expected,
        "exactly the malformed events, each copy"
    );
    assert!(rejected.iter().all(|r| !r.reason.trim().is_empty()));
    assert_eq!(
        queue_depth(&stack, &stack.dlq_url).await,
        0,
        "nothing in the DLQ"
    );

    // Billing: killed after recording a pending event, then a Stripe storm of 429s and
    // 500s (one after Stripe accepted the event), rerun until settled.
    let billing = Arc::clone(&stack.billing_sync);
    faults.billing_sync_dynamodb.inject(FaultRule {
        matching: RequestMatch::AmzTarget("TransactWriteItems"),
        skip: 1,
        count: 1,
        fault: Fault::Hook(Arc::new(move || {
            billing.kill_running_instances();
        })),
    });
    let killed = stack.run_billing_sync(now).await;
    assert!(killed.is_err(), "billing-sync was killed: {killed:?}");
    let billing_killed = faults.billing_sync_dynamodb.stats().faults();
    stack
        .stripe
        .fail_next(4 * scale as usize, StripeFault::RateLimited);
    stack
        .stripe
        .fail_next(3 * scale as usize, StripeFault::ServerError);
    stack
        .stripe
        .fail_next(1, StripeFault::ServerErrorAfterAccept);
    let mut runs = 0;
    loop {
        runs += 1;
        assert!(runs <= 20, "billing-sync did not settle in 20 runs");
        let reply = stack.run_billing_sync(now).await.unwrap();
        let settled = reply["complete"] == json!(true)
            && reply["eventsResent"] == json!(0)
            && reply["eventsSent"] == json!(0)
            && reply["eventsRecorded"] == json!(0);
        if settled && runs > 1 {
            break;
        }
    }
    assert!(stack.stripe.duplicate_identifiers().is_empty());
    // The storm was met, not scripted and skipped: Stripe answered every fault.
    let answered = |status| {
        stack
            .stripe
            .requests()
            .iter()
            .filter(|r| r.status == status)
            .count()
    };
    let (stripe_429, stripe_500) = (answered(429), answered(500));
    assert_eq!(
        (stripe_429, stripe_500),
        (4 * scale as usize, 3 * scale as usize + 1)
    );
    let stripe_totals = stack.stripe.totals();
    let expected_stripe: BTreeMap<(String, String), u64> = generated
        .truth
        .billable
        .iter()
        .filter(|(_, units)| **units > 0)
        .map(|((tenant, meter), units)| ((format!("cus_{tenant}"), meter.clone()), *units))
        .collect();
    let keys: BTreeSet<_> = stripe_totals.keys().chain(expected_stripe.keys()).collect();
    diff += keys
        .into_iter()
        .map(|key| {
            stripe_totals
                .get(key)
                .copied()
                .unwrap_or(0)
                .abs_diff(expected_stripe.get(key).copied().unwrap_or(0))
        })
        .sum::<u64>();
    assert_eq!(stripe_totals, expected_stripe, "Stripe's accepted units");

    let dynamodb_throttle = ingest_faults.injected.get("throttle").copied().unwrap_or(0)
        + ingest_faults
            .injected
            .get("throughput_exceeded")
            .copied()
            .unwrap_or(0);
    report(&json!({
        "kind": "faults",
        "messages_generated": generated.messages.len(),
        "messages_delivered": delivered,
        "duplicates": delivered - generated.messages.len(),
        "events": generated.events,
        "faults": {
            "dynamodb_throttle": dynamodb_throttle,
            "dynamodb_conflict": ingest_faults.injected.get("transaction_conflict").copied().unwrap_or(0),
            "ingest_killed": ingest_killed,
            "rollup_killed": rollup_killed,
            "billing_sync_killed": billing_killed,
            "sqs_restarts": sqs_restarts,
            "sqs_refused_connections": faults.sqs.stats().refused_connections,
            "stripe_429": stripe_429,
            "stripe_500": stripe_500,
        },
        "rejected": rejected.len(),
        "invoices_checked": invoices_checked,
        "billing_sync_runs": runs + 1,
        "difference_from_ground_truth": diff,
    }));
    assert_eq!(diff, 0);
    stack.stop().await;
    let _ = std::fs::remove_file(meters);
}
