//! UTC time buckets: minute, hour, day and month.
//!
//! Usage is aggregated into the bucket its event *happened* in (event time, not arrival
//! time), so a late event lands in its own window. Months have their calendar length;
//! leap years come from `chrono`'s proleptic Gregorian calendar.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The size of a time bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Minute,
    Hour,
    Day,
    Month,
}

impl Granularity {
    /// The next coarser granularity, which this one rolls up into.
    pub fn coarser(self) -> Option<Granularity> {
        match self {
            Granularity::Minute => Some(Granularity::Hour),
            Granularity::Hour => Some(Granularity::Day),
            Granularity::Day => Some(Granularity::Month),
            Granularity::Month => None,
        }
    }
}

/// A bucket `[start, end)` of one granularity. Ordered by start, then granularity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Window {
    start: DateTime<Utc>,
    granularity: Granularity,
}

/// A window key that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{key:?} is not a {granularity:?} window key (expected {expected})")]
pub struct WindowKeyError {
    pub key: String,
    pub granularity: Granularity,
    pub expected: &'static str,
}

impl Window {
    /// The bucket of `granularity` that contains `t`.
    pub fn containing(granularity: Granularity, t: DateTime<Utc>) -> Window {
        let date = t.date_naive();
        let start = match granularity {
            Granularity::Minute => date.and_hms_opt(t.hour(), t.minute(), 0),
            Granularity::Hour => date.and_hms_opt(t.hour(), 0, 0),
            Granularity::Day => date.and_hms_opt(0, 0, 0),
            Granularity::Month => date.with_day(1).and_then(|d| d.and_hms_opt(0, 0, 0)),
        }
        .map(|naive| Utc.from_utc_datetime(&naive))
        // Truncating a valid instant always yields a valid instant; keep `t` rather than panic.
        .unwrap_or(t);
        Window { start, granularity }
    }

    pub fn granularity(&self) -> Granularity {
        self.granularity
    }

    /// Inclusive start.
    pub fn start(&self) -> DateTime<Utc> {
        self.start
    }

    /// Exclusive end: the start of the next window.
    pub fn end(&self) -> DateTime<Utc> {
        match self.granularity {
            Granularity::Minute => self.start + Duration::minutes(1),
            Granularity::Hour => self.start + Duration::hours(1),
            Granularity::Day => self.start + Duration::days(1),
            Granularity::Month => self.start + Duration::days(i64::from(self.days_in_month())),
        }
    }

    /// Length of the window.
    pub fn duration(&self) -> Duration {
        self.end() - self.start
    }

    /// The window right after this one.
    pub fn next(&self) -> Window {
        Window::containing(self.granularity, self.end())
    }

    /// The window right before this one.
    pub fn previous(&self) -> Window {
        Window::containing(self.granularity, self.start - Duration::seconds(1))
    }

