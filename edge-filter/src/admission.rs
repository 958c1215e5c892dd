//! Admission of one request of a known tenant: every rate limit and quota of its plan
//! checked against **one** shared-data entry per tenant, so a request is decided and
//! charged with a single compare-and-swap.
//!
//! ## Why one entry per tenant
//!
//! A plan can set four rate limits and several quotas. Kept in separate entries, a
//! request would need one CAS per entry, and a mismatch on the third after the first two
//! were written leaves a half-charged request behind. With all of a tenant's counters in
//! one [`TenantCounters`] entry (`tollgate/tenant/{id}`, a few hundred bytes of JSON) the
//! glue's loop is: read the entry and its CAS token, call [`admit`], write
//! [`Admission::new_state`] with that token, and on a CAS mismatch read and decide again.
//! Every worker thread of an Envoy instance counts against the same entry, so the limits
//! hold per instance however requests are spread over workers. A refused request writes
//! nothing and so consumes nothing.
//!
//! Envoy inserts a missing key whatever CAS token the writer passes, so two workers that
//! both find a tenant's entry missing can both write it: the first request of a tenant on
//! an instance may be counted by one worker only. That costs at most `workers − 1`
//! requests once per tenant and instance lifetime (entries are never deleted).
//!
//! ## What is charged when
//!
//! At admission each rate limit consumes one request and each quota of a meter measured
//! at request time (the requests meter) records its units. Meters known only when the
//! response ends (response bytes) are checked at admission and recorded with
//! [`record_after_response`]. Quotas of meters the edge does not measure at all (an
//! application meter reported by the backend) are still enforced from the snapshot's
//! global usage; their local delta stays zero.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tollgate_core::ids::{MeterName, TenantId};
use tollgate_core::plan::RatePeriod;
use tollgate_core::window::Granularity;

use crate::decision::{Checks, Verdict, verdict};
use crate::quota::{QuotaCounter, QuotaDecision, Staleness};
use crate::rate::{RateDecision, decide_all};
use crate::snapshot::{SnapshotQuota, TenantLimits};

/// The shared-data key of a tenant's counters.
pub fn shared_data_key(tenant: &TenantId) -> String {
    format!("tollgate/tenant/{}", tenant.as_str())
}

