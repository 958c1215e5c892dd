//! The handlers, one module per resource, and what they share: loading a tenant and its
//! plan, reading usage into per-meter quantities.

pub mod alerts;
pub mod billing;
pub mod budget;
pub mod edge;
pub mod events;
pub mod keys;
pub mod plans;
pub mod reconciliation;
pub mod rejected;
pub mod statements;
pub mod tenants;
pub mod usage;
pub mod webhooks;

use std::collections::BTreeMap;

use chrono::{DateTime, Months, Utc};
use lambda_http::{Body, Request, Response};
use rust_decimal::Decimal;
use tollgate_core::ids::{MeterName, TenantId};
use tollgate_core::invoice::InvoiceError;
use tollgate_core::meter::MeterCatalog;
use tollgate_core::plan::{Plan, PlanTimeline, TimelineError};
use tollgate_core::tenant::TenantProfile;
use tollgate_core::usage::{UsageRow, quantities_by_meter};
use tollgate_core::window::{Granularity, Window};

use crate::App;
use crate::auth::Principal;
use crate::dashboard::{self, Asset};
use crate::error::ApiError;
use crate::http::Query;
use crate::ports::{EventQueue, UsageApiStore};
use crate::router::RouteId;

/// Runs the handler of route `id`. `principal` is `None` only on public routes.
pub async fn dispatch<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    id: RouteId,
    principal: Option<&Principal>,
    params: &[&str],
    request: &Request,
) -> Result<Response<Body>, ApiError> {
    let Some(principal) = principal else {
        return match id {
            RouteId::OpenApi => crate::openapi::serve(request),
            RouteId::Dashboard => dashboard::serve(request, Asset::Page),
            RouteId::DashboardScript => dashboard::serve(request, Asset::Script),
            RouteId::DashboardStyle => dashboard::serve(request, Asset::Style),
            _ => Err(ApiError::Unauthorized),
        };
    };
    let param = || params.first().copied().unwrap_or_default();
    match id {
        RouteId::OpenApi => crate::openapi::serve(request),
        RouteId::Dashboard => dashboard::serve(request, Asset::Page),
        RouteId::DashboardScript => dashboard::serve(request, Asset::Script),
        RouteId::DashboardStyle => dashboard::serve(request, Asset::Style),
        RouteId::Usage => usage::current(app, principal, request).await,
        RouteId::UsageHistory => usage::history(app, principal, request).await,
        RouteId::UsageRealtime => usage::realtime(app, principal, request).await,
        RouteId::UsageExport => usage::export_csv(app, principal, request).await,
        RouteId::Pricing => billing::pricing(app, principal, request).await,
        RouteId::Estimate => billing::estimate(app, principal, request).await,
        RouteId::Forecast => billing::forecast(app, principal, request).await,
        RouteId::InvoicePreview => billing::invoice_preview(app, principal, request).await,
        RouteId::Events => events::submit(app, principal, request).await,
        RouteId::ListTenants => tenants::list(app, request).await,
        RouteId::CreateTenant => tenants::create(app, request).await,
        RouteId::GetTenant => tenants::get(app, param(), request).await,
        RouteId::PutTenant => tenants::put(app, param(), request).await,
        RouteId::ListPlans => plans::list(app, request).await,
        RouteId::CreatePlan => plans::create(app, request).await,
        RouteId::CreateKey => keys::create(app, param(), request).await,
        RouteId::ListKeys => keys::list(app, param(), request).await,
        RouteId::RevokeKey => keys::revoke(app, param(), request).await,
        RouteId::Rejected => rejected::list(app, request).await,
        RouteId::EdgeSnapshot => edge::snapshot(app, request).await,
        RouteId::GetBudget => budget::get(app, principal, request).await,
        RouteId::PutBudget => budget::put(app, principal, request).await,
        RouteId::ListAlerts => alerts::list(app, principal, request).await,
        RouteId::AcknowledgeAlert => alerts::acknowledge(app, principal, param(), request).await,
        RouteId::ListStatements => statements::list(app, principal, request).await,
        RouteId::GetStatement => statements::get(app, principal, param(), request).await,
        RouteId::GetWebhook => webhooks::get(app, param(), request).await,
        RouteId::PutWebhook => webhooks::put(app, param(), request).await,
        RouteId::DeleteWebhook => webhooks::delete(app, param(), request).await,
        RouteId::Reconciliation => reconciliation::report(app, request).await,
    }
}

