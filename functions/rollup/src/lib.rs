//! # tollgate-rollup
//!
//! The scheduled Lambda that rolls hourly counters up into days and days into months.
//!
//! Each run recomputes, for every registered tenant, the closed days of the last
//! `lookbackDays` (default 9: the 7-day late-event horizon, plus a day of margin on each
//! side) from their hourly counters, and the months those days belong to from their days.
//! If the tenant's last completed rollup is older than that (its first run, or runs
//! missed during an outage), the run reaches back to it, up to the 35 days hourly counters
//! are kept, so no day before the new watermark is left un-rolled.
//! A rollup is written only where the recomputed state differs from the stored one, so a
//! re-run of an unchanged window writes nothing and a window touched by a late event is
//! simply recomputed: rollups are idempotent and never add twice. When a tenant is done,
//! its watermark moves to the start of the run's day (see `tollgate_store::rollups`).
//!
//! Tenants are paged from the store and processed a few at a time. A run that gets close
//! to the Lambda deadline stops between tenants and saves a cursor; the next scheduled run
//! resumes there. Skipped tenants lose nothing: their counters stay in place and the next
//! pass recomputes the whole lookback.
//!
//! Each run first finishes the journals an ingest run claimed but did not apply (see
//! `tollgate_store::apply`), so a quiet queue cannot leave usage claimed but uncounted
//! for longer than an hour.
//!
//! Retention: hourly counters 35 days, daily rollups 400 days, monthly kept (set on write
//! by the store's `Retention`).

use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tollgate_core::ids::TenantId;
use tollgate_core::usage::{UsageRow, changed_rows, rolled_up_to};
use tollgate_core::window::{Granularity, Window};
use tollgate_store::{DynamoDbStore, JOURNAL_GRACE, RollupWatermark, StoreError};

/// The schedule's payload: EventBridge Scheduler's input template
/// `{"scheduledTime": "<aws.scheduler.scheduled-time>"}`, plus optional overrides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollupRequest {
    pub scheduled_time: DateTime<Utc>,
    /// Days to recompute before the scheduled day (default 9, at most 30).
    #[serde(default)]
    pub lookback_days: Option<u32>,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollupReply {
    pub tenants: usize,
    pub days_written: usize,
    pub months_written: usize,
    /// Journal chunks an ingest run left behind, finished before rolling up.
    #[serde(default)]
    pub journal_chunks_finished: usize,
    /// False when the run stopped early for the deadline; it resumes after `resumeAfter`.
    pub complete: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_after: Option<TenantId>,
}

