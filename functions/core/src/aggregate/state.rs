//! [`AggregateState`]: the state of one meter in one window, and its monoid operations.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};

use super::{AggregateError, Aggregation, HyperLogLog, Observation, ObservedValue, QuantileSketch};

/// Every kind tag, in declaration order.
const KINDS: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "latest",
    "avg",
    "unique_count",
    "percentiles",
    "gauge_integral",
];

/// The additive parts of each additive kind, by stable name (equal to the serde field
/// names).
const COUNT_PARTS: &[&str] = &["n"];
const SUM_PARTS: &[&str] = &["sum"];
const AVG_PARTS: &[&str] = &["sum", "count"];
const GAUGE_PARTS: &[&str] = &["value_seconds", "samples"];

/// The observation a `latest` state holds. Ordered by time, then event id, then value:
/// the greater one wins a merge, which makes `latest` a semilattice (and so a
/// commutative monoid with "nothing" as identity).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatestValue {
    pub time: DateTime<Utc>,
    pub event_id: String,
    pub value: Decimal,
}

impl LatestValue {
    /// True when `self` replaces `other` as the latest: later time, or the same time
    /// and a larger event id, or both equal and a larger value (so that the winner never
    /// depends on merge order).
    pub fn beats(&self, other: &LatestValue) -> bool {
        (self.time, &self.event_id, self.value) > (other.time, &other.event_id, other.value)
    }
}

/// A mergeable aggregate state: a commutative monoid with identity.
///
/// Serialised internally tagged by `"kind"`, e.g. `{"kind":"avg","sum":"12.5","count":3}`
/// (decimals as strings); sketches carry their registers or buckets as base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AggregateState {
    Count {
        n: u64,
    },
    Sum {
        sum: Decimal,
    },
    Min {
        min: Option<Decimal>,
    },
    Max {
        max: Option<Decimal>,
    },
    Latest {
        latest: Option<LatestValue>,
    },
    Avg {
        sum: Decimal,
        count: u64,
    },
    UniqueCount(HyperLogLog),
    Percentiles(QuantileSketch),
    /// `value_seconds` = Σ value × sample_seconds; `samples` = number of samples.
    GaugeIntegral {
        value_seconds: Decimal,
        samples: u64,
    },
}

impl AggregateState {
    /// The empty state of `aggregation`: merging it into any state changes nothing.
    pub fn identity(aggregation: &Aggregation) -> Self {
        match aggregation {
            Aggregation::Count => AggregateState::Count { n: 0 },
            Aggregation::Sum => AggregateState::Sum { sum: Decimal::ZERO },
            Aggregation::Min => AggregateState::Min { min: None },
            Aggregation::Max => AggregateState::Max { max: None },
            Aggregation::Latest => AggregateState::Latest { latest: None },
            Aggregation::Avg => AggregateState::Avg {
                sum: Decimal::ZERO,
                count: 0,
            },
            Aggregation::UniqueCount => AggregateState::UniqueCount(HyperLogLog::new()),
            Aggregation::Percentiles => AggregateState::Percentiles(QuantileSketch::new()),
            Aggregation::GaugeIntegral { .. } => AggregateState::GaugeIntegral {
                value_seconds: Decimal::ZERO,
                samples: 0,
            },
        }
    }

