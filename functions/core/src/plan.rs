//! Plans: what a tenant pays for and what it may use.
//!
//! Plans are written by operators as JSON, so they are read in two stages. The `*Config`
//! structs mirror the JSON exactly (camelCase, unknown fields refused, amounts as decimal
//! strings so no float ever touches money); compiling them checks everything at once and
//! reports every problem with its field path, then yields validated types ([`Plan`],
//! [`Price`], [`MeterPricing`]) whose invariants — ascending tiers, an unbounded last tier,
//! positive package sizes, non-negative prices, one entry per meter — the pricing code relies
//! on without re-checking. A validated [`Plan`] serialises back to the same JSON shape.
//!
//! Plans are versioned by `effectiveFrom`. Which plan (or version) a tenant was on during a
//! month, including a change in the middle of it, is a [`PlanTimeline`].
//!
//! Unlimited is always an absent value (`None`), never a sentinel such as -1.
//!
//! ```
//! use tollgate_core::plan::Plan;
//!
//! let plan: Plan = serde_json::from_str(r#"{
//!     "name": "starter",
//!     "effectiveFrom": "2026-01-01T00:00:00Z",
//!     "currency": "USD",
//!     "baseFee": "29",
//!     "meters": [{
//!         "meter": "api_requests",
//!         "included": "100000",
//!         "price": { "type": "perPackage", "packageSize": "1000", "packagePrice": "0.50" }
//!     }],
//!     "limits": { "rate": { "perSecond": 10 } }
//! }"#)?;
//! assert_eq!(plan.name().as_str(), "starter");
//! # Ok::<(), serde_json::Error>(())
//! ```

use std::collections::BTreeMap;
use std::num::NonZeroU64;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use crate::config::{ConfigError, ConfigProblem, ProblemKind};
use crate::config::{Problems, field, index};
use crate::ids::{MeterName, PlanName};
use crate::money::Currency;
use crate::window::{Granularity, Window};

// ---------------------------------------------------------------------------------------
// Prices
// ---------------------------------------------------------------------------------------

/// How the tiers of a tiered price apply to a quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TierMode {
    /// Each tier prices the units that fall inside it; the amounts add up.
    Graduated,
    /// The tier that contains the whole quantity prices every unit.
    Volume,
}

/// A price as written in a plan, tagged by `type`.
///
/// ```json
/// { "type": "perUnit", "unitPrice": "0.01" }
/// { "type": "perPackage", "packageSize": "1000", "packagePrice": "0.50" }
/// { "type": "tiered", "mode": "graduated", "tiers": [
///     { "upTo": "1000", "unitPrice": "0" },
///     { "upTo": null, "unitPrice": "0.01", "flatFee": "5" } ] }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum PriceConfig {
    /// Every billable unit costs `unitPrice`.
    PerUnit { unit_price: Decimal },
    /// Every *started* package of `packageSize` units costs `packagePrice`.
    PerPackage {
        package_size: Decimal,
        package_price: Decimal,
    },
    /// Tiers over the billable quantity, Stripe-style.
    Tiered {
        mode: TierMode,
        tiers: Vec<TierConfig>,
    },
}

/// One tier as written in a plan: an upper bound (absent or `null` on the last tier), a rate
/// (`unitPrice`, or `packageSize` with `packagePrice`) and an optional `flatFee` charged
/// when the tier is used.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TierConfig {
    #[serde(default)]
    pub up_to: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_price: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_size: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_price: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flat_fee: Option<Decimal>,
}

/// A validated price of billable units. Built from a [`PriceConfig`]; serialises back to one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PriceConfig", into = "PriceConfig")]
pub struct Price(pub(crate) PriceKind);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PriceKind {
    Flat(Rate),
    Tiered { mode: TierMode, tiers: Vec<Tier> },
}

/// What a number of units costs, before flat fees. Sizes are positive, prices non-negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rate {
    PerUnit(Decimal),
    PerPackage { size: Decimal, price: Decimal },
}

/// A validated tier; bounds ascend and only the last is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tier {
    pub(crate) up_to: Option<Decimal>,
    pub(crate) rate: Rate,
    pub(crate) flat_fee: Decimal,
}

impl Rate {
    fn describe(self, currency: Currency) -> String {
        match self {
            Rate::PerUnit(price) => format!("{} per unit", currency.display(price)),
            Rate::PerPackage { size, price } => {
                format!("{} per started {size} units", currency.display(price))
            }
        }
    }
}

