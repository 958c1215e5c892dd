//! [`send_with_retries`]: paced sends with exponential backoff and full jitter.
//!
//! Stripe asks for exponential backoff with jitter on 429s; full jitter (a random wait
//! between zero and the exponential ceiling) spreads retries of many events that failed
//! together. Every attempt carries the same identifier, so a retry of an event Stripe did
//! take is an idempotent replay, not a second count.

use std::num::NonZeroU32;
use std::time::Duration;

use crate::pacing::RateLimiter;
use crate::ports::{MeterEventFailure, MeterEventRequest, MeterEvents};

/// How often and how long to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The ceiling of the first wait; it doubles per retry.
    pub base: Duration,
    /// The largest ceiling.
    pub cap: Duration,
    /// Attempts in all, the first included.
    pub max_attempts: NonZeroU32,
}

impl Default for RetryPolicy {
    /// 0.5 s doubling up to 30 s, 6 attempts: about a minute of trying at worst, inside
    /// a Lambda invocation's budget.
    fn default() -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            max_attempts: NonZeroU32::new(6).unwrap_or(NonZeroU32::MIN),
        }
    }
}

impl RetryPolicy {
    /// The ceiling of the wait after the `retry`-th failure (0 for the first):
    /// `min(cap, base * 2^retry)`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1_u32.checked_shl(retry).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The wait after the `retry`-th failure: uniform in `[0, ceiling]`, and never less
    /// than Stripe's `Retry-After`.
    pub fn wait(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let jittered = full_jitter(self.ceiling(retry));
        retry_after.map_or(jittered, |after| jittered.max(after))
    }
}

/// Uniform in `[0, ceiling]`; without a random source, the ceiling itself (a plain
/// exponential backoff is still correct, only less spread).
fn full_jitter(ceiling: Duration) -> Duration {
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    match (getrandom::u64(), nanos.checked_add(1)) {
        (Ok(random), Some(span)) => Duration::from_nanos(random % span),
        _ => ceiling,
    }
}

/// Sends `event`, pacing every attempt through `limiter` and retrying
/// [`MeterEventFailure::Retryable`] failures with the same identifier until the policy's
/// attempts run out. [`MeterEventFailure::Rejected`] is returned at once. Returns the
/// last failure when no attempt succeeded.
pub async fn send_with_retries(
    events: &impl MeterEvents,
    limiter: &RateLimiter,
    event: &MeterEventRequest,
    policy: &RetryPolicy,
) -> Result<(), MeterEventFailure> {
    let mut retry = 0;
    loop {
        limiter.acquire().await;
        let failure = match events.send(event).await {
            Ok(()) => return Ok(()),
            Err(failure @ MeterEventFailure::Rejected { .. }) => return Err(failure),
            Err(failure) => failure,
        };
        if retry + 1 >= policy.max_attempts.get() {
            return Err(failure);
        }
        let retry_after = match &failure {
            MeterEventFailure::Retryable { retry_after, .. } => *retry_after,
            MeterEventFailure::Rejected { .. } => None,
        };
        tracing::warn!(
            identifier = %event.identifier,
            attempt = retry + 1,
            %failure,
            "meter event not taken; retrying"
        );
        tokio::time::sleep(policy.wait(retry, retry_after)).await;
        retry += 1;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn policy(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
            max_attempts: NonZeroU32::new(attempts).unwrap(),
        }
    }

    #[test]
    fn the_ceiling_doubles_up_to_the_cap() {
        let ceilings: Vec<_> = (0..6).map(|n| policy(6).ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(policy(6).ceiling(200), Duration::from_secs(1));
    }

    #[test]
    fn the_wait_stays_within_the_ceiling_and_honours_retry_after() {
        for retry in 0..10 {
            assert!(policy(6).wait(retry, None) <= policy(6).ceiling(retry));
        }
        let after = Duration::from_secs(5);
        assert!(policy(6).wait(0, Some(after)) >= after);
    }
}
