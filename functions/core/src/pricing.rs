//! Pricing arithmetic: pure functions from quantities and prices to unrounded amounts.
//!
//! Everything here is exact [`Decimal`] arithmetic with overflow checked, and nothing is
//! rounded: the invoice rounds each finished line once (see [`crate::money`]). Keeping the
//! maths separate from invoices lets estimates, invoice previews and tests share one
//! definition of what a quantity costs.
//!
//! The rules:
//! - **Allowance first.** A meter's `included` units (plus any units drawn from a shared
//!   allowance) are free; only the units beyond them are *billable*. Tiers count from the
//!   first billable unit.
//! - **Hard limits.** On a hard-limit meter nothing is billable; units beyond the allowance
//!   (the edge's worst-case overshoot) are reported as `over_limit` and never charged.
//! - **Packages are started packages.** A package rate charges `ceil(quantity / size)`
//!   packages, computed with an exact remainder rather than an inexact division.
//! - **Graduated tiers** price the units inside each tier at that tier's rate and add the
//!   tier's flat fee when at least one unit falls inside it. **Volume tiers** price every
//!   unit at the rate of the tier that contains the whole quantity (a quantity equal to a
//!   bound belongs to the tier that bound closes) plus that tier's flat fee. Zero billable
//!   units cost nothing in either mode.
//! - **Proration.** When the plan changes within a month, each plan's base fee is charged
//!   for the share of the month it was in force: `base fee × seconds in force / seconds in
//!   the month`. Shares are measured from whole-second offsets into the month, so the shares
//!   of consecutive plans always add up to exactly the month.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::MeterName;
use crate::plan::{
    MeterPricing, Overage, Plan, PlanTimeline, Price, PriceKind, Rate, SharedAllowance, Tier,
    TierMode,
};
use crate::window::Window;

/// Why a quantity could not be priced.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PricingError {
    #[error("quantity {quantity} is negative; usage never is")]
    NegativeQuantity { quantity: Decimal },
    #[error("the amount exceeds the range of a decimal")]
    Overflow,
}

/// The part of a quantity one tier priced. `amount` includes the tier's flat fee and is not
/// rounded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TierCharge {
    /// Position of the tier in the price, from 1.
    pub tier: usize,
    pub up_to: Option<Decimal>,
    pub quantity: Decimal,
    pub flat_fee: Decimal,
    pub amount: Decimal,
}

/// What a price charges for a billable quantity: the unrounded amount and, for tiered
/// prices, the tiers that contributed to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PricedQuantity {
    pub amount: Decimal,
    pub tiers: Vec<TierCharge>,
}

/// How a meter's month quantity was priced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PriceBreakdown {
    /// The usage.
    pub quantity: Decimal,
    /// The free units that applied: the meter's allowance plus units drawn from a shared one.
    pub included: Decimal,
    /// Units charged for: `max(0, quantity - included)`, or zero under a hard limit.
    pub billable: Decimal,
    /// Units beyond a hard limit, reported and never charged.
    pub over_limit: Decimal,
    /// Tier pieces of a tiered price, empty otherwise.
    pub tiers: Vec<TierCharge>,
    /// The unrounded amount.
    pub amount: Decimal,
}

fn add(a: Decimal, b: Decimal) -> Result<Decimal, PricingError> {
    a.checked_add(b).ok_or(PricingError::Overflow)
}

fn mul(a: Decimal, b: Decimal) -> Result<Decimal, PricingError> {
    a.checked_mul(b).ok_or(PricingError::Overflow)
}

/// The number of started packages of `size` in `quantity`: `ceil(quantity / size)`.
fn started_packages(quantity: Decimal, size: Decimal) -> Result<Decimal, PricingError> {
    let remainder = quantity.checked_rem(size).ok_or(PricingError::Overflow)?;
    let whole = quantity
        .checked_sub(remainder)
        .and_then(|full| full.checked_div(size))
        .ok_or(PricingError::Overflow)?
        .round();
    if remainder.is_zero() {
        Ok(whole)
    } else {
        add(whole, Decimal::ONE)
    }
}

fn rate_amount(rate: Rate, quantity: Decimal) -> Result<Decimal, PricingError> {
    match rate {
        Rate::PerUnit(price) => mul(quantity, price),
        Rate::PerPackage { size, price } => mul(started_packages(quantity, size)?, price),
    }
}

fn tier_charge(
    position: usize,
    tier: &Tier,
    quantity: Decimal,
) -> Result<TierCharge, PricingError> {
    Ok(TierCharge {
        tier: position,
        up_to: tier.up_to,
        quantity,
        flat_fee: tier.flat_fee,
        amount: add(rate_amount(tier.rate, quantity)?, tier.flat_fee)?,
    })
}

