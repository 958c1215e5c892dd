//! Mergeable aggregate states: how a meter turns observations into a billable quantity.
//!
//! Every meter has an [`Aggregation`]. Observations fold into an [`AggregateState`], and
//! two states of the same kind [`merge`](AggregateState::merge) into one. Each state is a
//! **commutative monoid**: merge is associative and commutative, and
//! [`AggregateState::identity`] changes nothing when merged in.
//!
//! ## Why monoids
//!
//! Usage is aggregated in many places before it is billed: the edge filter folds
//! requests into per-flush states, ingest merges those batches into minute and hour
//! items, and rollups merge minutes into hours, hours into days and days into months.
//! Because merging is associative and commutative, *any* grouping and order of the same
//! observations gives the same state: how gateways happened to batch them, which Lambda
//! invocation applied which batch, whether a late event's minute was rolled up before or
//! after it arrived. A month computed from days equals the month computed from the raw
//! stream, so a rollup never needs the raw events replayed to be correct, and a store can
//! regroup freely. The identity lets a missing window count as "nothing happened".
//!
//! Merging is **not idempotent** for `count`, `sum`, `avg`, `gauge_integral` and
//! `percentiles` (merging a state twice counts it twice); exactly-once accounting comes
//! from deduplicating each delivery by its event or batch id before merging. Only
//! `min`, `max`, `latest` and `unique_count` would survive a duplicate merge unharmed.
//!
//! ## The aggregations
//!
//! | aggregation | state | observation | quantity |
//! |---|---|---|---|
//! | `count` | `n` | +1, value ignored | `n` |
//! | `sum` | `sum` | + number | `sum` |
//! | `min` / `max` | optional extreme | number | the extreme, `None` if empty |
//! | `latest` | time, event id, value | number | value at the latest time; ties go to the larger event id, then the larger value |
//! | `avg` | `sum`, `count` | number | `sum / count`, `None` if empty |
//! | `unique_count` | [`HyperLogLog`] | text, or a number's canonical string | estimate |
//! | `percentiles` | [`QuantileSketch`] | number | `None`; use [`QuantileSketch::quantile`] |
//! | `gauge_integral` | `value_seconds`, `samples` | number | `value_seconds / 3600` per hour, `/ (3600 · 730)` per month |
//!
//! `unique_count` hashes a number by its normalised decimal string, so `1`, `1.0` and
//! `1.00` are one item — and so is the text `"1"`.
//!
//! ### Gauge integrals
//!
//! A gauge (say storage in GB) is sampled every `sample_seconds`. **Each sample stands
//! for exactly `sample_seconds` at its value, and a missing sample contributes nothing.**
//! The integral is then a plain sum of `value × sample_seconds`, which is a monoid like
//! any sum. The tempting alternative — hold the last value until the next sample — is not
//! mergeable: the contribution of a sample depends on the *next* sample's time, which may
//! sit in another partition (another gateway's batch, the next hour), so two partial
//! integrals cannot be combined without the raw samples at their boundaries. Producers
//! that miss samples should therefore resend them rather than rely on interpolation.
//! 50 GB sampled each minute for an hour is 50 GB-hours; a month is billed as 730 hours
//! (8,760 / 12), so 730 hourly samples of 50 GB is 50 GB-months in every calendar month.
//!
//! ## Exactness and error bounds
//!
//! - `count`, `sum`, `min`, `max`, `latest`, `avg` and `gauge_integral` are exact
//!   `Decimal` arithmetic (28–29 significant digits). A result beyond the `Decimal` or
//!   `u64` range is an [`AggregateError::Overflow`], never a wrap or a silent clamp.
//!   Digits beyond the 28th of a sum are rounded by `rust_decimal`; within that,
//!   associativity is exact. The `avg` quantity is the one division, rounded to 28
//!   digits. `min`, `max` and `latest` store values normalised (`1.50` → `1.5`) so that
//!   equal values have one representation whatever the merge order.
//! - `unique_count`: HyperLogLog with 16,384 registers, standard error 0.81 % (three
//!   standard errors ≈ 2.4 %); exact or nearly so for small sets. See [`hll`].
//! - `percentiles`: relative error at most 1 % on every quantile, with exact min and max.
//!   See [`quantile`].
//!
//! Both sketches merge *exactly*: the merged sketch is identical to the sketch of the
//! union, so the error bounds hold for rollups as they do for a single window.
//!
//! ## Example
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use rust_decimal::Decimal;
//! use tollgate_core::aggregate::{
//!     AggregateState, Aggregation, IntegralPer, Observation, ObservedValue,
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let storage = Aggregation::GaugeIntegral { sample_seconds: 60, per: IntegralPer::Hour };
//! let start = Utc.with_ymd_and_hms(2025, 3, 1, 10, 0, 0).single().ok_or("time")?;
//!
//! // Two half-hour partitions, aggregated separately (by different gateways, say)...
//! let mut first = AggregateState::identity(&storage);
//! let mut second = AggregateState::identity(&storage);
//! for minute in 0..60 {
//!     let obs = Observation {
//!         time: start + chrono::Duration::minutes(minute),
//!         event_id: "sample",
//!         value: ObservedValue::Number(Decimal::from(50)),
//!     };
//!     let part = if minute < 30 { &mut first } else { &mut second };
//!     part.observe(&storage, &obs)?;
//! }
//!
//! // ...merge into the hour: 50 GB for an hour is 50 GB-hours.
//! let hour = first.merged(&second)?;
//! assert_eq!(hour.quantity(&storage), Some(Decimal::from(50)));
//! # Ok(())
//! # }
//! ```

