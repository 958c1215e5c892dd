//! Budgets: how much a tenant means to spend in a month, and what happens as it is spent.
//!
//! A tenant sets a monthly amount, alert thresholds in percent of it, and optionally a hard
//! limit that blocks further usage once the budget is used up. Everything here is a pure
//! function of the budget, the amount spent so far and the time, so the budget Lambda, the
//! usage API and the edge's block list all reach the same verdict. Which alerts were
//! already sent is the caller's state (one alert record per month and threshold); this
//! module only says which thresholds are newly crossed.
//!
//! The rules:
//! - A threshold of `t` % is crossed once `spent ≥ monthly amount × t / 100`, compared
//!   exactly (reaching it counts).
//! - Severity of a crossing: `critical` from `criticalAt` (default 95 %), `warning` from
//!   `warningAt` (default 80 %), `info` below.
//! - With a hard limit the verdict is [`BudgetVerdict::Block`] at 100 % or more.
//! - The month-end forecast extrapolates the run rate so far:
//!   `spent / elapsed × month length`; if that run rate reaches 100 % before the month
//!   ends, the forecast names the day of the month on which it does.
//! - Percentages are decimals truncated to two places, so a budget never shows 100 %
//!   before it is fully used.
//!
//! ```
//! use tollgate_core::budget::{Budget, BudgetVerdict, evaluate};
//! use tollgate_core::window::{Granularity, Window};
//!
//! let budget: Budget = serde_json::from_str(
//!     r#"{ "monthlyAmount": "100", "currency": "USD", "hardLimit": true }"#,
//! )?;
//! let now = chrono::DateTime::parse_from_rfc3339("2026-11-10T00:00:00Z")?.to_utc();
//! let month = Window::containing(Granularity::Month, now);
//! let evaluation = evaluate(&budget, rust_decimal::Decimal::from(40), now, month);
//! assert_eq!(evaluation.verdict, BudgetVerdict::Allow);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Duration, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, ProblemKind, Problems, index};
use crate::money::Currency;
use crate::window::Window;

const HUNDRED: Decimal = Decimal::ONE_HUNDRED;

/// An alert threshold in whole percent of the monthly amount, from 1 to 1000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u16", into = "u16")]
pub struct Threshold(u16);

impl Threshold {
    /// The highest accepted threshold, in percent.
    pub const MAX_PERCENT: u16 = 1000;

    /// A threshold of `percent`, if it lies in `1..=1000`.
    pub fn new(percent: u16) -> Option<Threshold> {
        (1..=Self::MAX_PERCENT)
            .contains(&percent)
            .then_some(Threshold(percent))
    }

    /// The threshold in percent.
    pub fn percent(self) -> u16 {
        self.0
    }
}

impl TryFrom<u16> for Threshold {
    type Error = ProblemKind;
    fn try_from(percent: u16) -> Result<Self, ProblemKind> {
        Threshold::new(percent).ok_or(ProblemKind::ThresholdOutOfRange { value: percent })
    }
}

impl From<Threshold> for u16 {
    fn from(threshold: Threshold) -> u16 {
        threshold.0
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How urgent a threshold crossing is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// From which threshold a crossing is a warning, and from which it is critical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeverityLevels {
    pub warning_at: Threshold,
    pub critical_at: Threshold,
}

impl Default for SeverityLevels {
    /// Warning from 80 %, critical from 95 %.
    fn default() -> Self {
        SeverityLevels {
            warning_at: Threshold(80),
            critical_at: Threshold(95),
        }
    }
}

impl SeverityLevels {
    /// The severity of crossing `threshold`.
    pub fn severity_of(&self, threshold: Threshold) -> Severity {
        if threshold >= self.critical_at {
            Severity::Critical
        } else if threshold >= self.warning_at {
            Severity::Warning
        } else {
            Severity::Info
        }
    }
}

/// Severity levels as written; each defaults on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeverityLevelsConfig {
    #[serde(default = "default_warning_at")]
    pub warning_at: u16,
    #[serde(default = "default_critical_at")]
    pub critical_at: u16,
}

fn default_warning_at() -> u16 {
    80
}

fn default_critical_at() -> u16 {
    95
}

fn default_thresholds() -> Vec<u16> {
    vec![50, 80, 100]
}

