//! Invoice previews: a month of usage priced into lines.
//!
//! An invoice preview is what a tenant would be billed for a calendar month, computed from
//! its month quantities and the plans it was on. It is built from the exact arithmetic of
//! [`crate::pricing`]; each line is rounded exactly once, with [`Currency::round`], and the
//! total is the sum of the rounded lines, so the lines always add up to the total a tenant
//! sees.
//!
//! The rules:
//! - Base fees: one line per plan in force during the month, prorated by the second (see
//!   [`crate::pricing`]).
//! - Usage: the month quantities are priced by the plan in force at the end of the month
//!   (the last plan of the timeline active within it), with that plan's full allowances;
//!   metered usage is not split across plan changes.
//! - Every priced meter of that plan gets a line, even with no usage. A meter with usage
//!   but no price in the plan gets a zero-amount line of kind `unpriced`: usage is never
//!   dropped silently.
//! - Lines come in a stable order: base fees by time, then meters by name.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::{MeterName, PlanName, TenantId};
use crate::money::Currency;
use crate::plan::{Plan, PlanTimeline, Price};
use crate::pricing::{
    PricingError, Proration, TierCharge, allocate_shared_allowance, price_usage_with_allowance,
    prorate_base_fees,
};
use crate::window::{Granularity, Window};

/// What a tenant would be billed for one month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvoicePreview {
    pub tenant: TenantId,
    /// The month.
    pub period: Window,
    /// The plan that priced the usage: the last one in force during the month.
    pub plan: PlanName,
    pub currency: Currency,
    pub lines: Vec<InvoiceLine>,
    /// The sum of the rounded line amounts.
    pub subtotal: Decimal,
    /// What is due: the subtotal (previews carry no taxes or discounts).
    pub total: Decimal,
}

/// A month's final statement: its invoice preview frozen at month close, with the plan
/// versions that priced it, so a later plan change or a rollup recomputation cannot alter
/// what was stated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Statement {
    pub invoice: InvoicePreview,
    /// The plan versions in force during the month, oldest first.
    pub plan_versions: Vec<Plan>,
    pub closed_at: DateTime<Utc>,
}

/// One line of an invoice preview; `amount` is rounded to the currency's minor unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvoiceLine {
    #[serde(flatten)]
    pub item: LineItem,
    pub description: String,
    pub amount: Decimal,
}

/// What an invoice line charges for, tagged by `kind` in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum LineItem {
    BaseFee(BaseFeeCharge),
    Usage(UsageCharge),
    /// Usage of a meter the plan does not price; charged nothing, shown so it is not lost.
    Unpriced(UnpricedUsage),
}

/// A plan's base fee for the part of the month it was in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BaseFeeCharge {
    pub plan: PlanName,
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub proration: Proration,
}

/// A priced meter's month usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageCharge {
    pub meter: MeterName,
    pub quantity: Decimal,
    /// Free units applied, including any drawn from a shared allowance.
    pub included: Decimal,
    pub billable: Decimal,
    /// Units beyond a hard limit: reported, never charged.
    pub over_limit: Decimal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_allowance: Option<SharedDraw>,
    /// The price of billable units; absent for a hard-limit meter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Price>,
    /// The tier pieces of a tiered price, unrounded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<TierCharge>,
}

/// Units a meter drew from a shared allowance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SharedDraw {
    pub name: String,
    pub units: Decimal,
}

/// Usage of a meter without a price in the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnpricedUsage {
    pub meter: MeterName,
    pub quantity: Decimal,
}

impl InvoiceLine {
    /// Whether the line reports usage the plan does not price.
    pub fn is_unpriced(&self) -> bool {
        matches!(self.item, LineItem::Unpriced(_))
    }
}

/// Why an invoice preview could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvoiceError {
    #[error("invoice period {period} is not a month")]
    NotAMonth { period: Window },
    #[error("no plan is in force during {period}")]
    NoPlanInPeriod { period: Window },
    #[error("usage of {meter} is negative ({quantity})")]
    NegativeUsage { meter: MeterName, quantity: Decimal },
    #[error("could not price {line}")]
    Pricing {
        line: String,
        #[source]
        source: PricingError,
    },
}

