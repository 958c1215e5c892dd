//! The verdict on one request, from the checks of the other modules: forward it (with
//! rate-limit headers on the response, if configured) or answer it directly.
//!
//! Precedence, first match wins:
//!
//! 1. the tenant is on the budget block list → 402 `budget_exceeded`;
//! 2. a rate limit or a quota refuses → 429 with the headers of the most restrictive
//!    limit (see [`crate::headers`]) and the code of the limit that produced them:
//!    `rate_limited` or `quota_exceeded`;
//! 3. a quota cannot be checked (stale snapshot, fail-closed) → 503 `quota_unavailable`;
//! 4. otherwise forward, with the most restrictive limit's headers when
//!    `emit_headers_on_allowed` is set.
//!
//! Rate-limit states ([`RateDecision::new_state`]) are written back only on
//! [`Verdict::Forward`]: a refused request consumes nothing. An unknown tenant under the
//! reject policy is answered before any of this, with
//! [`refusal_reply`]`(`[`Refusal::UnknownTenant`]`, None)`.

use crate::headers::{
    LimitStatus, LocalReply, Refusal, most_restrictive, rate_limit_headers, refusal_reply,
};
use crate::quota::{QuotaDecision, QuotaOutcome};
use crate::rate::RateDecision;

/// Everything checked for one request of a known tenant.
#[derive(Debug, Clone, Copy)]
pub struct Checks<'a> {
    /// Whether the tenant is on the snapshot's budget block list.
    pub blocked: bool,
    pub rates: &'a [RateDecision],
    pub quotas: &'a [QuotaDecision],
}

/// What the filter does with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Pass it upstream; add these headers to the response. Write the rate states back.
    Forward {
        response_headers: Vec<(&'static str, String)>,
    },
    /// Answer it with this reply; write nothing back.
    Refuse(LocalReply),
}