    /// Whether `t` falls inside `[start, end)`.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && t < self.end()
    }

    /// The coarser window this one rolls up into (hour → day → month).
    pub fn parent(&self) -> Option<Window> {
        self.granularity
            .coarser()
            .map(|g| Window::containing(g, self.start))
    }

    /// The calendar length of the month that contains the window's start: 28 to 31.
    pub fn days_in_month(&self) -> u32 {
        days_in_month(self.start.year(), self.start.month())
    }

    /// A sortable text key: `2026-02-03T04:05`, `2026-02-03T04`, `2026-02-03` or `2026-02`.
    /// Keys of one granularity sort in time order, which storage range queries rely on.
    pub fn key(&self) -> String {
        let s = self.start;
        match self.granularity {
            Granularity::Minute => format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}",
                s.year(),
                s.month(),
                s.day(),
                s.hour(),
                s.minute()
            ),
            Granularity::Hour => format!(
                "{:04}-{:02}-{:02}T{:02}",
                s.year(),
                s.month(),
                s.day(),
                s.hour()
            ),
            Granularity::Day => format!("{:04}-{:02}-{:02}", s.year(), s.month(), s.day()),
            Granularity::Month => format!("{:04}-{:02}", s.year(), s.month()),
        }
    }

    /// Parses a key made by [`Window::key`].
    pub fn parse_key(granularity: Granularity, key: &str) -> Result<Window, WindowKeyError> {
        let (format, expected) = match granularity {
            Granularity::Minute => ("%Y-%m-%dT%H:%M", "YYYY-MM-DDTHH:MM"),
            Granularity::Hour => ("%Y-%m-%dT%H", "YYYY-MM-DDTHH"),
            Granularity::Day => ("%Y-%m-%d", "YYYY-MM-DD"),
            Granularity::Month => ("%Y-%m", "YYYY-MM"),
        };
        let error = || WindowKeyError {
            key: key.to_owned(),
            granularity,
            expected,
        };
        let start = match granularity {
            Granularity::Minute => {
                chrono::NaiveDateTime::parse_from_str(key, format).map_err(|_| error())?
            }
            Granularity::Hour => {
                chrono::NaiveDateTime::parse_from_str(&format!("{key}:00"), "%Y-%m-%dT%H:%M")
                    .map_err(|_| error())?
            }
            Granularity::Day => NaiveDate::parse_from_str(key, format)
                .map_err(|_| error())?
                .and_hms_opt(0, 0, 0)
                .ok_or_else(error)?,
            Granularity::Month => NaiveDate::parse_from_str(&format!("{key}-01"), "%Y-%m-%d")
                .map_err(|_| error())?
                .and_hms_opt(0, 0, 0)
                .ok_or_else(error)?,
        };
        let window = Window::containing(granularity, Utc.from_utc_datetime(&start));
        if window.key() != key {
            return Err(error());
        }
        Ok(window)
    }

    /// Every window of `granularity` that overlaps `[from, to)`, in time order.
    pub fn range(
        granularity: Granularity,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> impl Iterator<Item = Window> {
        let first = Window::containing(granularity, from);
        std::iter::successors(Some(first), |w| Some(w.next())).take_while(move |w| w.start < to)
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

impl FromStr for Granularity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "minute" => Ok(Granularity::Minute),
            "hour" => Ok(Granularity::Hour),
            "day" => Ok(Granularity::Day),
            "month" => Ok(Granularity::Month),
            other => Err(format!(
                "unknown granularity {other:?}; expected minute, hour, day or month"
            )),
        }
    }
}

/// Days in `month` (1–12) of `year`, leap years included.
pub fn days_in_month(year: i32, month: u32) -> u32 {
    let (next_year, next_month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    match (
        NaiveDate::from_ymd_opt(year, month, 1),
        NaiveDate::from_ymd_opt(next_year, next_month, 1),
    ) {
        (Some(this), Some(next)) => u32::try_from((next - this).num_days()).unwrap_or(30),
        _ => 30,
    }
}

/// Which event times are accepted relative to "now".
///
/// Events older than `late_horizon` would reopen windows that have already been billed, and
/// events further in the future than `future_skew` come from a broken clock: both are
/// rejected with a reason, never clamped into another window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTimePolicy {
    pub late_horizon: Duration,
    pub future_skew: Duration,
}

impl Default for EventTimePolicy {
    /// Seven days late, five minutes early (the same skew Stripe tolerates).
    fn default() -> Self {
        EventTimePolicy {
            late_horizon: Duration::days(7),
            future_skew: Duration::minutes(5),
        }
    }
}

/// Why an event time falls outside the [`EventTimePolicy`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EventTimeError {
    #[error(
        "event time {time} is {ahead_secs} s in the future; at most {allowed_secs} s of clock skew is tolerated"
    )]
    TooFarInFuture {
        time: DateTime<Utc>,
        ahead_secs: i64,
        allowed_secs: i64,
    },
    #[error("event time {time} is older than the late-event horizon of {horizon_secs} s")]
    BeyondLateHorizon {
        time: DateTime<Utc>,
        horizon_secs: i64,
    },
}

