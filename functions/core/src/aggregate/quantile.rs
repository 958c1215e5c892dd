//! A mergeable quantile sketch with relative error, in the style of DDSketch.
//!
//! ## Accuracy
//!
//! A non-zero value `x` goes into bucket `i = ⌈ln|x| / ln γ⌉` with
//! `γ = (1 + α) / (1 − α)` and `α = 1 %`, so bucket `i` covers `(γ^(i−1), γ^i]`. A
//! quantile is answered with the bucket's representative `2·γ^i / (γ + 1)`, which is
//! within a factor `1 ± α` of every value in the bucket: **the returned value is within
//! 1 % (relative) of the true value at that rank** — the element at sorted position
//! `⌊q · (n − 1)⌋` — for any distribution and any `n`. Answers are also clamped to the
//! exact minimum and maximum, which the sketch keeps, and the extreme ranks return them
//! exactly. Zero is counted exactly; negative values use a mirror store keyed by `|x|`.
//!
//! `f64` is used only to find a bucket index from a value (`ln`) and a representative
//! value from an index (`exp`), plus the rank `q · (n − 1)` from the caller's `q`. The
//! counts, the stored extremes and the answers are exact integers and `Decimal`s.
//! Rounding in the `f64` mapping can put a value that lies on a bucket boundary into the
//! neighbouring bucket; the error bound then holds up to that rounding (about 1e-15).
//!
//! ## Bounded size, and why merging stays associative
//!
//! Each store keeps at most [`MAX_BUCKETS`] = 2,048 buckets — a dynamic range of
//! `γ^2048 ≈ 6·10^17` between its largest and smallest magnitudes. When a store would
//! span more, every bucket below `floor = highest − 2047` is collapsed into bucket
//! `floor`. The kept range depends on the highest index only.
//!
//! That makes the collapsed store a function of the uncollapsed one: after any sequence
//! of inserts, merges and collapses, a unit of count originally at index `j` sits at
//! `max(j, H − 2047)`, where `H` is the highest index among everything that was combined.
//! (A collapse moves mass at `j` to `max(j, h − 2047)` for the `h` of its moment; `h`
//! only grows and never exceeds `H`, so a later collapse can only move that mass further
//! up to `H − 2047`, and mass at or above `H − 2047` is never moved.) Call that map `Φ`.
//! Merging is bucket-wise addition `⊕` followed by `Φ`, and
//! `Φ(Φ(A) ⊕ Φ(B)) = Φ(A ⊕ B)`, so `(A · B) · C = Φ(A ⊕ B ⊕ C) = A · (B · C)` and
//! `A · B = B · A`: merge is associative and commutative with the empty sketch as
//! identity, whatever the grouping — minute sketches rolled into hours and then days
//! equal the day's sketch built directly. Collapsing costs accuracy only for quantiles
//! that fall in the collapsed low-magnitude tail (for the negative store: the values
//! nearest zero).
//!
//! ## Serialised form
//!
//! `{"min":"0.8","max":"912.5","zero":3,"positive":"<base64>","negative":"<base64>"}`,
//! empty parts omitted. A store is encoded as LEB128 varints: the first index
//! (zig-zag), then for each bucket the gap to the previous index and the count.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rust_decimal::Decimal;
use rust_decimal::prelude::{FromPrimitive, ToPrimitive};
use serde::{Deserialize, Serialize};

use super::AggregateError;

/// The relative accuracy α: 1 %.
pub const RELATIVE_ACCURACY: Decimal = Decimal::from_parts(1, 0, 0, false, 2);
/// The most buckets each of the positive and negative stores keeps.
pub const MAX_BUCKETS: usize = 2_048;

const ALPHA: f64 = 0.01;
const GAMMA: f64 = (1.0 + ALPHA) / (1.0 - ALPHA);
/// Every `Decimal` magnitude (1e-28 ..= 7.9e28) maps inside ±3,400; anything beyond this
/// bound in an encoded sketch is corrupt.
const INDEX_LIMIT: i32 = 4_096;
const SKETCH: &str = "quantile";

