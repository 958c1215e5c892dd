//! The rollup job against DynamoDB Local: idempotent re-runs, late events re-rolled,
//! paging over tenants, and a deadline that stops a pass and a later run that resumes it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, Utc};
use tollgate_core::aggregate::AggregateState;
use tollgate_core::ids::{MeterName, PlanName, TenantId};
use tollgate_core::tenant::{TenantProfile, TenantStatus};
use tollgate_core::usage::{Dimensions, UsageBatch, UsageKey, UsageRow, rolled_up_to};
use tollgate_core::window::{Granularity, Window};
use tollgate_rollup::{Rollup, RollupRequest};
use tollgate_store::DynamoDbStore;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

const TENANTS: [&str; 5] = ["t1", "t2", "t3", "t4", "t5"];

async fn store_with_tenants(name: &str) -> DynamoDbStore {
    let endpoint = tollgate_devstack::dynamodb_endpoint_for_tests();
    let store = DynamoDbStore::new(
        tollgate_store::local_client(&endpoint),
        format!("rollup-{name}-{}", std::process::id()),
    );
    store.ensure_table().await.unwrap();
    for t in TENANTS {
        store
            .create_tenant(&TenantProfile {
                tenant: TenantId::new(t).unwrap(),
                display_name: t.to_owned(),
                plan: PlanName::new("starter").unwrap(),
                status: TenantStatus::Active,
                stripe_customer_id: None,
                created_at: at("2026-10-01T00:00:00Z"),
            })
            .await
            .unwrap();
    }
    store
}

fn hour_row(tenant: &str, hour: DateTime<Utc>, n: u64) -> UsageRow {
    UsageRow {
        key: UsageKey {
            tenant: TenantId::new(tenant).unwrap(),
            meter: MeterName::new("requests").unwrap(),
            window: Window::containing(Granularity::Hour, hour),
            dimensions: Dimensions::default(),
        },
        state: AggregateState::Count { n },
    }
}

/// Twelve days of hourly counters (every 5th hour) before and on the scheduled day.
fn twelve_days(scheduled: DateTime<Utc>) -> Vec<UsageRow> {
    let start = scheduled - Duration::days(12);
    let mut rows = Vec::new();
    for (i, t) in TENANTS.iter().enumerate() {
        let mut h = start;
        while h < scheduled {
            rows.push(hour_row(
                t,
                h,
                (i as u64 + 1) * (h.timestamp() as u64 % 7 + 1),
            ));
            h += Duration::hours(5);
        }
    }
    rows
}

fn rollup(store: &DynamoDbStore) -> Rollup {
    Rollup {
        store: store.clone(),
        concurrency: 2,
        page_size: 2,
        safety_margin: StdDuration::from_secs(1),
    }
}

fn far_deadline() -> Instant {
    Instant::now() + StdDuration::from_secs(600)
}

async fn views_equal_ground_truth(store: &DynamoDbStore, truth: &[UsageRow], now: DateTime<Utc>) {
    let from = now - Duration::days(40);
    let to = now + Duration::days(1);
    for t in TENANTS {
        let tenant = TenantId::new(t).unwrap();
        let mine: Vec<UsageRow> = truth
            .iter()
            .filter(|r| r.key.tenant == tenant)
            .cloned()
            .collect();
        for g in [Granularity::Day, Granularity::Month] {
            let view = store.usage_view(&tenant, g, from, to, now).await.unwrap();
            assert_eq!(view, rolled_up_to(mine.clone(), g).unwrap(), "{t} {g:?}");
        }
    }
}

#[tokio::test]
async fn rollups_are_idempotent_and_pick_up_late_events() {
    let store = store_with_tenants("idempotent").await;
    let scheduled = at("2026-11-03T01:05:00Z");
    let mut truth = twelve_days(scheduled);
    store
        .apply_batch_at(
            &UsageBatch {
                batch_id: "seed".into(),
                rows: truth.clone(),
            },
            scheduled,
        )
        .await
        .unwrap();
    let request = RollupRequest {
        scheduled_time: scheduled,
        lookback_days: None,
    };
    let first = rollup(&store).run(&request, far_deadline()).await.unwrap();
    assert!(first.complete);
    assert_eq!(first.tenants, 5);
    assert_eq!(
        first.days_written,
        5 * 12,
        "a first run rolls up every day that has counters"
    );
    assert_eq!(first.months_written, 5 * 2, "October and November");
    let watermark = store
        .rollup_watermark(&TenantId::new("t3").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(watermark.complete_before, at("2026-11-03T00:00:00Z"));
    views_equal_ground_truth(&store, &truth, scheduled).await;

    let again = rollup(&store).run(&request, far_deadline()).await.unwrap();
    assert_eq!(
        (again.days_written, again.months_written),
        (0, 0),
        "a re-run writes nothing"
    );

    // A late event for Oct 30, a day already rolled up.
    let late = hour_row("t2", at("2026-10-30T07:00:00Z"), 1000);
    store
        .apply_batch_at(
            &UsageBatch {
                batch_id: "late".into(),
                rows: vec![late.clone()],
            },
            scheduled,
        )
        .await
        .unwrap();
    truth.push(late);
    let next = rollup(&store).run(&request, far_deadline()).await.unwrap();
    assert_eq!((next.days_written, next.months_written), (1, 1));
    views_equal_ground_truth(&store, &truth, scheduled).await;
}

#[tokio::test]
async fn a_pass_stopped_by_the_deadline_resumes_in_the_next_run() {
    let store = store_with_tenants("deadline").await;
    let scheduled = at("2026-11-10T00:30:00Z");
    let truth = twelve_days(scheduled);
    store
        .apply_batch_at(
            &UsageBatch {
                batch_id: "seed".into(),
                rows: truth.clone(),
            },
            scheduled,
        )
        .await
        .unwrap();
    let request = RollupRequest {
        scheduled_time: scheduled,
        lookback_days: None,
    };
    let stopped = rollup(&store).run(&request, Instant::now()).await.unwrap();
    assert!(!stopped.complete);
    assert_eq!(stopped.tenants, 0);
    let resumed = rollup(&store).run(&request, far_deadline()).await.unwrap();
    assert!(resumed.complete);
    assert_eq!(resumed.tenants, 5);
    assert_eq!(store.rollup_cursor().await.unwrap(), None);
    views_equal_ground_truth(&store, &truth, scheduled).await;
}

#[tokio::test]
async fn a_bad_lookback_is_refused() {
    let store = store_with_tenants("bad").await;
    let request = RollupRequest {
        scheduled_time: Utc::now(),
        lookback_days: Some(0),
    };
    assert!(rollup(&store).run(&request, far_deadline()).await.is_err());
    let parsed: Result<RollupRequest, _> =
        serde_json::from_str(r#"{"scheduledTime": "2026-11-23T16:00:00Z", "extra": 1}"#);
    assert!(parsed.is_err(), "unknown payload fields are refused");
}
