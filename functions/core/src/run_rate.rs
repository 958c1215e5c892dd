//! Run-rate projections: where a meter's period is heading at the pace so far.
//!
//! The rule is the budget forecast's (see [`crate::budget::forecast`]), applied to usage:
//! a *cumulative* quantity (`count`, `sum`, `gauge_integral`: it only grows as time
//! passes) is extrapolated linearly, `quantity / elapsed × period length`; any other
//! aggregation (`min`, `max`, `latest`, `avg`, `unique_count`, `percentiles`) describes a
//! level rather than an accumulation, so its projection is the value so far. Elapsed time
//! counts at least one second and at most the whole period, so a projection made before
//! the period starts or after it ends is well defined.
//!
//! Projections are estimates, not money: they are rounded half-even to
//! [`PROJECTION_DECIMALS`] places so they read well, and priced like any other quantity.
//!
//! ```
//! use chrono::{DateTime, Utc};
//! use rust_decimal::Decimal;
//! use tollgate_core::aggregate::Aggregation;
//! use tollgate_core::run_rate::project;
//! use tollgate_core::window::{Granularity, Window};
//!
//! let now: DateTime<Utc> = "2026-11-11T00:00:00Z".parse()?; // 10 of 30 days elapsed
//! let month = Window::containing(Granularity::Month, now);
//! assert_eq!(project(Decimal::from(100), &Aggregation::Sum, month, now), Decimal::from(300));
//! assert_eq!(project(Decimal::from(7), &Aggregation::Max, month, now), Decimal::from(7));
//! # Ok::<(), chrono::ParseError>(())
//! ```

use chrono::{DateTime, Utc};
use rust_decimal::{Decimal, RoundingStrategy};

use crate::aggregate::Aggregation;
use crate::window::Window;

/// Decimal places a projected quantity is rounded to.
pub const PROJECTION_DECIMALS: u32 = 6;

/// Whether the aggregation's quantity accumulates over time (and so extrapolates).
pub fn is_cumulative(aggregation: &Aggregation) -> bool {
    matches!(
        aggregation,
        Aggregation::Count | Aggregation::Sum | Aggregation::GaugeIntegral { .. }
    )
}

/// The share of `period` elapsed at `now`, from 0 to 1, truncated to four places.
pub fn elapsed_fraction(period: Window, now: DateTime<Utc>) -> Decimal {
    let total = period.duration().num_seconds().max(1);
    let elapsed = (now - period.start()).num_seconds().clamp(0, total);
    (Decimal::from(elapsed) / Decimal::from(total))
        .round_dp_with_strategy(4, RoundingStrategy::ToZero)
        .normalize()
}

/// The quantity `period` ends with if usage continues at its pace so far.
///
/// Saturates at `Decimal::MAX` instead of overflowing.
pub fn project(
    quantity: Decimal,
    aggregation: &Aggregation,
    period: Window,
    now: DateTime<Utc>,
) -> Decimal {
    project_to(quantity, aggregation, period, now, period.end())
}

/// The quantity at instant `at` of `period` (clamped to it) if usage continues at its
/// pace so far; a level (not cumulative) stays what it is.
pub fn project_to(
    quantity: Decimal,
    aggregation: &Aggregation,
    period: Window,
    now: DateTime<Utc>,
    at: DateTime<Utc>,
) -> Decimal {
    if !is_cumulative(aggregation) {
        return quantity;
    }
    let period_seconds = period.duration().num_seconds().max(1);
    let elapsed = Decimal::from(
        (now - period.start())
            .num_seconds()
            .clamp(1, period_seconds),
    );
    let total = Decimal::from((at - period.start()).num_seconds().clamp(0, period_seconds));
    quantity
        .checked_mul(total)
        .and_then(|q| q.checked_div(elapsed))
        .or_else(|| {
            quantity
                .checked_div(elapsed)
                .and_then(|r| r.checked_mul(total))
        })
        .unwrap_or(Decimal::MAX)
        .round_dp_with_strategy(PROJECTION_DECIMALS, RoundingStrategy::MidpointNearestEven)
        .normalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::IntegralPer;
    use crate::window::Granularity;
    use rust_decimal_macros::dec;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn cumulative_quantities_extrapolate_and_levels_hold() {
        let now = at("2026-02-08T00:00:00Z"); // 7 of 28 days
        let month = Window::containing(Granularity::Month, now);
        let gauge = Aggregation::GaugeIntegral {
            sample_seconds: 60,
            per: IntegralPer::Hour,
        };
        for (aggregation, expected) in [
            (Aggregation::Count, dec!(40)),
            (Aggregation::Sum, dec!(40)),
            (gauge, dec!(40)),
            (Aggregation::Avg, dec!(10)),
            (Aggregation::UniqueCount, dec!(10)),
            (Aggregation::Latest, dec!(10)),
        ] {
            assert_eq!(project(dec!(10), &aggregation, month, now), expected);
        }
        assert_eq!(elapsed_fraction(month, now), dec!(0.25));
    }

    #[test]
    fn before_the_period_one_second_counts_and_after_it_the_quantity_stands() {
        let month = Window::containing(Granularity::Month, at("2026-11-01T00:00:00Z"));
        let seconds = Decimal::from(month.duration().num_seconds());
        assert_eq!(
            project(dec!(1), &Aggregation::Sum, month, month.start()),
            seconds
        );
        assert_eq!(
            project(
                dec!(5),
                &Aggregation::Sum,
                month,
                at("2027-01-01T00:00:00Z")
            ),
            dec!(5)
        );
        assert_eq!(elapsed_fraction(month, at("2027-01-01T00:00:00Z")), dec!(1));
    }

    #[test]
    fn projections_are_rounded_to_six_places_and_never_overflow() {
        let now = at("2026-11-04T00:00:00Z"); // 3 of 30 days
        let month = Window::containing(Granularity::Month, now);
        assert_eq!(
            project(dec!(0.0000001), &Aggregation::Sum, month, now),
            dec!(0.000001)
        );
        assert_eq!(
            project(Decimal::MAX, &Aggregation::Sum, month, now),
            Decimal::MAX
        );
    }
}
