//! Remaining quota: how much of a plan's daily and monthly quota of a meter is left.
//!
//! Pure arithmetic over a [`Quota`] and the usage so far in the current UTC day and
//! calendar month. `remaining` never goes below zero; usage beyond a quota (the edge's
//! worst-case overshoot, see the plan docs) is reported as `over`, so nothing is hidden
//! by the clamp. An unlimited quota (`None`) has no status at all rather than a sentinel.
//!
//! ```
//! use chrono::{DateTime, Utc};
//! use rust_decimal::Decimal;
//! use tollgate_core::quota::quota_use;
//! use tollgate_core::window::{Granularity, Window};
//!
//! let now: DateTime<Utc> = "2026-11-23T12:00:00Z".parse()?;
//! let today = Window::containing(Granularity::Day, now);
//! let status = quota_use(Decimal::from(100), Decimal::from(130), today);
//! assert_eq!(status.remaining, Decimal::ZERO);
//! assert_eq!(status.over, Decimal::from(30));
//! assert!(status.exhausted);
//! # Ok::<(), chrono::ParseError>(())
//! ```

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::plan::Quota;
use crate::window::{Granularity, Window};

/// One quota over one window: its limit, the usage so far and what is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuotaUse {
    pub limit: Decimal,
    pub used: Decimal,
    /// `max(0, limit - used)`.
    pub remaining: Decimal,
    /// `max(0, used - limit)`: usage beyond the quota.
    pub over: Decimal,
    /// Whether the quota is used up (`used ≥ limit`); a zero quota is always exhausted.
    pub exhausted: bool,
    /// When the window ends and the quota starts afresh.
    pub resets_at: DateTime<Utc>,
}

/// The daily and monthly quota of one meter; `None` where the plan sets no quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuotaStatus {
    pub per_day: Option<QuotaUse>,
    pub per_month: Option<QuotaUse>,
}

/// The status of a quota of `limit` units in `window` after `used` units.
///
/// Saturates rather than overflowing: a difference beyond the `Decimal` range (which no
/// real quota reaches) is reported as `Decimal::MAX`.
pub fn quota_use(limit: Decimal, used: Decimal, window: Window) -> QuotaUse {
    let difference =
        |a: Decimal, b: Decimal| a.checked_sub(b).unwrap_or(Decimal::MAX).max(Decimal::ZERO);
    QuotaUse {
        limit,
        used,
        remaining: difference(limit, used),
        over: difference(used, limit),
        exhausted: used >= limit,
        resets_at: window.end(),
    }
}

/// The status of both quotas of `quota` at `now`, given the usage so far in the UTC day
/// and in the calendar month that contain `now`.
pub fn quota_status(
    quota: &Quota,
    used_today: Decimal,
    used_this_month: Decimal,
    now: DateTime<Utc>,
) -> QuotaStatus {
    QuotaStatus {
        per_day: quota
            .per_day()
            .map(|limit| quota_use(limit, used_today, Window::containing(Granularity::Day, now))),
        per_month: quota.per_month().map(|limit| {
            quota_use(
                limit,
                used_this_month,
                Window::containing(Granularity::Month, now),
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::MeterName;
    use crate::plan::Plan;
    use rust_decimal_macros::dec;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn plan() -> Plan {
        serde_json::from_value(serde_json::json!({
            "name": "starter", "effectiveFrom": "2026-01-01T00:00:00Z", "currency": "USD",
            "baseFee": "29",
            "meters": [{"meter": "api_requests", "included": "1000", "overage": "hardLimit"}],
            "limits": {"quotas": [{"meter": "api_requests", "perDay": "100"},
                                   {"meter": "off", "perDay": "0"}]}
        }))
        .unwrap()
    }

    #[test]
    fn remaining_is_the_limit_minus_usage_until_the_quota_is_used_up() {
        let now = at("2026-11-23T12:00:00Z");
        let quota = plan().quota(&MeterName::new("api_requests").unwrap());
        let status = quota_status(&quota, dec!(40), dec!(700), now);
        let day = status.per_day.unwrap();
        assert_eq!(
            (day.remaining, day.over, day.exhausted),
            (dec!(60), dec!(0), false)
        );
        assert_eq!(day.resets_at, at("2026-11-24T00:00:00Z"));
        // The hard limit of 1000 included units becomes the monthly quota.
        let month = status.per_month.unwrap();
        assert_eq!((month.limit, month.remaining), (dec!(1000), dec!(300)));
        assert_eq!(month.resets_at, at("2026-12-01T00:00:00Z"));
    }

    #[test]
    fn usage_beyond_a_quota_is_reported_as_over_never_as_negative_remaining() {
        let day = Window::containing(Granularity::Day, at("2026-11-23T12:00:00Z"));
        let status = quota_use(dec!(100), dec!(100.5), day);
        assert_eq!(
            (status.remaining, status.over, status.exhausted),
            (dec!(0), dec!(0.5), true)
        );
    }

    #[test]
    fn a_zero_quota_is_exhausted_and_no_quota_has_no_status() {
        let now = at("2026-11-23T12:00:00Z");
        let plan = plan();
        let off = quota_status(
            &plan.quota(&MeterName::new("off").unwrap()),
            dec!(0),
            dec!(0),
            now,
        );
        assert!(off.per_day.unwrap().exhausted);
        assert_eq!(off.per_month, None);
        let none = quota_status(
            &plan.quota(&MeterName::new("other").unwrap()),
            dec!(5),
            dec!(5),
            now,
        );
        assert_eq!(none, QuotaStatus::default());
    }
}
