//! Day and month quotas of a meter, enforced from a snapshot of global usage plus this
//! instance's own usage since that snapshot.
//!
//! ## The rule
//!
//! A gateway instance cannot see the other instances' requests as they happen. It holds
//! a [`QuotaCounter`] per (tenant, meter, day or month): the global usage of the window
//! as of the last snapshot pulled from the usage API, and the units this instance has
//! recorded since. A request is allowed while
//!
//! ```text
//! snapshot_used + local_delta < limit
//! ```
//!
//! A new snapshot replaces `snapshot_used` and resets `local_delta` (the snapshot now
//! holds what was recorded before it, once flushed). When the clock enters a new window
//! the counter starts again from zero: a new day or month has no usage yet, which needs
//! no snapshot to know.
//!
//! ## Worst-case overshoot
//!
//! Let `N` be the number of gateway instances (all worker threads of one Envoy share one
//! counter through shared data, so an instance is an Envoy process), `S` the staleness of
//! the data a snapshot shows when it is replaced — the snapshot interval `I` plus the
//! delay `D` before a flushed unit is visible in the snapshot (flush interval + ingest) —
//! `R` the largest rate at which one instance admits the tenant's requests, and `u` the
//! most units one request records. Then the tenant's usage at the end of the window is at
//! most
//!
//! ```text
//! limit + N · (⌈(I + D) · R⌉ + 1) · u
//! ```
//!
//! Why: once global usage reaches the limit at time τ, an instance admits a request only
//! while its snapshot was taken from data older than τ, which is no longer true for any
//! snapshot it receives after τ + I + D. So each instance admits for less than `I + D`
//! after τ, at most `⌈(I + D)·R⌉ + 1` requests. `R` is bounded by the plan's per-second
//! (or shortest) rate limit, which each instance enforces on its own (see [`crate::rate`]):
//! the rate limits are what keep a quota's overshoot finite. A meter that counts requests
//! has `u = 1`; for a meter of response bytes, `u` is the largest response.
//!
//! ## Stale snapshots
//!
//! When no snapshot, or only one older than `max_age`, is at hand, the bound above no
//! longer holds, and the [`StalePolicy`] decides: [`StalePolicy::FailOpen`] keeps
//! counting on the old data (the gateway keeps serving; overshoot is then bounded only by
//! the rate limits and the length of the outage), [`StalePolicy::FailClosed`] refuses the
//! metered requests until a fresh snapshot arrives.

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};
use tollgate_core::edge_snapshot::EdgeQuota;
use tollgate_core::plan::Quota;
use tollgate_core::window::{Granularity, Window};

use crate::headers::LimitStatus;

/// What to do when the usage snapshot is older than its maximum age.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StalePolicy {
    /// Keep enforcing from the stale data and the local delta.
    FailOpen,
    /// Refuse metered requests until a fresh snapshot arrives.
    FailClosed,
}

/// How fresh the snapshot must be, and what happens when it is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Staleness {
    pub policy: StalePolicy,
    pub max_age: Duration,
}

/// One quota: a limit per UTC day or calendar month.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaLimit {
    /// [`Granularity::Day`] or [`Granularity::Month`].
    pub granularity: Granularity,
    pub limit: Decimal,
}

impl QuotaLimit {
    /// The day and month quotas a plan sets for one meter.
    pub fn from_plan(quota: &Quota) -> Vec<QuotaLimit> {
        [Granularity::Day, Granularity::Month]
            .into_iter()
            .filter_map(|granularity| {
                quota
                    .for_window(granularity)
                    .map(|limit| QuotaLimit { granularity, limit })
            })
            .collect()
    }
}

impl From<&EdgeQuota> for QuotaLimit {
    /// The limit of a quota read from the edge snapshot; its `used` and
    /// [`EdgeQuota::window`] go to [`QuotaCounter::apply_snapshot`].
    fn from(quota: &EdgeQuota) -> QuotaLimit {
        QuotaLimit {
            granularity: quota.period.granularity(),
            limit: quota.limit,
        }
    }
}

/// One (tenant, meter, window) quota counter of one gateway instance. Serialisable so it
/// can live in shared data, updated with CAS like the rate state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuotaCounter {
    window: Window,
    snapshot_used: Decimal,
    /// When the snapshot was taken; `None` until a snapshot of this window arrived.
    snapshot_at: Option<DateTime<Utc>>,
    local_delta: Decimal,
}

