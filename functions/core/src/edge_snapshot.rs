//! The edge snapshot: the global state a gateway instance pulls from the usage API
//! (`GET /v1/edge/snapshot`) every few seconds to enforce limits locally.
//!
//! A snapshot lists every tenant with the plan in force, its request rate limits, its
//! day and month quotas with the usage so far in the current window, and whether it is
//! blocked; and the SHA-256 digests of the active tenant API keys (never the secrets),
//! so the filter can map a presented key to its tenant. It is tagged
//! `schema: "tollgate.edge-snapshot/1"`; any other tag, and any unknown field, is refused
//! when it is read, so a gateway never acts on a contract it does not know.
//!
//! [`build`] is the pure function the API calls with what it read from the store.
//!
//! ## Mapping onto the edge filter
//!
//! The shapes are those the filter's decision core already takes, so no conversion is
//! lossy:
//!
//! - [`EdgeRateLimits`] converts into core's [`RateLimits`] (`From`), which is what the
//!   filter's `rate` module decides on (one GCRA limit per set period; `None` is
//!   unlimited).
//! - An [`EdgeQuota`] is the filter's `quota::QuotaLimit` (`From<&EdgeQuota>` in the
//!   filter: `granularity` from [`QuotaPeriod::granularity`], `limit`) plus the reading
//!   its `QuotaCounter::apply_snapshot` takes: [`EdgeQuota::window`] and `used`, with the
//!   snapshot's `generatedAt` as `taken_at`. A meter with no quota is simply absent.
//! - `blocked` maps onto the filter's 402 block verdict.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU64;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::ids::{MeterName, PlanName, TenantId};
use crate::plan::{Plan, RateLimits};
use crate::tenant::{ApiKeyHash, ApiKeyRecord, ApiKeyRole};
use crate::window::{Granularity, Window};

/// The schema tag of this version of the contract.
pub const SCHEMA: &str = "tollgate.edge-snapshot/1";

/// The schema tag: only `tollgate.edge-snapshot/1` is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SchemaTag {
    #[serde(rename = "tollgate.edge-snapshot/1")]
    V1,
}

/// What a gateway instance pulls periodically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EdgeSnapshot {
    pub schema: SchemaTag,
    /// When the snapshot was built: the `taken_at` of every usage reading in it.
    pub generated_at: DateTime<Utc>,
    pub tenants: Vec<EdgeTenant>,
    /// Active tenant keys, by digest.
    pub api_keys: Vec<EdgeApiKey>,
}

/// One tenant as the edge sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EdgeTenant {
    pub tenant: TenantId,
    /// The plan in force at `generatedAt`.
    pub plan: PlanName,
    pub rate_limits: EdgeRateLimits,
    /// One entry per (meter, period) with a quota, by meter then day before month.
    pub quotas: Vec<EdgeQuota>,
    /// Why every request of the tenant is refused; `None` when it is not blocked.
    pub blocked: Option<BlockReason>,
}

/// Request rate limits of the plan; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EdgeRateLimits {
    pub per_second: Option<NonZeroU64>,
    pub per_minute: Option<NonZeroU64>,
    pub per_hour: Option<NonZeroU64>,
    pub per_day: Option<NonZeroU64>,
}

impl From<&RateLimits> for EdgeRateLimits {
    fn from(limits: &RateLimits) -> EdgeRateLimits {
        EdgeRateLimits {
            per_second: limits.per_second,
            per_minute: limits.per_minute,
            per_hour: limits.per_hour,
            per_day: limits.per_day,
        }
    }
}

impl From<EdgeRateLimits> for RateLimits {
    fn from(limits: EdgeRateLimits) -> RateLimits {
        RateLimits {
            per_second: limits.per_second,
            per_minute: limits.per_minute,
            per_hour: limits.per_hour,
            per_day: limits.per_day,
        }
    }
}

/// The period of a quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaPeriod {
    /// The UTC day.
    Day,
    /// The calendar month (UTC).
    Month,
}

impl QuotaPeriod {
    /// The window granularity of the period.
    pub fn granularity(self) -> Granularity {
        match self {
            QuotaPeriod::Day => Granularity::Day,
            QuotaPeriod::Month => Granularity::Month,
        }
    }
}

/// One quota of one meter and the global usage of its current window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EdgeQuota {
    pub meter: MeterName,
    pub period: QuotaPeriod,
    pub limit: Decimal,
    /// Usage so far in the window starting at `windowStart`.
    pub used: Decimal,
    pub window_start: DateTime<Utc>,
}

impl EdgeQuota {
    /// The window `used` was measured in.
    pub fn window(&self) -> Window {
        Window::containing(self.period.granularity(), self.window_start)
    }
}

