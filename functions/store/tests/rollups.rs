//! Rollups, the usage view, and rejection records, against DynamoDB Local.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod common;

use common::*;
use tollgate_core::aggregate::AggregateState;
use tollgate_core::message::{MessageError, Rejection};
use tollgate_core::usage::{UsageBatch, UsageRow, rolled_up_to};
use tollgate_core::window::Granularity;
use tollgate_store::{RollupWatermark, rejection_cursor};

fn total(rows: &[UsageRow]) -> u64 {
    rows.iter()
        .map(|r| match r.state {
            AggregateState::Count { n } => n,
            _ => 0,
        })
        .sum()
}

#[tokio::test]
async fn the_usage_view_combines_rollups_before_the_watermark_with_hourly_counters_after() {
    let store = fresh_store("view").await;
    let hours = [
        "2026-10-30T10",
        "2026-10-31T23",
        "2026-11-01T00",
        "2026-11-02T05",
        "2026-11-03T07",
    ];
    let rows: Vec<UsageRow> = hours
        .iter()
        .enumerate()
        .map(|(i, h)| count_row(hour_key("acme", "api_requests", h), 10u64.pow(i as u32)))
        .collect();
    store
        .apply_batch(&UsageBatch {
            batch_id: "view".into(),
            rows: rows.clone(),
        })
        .await
        .unwrap();
    let now = at("2026-11-03T08:00:00Z");
    let from = at("2026-10-01T00:00:00Z");
    let to = at("2026-12-01T00:00:00Z");

    // Without any rollup, every view folds the hourly counters.
    let days = store
        .usage_view(&tenant("acme"), Granularity::Day, from, to, now)
        .await
        .unwrap();
    assert_eq!(days, rolled_up_to(rows.clone(), Granularity::Day).unwrap());

    // A rollup run completed the days before Nov 2 and the month of October.
    let rolled = rolled_up_to(rows[..4].to_vec(), Granularity::Day).unwrap();
    let closed: Vec<UsageRow> = rolled
        .into_iter()
        .filter(|r| r.key.window.start() < at("2026-11-02T00:00:00Z"))
        .collect();
    store.put_rollups(&closed).await.unwrap();
    let october = rolled_up_to(closed.clone(), Granularity::Month).unwrap();
    store.put_rollups(&october[..1]).await.unwrap();
    store
        .set_rollup_watermark(
            &tenant("acme"),
            &RollupWatermark {
                complete_before: at("2026-11-02T00:00:00Z"),
                updated_at: now,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .rollup_watermark(&tenant("acme"))
            .await
            .unwrap()
            .unwrap()
            .complete_before,
        at("2026-11-02T00:00:00Z")
    );

    let days = store
        .usage_view(&tenant("acme"), Granularity::Day, from, to, now)
        .await
        .unwrap();
    let keys: Vec<String> = days.iter().map(|r| r.key.window.key()).collect();
    assert_eq!(
        keys,
        [
            "2026-10-30",
            "2026-10-31",
            "2026-11-01",
            "2026-11-02",
            "2026-11-03"
        ]
    );
    assert_eq!(total(&days), 11_111);
    let months = store
        .usage_view(&tenant("acme"), Granularity::Month, from, to, now)
        .await
        .unwrap();
    let keys: Vec<String> = months.iter().map(|r| r.key.window.key()).collect();
    assert_eq!(keys, ["2026-10", "2026-11"]);
    assert_eq!(total(&months), 11_111);
    let hours = store
        .usage_view(&tenant("acme"), Granularity::Hour, from, to, now)
        .await
        .unwrap();
    assert_eq!(hours.len(), 5);
}

#[tokio::test]
async fn writing_the_same_rollup_twice_leaves_one_row_with_the_recomputed_state() {
    let store = fresh_store("rollup-twice").await;
    let day = rolled_up_to(
        vec![count_row(
            hour_key("acme", "api_requests", "2026-11-01T01"),
            4,
        )],
        Granularity::Day,
    )
    .unwrap();
    store.put_rollups(&day).await.unwrap();
    store.put_rollups(&day).await.unwrap();
    let stored = store
        .usage(
            &tenant("acme"),
            Granularity::Day,
            at("2026-11-01T00:00:00Z"),
            at("2026-11-02T00:00:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(stored, day);
    let hourly = vec![count_row(
        hour_key("acme", "api_requests", "2026-11-01T01"),
        1,
    )];
    assert!(
        store.put_rollups(&hourly).await.is_err(),
        "hourly rows are counters, not rollups"
    );
}

#[tokio::test]
async fn a_rejection_is_recorded_once_and_listed_with_its_reason() {
    let store = fresh_store("rejections").await;
    let error = MessageError::UnknownContract;
    let first = Rejection::new(
        "m-1",
        r#"{"subject":"acme","x":1}"#,
        &error,
        at("2026-11-23T10:00:00Z"),
    );
    let second = Rejection::new(
        "m-2",
        "not json",
        &MessageError::NotJson("eof".into()),
        at("2026-11-23T10:00:01Z"),
    );
    store.record_rejection(&first).await.unwrap();
    store.record_rejection(&first).await.unwrap();
    store.record_rejection(&second).await.unwrap();
    let listed = store.rejections(None, 10).await.unwrap();
    assert_eq!(listed, vec![first.clone(), second.clone()]);
    assert_eq!(listed[0].code, "unknown_contract");
    let after = store
        .rejections(Some(&rejection_cursor(&first)), 10)
        .await
        .unwrap();
    assert_eq!(after, vec![second]);
}
