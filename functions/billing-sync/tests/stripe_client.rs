//! The async-stripe adapter against the local Stripe stand-in: what goes over the wire,
//! how answers map to failures, and retries that never count an event twice.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tollgate_billing_sync::pacing::RateLimiter;
use tollgate_billing_sync::ports::{MeterEventFailure, MeterEventRequest, MeterEvents};
use tollgate_billing_sync::retry::{RetryPolicy, send_with_retries};
use tollgate_billing_sync::stripe::{SecretKey, StripeConfig, StripeMeterEvents};
use tollgate_devstack::stripe::{Fault, StandInConfig, StripeStandIn};

const KEY: &str = "sk_test_tollgate_standin";
const NOW: i64 = 1_790_000_000;

async fn stand_in() -> StripeStandIn {
    StripeStandIn::start(StandInConfig::new(KEY).requiring_identifier().at(NOW))
        .await
        .unwrap()
}

fn adapter(stripe: &StripeStandIn) -> StripeMeterEvents {
    let config = StripeConfig::new(SecretKey::new(stripe.api_key())).with_base_url(stripe.url());
    StripeMeterEvents::new(&config).unwrap()
}

fn event(identifier: &str, value: u64) -> MeterEventRequest {
    MeterEventRequest {
        event_name: "api_requests".to_owned(),
        customer: "cus_Tenant1".to_owned(),
        value,
        identifier: identifier.to_owned(),
        timestamp: DateTime::<Utc>::from_timestamp(NOW - 3_600, 0).unwrap(),
    }
}

/// Fast retries for the wire tests (real time; the stand-in is a real server).
fn quick(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(2),
        cap: Duration::from_millis(20),
        max_attempts: NonZeroU32::new(attempts).unwrap(),
    }
}

fn unpaced() -> RateLimiter {
    RateLimiter::new(
        NonZeroU32::new(1_000).unwrap(),
        NonZeroU32::new(100).unwrap(),
    )
}