fn pricing_error(line: impl Into<String>) -> impl FnOnce(PricingError) -> InvoiceError {
    let line = line.into();
    move |source| InvoiceError::Pricing { line, source }
}

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// Prices a month of usage for `tenant`: base fees of every plan in `plans` in force
/// during `period` (prorated), and `usage` (month quantities by meter) under the plan in
/// force at the end of it.
pub fn preview_invoice(
    tenant: &TenantId,
    period: Window,
    plans: &PlanTimeline<'_>,
    usage: &BTreeMap<MeterName, Decimal>,
) -> Result<InvoicePreview, InvoiceError> {
    if period.granularity() != Granularity::Month {
        return Err(InvoiceError::NotAMonth { period });
    }
    if let Some((meter, quantity)) = usage
        .iter()
        .find(|(_, quantity)| quantity.is_sign_negative() && !quantity.is_zero())
    {
        return Err(InvoiceError::NegativeUsage {
            meter: meter.clone(),
            quantity: *quantity,
        });
    }
    let usage_plan = plans
        .spans_within(period)
        .last()
        .map(|span| span.plan)
        .ok_or(InvoiceError::NoPlanInPeriod { period })?;
    let currency = plans.currency();

    let mut lines = Vec::new();
    for fee in prorate_base_fees(plans, period).map_err(pricing_error("base fees"))? {
        let description = if fee.proration.is_whole() {
            format!("Base fee, plan {}", fee.plan.name())
        } else {
            format!(
                "Base fee, plan {}, prorated from {} to {}",
                fee.plan.name(),
                when(fee.from),
                when(fee.until)
            )
        };
        lines.push(InvoiceLine {
            item: LineItem::BaseFee(BaseFeeCharge {
                plan: fee.plan.name().clone(),
                from: fee.from,
                until: fee.until,
                proration: fee.proration,
            }),
            description,
            amount: currency.round(fee.amount),
        });
    }

    let mut shared = BTreeMap::new();
    for allowance in usage_plan.shared_allowances() {
        for (meter, units) in allocate_shared_allowance(allowance, usage_plan, usage) {
            shared.insert(
                meter,
                SharedDraw {
                    name: allowance.name().to_owned(),
                    units,
                },
            );
        }
    }

    let meters: BTreeSet<&MeterName> = usage_plan.meters().keys().chain(usage.keys()).collect();
    for meter in meters {
        let quantity = usage.get(meter).copied().unwrap_or(Decimal::ZERO);
        lines.push(meter_line(
            usage_plan,
            currency,
            meter,
            quantity,
            shared.remove(meter),
        )?);
    }

    let subtotal = lines
        .iter()
        .try_fold(Decimal::ZERO, |sum, line| sum.checked_add(line.amount))
        .ok_or(PricingError::Overflow)
        .map_err(pricing_error("the subtotal"))?;
    Ok(InvoicePreview {
        tenant: tenant.clone(),
        period,
        plan: usage_plan.name().clone(),
        currency,
        lines,
        subtotal,
        total: subtotal,
    })
}

fn meter_line(
    plan: &Plan,
    currency: Currency,
    meter: &MeterName,
    quantity: Decimal,
    shared: Option<SharedDraw>,
) -> Result<InvoiceLine, InvoiceError> {
    let Some(pricing) = plan.meter(meter) else {
        return Ok(InvoiceLine {
            item: LineItem::Unpriced(UnpricedUsage {
                meter: meter.clone(),
                quantity,
            }),
            description: format!(
                "{meter}: {} used, not priced by plan {}",
                shown(quantity),
                plan.name()
            ),
            amount: currency.round(Decimal::ZERO),
        });
    };
    let drawn = shared.as_ref().map_or(Decimal::ZERO, |draw| draw.units);
    let breakdown = price_usage_with_allowance(pricing, quantity, drawn)
        .map_err(pricing_error(meter.as_str()))?;
    let price = pricing.price().cloned();
    let mut description = format!(
        "{meter}: {} used, {} included",
        shown(breakdown.quantity),
        shown(breakdown.included)
    );
    if let Some(draw) = &shared {
        description.push_str(&format!(" ({} from {})", shown(draw.units), draw.name));
    }
    match &price {
        Some(price) => description.push_str(&format!(
            ", {} billable at {}",
            shown(breakdown.billable),
            price.describe(currency)
        )),
        None if breakdown.over_limit.is_zero() => description.push_str(", hard limit"),
        None => description.push_str(&format!(
            ", hard limit; {} over the limit not billed",
            shown(breakdown.over_limit)
        )),
    }
    Ok(InvoiceLine {
        item: LineItem::Usage(UsageCharge {
            meter: meter.clone(),
            quantity: breakdown.quantity,
            included: breakdown.included,
            billable: breakdown.billable,
            over_limit: breakdown.over_limit,
            shared_allowance: shared,
            price,
            tiers: breakdown.tiers,
        }),
        description,
        amount: currency.round(breakdown.amount),
    })
}

/// A quantity as shown to people in a line description: at most six decimals. Display
/// only; the line's amount is computed from the exact quantity.
fn shown(quantity: Decimal) -> Decimal {
    quantity
        .round_dp_with_strategy(6, rust_decimal::RoundingStrategy::MidpointNearestEven)
        .normalize()
}
