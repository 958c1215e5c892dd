//! `GET /v1/alerts` and `POST /v1/alerts/{id}/ack`: the budget alerts the budget Lambda
//! raised for the tenant, and the tenant saying it has seen one.
//!
//! Acknowledging does not stop a webhook delivery under way: it only records that the
//! tenant saw the alert (the first time stays).

use lambda_http::{Body, Request, Response};
use serde::Serialize;
use tollgate_core::alert::{Alert, AlertId};
use tollgate_core::window::{Granularity, Window};
use tollgate_store::StoreError;

use super::tenant_request;
use crate::App;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::http::{body_bytes, ok};
use crate::ports::{EventQueue, UsageApiStore};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct AlertList {
    /// Newest first.
    alerts: Vec<Alert>,
}

/// `GET /v1/alerts?month=YYYY-MM`: the tenant's alerts of that month, or of every month.
pub async fn list<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    principal: &Principal,
    request: &Request,
) -> Result<Response<Body>, ApiError> {
    let (query, profile) = tenant_request(app, principal, request, &["month"]).await?;
    let month = query.parse("month", |v| Window::parse_key(Granularity::Month, v))?;
    let mut alerts = app.store().alerts(&profile.tenant, month).await?;
    // Alerts of one run share their creation time: the later month, then the more severe
    // trigger (higher threshold, then the forecast) comes first.
    alerts.sort_by(|a, b| {
        (b.created_at, b.month, b.trigger).cmp(&(a.created_at, a.month, a.trigger))
    });
    ok(&AlertList { alerts })
}

/// `POST /v1/alerts/{id}/ack`: marks the alert seen and returns it.
pub async fn acknowledge<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    principal: &Principal,
    id: &str,
    request: &Request,
) -> Result<Response<Body>, ApiError> {
    let (_, profile) = tenant_request(app, principal, request, &[]).await?;
    body_bytes(request)?;
    let id = AlertId::try_from(id.to_owned())
        .map_err(|e| ApiError::bad_request("bad_path_parameter", e.to_string()))?;
    match app
        .store()
        .acknowledge_alert(&profile.tenant, &id, app.now())
        .await
    {
        Ok(alert) => ok(&alert),
        Err(StoreError::NotFound { .. }) => Err(ApiError::absent(
            "no_alert",
            format!("tenant {} has no alert {id}", profile.tenant),
        )),
        Err(e) => Err(e.into()),
    }
}
