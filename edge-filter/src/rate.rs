//! Per-tenant request rate limits with GCRA, the generic cell rate algorithm.
//!
//! ## State
//!
//! One limit of one tenant keeps a single number: the **theoretical arrival time**
//! (TAT), in nanoseconds since the Unix epoch (8 big-endian bytes). All of a tenant's
//! TATs and quota counters live in one shared-data entry (see [`crate::admission`]), so
//! every worker thread of an Envoy instance counts against the same state and a request
//! is decided and charged with one compare-and-swap. A denied request writes nothing, so
//! it consumes nothing.
//!
//! ## The algorithm
//!
//! A limit of `L` requests per period `P` has the emission interval `T = ⌈P / L⌉`
//! (nanoseconds, rounded up so the sustained rate never exceeds `L / P`) and a burst `b`
//! (by default `b = L`). A request at `now` is allowed when
//!
//! ```text
//! max(TAT, now) + T − now ≤ b · T
//! ```
//!
//! and then `TAT := max(TAT, now) + T`. Each allowed request pushes the TAT one interval
//! ahead; time passing brings it back, so capacity refills evenly, one request every `T`.
//!
//! ## Burst behaviour
//!
//! - After an idle stretch of at least `b · T` the full burst `b` is available at once.
//! - Capacity refills evenly: one request per `T`, never in a lump at a period boundary.
//! - In **any** window of length `w`, at most `b + ⌊w / T⌋` requests are allowed (the
//!   k-th of them pushed the TAT to at least `t₁ + k·T` and was still within `b·T` of its
//!   own arrival `≤ t₁ + w`).
//! - So with the default `b = L` a sliding window of one period can see up to `2L − 1`
//!   requests — a full burst after an idle stretch, then the refill arriving within the
//!   same period — while the long-run rate is `L / P`: over `n` periods at most
//!   `L + ⌊n·P / T⌋ ≈ (n + 1)·L`. This is the usual trade of a token bucket and what
//!   the plan's "L per minute" means at the edge. With `b = 1` ([`RateLimit::strict`]) requests are spaced at
//!   least `T` apart and **no** sliding window of one period ever sees more than `L`; that
//!   is the choice when the contract is a hard "L per any P", at the price of no burst.
//!
//! ## Several limits
//!
//! A plan may set a limit per second, minute, hour and day; a request passes only if
//! every one allows it, and then consumes one unit of each. [`decide_all`] decides all of
//! them and withholds every state write when any refuses, so a refused request consumes
//! nothing anywhere. All the new states are written together, in the tenant's one entry.
//!
//! A TAT further ahead than `now + b·T` cannot have been written at `now` or earlier; it
//! means the clock stepped back. It is clamped to `now + b·T`, so a clock step costs a
//! tenant at most one burst window rather than the length of the step.

use std::num::NonZeroU64;

use tollgate_core::plan::{RateLimits, RatePeriod};

const NANOS_PER_MILLI: u64 = 1_000_000;

/// One request rate limit: `limit` requests per `period`, with a burst of `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub period: RatePeriod,
    pub limit: NonZeroU64,
    /// How many requests may arrive at once after an idle stretch.
    pub burst: NonZeroU64,
}

impl RateLimit {
    /// `limit` per `period` with the burst equal to the limit.
    pub fn new(period: RatePeriod, limit: NonZeroU64) -> RateLimit {
        RateLimit {
            period,
            limit,
            burst: limit,
        }
    }

    /// `limit` per `period` with no burst: never more than `limit` in any sliding window
    /// of one period.
    pub fn strict(period: RatePeriod, limit: NonZeroU64) -> RateLimit {
        RateLimit {
            period,
            limit,
            burst: NonZeroU64::MIN,
        }
    }

    /// Every limit a plan sets, shortest period first, each with burst = limit.
    pub fn from_plan(limits: &RateLimits) -> Vec<RateLimit> {
        limits
            .limits()
            .map(|(period, limit)| RateLimit::new(period, limit))
            .collect()
    }

    /// The period in nanoseconds.
    pub fn period_ns(&self) -> u64 {
        u64::from(self.period.seconds()) * 1_000 * NANOS_PER_MILLI
    }