impl Price {
    /// A one-line human description, such as `0.50 USD per started 1000 units`.
    pub fn describe(&self, currency: Currency) -> String {
        match &self.0 {
            PriceKind::Flat(rate) => rate.describe(currency),
            PriceKind::Tiered { mode, tiers } => {
                let mode = match mode {
                    TierMode::Graduated => "graduated",
                    TierMode::Volume => "volume",
                };
                let tiers: Vec<String> = tiers
                    .iter()
                    .map(|tier| {
                        let bound = match tier.up_to {
                            Some(up_to) => format!("up to {up_to}"),
                            None => "above".to_owned(),
                        };
                        let fee = if tier.flat_fee.is_zero() {
                            String::new()
                        } else {
                            format!(" plus {} flat", currency.display(tier.flat_fee))
                        };
                        format!("{bound} at {}{fee}", tier.rate.describe(currency))
                    })
                    .collect();
                format!("{mode} tiers: {}", tiers.join(", "))
            }
        }
    }
}

impl PriceConfig {
    /// Validates this price, reporting every problem.
    pub fn compile(&self) -> Result<Price, ConfigError> {
        let mut problems = Problems::default();
        let price = self.compile_at("", &mut problems);
        problems.finish(price)
    }

    pub(crate) fn compile_at(&self, path: &str, problems: &mut Problems) -> Option<Price> {
        match self {
            PriceConfig::PerUnit { unit_price } => problems
                .non_negative(field(path, "unitPrice"), *unit_price)
                .map(|p| Price(PriceKind::Flat(Rate::PerUnit(p)))),
            PriceConfig::PerPackage {
                package_size,
                package_price,
            } => {
                let size = problems.positive(field(path, "packageSize"), *package_size);
                let price = problems.non_negative(field(path, "packagePrice"), *package_price);
                Some(Price(PriceKind::Flat(Rate::PerPackage {
                    size: size?,
                    price: price?,
                })))
            }
            PriceConfig::Tiered { mode, tiers } => {
                compile_tiers(&field(path, "tiers"), tiers, problems)
                    .map(|tiers| Price(PriceKind::Tiered { mode: *mode, tiers }))
            }
        }
    }
}

fn compile_tiers(path: &str, tiers: &[TierConfig], problems: &mut Problems) -> Option<Vec<Tier>> {
    if tiers.is_empty() {
        problems.report(path, ProblemKind::Empty);
        return None;
    }
    let last = tiers.len() - 1;
    let mut previous: Option<Decimal> = None;
    let mut compiled = Vec::with_capacity(tiers.len());
    let mut valid = true;
    for (i, tier) in tiers.iter().enumerate() {
        let at = index(path, i);
        let up_to_path = field(&at, "upTo");
        match tier.up_to {
            Some(up_to) => {
                if i == last {
                    problems.report(&up_to_path, ProblemKind::LastTierBounded { up_to });
                    valid = false;
                }
                match previous {
                    Some(previous) if up_to <= previous => {
                        problems.report(
                            &up_to_path,
                            ProblemKind::TiersNotAscending {
                                previous,
                                value: up_to,
                            },
                        );
                        valid = false;
                    }
                    None if up_to <= Decimal::ZERO => {
                        problems.report(&up_to_path, ProblemKind::NotPositive { value: up_to });
                        valid = false;
                    }
                    _ => {}
                }
                previous = Some(up_to);
            }
            None if i != last => {
                problems.report(&up_to_path, ProblemKind::UnboundedTierNotLast);
                valid = false;
            }
            None => {}
        }
        let rate = match (tier.unit_price, tier.package_size, tier.package_price) {
            (Some(unit_price), None, None) => problems
                .non_negative(field(&at, "unitPrice"), unit_price)
                .map(Rate::PerUnit),
            (None, Some(size), Some(price)) => {
                let size = problems.positive(field(&at, "packageSize"), size);
                let price = problems.non_negative(field(&at, "packagePrice"), price);
                size.zip(price)
                    .map(|(size, price)| Rate::PerPackage { size, price })
            }
            _ => {
                problems.report(&at, ProblemKind::TierRate);
                None
            }
        };
        let flat_fee = problems.non_negative(
            field(&at, "flatFee"),
            tier.flat_fee.unwrap_or(Decimal::ZERO),
        );
        match (rate, flat_fee) {
            (Some(rate), Some(flat_fee)) => compiled.push(Tier {
                up_to: tier.up_to,
                rate,
                flat_fee,
            }),
            _ => valid = false,
        }
    }
    valid.then_some(compiled)
}

impl TryFrom<PriceConfig> for Price {
    type Error = ConfigError;
    fn try_from(config: PriceConfig) -> Result<Self, ConfigError> {
        config.compile()
    }
}

impl From<Price> for PriceConfig {
    fn from(price: Price) -> Self {
        PriceConfig::from(&price)
    }
}

