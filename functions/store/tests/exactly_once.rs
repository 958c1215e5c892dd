//! Exactly-once application of usage batches, against DynamoDB Local.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod common;

use std::sync::Arc;

use common::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tollgate_core::aggregate::{AggregateState, Aggregation};
use tollgate_core::usage::{UsageBatch, UsageRow};
use tollgate_core::window::Granularity;
use tollgate_store::{
    ApplyReport, BatchOutcome, DynamoDbStore, JOURNAL_GRACE, STORAGE_REFUSED, StoreError,
    content_chunks, plan_rows,
};

fn batch(id: &str, rows: Vec<UsageRow>) -> UsageBatch {
    UsageBatch {
        batch_id: id.to_owned(),
        rows,
    }
}

async fn total_count(store: &DynamoDbStore, tenant_id: &str) -> u64 {
    store
        .usage(
            &tenant(tenant_id),
            Granularity::Hour,
            at("2026-01-01T00:00:00Z"),
            at("2027-01-01T00:00:00Z"),
        )
        .await
        .unwrap()
        .iter()
        .map(|r| match r.state {
            AggregateState::Count { n } => n,
            _ => 0,
        })
        .sum()
}

/// 250 distinct counters of one tenant over many hours, each counting `i + 1`.
fn wide_batch(id: &str) -> (UsageBatch, u64) {
    let mut rows = Vec::new();
    let mut expected = 0;
    for i in 0..250u64 {
        let hour = format!("2026-11-{:02}T{:02}", 1 + i / 24, i % 24);
        rows.push(count_row(hour_key("acme", "api_requests", &hour), i + 1));
        expected += i + 1;
    }
    (batch(id, rows), expected)
}

#[tokio::test]
async fn the_same_batch_applied_twice_counts_once() {
    let store = fresh_store("twice").await;
    let b = batch(
        "b-1",
        vec![
            count_row(hour_key("acme", "api_requests", "2026-11-23T10"), 7),
            sum_row(
                hour_key("acme", "egress_bytes", "2026-11-23T10"),
                dec!(1024.5),
            ),
        ],
    );
    let first = store.apply_batch(&b).await.unwrap();
    assert_eq!(first.batches_applied, 1);
    let second = store.apply_batch(&b).await.unwrap();
    assert!(second.was_duplicate(), "{second:?}");
    assert_eq!(total_count(&store, "acme").await, 7);
    let rows = store
        .usage(
            &tenant("acme"),
            Granularity::Hour,
            at("2026-11-23T00:00:00Z"),
            at("2026-11-24T00:00:00Z"),
        )
        .await
        .unwrap();
    let egress = rows
        .iter()
        .find(|r| r.key.meter.as_str() == "egress_bytes")
        .unwrap();
    assert_eq!(egress.state, AggregateState::Sum { sum: dec!(1024.5) });
}

#[tokio::test]
async fn the_same_batch_applied_by_concurrent_tasks_counts_once() {
    let store = Arc::new(fresh_store("concurrent").await);
    let (b, expected) = wide_batch("b-concurrent");
    let b = Arc::new(b);
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let store = Arc::clone(&store);
            let b = Arc::clone(&b);
            tokio::spawn(async move { store.apply_batch(&b).await })
        })
        .collect();
    let mut totals = ApplyReport::default();
    for task in tasks {
        totals.add(&task.await.unwrap().unwrap());
    }
    assert_eq!(totals.batches_applied, 1, "one task claims the batch");
    assert_eq!(totals.batches_already_applied, 5);
    assert_eq!(totals.journal_chunks_applied, 3);
    assert_eq!(total_count(&store, "acme").await, expected);
}