    /// The emission interval `T = ⌈P / L⌉` in nanoseconds (at least 1).
    pub fn interval_ns(&self) -> u64 {
        self.period_ns().div_ceil(self.limit.get()).max(1)
    }

    /// `b · T`: how far ahead of now the TAT may run.
    fn tolerance_ns(&self) -> u64 {
        self.burst.get().saturating_mul(self.interval_ns())
    }
}

/// Whether a request passes a limit. An enum rather than a boolean, so a call site reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateOutcome {
    Allowed,
    Limited,
}

/// The verdict of one limit on one request, with what the headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub limit: RateLimit,
    pub outcome: RateOutcome,
    /// The state to write back with the CAS token; `None` when nothing changes (a limited
    /// request consumes nothing).
    pub new_state: Option<[u8; 8]>,
    /// Requests that would still be allowed right now, after this one.
    pub remaining: u64,
    /// Milliseconds (rounded up) until the full burst is available again.
    pub reset_after_ms: u64,
    /// Milliseconds (rounded up) until a limited request would be allowed; 0 if allowed.
    pub retry_after_ms: u64,
}

impl RateDecision {
    pub fn is_allowed(&self) -> bool {
        self.outcome == RateOutcome::Allowed
    }
}

/// Decides one request at `now_ms` against `limit`, given the stored state (`None` for a
/// key never written). Pure: the caller owns the read-CAS-write loop.
pub fn decide(stored: Option<[u8; 8]>, now_ms: u64, limit: RateLimit) -> RateDecision {
    let now = now_ms.saturating_mul(NANOS_PER_MILLI);
    let interval = limit.interval_ns();
    let tolerance = limit.tolerance_ns();
    let horizon = now.saturating_add(tolerance);
    let tat = stored.map_or(0, u64::from_be_bytes).clamp(now, horizon);
    let candidate = tat.saturating_add(interval);
    if candidate <= horizon {
        RateDecision {
            limit,
            outcome: RateOutcome::Allowed,
            new_state: Some(candidate.to_be_bytes()),
            remaining: (horizon - candidate) / interval,
            reset_after_ms: ceil_ms(candidate - now),
            retry_after_ms: 0,
        }
    } else {
        RateDecision {
            limit,
            outcome: RateOutcome::Limited,
            new_state: None,
            remaining: 0,
            reset_after_ms: ceil_ms(tat - now),
            retry_after_ms: ceil_ms(candidate - horizon),
        }
    }
}

/// Decides one request against every limit, with `stored[i]` the state of `limits[i]`
/// (a missing entry is a fresh key). If any limit refuses, no decision carries a state to
/// write.
pub fn decide_all(
    stored: &[Option<[u8; 8]>],
    now_ms: u64,
    limits: &[RateLimit],
) -> Vec<RateDecision> {
    let mut decisions: Vec<RateDecision> = limits
        .iter()
        .enumerate()
        .map(|(i, limit)| decide(stored.get(i).copied().flatten(), now_ms, *limit))
        .collect();
    if decisions.iter().any(|d| !d.is_allowed()) {
        for d in &mut decisions {
            d.new_state = None;
        }
    }
    decisions
}