impl From<&Price> for PriceConfig {
    fn from(price: &Price) -> Self {
        match &price.0 {
            PriceKind::Flat(Rate::PerUnit(unit_price)) => PriceConfig::PerUnit {
                unit_price: *unit_price,
            },
            PriceKind::Flat(Rate::PerPackage { size, price }) => PriceConfig::PerPackage {
                package_size: *size,
                package_price: *price,
            },
            PriceKind::Tiered { mode, tiers } => PriceConfig::Tiered {
                mode: *mode,
                tiers: tiers
                    .iter()
                    .map(|tier| {
                        let (unit_price, package_size, package_price) = match tier.rate {
                            Rate::PerUnit(p) => (Some(p), None, None),
                            Rate::PerPackage { size, price } => (None, Some(size), Some(price)),
                        };
                        TierConfig {
                            up_to: tier.up_to,
                            unit_price,
                            package_size,
                            package_price,
                            flat_fee: (!tier.flat_fee.is_zero()).then_some(tier.flat_fee),
                        }
                    })
                    .collect(),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------
// Meter pricing
// ---------------------------------------------------------------------------------------

/// What happens to usage beyond a meter's included units, as written in a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OveragePolicy {
    /// Usage beyond the allowance is billed at the meter's price.
    #[default]
    Allowed,
    /// No usage beyond the allowance: the edge blocks it and it is never billed.
    HardLimit,
}

/// One meter's pricing as written in a plan.
///
/// ```json
/// { "meter": "api_requests", "included": "100000",
///   "price": { "type": "perPackage", "packageSize": "1000", "packagePrice": "0.50" } }
/// { "meter": "api_requests", "included": "10000", "overage": "hardLimit" }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeterPricingConfig {
    pub meter: String,
    /// Units per month that cost nothing; defaults to zero.
    #[serde(default)]
    pub included: Decimal,
    /// The price of billable units; required unless `overage` is `hardLimit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<PriceConfig>,
    #[serde(default)]
    pub overage: OveragePolicy,
}

/// Usage beyond the included units of a validated meter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overage {
    /// Billed at this price.
    Allowed(Price),
    /// Not allowed: blocked at the edge, never billed.
    HardLimit,
}

/// A validated meter price: `included` units per month free, then the [`Overage`] rule.
/// Billable units are those beyond the allowance; tiers count from the first billable unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterPricing {
    included: Decimal,
    overage: Overage,
}

impl MeterPricing {
    /// A meter price with a non-negative allowance.
    pub fn new(included: Decimal, overage: Overage) -> Result<MeterPricing, ConfigError> {
        let mut problems = Problems::default();
        let included = problems.non_negative("included", included);
        problems.finish(included.map(|included| MeterPricing { included, overage }))
    }

    /// Units per month that cost nothing.
    pub fn included(&self) -> Decimal {
        self.included
    }

    /// What happens beyond the allowance.
    pub fn overage(&self) -> &Overage {
        &self.overage
    }

    /// The price of billable units; `None` for a hard-limit meter.
    pub fn price(&self) -> Option<&Price> {
        match &self.overage {
            Overage::Allowed(price) => Some(price),
            Overage::HardLimit => None,
        }
    }
}

impl MeterPricingConfig {
    fn compile_at(&self, path: &str, problems: &mut Problems) -> Option<(MeterName, MeterPricing)> {
        let meter = problems.meter(field(path, "meter"), &self.meter);
        let included = problems.non_negative(field(path, "included"), self.included);
        let price_path = field(path, "price");
        let overage = match (self.overage, &self.price) {
            (OveragePolicy::Allowed, Some(price)) => price
                .compile_at(&price_path, problems)
                .map(Overage::Allowed),
            (OveragePolicy::Allowed, None) => {
                problems.report(price_path, ProblemKind::PriceMissing);
                None
            }
            (OveragePolicy::HardLimit, None) => Some(Overage::HardLimit),
            (OveragePolicy::HardLimit, Some(_)) => {
                problems.report(price_path, ProblemKind::PriceWithHardLimit);
                None
            }
        };
        Some((
            meter?,
            MeterPricing {
                included: included?,
                overage: overage?,
            },
        ))
    }

    fn from_validated(meter: &MeterName, pricing: &MeterPricing) -> Self {
        let (price, overage) = match &pricing.overage {
            Overage::Allowed(price) => (Some(PriceConfig::from(price)), OveragePolicy::Allowed),
            Overage::HardLimit => (None, OveragePolicy::HardLimit),
        };
        MeterPricingConfig {
            meter: meter.to_string(),
            included: pricing.included,
            price,
            overage,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Shared allowances
// ---------------------------------------------------------------------------------------

/// An allowance shared by several meters, as written in a plan: "10 GB traffic" over MQTT
/// and HTTP. It is drawn on in the order the meters are listed (list the most expensive
/// first to favour the customer), after each meter's own `included` units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SharedAllowanceConfig {
    pub name: String,
    pub included: Decimal,
    pub meters: Vec<String>,
}

/// A validated shared allowance: every meter is priced by the plan with overage allowed,
/// and belongs to no other shared allowance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedAllowance {
    name: String,
    included: Decimal,
    meters: Vec<MeterName>,
}

impl SharedAllowance {
    /// The allowance's name, shown on invoice lines.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Units per month shared by the meters.
    pub fn included(&self) -> Decimal {
        self.included
    }

