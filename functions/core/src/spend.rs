//! A tenant's spend in a month: what a budget is held against.
//!
//! The spend is the invoice preview of the month's usage so far (the same code that shows
//! tenants their invoice), so a budget alert and the invoice never disagree. Its
//! projection prices the usage projected to each instant ([`crate::run_rate`]) with the
//! same plan: a base fee does not grow with time and included units are not charged, so a
//! tenant inside its allowance is not told it is on track to exceed its budget.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::budget::{Budget, BudgetEvaluation, evaluate_with};
use crate::ids::{MeterName, TenantId};
use crate::invoice::{InvoiceError, InvoicePreview, preview_invoice};
use crate::meter::MeterCatalog;
use crate::plan::PlanTimeline;
use crate::run_rate::project_to;
use crate::window::Window;

/// The month so far, priced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthSpend {
    /// The invoice preview of the usage so far; its total is the spend.
    pub preview: InvoicePreview,
    /// The budget held against it; `None` when the budget's currency is not the plan's.
    pub budget: Option<BudgetEvaluation>,
}

/// Prices `usage` (month quantities so far) of `tenant` in `month` at `now` and, with a
/// `budget`, evaluates it with the projection of the same invoice to every instant.
pub fn month_spend(
    tenant: &TenantId,
    month: Window,
    plans: &PlanTimeline<'_>,
    usage: &BTreeMap<MeterName, Decimal>,
    catalog: &MeterCatalog,
    budget: Option<&Budget>,
    now: DateTime<Utc>,
) -> Result<MonthSpend, InvoiceError> {
    let preview = preview_invoice(tenant, month, plans, usage)?;
    let spent = preview.total;
    let budget = budget
        .filter(|budget| budget.currency() == plans.currency())
        .map(|budget| {
            let spend_at = |at: DateTime<Utc>| {
                let projected = usage
                    .iter()
                    .map(|(meter, &quantity)| {
                        let quantity = match catalog.get(meter) {
                            Some(m) => project_to(quantity, &m.aggregation, month, now, at),
                            None => quantity,
                        };
                        (meter.clone(), quantity)
                    })
                    .collect();
                // A projection too large to price is over any budget.
                preview_invoice(tenant, month, plans, &projected)
                    .map_or(Decimal::MAX, |p| p.total.max(spent))
            };
            evaluate_with(budget, spent, now, month, spend_at)
        });
    Ok(MonthSpend { preview, budget })
}