    /// Folds one observation in. `count` ignores the value; `unique_count` needs a text
    /// or a number; every other aggregation needs a number. On error `self` is unchanged.
    pub fn observe(
        &mut self,
        aggregation: &Aggregation,
        obs: &Observation<'_>,
    ) -> Result<(), AggregateError> {
        if !aggregation.matches(self) {
            return Err(AggregateError::KindMismatch {
                expected: aggregation.kind(),
                found: self.kind(),
            });
        }
        let number = || match obs.value {
            ObservedValue::Number(value) => Ok(value),
            ObservedValue::None | ObservedValue::Text(_) => Err(AggregateError::NeedsNumber {
                aggregation: aggregation.kind(),
            }),
        };
        match self {
            AggregateState::Count { n } => *n = checked_add_u64(*n, 1)?,
            AggregateState::Sum { sum } => *sum = checked_add_dec(*sum, number()?)?,
            AggregateState::Min { min } => {
                let value = number()?.normalize();
                *min = Some(min.map_or(value, |m| m.min(value)));
            }
            AggregateState::Max { max } => {
                let value = number()?.normalize();
                *max = Some(max.map_or(value, |m| m.max(value)));
            }
            AggregateState::Latest { latest } => {
                let candidate = LatestValue {
                    time: obs.time,
                    event_id: obs.event_id.to_owned(),
                    value: number()?.normalize(),
                };
                if latest
                    .as_ref()
                    .is_none_or(|current| candidate.beats(current))
                {
                    *latest = Some(candidate);
                }
            }
            AggregateState::Avg { sum, count } => {
                let new_sum = checked_add_dec(*sum, number()?)?;
                let new_count = checked_add_u64(*count, 1)?;
                *sum = new_sum;
                *count = new_count;
            }
            AggregateState::UniqueCount(hll) => match obs.value {
                ObservedValue::Text(text) => hll.insert(text.as_bytes()),
                ObservedValue::Number(value) => {
                    hll.insert(value.normalize().to_string().as_bytes());
                }
                ObservedValue::None => return Err(AggregateError::NeedsValue),
            },
            AggregateState::Percentiles(sketch) => sketch.insert(number()?)?,
            AggregateState::GaugeIntegral {
                value_seconds,
                samples,
            } => {
                let Aggregation::GaugeIntegral { sample_seconds, .. } = aggregation else {
                    return Err(AggregateError::KindMismatch {
                        expected: aggregation.kind(),
                        found: "gauge_integral",
                    });
                };
                if *sample_seconds == 0 {
                    return Err(AggregateError::InvalidAggregation {
                        reason: "gauge_integral sample_seconds must be at least 1",
                    });
                }
                let contribution = number()?
                    .checked_mul(Decimal::from(*sample_seconds))
                    .ok_or(AggregateError::Overflow)?;
                let new_value_seconds = checked_add_dec(*value_seconds, contribution)?;
                let new_samples = checked_add_u64(*samples, 1)?;
                *value_seconds = new_value_seconds;
                *samples = new_samples;
            }
        }
        Ok(())
    }

    /// Merges `other` into `self`. States of different kinds are a
    /// [`AggregateError::KindMismatch`]; on any error `self` is unchanged.
    pub fn merge(&mut self, other: &AggregateState) -> Result<(), AggregateError> {
        match (&mut *self, other) {
            (AggregateState::Count { n }, AggregateState::Count { n: theirs }) => {
                *n = checked_add_u64(*n, *theirs)?;
            }
            (AggregateState::Sum { sum }, AggregateState::Sum { sum: theirs }) => {
                *sum = checked_add_dec(*sum, *theirs)?;
            }
            (AggregateState::Min { min }, AggregateState::Min { min: theirs }) => {
                *min = merge_extreme(*min, *theirs, Decimal::min);
            }
            (AggregateState::Max { max }, AggregateState::Max { max: theirs }) => {
                *max = merge_extreme(*max, *theirs, Decimal::max);
            }
            (
                AggregateState::Latest { latest },
                AggregateState::Latest {
                    latest: Some(theirs),
                },
            ) => {
                if latest.as_ref().is_none_or(|current| theirs.beats(current)) {
                    *latest = Some(LatestValue {
                        value: theirs.value.normalize(),
                        ..theirs.clone()
                    });
                }
            }
            (AggregateState::Latest { .. }, AggregateState::Latest { latest: None }) => {}
            (
                AggregateState::Avg { sum, count },
                AggregateState::Avg {
                    sum: their_sum,
                    count: their_count,
                },
            ) => {
                let new_sum = checked_add_dec(*sum, *their_sum)?;
                let new_count = checked_add_u64(*count, *their_count)?;
                *sum = new_sum;
                *count = new_count;
            }
            (AggregateState::UniqueCount(ours), AggregateState::UniqueCount(theirs)) => {
                ours.merge(theirs)?;
            }
            (AggregateState::Percentiles(ours), AggregateState::Percentiles(theirs)) => {
                ours.merge(theirs)?;
            }
            (
                AggregateState::GaugeIntegral {
                    value_seconds,
                    samples,
                },
                AggregateState::GaugeIntegral {
                    value_seconds: their_value_seconds,
                    samples: their_samples,
                },
            ) => {
                let new_value_seconds = checked_add_dec(*value_seconds, *their_value_seconds)?;
                let new_samples = checked_add_u64(*samples, *their_samples)?;
                *value_seconds = new_value_seconds;
                *samples = new_samples;
            }
            (ours, theirs) => {
                return Err(AggregateError::KindMismatch {
                    expected: ours.kind(),
                    found: theirs.kind(),
                });
            }
        }
        Ok(())
    }

