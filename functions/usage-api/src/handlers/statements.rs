//! `GET /v1/statements` and `GET /v1/statements/{month}`: the month statements frozen at
//! month close by billing sync. Unlike an invoice preview they never change once written,
//! whatever happens to plans or late usage afterwards.

use lambda_http::{Body, Request, Response};
use serde::Serialize;
use tollgate_core::invoice::Statement;
use tollgate_core::window::{Granularity, Window};

use super::tenant_request;
use crate::App;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::http::ok;
use crate::ports::{EventQueue, UsageApiStore};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct StatementList<'a> {
    tenant: &'a str,
    /// Oldest month first.
    statements: Vec<Statement>,
}

/// `GET /v1/statements`: every closed month of the tenant.
pub async fn list<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    principal: &Principal,
    request: &Request,
) -> Result<Response<Body>, ApiError> {
    let (_, profile) = tenant_request(app, principal, request, &[]).await?;
    let statements = app.store().statements(&profile.tenant).await?;
    ok(&StatementList {
        tenant: profile.tenant.as_str(),
        statements,
    })
}

/// `GET /v1/statements/{month}`: one month's statement; 404 `no_statement` until the
/// month is closed.
pub async fn get<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    principal: &Principal,
    month: &str,
    request: &Request,
) -> Result<Response<Body>, ApiError> {
    let (_, profile) = tenant_request(app, principal, request, &[]).await?;
    let month = Window::parse_key(Granularity::Month, month)
        .map_err(|e| ApiError::bad_request("bad_path_parameter", e.to_string()))?;
    let statement = app
        .store()
        .statement(&profile.tenant, month)
        .await?
        .ok_or_else(|| {
            ApiError::absent(
                "no_statement",
                format!(
                    "tenant {} has no statement for {}",
                    profile.tenant,
                    month.key()
                ),
            )
        })?;
    ok(&statement)
}