#[tokio::test]
async fn a_batch_touching_250_counters_is_journalled_and_applies_completely() {
    let store = fresh_store("wide").await;
    let (b, expected) = wide_batch("b-wide");
    let report = store.apply_batch(&b).await.unwrap();
    assert_eq!(report.batches_applied, 1);
    // One claim (marker + 3 journal chunks), then one transaction per chunk.
    assert_eq!(report.transactions, 4);
    assert_eq!(report.journal_chunks_applied, 3);
    assert_eq!(report.rows_written, 250);
    let rows = store
        .usage(
            &tenant("acme"),
            Granularity::Hour,
            at("2026-11-01T00:00:00Z"),
            at("2026-12-01T00:00:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 250);
    assert_eq!(total_count(&store, "acme").await, expected);
    let nothing_left = store
        .finish_journals(at("2100-01-01T00:00:00Z"), chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(nothing_left.journal_chunks_applied, 0);
}

/// The store as seen by a process that dies after `alive` transactions.
fn dying(plain: &DynamoDbStore, alive: u32, lose_last: bool) -> DynamoDbStore {
    let client = tollgate_devstack::faults::dying_dynamodb(plain.client(), alive, lose_last);
    DynamoDbStore::new(client, plain.table())
}

fn far_future() -> chrono::DateTime<chrono::Utc> {
    at("2100-01-01T00:00:00Z")
}

#[tokio::test]
async fn a_run_killed_between_claim_and_chunks_is_finished_by_the_next_without_double_counting() {
    // The claim is transaction 1, the three journal chunks 2–4: kill after each.
    for (alive, lose_last) in [(1, false), (1, true), (2, false), (3, false), (3, true)] {
        let plain = fresh_store("killed").await;
        let (b, expected) = wide_batch("b-killed");
        let killed = dying(&plain, alive, lose_last);
        let err = killed.apply_batch(&b).await.unwrap_err();
        assert!(err.is_transient(), "the message must come back: {err}");
        assert!(total_count(&plain, "acme").await < expected);

        // The redelivery finds the batch claimed, and applies nothing itself…
        let redelivery = plain.apply_batch(&b).await.unwrap();
        assert!(redelivery.was_duplicate(), "{redelivery:?}");
        // …but the next run's first step finishes the journal, once.
        let finished = plain
            .finish_journals(far_future(), chrono::Utc::now())
            .await
            .unwrap();
        // The `alive`th transaction commits either way; only its caller may not know.
        let chunks_left = 4 - alive as usize;
        assert_eq!(
            finished.journal_chunks_applied, chunks_left,
            "alive {alive}, lose_last {lose_last}"
        );
        assert_eq!(total_count(&plain, "acme").await, expected);
        let again = plain
            .finish_journals(far_future(), chrono::Utc::now())
            .await
            .unwrap();
        assert_eq!(again.journal_chunks_applied, 0);
        assert_eq!(total_count(&plain, "acme").await, expected);
    }
}

#[tokio::test]
async fn journals_younger_than_the_cutoff_are_left_to_their_claimer() {
    let plain = fresh_store("young").await;
    let (b, expected) = wide_batch("b-young");
    let claimed_at = chrono::Utc::now();
    dying(&plain, 1, false)
        .apply_batch_at(&b, claimed_at)
        .await
        .unwrap_err();
    let early = plain
        .finish_journals(claimed_at - JOURNAL_GRACE, claimed_at)
        .await
        .unwrap();
    assert_eq!(early.journal_chunks_applied, 0);
    let late = plain
        .finish_journals(claimed_at + JOURNAL_GRACE, claimed_at)
        .await
        .unwrap();
    assert_eq!(late.journal_chunks_applied, 3);
    assert_eq!(total_count(&plain, "acme").await, expected);
}

#[tokio::test]
async fn concurrent_finishers_apply_each_journal_chunk_once() {
    let plain = fresh_store("finishers").await;
    let (b, expected) = wide_batch("b-finishers");
    dying(&plain, 1, false).apply_batch(&b).await.unwrap_err();
    let plain = Arc::new(plain);
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let store = Arc::clone(&plain);
            tokio::spawn(async move {
                store
                    .finish_journals(far_future(), chrono::Utc::now())
                    .await
            })
        })
        .collect();
    let mut chunks = 0;
    for task in tasks {
        chunks += task.await.unwrap().unwrap().journal_chunks_applied;
    }
    assert_eq!(chunks, 3);
    assert_eq!(total_count(&plain, "acme").await, expected);
}

/// `messages` edge-like batches, each touching the same `tenants` × 3 counters.
fn fleet(messages: usize, tenants: usize) -> Vec<UsageBatch> {
    (0..messages)
        .map(|m| {
            let rows = (0..tenants)
                .flat_map(|t| {
                    ["api_requests", "egress_count", "errors"].map(|meter| {
                        count_row(
                            hour_key(&format!("t{t:03}"), meter, "2026-11-23T10"),
                            (m + t + 1) as u64,
                        )
                    })
                })
                .collect();
            batch(&format!("gw-{m:03}"), rows)
        })
        .collect()
}

async fn fleet_total(store: &DynamoDbStore, tenants: usize) -> u64 {
    let mut total = 0;
    for t in 0..tenants {
        total += total_count(store, &format!("t{t:03}")).await;
    }
    total
}

fn fleet_truth(batches: &[UsageBatch]) -> u64 {
    batches
        .iter()
        .flat_map(|b| &b.rows)
        .map(|r| match r.state {
            AggregateState::Count { n } => n,
            _ => 0,
        })
        .sum()
}

#[tokio::test]
async fn one_run_writes_each_counter_once_whatever_the_number_of_messages() {
    let store = fresh_store("fleet").await;
    let batches = fleet(30, 40);
    let report = store.apply_batches(&batches, chrono::Utc::now()).await;
    assert!(
        report
            .outcomes
            .iter()
            .all(|o| matches!(o, Ok(BatchOutcome::Applied)))
    );
    // 30 messages × 120 rows merge into 120 counters: one claim, two journal chunks.
    assert_eq!(report.totals.rows_written, 120);
    assert_eq!(report.totals.transactions, 3);
    assert_eq!(report.totals.items_written, 30 + 2 + 2 + 120);
    assert_eq!(fleet_total(&store, 40).await, fleet_truth(&batches));
}

#[tokio::test]
async fn a_full_window_of_wide_sketch_messages_is_one_claim() {
    // 95 gateway flushes of 100 tenants × 3 latency sketches: 28,500 rows that merge into
    // 300 counters. Their journal is small once merged, though the rows are not.
    let store = fresh_store("sketches").await;
    let t = at("2026-11-23T10:15:00Z");
    let aggregation = Aggregation::Percentiles;
    let batches: Vec<UsageBatch> = (0..95i64)
        .map(|m| {
            let rows = (0..100)
                .flat_map(|tenant| {
                    ["latency_a", "latency_b", "latency_c"].map(|meter| UsageRow {
                        key: hour_key(&format!("t{tenant:03}"), meter, "2026-11-23T10"),
                        state: observed(&aggregation, &(m..m + 40).collect::<Vec<_>>(), t),
                    })
                })
                .collect();
            batch(&format!("flush-{m:03}"), rows)
        })
        .collect();
    let report = store.apply_batches(&batches, chrono::Utc::now()).await;
    assert!(
        report
            .outcomes
            .iter()
            .all(|o| matches!(o, Ok(BatchOutcome::Applied)))
    );
    assert_eq!(report.totals.rows_written, 300);
    assert_eq!(report.totals.transactions, 5, "{:?}", report.totals);
    let again = store.apply_batches(&batches, chrono::Utc::now()).await;
    assert!(
        again
            .outcomes
            .iter()
            .all(|o| matches!(o, Ok(BatchOutcome::AlreadyApplied)))
    );
}

#[tokio::test]
async fn a_killed_run_then_a_regrouped_redelivery_counts_every_message_once() {
    let batches = fleet(30, 40);
    for alive in 1..=3 {
        let plain = fresh_store("regrouped").await;
        // The first run takes messages 0–19 and dies after `alive` transactions.
        let killed = dying(&plain, alive, false);
        let first = killed
            .apply_batches(&batches[..20], chrono::Utc::now())
            .await;
        let expected_ok = usize::from(alive == 3);
        assert_eq!(
            first.outcomes.iter().filter(|o| o.is_ok()).count(),
            20 * expected_ok,
            "alive {alive}"
        );
        // The redelivery comes back shuffled with messages 20–29, in two invocations.
        let mut second: Vec<UsageBatch> = batches[10..].to_vec();
        second.reverse();
        let now = chrono::Utc::now();
        plain.finish_journals(far_future(), now).await.unwrap();
        let (a, b) = second.split_at(7);
        for part in [a, b] {
            let report = plain.apply_batches(part, now).await;
            assert!(
                report.outcomes.iter().all(|o| o.is_ok()),
                "{:?}",
                report.outcomes
            );
        }
        plain.apply_batches(&batches[..10], now).await;
        assert_eq!(
            fleet_total(&plain, 40).await,
            fleet_truth(&batches),
            "alive {alive}"
        );
    }
}

/// `tenants` × 200 hourly counters, more than one claim's journal can hold.
fn very_wide_batch(id: &str, tenants: usize) -> (UsageBatch, u64) {
    let mut rows = Vec::new();
    let mut expected = 0;
    for t in 0..tenants {
        for h in 0..200u64 {
            let hour = format!("2026-11-{:02}T{:02}", 1 + h / 24, h % 24);
            rows.push(count_row(
                hour_key(&format!("t{t:03}"), "api_requests", &hour),
                h + 1,
            ));
            expected += h + 1;
        }
    }
    (batch(id, rows), expected)
}

#[tokio::test]
async fn a_batch_too_wide_for_a_claim_applies_in_content_chunks_and_resumes_after_a_partial_failure()
 {
    let store = fresh_store("very-wide").await;
    let (b, expected) = very_wide_batch("b-very-wide", 50);
    let rows = plan_rows(&b).unwrap();
    let chunks = content_chunks(&rows);
    assert_eq!(chunks.len(), 102);
    // An earlier delivery committed chunks 0 and 50, then died.
    let mut report = ApplyReport::default();
    for chunk in [&chunks[0], &chunks[50]] {
        assert!(
            store
                .apply_chunk(&b.batch_id, chunk, chrono::Utc::now(), &mut report)
                .await
                .unwrap()
        );
    }
    let mut redelivered = b.clone();
    redelivered.rows.reverse();
    let retry = store.apply_batch(&redelivered).await.unwrap();
    assert_eq!(retry.batches_applied, 1);
    assert_eq!(retry.rows_written, 10_000 - 2 * 99);
    assert_eq!(fleet_total(&store, 50).await, expected);
    let again = store.apply_batch(&b).await.unwrap();
    assert!(again.was_duplicate());
}

#[tokio::test]
async fn concurrent_batches_merge_non_additive_states_without_losing_updates() {
    let store = Arc::new(fresh_store("versioned").await);
    let key = hour_key("acme", "latency_max", "2026-11-23T10");
    let unique_key = hour_key("acme", "active_users", "2026-11-23T10");
    let t = at("2026-11-23T10:15:00Z");
    let tasks: Vec<_> = (0..8i64)
        .map(|i| {
            let store = Arc::clone(&store);
            let rows = vec![
                UsageRow {
                    key: key.clone(),
                    state: observed(&Aggregation::Max, &[i * 10], t),
                },
                UsageRow {
                    key: unique_key.clone(),
                    state: observed(&Aggregation::UniqueCount, &[i, i + 100], t),
                },
            ];
            tokio::spawn(async move { store.apply_batch(&batch(&format!("v-{i}"), rows)).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let rows = store
        .usage(
            &tenant("acme"),
            Granularity::Hour,
            at("2026-11-23T00:00:00Z"),
            at("2026-11-24T00:00:00Z"),
        )
        .await
        .unwrap();
    let max = rows.iter().find(|r| r.key == key).unwrap();
    assert_eq!(
        max.state.quantity(&Aggregation::Max),
        Some(Decimal::from(70))
    );
    let unique = rows.iter().find(|r| r.key == unique_key).unwrap();
    assert_eq!(
        unique.state.quantity(&Aggregation::UniqueCount),
        Some(Decimal::from(16))
    );
}

#[tokio::test]
async fn a_counter_stored_under_another_aggregation_is_refused_alone_and_recorded_whole() {
    let store = fresh_store("mismatch").await;
    let key = hour_key("acme", "api_requests", "2026-11-23T10");
    let other = hour_key("acme", "egress_bytes", "2026-11-23T10");
    store
        .apply_batch(&batch("m-1", vec![count_row(key.clone(), 1)]))
        .await
        .unwrap();
    let report = store
        .apply_batch(&batch(
            "m-2",
            vec![sum_row(key.clone(), dec!(5)), sum_row(other, dec!(7))],
        ))
        .await
        .unwrap();
    assert_eq!((report.batches_applied, report.rows_refused), (1, 1));
    assert_eq!(total_count(&store, "acme").await, 1);
    let rejections = store.rejections(None, 10).await.unwrap();
    assert_eq!(rejections.len(), 1, "{rejections:?}");
    assert_eq!(rejections[0].code, STORAGE_REFUSED);
    let row: UsageRow = serde_json::from_str(&rejections[0].body_excerpt).unwrap();
    assert_eq!(row, sum_row(key, dec!(5)));
    let egress = store
        .usage(
            &tenant("acme"),
            Granularity::Hour,
            at("2026-11-23T00:00:00Z"),
            at("2026-11-24T00:00:00Z"),
        )
        .await
        .unwrap();
    assert!(
        egress
            .iter()
            .any(|r| r.state == AggregateState::Sum { sum: dec!(7) })
    );
}

#[tokio::test]
async fn a_refused_counter_in_a_journal_chunk_does_not_hold_up_the_others() {
    let store = fresh_store("mismatch-journal").await;
    let (b, expected) = wide_batch("b-journal-mismatch");
    let clash = b.rows[17].key.clone();
    store
        .apply_batch(&batch("m-0", vec![sum_row(clash, dec!(1))]))
        .await
        .unwrap();
    let report = store.apply_batch(&b).await.unwrap();
    assert_eq!((report.rows_written, report.rows_refused), (249, 1));
    assert_eq!(total_count(&store, "acme").await, expected - 18);
    assert_eq!(store.rejections(None, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn minute_rows_and_bad_batch_ids_are_refused_before_any_write() {
    let mut key = hour_key("acme", "api_requests", "2026-11-23T10");
    key.window =
        tollgate_core::window::Window::containing(Granularity::Minute, at("2026-11-23T10:01:00Z"));
    assert!(matches!(
        plan_rows(&batch("x", vec![count_row(key, 1)])),
        Err(StoreError::InvalidBatch(_))
    ));
    assert!(matches!(
        plan_rows(&batch("", vec![])),
        Err(StoreError::InvalidBatch(_))
    ));
}

#[tokio::test]
async fn non_additive_counters_of_different_tenants_with_the_same_sort_key_stay_apart() {
    let store = fresh_store("versioned-tenants").await;
    let t = at("2026-11-23T10:15:00Z");
    for round in 0..2i64 {
        let rows = ["acme", "globex", "initech"]
            .iter()
            .enumerate()
            .map(|(i, tenant)| UsageRow {
                key: hour_key(tenant, "latency_max", "2026-11-23T10"),
                state: observed(&Aggregation::Max, &[(i as i64 + 1) * 100 + round], t),
            })
            .collect();
        store
            .apply_batch(&batch(&format!("tenants-{round}"), rows))
            .await
            .unwrap();
    }
    for (i, name) in ["acme", "globex", "initech"].iter().enumerate() {
        let rows = store
            .usage(
                &tenant(name),
                Granularity::Hour,
                at("2026-11-23T00:00:00Z"),
                at("2026-11-24T00:00:00Z"),
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            rows[0].state.quantity(&Aggregation::Max),
            Some(Decimal::from((i as i64 + 1) * 100 + 1))
        );
    }
}
