//! `GET /v1/pricing`, `POST /v1/estimate`, `GET /v1/forecast`, `GET /v1/invoice/preview`.

use std::collections::BTreeMap;

use lambda_http::{Body, Request, Response};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tollgate_core::budget::{Budget, BudgetEvaluation};
use tollgate_core::ids::MeterName;
use tollgate_core::invoice::{InvoiceError, preview_invoice};
use tollgate_core::meter::decimal_from_json;
use tollgate_core::plan::Plan;
use tollgate_core::run_rate::{elapsed_fraction, project};
use tollgate_core::spend::month_spend;
use tollgate_core::window::{Granularity, Window};

use super::{
    invoice_error, load_plan_versions, month_param, quantities, tenant_request, timeline, unit,
    usage_in,
};
use crate::App;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::http::{WindowView, json_body, ok, rfc3339};
use crate::ports::{EventQueue, UsageApiStore};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Pricing<'a> {
    tenant: &'a str,
    plan: &'a str,
    /// The version in force now; `None` when the plan has none yet.
    current: Option<&'a Plan>,
    /// Versions that take effect later, soonest first.
    upcoming: Vec<&'a Plan>,
}

/// `GET /v1/pricing`: the tenant's plan, the version in force and those to come.
pub async fn pricing<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    principal: &Principal,
    request: &Request,
) -> Result<Response<Body>, ApiError> {
    let (_, profile) = tenant_request(app, principal, request, &[]).await?;
    let now = app.now();
    let versions = load_plan_versions(app.store(), &profile).await?;
    let current = versions.iter().rev().find(|v| v.effective_from() <= now);
    let upcoming = versions
        .iter()
        .filter(|v| v.effective_from() > now)
        .collect();
    ok(&Pricing {
        tenant: profile.tenant.as_str(),
        plan: profile.plan.as_str(),
        current,
        upcoming,
    })
}

/// `GET /v1/invoice/preview?month=YYYY-MM`: the month's usage priced into invoice lines.
pub async fn invoice_preview<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    principal: &Principal,
    request: &Request,
) -> Result<Response<Body>, ApiError> {
    let (query, profile) = tenant_request(app, principal, request, &["month"]).await?;
    let month = month_param(&query, app.now())?;
    let rows = usage_in(app, &profile.tenant, Granularity::Month, month).await?;
    let usage = quantities(&rows, app.catalog())?;
    let versions = load_plan_versions(app.store(), &profile).await?;
    let preview = preview_invoice(&profile.tenant, month, &timeline(&versions)?, &usage)
        .map_err(invoice_error)?;
    ok(&preview)
}

/// The body of `POST /v1/estimate`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EstimateRequest {
    /// Quantity per meter, as decimal strings (JSON numbers are accepted too).
    usage: BTreeMap<String, Value>,
    /// The month whose plan prices the estimate; the current month by default.
    #[serde(default)]
    month: Option<String>,
}