impl Default for SeverityLevelsConfig {
    fn default() -> Self {
        SeverityLevelsConfig {
            warning_at: default_warning_at(),
            critical_at: default_critical_at(),
        }
    }
}

/// A budget as a tenant writes it.
///
/// ```json
/// { "monthlyAmount": "500", "currency": "USD", "thresholds": [50, 80, 100],
///   "severities": { "warningAt": 80, "criticalAt": 95 }, "hardLimit": false }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BudgetConfig {
    pub monthly_amount: Decimal,
    pub currency: String,
    /// Alert thresholds in percent; defaults to 50, 80 and 100.
    #[serde(default = "default_thresholds")]
    pub thresholds: Vec<u16>,
    #[serde(default)]
    pub severities: SeverityLevelsConfig,
    /// Block usage once the budget is used up.
    #[serde(default)]
    pub hard_limit: bool,
}

/// A validated monthly budget. Deserialises from, and serialises to, the [`BudgetConfig`]
/// JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "BudgetConfig", into = "BudgetConfig")]
pub struct Budget {
    monthly_amount: Decimal,
    currency: Currency,
    thresholds: BTreeSet<Threshold>,
    severities: SeverityLevels,
    hard_limit: bool,
}

impl BudgetConfig {
    /// Validates the budget and reports every problem at once.
    pub fn compile(&self) -> Result<Budget, ConfigError> {
        let mut problems = Problems::default();
        let monthly_amount = problems.positive("monthlyAmount", self.monthly_amount);
        let currency = problems.currency("currency", &self.currency);
        let mut thresholds = BTreeSet::new();
        let mut thresholds_valid = true;
        for (i, &percent) in self.thresholds.iter().enumerate() {
            let path = index("thresholds", i);
            match Threshold::try_from(percent) {
                Err(kind) => {
                    problems.report(path, kind);
                    thresholds_valid = false;
                }
                Ok(threshold) if !thresholds.insert(threshold) => {
                    let first = self.thresholds.iter().position(|&p| p == percent);
                    problems.report(
                        path,
                        ProblemKind::Duplicate {
                            value: percent.to_string(),
                            first_at: index("thresholds", first.unwrap_or(i)),
                        },
                    );
                    thresholds_valid = false;
                }
                Ok(_) => {}
            }
        }
        let mut level = |name: &str, percent: u16| {
            Threshold::try_from(percent)
                .map_err(|kind| problems.report(format!("severities.{name}"), kind))
                .ok()
        };
        let warning_at = level("warningAt", self.severities.warning_at);
        let critical_at = level("criticalAt", self.severities.critical_at);
        let misordered = warning_at.zip(critical_at).filter(|(w, c)| w > c);
        if let Some((warning, critical)) = misordered {
            problems.report(
                "severities",
                ProblemKind::SeverityOrder {
                    warning: warning.0,
                    critical: critical.0,
                },
            );
        }
        let budget = match (monthly_amount, currency, warning_at, critical_at) {
            (Some(monthly_amount), Some(currency), Some(warning_at), Some(critical_at))
                if thresholds_valid =>
            {
                Some(Budget {
                    monthly_amount,
                    currency,
                    thresholds,
                    severities: SeverityLevels {
                        warning_at,
                        critical_at,
                    },
                    hard_limit: self.hard_limit,
                })
            }
            _ => None,
        };
        problems.finish(budget)
    }
}

impl TryFrom<BudgetConfig> for Budget {
    type Error = ConfigError;
    fn try_from(config: BudgetConfig) -> Result<Self, ConfigError> {
        config.compile()
    }
}

impl From<Budget> for BudgetConfig {
    fn from(budget: Budget) -> Self {
        BudgetConfig {
            monthly_amount: budget.monthly_amount,
            currency: budget.currency.code().to_owned(),
            thresholds: budget.thresholds.iter().map(|t| t.0).collect(),
            severities: SeverityLevelsConfig {
                warning_at: budget.severities.warning_at.0,
                critical_at: budget.severities.critical_at.0,
            },
            hard_limit: budget.hard_limit,
        }
    }
}

impl Budget {
    /// A budget of `monthly_amount` with the default thresholds and severities and no hard
    /// limit.
    pub fn new(monthly_amount: Decimal, currency: Currency) -> Result<Budget, ConfigError> {
        BudgetConfig {
            monthly_amount,
            currency: currency.code().to_owned(),
            thresholds: default_thresholds(),
            severities: SeverityLevelsConfig::default(),
            hard_limit: false,
        }
        .compile()
    }