/// The verdict on one request (see the module docs for the precedence).
pub fn verdict(checks: &Checks<'_>, emit_headers_on_allowed: bool) -> Verdict {
    if checks.blocked {
        return Verdict::Refuse(refusal_reply(Refusal::BudgetExceeded, None));
    }
    let rate_statuses = checks.rates.iter().map(LimitStatus::from);
    let quota_statuses = checks
        .quotas
        .iter()
        .filter(|q| q.outcome != QuotaOutcome::Stale)
        .map(QuotaDecision::status);
    let tagged: Vec<(LimitStatus, Refusal)> = rate_statuses
        .map(|s| (s, Refusal::RateLimited))
        .chain(quota_statuses.map(|s| (s, Refusal::QuotaExceeded)))
        .collect();
    let statuses: Vec<LimitStatus> = tagged.iter().map(|(s, _)| *s).collect();
    let chosen = most_restrictive(&statuses);
    if let Some(limit) = chosen.filter(|s| s.retry_after_seconds.is_some()) {
        let refusal = tagged
            .iter()
            .find(|(s, _)| *s == limit)
            .map_or(Refusal::RateLimited, |(_, r)| *r);
        return Verdict::Refuse(refusal_reply(refusal, Some(&limit)));
    }
    if checks
        .quotas
        .iter()
        .any(|q| q.outcome == QuotaOutcome::Stale)
    {
        return Verdict::Refuse(refusal_reply(Refusal::QuotaUnavailable, None));
    }
    let response_headers = match chosen {
        Some(limit) if emit_headers_on_allowed => rate_limit_headers(&limit),
        _ => Vec::new(),
    };
    Verdict::Forward { response_headers }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::{QuotaCounter, QuotaLimit, StalePolicy, Staleness};
    use crate::rate::{RateLimit, decide_all};
    use chrono::{DateTime, Duration, Utc};
    use rust_decimal::Decimal;
    use std::num::NonZeroU64;
    use tollgate_core::plan::RatePeriod;
    use tollgate_core::window::{Granularity, Window};

    const NOW_MS: u64 = 1_700_000_000_000;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp_millis(NOW_MS as i64).unwrap_or_default()
    }

    fn limits(per_minute: u64) -> Vec<RateLimit> {
        vec![RateLimit::new(
            RatePeriod::Minute,
            NonZeroU64::new(per_minute).unwrap_or(NonZeroU64::MIN),
        )]
    }

    /// A day quota of 100 with `used` units in a snapshot of `age`.
    fn quota(used: i64, age: Option<Duration>) -> QuotaDecision {
        let mut counter = QuotaCounter::new(Granularity::Day, now());
        if let Some(age) = age {
            counter.apply_snapshot(
                Window::containing(Granularity::Day, now()),
                Decimal::from(used),
                now() - age,
            );
        }
        let limit = QuotaLimit {
            granularity: Granularity::Day,
            limit: Decimal::from(100),
        };
        let staleness = Staleness {
            policy: StalePolicy::FailClosed,
            max_age: Duration::minutes(5),
        };
        counter.check(&limit, now(), &staleness)
    }

    fn refused_code(verdict: &Verdict) -> Option<(u32, String)> {
        match verdict {
            Verdict::Refuse(reply) => Some((
                reply.status_code(),
                serde_json::from_str::<serde_json::Value>(&reply.body)
                    .ok()?
                    .get("code")?
                    .as_str()?
                    .to_owned(),
            )),
            Verdict::Forward { .. } => None,
        }
    }

    /// Blocked, rate decisions, quota decisions, expected (status, code).
    type Case<'a> = (
        bool,
        &'a [RateDecision],
        Vec<QuotaDecision>,
        Option<(u32, &'static str)>,
    );

    #[test]
    fn the_precedence_is_block_then_limits_then_staleness() {
        let fresh = Some(Duration::seconds(10));
        let allowed_rate = decide_all(&[], NOW_MS, &limits(60));
        let exhausted: Vec<_> = {
            let first = decide_all(&[], NOW_MS, &limits(1));
            let stored: Vec<_> = first.iter().map(|d| d.new_state).collect();
            decide_all(&stored, NOW_MS, &limits(1))
        };
        let cases: Vec<Case<'_>> = vec![
            (
                true,
                &exhausted,
                vec![quota(100, fresh)],
                Some((402, "budget_exceeded")),
            ),
            (
                false,
                &exhausted,
                vec![quota(1, fresh)],
                Some((429, "rate_limited")),
            ),
            (
                false,
                &allowed_rate,
                vec![quota(100, fresh)],
                Some((429, "quota_exceeded")),
            ),
            (
                false,
                &exhausted,
                vec![quota(100, fresh)],
                Some((429, "quota_exceeded")),
            ),
            (
                false,
                &exhausted,
                vec![quota(1, None)],
                Some((429, "rate_limited")),
            ),
            (
                false,
                &allowed_rate,
                vec![quota(1, None)],
                Some((503, "quota_unavailable")),
            ),
            (false, &allowed_rate, vec![quota(1, fresh)], None),
            (false, &[], vec![], None),
        ];
        for (blocked, rates, quotas, expected) in cases {
            let checks = Checks {
                blocked,
                rates,
                quotas: &quotas,
            };
            let got = refused_code(&verdict(&checks, true));
            assert_eq!(
                got.as_ref().map(|(c, s)| (*c, s.as_str())),
                expected,
                "{blocked} {rates:?} {quotas:?}"
            );
        }
    }

    #[test]
    fn allowed_responses_carry_the_tightest_limit_only_when_configured() {
        let rates = decide_all(&[], NOW_MS, &limits(60));
        let quotas = [quota(97, Some(Duration::seconds(1)))];
        let checks = Checks {
            blocked: false,
            rates: &rates,
            quotas: &quotas,
        };
        let Verdict::Forward { response_headers } = verdict(&checks, true) else {
            panic!("allowed");
        };
        // The quota has 3 left before this request (2 after), the rate limit 59; the day
        // (of 2023-11-14T22:13:20Z) ends in 6,400 s.
        assert_eq!(
            response_headers[1],
            ("RateLimit", "\"default\";r=2;t=6400".to_owned())
        );
        assert_eq!(
            verdict(&checks, false),
            Verdict::Forward {
                response_headers: vec![]
            }
        );
    }
}