fn ceil_ms(ns: u64) -> u64 {
    ns.div_ceil(NANOS_PER_MILLI)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nz(n: u64) -> NonZeroU64 {
        NonZeroU64::new(n).unwrap_or(NonZeroU64::MIN)
    }

    /// Runs arrivals through one key, as the glue would, and returns the allowed times.
    fn run(limit: RateLimit, arrivals: &[u64]) -> Vec<u64> {
        let mut state = None;
        let mut allowed = Vec::new();
        for &t in arrivals {
            let d = decide(state, t, limit);
            if let Some(s) = d.new_state {
                state = Some(s);
            }
            if d.is_allowed() {
                allowed.push(t);
            }
        }
        allowed
    }

    fn max_in_window(allowed: &[u64], window_ms: u64) -> usize {
        let mut best = 0;
        let mut start = 0;
        for end in 0..allowed.len() {
            while allowed[end] - allowed[start] >= window_ms {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best
    }

    fn period_strategy() -> impl Strategy<Value = RatePeriod> {
        prop_oneof![
            Just(RatePeriod::Second),
            Just(RatePeriod::Minute),
            Just(RatePeriod::Hour),
            Just(RatePeriod::Day),
        ]
    }

    /// Sorted arrival times spread over a few periods.
    fn arrivals(period: RatePeriod) -> impl Strategy<Value = Vec<u64>> {
        let span = u64::from(period.seconds()) * 1_000 * 4;
        proptest::collection::vec(0..span, 1..300).prop_map(|mut v| {
            v.sort_unstable();
            v.iter().map(|t| t + 1_700_000_000_000).collect()
        })
    }

    #[test]
    fn a_fresh_key_allows_a_full_burst_then_limits() {
        let limit = RateLimit::new(RatePeriod::Minute, nz(3));
        let now = 1_700_000_000_000;
        let mut state = None;
        for expected_remaining in [2, 1, 0] {
            let d = decide(state, now, limit);
            assert_eq!(d.outcome, RateOutcome::Allowed);
            assert_eq!(d.remaining, expected_remaining);
            state = d.new_state;
        }
        let d = decide(state, now, limit);
        assert_eq!(d.outcome, RateOutcome::Limited);
        assert_eq!(d.new_state, None);
        assert_eq!(d.retry_after_ms, 20_000);
        assert_eq!(d.reset_after_ms, 60_000);
    }

    #[test]
    fn a_clock_step_back_costs_at_most_one_burst_window() {
        let limit = RateLimit::new(RatePeriod::Second, nz(10));
        let far_future = (u64::MAX / 2).to_be_bytes();
        let d = decide(Some(far_future), 1_700_000_000_000, limit);
        assert_eq!(d.outcome, RateOutcome::Limited);
        assert_eq!(d.retry_after_ms, 100);
        assert_eq!(d.reset_after_ms, 1_000);
    }

    #[test]
    fn plan_limits_become_one_limit_per_period_shortest_first() {
        let limits = RateLimits {
            per_second: Some(nz(5)),
            per_day: Some(nz(1_000)),
            ..RateLimits::default()
        };
        let got = RateLimit::from_plan(&limits);
        assert_eq!(
            got,
            vec![
                RateLimit::new(RatePeriod::Second, nz(5)),
                RateLimit::new(RatePeriod::Day, nz(1_000)),
            ]
        );
    }

    #[test]
    fn a_request_refused_by_one_limit_consumes_none_of_the_others() {
        let limits = [
            RateLimit::new(RatePeriod::Second, nz(10)),
            RateLimit::new(RatePeriod::Minute, nz(1)),
        ];
        let now = 1_700_000_000_000;
        let first = decide_all(&[], now, &limits);
        assert!(
            first
                .iter()
                .all(|d| d.is_allowed() && d.new_state.is_some())
        );
        let stored: Vec<_> = first.iter().map(|d| d.new_state).collect();
        let second = decide_all(&stored, now + 1, &limits);
        assert_eq!(
            second.iter().map(|d| d.outcome).collect::<Vec<_>>(),
            [RateOutcome::Allowed, RateOutcome::Limited]
        );
        assert!(second.iter().all(|d| d.new_state.is_none()));
    }

    proptest! {
        #[test]
        fn any_window_sees_at_most_burst_plus_refill(
            period in period_strategy(), limit in 1u64..50, burst in 1u64..50,
            arrivals in period_strategy().prop_flat_map(arrivals),
            window_frac in 1u64..=8,
        ) {
            let limit = RateLimit { period, limit: nz(limit), burst: nz(burst) };
            let allowed = run(limit, &arrivals);
            let window_ms = limit.period_ns() / NANOS_PER_MILLI * window_frac / 4;
            // Arrivals within [s, s + w) span at most w − 1 ms.
            let span_ns = (window_ms - 1) * NANOS_PER_MILLI;
            let bound = burst + span_ns / limit.interval_ns();
            prop_assert!(max_in_window(&allowed, window_ms) as u64 <= bound);
        }

        #[test]
        fn a_strict_limit_never_exceeds_the_limit_in_any_sliding_window(
            period in period_strategy(), limit in 1u64..50, seed in any::<u64>(),
        ) {
            let span = u64::from(period.seconds()) * 1_000 * 3;
            // Dense arrivals: many per interval, so the limit is actually reached.
            let step = (span / 400).max(1);
            let arrivals: Vec<u64> = (0..400u64)
                .map(|i| 1_700_000_000_000 + i * step + (seed.rotate_left(i as u32) % step))
                .collect();
            let limit = RateLimit::strict(period, nz(limit));
            let allowed = run(limit, &arrivals);
            let window_ms = u64::from(period.seconds()) * 1_000;
            prop_assert!(max_in_window(&allowed, window_ms) as u64 <= limit.limit.get());
        }

        #[test]
        fn a_default_limit_sees_at_most_2l_minus_1_in_any_window_of_one_period(
            period in period_strategy(), limit in 1u64..50,
            arrivals in period_strategy().prop_flat_map(arrivals),
        ) {
            let limit = RateLimit::new(period, nz(limit));
            let allowed = run(limit, &arrivals);
            let window_ms = u64::from(period.seconds()) * 1_000;
            prop_assert!((max_in_window(&allowed, window_ms) as u64) < 2 * limit.limit.get());
        }

        #[test]
        fn a_saturating_client_gets_the_rate_over_a_long_run(
            limit in 1u64..200, periods in 2u64..20,
        ) {
            // One request every millisecond for `periods` seconds against L per second.
            let limit = RateLimit::new(RatePeriod::Second, nz(limit));
            let arrivals: Vec<u64> = (0..periods * 1_000).map(|t| 1_700_000_000_000 + t).collect();
            let allowed = run(limit, &arrivals).len() as u64;
            let l = limit.limit.get();
            // Burst plus refill, at most one interval short at either end.
            let refill = (periods * 1_000 - 1) * NANOS_PER_MILLI / limit.interval_ns();
            prop_assert!(allowed <= l + refill);
            prop_assert!(allowed + 1 >= l + refill);
        }

        #[test]
        fn waiting_never_turns_an_allow_into_a_deny(
            period in period_strategy(), limit in 1u64..1_000, burst in 1u64..1_000,
            tat_offset in 0u64..200_000_000_000, now in 1_600_000_000_000u64..1_800_000_000_000,
            wait in 0u64..100_000_000,
        ) {
            let limit = RateLimit { period, limit: nz(limit), burst: nz(burst) };
            let stored = Some((now * NANOS_PER_MILLI + tat_offset).to_be_bytes());
            if decide(stored, now, limit).is_allowed() {
                prop_assert!(decide(stored, now + wait, limit).is_allowed());
            }
        }

        #[test]
        fn remaining_and_retry_after_tell_the_truth(
            period in period_strategy(), limit in 1u64..200, burst in 1u64..200,
            tat_offset in 0u64..100_000_000_000, now in 1_600_000_000_000u64..1_800_000_000_000,
        ) {
            let limit = RateLimit { period, limit: nz(limit), burst: nz(burst) };
            // A state the algorithm can have written: at most b·T ahead of now.
            let tat_offset = tat_offset % (limit.tolerance_ns() + 1);
            let stored = Some((now * NANOS_PER_MILLI + tat_offset).to_be_bytes());
            let first = decide(stored, now, limit);
            prop_assert!(first.remaining < burst);
            if first.is_allowed() {
                prop_assert_eq!(first.retry_after_ms, 0);
                // Exactly `remaining` more requests pass right now, then one is limited.
                let mut state = first.new_state;
                for _ in 0..first.remaining {
                    let d = decide(state, now, limit);
                    prop_assert!(d.is_allowed());
                    state = d.new_state;
                }
                let last = decide(state, now, limit);
                prop_assert!(!last.is_allowed());
                // After reset_after the full burst is back.
                let later = decide(state, now + last.reset_after_ms, limit);
                prop_assert_eq!(later.remaining, burst - 1);
            } else {
                prop_assert!(first.retry_after_ms > 0);
                prop_assert!(first.retry_after_ms <= first.reset_after_ms);
                prop_assert!(decide(stored, now + first.retry_after_ms, limit).is_allowed());
                prop_assert!(!decide(stored, now + first.retry_after_ms - 1, limit).is_allowed());
            }
        }
    }
}
