//! Rate-limit response headers and the JSON bodies of the replies the filter sends itself.
//!
//! Every limit a request is checked against — each rate limit period, each day or month
//! quota — reports a [`LimitStatus`]. The headers describe **one** of them, the most
//! restrictive, chosen by [`most_restrictive`]:
//!
//! 1. a limit that refuses the request beats every limit that allows it, and among
//!    refusals the one with the longest retry-after wins, because the request cannot
//!    succeed before every refusing limit has recovered;
//! 2. among limits that allow, the one with the fewest remaining requests wins, ties going
//!    to the longest reset, because that is the limit the client runs into first and
//!    stays limited by longest.
//!
//! Headers (IETF httpapi `RateLimit` draft plus the widely used `X-RateLimit-*` trio):
//!
//! ```text
//! RateLimit-Policy: "default";q=100;w=60      quota 100 per 60 s window
//! RateLimit: "default";r=50;t=30              50 remaining, full again in 30 s
//! X-RateLimit-Limit: 100
//! X-RateLimit-Remaining: 50
//! X-RateLimit-Reset: 30                       seconds from now, rounded up
//! Retry-After: 20                             on 429 only, whole seconds rounded up
//! ```
//!
//! Names are written in their conventional case; HTTP/2 and Envoy lower-case them on the
//! wire, which clients treat the same. Bodies never carry internal detail: a fixed message
//! per code, and the retry-after in seconds when one is known.

use serde_json::json;

use crate::rate::{RateDecision, RateOutcome};

/// One limit's view of a request, in the units the headers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitStatus {
    /// Units allowed per window (`q`, `X-RateLimit-Limit`).
    pub quota: u64,
    /// Window length in seconds (`w`).
    pub window_seconds: u64,
    /// Units still allowed after this request (`r`, `X-RateLimit-Remaining`).
    pub remaining: u64,
    /// Seconds until the limit is fully available again (`t`, `X-RateLimit-Reset`).
    pub reset_seconds: u64,
    /// `Some` when this limit refuses the request: seconds until it would pass.
    pub retry_after_seconds: Option<u64>,
}

impl LimitStatus {
    fn refuses(&self) -> bool {
        self.retry_after_seconds.is_some()
    }
}

impl From<&RateDecision> for LimitStatus {
    fn from(decision: &RateDecision) -> LimitStatus {
        LimitStatus {
            quota: decision.limit.limit.get(),
            window_seconds: u64::from(decision.limit.period.seconds()),
            remaining: decision.remaining,
            reset_seconds: ceil_seconds(decision.reset_after_ms),
            retry_after_seconds: match decision.outcome {
                RateOutcome::Allowed => None,
                RateOutcome::Limited => Some(ceil_seconds(decision.retry_after_ms).max(1)),
            },
        }
    }
}

/// Milliseconds as whole seconds, rounded up.
pub fn ceil_seconds(ms: u64) -> u64 {
    ms.div_ceil(1_000)
}

/// The status the headers describe (see the module docs for the rule); `None` when no
/// limit applies.
pub fn most_restrictive(statuses: &[LimitStatus]) -> Option<LimitStatus> {
    statuses.iter().copied().max_by(|a, b| {
        let rank = |s: &LimitStatus| {
            (
                s.refuses(),
                s.retry_after_seconds.unwrap_or(0),
                std::cmp::Reverse(s.remaining),
                s.reset_seconds,
            )
        };
        rank(a).cmp(&rank(b))
    })
}

/// The rate-limit headers for `status`, in a fixed order; `Retry-After` only when it
/// refuses the request.
pub fn rate_limit_headers(status: &LimitStatus) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        (
            "RateLimit-Policy",
            format!("\"default\";q={};w={}", status.quota, status.window_seconds),
        ),
        (
            "RateLimit",
            format!(
                "\"default\";r={};t={}",
                status.remaining, status.reset_seconds
            ),
        ),
        ("X-RateLimit-Limit", status.quota.to_string()),
        ("X-RateLimit-Remaining", status.remaining.to_string()),
        ("X-RateLimit-Reset", status.reset_seconds.to_string()),
    ];
    if let Some(seconds) = status.retry_after_seconds {
        headers.push(("Retry-After", seconds.to_string()));
    }
    headers
}

