//! `GET /v1/edge/snapshot`: what the gateways pull to enforce limits locally.
//!
//! Admin keys only: a gateway runs with an admin-role key. The snapshot lists every
//! tenant (paged through the store), the plan version in force now, the usage so far
//! today and this month of every meter the plan puts a quota on, why a tenant is
//! blocked, and the digests of the active tenant API keys. A tenant is blocked
//! `suspended` when its status says so, else `budget_hard_limit` when it is on the budget
//! block list for the current month (a block of an earlier month no longer holds: a new
//! month starts a new budget). Suspension wins when both apply, so the reason never
//! flips between snapshots. A tenant whose plan has no version in force is left out, so
//! the gateway treats it as unknown (its unknown-tenant policy applies) rather than one
//! broken tenant failing every gateway's snapshot.
//!
//! The built body may be served again by the same instance for a short max age
//! ([`crate::snapshot_cache`]); `generatedAt` always says when it was built.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use rust_decimal::Decimal;
use tollgate_core::edge_snapshot::{BlockReason, TenantState, build};
use tollgate_core::ids::{MeterName, PlanName, TenantId};
use tollgate_core::plan::{Plan, PlanTimeline};
use tollgate_core::tenant::{ApiKeyRecord, TenantProfile, TenantStatus};
use tollgate_core::window::{Granularity, Window};

use super::{quantities, usage_in};
use crate::App;
use crate::error::ApiError;
use crate::http::{Query, json_text};
use crate::ports::{EventQueue, UsageApiStore};

/// Tenants read per store page.
const PAGE: usize = 100;

struct Loaded {
    tenant: TenantId,
    plan: Plan,
    today: BTreeMap<MeterName, Decimal>,
    month: BTreeMap<MeterName, Decimal>,
    blocked: Option<BlockReason>,
}

/// Why `profile` is blocked: suspension first, then a budget block of this month.
fn block_reason(
    profile: &TenantProfile,
    budget_blocked: &BTreeSet<TenantId>,
) -> Option<BlockReason> {
    if profile.status == TenantStatus::Suspended {
        Some(BlockReason::Suspended)
    } else if budget_blocked.contains(&profile.tenant) {
        Some(BlockReason::BudgetHardLimit)
    } else {
        None
    }
}

/// `GET /v1/edge/snapshot`: the instance's kept snapshot while it is fresh, else a new one.
pub async fn snapshot<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    request: &Request,
) -> Result<Response<Body>, ApiError> {
    Query::of(request, &[])?;
    let now = app.now();
    let body = app
        .snapshot_cache()
        .get_or_build(Window::containing(Granularity::Day, now), || {
            build_snapshot(app, now)
        })
        .await?;
    json_text(StatusCode::OK, body)
}

/// Reads everything the snapshot lists as of `now` and serialises it.
async fn build_snapshot<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    now: DateTime<Utc>,
) -> Result<String, ApiError> {
    let day = Window::containing(Granularity::Day, now);
    let month = Window::containing(Granularity::Month, now);
    let budget_blocked: BTreeSet<TenantId> = app
        .store()
        .budget_blocks()
        .await?
        .into_iter()
        .filter(|block| block.month == month)
        .map(|block| block.tenant)
        .collect();
    let mut plans: BTreeMap<PlanName, Vec<Plan>> = BTreeMap::new();
    let mut loaded = Vec::new();
    let mut keys: Vec<ApiKeyRecord> = Vec::new();
    let mut after: Option<TenantId> = None;
    loop {
        let page = app.store().tenants(after.as_ref(), PAGE).await?;
        let full = page.len() == PAGE;
        after = page.last().map(|t| t.tenant.clone());
        for profile in page {
            if !plans.contains_key(&profile.plan) {
                let versions = app.store().plan_versions(&profile.plan).await?;
                plans.insert(profile.plan.clone(), versions);
            }
            let versions = plans.get(&profile.plan).map(Vec::as_slice).unwrap_or(&[]);
            let Some(plan) = PlanTimeline::from_versions(versions)
                .ok()
                .and_then(|timeline| timeline.in_force_at(now))
            else {
                continue;
            };
            let has_quota = plan
                .meters()
                .keys()
                .chain(plan.limits().quotas().keys())
                .any(|meter| !plan.quota(meter).is_unlimited());
            let (today, this_month) = if has_quota {
                let today_rows = usage_in(app, &profile.tenant, Granularity::Day, day).await?;
                let month_rows = usage_in(app, &profile.tenant, Granularity::Month, month).await?;
                (
                    quantities(&today_rows, app.catalog())?,
                    quantities(&month_rows, app.catalog())?,
                )
            } else {
                (BTreeMap::new(), BTreeMap::new())
            };
            keys.extend(app.store().tenant_api_keys(&profile.tenant).await?);
            let blocked = block_reason(&profile, &budget_blocked);
            loaded.push(Loaded {
                tenant: profile.tenant,
                plan: plan.clone(),
                today,
                month: this_month,
                blocked,
            });
        }
        if !full {
            break;
        }
    }
    let snapshot = build(
        now,
        loaded.iter().map(|t| TenantState {
            tenant: &t.tenant,
            plan: &t.plan,
            used_today: &t.today,
            used_this_month: &t.month,
            blocked: t.blocked,
        }),
        &keys,
    );
    serde_json::to_string(&snapshot).map_err(ApiError::internal)
}