/// p50, p95 and p99 of a [`QuantileSketch`], each within 1 % (relative) of the truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Percentiles {
    pub p50: Decimal,
    pub p95: Decimal,
    pub p99: Decimal,
}

/// A DDSketch-style quantile sketch, α = 1 % (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SketchRepr", into = "SketchRepr")]
pub struct QuantileSketch {
    positive: Store,
    negative: Store,
    zero: u64,
    count: u64,
    min: Option<Decimal>,
    max: Option<Decimal>,
}

/// Bucket counts by index; never holds a zero count, never spans more than
/// `MAX_BUCKETS` indices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Store {
    buckets: BTreeMap<i32, u64>,
}

impl QuantileSketch {
    /// An empty sketch.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of values inserted.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// True when nothing has been inserted.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The exact smallest value inserted.
    pub fn min(&self) -> Option<Decimal> {
        self.min
    }

    /// The exact largest value inserted.
    pub fn max(&self) -> Option<Decimal> {
        self.max
    }

    /// The number of non-empty buckets (at most `2 * MAX_BUCKETS`).
    pub fn bucket_count(&self) -> usize {
        self.positive.buckets.len() + self.negative.buckets.len()
    }

    /// Adds one value.
    pub fn insert(&mut self, value: Decimal) -> Result<(), AggregateError> {
        let count = self.count.checked_add(1).ok_or(AggregateError::Overflow)?;
        if value.is_zero() {
            self.zero += 1;
        } else {
            let index = index_of(value.abs())?;
            if value.is_sign_positive() {
                self.positive.add(index, 1)?;
            } else {
                self.negative.add(index, 1)?;
            }
        }
        self.count = count;
        let value = value.normalize();
        self.min = Some(self.min.map_or(value, |m| m.min(value)));
        self.max = Some(self.max.map_or(value, |m| m.max(value)));
        Ok(())
    }

    /// Merges `other` into `self` (bucket-wise addition, then collapse).
    pub fn merge(&mut self, other: &QuantileSketch) -> Result<(), AggregateError> {
        let count = self
            .count
            .checked_add(other.count)
            .ok_or(AggregateError::Overflow)?;
        for (&index, &n) in &other.positive.buckets {
            self.positive.add(index, n)?;
        }
        for (&index, &n) in &other.negative.buckets {
            self.negative.add(index, n)?;
        }
        self.zero += other.zero;
        self.count = count;
        self.min = merge_option(self.min, other.min, Decimal::min);
        self.max = merge_option(self.max, other.max, Decimal::max);
        Ok(())
    }

    /// The value at quantile `q` (`0.0..=1.0`): within 1 % of the element at sorted
    /// position `⌊q · (n − 1)⌋`. `None` when empty or when `q` is outside `0..=1`.
    pub fn quantile(&self, q: f64) -> Option<Decimal> {
        if !(0.0..=1.0).contains(&q) || self.count == 0 {
            return None;
        }
        let (min, max) = (self.min?, self.max?);
        let last = self.count - 1;
        let rank = ((q * last as f64).floor() as u64).min(last);
        if rank == 0 {
            return Some(min);
        }
        if rank == last {
            return Some(max);
        }
        let clamp = |v: Decimal| {
            if v < min {
                min
            } else if v > max {
                max
            } else {
                v
            }
        };
        let mut seen: u64 = 0;
        for (&index, &n) in self.negative.buckets.iter().rev() {
            seen = seen.saturating_add(n);
            if seen > rank {
                return Some(clamp(-representative(index).unwrap_or(-min)));
            }
        }
        seen = seen.saturating_add(self.zero);
        if seen > rank {
            return Some(clamp(Decimal::ZERO));
        }
        for (&index, &n) in &self.positive.buckets {
            seen = seen.saturating_add(n);
            if seen > rank {
                return Some(clamp(representative(index).unwrap_or(max)));
            }
        }
        Some(max)
    }

    /// p50, p95 and p99, or `None` when empty.
    pub fn summary(&self) -> Option<Percentiles> {
        Some(Percentiles {
            p50: self.quantile(0.5)?,
            p95: self.quantile(0.95)?,
            p99: self.quantile(0.99)?,
        })
    }
}