#[tokio::test]
async fn an_event_goes_out_as_the_exact_form_with_the_key_and_its_identifier_as_idempotency_key() {
    let stripe = stand_in().await;
    adapter(&stripe)
        .send(&event("t1:2026-11-01T10", 42))
        .await
        .unwrap();

    let requests = stripe.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/v1/billing/meter_events")
    );
    assert_eq!(
        request.authorization.as_deref(),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(
        request.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(request.idempotency_key.as_deref(), Some("t1:2026-11-01T10"));
    let expected: std::collections::BTreeMap<String, String> = [
        ("event_name", "api_requests".to_owned()),
        ("identifier", "t1:2026-11-01T10".to_owned()),
        ("payload[stripe_customer_id]", "cus_Tenant1".to_owned()),
        ("payload[value]", "42".to_owned()),
        ("timestamp", (NOW - 3_600).to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(request.form_map(), expected);
    assert_eq!(request.form.len(), expected.len());
    assert_eq!(stripe.accepted().len(), 1);
    assert_eq!(stripe.accepted()[0].value, 42);
}

#[tokio::test]
async fn a_resend_of_the_same_event_is_replayed_and_not_accepted_twice() {
    let stripe = stand_in().await;
    let events = adapter(&stripe);
    events.send(&event("dup", 5)).await.unwrap();
    events.send(&event("dup", 5)).await.unwrap();
    assert_eq!(stripe.accepted().len(), 1);
    assert!(stripe.requests()[1].replayed);
    assert!(stripe.duplicate_identifiers().is_empty());
}

#[tokio::test]
async fn another_event_under_an_accepted_identifier_is_rejected_not_counted() {
    let stripe = stand_in().await;
    let events = adapter(&stripe);
    events.send(&event("same-id", 5)).await.unwrap();
    let failure = send_with_retries(&events, &unpaced(), &event("same-id", 6), &quick(5))
        .await
        .unwrap_err();
    assert!(
        matches!(failure, MeterEventFailure::Rejected { status: 400, .. }),
        "{failure:?}"
    );
    assert_eq!(stripe.requests().len(), 2, "a rejection is not retried");
    assert_eq!(stripe.totals().values().sum::<u64>(), 5);
}

#[tokio::test]
async fn a_wrong_key_is_rejected_with_401() {
    let stripe = stand_in().await;
    let config = StripeConfig::new(SecretKey::new("sk_test_wrong")).with_base_url(stripe.url());
    let failure = StripeMeterEvents::new(&config)
        .unwrap()
        .send(&event("k", 1))
        .await
        .unwrap_err();
    assert!(
        matches!(failure, MeterEventFailure::Rejected { status: 401, .. }),
        "{failure:?}"
    );
    assert!(!failure.to_string().contains("sk_test_wrong"));
}

#[tokio::test]
async fn a_429_is_retryable_and_the_retry_succeeds() {
    let stripe = stand_in().await;
    let events = adapter(&stripe);
    stripe.fail_next(1, Fault::RateLimited);
    let first = events.send(&event("busy", 3)).await.unwrap_err();
    assert!(
        matches!(
            first,
            MeterEventFailure::Retryable {
                status: Some(429),
                ..
            }
        ),
        "{first:?}"
    );

    stripe.fail_next(2, Fault::RateLimited);
    send_with_retries(&events, &unpaced(), &event("busy", 3), &quick(5))
        .await
        .unwrap();
    let statuses: Vec<u16> = stripe.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![429, 429, 429, 200]);
    assert_eq!(stripe.accepted().len(), 1);
}

#[tokio::test]
async fn a_500_after_accept_is_retried_and_the_replay_counts_the_event_once() {
    let stripe = stand_in().await;
    let events = adapter(&stripe);
    stripe.fail_next(1, Fault::ServerErrorAfterAccept);
    send_with_retries(&events, &unpaced(), &event("lost-answer", 9), &quick(5))
        .await
        .unwrap();
    let requests = stripe.requests();
    assert_eq!(
        requests
            .iter()
            .map(|r| (r.status, r.replayed))
            .collect::<Vec<_>>(),
        vec![(500, false), (200, true)]
    );
    assert_eq!(stripe.accepted().len(), 1);
    assert_eq!(stripe.totals().values().sum::<u64>(), 9);
    assert!(stripe.duplicate_identifiers().is_empty());
}

#[tokio::test]
async fn retries_stop_after_the_policys_attempts_with_the_last_failure() {
    let stripe = stand_in().await;
    stripe.fail_identifier("down", Fault::ServerError);
    let failure = send_with_retries(
        &adapter(&stripe),
        &unpaced(),
        &event("down-1", 1),
        &quick(3),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            failure,
            MeterEventFailure::Retryable {
                status: Some(500),
                ..
            }
        ),
        "{failure:?}"
    );
    assert_eq!(stripe.requests().len(), 3);
    assert!(stripe.accepted().is_empty());
}

#[tokio::test]
async fn a_timestamp_40_days_old_is_rejected_without_retry() {
    let stripe = stand_in().await;
    let mut old = event("old", 1);
    old.timestamp = DateTime::<Utc>::from_timestamp(NOW - 40 * 86_400, 0).unwrap();
    let failure = send_with_retries(&adapter(&stripe), &unpaced(), &old, &quick(5))
        .await
        .unwrap_err();
    match failure {
        MeterEventFailure::Rejected {
            status, message, ..
        } => {
            assert_eq!(status, 400);
            assert!(message.contains("35"), "{message}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(stripe.requests().len(), 1);
}

#[tokio::test]
async fn an_identifier_of_101_characters_is_rejected_without_retry() {
    let stripe = stand_in().await;
    let long = "i".repeat(101);
    let failure = send_with_retries(&adapter(&stripe), &unpaced(), &event(&long, 1), &quick(5))
        .await
        .unwrap_err();
    assert!(
        matches!(failure, MeterEventFailure::Rejected { status: 400, .. }),
        "{failure:?}"
    );
    assert_eq!(stripe.requests().len(), 1);
    assert!(stripe.accepted().is_empty());
}

#[tokio::test]
async fn a_stand_in_that_is_gone_is_a_retryable_network_failure() {
    let stripe = stand_in().await;
    let events = adapter(&stripe);
    drop(stripe);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let failure = events.send(&event("gone", 1)).await.unwrap_err();
    assert!(
        matches!(failure, MeterEventFailure::Retryable { status: None, .. }),
        "{failure:?}"
    );
}

/// Records when each call arrives; fails the first `failures` of them.
struct Recorder {
    calls: Mutex<Vec<Instant>>,
    failures: usize,
}

impl MeterEvents for Recorder {
    async fn send(&self, _event: &MeterEventRequest) -> Result<(), MeterEventFailure> {
        let mut calls = self.calls.lock().unwrap();
        calls.push(Instant::now());
        if calls.len() <= self.failures {
            return Err(MeterEventFailure::Retryable {
                status: Some(429),
                retry_after: None,
                message: "slow down".to_owned(),
            });
        }
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn the_limiter_keeps_sends_at_the_test_mode_rate() {
    let recorder = Recorder {
        calls: Mutex::new(Vec::new()),
        failures: 0,
    };
    let limiter = RateLimiter::stripe_test();
    let start = Instant::now();
    for n in 0..60 {
        send_with_retries(
            &recorder,
            &limiter,
            &event(&format!("e{n}"), 1),
            &RetryPolicy::default(),
        )
        .await
        .unwrap();
    }
    let calls = recorder.calls.into_inner().unwrap();
    for window in 0..2 {
        let from = start + Duration::from_secs(window);
        let to = from + Duration::from_secs(1);
        let in_window = calls.iter().filter(|t| **t >= from && **t < to).count();
        assert_eq!(in_window, 25, "window {window}");
    }
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_within_the_exponential_ceilings() {
    let recorder = Recorder {
        calls: Mutex::new(Vec::new()),
        failures: 3,
    };
    let policy = RetryPolicy {
        base: Duration::from_millis(100),
        cap: Duration::from_millis(250),
        max_attempts: NonZeroU32::new(5).unwrap(),
    };
    send_with_retries(&recorder, &unpaced(), &event("b", 1), &policy)
        .await
        .unwrap();
    let calls = recorder.calls.into_inner().unwrap();
    assert_eq!(calls.len(), 4);
    let ceilings = [100, 200, 250];
    for (pair, ceiling) in calls.windows(2).zip(ceilings) {
        let gap = pair[1] - pair[0];
        assert!(
            gap <= Duration::from_millis(ceiling + 1),
            "{gap:?} > {ceiling} ms"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured() {
    struct SaysWait(Mutex<Vec<Instant>>);
    impl MeterEvents for SaysWait {
        async fn send(&self, _event: &MeterEventRequest) -> Result<(), MeterEventFailure> {
            let mut calls = self.0.lock().unwrap();
            calls.push(Instant::now());
            if calls.len() == 1 {
                return Err(MeterEventFailure::Retryable {
                    status: Some(429),
                    retry_after: Some(Duration::from_secs(7)),
                    message: "wait".to_owned(),
                });
            }
            Ok(())
        }
    }
    let events = SaysWait(Mutex::new(Vec::new()));
    send_with_retries(&events, &unpaced(), &event("w", 1), &quick(3))
        .await
        .unwrap();
    let calls = events.0.into_inner().unwrap();
    assert!(calls[1] - calls[0] >= Duration::from_secs(7));
}