/// `POST /v1/estimate`: the invoice preview the given month quantities would produce.
pub async fn estimate<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    principal: &Principal,
    request: &Request,
) -> Result<Response<Body>, ApiError> {
    let (_, profile) = tenant_request(app, principal, request, &[]).await?;
    let body: EstimateRequest = json_body(request)?;
    let now = app.now();
    let month = match &body.month {
        None => Window::containing(Granularity::Month, now),
        Some(key) => Window::parse_key(Granularity::Month, key)
            .map_err(|e| ApiError::bad_request("bad_month", e.to_string()))?,
    };
    let mut usage = BTreeMap::new();
    for (name, value) in &body.usage {
        let meter = MeterName::new(name.as_str())
            .map_err(|e| ApiError::bad_request("bad_meter", e.to_string()))?;
        if app.catalog().get(&meter).is_none() {
            return Err(ApiError::bad_request(
                "unknown_meter",
                format!("meter {meter} is not configured"),
            ));
        }
        let quantity = decimal_from_json(value).ok_or_else(|| {
            ApiError::bad_request(
                "bad_quantity",
                format!("usage of {meter} must be a decimal string such as \"1250.5\""),
            )
        })?;
        if quantity.is_sign_negative() && !quantity.is_zero() {
            return Err(ApiError::bad_request(
                "bad_quantity",
                format!("usage of {meter} is negative"),
            ));
        }
        usage.insert(meter, quantity);
    }
    let versions = load_plan_versions(app.store(), &profile).await?;
    let preview = preview_invoice(&profile.tenant, month, &timeline(&versions)?, &usage).map_err(
        |e| match e {
            InvoiceError::Pricing { line, .. } => ApiError::bad_request(
                "quantity_too_large",
                format!("{line}: the amount exceeds the range of a decimal"),
            ),
            other => invoice_error(other),
        },
    )?;
    ok(&preview)
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct MeterForecast<'a> {
    meter: &'a MeterName,
    unit: Option<&'a str>,
    quantity: Decimal,
    projected: Decimal,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CostForecast {
    so_far: Decimal,
    projected: Decimal,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct BudgetForecast<'a> {
    budget: &'a Budget,
    /// `None` when the budget is in another currency than the plan.
    evaluation: Option<BudgetEvaluation>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Forecast<'a> {
    tenant: &'a str,
    as_of: String,
    period: WindowView,
    elapsed_fraction: Decimal,
    currency: &'static str,
    meters: Vec<MeterForecast<'a>>,
    cost: CostForecast,
    budget: Option<BudgetForecast<'a>>,
}

/// `GET /v1/forecast`: month-end usage and cost at the run rate so far, and the budget.
pub async fn forecast<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    principal: &Principal,
    request: &Request,
) -> Result<Response<Body>, ApiError> {
    let (_, profile) = tenant_request(app, principal, request, &[]).await?;
    let now = app.now();
    let month = Window::containing(Granularity::Month, now);
    let rows = usage_in(app, &profile.tenant, Granularity::Month, month).await?;
    let so_far = quantities(&rows, app.catalog())?;
    let mut projected = BTreeMap::new();
    for (meter, &quantity) in &so_far {
        let aggregation = app
            .catalog()
            .get(meter)
            .map(|m| m.aggregation.clone())
            .ok_or_else(|| ApiError::internal(UnknownMeter(meter.clone())))?;
        projected.insert(meter.clone(), project(quantity, &aggregation, month, now));
    }
    let versions = load_plan_versions(app.store(), &profile).await?;
    let timeline = timeline(&versions)?;
    let budget = app.store().budget(&profile.tenant).await?;
    // The budget is held against the invoice of the usage projected to each instant, as
    // the budget Lambda holds it, so a base fee is never extrapolated.
    let spend = month_spend(
        &profile.tenant,
        month,
        &timeline,
        &so_far,
        app.catalog(),
        budget.as_ref(),
        now,
    )
    .map_err(invoice_error)?;
    let cost_so_far = spend.preview.total;
    let cost_projected = preview_invoice(&profile.tenant, month, &timeline, &projected)
        .map_err(invoice_error)?
        .total;
    let currency = timeline.currency();
    ok(&Forecast {
        tenant: profile.tenant.as_str(),
        as_of: rfc3339(now),
        period: month.into(),
        elapsed_fraction: elapsed_fraction(month, now),
        currency: currency.code(),
        meters: so_far
            .iter()
            .map(|(meter, &quantity)| MeterForecast {
                meter,
                unit: unit(app.catalog(), meter),
                quantity,
                projected: projected.get(meter).copied().unwrap_or(quantity),
            })
            .collect(),
        cost: CostForecast {
            so_far: cost_so_far,
            projected: cost_projected,
        },
        budget: budget.as_ref().map(|budget| BudgetForecast {
            budget,
            evaluation: spend.budget,
        }),
    })
}

/// A meter with usage that the catalog does not know (a configuration error).
#[derive(Debug, thiserror::Error)]
#[error("usage of meter {0}, which is not configured")]
struct UnknownMeter(MeterName);