fn graduated(tiers: &[Tier], billable: Decimal) -> Result<Vec<TierCharge>, PricingError> {
    let mut charges = Vec::new();
    let mut lower = Decimal::ZERO;
    for (i, tier) in tiers.iter().enumerate() {
        if billable <= lower {
            break;
        }
        let upper = tier.up_to.map_or(billable, |up_to| up_to.min(billable));
        charges.push(tier_charge(i + 1, tier, upper - lower)?);
        match tier.up_to {
            Some(up_to) => lower = up_to,
            None => break,
        }
    }
    Ok(charges)
}

fn volume(tiers: &[Tier], billable: Decimal) -> Result<Vec<TierCharge>, PricingError> {
    if billable.is_zero() {
        return Ok(Vec::new());
    }
    tiers
        .iter()
        .enumerate()
        .find(|(_, tier)| tier.up_to.is_none_or(|up_to| billable <= up_to))
        .map(|(i, tier)| tier_charge(i + 1, tier, billable))
        .into_iter()
        .collect()
}

/// Prices `billable` units under `price`, unrounded.
pub fn price_quantity(price: &Price, billable: Decimal) -> Result<PricedQuantity, PricingError> {
    if billable.is_sign_negative() && !billable.is_zero() {
        return Err(PricingError::NegativeQuantity { quantity: billable });
    }
    match &price.0 {
        PriceKind::Flat(rate) => Ok(PricedQuantity {
            amount: rate_amount(*rate, billable)?,
            tiers: Vec::new(),
        }),
        PriceKind::Tiered { mode, tiers } => {
            let tiers = match mode {
                TierMode::Graduated => graduated(tiers, billable)?,
                TierMode::Volume => volume(tiers, billable)?,
            };
            let amount = tiers
                .iter()
                .try_fold(Decimal::ZERO, |sum, tier| add(sum, tier.amount))?;
            Ok(PricedQuantity { amount, tiers })
        }
    }
}

/// Prices a month's `quantity` of one meter under its plan pricing, unrounded.
pub fn price_usage(
    pricing: &MeterPricing,
    quantity: Decimal,
) -> Result<PriceBreakdown, PricingError> {
    price_usage_with_allowance(pricing, quantity, Decimal::ZERO)
}

/// Like [`price_usage`], with `shared` extra free units drawn from a shared allowance
/// (see [`allocate_shared_allowance`]).
pub fn price_usage_with_allowance(
    pricing: &MeterPricing,
    quantity: Decimal,
    shared: Decimal,
) -> Result<PriceBreakdown, PricingError> {
    if quantity.is_sign_negative() && !quantity.is_zero() {
        return Err(PricingError::NegativeQuantity { quantity });
    }
    let included = add(pricing.included(), shared.max(Decimal::ZERO))?;
    let beyond = (quantity - included.min(quantity)).max(Decimal::ZERO);
    match pricing.overage() {
        Overage::HardLimit => Ok(PriceBreakdown {
            quantity,
            included,
            billable: Decimal::ZERO,
            over_limit: beyond,
            tiers: Vec::new(),
            amount: Decimal::ZERO,
        }),
        Overage::Allowed(price) => {
            let priced = price_quantity(price, beyond)?;
            Ok(PriceBreakdown {
                quantity,
                included,
                billable: beyond,
                over_limit: Decimal::ZERO,
                tiers: priced.tiers,
                amount: priced.amount,
            })
        }
    }
}

/// How many units each meter of `shared` draws from it this month, given the month's
/// usage. Meters draw in their listed order, each only for units beyond its own allowance,
/// until the shared allowance runs out. Meters that draw nothing are left out.
pub fn allocate_shared_allowance(
    shared: &SharedAllowance,
    plan: &Plan,
    usage: &BTreeMap<MeterName, Decimal>,
) -> BTreeMap<MeterName, Decimal> {
    let mut remaining = shared.included();
    let mut drawn = BTreeMap::new();
    for meter in shared.meters() {
        if remaining <= Decimal::ZERO {
            break;
        }
        let quantity = usage.get(meter).copied().unwrap_or(Decimal::ZERO);
        let own = plan
            .meter(meter)
            .map_or(Decimal::ZERO, MeterPricing::included);
        let beyond = if quantity > own {
            quantity - own
        } else {
            Decimal::ZERO
        };
        let take = beyond.min(remaining);
        if take > Decimal::ZERO {
            remaining -= take;
            drawn.insert(meter.clone(), take);
        }
    }
    drawn
}

/// The share of a period a plan was in force: `active_seconds / period_seconds`, kept as
/// whole seconds so shares add up exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Proration {
    pub active_seconds: i64,
    pub period_seconds: i64,
}

impl Proration {
    /// The share as a decimal fraction (for display; amounts use [`Proration::apply`]).
    pub fn fraction(&self) -> Decimal {
        Decimal::from(self.active_seconds)
            .checked_div(Decimal::from(self.period_seconds))
            .unwrap_or(Decimal::ZERO)
    }

    /// Whether the plan was in force for the whole period.
    pub fn is_whole(&self) -> bool {
        self.active_seconds == self.period_seconds
    }