/// Why the filter answers a request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A request rate limit: 429.
    RateLimited,
    /// A day or month quota of a meter: 429.
    QuotaExceeded,
    /// The tenant is on the budget block list: 402.
    BudgetExceeded,
    /// No tenant could be established and the policy rejects such requests: 401.
    UnknownTenant,
    /// A quota cannot be checked (stale usage data, fail-closed policy): 503.
    QuotaUnavailable,
}

impl Refusal {
    pub fn status_code(self) -> u32 {
        match self {
            Refusal::RateLimited | Refusal::QuotaExceeded => 429,
            Refusal::BudgetExceeded => 402,
            Refusal::UnknownTenant => 401,
            Refusal::QuotaUnavailable => 503,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Refusal::RateLimited => "rate_limited",
            Refusal::QuotaExceeded => "quota_exceeded",
            Refusal::BudgetExceeded => "budget_exceeded",
            Refusal::UnknownTenant => "unknown_tenant",
            Refusal::QuotaUnavailable => "quota_unavailable",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Refusal::RateLimited => "Too many requests: the plan's rate limit is reached.",
            Refusal::QuotaExceeded => "The plan's usage quota for this period is used up.",
            Refusal::BudgetExceeded => {
                "The tenant's budget hard limit is reached; raise the budget to continue."
            }
            Refusal::UnknownTenant => "The request does not identify a known tenant.",
            Refusal::QuotaUnavailable => "Quota usage cannot be checked right now; retry shortly.",
        }
    }
}

/// A reply the filter sends instead of forwarding the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub refusal: Refusal,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl LocalReply {
    pub fn status_code(&self) -> u32 {
        self.refusal.status_code()
    }
}