    /// [`merge`](Self::merge) by value, for folds.
    pub fn merged(mut self, other: &AggregateState) -> Result<Self, AggregateError> {
        self.merge(other)?;
        Ok(self)
    }

    /// True when the state holds nothing: merging it into another state is a no-op.
    /// (A sum of `+5` and `-5` is zero and so counts as identity.)
    pub fn is_identity(&self) -> bool {
        match self {
            AggregateState::Count { n } => *n == 0,
            AggregateState::Sum { sum } => sum.is_zero(),
            AggregateState::Min { min } => min.is_none(),
            AggregateState::Max { max } => max.is_none(),
            AggregateState::Latest { latest } => latest.is_none(),
            AggregateState::Avg { sum, count } => sum.is_zero() && *count == 0,
            AggregateState::UniqueCount(hll) => hll.is_empty(),
            AggregateState::Percentiles(sketch) => sketch.is_empty(),
            AggregateState::GaugeIntegral {
                value_seconds,
                samples,
            } => value_seconds.is_zero() && *samples == 0,
        }
    }

    /// True for states whose merge is plain addition of numbers (count, sum, avg, gauge
    /// integral), so a store can apply them with an atomic ADD instead of
    /// read-modify-write.
    pub fn is_additive(&self) -> bool {
        matches!(
            self,
            AggregateState::Count { .. }
                | AggregateState::Sum { .. }
                | AggregateState::Avg { .. }
                | AggregateState::GaugeIntegral { .. }
        )
    }

    /// The additive components as `(name, value)`: count → `n`; sum → `sum`; avg →
    /// `sum`, `count`; gauge integral → `value_seconds`, `samples`. The names are stable
    /// (they are the serde field names). `None` for non-additive states.
    pub fn additive_parts(&self) -> Option<Vec<(&'static str, Decimal)>> {
        let values = match self {
            AggregateState::Count { n } => vec![Decimal::from(*n)],
            AggregateState::Sum { sum } => vec![*sum],
            AggregateState::Avg { sum, count } => vec![*sum, Decimal::from(*count)],
            AggregateState::GaugeIntegral {
                value_seconds,
                samples,
            } => vec![*value_seconds, Decimal::from(*samples)],
            _ => return None,
        };
        let names = additive_names(self.kind())?;
        Some(names.iter().copied().zip(values).collect())
    }

    /// Rebuilds an additive state of `aggregation` from its parts (the inverse of
    /// [`additive_parts`](Self::additive_parts)). A missing part is zero, as an attribute
    /// never touched by an atomic ADD would be; unknown or repeated parts, and counts
    /// that are not non-negative integers, are errors.
    pub fn from_additive_parts(
        aggregation: &Aggregation,
        parts: &[(&str, Decimal)],
    ) -> Result<Self, AggregateError> {
        Self::from_additive_parts_of_kind(aggregation.kind(), parts)
    }