/// A bad payload: the schedule is misconfigured.
#[derive(Debug, thiserror::Error)]
pub enum RollupError {
    #[error("lookbackDays must be between 1 and 30, got {0}")]
    BadLookback(u32),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The rollup job and its settings.
#[derive(Debug, Clone)]
pub struct Rollup {
    pub store: DynamoDbStore,
    /// Tenants rolled up at once.
    pub concurrency: usize,
    /// Tenants read per page of the tenant listing.
    pub page_size: usize,
    /// Stop taking new tenants when less than this remains before the deadline.
    pub safety_margin: std::time::Duration,
}

const DEFAULT_LOOKBACK_DAYS: u32 = 9;
/// How long hourly counters are kept (the store's default retention).
const HOURLY_RETENTION: Duration = Duration::days(35);

impl Rollup {
    /// Runs one scheduled rollup until done or until `deadline` is near.
    pub async fn run(
        &self,
        request: &RollupRequest,
        deadline: Instant,
    ) -> Result<RollupReply, RollupError> {
        let lookback = request.lookback_days.unwrap_or(DEFAULT_LOOKBACK_DAYS);
        if !(1..=30).contains(&lookback) {
            return Err(RollupError::BadLookback(lookback));
        }
        let scheduled = request.scheduled_time;
        let mut reply = RollupReply::default();
        // Usage claimed by an ingest run that died before applying it belongs in the
        // hours rolled up now; a failure here only delays it to the next run.
        let now = Utc::now();
        match self.store.finish_journals(now - JOURNAL_GRACE, now).await {
            Ok(finished) => reply.journal_chunks_finished = finished.journal_chunks_applied,
            Err(error) => tracing::warn!(%error, "could not finish earlier journals"),
        }
        let mut after = self.store.rollup_cursor().await?;
        if after.is_some() {
            tracing::info!(after = ?after, "resuming an interrupted rollup pass");
        }
        loop {
            let page = self
                .store
                .tenants(after.as_ref(), self.page_size.max(1))
                .await?;
            if page.is_empty() {
                break;
            }
            for group in page.chunks(self.concurrency.max(1)) {
                if Instant::now() + self.safety_margin >= deadline {
                    self.store.set_rollup_cursor(after.as_ref()).await?;
                    reply.resume_after = after;
                    return Ok(reply);
                }
                let mut tasks = JoinSet::new();
                for profile in group {
                    let store = self.store.clone();
                    let tenant = profile.tenant.clone();
                    tasks.spawn(async move {
                        roll_up_tenant(&store, &tenant, scheduled, lookback).await
                    });
                }
                while let Some(joined) = tasks.join_next().await {
                    let (days, months) = joined.map_err(|e| {
                        StoreError::InvalidBatch(format!("a rollup task failed: {e}"))
                    })??;
                    reply.tenants += 1;
                    reply.days_written += days;
                    reply.months_written += months;
                }
                after = group.last().map(|p| p.tenant.clone());
            }
        }
        self.store.set_rollup_cursor(None).await?;
        reply.complete = true;
        Ok(reply)
    }
}

/// Recomputes one tenant's closed days in the lookback and their months; returns how
/// many daily and monthly rows were written.
pub async fn roll_up_tenant(
    store: &DynamoDbStore,
    tenant: &TenantId,
    scheduled: DateTime<Utc>,
    lookback_days: u32,
) -> Result<(usize, usize), StoreError> {
    let today = Window::containing(Granularity::Day, scheduled).start();
    // Recompute the lookback, and further back if the last completed run is older (a
    // first run, or runs missed during an outage), so no day before the new watermark is
    // left un-rolled; hourly counters older than their retention are gone anyway.
    let oldest_counter = Window::containing(Granularity::Day, scheduled - HOURLY_RETENTION).start();
    let previous = store
        .rollup_watermark(tenant)
        .await?
        .map_or(oldest_counter, |w| w.complete_before);
    let first = (today - Duration::days(i64::from(lookback_days)))
        .min(previous)
        .max(oldest_counter);
    let fold = |rows: Vec<UsageRow>, g| {
        rolled_up_to(rows, g).map_err(|e| StoreError::InvalidBatch(e.to_string()))
    };
    let hours = store
        .usage_at(tenant, Granularity::Hour, first, today, scheduled)
        .await?;
    let days = fold(hours, Granularity::Day)?;
    let stored_days = store
        .usage_at(tenant, Granularity::Day, first, today, scheduled)
        .await?;
    let changed_days = changed_rows(days.clone(), &stored_days);
    store.put_rollups(&changed_days).await?;

    // A month is the merge of its days: the recomputed ones plus older stored ones.
    let month_start = Window::containing(Granularity::Month, first).start();
    let mut month_days = store
        .usage_at(tenant, Granularity::Day, month_start, first, scheduled)
        .await?;
    month_days.extend(days);
    let months = fold(month_days, Granularity::Month)?;
    let stored_months = store
        .usage_at(tenant, Granularity::Month, month_start, today, scheduled)
        .await?;
    let changed_months = changed_rows(months, &stored_months);
    store.put_rollups(&changed_months).await?;

    store
        .set_rollup_watermark(
            tenant,
            &RollupWatermark {
                complete_before: today,
                updated_at: scheduled,
            },
        )
        .await?;
    Ok((changed_days.len(), changed_months.len()))
}