/// The reply to a refused request. `limit` is the most restrictive status (rate limits
/// and quotas carry one; a budget block usually does not), and it sets the headers and
/// `retryAfterSeconds`.
pub fn refusal_reply(refusal: Refusal, limit: Option<&LimitStatus>) -> LocalReply {
    let mut headers = vec![("Content-Type", "application/json".to_owned())];
    if let Some(limit) = limit {
        headers.extend(rate_limit_headers(limit));
    }
    let retry_after = limit.and_then(|l| l.retry_after_seconds);
    let mut body = json!({ "code": refusal.code(), "message": refusal.message() });
    if let (Some(seconds), Some(object)) = (retry_after, body.as_object_mut()) {
        object.insert("retryAfterSeconds".to_owned(), json!(seconds));
    }
    LocalReply {
        refusal,
        headers,
        body: body.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate::{RateLimit, decide};
    use proptest::prelude::*;
    use std::num::NonZeroU64;
    use tollgate_core::plan::RatePeriod;

    fn status(quota: u64, w: u64, r: u64, t: u64, retry: Option<u64>) -> LimitStatus {
        LimitStatus {
            quota,
            window_seconds: w,
            remaining: r,
            reset_seconds: t,
            retry_after_seconds: retry,
        }
    }

    fn header_text(headers: &[(&str, String)]) -> Vec<String> {
        headers.iter().map(|(k, v)| format!("{k}: {v}")).collect()
    }

    #[test]
    fn allowed_and_refused_headers_are_exact() {
        let cases = [
            (
                status(100, 60, 50, 30, None),
                vec![
                    "RateLimit-Policy: \"default\";q=100;w=60",
                    "RateLimit: \"default\";r=50;t=30",
                    "X-RateLimit-Limit: 100",
                    "X-RateLimit-Remaining: 50",
                    "X-RateLimit-Reset: 30",
                ],
            ),
            (
                status(5, 1, 0, 1, Some(1)),
                vec![
                    "RateLimit-Policy: \"default\";q=5;w=1",
                    "RateLimit: \"default\";r=0;t=1",
                    "X-RateLimit-Limit: 5",
                    "X-RateLimit-Remaining: 0",
                    "X-RateLimit-Reset: 1",
                    "Retry-After: 1",
                ],
            ),
        ];
        for (status, expected) in cases {
            assert_eq!(header_text(&rate_limit_headers(&status)), expected);
        }
    }

    #[test]
    fn a_rate_decision_rounds_seconds_up() {
        let limit = RateLimit::new(RatePeriod::Minute, NonZeroU64::MIN.saturating_add(2));
        let now = 1_700_000_000_000;
        let mut state = None;
        for _ in 0..3 {
            state = decide(state, now, limit).new_state;
        }
        let limited = decide(state, now + 1, limit);
        let got = LimitStatus::from(&limited);
        // 3 per minute: the next one is free 20 s after the burst; 19.999 s → 20.
        assert_eq!(got, status(3, 60, 0, 60, Some(20)));
    }

    #[test]
    fn the_most_restrictive_limit_is_chosen_by_the_documented_rule() {
        let per_second = status(10, 1, 3, 1, None);
        let per_day_low = status(1_000, 86_400, 2, 40_000, None);
        let per_hour_same = status(500, 3_600, 2, 900, None);
        let refused_short = status(10, 1, 0, 1, Some(1));
        let refused_long = status(100, 60, 0, 60, Some(12));
        let cases: [(&[LimitStatus], Option<LimitStatus>); 5] = [
            (&[], None),
            (&[per_second, per_day_low], Some(per_day_low)),
            (&[per_hour_same, per_day_low], Some(per_day_low)),
            (&[per_day_low, refused_short], Some(refused_short)),
            (
                &[refused_long, refused_short, per_second],
                Some(refused_long),
            ),
        ];
        for (statuses, expected) in cases {
            assert_eq!(most_restrictive(statuses), expected, "{statuses:?}");
        }
    }

    #[test]
    fn refusal_bodies_are_exact_json() {
        let limited = status(100, 60, 0, 60, Some(12));
        let cases = [
            (
                Refusal::RateLimited,
                Some(limited),
                429,
                r#"{"code":"rate_limited","message":"Too many requests: the plan's rate limit is reached.","retryAfterSeconds":12}"#,
            ),
            (
                Refusal::QuotaExceeded,
                Some(status(1_000, 86_400, 0, 3_600, Some(3_600))),
                429,
                r#"{"code":"quota_exceeded","message":"The plan's usage quota for this period is used up.","retryAfterSeconds":3600}"#,
            ),
            (
                Refusal::BudgetExceeded,
                None,
                402,
                r#"{"code":"budget_exceeded","message":"The tenant's budget hard limit is reached; raise the budget to continue."}"#,
            ),
            (
                Refusal::UnknownTenant,
                None,
                401,
                r#"{"code":"unknown_tenant","message":"The request does not identify a known tenant."}"#,
            ),
            (
                Refusal::QuotaUnavailable,
                None,
                503,
                r#"{"code":"quota_unavailable","message":"Quota usage cannot be checked right now; retry shortly."}"#,
            ),
        ];
        for (refusal, limit, code, body) in cases {
            let reply = refusal_reply(refusal, limit.as_ref());
            assert_eq!(reply.status_code(), code);
            assert_eq!(reply.body, body);
            assert_eq!(
                reply.headers[0],
                ("Content-Type", "application/json".to_owned())
            );
            assert_eq!(
                reply.headers.iter().any(|(k, _)| *k == "Retry-After"),
                limit.is_some()
            );
        }
    }

    proptest! {
        #[test]
        fn the_chosen_status_is_one_of_the_inputs_and_refuses_if_any_refuses(
            raw in proptest::collection::vec(
                (1u64..1_000, 1u64..86_400, 0u64..1_000, 0u64..86_400, proptest::option::of(1u64..86_400)),
                1..8,
            )
        ) {
            let statuses: Vec<LimitStatus> =
                raw.iter().map(|&(q, w, r, t, retry)| status(q, w, r, t, retry)).collect();
            let chosen = most_restrictive(&statuses);
            prop_assert!(chosen.is_some_and(|c| statuses.contains(&c)));
            let chosen = chosen.unwrap_or(statuses[0]);
            prop_assert_eq!(chosen.refuses(), statuses.iter().any(LimitStatus::refuses));
            for s in &statuses {
                if chosen.refuses() {
                    prop_assert!(s.retry_after_seconds.unwrap_or(0) <= chosen.retry_after_seconds.unwrap_or(0));
                } else {
                    prop_assert!(s.remaining >= chosen.remaining);
                }
            }
        }
    }
}
