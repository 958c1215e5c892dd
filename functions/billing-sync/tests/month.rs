//! A month of usage reported to the Stripe stand-in through faults: 429 and 500 storms, a
//! 500 after Stripe took the event, retries exhausted, and runs that crash between
//! recording an event as pending and settling it. The month ends with Stripe holding
//! exactly the usage (in whole Stripe units, remainders carried), no identifier accepted
//! twice, every reconciliation settled, and the month's statement frozen.
//!
//! The ground truth is the test's own sum of every increment it applied.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use tokio::sync::Notify;
use tollgate_billing_sync::pacing::RateLimiter;
use tollgate_billing_sync::ports::{MeterEventFailure, MeterEventRequest, MeterEvents};
use tollgate_billing_sync::retry::RetryPolicy;
use tollgate_billing_sync::stripe::{SecretKey, StripeConfig, StripeMeterEvents};
use tollgate_billing_sync::{BillingSync, SyncReport};
use tollgate_core::aggregate::AggregateState;
use tollgate_core::billing::EventStatus;
use tollgate_core::ids::{MeterName, PlanName, TenantId};
use tollgate_core::meter::MeterCatalog;
use tollgate_core::plan::PlanConfig;
use tollgate_core::tenant::{TenantProfile, TenantStatus};
use tollgate_core::usage::{Dimensions, UsageBatch, UsageKey, UsageRow};
use tollgate_core::window::{Granularity, Window};
use tollgate_devstack::stripe::{Fault, StandInConfig, StripeStandIn};
use tollgate_rollup::{Rollup, RollupRequest};
use tollgate_store::DynamoDbStore;

const KEY: &str = "sk_test_tollgate_month";

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

fn catalog() -> MeterCatalog {
    MeterCatalog::from_json(
        r#"[
          {"name": "api_requests", "eventTypes": ["api.request"], "aggregation": {"kind": "count"},
           "unit": "requests", "groupBy": ["route"],
           "stripe": {"eventName": "api_requests"}},
          {"name": "egress_bytes", "eventTypes": ["api.request"], "valueField": "bytes",
           "aggregation": {"kind": "sum"}, "unit": "bytes",
           "stripe": {"eventName": "egress_mb", "unitsPerQuantity": "0.000001"}}
        ]"#,
    )
    .unwrap()
}

/// (tenant, Stripe customer); `d` has none and must never reach Stripe.
const TENANTS: [(&str, Option<&str>); 4] = [
    ("acme", Some("cus_acme")),
    ("globex", Some("cus_globex")),
    ("initech", Some("cus_initech")),
    ("dunder", None),
];

/// A small deterministic generator: the test must be repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Forwards to the real adapter; on the call numbered `crash_on`, lets the call reach
/// Stripe and then never returns, as a process killed after sending would.
struct Crashing {
    inner: StripeMeterEvents,
    calls: AtomicUsize,
    crash_on: AtomicUsize,
    crashed: Notify,
}

impl MeterEvents for Crashing {
    async fn send(&self, event: &MeterEventRequest) -> Result<(), MeterEventFailure> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let result = self.inner.send(event).await;
        if call == self.crash_on.load(Ordering::SeqCst) {
            self.crashed.notify_one();
            std::future::pending::<()>().await;
        }
        result
    }
}

/// The usage the test applied: its own ground truth, per (tenant, meter, hour).
#[derive(Default)]
struct Truth(BTreeMap<(String, String, Window), Decimal>);

struct World {
    store: DynamoDbStore,
    stripe: StripeStandIn,
    job: Arc<BillingSync<Crashing>>,
    truth: Truth,
    batches: usize,
}