    /// `amount × active_seconds / period_seconds`, multiplying first so the result is exact
    /// whenever it is representable; the whole period returns `amount` itself.
    pub fn apply(&self, amount: Decimal) -> Result<Decimal, PricingError> {
        if self.is_whole() {
            return Ok(amount);
        }
        if self.period_seconds <= 0 {
            return Ok(Decimal::ZERO);
        }
        mul(amount, Decimal::from(self.active_seconds))?
            .checked_div(Decimal::from(self.period_seconds))
            .ok_or(PricingError::Overflow)
    }
}

/// The share of `period` covered by `[from, until)`. Both ends are clipped to the period and
/// measured in whole seconds from its start, so adjacent stretches share their boundary.
pub fn proration(from: DateTime<Utc>, until: DateTime<Utc>, period: Window) -> Proration {
    let start = period.start();
    let period_seconds = (period.end() - start).num_seconds();
    let offset = |t: DateTime<Utc>| (t - start).num_seconds().clamp(0, period_seconds);
    Proration {
        active_seconds: (offset(until) - offset(from)).max(0),
        period_seconds,
    }
}

/// One plan's base fee for the part of a period it was in force, unrounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProratedBaseFee<'a> {
    pub plan: &'a Plan,
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub proration: Proration,
    pub amount: Decimal,
}

/// The base fee of every plan in force during `period`, each prorated by the seconds it was
/// in force. A plan in force for the whole period pays its whole fee.
pub fn prorate_base_fees<'a>(
    timeline: &PlanTimeline<'a>,
    period: Window,
) -> Result<Vec<ProratedBaseFee<'a>>, PricingError> {
    let mut fees = Vec::new();
    for span in timeline.spans_within(period) {
        let share = proration(span.from, span.until, period);
        if share.active_seconds == 0 {
            continue;
        }
        fees.push(ProratedBaseFee {
            plan: span.plan,
            from: span.from,
            until: span.until,
            proration: share,
            amount: share.apply(span.plan.base_fee())?,
        });
    }
    Ok(fees)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::PriceConfig;
    use rust_decimal_macros::dec;
    use serde_json::json;

    fn price(value: serde_json::Value) -> Price {
        serde_json::from_value::<PriceConfig>(value)
            .unwrap()
            .compile()
            .unwrap()
    }

    #[test]
    fn started_packages_round_up_exactly() {
        for (quantity, size, expected) in [
            (dec!(0), dec!(1000), dec!(0)),
            (dec!(1), dec!(1000), dec!(1)),
            (dec!(1000), dec!(1000), dec!(1)),
            (dec!(1001), dec!(1000), dec!(2)),
            (dec!(0.3), dec!(0.1), dec!(3)),
            (dec!(0.31), dec!(0.1), dec!(4)),
            (dec!(10), dec!(3), dec!(4)),
        ] {
            assert_eq!(
                started_packages(quantity, size).unwrap(),
                expected,
                "{quantity}/{size}"
            );
        }
    }

    #[test]
    fn usage_is_billable_only_beyond_the_allowance() {
        let per_thousand = price(json!({
            "type": "perPackage", "packageSize": "1000", "packagePrice": "0.50"
        }));
        let starter = MeterPricing::new(dec!(100000), Overage::Allowed(per_thousand)).unwrap();
        let breakdown = price_usage(&starter, dec!(100001)).unwrap();
        assert_eq!(breakdown.included, dec!(100000));
        assert_eq!(breakdown.billable, dec!(1));
        assert_eq!(breakdown.amount, dec!(0.50));
        let under = price_usage(&starter, dec!(5)).unwrap();
        assert_eq!((under.billable, under.amount), (dec!(0), dec!(0)));

        let free = MeterPricing::new(dec!(10000), Overage::HardLimit).unwrap();
        let over = price_usage(&free, dec!(10500)).unwrap();
        assert_eq!(
            (over.billable, over.over_limit, over.amount),
            (dec!(0), dec!(500), dec!(0))
        );
        assert!(MeterPricing::new(dec!(-1), Overage::HardLimit).is_err());
    }

    #[test]
    fn negative_quantities_are_refused() {
        let p = price(json!({ "type": "perUnit", "unitPrice": "1" }));
        assert_eq!(
            price_quantity(&p, dec!(-1)),
            Err(PricingError::NegativeQuantity { quantity: dec!(-1) })
        );
    }

    #[test]
    fn overflow_is_an_error_not_a_panic() {
        let p = price(json!({ "type": "perUnit", "unitPrice": "1000000" }));
        assert_eq!(
            price_quantity(&p, Decimal::MAX),
            Err(PricingError::Overflow)
        );
    }

    #[test]
    fn volume_zero_costs_nothing_even_with_a_flat_fee() {
        let p = price(json!({ "type": "tiered", "mode": "volume", "tiers": [
            { "upTo": "10", "unitPrice": "1", "flatFee": "5" }, { "unitPrice": "0.5" } ] }));
        let priced = price_quantity(&p, dec!(0)).unwrap();
        assert_eq!(priced.amount, dec!(0));
        assert!(priced.tiers.is_empty());
    }
}
