//! The demo's sample month: meters, plans, tenants and a month of CloudEvents usage from
//! `events/samples/`, loaded into DynamoDB through the same core and store code the
//! Lambda functions use, then priced into invoice previews.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use tollgate_core::event::UsageEvent;
use tollgate_core::ids::{MeterName, TenantId};
use tollgate_core::invoice::{InvoicePreview, preview_invoice};
use tollgate_core::meter::MeterCatalog;
use tollgate_core::plan::{Plan, PlanTimeline};
use tollgate_core::tenant::TenantProfile;
use tollgate_core::usage::{UsageAggregator, UsageBatch, quantities_by_meter};
use tollgate_core::window::{EventTimePolicy, Granularity, Window};
use tollgate_store::{ApplyReport, DynamoDbStore, StoreError};

/// The month the sample covers.
pub const SAMPLE_MONTH: &str = "2026-10";

/// The sample files, parsed and validated.
#[derive(Debug)]
pub struct SampleData {
    pub catalog: MeterCatalog,
    pub plans: Vec<Plan>,
    pub tenants: Vec<TenantProfile>,
    pub events_jsonl: String,
}

/// `events/samples/` of this repository.
pub fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../events/samples")
}

impl SampleData {
    /// Reads and validates every sample file in `dir`.
    pub fn read(dir: &Path) -> Result<SampleData> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .with_context(|| format!("reading {}", dir.join(name).display()))
        };
        let catalog = MeterCatalog::from_json(&read("meters.json")?).context("meters.json")?;
        let plans = serde_json::from_str(&read("plans.json")?).context("plans.json")?;
        let tenants = serde_json::from_str(&read("tenants.json")?).context("tenants.json")?;
        Ok(SampleData {
            catalog,
            plans,
            tenants,
            events_jsonl: read("demo-month.jsonl")?,
        })
    }
}

/// An event line that was refused, with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedLine {
    pub line: usize,
    pub code: &'static str,
    pub reason: String,
}

/// What loading the sample did.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub events_accepted: usize,
    pub rejected: Vec<RejectedLine>,
    pub batches: usize,
    pub applied: ApplyReport,
    /// Applying the first batch a second time, as SQS may redeliver it.
    pub redelivery: ApplyReport,
}

/// The sample month is replayed as if ingested right after it ended; the late horizon is
/// widened to cover the whole month, as a backfill import would.
pub fn backfill_clock() -> Result<(DateTime<Utc>, EventTimePolicy)> {
    let month = month_window()?;
    Ok((
        month.end(),
        EventTimePolicy {
            late_horizon: Duration::days(40),
            ..EventTimePolicy::default()
        },
    ))
}

pub fn month_window() -> Result<Window> {
    Window::parse_key(Granularity::Month, SAMPLE_MONTH).context("sample month")
}

/// Creates the table, plans and tenants, then ingests the month's events: one batch per
/// tenant and day, applied exactly once, plus one deliberate redelivery.
pub async fn load(store: &DynamoDbStore, data: &SampleData) -> Result<LoadReport> {
    store.ensure_table().await.context("creating the table")?;
    for plan in &data.plans {
        ignore_existing(store.create_plan_version(plan).await)
            .with_context(|| format!("plan {}", plan.name()))?;
    }
    for tenant in &data.tenants {
        ignore_existing(store.create_tenant(tenant).await)
            .with_context(|| format!("tenant {}", tenant.tenant))?;
    }
    let (now, policy) = backfill_clock()?;
    let mut report = LoadReport::default();
    let mut days: BTreeMap<(TenantId, String), UsageAggregator<'_>> = BTreeMap::new();
    for (i, line) in data.events_jsonl.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let reject = |code: &'static str, reason: String| RejectedLine {
            line: i + 1,
            code,
            reason,
        };
        let event = match UsageEvent::parse(line.as_bytes(), &policy, now) {
            Ok(event) => event,
            Err(e) => {
                report.rejected.push(reject(e.code(), e.to_string()));
                continue;
            }
        };
        let day = Window::containing(Granularity::Day, event.time).key();
        let aggregator = days
            .entry((event.tenant.clone(), day))
            .or_insert_with(|| UsageAggregator::new(&data.catalog, Granularity::Hour));
        match aggregator.add_event(&event) {
            Ok(()) => report.events_accepted += 1,
            Err(e) => report.rejected.push(reject(e.code(), e.to_string())),
        }
    }
    let mut first_batch = None;
    for ((tenant, day), aggregator) in days {
        let batch = UsageBatch {
            batch_id: format!("demo:{tenant}:{day}"),
            rows: aggregator.into_rows(),
        };
        let applied = store.apply_batch_at(&batch, now).await?;
        report.applied.add(&applied);
        report.batches += 1;
        first_batch.get_or_insert(batch);
    }
    if let Some(batch) = first_batch {
        report.redelivery = store.apply_batch_at(&batch, now).await?;
    }
    Ok(report)
}

/// `tenant`'s month quantities per meter, from the stored hourly counters, read as of the
/// replay clock (the sample month is older than hourly retention today).
pub async fn month_usage(
    store: &DynamoDbStore,
    catalog: &MeterCatalog,
    tenant: &TenantId,
) -> Result<BTreeMap<MeterName, Decimal>> {
    let month = month_window()?;
    let (now, _) = backfill_clock()?;
    let rows = store
        .usage_at(tenant, Granularity::Hour, month.start(), month.end(), now)
        .await?;
    Ok(quantities_by_meter(&rows, catalog)?)
}

/// The invoice preview of `tenant` for the sample month, from stored usage and plans.
pub async fn invoice(
    store: &DynamoDbStore,
    catalog: &MeterCatalog,
    tenant: &TenantId,
) -> Result<InvoicePreview> {
    let month = month_window()?;
    let profile = store
        .tenant(tenant)
        .await?
        .with_context(|| format!("tenant {tenant} is not registered"))?;
    let quantities = month_usage(store, catalog, tenant).await?;
    let versions = store.plan_versions(&profile.plan).await?;
    let timeline = PlanTimeline::from_versions(&versions)
        .with_context(|| format!("plan {} of tenant {tenant}", profile.plan))?;
    Ok(preview_invoice(tenant, month, &timeline, &quantities)?)
}

fn ignore_existing(result: Result<(), StoreError>) -> Result<(), StoreError> {
    match result {
        Err(StoreError::AlreadyExists { .. }) => Ok(()),
        other => other,
    }
}
