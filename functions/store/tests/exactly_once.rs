//! Exactly-once application of usage batches, against DynamoDB Local.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod common;

use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::interceptors::{
    BeforeDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use common::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tollgate_core::aggregate::{AggregateState, Aggregation};
use tollgate_core::usage::{UsageBatch, UsageRow};
use tollgate_core::window::Granularity;
use tollgate_store::{DynamoDbStore, StoreError, plan_chunks};

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
    assert_eq!(first.chunks_applied, 1);
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
    let mut applied = 0;
    for task in tasks {
        applied += task.await.unwrap().unwrap().chunks_applied;
    }
    assert_eq!(
        applied, 3,
        "each of the three chunks is committed by exactly one task"
    );
    assert_eq!(total_count(&store, "acme").await, expected);
}

#[tokio::test]
async fn a_batch_touching_250_counters_applies_completely() {
    let store = fresh_store("wide").await;
    let (b, expected) = wide_batch("b-wide");
    assert_eq!(plan_chunks(&b).unwrap().len(), 3);
    let report = store.apply_batch(&b).await.unwrap();
    assert_eq!(report.chunks_applied, 3);
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
}

#[tokio::test]
async fn a_retry_after_a_partial_failure_completes_without_double_counting() {
    let store = fresh_store("partial").await;
    let (b, expected) = wide_batch("b-partial");
    let chunks = plan_chunks(&b).unwrap();
    let mut report = Default::default();
    // The first delivery committed chunks 0 and 2, then the invocation died.
    for chunk in [&chunks[0], &chunks[2]] {
        store
            .apply_chunk(&b.batch_id, chunk, chrono::Utc::now(), &mut report)
            .await
            .unwrap();
    }
    assert!(total_count(&store, "acme").await < expected);
    // The redelivery arrives with its rows in another order.
    let mut redelivered = b.clone();
    redelivered.rows.reverse();
    let retry = store.apply_batch(&redelivered).await.unwrap();
    assert_eq!((retry.chunks_applied, retry.chunks_already_applied), (1, 2));
    assert_eq!(total_count(&store, "acme").await, expected);
}

/// Fails the `n`th TransactWriteItems call after it reached DynamoDB: the write commits
/// but the caller sees an error, as when a connection drops before the response.
#[derive(Debug)]
struct LoseResponse {
    transmitted: Mutex<u32>,
    lose: u32,
}

impl Intercept for LoseResponse {
    fn name(&self) -> &'static str {
        "LoseResponse"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let is_transaction = context
            .request()
            .headers()
            .get("x-amz-target")
            .is_some_and(|t| t.ends_with("TransactWriteItems"));
        if is_transaction {
            *self.transmitted.lock().unwrap() += 1;
        }
        Ok(())
    }

    fn read_before_deserialization(
        &self,
        _: &BeforeDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if *self.transmitted.lock().unwrap() == self.lose {
            *self.transmitted.lock().unwrap() += 1000;
            return Err("injected: response lost after commit".into());
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_lost_response_after_commit_is_retried_without_double_counting() {
    let plain = fresh_store("lost-ack").await;
    let config = plain
        .client()
        .config()
        .to_builder()
        .interceptor(LoseResponse {
            transmitted: Mutex::new(0),
            lose: 2,
        })
        .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
        .build();
    let faulty = DynamoDbStore::new(aws_sdk_dynamodb::Client::from_conf(config), plain.table());
    let (b, expected) = wide_batch("b-lost");
    let err = faulty.apply_batch(&b).await.unwrap_err();
    assert!(err.is_transient(), "a lost response must be retried: {err}");
    let retry = faulty.apply_batch(&b).await.unwrap();
    assert_eq!((retry.chunks_applied, retry.chunks_already_applied), (1, 2));
    assert_eq!(total_count(&plain, "acme").await, expected);
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
async fn a_state_of_another_aggregation_under_the_same_key_is_a_permanent_error() {
    let store = fresh_store("mismatch").await;
    let key = hour_key("acme", "api_requests", "2026-11-23T10");
    store
        .apply_batch(&batch("m-1", vec![count_row(key.clone(), 1)]))
        .await
        .unwrap();
    let err = store
        .apply_batch(&batch("m-2", vec![sum_row(key, dec!(5))]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::KindMismatch { .. }), "{err}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn minute_rows_and_bad_batch_ids_are_refused_before_any_write() {
    let mut key = hour_key("acme", "api_requests", "2026-11-23T10");
    key.window =
        tollgate_core::window::Window::containing(Granularity::Minute, at("2026-11-23T10:01:00Z"));
    assert!(matches!(
        plan_chunks(&batch("x", vec![count_row(key, 1)])),
        Err(StoreError::InvalidBatch(_))
    ));
    assert!(matches!(
        plan_chunks(&batch("", vec![])),
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