    /// [`from_additive_parts`](Self::from_additive_parts) for a stored kind tag
    /// (`"count"`, `"sum"`, `"avg"`, `"gauge_integral"`), for a store that keeps the kind
    /// next to the parts rather than the meter's aggregation.
    pub fn from_additive_parts_of_kind(
        kind: &str,
        parts: &[(&str, Decimal)],
    ) -> Result<Self, AggregateError> {
        let Some(kind) = KINDS.iter().copied().find(|known| *known == kind) else {
            return Err(AggregateError::UnknownKind {
                kind: kind.to_owned(),
            });
        };
        let names =
            additive_names(kind).ok_or(AggregateError::NotAdditive { aggregation: kind })?;
        let invalid = |part: &str, reason: &'static str| AggregateError::InvalidPart {
            part: part.to_owned(),
            reason,
        };
        let mut values: Vec<Option<Decimal>> = vec![None; names.len()];
        for &(name, value) in parts {
            let slot = names
                .iter()
                .position(|known| *known == name)
                .and_then(|at| values.get_mut(at))
                .ok_or_else(|| invalid(name, "unknown part"))?;
            if slot.is_some() {
                return Err(invalid(name, "repeated part"));
            }
            *slot = Some(value);
        }
        let decimal = |at: usize| values.get(at).copied().flatten().unwrap_or(Decimal::ZERO);
        let whole = |at: usize| {
            let value = decimal(at);
            let name = names.get(at).copied().unwrap_or_default();
            if !value.fract().is_zero() {
                return Err(invalid(name, "not an integer"));
            }
            value
                .to_u64()
                .ok_or_else(|| invalid(name, "not a non-negative 64-bit integer"))
        };
        match kind {
            "count" => Ok(AggregateState::Count { n: whole(0)? }),
            "sum" => Ok(AggregateState::Sum { sum: decimal(0) }),
            "avg" => Ok(AggregateState::Avg {
                sum: decimal(0),
                count: whole(1)?,
            }),
            "gauge_integral" => Ok(AggregateState::GaugeIntegral {
                value_seconds: decimal(0),
                samples: whole(1)?,
            }),
            _ => Err(AggregateError::NotAdditive { aggregation: kind }),
        }
    }

    /// The reportable (billable) quantity under `aggregation`: count → `n`; sum; min;
    /// max; latest value; avg → `sum / count`; unique → estimate; gauge →
    /// `value_seconds / 3600` (hour) or `/ (3600 · 730)` (month). `None` for empty
    /// min/max/latest/avg, for percentiles (use [`QuantileSketch::quantile`]) and when
    /// `aggregation` does not match the state.
    pub fn quantity(&self, aggregation: &Aggregation) -> Option<Decimal> {
        if !aggregation.matches(self) {
            return None;
        }
        match self {
            AggregateState::Count { n } => Some(Decimal::from(*n)),
            AggregateState::Sum { sum } => Some(*sum),
            AggregateState::Min { min } => *min,
            AggregateState::Max { max } => *max,
            AggregateState::Latest { latest } => latest.as_ref().map(|l| l.value),
            AggregateState::Avg { sum, count } => {
                if *count == 0 {
                    None
                } else {
                    sum.checked_div(Decimal::from(*count))
                }
            }
            AggregateState::UniqueCount(hll) => Some(Decimal::from(hll.estimate())),
            AggregateState::Percentiles(_) => None,
            AggregateState::GaugeIntegral { value_seconds, .. } => match aggregation {
                Aggregation::GaugeIntegral { per, .. } => {
                    value_seconds.checked_div(Decimal::from(per.seconds()))
                }
                _ => None,
            },
        }
    }

    /// The serde tag: `"count"`, `"sum"`, …, `"gauge_integral"`.
    pub fn kind(&self) -> &'static str {
        match self {
            AggregateState::Count { .. } => "count",
            AggregateState::Sum { .. } => "sum",
            AggregateState::Min { .. } => "min",
            AggregateState::Max { .. } => "max",
            AggregateState::Latest { .. } => "latest",
            AggregateState::Avg { .. } => "avg",
            AggregateState::UniqueCount(_) => "unique_count",
            AggregateState::Percentiles(_) => "percentiles",
            AggregateState::GaugeIntegral { .. } => "gauge_integral",
        }
    }
}

fn additive_names(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "count" => Some(COUNT_PARTS),
        "sum" => Some(SUM_PARTS),
        "avg" => Some(AVG_PARTS),
        "gauge_integral" => Some(GAUGE_PARTS),
        _ => None,
    }
}

fn checked_add_u64(a: u64, b: u64) -> Result<u64, AggregateError> {
    a.checked_add(b).ok_or(AggregateError::Overflow)
}

fn checked_add_dec(a: Decimal, b: Decimal) -> Result<Decimal, AggregateError> {
    a.checked_add(b).ok_or(AggregateError::Overflow)
}

fn merge_extreme(
    ours: Option<Decimal>,
    theirs: Option<Decimal>,
    pick: fn(Decimal, Decimal) -> Decimal,
) -> Option<Decimal> {
    match (ours, theirs) {
        (Some(a), Some(b)) => Some(pick(a, b.normalize())),
        (a, None) => a,
        (None, b) => b.map(|v| v.normalize()),
    }
}
