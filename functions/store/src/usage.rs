//! Reading usage back: one tenant, one granularity, one time range.

use chrono::{DateTime, Utc};
use tollgate_core::ids::TenantId;
use tollgate_core::usage::UsageRow;
use tollgate_core::window::{Granularity, Window};

use crate::DynamoDbStore;
use crate::codec;
use crate::error::StoreError;
use crate::table::keys;

impl DynamoDbStore {
    /// Every row of `tenant` at `granularity` whose window overlaps `[from, to)`, sorted
    /// by window then meter. Expired items (TTL passed, not yet deleted) are skipped.
    ///
    /// The query's partition key is the tenant's own, so no other tenant's item can be
    /// returned whatever the range. Reads are strongly consistent, so a rollup sees every
    /// counter ingest committed before it started.
    pub async fn usage(
        &self,
        tenant: &TenantId,
        granularity: Granularity,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<UsageRow>, StoreError> {
        self.usage_at(tenant, granularity, from, to, Utc::now())
            .await
    }

    /// [`usage`](Self::usage) with an explicit clock for TTL filtering.
    pub async fn usage_at(
        &self,
        tenant: &TenantId,
        granularity: Granularity,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let Some(prefix) = keys::granularity_prefix(granularity) else {
            return Err(StoreError::InvalidBatch(
                "minute usage is not stored; query hours or coarser".to_owned(),
            ));
        };
        if to <= from {
            return Ok(Vec::new());
        }
        let first = Window::containing(granularity, from);
        // Keys of the window containing `to` sort after `{prefix}#{key(to)}` only if that
        // window starts before `to`, so the exclusive end is the first window at or after it.
        let last = Window::range(granularity, from, to).last().unwrap_or(first);
        let lower = format!("{prefix}#{}", first.key());
        let upper = format!("{prefix}#{}", last.next().key());
        let items = self
            .query_between(keys::usage_partition(tenant), lower, upper)
            .await?;
        let mut rows = Vec::with_capacity(items.len());
        for item in items.iter().filter(|item| !codec::is_expired(item, now)) {
            let row = codec::usage_row(tenant, item)?;
            if row.key.window.granularity() == granularity && row.key.window.start() < to {
                rows.push(row);
            }
        }
        Ok(rows)
    }
}