/// Everything the instance counts for one tenant: the GCRA state of each rate limit and
/// the local quota counters. Unknown or unreadable stored bytes count as empty (a fresh
/// tenant), never as an error that would fail requests.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantCounters {
    #[serde(default)]
    rates: Vec<RateSlot>,
    #[serde(default)]
    quotas: Vec<QuotaSlot>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RateSlot {
    period: RatePeriod,
    /// Theoretical arrival time, nanoseconds since the epoch (see [`crate::rate`]).
    tat: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct QuotaSlot {
    meter: MeterName,
    counter: QuotaCounter,
}

impl TenantCounters {
    /// Reads a stored entry; missing or unreadable bytes are a fresh tenant.
    pub fn from_stored(stored: Option<&[u8]>) -> TenantCounters {
        stored
            .and_then(|bytes| serde_json::from_slice(bytes).ok())
            .unwrap_or_default()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn tat(&self, period: RatePeriod) -> Option<[u8; 8]> {
        self.rates
            .iter()
            .find(|s| s.period == period)
            .map(|s| s.tat.to_be_bytes())
    }

    fn set_tat(&mut self, period: RatePeriod, state: [u8; 8]) {
        let tat = u64::from_be_bytes(state);
        match self.rates.iter_mut().find(|s| s.period == period) {
            Some(slot) => slot.tat = tat,
            None => self.rates.push(RateSlot { period, tat }),
        }
    }

    /// The counter of a snapshot quota, brought up to date with the snapshot: created in
    /// the snapshot's window (so a day that ended since is rolled over by `check`, not
    /// mistaken for a window without data).
    fn quota_counter(
        &mut self,
        quota: &SnapshotQuota,
        taken_at: Option<DateTime<Utc>>,
    ) -> &mut QuotaCounter {
        let granularity = quota.limit.granularity;
        let index =
            match self.quotas.iter().position(|s| {
                s.meter == quota.meter && s.counter.window().granularity() == granularity
            }) {
                Some(index) => index,
                None => {
                    self.quotas.push(QuotaSlot {
                        meter: quota.meter.clone(),
                        counter: QuotaCounter::new(granularity, quota.window.start()),
                    });
                    self.quotas.len() - 1
                }
            };
        let slot = &mut self.quotas[index].counter;
        if let Some(taken_at) = taken_at {
            slot.apply_snapshot(quota.window, quota.used, taken_at);
        }
        slot
    }

    /// Drops counters of quotas the tenant no longer has, so the entry stays small.
    fn retain_quotas(&mut self, quotas: &[SnapshotQuota]) {
        self.quotas.retain(|slot| {
            quotas.iter().any(|q| {
                q.meter == slot.meter && q.limit.granularity == slot.counter.window().granularity()
            })
        });
    }

    /// The local counter of a quota, for tests and diagnostics.
    pub fn local_quota(
        &self,
        meter: &MeterName,
        granularity: Granularity,
    ) -> Option<&QuotaCounter> {
        self.quotas
            .iter()
            .find(|s| &s.meter == meter && s.counter.window().granularity() == granularity)
            .map(|s| &s.counter)
    }
}

/// One request to admit.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionRequest<'a> {
    pub now: DateTime<Utc>,
    pub limits: &'a TenantLimits,
    /// When the snapshot the limits come from was taken; `None` without a snapshot.
    pub snapshot_taken_at: Option<DateTime<Utc>>,
    pub staleness: &'a Staleness,
    /// Units recorded at admission, per meter (the requests meter: 1).
    pub units_at_admission: &'a [(MeterName, Decimal)],
    pub emit_headers_on_allowed: bool,
}

/// The outcome of [`admit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    pub verdict: Verdict,
    /// The entry to write back with the CAS token read; `None` when nothing changes (the
    /// request is refused).
    pub new_state: Option<Vec<u8>>,
}

/// Decides a request against the stored counters (see the module docs). Pure.
pub fn admit(stored: Option<&[u8]>, request: &AdmissionRequest<'_>) -> Admission {
    let mut counters = TenantCounters::from_stored(stored);
    let limits = request.limits;
    let now_ms = u64::try_from(request.now.timestamp_millis()).unwrap_or(0);
    let stored_rates: Vec<Option<[u8; 8]>> = limits
        .rates
        .iter()
        .map(|limit| counters.tat(limit.period))
        .collect();
    let rates: Vec<RateDecision> = decide_all(&stored_rates, now_ms, &limits.rates);
    let quotas: Vec<QuotaDecision> = limits
        .quotas
        .iter()
        .map(|quota| {
            counters
                .quota_counter(quota, request.snapshot_taken_at)
                .check(&quota.limit, request.now, request.staleness)
        })
        .collect();
    let verdict = verdict(
        &Checks {
            blocked: limits.blocked,
            rates: &rates,
            quotas: &quotas,
        },
        request.emit_headers_on_allowed,
    );
    let new_state = match verdict {
        Verdict::Refuse(_) => None,
        Verdict::Forward { .. } => {
            for decision in &rates {
                if let Some(state) = decision.new_state {
                    counters.set_tat(decision.limit.period, state);
                }
            }
            for quota in &limits.quotas {
                let units = request
                    .units_at_admission
                    .iter()
                    .find(|(meter, _)| meter == &quota.meter)
                    .map(|(_, units)| *units);
                if let Some(units) = units {
                    counters
                        .quota_counter(quota, request.snapshot_taken_at)
                        .record(units, request.now);
                }
            }
            counters.retain_quotas(&limits.quotas);
            Some(counters.to_bytes())
        }
    };
    Admission { verdict, new_state }
}