    /// The meters, in the order they draw on the allowance.
    pub fn meters(&self) -> &[MeterName] {
        &self.meters
    }
}

fn compile_shared_allowances(
    path: &str,
    configs: &[SharedAllowanceConfig],
    declared: &BTreeMap<MeterName, OveragePolicy>,
    problems: &mut Problems,
) -> Option<Vec<SharedAllowance>> {
    let mut names: BTreeMap<&str, String> = BTreeMap::new();
    let mut members: BTreeMap<MeterName, String> = BTreeMap::new();
    let mut compiled = Vec::with_capacity(configs.len());
    let mut valid = true;
    for (i, config) in configs.iter().enumerate() {
        let at = index(path, i);
        let name_path = field(&at, "name");
        if config.name.is_empty() {
            problems.report(&name_path, ProblemKind::Empty);
            valid = false;
        } else if let Some(first_at) = names.get(config.name.as_str()) {
            problems.report(
                &name_path,
                ProblemKind::Duplicate {
                    value: config.name.clone(),
                    first_at: first_at.clone(),
                },
            );
            valid = false;
        } else {
            names.insert(&config.name, name_path);
        }
        let included = problems.non_negative(field(&at, "included"), config.included);
        let meters_path = field(&at, "meters");
        if config.meters.is_empty() {
            problems.report(&meters_path, ProblemKind::Empty);
            valid = false;
        }
        let mut resolved = Vec::with_capacity(config.meters.len());
        for (j, name) in config.meters.iter().enumerate() {
            let meter_path = index(&meters_path, j);
            let Some(meter) = problems.meter(&meter_path, name) else {
                valid = false;
                continue;
            };
            match declared.get(&meter) {
                None => {
                    problems.report(
                        &meter_path,
                        ProblemKind::UnknownMeter {
                            meter: name.clone(),
                        },
                    );
                    valid = false;
                }
                Some(OveragePolicy::HardLimit) => {
                    problems.report(
                        &meter_path,
                        ProblemKind::SharedWithHardLimit {
                            meter: name.clone(),
                        },
                    );
                    valid = false;
                }
                Some(OveragePolicy::Allowed) => {}
            }
            if let Some(first_at) = members.get(&meter) {
                problems.report(
                    &meter_path,
                    ProblemKind::Duplicate {
                        value: name.clone(),
                        first_at: first_at.clone(),
                    },
                );
                valid = false;
            } else {
                members.insert(meter.clone(), meter_path);
            }
            resolved.push(meter);
        }
        match included {
            Some(included) => compiled.push(SharedAllowance {
                name: config.name.clone(),
                included,
                meters: resolved,
            }),
            None => valid = false,
        }
    }
    valid.then_some(compiled)
}

// ---------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------

/// Request rate limits as written in a plan; an absent limit is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitsConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_second: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_minute: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_hour: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_day: Option<u64>,
}

/// Usage quotas of one meter as written in a plan; an absent quota is unlimited, and a
/// quota of zero means the meter is not available on the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuotaConfig {
    pub meter: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_day: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_month: Option<Decimal>,
}

/// A plan's limits as written: request rates and per-meter quotas.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitsConfig {
    #[serde(default)]
    pub rate: RateLimitsConfig,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quotas: Vec<QuotaConfig>,
}

/// The period of a request rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RatePeriod {
    Second,
    Minute,
    Hour,
    Day,
}

impl RatePeriod {
    /// Length of the period in seconds.
    pub fn seconds(self) -> u32 {
        match self {
            RatePeriod::Second => 1,
            RatePeriod::Minute => 60,
            RatePeriod::Hour => 3_600,
            RatePeriod::Day => 86_400,
        }
    }
}

/// Validated request rate limits; `None` is unlimited, and a limit is never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimits {
    pub per_second: Option<NonZeroU64>,
    pub per_minute: Option<NonZeroU64>,
    pub per_hour: Option<NonZeroU64>,
    pub per_day: Option<NonZeroU64>,
}

impl RateLimits {
    /// The limits that are set, shortest period first.
    pub fn limits(&self) -> impl Iterator<Item = (RatePeriod, NonZeroU64)> {
        [
            (RatePeriod::Second, self.per_second),
            (RatePeriod::Minute, self.per_minute),
            (RatePeriod::Hour, self.per_hour),
            (RatePeriod::Day, self.per_day),
        ]
        .into_iter()
        .filter_map(|(period, limit)| limit.map(|limit| (period, limit)))
    }
}

