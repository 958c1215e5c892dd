//! Admin: `GET/POST /v1/admin/tenants`, `GET/PUT /v1/admin/tenants/{id}`.

use chrono::{DateTime, Utc};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};
use tollgate_core::ids::{PlanName, TenantId};
use tollgate_core::tenant::{TenantProfile, TenantStatus};
use tollgate_store::StoreError;

use super::{load_tenant, page_limit};
use crate::App;
use crate::error::ApiError;
use crate::http::{Query, json, json_body, ok};
use crate::ports::{EventQueue, UsageApiStore};

/// The longest display name.
pub const MAX_DISPLAY_NAME: usize = 200;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TenantPage {
    tenants: Vec<TenantProfile>,
    /// Pass as `after` for the next page; `None` on the last page.
    next: Option<TenantId>,
}

/// `GET /v1/admin/tenants?after=&limit=`.
pub async fn list<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    request: &Request,
) -> Result<Response<Body>, ApiError> {
    let query = Query::of(request, &["after", "limit"])?;
    let after = query.parse("after", |v| TenantId::new(v))?;
    let limit = page_limit(&query, 100, 1000)?;
    let tenants = app.store().tenants(after.as_ref(), limit).await?;
    let next = (tenants.len() == limit)
        .then(|| tenants.last().map(|t| t.tenant.clone()))
        .flatten();
    ok(&TenantPage { tenants, next })
}

/// The body of `POST /v1/admin/tenants`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewTenant {
    tenant: TenantId,
    display_name: String,
    plan: PlanName,
    #[serde(default)]
    status: Option<TenantStatus>,
    #[serde(default)]
    stripe_customer_id: Option<String>,
}

/// `POST /v1/admin/tenants`: registers a tenant on an existing plan.
pub async fn create<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    request: &Request,
) -> Result<Response<Body>, ApiError> {
    Query::of(request, &[])?;
    let body: NewTenant = json_body(request)?;
    validate(&body.display_name, body.stripe_customer_id.as_deref())?;
    require_plan(app, &body.plan).await?;
    let profile = TenantProfile {
        tenant: body.tenant,
        display_name: body.display_name,
        plan: body.plan,
        status: body.status.unwrap_or(TenantStatus::Active),
        stripe_customer_id: body.stripe_customer_id,
        created_at: app.now(),
    };
    match app.store().create_tenant(&profile).await {
        Ok(()) => json(StatusCode::CREATED, &profile),
        Err(StoreError::AlreadyExists { .. }) => Err(ApiError::Conflict {
            code: "tenant_exists",
            message: format!("tenant {} already exists", profile.tenant),
        }),
        Err(e) => Err(e.into()),
    }
}

/// A tenant id from the path; malformed ids are a 400.
pub(crate) fn path_tenant(id: &str) -> Result<TenantId, ApiError> {
    TenantId::new(id).map_err(|e| ApiError::bad_request("bad_path_parameter", e.to_string()))
}

/// `GET /v1/admin/tenants/{id}`.
pub async fn get<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    id: &str,
    request: &Request,
) -> Result<Response<Body>, ApiError> {
    Query::of(request, &[])?;
    let profile = load_tenant(app.store(), &path_tenant(id)?).await?;
    ok(&profile)
}

/// The body of `PUT /v1/admin/tenants/{id}`: the profile's changeable fields. `tenant`
/// may be repeated (it must match the path); `createdAt` is read-only and ignored, so a
/// profile read with GET can be sent back as is.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantUpdate {
    #[serde(default)]
    tenant: Option<TenantId>,
    display_name: String,
    plan: PlanName,
    status: TenantStatus,
    #[serde(default)]
    stripe_customer_id: Option<String>,
    #[serde(default)]
    #[allow(
        dead_code,
        reason = "read-only; accepted so GET output can be PUT back"
    )]
    created_at: Option<DateTime<Utc>>,
}

/// `PUT /v1/admin/tenants/{id}`: replaces the profile's changeable fields.
pub async fn put<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    id: &str,
    request: &Request,
) -> Result<Response<Body>, ApiError> {
    Query::of(request, &[])?;
    let tenant = path_tenant(id)?;
    let body: TenantUpdate = json_body(request)?;
    if body.tenant.as_ref().is_some_and(|t| *t != tenant) {
        return Err(ApiError::bad_request(
            "tenant_mismatch",
            "`tenant` in the body differs from the path",
        ));
    }
    validate(&body.display_name, body.stripe_customer_id.as_deref())?;
    let existing = load_tenant(app.store(), &tenant).await?;
    require_plan(app, &body.plan).await?;
    let profile = TenantProfile {
        tenant,
        display_name: body.display_name,
        plan: body.plan,
        status: body.status,
        stripe_customer_id: body.stripe_customer_id,
        created_at: existing.created_at,
    };
    match app.store().update_tenant(&profile).await {
        Ok(()) => ok(&profile),
        Err(StoreError::NotFound { .. }) => Err(ApiError::NotFound { what: "tenant" }),
        Err(e) => Err(e.into()),
    }
}

fn validate(display_name: &str, stripe_customer_id: Option<&str>) -> Result<(), ApiError> {
    let name_len = display_name.chars().count();
    if display_name.trim().is_empty()
        || name_len > MAX_DISPLAY_NAME
        || display_name.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(
            "bad_display_name",
            format!(
                "`displayName` must be 1 to {MAX_DISPLAY_NAME} characters without control characters"
            ),
        ));
    }
    if let Some(id) = stripe_customer_id
        && (!id.starts_with("cus_") || id.len() > 255 || !id.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(ApiError::bad_request(
            "bad_stripe_customer_id",
            "`stripeCustomerId` must be a Stripe customer id (cus_…)",
        ));
    }
    Ok(())
}

/// 400 unless the plan has at least one version.
async fn require_plan<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    plan: &PlanName,
) -> Result<(), ApiError> {
    if app.store().plan_versions(plan).await?.is_empty() {
        return Err(ApiError::bad_request(
            "unknown_plan",
            format!("plan {plan} does not exist; create it first"),
        ));
    }
    Ok(())
}