impl QuotaCounter {
    /// An empty counter for the window of `granularity` containing `now`, with no snapshot.
    pub fn new(granularity: Granularity, now: DateTime<Utc>) -> QuotaCounter {
        QuotaCounter {
            window: Window::containing(granularity, now),
            snapshot_used: Decimal::ZERO,
            snapshot_at: None,
            local_delta: Decimal::ZERO,
        }
    }

    pub fn window(&self) -> Window {
        self.window
    }

    /// The instance's estimate of the window's global usage.
    pub fn estimated_used(&self) -> Decimal {
        self.snapshot_used.saturating_add(self.local_delta)
    }

    /// Takes in a snapshot of the global usage of `window` taken at `taken_at`. A snapshot
    /// of an older window, or older than the one held, is ignored (replies can arrive out
    /// of order); a snapshot of a later window moves the counter there.
    pub fn apply_snapshot(&mut self, window: Window, used: Decimal, taken_at: DateTime<Utc>) {
        if window.granularity() != self.window.granularity() || window < self.window {
            return;
        }
        if window == self.window && self.snapshot_at.is_some_and(|at| at >= taken_at) {
            return;
        }
        self.window = window;
        self.snapshot_used = used;
        self.snapshot_at = Some(taken_at);
        self.local_delta = Decimal::ZERO;
    }

    /// Records `units` used at `now` by this instance.
    pub fn record(&mut self, units: Decimal, now: DateTime<Utc>) {
        self.roll(now);
        self.local_delta = self.local_delta.saturating_add(units);
    }

    /// Moves to the window containing `now` if it is later: a new window starts at zero.
    fn roll(&mut self, now: DateTime<Utc>) {
        let current = Window::containing(self.window.granularity(), now);
        if current > self.window {
            self.window = current;
            self.snapshot_used = Decimal::ZERO;
            self.local_delta = Decimal::ZERO;
        }
    }

    /// Whether one more request may use the quota at `now`.
    pub fn check(
        &mut self,
        limit: &QuotaLimit,
        now: DateTime<Utc>,
        staleness: &Staleness,
    ) -> QuotaDecision {
        self.roll(now);
        let used = self.estimated_used();
        let remaining = limit
            .limit
            .checked_sub(used)
            .unwrap_or(Decimal::ZERO)
            .max(Decimal::ZERO);
        let reset_after = (self.window.end() - now).max(Duration::zero());
        let stale = self
            .snapshot_at
            .is_none_or(|at| now - at > staleness.max_age);
        let outcome = if stale && staleness.policy == StalePolicy::FailClosed {
            QuotaOutcome::Stale
        } else if used < limit.limit {
            QuotaOutcome::Allowed
        } else {
            QuotaOutcome::Exceeded
        };
        QuotaDecision {
            limit: *limit,
            outcome,
            used,
            remaining,
            reset_after,
        }
    }
}

/// The verdict of one quota on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaOutcome {
    Allowed,
    /// The estimated usage reached the limit: 429 `quota_exceeded` until the reset.
    Exceeded,
    /// The snapshot is stale and the policy is fail-closed.
    Stale,
}

/// One quota's verdict with the figures the headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaDecision {
    pub limit: QuotaLimit,
    pub outcome: QuotaOutcome,
    /// The estimate of the window's global usage before this request.
    pub used: Decimal,
    /// `max(0, limit − used)`.
    pub remaining: Decimal,
    /// Time until the window ends.
    pub reset_after: Duration,
}

impl QuotaDecision {
    /// The decision in header units (whole units, whole seconds rounded up). A stale
    /// refusal reports no retry-after: it ends when a snapshot arrives, not at a known time.
    pub fn status(&self) -> LimitStatus {
        let whole = |d: Decimal| d.floor().to_u64().unwrap_or(u64::MAX);
        let seconds = |d: Duration| {
            u64::try_from(d.num_milliseconds()).map_or(0, crate::headers::ceil_seconds)
        };
        let window_seconds = seconds(self.window_length());
        let reset_seconds = seconds(self.reset_after);
        LimitStatus {
            quota: whole(self.limit.limit),
            window_seconds,
            remaining: match self.outcome {
                QuotaOutcome::Allowed => whole(self.remaining).saturating_sub(1),
                QuotaOutcome::Exceeded | QuotaOutcome::Stale => whole(self.remaining),
            },
            reset_seconds,
            retry_after_seconds: match self.outcome {
                QuotaOutcome::Exceeded => Some(reset_seconds.max(1)),
                QuotaOutcome::Allowed | QuotaOutcome::Stale => None,
            },
        }
    }

