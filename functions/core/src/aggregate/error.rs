//! Errors of observing into and merging aggregate states.

use thiserror::Error;

/// Why an observation or a merge could not be applied. Nothing here is transient: the
/// same input always fails the same way, so a caller records it as rejected rather
/// than retrying.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AggregateError {
    /// A kind tag that names no aggregation.
    #[error("unknown aggregate kind {kind:?}")]
    UnknownKind { kind: String },
    /// A state of one kind met an aggregation or a state of another kind.
    #[error("aggregate kind mismatch: expected {expected}, found {found}")]
    KindMismatch {
        expected: &'static str,
        found: &'static str,
    },
    /// The aggregation reads a number and the observation carried none.
    #[error("{aggregation} needs a numeric value")]
    NeedsNumber { aggregation: &'static str },
    /// `unique_count` needs a value (text or number) to tell items apart.
    #[error("unique_count needs a value (text or number)")]
    NeedsValue,
    /// Two sketches with different parameters cannot be merged.
    #[error("{sketch} sketches cannot be merged: {reason}")]
    SketchMismatch {
        sketch: &'static str,
        reason: String,
    },
    /// A counter or a decimal left its representable range.
    #[error("aggregate state overflowed")]
    Overflow,
    /// `additive_parts`/`from_additive_parts` asked of an aggregation whose merge is not
    /// plain addition.
    #[error("{aggregation} is not additive")]
    NotAdditive { aggregation: &'static str },
    /// An additive part is unknown, duplicated, or out of range for its kind.
    #[error("invalid additive part {part:?}: {reason}")]
    InvalidPart { part: String, reason: &'static str },
    /// The aggregation's own parameters are unusable.
    #[error("invalid aggregation: {reason}")]
    InvalidAggregation { reason: &'static str },
    /// A sketch's parameters or encoded contents are invalid.
    #[error("invalid {sketch} sketch: {reason}")]
    InvalidSketch {
        sketch: &'static str,
        reason: String,
    },
}