/// Validated usage quotas of one meter; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quota {
    per_day: Option<Decimal>,
    per_month: Option<Decimal>,
}

impl Quota {
    /// Units per UTC day.
    pub fn per_day(&self) -> Option<Decimal> {
        self.per_day
    }

    /// Units per calendar month.
    pub fn per_month(&self) -> Option<Decimal> {
        self.per_month
    }

    /// The quota over a window of `granularity`: days and months have quotas, finer windows
    /// never do.
    pub fn for_window(&self, granularity: Granularity) -> Option<Decimal> {
        match granularity {
            Granularity::Day => self.per_day,
            Granularity::Month => self.per_month,
            Granularity::Minute | Granularity::Hour => None,
        }
    }

    /// Whether neither quota is set.
    pub fn is_unlimited(&self) -> bool {
        self.per_day.is_none() && self.per_month.is_none()
    }
}

/// A plan's validated limits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Limits {
    rate: RateLimits,
    quotas: BTreeMap<MeterName, Quota>,
}

impl Limits {
    /// Request rate limits.
    pub fn rate(&self) -> &RateLimits {
        &self.rate
    }

    /// The quotas written in the plan, by meter (see [`Plan::quota`] for the effective ones).
    pub fn quotas(&self) -> &BTreeMap<MeterName, Quota> {
        &self.quotas
    }
}

impl LimitsConfig {
    fn compile_at(&self, path: &str, problems: &mut Problems) -> Option<Limits> {
        let rate_path = field(path, "rate");
        let mut rate_limit = |name: &str, value: Option<u64>| match value {
            None => Some(None),
            Some(value) => match NonZeroU64::new(value) {
                Some(limit) => Some(Some(limit)),
                None => {
                    problems.report(field(&rate_path, name), ProblemKind::ZeroRateLimit);
                    None
                }
            },
        };
        let per_second = rate_limit("perSecond", self.rate.per_second);
        let per_minute = rate_limit("perMinute", self.rate.per_minute);
        let per_hour = rate_limit("perHour", self.rate.per_hour);
        let per_day = rate_limit("perDay", self.rate.per_day);

        let quotas_path = field(path, "quotas");
        let mut quotas = BTreeMap::new();
        let mut first_at: BTreeMap<MeterName, String> = BTreeMap::new();
        let mut valid = true;
        for (i, quota) in self.quotas.iter().enumerate() {
            let at = index(&quotas_path, i);
            let meter_path = field(&at, "meter");
            let meter = problems.meter(&meter_path, &quota.meter);
            let mut limit = |name: &str, value: Option<Decimal>| match value {
                None => Some(None),
                Some(value) => problems.non_negative(field(&at, name), value).map(Some),
            };
            let per_day = limit("perDay", quota.per_day);
            let per_month = limit("perMonth", quota.per_month);
            match (meter, per_day, per_month) {
                (Some(meter), Some(per_day), Some(per_month)) => {
                    if let Some(first) = first_at.get(&meter) {
                        problems.report(
                            &meter_path,
                            ProblemKind::Duplicate {
                                value: quota.meter.clone(),
                                first_at: first.clone(),
                            },
                        );
                        valid = false;
                    } else {
                        first_at.insert(meter.clone(), meter_path);
                        quotas.insert(meter, Quota { per_day, per_month });
                    }
                }
                _ => valid = false,
            }
        }
        let rate = RateLimits {
            per_second: per_second?,
            per_minute: per_minute?,
            per_hour: per_hour?,
            per_day: per_day?,
        };
        valid.then_some(Limits { rate, quotas })
    }
}