impl EventTimePolicy {
    /// Accepts `time` if it lies within `[now - late_horizon, now + future_skew]`.
    pub fn check(&self, time: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), EventTimeError> {
        if time > now + self.future_skew {
            return Err(EventTimeError::TooFarInFuture {
                time,
                ahead_secs: (time - now).num_seconds(),
                allowed_secs: self.future_skew.num_seconds(),
            });
        }
        if time < now - self.late_horizon {
            return Err(EventTimeError::BeyondLateHorizon {
                time,
                horizon_secs: self.late_horizon.num_seconds(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn month_lengths_follow_the_calendar() {
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(2025, 2), 28);
        assert_eq!(days_in_month(2000, 2), 29);
        assert_eq!(days_in_month(1900, 2), 28);
        assert_eq!(days_in_month(2026, 4), 30);
        assert_eq!(days_in_month(2026, 12), 31);
    }

    #[test]
    fn month_window_of_a_leap_february_ends_on_march_first() {
        let w = Window::containing(Granularity::Month, at("2024-02-29T23:59:59Z"));
        assert_eq!(w.start(), at("2024-02-01T00:00:00Z"));
        assert_eq!(w.end(), at("2024-03-01T00:00:00Z"));
        assert_eq!(w.key(), "2024-02");
    }

    #[test]
    fn december_rolls_into_the_next_year() {
        let w = Window::containing(Granularity::Month, at("2026-12-31T23:00:00Z"));
        assert_eq!(w.next().key(), "2027-01");
        assert_eq!(w.next().previous(), w);
        let hour = Window::containing(Granularity::Hour, at("2027-01-01T00:10:00Z"));
        assert_eq!(hour.previous().key(), "2026-12-31T23");
    }

    #[test]
    fn keys_round_trip_and_reject_garbage() {
        for (g, key) in [
            (Granularity::Minute, "2026-11-23T15:04"),
            (Granularity::Hour, "2026-11-23T15"),
            (Granularity::Day, "2026-11-23"),
            (Granularity::Month, "2026-11"),
        ] {
            assert_eq!(Window::parse_key(g, key).unwrap().key(), key);
        }
        assert!(Window::parse_key(Granularity::Hour, "2026-11-23T25").is_err());
        assert!(Window::parse_key(Granularity::Day, "2026-02-30").is_err());
        assert!(Window::parse_key(Granularity::Month, "2026-1").is_err());
    }

    #[test]
    fn hours_of_a_day_roll_up_into_that_day_and_month() {
        let h = Window::containing(Granularity::Hour, at("2026-03-31T23:30:00Z"));
        let d = h.parent().unwrap();
        assert_eq!(d.key(), "2026-03-31");
        assert_eq!(d.parent().unwrap().key(), "2026-03");
        assert_eq!(
            Window::range(Granularity::Hour, d.start(), d.end()).count(),
            24
        );
    }

    #[test]
    fn time_policy_rejects_future_and_too_late_events() {
        let now = at("2026-11-23T12:00:00Z");
        let policy = EventTimePolicy::default();
        assert!(policy.check(at("2026-11-23T12:04:59Z"), now).is_ok());
        assert!(matches!(
            policy.check(at("2026-11-23T12:06:00Z"), now),
            Err(EventTimeError::TooFarInFuture { .. })
        ));
        assert!(policy.check(at("2026-11-16T12:00:00Z"), now).is_ok());
        assert!(matches!(
            policy.check(at("2026-11-16T11:59:59Z"), now),
            Err(EventTimeError::BeyondLateHorizon { .. })
        ));
    }

    proptest! {
        #[test]
        fn every_instant_lies_in_exactly_its_window(secs in 0i64..4_102_444_800) {
            let t = DateTime::from_timestamp(secs, 0).unwrap();
            for g in [Granularity::Minute, Granularity::Hour, Granularity::Day, Granularity::Month] {
                let w = Window::containing(g, t);
                prop_assert!(w.contains(t));
                prop_assert!(!w.next().contains(t));
                prop_assert_eq!(Window::parse_key(g, &w.key()).unwrap(), w);
                if let Some(p) = w.parent() {
                    prop_assert!(p.start() <= w.start() && w.end() <= p.end());
                }
            }
        }
    }
}