    /// The same budget, blocking usage at 100 % when `hard_limit` is set.
    pub fn with_hard_limit(mut self, hard_limit: bool) -> Budget {
        self.hard_limit = hard_limit;
        self
    }

    /// The amount per calendar month; always positive.
    pub fn monthly_amount(&self) -> Decimal {
        self.monthly_amount
    }

    /// The currency of the monthly amount.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// Alert thresholds, ascending.
    pub fn thresholds(&self) -> &BTreeSet<Threshold> {
        &self.thresholds
    }

    /// Which crossings are warnings and which are critical.
    pub fn severities(&self) -> &SeverityLevels {
        &self.severities
    }

    /// Whether usage is blocked once the budget is used up.
    pub fn hard_limit(&self) -> bool {
        self.hard_limit
    }

    /// Whether `spent` has reached `percent` % of the monthly amount, compared exactly.
    fn reached(&self, spent: Decimal, percent: u16) -> bool {
        let percent = Decimal::from(percent);
        match (
            spent.checked_mul(HUNDRED),
            self.monthly_amount.checked_mul(percent),
        ) {
            (Some(spent), Some(limit)) => spent >= limit,
            _ => spent.checked_div(self.monthly_amount).is_some_and(|ratio| {
                ratio
                    .checked_mul(HUNDRED)
                    .map_or(ratio.is_sign_positive(), |p| p >= percent)
            }),
        }
    }
}

/// Whether usage may continue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum BudgetVerdict {
    Allow,
    /// The budget has a hard limit and is used up.
    Block,
}

/// A threshold that the spend has reached, with its severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThresholdCrossing {
    pub threshold: Threshold,
    pub severity: Severity,
}

/// Where the month is heading at the current run rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "camelCase")]
pub enum Outlook {
    /// The run rate stays below the budget until the month ends.
    WithinBudget,
    /// On track to exceed the budget by this day of the month (1-based).
    OnTrackToExceed { day: u32 },
    /// The budget is already used up.
    Exceeded,
}

/// The month-end projection of a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Forecast {
    /// `spent / elapsed × month length`, rounded to the currency's minor unit.
    pub projected_spend: Decimal,
    /// The projection in percent of the budget, truncated to two places.
    pub projected_percent: Decimal,
    pub outlook: Outlook,
}

/// Everything about a budget at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BudgetEvaluation {
    pub spent: Decimal,
    /// `spent` in percent of the budget, truncated to two places.
    pub percent_used: Decimal,
    pub verdict: BudgetVerdict,
    pub forecast: Forecast,
    /// Every threshold reached so far, ascending; [`newly_crossed`] leaves out those
    /// already alerted.
    pub crossed: Vec<ThresholdCrossing>,
}

fn truncated_percent(part: Decimal, whole: Decimal) -> Decimal {
    part.checked_mul(HUNDRED)
        .and_then(|p| p.checked_div(whole))
        .or_else(|| part.checked_div(whole).and_then(|r| r.checked_mul(HUNDRED)))
        .unwrap_or(Decimal::MAX)
        .round_dp_with_strategy(2, RoundingStrategy::ToZero)
}

/// `spent` in percent of the monthly amount, truncated to two decimal places.
pub fn percent_used(budget: &Budget, spent: Decimal) -> Decimal {
    truncated_percent(spent, budget.monthly_amount)
}

/// [`BudgetVerdict::Block`] when the budget has a hard limit and `spent` reached 100 %.
pub fn verdict(budget: &Budget, spent: Decimal) -> BudgetVerdict {
    if budget.hard_limit && budget.reached(spent, 100) {
        BudgetVerdict::Block
    } else {
        BudgetVerdict::Allow
    }
}

/// Every threshold `spent` has reached, ascending, with its severity.
pub fn crossed(budget: &Budget, spent: Decimal) -> Vec<ThresholdCrossing> {
    budget
        .thresholds
        .iter()
        .filter(|threshold| budget.reached(spent, threshold.0))
        .map(|&threshold| ThresholdCrossing {
            threshold,
            severity: budget.severities.severity_of(threshold),
        })
        .collect()
}