/// Why a tenant is blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockReason {
    /// The monthly budget's hard limit is reached.
    BudgetHardLimit,
    /// The tenant is suspended.
    Suspended,
}

/// An active tenant key: its digest and its tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EdgeApiKey {
    pub sha256: ApiKeyHash,
    pub tenant: TenantId,
}

/// What [`build`] needs of one tenant.
#[derive(Debug, Clone, Copy)]
pub struct TenantState<'a> {
    pub tenant: &'a TenantId,
    /// The plan version in force at `generated_at`.
    pub plan: &'a Plan,
    /// Usage per meter in the UTC day containing `generated_at`.
    pub used_today: &'a BTreeMap<MeterName, Decimal>,
    /// Usage per meter in the calendar month containing `generated_at`.
    pub used_this_month: &'a BTreeMap<MeterName, Decimal>,
    pub blocked: Option<BlockReason>,
}

/// Builds the snapshot at `generated_at`: tenants in the order given, with the plan's
/// effective quotas ([`Plan::quota`]) of every meter it prices or limits; the active
/// tenant keys of `keys` sorted by digest (admin and revoked keys are left out).
pub fn build<'a>(
    generated_at: DateTime<Utc>,
    tenants: impl IntoIterator<Item = TenantState<'a>>,
    keys: impl IntoIterator<Item = &'a ApiKeyRecord>,
) -> EdgeSnapshot {
    let day = Window::containing(Granularity::Day, generated_at);
    let month = Window::containing(Granularity::Month, generated_at);
    let tenants = tenants
        .into_iter()
        .map(|state| {
            let meters: BTreeSet<&MeterName> = state
                .plan
                .meters()
                .keys()
                .chain(state.plan.limits().quotas().keys())
                .collect();
            let mut quotas = Vec::new();
            for meter in meters {
                let quota = state.plan.quota(meter);
                for (period, window, used) in [
                    (QuotaPeriod::Day, day, state.used_today),
                    (QuotaPeriod::Month, month, state.used_this_month),
                ] {
                    if let Some(limit) = quota.for_window(period.granularity()) {
                        quotas.push(EdgeQuota {
                            meter: meter.clone(),
                            period,
                            limit,
                            used: used.get(meter).copied().unwrap_or_default(),
                            window_start: window.start(),
                        });
                    }
                }
            }
            EdgeTenant {
                tenant: state.tenant.clone(),
                plan: state.plan.name().clone(),
                rate_limits: state.plan.rate_limits().into(),
                quotas,
                blocked: state.blocked,
            }
        })
        .collect();
    let mut api_keys: Vec<EdgeApiKey> = keys
        .into_iter()
        .filter(|key| key.is_active() && key.role == ApiKeyRole::Tenant)
        .filter_map(|key| {
            key.tenant.clone().map(|tenant| EdgeApiKey {
                sha256: key.hash.clone(),
                tenant,
            })
        })
        .collect();
    api_keys.sort_by(|a, b| a.sha256.cmp(&b.sha256));
    EdgeSnapshot {
        schema: SchemaTag::V1,
        generated_at,
        tenants,
        api_keys,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::json;

    use super::*;

    fn plan(json: &str) -> Plan {
        serde_json::from_str(json).unwrap()
    }

    fn free() -> Plan {
        plan(
            r#"{"name": "free", "effectiveFrom": "2026-01-01T00:00:00Z", "currency": "USD",
                "baseFee": "0",
                "meters": [{"meter": "api_requests", "included": "10000", "overage": "hardLimit"}],
                "limits": {"rate": {"perSecond": 2, "perMinute": 60},
                           "quotas": [{"meter": "api_requests", "perDay": "500"}]}}"#,
        )
    }

    fn unlimited() -> Plan {
        plan(
            r#"{"name": "enterprise", "effectiveFrom": "2026-01-01T00:00:00Z",
                "currency": "USD", "baseFee": "0", "meters": [], "limits": {}}"#,
        )
    }

    fn meter(name: &str) -> MeterName {
        name.parse().unwrap()
    }

    fn tenant(id: &str) -> TenantId {
        TenantId::new(id).unwrap()
    }

    fn now() -> DateTime<Utc> {
        "2026-11-23T12:30:00Z".parse().unwrap()
    }

    fn key(secret: &str, tenant_id: Option<&str>, revoked: bool) -> ApiKeyRecord {
        ApiKeyRecord {
            hash: ApiKeyHash::of(secret),
            role: if tenant_id.is_some() {
                ApiKeyRole::Tenant
            } else {
                ApiKeyRole::Admin
            },
            tenant: tenant_id.map(tenant),
            label: "k".into(),
            created_at: now(),
            revoked_at: revoked.then(now),
        }
    }

    #[test]
    fn quota_use_comes_from_the_day_and_month_quantities() {
        let free = free();
        let acme = tenant("acme");
        let today = BTreeMap::from([(meter("api_requests"), Decimal::from(120))]);
        let month = BTreeMap::from([(meter("api_requests"), Decimal::from(4_000))]);
        let snapshot = build(
            now(),
            [TenantState {
                tenant: &acme,
                plan: &free,
                used_today: &today,
                used_this_month: &month,
                blocked: None,
            }],
            [],
        );
        assert_eq!(snapshot.schema, SchemaTag::V1);
        let t = &snapshot.tenants[0];
        assert_eq!(t.plan.as_str(), "free");
        assert_eq!(t.rate_limits.per_second, NonZeroU64::new(2));
        assert_eq!(t.rate_limits.per_hour, None);
        assert_eq!(t.blocked, None);
        let day = &t.quotas[0];
        assert_eq!(day.period, QuotaPeriod::Day);
        assert_eq!(day.limit, Decimal::from(500));
        assert_eq!(day.used, Decimal::from(120));
        assert_eq!(
            day.window_start,
            "2026-11-23T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        // The hard-limit allowance is the effective monthly quota.
        let month_quota = &t.quotas[1];
        assert_eq!(month_quota.period, QuotaPeriod::Month);
        assert_eq!(month_quota.limit, Decimal::from(10_000));
        assert_eq!(month_quota.used, Decimal::from(4_000));
        assert_eq!(
            month_quota.window(),
            Window::containing(Granularity::Month, now())
        );
        assert_eq!(t.quotas.len(), 2);
    }

    #[test]
    fn unlimited_stays_none_and_blocked_tenants_are_listed() {
        let enterprise = unlimited();
        let globex = tenant("globex");
        let empty = BTreeMap::new();
        let snapshot = build(
            now(),
            [TenantState {
                tenant: &globex,
                plan: &enterprise,
                used_today: &empty,
                used_this_month: &empty,
                blocked: Some(BlockReason::Suspended),
            }],
            [],
        );
        let t = &snapshot.tenants[0];
        assert_eq!(t.rate_limits, EdgeRateLimits::default());
        assert!(t.quotas.is_empty());
        assert_eq!(t.blocked, Some(BlockReason::Suspended));
        let json = serde_json::to_value(&snapshot).unwrap();
        assert_eq!(json["tenants"][0]["blocked"], "suspended");
        assert_eq!(json["tenants"][0]["rateLimits"]["perSecond"], json!(null));
        assert_eq!(json["schema"], SCHEMA);
    }

    #[test]
    fn only_active_tenant_keys_are_listed_by_digest() {
        let keys = [
            key("b", Some("acme"), false),
            key("a", Some("globex"), false),
            key("admin", None, false),
            key("old", Some("acme"), true),
        ];
        let snapshot = build(now(), [], &keys);
        let mut expected = vec![
            (ApiKeyHash::of("a"), tenant("globex")),
            (ApiKeyHash::of("b"), tenant("acme")),
        ];
        expected.sort();
        let listed: Vec<_> = snapshot
            .api_keys
            .iter()
            .map(|k| (k.sha256.clone(), k.tenant.clone()))
            .collect();
        assert_eq!(listed, expected);
    }

    #[test]
    fn a_snapshot_round_trips_and_refuses_other_schemas_and_unknown_fields() {
        let free = free();
        let acme = tenant("acme");
        let empty = BTreeMap::new();
        let keys = [key("k", Some("acme"), false)];
        let snapshot = build(
            now(),
            [TenantState {
                tenant: &acme,
                plan: &free,
                used_today: &empty,
                used_this_month: &empty,
                blocked: Some(BlockReason::BudgetHardLimit),
            }],
            &keys,
        );
        let mut json = serde_json::to_value(&snapshot).unwrap();
        assert_eq!(json["tenants"][0]["quotas"][0]["used"], "0");
        let back: EdgeSnapshot = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, snapshot);
        let rate: RateLimits = back.tenants[0].rate_limits.into();
        assert_eq!(&rate, free.rate_limits());
        json["schema"] = json!("tollgate.edge-snapshot/2");
        assert!(serde_json::from_value::<EdgeSnapshot>(json.clone()).is_err());
        json["schema"] = json!(SCHEMA);
        json["extra"] = json!(1);
        assert!(serde_json::from_value::<EdgeSnapshot>(json).is_err());
    }
}
