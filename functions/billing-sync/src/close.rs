//! Month close: each tenant's final statement, frozen once late usage can no longer
//! change the month.
//!
//! A month closes when the late-event horizon has passed after its end (by default 8
//! days: 7 days of horizon and a day for the rollups). Its statement is the invoice
//! preview of the month's usage, stored once with the plan versions that priced it, so a
//! later plan change, or anything else, never alters what was stated.

use chrono::{DateTime, Duration, Utc};
use tollgate_core::invoice::{Statement, preview_invoice};
use tollgate_core::meter::MeterCatalog;
use tollgate_core::plan::PlanTimeline;
use tollgate_core::tenant::TenantProfile;
use tollgate_core::usage::quantities_by_meter;
use tollgate_core::window::{Granularity, Window};
use tollgate_store::{DynamoDbStore, StoreError};

/// How long after its end a month is closed, by default.
pub const DEFAULT_CLOSE_AFTER: Duration = Duration::days(8);

/// Why a statement could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CloseError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Pricing(String),
}

/// The month that should be closed at `now`: the previous one, once `close_after` has
/// passed since it ended.
pub fn month_to_close(now: DateTime<Utc>, close_after: Duration) -> Option<Window> {
    let previous = Window::containing(Granularity::Month, now).previous();
    (now >= previous.end() + close_after).then_some(previous)
}

/// Stores `profile`'s statement of `month` unless it has one: `Some` when this call
/// made it.
pub async fn close_month(
    store: &DynamoDbStore,
    catalog: &MeterCatalog,
    profile: &TenantProfile,
    month: Window,
    now: DateTime<Utc>,
) -> Result<Option<Statement>, CloseError> {
    if store.statement(&profile.tenant, month).await?.is_some() {
        return Ok(None);
    }
    let rows = store
        .usage_view(
            &profile.tenant,
            Granularity::Month,
            month.start(),
            month.end(),
            now,
        )
        .await?;
    let usage =
        quantities_by_meter(&rows, catalog).map_err(|e| CloseError::Pricing(e.to_string()))?;
    let versions = store.plan_versions(&profile.plan).await?;
    let timeline = PlanTimeline::from_versions(&versions)
        .map_err(|e| CloseError::Pricing(format!("plan {}: {e}", profile.plan)))?;
    let invoice = preview_invoice(&profile.tenant, month, &timeline, &usage)
        .map_err(|e| CloseError::Pricing(e.to_string()))?;
    let statement = Statement {
        invoice,
        plan_versions: timeline
            .spans_within(month)
            .into_iter()
            .map(|span| span.plan.clone())
            .collect(),
        closed_at: now,
    };
    Ok(store
        .create_statement(&statement)
        .await?
        .then_some(statement))
}