fn merge_option(
    a: Option<Decimal>,
    b: Option<Decimal>,
    pick: fn(Decimal, Decimal) -> Decimal,
) -> Option<Decimal> {
    match (a, b) {
        (Some(a), Some(b)) => Some(pick(a, b.normalize())),
        (a, None) => a,
        (None, b) => b.map(|v| v.normalize()),
    }
}

fn ln_gamma() -> f64 {
    GAMMA.ln()
}

/// The bucket of a positive magnitude: `⌈ln x / ln γ⌉`.
fn index_of(magnitude: Decimal) -> Result<i32, AggregateError> {
    let x = magnitude
        .to_f64()
        .filter(|x| x.is_finite() && *x > 0.0)
        .ok_or(AggregateError::Overflow)?;
    Ok((x.ln() / ln_gamma()).ceil() as i32)
}

/// The value reported for bucket `index`: `2·γ^i / (γ + 1)`, or `None` outside the
/// `Decimal` range.
fn representative(index: i32) -> Option<Decimal> {
    let x = (f64::from(index) * ln_gamma()).exp() * 2.0 / (1.0 + GAMMA);
    Decimal::from_f64(x)
}

impl Store {
    fn total(&self) -> Option<u64> {
        self.buckets
            .values()
            .try_fold(0u64, |acc, &n| acc.checked_add(n))
    }

    /// The lowest index kept: a function of the highest index only.
    fn floor(&self) -> Option<i32> {
        let (&highest, _) = self.buckets.last_key_value()?;
        Some(highest.saturating_sub(MAX_BUCKETS as i32 - 1))
    }

    fn add(&mut self, index: i32, n: u64) -> Result<(), AggregateError> {
        if n == 0 {
            return Ok(());
        }
        let index = match self.floor() {
            Some(floor) if index < floor => floor,
            _ => index,
        };
        let current = self.buckets.get(&index).copied().unwrap_or(0);
        let updated = current.checked_add(n).ok_or(AggregateError::Overflow)?;
        self.buckets.insert(index, updated);
        self.collapse();
        Ok(())
    }

    /// Moves every bucket below the floor into the floor bucket.
    fn collapse(&mut self) {
        let Some(floor) = self.floor() else {
            return;
        };
        let needs = self
            .buckets
            .first_key_value()
            .is_some_and(|(&lowest, _)| lowest < floor);
        if !needs {
            return;
        }
        let kept = self.buckets.split_off(&floor);
        let below = std::mem::replace(&mut self.buckets, kept);
        let moved = below.values().fold(0u64, |acc, &n| acc.saturating_add(n));
        let slot = self.buckets.entry(floor).or_insert(0);
        *slot = slot.saturating_add(moved);
    }

    fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(self.buckets.len() * 3);
        let mut previous: Option<i32> = None;
        for (&index, &n) in &self.buckets {
            let head = match previous {
                None => zigzag(index),
                Some(p) => (i64::from(index) - i64::from(p)) as u64,
            };
            put_varint(&mut bytes, head);
            put_varint(&mut bytes, n);
            previous = Some(index);
        }
        BASE64.encode(bytes)
    }

    fn decode(text: &str, which: &str) -> Result<Store, AggregateError> {
        let invalid = |reason: &str| AggregateError::InvalidSketch {
            sketch: SKETCH,
            reason: format!("{which} store: {reason}"),
        };
        let bytes = BASE64
            .decode(text)
            .map_err(|e| invalid(&format!("base64: {e}")))?;
        let mut input = bytes.as_slice();
        let mut buckets = BTreeMap::new();
        let mut previous: Option<i64> = None;
        while !input.is_empty() {
            let head = take_varint(&mut input).ok_or_else(|| invalid("truncated varint"))?;
            let n = take_varint(&mut input).ok_or_else(|| invalid("truncated varint"))?;
            let index = match previous {
                None => unzigzag(head),
                Some(p) => {
                    let gap = i64::try_from(head).map_err(|_| invalid("index gap too large"))?;
                    if gap < 1 {
                        return Err(invalid("indices are not strictly increasing"));
                    }
                    p.saturating_add(gap)
                }
            };
            let index = i32::try_from(index)
                .ok()
                .filter(|i| (-INDEX_LIMIT..=INDEX_LIMIT).contains(i))
                .ok_or_else(|| invalid("index out of range"))?;
            if n == 0 {
                return Err(invalid("empty bucket"));
            }
            buckets.insert(index, n);
            previous = Some(i64::from(index));
        }
        let store = Store { buckets };
        let lowest = store.buckets.first_key_value().map(|(&index, _)| index);
        if lowest
            .zip(store.floor())
            .is_some_and(|(low, floor)| low < floor)
        {
            return Err(invalid("more than 2048 buckets in range"));
        }
        Ok(store)
    }
}

