//! The store through `devstack::fault_proxy` in front of DynamoDB Local: the faults arrive
//! over the wire as DynamoDB sends them, and the real SDK and the store must read them
//! as they would in AWS — throttling retried away, a transaction conflict a transient
//! error, an answer lost after the commit counted once on the retry, an outage survived.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod common;

use common::*;
use tollgate_core::usage::UsageBatch;
use tollgate_devstack::fault_proxy::{Fault, FaultProxy, FaultRule, RequestMatch};
use tollgate_store::DynamoDbStore;

/// A store whose table lives in DynamoDB Local, and the same store seen through a proxy.
async fn proxied(name: &str) -> (DynamoDbStore, DynamoDbStore, FaultProxy) {
    let direct = fresh_store(name).await;
    let endpoint = tollgate_devstack::dynamodb_endpoint_for_tests();
    let proxy = FaultProxy::start(&endpoint).await.unwrap();
    let through = DynamoDbStore::new(
        tollgate_store::local_client(&proxy.endpoint()),
        direct.table().to_owned(),
    );
    (direct, through, proxy)
}

fn one_row(id: &str, n: u64) -> UsageBatch {
    UsageBatch {
        batch_id: id.to_owned(),
        rows: vec![count_row(
            hour_key("acme", "api_requests", "2026-11-23T10"),
            n,
        )],
    }
}

async fn count(store: &DynamoDbStore) -> u64 {
    store
        .usage(
            &tenant("acme"),
            tollgate_core::window::Granularity::Hour,
            at("2026-11-23T00:00:00Z"),
            at("2026-11-24T00:00:00Z"),
        )
        .await
        .unwrap()
        .iter()
        .map(|row| match row.state {
            tollgate_core::aggregate::AggregateState::Count { n } => n,
            _ => 0,
        })
        .sum()
}

fn on_transactions(fault: Fault, count: u32) -> FaultRule {
    FaultRule {
        matching: RequestMatch::AmzTarget("TransactWriteItems"),
        skip: 0,
        count,
        fault,
    }
}

#[tokio::test]
async fn throttling_is_retried_by_the_sdk_and_counts_once() {
    let (direct, through, proxy) = proxied("proxy-throttle").await;
    proxy.inject(on_transactions(Fault::Throttle, 1));
    proxy.inject(on_transactions(Fault::ThroughputExceeded, 1));
    through.apply_batch(&one_row("b-1", 5)).await.unwrap();
    assert_eq!(proxy.stats().faults(), 2);
    assert_eq!(count(&direct).await, 5);
}

#[tokio::test]
async fn a_transaction_conflict_is_a_transient_error_then_applies_once() {
    let (direct, through, proxy) = proxied("proxy-conflict").await;
    // More conflicts than the SDK's attempts: the store must see one, and call it transient.
    proxy.inject(on_transactions(Fault::TransactionConflict, 10));
    let error = through.apply_batch(&one_row("b-1", 3)).await.unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    proxy.clear();
    through.apply_batch(&one_row("b-1", 3)).await.unwrap();
    assert_eq!(count(&direct).await, 3);
}

#[tokio::test]
async fn an_answer_lost_after_the_commit_counts_once_on_the_retry() {
    let (direct, through, proxy) = proxied("proxy-lost").await;
    proxy.inject(on_transactions(Fault::LoseResponse, 1));
    // The SDK retries the lost answer itself: the resent transaction finds the marker.
    let outcome = through.apply_batch(&one_row("b-1", 4)).await;
    assert_eq!(proxy.stats().injected["lose_response"], 1);
    if outcome.is_err() {
        through.apply_batch(&one_row("b-1", 4)).await.unwrap();
    }
    through.apply_batch(&one_row("b-1", 4)).await.unwrap();
    assert_eq!(count(&direct).await, 4);
}

#[tokio::test]
async fn an_outage_fails_requests_until_the_endpoint_is_back() {
    let (direct, through, proxy) = proxied("proxy-outage").await;
    proxy.set_down(true);
    let error = through.apply_batch(&one_row("b-1", 2)).await.unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    assert!(proxy.stats().refused_connections > 0);
    proxy.set_down(false);
    through.apply_batch(&one_row("b-1", 2)).await.unwrap();
    assert_eq!(count(&direct).await, 2);
}
