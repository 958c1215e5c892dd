//! Configuration problems, shared by every operator-written configuration (meters,
//! plans, budgets).
//!
//! Configurations are read in two stages: serde structs that mirror the JSON, then a
//! compile step that checks everything and reports *every* problem at once, each located
//! by its JSON field path (`meters[1].price.tiers[0].upTo`), so an operator fixes a file
//! in one pass rather than one error at a time.

use std::fmt;

use rust_decimal::Decimal;
use thiserror::Error;

use crate::ids::{IdError, MeterName};
use crate::money::{Currency, CurrencyError};

/// One thing wrong with a configuration, located by its JSON field path, such as
/// `meters[1].price.tiers[0].upTo`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{path}: {kind}")]
pub struct ConfigProblem {
    pub path: String,
    pub kind: ProblemKind,
}

/// What is wrong at a [`ConfigProblem`]'s path.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProblemKind {
    #[error(transparent)]
    InvalidId(#[from] IdError),
    #[error(transparent)]
    UnknownCurrency(#[from] CurrencyError),
    #[error("must not be negative, got {value}")]
    Negative { value: Decimal },
    #[error("must be greater than zero, got {value}")]
    NotPositive { value: Decimal },
    #[error("a rate limit of 0 would refuse every request; leave the limit out for unlimited")]
    ZeroRateLimit,
    #[error("must not be empty")]
    Empty,
    #[error("{value} appears twice; first at {first_at}")]
    Duplicate { value: String, first_at: String },
    #[error("tier bounds must ascend: {value} does not exceed the previous bound {previous}")]
    TiersNotAscending { previous: Decimal, value: Decimal },
    #[error("only the last tier may be unbounded (upTo absent or null)")]
    UnboundedTierNotLast,
    #[error("the last tier must be unbounded (upTo absent or null), got {up_to}")]
    LastTierBounded { up_to: Decimal },
    #[error("a tier needs either unitPrice, or packageSize together with packagePrice")]
    TierRate,
    #[error("a meter whose overage is allowed needs a price")]
    PriceMissing,
    #[error("a hard-limit meter is never charged beyond its allowance, so it takes no price")]
    PriceWithHardLimit,
    #[error("meter {meter} is not priced by this plan")]
    UnknownMeter { meter: String },
    #[error("meter {meter} has a hard limit and cannot draw on a shared allowance")]
    SharedWithHardLimit { meter: String },
    #[error("a threshold must be between 1 and 1000 percent, got {value}")]
    ThresholdOutOfRange { value: u16 },
    #[error("warningAt ({warning}) must not exceed criticalAt ({critical})")]
    SeverityOrder { warning: u16, critical: u16 },
    #[error("{value:?} is not a dotted field path such as `usage.bytes`")]
    BadFieldPath { value: String },
    #[error("a {aggregation} meter needs a value field")]
    ValueFieldMissing { aggregation: &'static str },
    #[error("the sampling interval must be at least one second")]
    ZeroSampleSeconds,
    #[error("is {len} characters long; the limit is {max}")]
    TooLong { len: usize, max: usize },
    #[error(
        "a {aggregation} meter cannot be reported to Stripe: Stripe sums meter events, so \
         only count, sum and gauge_integral meters, whose hours add up to the month, can be"
    )]
    NotAdditive { aggregation: &'static str },
    #[error("not valid JSON for this configuration: {message}")]
    Syntax { message: String },
}

/// Every problem found while compiling a configuration, in document order.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct ConfigError {
    problems: Vec<ConfigProblem>,
}

impl ConfigError {
    /// The problems, each with its field path.
    pub fn problems(&self) -> &[ConfigProblem] {
        &self.problems
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid configuration ({} problems)",
            self.problems.len()
        )?;
        for problem in &self.problems {
            write!(f, "; {problem}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    /// A configuration that could not even be parsed.
    pub fn syntax(error: &serde_json::Error) -> ConfigError {
        ConfigError {
            problems: vec![ConfigProblem {
                path: format!("line {} column {}", error.line(), error.column()),
                kind: ProblemKind::Syntax {
                    message: error.to_string(),
                },
            }],
        }
    }
}

/// Collects problems while a configuration compiles.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<ConfigProblem>);

impl Problems {
    pub(crate) fn report(&mut self, path: impl Into<String>, kind: impl Into<ProblemKind>) {
        self.0.push(ConfigProblem {
            path: path.into(),
            kind: kind.into(),
        });
    }

    pub(crate) fn non_negative(
        &mut self,
        path: impl Into<String>,
        value: Decimal,
    ) -> Option<Decimal> {
        if value.is_sign_negative() && !value.is_zero() {
            self.report(path, ProblemKind::Negative { value });
            return None;
        }
        Some(value)
    }

    pub(crate) fn positive(&mut self, path: impl Into<String>, value: Decimal) -> Option<Decimal> {
        if value <= Decimal::ZERO {
            self.report(path, ProblemKind::NotPositive { value });
            return None;
        }
        Some(value)
    }

    pub(crate) fn currency(&mut self, path: impl Into<String>, code: &str) -> Option<Currency> {
        Currency::from_code(code)
            .map_err(|e| self.report(path, e))
            .ok()
    }

    pub(crate) fn meter(&mut self, path: impl Into<String>, name: &str) -> Option<MeterName> {
        MeterName::new(name).map_err(|e| self.report(path, e)).ok()
    }

    /// `value` if nothing was reported, otherwise every problem.
    pub(crate) fn finish<T>(self, value: Option<T>) -> Result<T, ConfigError> {
        match value {
            Some(value) if self.0.is_empty() => Ok(value),
            _ => Err(ConfigError { problems: self.0 }),
        }
    }
}

pub(crate) fn field(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_owned()
    } else {
        format!("{base}.{name}")
    }
}

pub(crate) fn index(base: &str, i: usize) -> String {
    format!("{base}[{i}]")
}
