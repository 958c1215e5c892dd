//! The edge snapshot as a worker reads it: who a key belongs to, each tenant's limits,
//! quotas with their global usage, and the block list.
//!
//! The singleton service VM fetches the snapshot from the usage API
//! (`GET /v1/edge/snapshot`, schema `tollgate.edge-snapshot/1`), checks that it parses,
//! and publishes the raw JSON in shared data; each worker VM parses it into a
//! [`SnapshotView`] when the published generation changes. A body that does not parse
//! is never published, so workers keep the last good snapshot (and its age, which the
//! stale policy judges).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use tollgate_core::edge_snapshot::EdgeSnapshot;
use tollgate_core::ids::{MeterName, TenantId};
use tollgate_core::plan::RateLimits;
use tollgate_core::tenant::ApiKeyHash;
use tollgate_core::window::Window;

use crate::quota::QuotaLimit;
use crate::rate::RateLimit;

/// One tenant's limits as of the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantLimits {
    pub rates: Vec<RateLimit>,
    pub quotas: Vec<SnapshotQuota>,
    /// On the block list (budget hard limit or suspension): every request gets 402.
    pub blocked: bool,
}

impl TenantLimits {
    /// No limits at all: a tenant the snapshot does not list (the anonymous tenant) or,
    /// under fail-open, any tenant while no snapshot is at hand.
    pub const UNLIMITED: TenantLimits = TenantLimits {
        rates: Vec::new(),
        quotas: Vec::new(),
        blocked: false,
    };
}

/// One quota of a tenant with the global usage of its window when the snapshot was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotQuota {
    pub meter: MeterName,
    pub limit: QuotaLimit,
    pub window: Window,
    pub used: Decimal,
}

/// A parsed edge snapshot, indexed for per-request lookups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotView {
    pub generated_at: DateTime<Utc>,
    keys: BTreeMap<String, TenantId>,
    tenants: BTreeMap<TenantId, TenantLimits>,
}

impl SnapshotView {
    /// Parses the usage API's response body; anything but a valid
    /// `tollgate.edge-snapshot/1` document is an error with serde's reason.
    pub fn parse(body: &[u8]) -> Result<SnapshotView, serde_json::Error> {
        let snapshot: EdgeSnapshot = serde_json::from_slice(body)?;
        Ok(SnapshotView::from(&snapshot))
    }

    /// The tenant a presented API key belongs to, by its SHA-256 digest.
    pub fn tenant_of_key(&self, presented: &str) -> Option<&TenantId> {
        self.keys.get(ApiKeyHash::of(presented).as_hex())
    }

    pub fn tenant(&self, tenant: &TenantId) -> Option<&TenantLimits> {
        self.tenants.get(tenant)
    }

    /// The limits a request of `tenant` is held to with `snapshot` at hand: its own, or
    /// none when the tenant is not listed or there is no snapshot.
    pub fn limits_of<'a>(
        snapshot: Option<&'a SnapshotView>,
        tenant: &TenantId,
    ) -> &'a TenantLimits {
        static UNLIMITED: TenantLimits = TenantLimits::UNLIMITED;
        snapshot
            .and_then(|s| s.tenant(tenant))
            .unwrap_or(&UNLIMITED)
    }

    pub fn tenant_count(&self) -> usize {
        self.tenants.len()
    }

    /// Age of the snapshot at `now` (zero if it claims to come from the future).
    pub fn age(&self, now: DateTime<Utc>) -> Duration {
        (now - self.generated_at).max(Duration::zero())
    }
}

impl From<&EdgeSnapshot> for SnapshotView {
    fn from(snapshot: &EdgeSnapshot) -> SnapshotView {
        let keys = snapshot
            .api_keys
            .iter()
            .map(|k| (k.sha256.as_hex().to_owned(), k.tenant.clone()))
            .collect();
        let tenants = snapshot
            .tenants
            .iter()
            .map(|t| {
                let limits = TenantLimits {
                    rates: RateLimit::from_plan(&RateLimits::from(t.rate_limits)),
                    quotas: t
                        .quotas
                        .iter()
                        .map(|q| SnapshotQuota {
                            meter: q.meter.clone(),
                            limit: QuotaLimit::from(q),
                            window: q.window(),
                            used: q.used,
                        })
                        .collect(),
                    blocked: t.blocked.is_some(),
                };
                (t.tenant.clone(), limits)
            })
            .collect();
        SnapshotView {
            generated_at: snapshot.generated_at,
            keys,
            tenants,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../../events/samples/edge-snapshot.json");

    #[test]
    fn the_sample_snapshot_indexes_keys_tenants_limits_and_blocks() {
        let view = SnapshotView::parse(SAMPLE.as_bytes()).unwrap();
        assert!(view.tenant_count() > 0);
        let snapshot: EdgeSnapshot = serde_json::from_str(SAMPLE).unwrap();
        for tenant in &snapshot.tenants {
            let limits = view.tenant(&tenant.tenant).unwrap();
            assert_eq!(limits.blocked, tenant.blocked.is_some());
            assert_eq!(limits.quotas.len(), tenant.quotas.len());
        }
        for key in &snapshot.api_keys {
            let found = view.keys.get(key.sha256.as_hex());
            assert_eq!(found, Some(&key.tenant));
        }
    }

    #[test]
    fn a_presented_key_is_found_by_its_digest_only() {
        let mut snapshot: EdgeSnapshot = serde_json::from_str(SAMPLE).unwrap();
        let tenant = snapshot.tenants[0].tenant.clone();
        snapshot.api_keys = vec![tollgate_core::edge_snapshot::EdgeApiKey {
            sha256: ApiKeyHash::of("tg_live_secret"),
            tenant: tenant.clone(),
        }];
        let view = SnapshotView::from(&snapshot);
        assert_eq!(view.tenant_of_key("tg_live_secret"), Some(&tenant));
        assert_eq!(view.tenant_of_key("tg_live_secreT"), None);
        assert_eq!(view.tenant_of_key(""), None);
    }

    #[test]
    fn bodies_that_are_not_a_snapshot_are_refused_with_a_reason() {
        for body in [
            &b""[..],
            b"{}",
            b"not json",
            br#"{"schema":"tollgate.edge-snapshot/2","generatedAt":"2026-11-23T00:00:00Z","tenants":[],"apiKeys":[]}"#,
        ] {
            let error = SnapshotView::parse(body).unwrap_err();
            assert!(!error.to_string().is_empty());
        }
    }
}
