//! Admin: `GET/POST /v1/admin/plans`. Plans are versioned by `effectiveFrom`; a version
//! is immutable once written, so a price change is a new version.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use tollgate_core::ids::PlanName;
use tollgate_core::plan::{Plan, PlanConfig};
use tollgate_store::StoreError;

use crate::App;
use crate::error::ApiError;
use crate::http::{Query, json, json_body, ok, rfc3339};
use crate::ports::{EventQueue, UsageApiStore};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PlanList {
    /// Every version, by plan name then `effectiveFrom`.
    plans: Vec<Plan>,
}

/// `GET /v1/admin/plans?name=`: every version of every plan (or of one).
pub async fn list<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    request: &Request,
) -> Result<Response<Body>, ApiError> {
    let query = Query::of(request, &["name"])?;
    let plans = match query.parse("name", |v| PlanName::new(v))? {
        Some(name) => app.store().plan_versions(&name).await?,
        None => app.store().all_plan_versions().await?,
    };
    ok(&PlanList { plans })
}

/// `POST /v1/admin/plans`: stores a new plan version.
///
/// A new version of an existing plan must take effect in the future (versions already in
/// force priced invoices that must stay reproducible) and keep the plan's currency. The
/// first version of a new plan may take effect at any time.
pub async fn create<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    request: &Request,
) -> Result<Response<Body>, ApiError> {
    Query::of(request, &[])?;
    let config: PlanConfig = json_body(request)?;
    let plan = config
        .compile()
        .map_err(|e| ApiError::bad_request("invalid_plan", e.to_string()))?;
    let existing = app.store().plan_versions(plan.name()).await?;
    let now = app.now();
    if !existing.is_empty() && plan.effective_from() <= now {
        return Err(ApiError::bad_request(
            "effective_in_past",
            format!(
                "a new version of plan {} must take effect after now ({})",
                plan.name(),
                rfc3339(now)
            ),
        ));
    }
    if let Some(other) = existing.iter().find(|v| v.currency() != plan.currency()) {
        return Err(ApiError::bad_request(
            "currency_mismatch",
            format!(
                "plan {} is priced in {}; a version cannot switch to {}",
                plan.name(),
                other.currency().code(),
                plan.currency().code()
            ),
        ));
    }
    match app.store().create_plan_version(&plan).await {
        Ok(()) => json(StatusCode::CREATED, &plan),
        Err(StoreError::AlreadyExists { .. }) => Err(ApiError::Conflict {
            code: "plan_version_exists",
            message: format!(
                "plan {} already has a version effective from {}",
                plan.name(),
                rfc3339(plan.effective_from())
            ),
        }),
        Err(e) => Err(e.into()),
    }
}
