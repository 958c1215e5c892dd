//! Admin: `GET /v1/admin/billing/reconciliation`: the Stripe ledger held against usage,
//! per tenant and Stripe-reported meter, for one month.
//!
//! A line is settled when the ledger accounts for exactly the usage with nothing pending
//! or refused; anything else is a difference an operator should look at (usage not yet
//! reported, events Stripe has not confirmed, events refused or expired).

use lambda_http::{Body, Request, Response};
use serde::Serialize;
use tollgate_core::billing::Reconciliation;
use tollgate_core::ids::TenantId;

use super::{load_tenant, month_param};
use crate::App;
use crate::error::ApiError;
use crate::http::{Query, WindowView, ok};
use crate::ports::{EventQueue, UsageApiStore};

/// Tenants read per store page.
const PAGE: usize = 100;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ReconciliationReport {
    month: WindowView,
    /// By tenant, then meter.
    lines: Vec<Reconciliation>,
    /// Lines that are not settled.
    differences: usize,
    /// Whether every line is settled.
    settled: bool,
}

/// `GET /v1/admin/billing/reconciliation?month=YYYY-MM&tenant=`: one tenant, or all.
pub async fn report<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    request: &Request,
) -> Result<Response<Body>, ApiError> {
    let query = Query::of(request, &["month", "tenant"])?;
    let now = app.now();
    let month = month_param(&query, now)?;
    let tenants = match query.parse("tenant", |v| TenantId::new(v))? {
        Some(tenant) => vec![load_tenant(app.store(), &tenant).await?.tenant],
        None => all_tenants(app).await?,
    };
    let mut lines = Vec::new();
    for tenant in &tenants {
        lines.extend(
            app.store()
                .reconciliation(tenant, app.catalog(), month, now)
                .await?,
        );
    }
    let differences = lines.iter().filter(|line| !line.is_settled()).count();
    ok(&ReconciliationReport {
        month: month.into(),
        lines,
        differences,
        settled: differences == 0,
    })
}

/// Every tenant id, in id order.
async fn all_tenants<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
) -> Result<Vec<TenantId>, ApiError> {
    let mut tenants = Vec::new();
    loop {
        let page = app.store().tenants(tenants.last(), PAGE).await?;
        let full = page.len() == PAGE;
        tenants.extend(page.into_iter().map(|profile| profile.tenant));
        if !full {
            return Ok(tenants);
        }
    }
}