/// Records units known only after the response (response bytes) into the quotas of
/// `meter`. Returns the entry to write back, or `None` when the tenant has no quota on
/// that meter (nothing to write).
pub fn record_after_response(
    stored: Option<&[u8]>,
    limits: &TenantLimits,
    snapshot_taken_at: Option<DateTime<Utc>>,
    meter: &MeterName,
    units: Decimal,
    now: DateTime<Utc>,
) -> Option<Vec<u8>> {
    let quotas: Vec<&SnapshotQuota> = limits.quotas.iter().filter(|q| &q.meter == meter).collect();
    if quotas.is_empty() || units.is_zero() {
        return None;
    }
    let mut counters = TenantCounters::from_stored(stored);
    for quota in quotas {
        counters
            .quota_counter(quota, snapshot_taken_at)
            .record(units, now);
    }
    Some(counters.to_bytes())
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU64;

    use chrono::{Duration, TimeZone};
    use proptest::prelude::*;
    use rust_decimal_macros::dec;
    use tollgate_core::window::Window;

    use super::*;
    use crate::headers::Refusal;
    use crate::quota::{QuotaLimit, StalePolicy};
    use crate::rate::RateLimit;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0)
            .single()
            .unwrap()
    }

    fn meter(name: &str) -> MeterName {
        MeterName::new(name).unwrap()
    }

    fn staleness() -> Staleness {
        Staleness {
            policy: StalePolicy::FailOpen,
            max_age: Duration::minutes(5),
        }
    }

    fn limits(per_second: u64, day_quota: Option<Decimal>, used: Decimal) -> TenantLimits {
        TenantLimits {
            rates: vec![RateLimit::new(
                RatePeriod::Second,
                NonZeroU64::new(per_second).unwrap(),
            )],
            quotas: day_quota
                .map(|limit| SnapshotQuota {
                    meter: meter("requests"),
                    limit: QuotaLimit {
                        granularity: Granularity::Day,
                        limit,
                    },
                    window: Window::containing(Granularity::Day, t0()),
                    used,
                })
                .into_iter()
                .collect(),
            blocked: false,
        }
    }

    fn request<'a>(
        now: DateTime<Utc>,
        limits: &'a TenantLimits,
        staleness: &'a Staleness,
        units: &'a [(MeterName, Decimal)],
    ) -> AdmissionRequest<'a> {
        AdmissionRequest {
            now,
            limits,
            snapshot_taken_at: Some(t0()),
            staleness,
            units_at_admission: units,
            emit_headers_on_allowed: true,
        }
    }

    #[test]
    fn a_refused_request_writes_nothing_and_an_allowed_one_charges_every_counter() {
        let limits = limits(2, Some(dec!(100)), dec!(10));
        let stale = staleness();
        let units = [(meter("requests"), Decimal::ONE)];
        let mut state: Option<Vec<u8>> = None;
        let mut allowed = 0;
        for _ in 0..5 {
            let a = admit(state.as_deref(), &request(t0(), &limits, &stale, &units));
            match a.verdict {
                Verdict::Forward { .. } => {
                    allowed += 1;
                    state = a.new_state;
                }
                Verdict::Refuse(reply) => {
                    assert_eq!(reply.status_code(), 429);
                    assert!(a.new_state.is_none());
                }
            }
        }
        assert_eq!(allowed, 2);
        let counters = TenantCounters::from_stored(state.as_deref());
        let local = counters
            .local_quota(&meter("requests"), Granularity::Day)
            .unwrap();
        assert_eq!(local.estimated_used(), dec!(12));
    }

    #[test]
    fn a_blocked_tenant_gets_402_and_nothing_is_charged() {
        let mut limits = limits(10, None, Decimal::ZERO);
        limits.blocked = true;
        let stale = staleness();
        let a = admit(None, &request(t0(), &limits, &stale, &[]));
        assert_eq!(
            a.verdict,
            Verdict::Refuse(crate::headers::refusal_reply(Refusal::BudgetExceeded, None))
        );
        assert_eq!(a.new_state, None);
    }

    #[test]
    fn unreadable_stored_bytes_count_as_a_fresh_tenant() {
        let limits = limits(1, None, Decimal::ZERO);
        let stale = staleness();
        for stored in [&b"garbage"[..], b"", b"{\"rates\":7}", &[0xff, 0xfe]] {
            let a = admit(Some(stored), &request(t0(), &limits, &stale, &[]));
            assert!(matches!(a.verdict, Verdict::Forward { .. }));
        }
    }

    #[test]
    fn a_newer_snapshot_replaces_the_local_delta_and_a_new_day_starts_at_zero() {
        let limits_then = limits(1000, Some(dec!(5)), dec!(3));
        let stale = staleness();
        let units = [(meter("requests"), Decimal::ONE)];
        let a = admit(None, &request(t0(), &limits_then, &stale, &units));
        let b = admit(
            a.new_state.as_deref(),
            &request(t0(), &limits_then, &stale, &units),
        );
        let c = admit(
            b.new_state.as_deref(),
            &request(t0(), &limits_then, &stale, &units),
        );
        assert!(matches!(c.verdict, Verdict::Refuse(_)), "3 + 2 local = 5");
        // A later snapshot says 4 were used globally (one of ours was not yet ingested).
        let mut limits_now = limits(1000, Some(dec!(5)), dec!(4));
        let later = AdmissionRequest {
            snapshot_taken_at: Some(t0() + Duration::seconds(15)),
            ..request(t0() + Duration::seconds(16), &limits_now, &stale, &units)
        };
        let d = admit(b.new_state.as_deref(), &later);
        assert!(matches!(d.verdict, Verdict::Forward { .. }));
        let e = admit(d.new_state.as_deref(), &later);
        assert!(matches!(e.verdict, Verdict::Refuse(_)));
        // Next day: the old snapshot's window has ended, the counter starts at zero.
        limits_now.quotas[0].used = dec!(5);
        let next_day = AdmissionRequest {
            snapshot_taken_at: Some(t0() + Duration::seconds(15)),
            ..request(t0() + Duration::days(1), &limits_now, &stale, &units)
        };
        let f = admit(e.new_state.as_deref(), &next_day);
        assert!(matches!(f.verdict, Verdict::Forward { .. }));
    }

    #[test]
    fn response_bytes_are_recorded_after_the_response_only_where_a_quota_exists() {
        let mut limits = limits(1000, None, Decimal::ZERO);
        let bytes = meter("response_bytes");
        assert_eq!(
            record_after_response(None, &limits, Some(t0()), &bytes, dec!(10), t0()),
            None
        );
        limits.quotas.push(SnapshotQuota {
            meter: bytes.clone(),
            limit: QuotaLimit {
                granularity: Granularity::Month,
                limit: dec!(1000),
            },
            window: Window::containing(Granularity::Month, t0()),
            used: dec!(990),
        });
        let stored =
            record_after_response(None, &limits, Some(t0()), &bytes, dec!(10), t0()).unwrap();
        let stale = staleness();
        let a = admit(Some(&stored), &request(t0(), &limits, &stale, &[]));
        match a.verdict {
            Verdict::Refuse(reply) => assert!(reply.body.contains("quota_exceeded")),
            Verdict::Forward { .. } => panic!("990 + 10 reached the 1000 limit"),
        }
    }

    proptest! {
        /// Workers interleaving read-decide-CAS on one entry never admit more than a
        /// single worker would: the per-second limit holds across them at every instant.
        #[test]
        fn workers_sharing_one_entry_with_cas_admit_exactly_the_limit(
            limit in 1u64..20,
            workers in 1usize..6,
            schedule in proptest::collection::vec((0usize..6, 0usize..3), 1..200),
        ) {
            let limits = limits(limit, None, Decimal::ZERO);
            let stale = staleness();
            // The shared entry and its CAS token; each worker holds what it last read.
            let mut entry: (Option<Vec<u8>>, u32) = (None, 0);
            let mut reads: Vec<Option<(Option<Vec<u8>>, u32)>> = vec![None; workers];
            let mut admitted = 0u64;
            for (worker, step) in schedule {
                let worker = worker % workers;
                match (step, reads[worker].take()) {
                    (0, _) | (_, None) => reads[worker] = Some(entry.clone()),
                    (_, Some((stored, cas))) => {
                        let a = admit(stored.as_deref(), &request(t0(), &limits, &stale, &[]));
                        if let Some(new) = a.new_state
                            && cas == entry.1 {
                                entry = (Some(new), entry.1 + 1);
                                admitted += 1;
                            }
                    }
                }
            }
            prop_assert!(admitted <= limit);
        }
    }
}