    fn window_length(&self) -> Duration {
        match self.limit.granularity {
            Granularity::Minute => Duration::minutes(1),
            Granularity::Hour => Duration::hours(1),
            Granularity::Day => Duration::days(1),
            // The header's `w` for a month is its nominal 30 days; `t` is exact.
            Granularity::Month => Duration::days(30),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn day_limit(n: i64) -> QuotaLimit {
        QuotaLimit {
            granularity: Granularity::Day,
            limit: Decimal::from(n),
        }
    }

    const FRESH: Staleness = Staleness {
        policy: StalePolicy::FailClosed,
        max_age: Duration::minutes(5),
    };

    #[test]
    fn a_snapshot_quota_is_a_limit_and_a_reading_of_its_window()
    -> Result<(), tollgate_core::ids::IdError> {
        use tollgate_core::edge_snapshot::QuotaPeriod;
        let now = at("2026-11-23T12:00:00Z");
        let quota = EdgeQuota {
            meter: tollgate_core::ids::MeterName::new("requests")?,
            period: QuotaPeriod::Month,
            limit: Decimal::from(100),
            used: Decimal::from(40),
            window_start: at("2026-11-01T00:00:00Z"),
        };
        let limit = QuotaLimit::from(&quota);
        assert_eq!(limit.granularity, Granularity::Month);
        assert_eq!(limit.limit, Decimal::from(100));
        let mut counter = QuotaCounter::new(limit.granularity, now);
        counter.apply_snapshot(quota.window(), quota.used, now);
        assert_eq!(counter.window(), quota.window());
        assert_eq!(counter.estimated_used(), Decimal::from(40));
        Ok(())
    }

    #[test]
    fn snapshot_plus_local_delta_is_allowed_until_the_limit() {
        let now = at("2026-11-23T12:00:00Z");
        let mut counter = QuotaCounter::new(Granularity::Day, now);
        counter.apply_snapshot(
            Window::containing(Granularity::Day, now),
            Decimal::from(97),
            now,
        );
        let limit = day_limit(100);
        let mut outcomes = Vec::new();
        for _ in 0..4 {
            let d = counter.check(&limit, now, &FRESH);
            outcomes.push(d.outcome);
            if d.outcome == QuotaOutcome::Allowed {
                counter.record(Decimal::ONE, now);
            }
        }
        use QuotaOutcome::*;
        assert_eq!(outcomes, [Allowed, Allowed, Allowed, Exceeded]);
        let status = counter.check(&limit, now, &FRESH).status();
        assert_eq!(status.quota, 100);
        assert_eq!(status.remaining, 0);
        assert_eq!(status.window_seconds, 86_400);
        assert_eq!(status.reset_seconds, 43_200);
        assert_eq!(status.retry_after_seconds, Some(43_200));
    }

    #[test]
    fn a_new_day_starts_from_zero_and_old_or_reordered_snapshots_are_ignored() {
        let morning = at("2026-11-23T08:00:00Z");
        let today = Window::containing(Granularity::Day, morning);
        let mut counter = QuotaCounter::new(Granularity::Day, morning);
        counter.apply_snapshot(today, Decimal::from(100), morning);
        counter.apply_snapshot(today, Decimal::from(5), morning - Duration::minutes(1));
        assert_eq!(counter.estimated_used(), Decimal::from(100));
        let tomorrow = at("2026-11-24T00:00:01Z");
        let d = counter.check(&day_limit(100), tomorrow, &FRESH);
        assert_eq!(d.used, Decimal::ZERO);
        counter.apply_snapshot(today, Decimal::from(100), tomorrow);
        assert_eq!(
            counter.estimated_used(),
            Decimal::ZERO,
            "yesterday's snapshot"
        );
    }

    #[test]
    fn a_stale_snapshot_fails_open_or_closed_as_configured() {
        let now = at("2026-11-23T12:00:00Z");
        let mut counter = QuotaCounter::new(Granularity::Month, now);
        let month = Window::containing(Granularity::Month, now);
        let limit = QuotaLimit {
            granularity: Granularity::Month,
            limit: Decimal::from(10),
        };
        let open = Staleness {
            policy: StalePolicy::FailOpen,
            ..FRESH
        };
        let cases = [
            (None, FRESH, QuotaOutcome::Stale),
            (None, open, QuotaOutcome::Allowed),
            (Some(Duration::minutes(6)), FRESH, QuotaOutcome::Stale),
            (Some(Duration::minutes(6)), open, QuotaOutcome::Allowed),
            (Some(Duration::minutes(4)), FRESH, QuotaOutcome::Allowed),
        ];
        for (age, staleness, expected) in cases {
            let mut counter = counter.clone();
            if let Some(age) = age {
                counter.apply_snapshot(month, Decimal::ONE, now - age);
            }
            let d = counter.check(&limit, now, &staleness);
            assert_eq!(d.outcome, expected, "{age:?} {staleness:?}");
            if expected == QuotaOutcome::Stale {
                assert_eq!(d.status().retry_after_seconds, None);
            }
        }
        counter.apply_snapshot(month, Decimal::from(10), now);
        assert_eq!(
            counter.check(&limit, now, &FRESH).outcome,
            QuotaOutcome::Exceeded
        );
    }

    #[test]
    fn the_counter_round_trips_through_shared_data_bytes() -> Result<(), serde_json::Error> {
        let now = at("2026-11-23T12:00:00Z");
        let mut counter = QuotaCounter::new(Granularity::Day, now);
        counter.record(Decimal::new(15, 1), now);
        let bytes = serde_json::to_vec(&counter)?;
        assert_eq!(serde_json::from_slice::<QuotaCounter>(&bytes)?, counter);
        Ok(())
    }

    /// N instances each sending one request every `1000 / rate` ms, refreshing their
    /// snapshot every `interval` ms (phases staggered) from data `delay` ms old.
    /// Returns the final global usage.
    fn simulate(n: u64, interval: u64, delay: u64, rate: u64, limit: u64, phase_seed: u64) -> u64 {
        let start = at("2026-11-23T00:00:00Z");
        let staleness = Staleness {
            policy: StalePolicy::FailOpen,
            max_age: Duration::days(1),
        };
        let quota = day_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        let day = Window::containing(Granularity::Day, start);
        let step = 1_000 / rate;
        let mut counters: Vec<QuotaCounter> = (0..n)
            .map(|_| QuotaCounter::new(Granularity::Day, start))
            .collect();
        let mut admitted_at: Vec<u64> = Vec::new();
        let mut next_refresh: Vec<u64> = (0..n)
            .map(|i| (phase_seed.rotate_left(i as u32 * 7)) % interval)
            .collect();
        let used_at = |admitted: &[u64], t: u64| admitted.iter().filter(|&&a| a < t).count();
        // Long enough for the limit to be reached at the slowest pace, plus the lag.
        let horizon = (limit / (n * rate) + 2) * 1_000 + interval + delay + 1_000;
        for t in 0..horizon {
            let now = start + Duration::milliseconds(i64::try_from(t).unwrap_or(0));
            for i in 0..n as usize {
                if t >= next_refresh[i] {
                    let visible = used_at(&admitted_at, t.saturating_sub(delay));
                    counters[i].apply_snapshot(day, Decimal::from(visible), now);
                    next_refresh[i] += interval;
                }
                if t % step == (i as u64 * 13) % step {
                    let d = counters[i].check(&quota, now, &staleness);
                    if d.outcome == QuotaOutcome::Allowed {
                        counters[i].record(Decimal::ONE, now);
                        admitted_at.push(t);
                    }
                }
            }
        }
        admitted_at.len() as u64
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn overshoot_with_stale_snapshots_stays_within_the_stated_bound(
            n in 1u64..6, interval in 50u64..2_000, delay in 0u64..500,
            rate in 1u64..40, limit in 0u64..300, phase_seed in any::<u64>(),
        ) {
            let used = simulate(n, interval, delay, rate, limit, phase_seed);
            // limit + N · (⌈(I + D) · R⌉ + 1) · u with u = 1; the simulated per-instance
            // rate is 1000 / ⌊1000 / rate⌋ requests per second.
            let real_rate = 1_000 / (1_000 / rate);
            let bound = limit + n * ((interval + delay) * real_rate).div_ceil(1_000) + n;
            prop_assert!(used <= bound, "used {used} > bound {bound}");
            prop_assert!(used >= limit, "the quota is used up");
        }
    }
}
