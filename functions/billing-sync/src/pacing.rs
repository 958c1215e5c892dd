//! [`RateLimiter`]: paces calls to Stripe below its rate limits.
//!
//! Stripe allows 1,000 meter-event calls per second in live mode and counts them in the
//! basic limit (25 writes per second) in test mode; going over costs 429s and retries.
//! Pacing on the client is cheaper than backing off after the fact.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Stripe's live-mode limit on meter-event calls per second.
pub const STRIPE_LIVE_CALLS_PER_SEC: u32 = 1_000;
/// Stripe's test-mode (basic) write limit per second.
pub const STRIPE_TEST_WRITES_PER_SEC: u32 = 25;

/// A token bucket on tokio's clock: `per_second` tokens a second, at most `burst` saved
/// up. Kept as the time the bucket will next be full ("theoretical arrival time"), which
/// is the same bucket without a refill task. Callers are served first come, first served;
/// a call reserves its slot when it starts waiting, so a cancelled wait still used one.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    tolerance: Duration,
    next: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// `per_second` calls a second on average, up to `burst` at once after a quiet spell.
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32) -> RateLimiter {
        let interval = Duration::from_secs(1) / per_second.get();
        RateLimiter {
            interval,
            tolerance: interval.saturating_mul(burst.get() - 1),
            next: Mutex::new(None),
        }
    }

    /// Stripe's live-mode limit, evenly spaced (no burst).
    pub fn stripe_live() -> RateLimiter {
        RateLimiter::new(
            NonZeroU32::new(STRIPE_LIVE_CALLS_PER_SEC).unwrap_or(NonZeroU32::MIN),
            NonZeroU32::MIN,
        )
    }

    /// Stripe's test-mode limit, evenly spaced (no burst).
    pub fn stripe_test() -> RateLimiter {
        RateLimiter::new(
            NonZeroU32::new(STRIPE_TEST_WRITES_PER_SEC).unwrap_or(NonZeroU32::MIN),
            NonZeroU32::MIN,
        )
    }

    /// Waits until a call may go.
    pub async fn acquire(&self) {
        let go = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let due = next.map_or(now, |due| due.max(now));
            let go = due
                .checked_sub(self.tolerance)
                .map_or(now, |at| at.max(now));
            *next = Some(due + self.interval);
            go
        };
        tokio::time::sleep_until(go).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn limiter(per_second: u32, burst: u32) -> RateLimiter {
        RateLimiter::new(
            NonZeroU32::new(per_second).unwrap(),
            NonZeroU32::new(burst).unwrap(),
        )
    }

    /// How many of `calls` acquisitions finish within each whole second.
    async fn per_second(limiter: &RateLimiter, calls: usize) -> Vec<usize> {
        let start = Instant::now();
        let mut seconds = Vec::new();
        for _ in 0..calls {
            limiter.acquire().await;
            let second = (Instant::now() - start).as_secs() as usize;
            if seconds.len() <= second {
                seconds.resize(second + 1, 0);
            }
            seconds[second] += 1;
        }
        seconds
    }

    #[tokio::test(start_paused = true)]
    async fn calls_are_spaced_to_the_configured_rate() {
        let seconds = per_second(&limiter(25, 1), 100).await;
        assert_eq!(seconds, vec![25, 25, 25, 25]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_goes_at_once_then_the_rate_holds() {
        let limiter = limiter(10, 5);
        let start = Instant::now();
        for _ in 0..5 {
            limiter.acquire().await;
        }
        assert_eq!(Instant::now(), start);
        limiter.acquire().await;
        assert_eq!(Instant::now() - start, Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_spell_refills_the_bucket_but_not_beyond_the_burst() {
        let limiter = limiter(10, 3);
        limiter.acquire().await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let start = Instant::now();
        for _ in 0..4 {
            limiter.acquire().await;
        }
        assert_eq!(Instant::now() - start, Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_the_rate() {
        let limiter = std::sync::Arc::new(limiter(20, 1));
        let start = Instant::now();
        let tasks: Vec<_> = (0..40)
            .map(|_| {
                let limiter = std::sync::Arc::clone(&limiter);
                tokio::spawn(async move {
                    limiter.acquire().await;
                    Instant::now()
                })
            })
            .collect();
        let mut in_first_second = 0;
        for task in tasks {
            if task.await.unwrap() - start < Duration::from_secs(1) {
                in_first_second += 1;
            }
        }
        assert_eq!(in_first_second, 20);
    }
}