mod error;
pub mod hll;
pub mod quantile;
mod state;

#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

pub use error::AggregateError;
pub use hll::HyperLogLog;
pub use quantile::{Percentiles, QuantileSketch};
pub use state::{AggregateState, LatestValue};

/// Hours in a billing month for gauge integrals: 8,760 hours a year / 12.
pub const HOURS_PER_MONTH: u32 = 730;

/// How a meter combines observations.
///
/// Serialised internally tagged with snake_case kinds and, like the rest of the
/// configuration, camelCase fields: `{"kind":"sum"}`,
/// `{"kind":"gauge_integral","sampleSeconds":60,"per":"hour"}` (`sample_seconds` is
/// accepted too). Unknown fields are rejected, including on the variants without
/// parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "snake_case",
    rename_all_fields = "camelCase",
    try_from = "AggregationRepr"
)]
pub enum Aggregation {
    /// The number of observations.
    Count,
    /// The sum of numeric values.
    Sum,
    /// The smallest numeric value.
    Min,
    /// The largest numeric value.
    Max,
    /// The value of the latest observation by event time.
    Latest,
    /// The arithmetic mean of numeric values.
    Avg,
    /// The approximate number of distinct values (HyperLogLog).
    UniqueCount,
    /// A quantile sketch of numeric values.
    Percentiles,
    /// Time-weighted integral of a sampled gauge (e.g. storage GB sampled every minute →
    /// GB-hours). Each sample counts for `sample_seconds`, which must be at least 1:
    /// parsing accepts 0 so that meter validation can report it with the other problems
    /// of a configuration, and observing with 0 is an
    /// [`AggregateError::InvalidAggregation`].
    GaugeIntegral {
        sample_seconds: u32,
        per: IntegralPer,
    },
}

/// The time unit a gauge integral is reported in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntegralPer {
    /// Value-hours (e.g. GB-hours).
    Hour,
    /// Value-months, a month being [`HOURS_PER_MONTH`] = 730 hours (e.g. GB-months).
    Month,
}

impl IntegralPer {
    /// Seconds in one unit: 3,600 or 2,628,000.
    pub fn seconds(self) -> u32 {
        match self {
            IntegralPer::Hour => 3_600,
            IntegralPer::Month => 3_600 * HOURS_PER_MONTH,
        }
    }
}

impl Aggregation {
    /// The serde tag: `"count"`, `"sum"`, …, `"gauge_integral"`; equal to the kind of
    /// the states it produces.
    pub fn kind(&self) -> &'static str {
        match self {
            Aggregation::Count => "count",
            Aggregation::Sum => "sum",
            Aggregation::Min => "min",
            Aggregation::Max => "max",
            Aggregation::Latest => "latest",
            Aggregation::Avg => "avg",
            Aggregation::UniqueCount => "unique_count",
            Aggregation::Percentiles => "percentiles",
            Aggregation::GaugeIntegral { .. } => "gauge_integral",
        }
    }

    /// True when `state` is of the kind this aggregation produces.
    pub fn matches(&self, state: &AggregateState) -> bool {
        self.kind() == state.kind()
    }
}

/// What an aggregation deserialises from: one flat object, validated by `TryFrom`
/// (serde's internally tagged unit variants would silently accept unknown fields).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AggregationRepr {
    kind: AggregationKind,
    #[serde(default, alias = "sample_seconds")]
    sample_seconds: Option<u32>,
    #[serde(default)]
    per: Option<IntegralPer>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum AggregationKind {
    Count,
    Sum,
    Min,
    Max,
    Latest,
    Avg,
    UniqueCount,
    Percentiles,
    GaugeIntegral,
}

impl TryFrom<AggregationRepr> for Aggregation {
    type Error = AggregateError;

    fn try_from(repr: AggregationRepr) -> Result<Self, Self::Error> {
        let plain = match repr.kind {
            AggregationKind::Count => Aggregation::Count,
            AggregationKind::Sum => Aggregation::Sum,
            AggregationKind::Min => Aggregation::Min,
            AggregationKind::Max => Aggregation::Max,
            AggregationKind::Latest => Aggregation::Latest,
            AggregationKind::Avg => Aggregation::Avg,
            AggregationKind::UniqueCount => Aggregation::UniqueCount,
            AggregationKind::Percentiles => Aggregation::Percentiles,
            AggregationKind::GaugeIntegral => {
                return match (repr.sample_seconds, repr.per) {
                    (Some(sample_seconds), Some(per)) => Ok(Aggregation::GaugeIntegral {
                        sample_seconds,
                        per,
                    }),
                    _ => Err(AggregateError::InvalidAggregation {
                        reason: "gauge_integral needs sampleSeconds and per",
                    }),
                };
            }
        };
        if repr.sample_seconds.is_some() || repr.per.is_some() {
            return Err(AggregateError::InvalidAggregation {
                reason: "sampleSeconds and per belong to gauge_integral only",
            });
        }
        Ok(plain)
    }
}

/// The value an observation carries, as a meter read it from the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObservedValue<'a> {
    /// No value (enough for `count`).
    None,
    /// A number.
    Number(Decimal),
    /// A text value (for `unique_count`).
    Text(&'a str),
}

/// One observation of a meter: when it happened, which event it came from, its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation<'a> {
    /// Event time (not arrival time).
    pub time: DateTime<Utc>,
    /// The event's id; breaks `latest` ties.
    pub event_id: &'a str,
    /// The value read from the event.
    pub value: ObservedValue<'a>,
}
