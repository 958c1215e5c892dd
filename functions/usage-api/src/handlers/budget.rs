//! `GET /v1/budget` and `PUT /v1/budget`: the tenant's monthly budget and where the month
//! stands against it.
//!
//! The spend is the invoice preview of the month so far and the evaluation is
//! [`tollgate_core::spend::month_spend`]'s, the same the budget Lambda uses, so this API,
//! the alerts and the edge's block list never disagree. A `PUT` applies the new budget to
//! the block list at once: a budget raised above the spend lifts the edge block without
//! waiting for the next budget run, and one lowered below it (with a hard limit) blocks.

use chrono::{DateTime, Utc};
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use tollgate_core::budget::{Budget, BudgetConfig, BudgetEvaluation, BudgetVerdict};
use tollgate_core::ids::TenantId;
use tollgate_core::invoice::InvoicePreview;
use tollgate_core::spend::{MonthSpend, month_spend};
use tollgate_core::tenant::TenantProfile;
use tollgate_core::window::{Granularity, Window};
use tollgate_store::BudgetBlock;

use super::{invoice_error, load_plan_versions, quantities, tenant_request, timeline, usage_in};
use crate::App;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::http::{WindowView, json_body, ok, rfc3339};
use crate::ports::{EventQueue, UsageApiStore};

/// The reply of both routes.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct BudgetStatus<'a> {
    tenant: &'a str,
    as_of: String,
    period: WindowView,
    budget: &'a Budget,
    /// `None` when the budget's currency is not the plan's (the plan changed since).
    evaluation: Option<BudgetEvaluation>,
    /// The month so far, priced: what the budget is held against.
    spend: InvoicePreview,
}

/// The tenant's current month, priced and held against `budget`.
async fn spend_of<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    profile: &TenantProfile,
    budget: &Budget,
    month: Window,
    now: DateTime<Utc>,
) -> Result<MonthSpend, ApiError> {
    let rows = usage_in(app, &profile.tenant, Granularity::Month, month).await?;
    let usage = quantities(&rows, app.catalog())?;
    let versions = load_plan_versions(app.store(), profile).await?;
    month_spend(
        &profile.tenant,
        month,
        &timeline(&versions)?,
        &usage,
        app.catalog(),
        Some(budget),
        now,
    )
    .map_err(invoice_error)
}

fn status<'a>(
    profile: &'a TenantProfile,
    budget: &'a Budget,
    spend: MonthSpend,
    month: Window,
    now: DateTime<Utc>,
) -> BudgetStatus<'a> {
    BudgetStatus {
        tenant: profile.tenant.as_str(),
        as_of: rfc3339(now),
        period: month.into(),
        budget,
        evaluation: spend.budget,
        spend: spend.preview,
    }
}

/// `GET /v1/budget`: the budget and the month's evaluation; 404 `no_budget` without one.
pub async fn get<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    principal: &Principal,
    request: &Request,
) -> Result<Response<Body>, ApiError> {
    let (_, profile) = tenant_request(app, principal, request, &[]).await?;
    let budget = app.store().budget(&profile.tenant).await?.ok_or_else(|| {
        ApiError::absent(
            "no_budget",
            format!("tenant {} has no budget", profile.tenant),
        )
    })?;
    let now = app.now();
    let month = Window::containing(Granularity::Month, now);
    let spend = spend_of(app, &profile, &budget, month, now).await?;
    ok(&status(&profile, &budget, spend, month, now))
}

/// `PUT /v1/budget`: sets or replaces the budget (a `BudgetConfig` body), then applies its
/// verdict to the edge block list.
///
/// The budget is evaluated before it is stored, so a budget that cannot be evaluated (in
/// another currency than the plan, or with no plan in force) is refused and nothing
/// changes.
pub async fn put<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    principal: &Principal,
    request: &Request,
) -> Result<Response<Body>, ApiError> {
    let (_, profile) = tenant_request(app, principal, request, &[]).await?;
    let config: BudgetConfig = json_body(request)?;
    let budget = config
        .compile()
        .map_err(|e| ApiError::bad_request("invalid_budget", e.to_string()))?;
    let now = app.now();
    let month = Window::containing(Granularity::Month, now);
    let spend = spend_of(app, &profile, &budget, month, now).await?;
    let Some(verdict) = spend.budget.as_ref().map(|e| e.verdict) else {
        return Err(ApiError::bad_request(
            "currency_mismatch",
            format!(
                "the budget is in {} but the tenant's plan bills in {}",
                budget.currency().code(),
                spend.preview.currency.code()
            ),
        ));
    };
    app.store().put_budget(&profile.tenant, &budget).await?;
    enforce(app, &profile.tenant, verdict, month, now).await?;
    tracing::info!(tenant = %profile.tenant, ?verdict, "budget set");
    ok(&status(&profile, &budget, spend, month, now))
}

/// Puts the tenant on the block list for `month` (keeping an earlier block of the same
/// month, so `since` stays when it was blocked) or takes it off.
async fn enforce<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    tenant: &TenantId,
    verdict: BudgetVerdict,
    month: Window,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    match verdict {
        BudgetVerdict::Block => {
            let already = app
                .store()
                .budget_blocks()
                .await?
                .iter()
                .any(|block| block.tenant == *tenant && block.month == month);
            if !already {
                app.store()
                    .block_for_budget(&BudgetBlock {
                        tenant: tenant.clone(),
                        month,
                        since: now,
                    })
                    .await?;
                tracing::info!(%tenant, "budget block set");
            }
        }
        BudgetVerdict::Allow => {
            if app.store().lift_budget_block(tenant).await? {
                tracing::info!(%tenant, "budget block lifted");
            }
        }
    }
    Ok(())
}