fn zigzag(i: i32) -> u64 {
    let i = i64::from(i);
    ((i << 1) ^ (i >> 63)) as u64
}

fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(input: &mut &[u8]) -> Option<u64> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        let bits = u64::from(byte & 0x7f);
        if shift == 63 && bits > 1 {
            return None;
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SketchRepr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max: Option<Decimal>,
    #[serde(default, skip_serializing_if = "is_zero")]
    zero: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    positive: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    negative: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl From<QuantileSketch> for SketchRepr {
    fn from(sketch: QuantileSketch) -> Self {
        SketchRepr {
            min: sketch.min,
            max: sketch.max,
            zero: sketch.zero,
            positive: sketch.positive.encode(),
            negative: sketch.negative.encode(),
        }
    }
}

impl TryFrom<SketchRepr> for QuantileSketch {
    type Error = AggregateError;

    fn try_from(repr: SketchRepr) -> Result<Self, Self::Error> {
        let invalid = |reason: &str| AggregateError::InvalidSketch {
            sketch: SKETCH,
            reason: reason.to_owned(),
        };
        let positive = Store::decode(&repr.positive, "positive")?;
        let negative = Store::decode(&repr.negative, "negative")?;
        let count = positive
            .total()
            .zip(negative.total())
            .and_then(|(p, n)| p.checked_add(n))
            .and_then(|c| c.checked_add(repr.zero))
            .ok_or(AggregateError::Overflow)?;
        let (min, max) = match (repr.min, repr.max) {
            (None, None) if count == 0 => return Ok(QuantileSketch::default()),
            (Some(min), Some(max)) if count > 0 => (min.normalize(), max.normalize()),
            _ => {
                return Err(invalid(
                    "min and max must be present exactly when not empty",
                ));
            }
        };
        let consistent = min <= max
            && (negative.buckets.is_empty() || min.is_sign_negative() && !min.is_zero())
            && (positive.buckets.is_empty() || max.is_sign_positive() && !max.is_zero())
            && (repr.zero == 0 || (min <= Decimal::ZERO && max >= Decimal::ZERO));
        if !consistent {
            return Err(invalid("min and max disagree with the buckets"));
        }
        Ok(QuantileSketch {
            positive,
            negative,
            zero: repr.zero,
            count,
            min: Some(min),
            max: Some(max),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    fn sketch_of(values: &[Decimal]) -> QuantileSketch {
        let mut sketch = QuantileSketch::new();
        for &v in values {
            sketch.insert(v).unwrap();
        }
        sketch
    }

    fn exact(sorted: &[Decimal], q: f64) -> Decimal {
        let last = sorted.len() - 1;
        sorted[((q * last as f64).floor() as usize).min(last)]
    }

    /// |estimate − truth| ≤ α·|truth|, with room for the f64 boundary rounding.
    fn within_alpha(estimate: Decimal, truth: Decimal) -> bool {
        let slack = dec!(0.000000001) * truth.abs();
        (estimate - truth).abs() <= RELATIVE_ACCURACY * truth.abs() + slack
    }

    fn value() -> impl Strategy<Value = Decimal> {
        prop_oneof![
            8 => (1i64..10_000_000, 0u32..=6).prop_map(|(m, s)| Decimal::new(m, s)),
            2 => (-10_000_000i64..0, 0u32..=3).prop_map(|(m, s)| Decimal::new(m, s)),
            1 => Just(Decimal::ZERO),
        ]
    }

    /// Magnitudes from 1e-20 to 1e26 with either sign: wide enough to force collapses.
    fn wide_value() -> impl Strategy<Value = Decimal> {
        (1i64..1_000_000, -20i32..=20, any::<bool>()).prop_map(|(m, e, negative)| {
            let v = if e < 0 {
                Decimal::new(m, e.unsigned_abs())
            } else {
                Decimal::from_i128_with_scale(i128::from(m) * 10i128.pow(e as u32), 0)
            };
            if negative { -v } else { v }
        })
    }

    proptest! {
        #[test]
        fn p50_p95_p99_are_within_one_percent_of_the_exact_quantiles(
            values in prop::collection::vec(value(), 1..2_000)
        ) {
            let sketch = sketch_of(&values);
            let mut sorted = values.clone();
            sorted.sort();
            let summary = sketch.summary().unwrap();
            for (q, estimate) in [(0.5, summary.p50), (0.95, summary.p95), (0.99, summary.p99)] {
                let truth = exact(&sorted, q);
                prop_assert!(within_alpha(estimate, truth), "q {q}: {estimate} vs {truth}");
            }
            prop_assert_eq!(sketch.count(), values.len() as u64);
        }

        #[test]
        fn every_quantile_is_within_one_percent(
            values in prop::collection::vec(value(), 1..300),
            q in 0.0f64..=1.0,
        ) {
            let mut sorted = values.clone();
            sorted.sort();
            let estimate = sketch_of(&values).quantile(q).unwrap();
            let truth = exact(&sorted, q);
            prop_assert!(within_alpha(estimate, truth), "q {q}: {estimate} vs {truth}");
        }

        #[test]
        fn collapsing_commutes_with_merging(
            a in prop::collection::vec(wide_value(), 0..60),
            b in prop::collection::vec(wide_value(), 0..60),
            c in prop::collection::vec(wide_value(), 0..60),
        ) {
            let (sa, sb, sc) = (sketch_of(&a), sketch_of(&b), sketch_of(&c));
            let mut left = sa.clone();
            left.merge(&sb).unwrap();
            left.merge(&sc).unwrap();
            let mut bc = sb.clone();
            bc.merge(&sc).unwrap();
            let mut right = sa.clone();
            right.merge(&bc).unwrap();
            let mut reversed = sc.clone();
            reversed.merge(&sb).unwrap();
            reversed.merge(&sa).unwrap();
            let whole = sketch_of(&[a, b, c].concat());
            prop_assert_eq!(&left, &right);
            prop_assert_eq!(&left, &reversed);
            prop_assert_eq!(&left, &whole);
            prop_assert!(whole.positive.buckets.len() <= MAX_BUCKETS);
            prop_assert!(whole.negative.buckets.len() <= MAX_BUCKETS);
        }

        #[test]
        fn sketches_round_trip_through_json(values in prop::collection::vec(wide_value(), 0..200)) {
            let sketch = sketch_of(&values);
            let json = serde_json::to_string(&sketch).unwrap();
            let back: QuantileSketch = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(back, sketch);
        }
    }

    #[test]
    fn an_empty_sketch_has_no_quantiles() {
        let sketch = QuantileSketch::new();
        assert_eq!(sketch.quantile(0.5), None);
        assert_eq!(sketch.summary(), None);
        assert_eq!(serde_json::to_string(&sketch).unwrap(), "{}");
    }

    #[test]
    fn out_of_range_q_has_no_answer() {
        let sketch = sketch_of(&[dec!(1), dec!(2)]);
        for q in [-0.1, 1.1, f64::NAN] {
            assert_eq!(sketch.quantile(q), None);
        }
    }

    #[test]
    fn extreme_ranks_are_exact() {
        let sketch = sketch_of(&[dec!(-3.5), dec!(0), dec!(12.25), dec!(1000)]);
        assert_eq!(sketch.quantile(0.0), Some(dec!(-3.5)));
        assert_eq!(sketch.quantile(1.0), Some(dec!(1000)));
        assert_eq!(sketch.quantile(0.34), Some(dec!(0)));
    }

    #[test]
    fn a_single_value_is_every_quantile() {
        let sketch = sketch_of(&[dec!(42.5)]);
        assert_eq!(
            sketch.summary(),
            Some(Percentiles {
                p50: dec!(42.5),
                p95: dec!(42.5),
                p99: dec!(42.5)
            })
        );
    }

    #[test]
    fn a_wide_range_collapses_the_lowest_buckets_and_keeps_the_top_accurate() {
        let mut values: Vec<Decimal> = (1..=20)
            .map(|e| Decimal::new(1, e))
            .chain((0..=26).map(|e| Decimal::from_i128_with_scale(10i128.pow(e), 0)))
            .collect();
        values.extend(
            (1..=1000).map(|i| Decimal::from_i128_with_scale(i128::from(i) * 10i128.pow(18), 0)),
        );
        let sketch = sketch_of(&values);
        assert!(sketch.positive.buckets.len() <= MAX_BUCKETS);
        let (&lowest, _) = sketch.positive.buckets.first_key_value().unwrap();
        assert!(lowest > index_of(Decimal::new(1, 20)).unwrap());
        let mut sorted = values.clone();
        sorted.sort();
        let truth = exact(&sorted, 0.99);
        assert!(within_alpha(sketch.quantile(0.99).unwrap(), truth));
    }

    #[test]
    fn the_extremes_of_decimal_fit_and_round_trip() {
        let tiny = Decimal::new(1, 28);
        let values = [Decimal::MAX, Decimal::MIN, tiny, -tiny, Decimal::MAX, tiny];
        let sketch = sketch_of(&values);
        let back: QuantileSketch =
            serde_json::from_str(&serde_json::to_string(&sketch).unwrap()).unwrap();
        assert_eq!(back, sketch);
        for q in [0.2, 0.4, 0.6, 0.8] {
            let estimate = sketch.quantile(q).unwrap();
            assert!(estimate >= Decimal::MIN && estimate <= Decimal::MAX);
        }
        assert_eq!(sketch.quantile(1.0), Some(Decimal::MAX));
    }

    #[test]
    fn encoded_stores_are_compact() {
        let values: Vec<Decimal> = (1..=10_000).map(|i| Decimal::new(i, 2)).collect();
        let json = serde_json::to_string(&sketch_of(&values)).unwrap();
        assert!(json.len() < 2_000, "{} bytes: {json}", json.len());
    }

    #[test]
    fn corrupt_encodings_are_rejected() {
        for json in [
            r#"{"min":"1"}"#,
            r#"{"zero":1}"#,
            r#"{"min":"2","max":"1","zero":1}"#,
            r#"{"min":"1","max":"2","positive":"AAA="}"#,
            r#"{"min":"1","max":"2","positive":"gA=="}"#,
            r#"{"min":"1","max":"2","positive":"AgECAA=="}"#,
            r#"{"min":"1","max":"2","positive":"AgEAAQ=="}"#,
            r#"{"min":"1","max":"2","positive":"AgEBAQ==","bogus":1}"#,
            r#"{"min":"-2","max":"-1","positive":"AgE="}"#,
        ] {
            assert!(
                serde_json::from_str::<QuantileSketch>(json).is_err(),
                "accepted {json}"
            );
        }
        let ok: QuantileSketch =
            serde_json::from_str(r#"{"min":"1","max":"2","positive":"AgEBAQ=="}"#).unwrap();
        assert_eq!(ok.count(), 2);
    }

    #[test]
    fn varints_round_trip() {
        for v in [0u64, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut bytes = Vec::new();
            put_varint(&mut bytes, v);
            let mut input = bytes.as_slice();
            assert_eq!(take_varint(&mut input), Some(v));
            assert!(input.is_empty());
        }
        for i in [0, 1, -1, 4096, -4096, i32::MAX, i32::MIN] {
            assert_eq!(unzigzag(zigzag(i)), i64::from(i));
        }
    }
}