/// A tenant route's scope: the query (checked against `allowed`, which gains `tenant`)
/// and the profile of the tenant the caller may see.
pub(crate) async fn tenant_request<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    principal: &Principal,
    request: &Request,
    allowed: &[&str],
) -> Result<(Query, TenantProfile), ApiError> {
    let mut names = vec!["tenant"];
    names.extend_from_slice(allowed);
    let query = Query::of(request, &names)?;
    let tenant = principal.tenant_scope(query.get("tenant"))?;
    let profile = load_tenant(app.store(), &tenant).await?;
    Ok((query, profile))
}

/// The tenant's profile, or 404.
pub(crate) async fn load_tenant<S: UsageApiStore>(
    store: &S,
    tenant: &TenantId,
) -> Result<TenantProfile, ApiError> {
    store
        .tenant(tenant)
        .await?
        .ok_or(ApiError::NotFound { what: "tenant" })
}

/// Every version of the tenant's plan, oldest first.
pub(crate) async fn load_plan_versions<S: UsageApiStore>(
    store: &S,
    profile: &TenantProfile,
) -> Result<Vec<Plan>, ApiError> {
    Ok(store.plan_versions(&profile.plan).await?)
}

/// The timeline of a plan's versions; 409 when the plan has none.
pub(crate) fn timeline(versions: &[Plan]) -> Result<PlanTimeline<'_>, ApiError> {
    PlanTimeline::from_versions(versions).map_err(|e| match e {
        TimelineError::Empty => no_plan(),
        other => ApiError::internal(other),
    })
}

/// The plan version in force at `now`; 409 when none is.
pub(crate) fn plan_at<'a>(
    timeline: &PlanTimeline<'a>,
    now: DateTime<Utc>,
) -> Result<&'a Plan, ApiError> {
    timeline.in_force_at(now).ok_or_else(no_plan)
}

fn no_plan() -> ApiError {
    ApiError::Conflict {
        code: "no_plan_in_force",
        message: "the tenant's plan has no version in force for this period".to_owned(),
    }
}

/// Maps invoice errors: no plan in the period is a 409, anything else internal.
pub(crate) fn invoice_error(error: InvoiceError) -> ApiError {
    match error {
        InvoiceError::NoPlanInPeriod { .. } => no_plan(),
        other => ApiError::internal(other),
    }
}

/// The tenant's usage at `granularity` in `window`, as current as the store allows.
pub(crate) async fn usage_in<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    tenant: &TenantId,
    granularity: Granularity,
    window: Window,
) -> Result<Vec<UsageRow>, ApiError> {
    Ok(app
        .store()
        .usage_view(tenant, granularity, window.start(), window.end(), app.now())
        .await?)
}

/// Rows folded into one quantity per meter. A meter missing from the catalog is a
/// configuration error (500): usage must never vanish between storage and a reply.
pub(crate) fn quantities(
    rows: &[UsageRow],
    catalog: &MeterCatalog,
) -> Result<BTreeMap<MeterName, Decimal>, ApiError> {
    quantities_by_meter(rows, catalog).map_err(ApiError::internal)
}

/// The quantity of one row under its meter's aggregation, if the meter is configured
/// and the aggregation has a single quantity.
pub(crate) fn row_quantity(row: &UsageRow, catalog: &MeterCatalog) -> Option<Decimal> {
    catalog
        .get(&row.key.meter)
        .and_then(|meter| row.state.quantity(&meter.aggregation))
}

/// The unit of a meter, if it is configured.
pub(crate) fn unit<'c>(catalog: &'c MeterCatalog, meter: &MeterName) -> Option<&'c str> {
    catalog.get(meter).map(|m| m.unit.as_str())
}

/// The month named by `?month=YYYY-MM`, by default the current one; at most 12 months
/// ahead.
pub(crate) fn month_param(query: &Query, now: DateTime<Utc>) -> Result<Window, ApiError> {
    let current = Window::containing(Granularity::Month, now);
    let month = query
        .parse("month", |v| Window::parse_key(Granularity::Month, v))?
        .unwrap_or(current);
    let latest = current
        .start()
        .checked_add_months(Months::new(12))
        .unwrap_or(current.start());
    if month.start() > latest {
        return Err(ApiError::bad_request(
            "month_out_of_range",
            "`month` may be at most 12 months ahead",
        ));
    }
    Ok(month)
}

/// A page size from `?limit=`: default `default`, at most `max`.
pub(crate) fn page_limit(query: &Query, default: usize, max: usize) -> Result<usize, ApiError> {
    let limit = query
        .parse("limit", |v| v.parse::<usize>().map_err(|e| e.to_string()))?
        .unwrap_or(default);
    if limit == 0 || limit > max {
        return Err(ApiError::bad_request(
            "bad_query_parameter",
            format!("query parameter `limit` must be between 1 and {max}"),
        ));
    }
    Ok(limit)
}