impl World {
    async fn new() -> World {
        let endpoint = tollgate_devstack::dynamodb_endpoint_for_tests();
        let store = DynamoDbStore::new(
            tollgate_store::local_client(&endpoint),
            format!("billing-month-{}", std::process::id()),
        );
        store.ensure_table().await.unwrap();
        let plan: PlanConfig = serde_json::from_str(
            r#"{"name": "metered", "effectiveFrom": "2026-01-01T00:00:00Z", "currency": "USD",
                "baseFee": "49",
                "meters": [
                  {"meter": "api_requests", "included": "1000",
                   "price": {"type": "perUnit", "unitPrice": "0.001"}},
                  {"meter": "egress_bytes", "price": {"type": "perUnit", "unitPrice": "0.00000002"}}
                ]}"#,
        )
        .unwrap();
        store
            .create_plan_version(&plan.compile().unwrap())
            .await
            .unwrap();
        for (tenant, customer) in TENANTS {
            store
                .create_tenant(&TenantProfile {
                    tenant: TenantId::new(tenant).unwrap(),
                    display_name: tenant.to_owned(),
                    plan: PlanName::new("metered").unwrap(),
                    status: TenantStatus::Active,
                    stripe_customer_id: customer.map(str::to_owned),
                    created_at: at("2026-10-01T00:00:00Z"),
                })
                .await
                .unwrap();
        }
        let stripe = StripeStandIn::start(StandInConfig::new(KEY).requiring_identifier())
            .await
            .unwrap();
        let inner = StripeMeterEvents::new(
            &StripeConfig::new(SecretKey::new(KEY)).with_base_url(stripe.url()),
        )
        .unwrap();
        let job = Arc::new(BillingSync {
            store: store.clone(),
            catalog: catalog(),
            stripe: Crashing {
                inner,
                calls: AtomicUsize::new(0),
                crash_on: AtomicUsize::new(usize::MAX),
                crashed: Notify::new(),
            },
            limiter: RateLimiter::new(
                NonZeroU32::new(2_000).unwrap(),
                NonZeroU32::new(200).unwrap(),
            ),
            retry: RetryPolicy {
                base: StdDuration::from_millis(1),
                cap: StdDuration::from_millis(20),
                max_attempts: NonZeroU32::new(4).unwrap(),
            },
            lookback_days: 9,
            concurrency: 3,
            close_after: Duration::days(8),
            safety_margin: StdDuration::from_secs(1),
        });
        World {
            store,
            stripe,
            job,
            truth: Truth::default(),
            batches: 0,
        }
    }

    /// Applies `n` requests and `bytes` of egress to `tenant`'s `hour`.
    async fn apply(&mut self, tenant: &str, hour: Window, n: u64, bytes: u64, now: DateTime<Utc>) {
        let key = |meter: &str, route: &str| UsageKey {
            tenant: TenantId::new(tenant).unwrap(),
            meter: MeterName::new(meter).unwrap(),
            window: hour,
            dimensions: {
                let mut d = Dimensions::new();
                if meter == "api_requests" {
                    d.insert("route", route).unwrap();
                }
                d
            },
        };
        let half = n / 2;
        let rows = vec![
            UsageRow {
                key: key("api_requests", "/v1/a"),
                state: AggregateState::Count { n: half },
            },
            UsageRow {
                key: key("api_requests", "/v1/b"),
                state: AggregateState::Count { n: n - half },
            },
            UsageRow {
                key: key("egress_bytes", ""),
                state: AggregateState::Sum {
                    sum: Decimal::from(bytes),
                },
            },
        ];
        self.batches += 1;
        let batch = UsageBatch {
            batch_id: format!("month-{}", self.batches),
            rows,
        };
        self.store.apply_batch_at(&batch, now).await.unwrap();
        *self
            .truth
            .0
            .entry((tenant.to_owned(), "api_requests".to_owned(), hour))
            .or_default() += Decimal::from(n);
        *self
            .truth
            .0
            .entry((tenant.to_owned(), "egress_bytes".to_owned(), hour))
            .or_default() += Decimal::from(bytes);
    }

    /// One scheduled run at `now`; `None` when it crashed.
    async fn sync(&self, now: DateTime<Utc>) -> Option<SyncReport> {
        self.stripe.set_now(now.timestamp());
        let deadline = Instant::now() + StdDuration::from_secs(120);
        tokio::select! {
            report = self.job.run(now, deadline) => Some(report.unwrap()),
            () = self.job.stripe.crashed.notified() => None,
        }
    }

    /// The rollup schedule: days and months from the hourly counters, which expire
    /// after 35 days.
    async fn roll_up(&self, now: DateTime<Utc>) {
        let rollup = Rollup {
            store: self.store.clone(),
            concurrency: 4,
            page_size: 100,
            safety_margin: StdDuration::from_secs(1),
        };
        let request = RollupRequest {
            scheduled_time: now,
            lookback_days: None,
        };
        let reply = rollup
            .run(&request, Instant::now() + StdDuration::from_secs(120))
            .await
            .unwrap();
        assert!(reply.complete);
    }

    fn crash_on_call(&self, calls_from_now: usize) {
        let now = self.job.stripe.calls.load(Ordering::SeqCst);
        self.job
            .stripe
            .crash_on
            .store(now + calls_from_now, Ordering::SeqCst);
    }

    fn month_truth(&self, tenant: &str, meter: &str, month: Window) -> Decimal {
        self.truth
            .0
            .iter()
            .filter(|((t, m, hour), _)| t == tenant && m == meter && month.contains(hour.start()))
            .map(|(_, q)| *q)
            .sum()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_through_faults_reaches_stripe_exactly_once() {
    let mut world = World::new().await;
    let mut rng = Rng(0x5eed_b111);
    let november = Window::parse_key(Granularity::Month, "2026-11").unwrap();
    let start = november.start();
    let mut next_hour = start;
    let mut crashes = 0;
    let mut faults_injected = 0;
    let mut runs = 0;

    // Runs every 12 hours from Nov 1 to Dec 9 (month close after 8 days).
    let mut now = start + Duration::hours(12) + Duration::minutes(5);
    let end = at("2026-12-09T12:05:00Z");
    while now <= end {
        // The hours that closed since the last run, in November only.
        while next_hour + Duration::hours(1) <= now && november.contains(next_hour) {
            let hour = Window::containing(Granularity::Hour, next_hour);
            for (tenant, _) in TENANTS {
                if rng.below(10) < 7 {
                    let n = rng.below(500);
                    let bytes = rng.below(3_000_000);
                    world.apply(tenant, hour, n, bytes, now).await;
                }
            }
            next_hour += Duration::hours(1);
        }
        // Late usage for an hour already reported (1 to 6 days back, still November).
        if rng.below(3) == 0 {
            let back = Duration::hours(24 + i64::try_from(rng.below(120)).unwrap());
            let late = now - back;
            if november.contains(late) {
                let hour = Window::containing(Granularity::Hour, late);
                let tenant = TENANTS[usize::try_from(rng.below(4)).unwrap()].0;
                let (n, bytes) = (1 + rng.below(50), rng.below(400_000));
                world.apply(tenant, hour, n, bytes, now).await;
            }
        }
        match runs % 12 {
            2 => world.stripe.fail_next(3, Fault::RateLimited),
            4 => world.stripe.fail_next(2, Fault::ServerError),
            6 => world.stripe.fail_next(2, Fault::ServerErrorAfterAccept),
            // More failures in a row than the retry policy's attempts: an event stays
            // pending until the next run.
            8 => world.stripe.fail_next(9, Fault::ServerError),
            10 => world.crash_on_call(usize::try_from(rng.below(5)).unwrap()),
            _ => {}
        }
        if matches!(runs % 12, 2 | 4 | 6 | 8) {
            faults_injected += 1;
        }
        if world.sync(now).await.is_none() {
            crashes += 1;
        }
        world.roll_up(now).await;
        runs += 1;
        now += Duration::hours(12);
    }
    // A last run after any crash or exhausted retries of the final ones.
    world.stripe.clear_faults();
    world
        .job
        .stripe
        .crash_on
        .store(usize::MAX, Ordering::SeqCst);
    let last = world.sync(end + Duration::hours(1)).await.unwrap();
    assert!(last.stopped.is_empty(), "{:?}", last.stopped);
    assert!(crashes >= 5, "crashes injected: {crashes}");
    assert!(faults_injected >= 10);

    // Stripe holds exactly the month: per tenant and meter, the whole units of the
    // ground truth (a sub-unit remainder of egress stays carried, below one MB).
    let totals = world.stripe.totals();
    for (tenant, customer) in TENANTS {
        let requests = world.month_truth(tenant, "api_requests", november);
        let egress = world.month_truth(tenant, "egress_bytes", november);
        let Some(customer) = customer else {
            assert!(totals.keys().all(|(c, _)| !c.contains(tenant)));
            continue;
        };
        let sent = |event: &str| {
            totals
                .get(&(customer.to_owned(), event.to_owned()))
                .copied()
                .unwrap_or_default()
        };
        assert!(requests > Decimal::from(100_000), "{tenant}: {requests}");
        assert_eq!(
            Decimal::from(sent("api_requests")),
            requests,
            "{tenant} requests"
        );
        assert_eq!(
            Decimal::from(sent("egress_mb")),
            (egress * Decimal::new(1, 6)).floor(),
            "{tenant} egress in whole MB"
        );
    }
    assert!(world.stripe.duplicate_identifiers().is_empty());

    // The ledger agrees with Stripe and with the usage, with nothing pending.
    let catalog = catalog();
    for (tenant, customer) in TENANTS {
        let tenant_id = TenantId::new(tenant).unwrap();
        let lines = world
            .store
            .reconciliation(&tenant_id, &catalog, november, end)
            .await
            .unwrap();
        assert_eq!(lines.len(), 2);
        for line in &lines {
            if customer.is_some() {
                assert!(line.is_settled(), "{line:?}");
                assert_eq!(
                    line.usage,
                    world.month_truth(tenant, line.meter.as_str(), november)
                );
            } else {
                assert_eq!(line.reported, Decimal::ZERO);
            }
        }
        let events = world
            .store
            .ledger_events(
                &tenant_id,
                &MeterName::new("api_requests").unwrap(),
                Window::containing(Granularity::Hour, november.start()),
                Window::containing(Granularity::Hour, november.end() - Duration::hours(1)),
            )
            .await
            .unwrap();
        assert!(
            events
                .iter()
                .all(|e| matches!(e.status, EventStatus::Sent | EventStatus::Carried))
        );
        if customer.is_some() {
            assert!(
                events.iter().any(|e| e.sequence > 0),
                "{tenant}: late usage produced correction events"
            );
        }
    }

    // November's statement is frozen for every tenant, Stripe customer or not.
    for (tenant, _) in TENANTS {
        let statement = world
            .store
            .statement(&TenantId::new(tenant).unwrap(), november)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{tenant}: no statement"));
        assert_eq!(statement.invoice.period, november);
        assert_eq!(statement.plan_versions.len(), 1);
        assert!(statement.invoice.total > Decimal::from(49));
    }
    println!(
        "runs {runs}, crashes {crashes}, fault bursts {faults_injected}, requests to Stripe {}, accepted {}",
        world.stripe.requests().len(),
        world.stripe.accepted().len()
    );
}