impl From<&Limits> for LimitsConfig {
    fn from(limits: &Limits) -> Self {
        LimitsConfig {
            rate: RateLimitsConfig {
                per_second: limits.rate.per_second.map(NonZeroU64::get),
                per_minute: limits.rate.per_minute.map(NonZeroU64::get),
                per_hour: limits.rate.per_hour.map(NonZeroU64::get),
                per_day: limits.rate.per_day.map(NonZeroU64::get),
            },
            quotas: limits
                .quotas
                .iter()
                .map(|(meter, quota)| QuotaConfig {
                    meter: meter.to_string(),
                    per_day: quota.per_day,
                    per_month: quota.per_month,
                })
                .collect(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Plans
// ---------------------------------------------------------------------------------------

/// A plan version as written by an operator. See the module docs for an example.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanConfig {
    pub name: String,
    /// When this version of the plan takes effect (RFC 3339).
    pub effective_from: DateTime<Utc>,
    /// ISO 4217 code, such as `USD`.
    pub currency: String,
    /// The monthly fee, prorated by the second when the plan changes within a month.
    pub base_fee: Decimal,
    /// One entry per priced meter; a meter may appear once.
    #[serde(default)]
    pub meters: Vec<MeterPricingConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_allowances: Vec<SharedAllowanceConfig>,
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// A validated plan version. Deserialises from, and serialises to, the [`PlanConfig`] JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PlanConfig", into = "PlanConfig")]
pub struct Plan {
    name: PlanName,
    effective_from: DateTime<Utc>,
    currency: Currency,
    base_fee: Decimal,
    meters: BTreeMap<MeterName, MeterPricing>,
    shared_allowances: Vec<SharedAllowance>,
    limits: Limits,
}

impl PlanConfig {
    /// Validates the whole plan and reports every problem at once.
    pub fn compile(&self) -> Result<Plan, ConfigError> {
        let mut problems = Problems::default();
        let name = PlanName::new(self.name.as_str())
            .map_err(|e| problems.report("name", e))
            .ok();
        let currency = problems.currency("currency", &self.currency);
        let base_fee = problems.non_negative("baseFee", self.base_fee);

        // Meters are resolved by name even when their pricing is invalid, so duplicates are
        // still found and references to a broken meter are not reported a second time.
        let mut meters = BTreeMap::new();
        let mut declared: BTreeMap<MeterName, (String, OveragePolicy)> = BTreeMap::new();
        let mut meters_valid = true;
        for (i, config) in self.meters.iter().enumerate() {
            let at = index("meters", i);
            let compiled = config.compile_at(&at, &mut problems);
            if let Ok(meter) = MeterName::new(config.meter.as_str()) {
                if let Some((first_at, _)) = declared.get(&meter) {
                    problems.report(
                        field(&at, "meter"),
                        ProblemKind::Duplicate {
                            value: meter.to_string(),
                            first_at: first_at.clone(),
                        },
                    );
                    meters_valid = false;
                    continue;
                }
                declared.insert(meter, (field(&at, "meter"), config.overage));
            }
            match compiled {
                Some((meter, pricing)) => {
                    meters.insert(meter, pricing);
                }
                None => meters_valid = false,
            }
        }
        let declared: BTreeMap<MeterName, OveragePolicy> = declared
            .into_iter()
            .map(|(meter, (_, overage))| (meter, overage))
            .collect();
        let shared_allowances = compile_shared_allowances(
            "sharedAllowances",
            &self.shared_allowances,
            &declared,
            &mut problems,
        );
        let limits = self.limits.compile_at("limits", &mut problems);

        let plan = match (name, currency, base_fee, shared_allowances, limits) {
            (Some(name), Some(currency), Some(base_fee), Some(shared_allowances), Some(limits))
                if meters_valid =>
            {
                Some(Plan {
                    name,
                    effective_from: self.effective_from,
                    currency,
                    base_fee,
                    meters,
                    shared_allowances,
                    limits,
                })
            }
            _ => None,
        };
        problems.finish(plan)
    }
}

impl TryFrom<PlanConfig> for Plan {
    type Error = ConfigError;
    fn try_from(config: PlanConfig) -> Result<Self, ConfigError> {
        config.compile()
    }
}

impl From<Plan> for PlanConfig {
    fn from(plan: Plan) -> Self {
        PlanConfig::from(&plan)
    }
}

impl From<&Plan> for PlanConfig {
    fn from(plan: &Plan) -> Self {
        PlanConfig {
            name: plan.name.to_string(),
            effective_from: plan.effective_from,
            currency: plan.currency.code().to_owned(),
            base_fee: plan.base_fee,
            meters: plan
                .meters
                .iter()
                .map(|(meter, pricing)| MeterPricingConfig::from_validated(meter, pricing))
                .collect(),
            shared_allowances: plan
                .shared_allowances
                .iter()
                .map(|shared| SharedAllowanceConfig {
                    name: shared.name.clone(),
                    included: shared.included,
                    meters: shared.meters.iter().map(MeterName::to_string).collect(),
                })
                .collect(),
            limits: LimitsConfig::from(&plan.limits),
        }
    }
}

impl Plan {
    /// The plan's name, shared by all its versions.
    pub fn name(&self) -> &PlanName {
        &self.name
    }

    /// When this version takes effect.
    pub fn effective_from(&self) -> DateTime<Utc> {
        self.effective_from
    }

    /// The currency of every amount in the plan.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The monthly base fee, before proration.
    pub fn base_fee(&self) -> Decimal {
        self.base_fee
    }

    /// Every priced meter.
    pub fn meters(&self) -> &BTreeMap<MeterName, MeterPricing> {
        &self.meters
    }

    /// The pricing of one meter; `None` if the plan does not price it.
    pub fn meter(&self, meter: &MeterName) -> Option<&MeterPricing> {
        self.meters.get(meter)
    }

    /// Allowances shared by several meters.
    pub fn shared_allowances(&self) -> &[SharedAllowance] {
        &self.shared_allowances
    }

    /// Rate limits and the quotas written in the plan.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The request rate limits.
    pub fn rate_limits(&self) -> &RateLimits {
        &self.limits.rate
    }

    /// The effective quotas of `meter`: the plan's written quotas, with the monthly quota
    /// tightened to the allowance when the meter has a hard limit.
    pub fn quota(&self, meter: &MeterName) -> Quota {
        let written = self.limits.quotas.get(meter).copied().unwrap_or_default();
        let hard_limit = self
            .meters
            .get(meter)
            .filter(|pricing| pricing.overage == Overage::HardLimit)
            .map(MeterPricing::included);
        let per_month = match (written.per_month, hard_limit) {
            (Some(written), Some(hard)) => Some(written.min(hard)),
            (written, hard) => written.or(hard),
        };
        Quota {
            per_day: written.per_day,
            per_month,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Timelines
// ---------------------------------------------------------------------------------------

/// From `from` on, the tenant is on `plan`, until the next change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanChange<'a> {
    pub from: DateTime<Utc>,
    pub plan: &'a Plan,
}

/// A stretch of time `[from, until)` on one plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanSpan<'a> {
    pub plan: &'a Plan,
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

/// Why a [`PlanTimeline`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TimelineError {
    #[error("a plan timeline needs at least one plan")]
    Empty,
    #[error("plan change {index} at {from} does not come strictly after the previous change")]
    OutOfOrder { index: usize, from: DateTime<Utc> },
    #[error(
        "plan {plan} is priced in {found}, but the timeline is in {expected}; one invoice has one currency"
    )]
    MixedCurrencies {
        plan: PlanName,
        expected: Currency,
        found: Currency,
    },
}

/// The plans a tenant was on, in time order, all in one currency. Each change holds until
/// the next; before the first change the tenant had no plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanTimeline<'a> {
    changes: Vec<PlanChange<'a>>,
    currency: Currency,
}

impl<'a> PlanTimeline<'a> {
    /// Changes in strictly ascending time order, in one currency.
    pub fn new(changes: Vec<PlanChange<'a>>) -> Result<PlanTimeline<'a>, TimelineError> {
        let first = changes.first().ok_or(TimelineError::Empty)?;
        let expected = first.plan.currency;
        let out_of_order = changes
            .windows(2)
            .enumerate()
            .find_map(|(i, pair)| match pair {
                [before, after] if after.from <= before.from => Some((i + 1, after.from)),
                _ => None,
            });
        if let Some((index, from)) = out_of_order {
            return Err(TimelineError::OutOfOrder { index, from });
        }
        if let Some(other) = changes.iter().find(|c| c.plan.currency != expected) {
            return Err(TimelineError::MixedCurrencies {
                plan: other.plan.name.clone(),
                expected,
                found: other.plan.currency,
            });
        }
        Ok(PlanTimeline {
            changes,
            currency: expected,
        })
    }

    /// One plan, in force at every instant (its `effectiveFrom` is not consulted).
    pub fn single(plan: &'a Plan) -> PlanTimeline<'a> {
        PlanTimeline {
            changes: vec![PlanChange {
                from: DateTime::<Utc>::MIN_UTC,
                plan,
            }],
            currency: plan.currency,
        }
    }

    /// The versions of a plan, each in force from its `effectiveFrom`, in any order. Two
    /// versions with the same `effectiveFrom` are refused as out of order.
    pub fn from_versions(versions: &'a [Plan]) -> Result<PlanTimeline<'a>, TimelineError> {
        let mut changes: Vec<PlanChange<'a>> = versions
            .iter()
            .map(|plan| PlanChange {
                from: plan.effective_from,
                plan,
            })
            .collect();
        changes.sort_by_key(|change| change.from);
        PlanTimeline::new(changes)
    }

    /// The currency every plan of the timeline is priced in.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The changes, in time order.
    pub fn changes(&self) -> &[PlanChange<'a>] {
        &self.changes
    }

    /// The plan in force at `at`, if the first change has happened by then.
    pub fn in_force_at(&self, at: DateTime<Utc>) -> Option<&'a Plan> {
        self.changes
            .iter()
            .rev()
            .find(|change| change.from <= at)
            .map(|change| change.plan)
    }

    /// The stretches of `window` spent on each plan, in time order; empty stretches are
    /// left out, and time before the first change belongs to no plan.
    pub fn spans_within(&self, window: Window) -> Vec<PlanSpan<'a>> {
        let ends = self
            .changes
            .iter()
            .skip(1)
            .map(|change| change.from)
            .map(Some)
            .chain(std::iter::once(None));
        self.changes
            .iter()
            .zip(ends)
            .filter_map(|(change, next)| {
                let from = change.from.max(window.start());
                let until = next.map_or(window.end(), |next| next.min(window.end()));
                (from < until).then_some(PlanSpan {
                    plan: change.plan,
                    from,
                    until,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;
    use serde_json::json;

    fn compile(value: serde_json::Value) -> Result<Plan, ConfigError> {
        serde_json::from_value::<PlanConfig>(value)
            .unwrap()
            .compile()
    }

    #[test]
    fn a_valid_plan_round_trips_through_its_json_shape() {
        let plan = compile(json!({
            "name": "pro",
            "effectiveFrom": "2026-01-01T00:00:00Z",
            "currency": "EUR",
            "baseFee": "99",
            "meters": [
                { "meter": "api_requests", "included": "500000",
                  "price": { "type": "perPackage", "packageSize": "1000", "packagePrice": "0.30" } },
                { "meter": "storage_gb", "price": { "type": "tiered", "mode": "volume", "tiers": [
                    { "upTo": "100", "unitPrice": "0.10", "flatFee": "1" },
                    { "unitPrice": "0.08" } ] } },
                { "meter": "seats", "included": "3", "overage": "hardLimit" }
            ],
            "limits": {
                "rate": { "perSecond": 50, "perDay": 1000000 },
                "quotas": [ { "meter": "api_requests", "perDay": "40000" } ]
            }
        }))
        .unwrap();
        let json = serde_json::to_value(&plan).unwrap();
        let back: Plan = serde_json::from_value(json).unwrap();
        assert_eq!(back, plan);
    }

    #[test]
    fn hard_limits_tighten_the_monthly_quota() {
        let plan = compile(json!({
            "name": "free", "effectiveFrom": "2026-01-01T00:00:00Z", "currency": "USD",
            "baseFee": "0",
            "meters": [ { "meter": "api_requests", "included": "10000", "overage": "hardLimit" } ],
            "limits": { "quotas": [
                { "meter": "api_requests", "perDay": "1000", "perMonth": "20000" },
                { "meter": "exports", "perMonth": "0" } ] }
        }))
        .unwrap();
        let api = MeterName::new("api_requests").unwrap();
        assert_eq!(plan.quota(&api).per_month(), Some(dec!(10000)));
        assert_eq!(
            plan.quota(&api).for_window(Granularity::Day),
            Some(dec!(1000))
        );
        let exports = MeterName::new("exports").unwrap();
        assert_eq!(plan.quota(&exports).per_month(), Some(dec!(0)));
        let other = MeterName::new("other").unwrap();
        assert!(plan.quota(&other).is_unlimited());
        assert_eq!(plan.rate_limits().limits().count(), 0);
    }

    #[test]
    fn timeline_spans_clip_to_the_window() {
        let plan = compile(json!({
            "name": "p", "effectiveFrom": "2026-01-01T00:00:00Z", "currency": "USD", "baseFee": "1"
        }))
        .unwrap();
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let timeline = PlanTimeline::new(vec![
            PlanChange {
                from: t("2026-10-01T00:00:00Z"),
                plan: &plan,
            },
            PlanChange {
                from: t("2026-10-20T00:00:00Z"),
                plan: &plan,
            },
            PlanChange {
                from: t("2026-11-10T00:00:00Z"),
                plan: &plan,
            },
        ])
        .unwrap();
        let november = Window::containing(Granularity::Month, t("2026-11-05T00:00:00Z"));
        let spans = timeline.spans_within(november);
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].from, t("2026-11-01T00:00:00Z"));
        assert_eq!(spans[0].until, t("2026-11-10T00:00:00Z"));
        assert_eq!(spans[1].until, t("2026-12-01T00:00:00Z"));
        assert!(timeline.in_force_at(t("2026-09-30T00:00:00Z")).is_none());
        assert!(PlanTimeline::new(vec![]).is_err());
    }

    #[test]
    fn timelines_refuse_unordered_changes_and_mixed_currencies() {
        let plan_in = |currency: &str, from: &str| {
            compile(json!({
                "name": "p", "effectiveFrom": from, "currency": currency, "baseFee": "1"
            }))
            .unwrap()
        };
        let january = plan_in("USD", "2026-01-01T00:00:00Z");
        let again = plan_in("USD", "2026-01-01T00:00:00Z");
        let euros = plan_in("EUR", "2026-02-01T00:00:00Z");
        let same_instant = [january.clone(), again];
        assert!(matches!(
            PlanTimeline::from_versions(&same_instant),
            Err(TimelineError::OutOfOrder { index: 1, .. })
        ));
        let mixed = [euros, january];
        assert!(matches!(
            PlanTimeline::from_versions(&mixed),
            Err(TimelineError::MixedCurrencies { .. })
        ));
    }
}