/// The thresholds `spent` has reached that have not been alerted yet, ascending.
pub fn newly_crossed(
    budget: &Budget,
    spent: Decimal,
    already_alerted: &BTreeSet<Threshold>,
) -> Vec<ThresholdCrossing> {
    crossed(budget, spent)
        .into_iter()
        .filter(|crossing| !already_alerted.contains(&crossing.threshold))
        .collect()
}

/// Projects the month's spend from the run rate between the start of `month` and `now`:
/// the spend grows linearly. Before any time has elapsed the run rate counts one elapsed
/// second; after the month it is the spend itself. For spend priced by a plan (a fixed
/// base fee, usage priced in tiers) use [`forecast_with`] and the invoice of the projected
/// usage instead.
pub fn forecast(budget: &Budget, spent: Decimal, now: DateTime<Utc>, month: Window) -> Forecast {
    forecast_with(budget, spent, now, month, |at| {
        linear_spend(spent, now, month, at)
    })
}

/// The spend at `at` if it grows linearly from the start of `month` at the pace so far.
fn linear_spend(spent: Decimal, now: DateTime<Utc>, month: Window, at: DateTime<Utc>) -> Decimal {
    let month_seconds = month.duration().num_seconds().max(1);
    let elapsed = Decimal::from((now - month.start()).num_seconds().clamp(1, month_seconds));
    let until = Decimal::from((at - month.start()).num_seconds().clamp(0, month_seconds));
    spent
        .checked_mul(until)
        .and_then(|s| s.checked_div(elapsed))
        .or_else(|| {
            spent
                .checked_div(elapsed)
                .and_then(|r| r.checked_mul(until))
        })
        .unwrap_or(Decimal::MAX)
}

/// The month-end forecast, with `spend_at(t)` the projected spend at instant `t` of
/// `month` (non-decreasing in `t`, and `spent` at `now`): the projected spend is
/// `spend_at(end of month)`, and the outlook names the first day by whose end the
/// projection exceeds the monthly amount (ending the month exactly on budget is not
/// exceeding it).
pub fn forecast_with(
    budget: &Budget,
    spent: Decimal,
    now: DateTime<Utc>,
    month: Window,
    spend_at: impl Fn(DateTime<Utc>) -> Decimal,
) -> Forecast {
    let projected = spend_at(month.end()).max(spent);
    let outlook = if budget.reached(spent, 100) {
        Outlook::Exceeded
    } else if projected <= budget.monthly_amount {
        Outlook::WithinBudget
    } else {
        // The first day whose end the projection reaches the budget by: the day of `now`
        // at the earliest, the last day at the latest (the month-end projection does).
        let day_end = |day: u32| month.start() + Duration::days(i64::from(day));
        let days = month.days_in_month();
        let first_day = u32::try_from((now - month.start()).num_days().max(0))
            .unwrap_or(0)
            .saturating_add(1)
            .min(days);
        let (mut low, mut high) = (first_day, days);
        while low < high {
            let mid = low + (high - low) / 2;
            if spend_at(day_end(mid)) > budget.monthly_amount {
                high = mid;
            } else {
                low = mid + 1;
            }
        }
        Outlook::OnTrackToExceed { day: low }
    };
    Forecast {
        projected_spend: budget.currency.round(projected),
        projected_percent: truncated_percent(projected, budget.monthly_amount),
        outlook,
    }
}

/// The whole picture of `budget` at `now`, with `spent` so far in `month`.
pub fn evaluate(
    budget: &Budget,
    spent: Decimal,
    now: DateTime<Utc>,
    month: Window,
) -> BudgetEvaluation {
    evaluate_with(budget, spent, now, month, |at| {
        linear_spend(spent, now, month, at)
    })
}

/// [`evaluate`] with the spend projected by `spend_at` (see [`forecast_with`]).
pub fn evaluate_with(
    budget: &Budget,
    spent: Decimal,
    now: DateTime<Utc>,
    month: Window,
    spend_at: impl Fn(DateTime<Utc>) -> Decimal,
) -> BudgetEvaluation {
    BudgetEvaluation {
        spent,
        percent_used: percent_used(budget, spent),
        verdict: verdict(budget, spent),
        forecast: forecast_with(budget, spent, now, month, spend_at),
        crossed: crossed(budget, spent),
    }
}
