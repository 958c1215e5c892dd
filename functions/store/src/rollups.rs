//! Daily and monthly rollups, and the usage view that combines them with hourly counters.
//!
//! Rollups are recomputed, never incremented: a day is the merge of its hourly counters,
//! a month the merge of its days, written over whatever was there. Re-running a window is
//! therefore idempotent, and a late event is picked up by simply recomputing its day.
//!
//! Each tenant has a **watermark**: the instant before which its daily rollups are
//! complete as of the last rollup run. Views read rollups before the watermark and fold
//! hourly counters from it on, so they include usage not yet rolled up. A late event for
//! a day already rolled shows in day and month views after the next rollup run.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tollgate_core::ids::TenantId;
use tollgate_core::usage::{UsageRow, rolled_up_to};
use tollgate_core::window::{Granularity, Window};

use crate::DynamoDbStore;
use crate::codec;
use crate::directory::WriteMode;
use crate::error::StoreError;
use crate::table::keys;

const WATERMARK: &str = "ROLLUP";
const CURSOR_PARTITION: &str = "ROLLUP";
const CURSOR: &str = "CURSOR";
/// BatchWriteItem's limit.
const WRITES_PER_REQUEST: usize = 25;
const MAX_ROUNDS: u32 = 8;

/// How far a tenant's rollups are complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollupWatermark {
    /// Daily rollups hold every day that ends at or before this instant.
    pub complete_before: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RollupCursor {
    after: Option<TenantId>,
}

impl DynamoDbStore {
    /// Writes rollup rows (daily or monthly) over what is stored, 25 per request, retrying
    /// unprocessed items. Idempotent: rollups are recomputed values, not increments.
    pub async fn put_rollups(&self, rows: &[UsageRow]) -> Result<usize, StoreError> {
        let mut requests = Vec::with_capacity(rows.len());
        for row in rows {
            if !matches!(
                row.key.window.granularity(),
                Granularity::Day | Granularity::Month
            ) {
                return Err(StoreError::InvalidBatch(format!(
                    "{}: only daily and monthly rollups are written here",
                    row.key
                )));
            }
            let item = codec::versioned_item(
                &row.key,
                &row.state,
                0,
                self.retention.expiry(&row.key.window),
            )?;
            let put = PutRequest::builder()
                .set_item(Some(item))
                .build()
                .map_err(|e| StoreError::InvalidBatch(format!("rollup put: {e}")))?;
            requests.push(WriteRequest::builder().put_request(put).build());
        }
        for chunk in requests.chunks(WRITES_PER_REQUEST) {
            let mut pending = chunk.to_vec();
            let mut round = 0u32;
            while !pending.is_empty() {
                round += 1;
                if round > MAX_ROUNDS {
                    return Err(StoreError::Contended {
                        what: "writing rollups (unprocessed items)".to_owned(),
                        attempts: MAX_ROUNDS,
                    });
                }
                let output = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, std::mem::take(&mut pending))
                    .send()
                    .await
                    .map_err(|e| StoreError::from_sdk("BatchWriteItem", e))?;
                pending = output
                    .unprocessed_items()
                    .and_then(|u: &HashMap<String, Vec<WriteRequest>>| u.get(&self.table))
                    .cloned()
                    .unwrap_or_default();
                if !pending.is_empty() {
                    tokio::time::sleep(Duration::from_millis(25 << round.min(6))).await;
                }
            }
        }
        Ok(rows.len())
    }

    /// Where an interrupted rollup pass stopped: the last tenant it finished.
    pub async fn rollup_cursor(&self) -> Result<Option<TenantId>, StoreError> {
        let cursor: Option<RollupCursor> =
            self.get_doc(CURSOR_PARTITION.to_owned(), CURSOR).await?;
        Ok(cursor.and_then(|c| c.after))
    }

    /// Saves (or, with `None`, clears) the rollup pass cursor.
    pub async fn set_rollup_cursor(&self, after: Option<&TenantId>) -> Result<(), StoreError> {
        let cursor = RollupCursor {
            after: after.cloned(),
        };
        self.put_doc(
            CURSOR_PARTITION.to_owned(),
            CURSOR,
            &cursor,
            None,
            WriteMode::Upsert,
        )
        .await
    }

    pub async fn rollup_watermark(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<RollupWatermark>, StoreError> {
        self.get_doc(keys::tenant(tenant), WATERMARK).await
    }

    pub async fn set_rollup_watermark(
        &self,
        tenant: &TenantId,
        watermark: &RollupWatermark,
    ) -> Result<(), StoreError> {
        self.put_doc(
            keys::tenant(tenant),
            WATERMARK,
            watermark,
            None,
            WriteMode::Upsert,
        )
        .await
    }

    /// `tenant`'s usage at `granularity` for windows overlapping `[from, to)`, as current
    /// as the data allows: rollups where they are complete, hourly counters after.
    pub async fn usage_view(
        &self,
        tenant: &TenantId,
        granularity: Granularity,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let watermark = self
            .rollup_watermark(tenant)
            .await?
            .map(|w| w.complete_before);
        match granularity {
            Granularity::Minute | Granularity::Hour => {
                self.usage_at(tenant, granularity, from, to, now).await
            }
            Granularity::Day => self.day_view(tenant, watermark, from, to, now).await,
            Granularity::Month => {
                // Months that ended before the watermark have complete monthly rollups.
                let first_open = watermark
                    .map(|w| Window::containing(Granularity::Month, w).start())
                    .unwrap_or(from)
                    .clamp(from, to.max(from));
                let mut rows = self
                    .usage_at(tenant, Granularity::Month, from, first_open, now)
                    .await?;
                let days = self
                    .day_view(tenant, watermark, first_open, to, now)
                    .await?;
                rows.extend(fold(days, Granularity::Month)?);
                Ok(rows)
            }
        }
    }

    async fn day_view(
        &self,
        tenant: &TenantId,
        watermark: Option<DateTime<Utc>>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let split = watermark.unwrap_or(from).clamp(from, to.max(from));
        let mut rows = self
            .usage_at(tenant, Granularity::Day, from, split, now)
            .await?;
        let hours = self
            .usage_at(tenant, Granularity::Hour, split, to, now)
            .await?;
        rows.extend(fold(hours, Granularity::Day)?);
        Ok(rows)
    }
}

fn fold(rows: Vec<UsageRow>, granularity: Granularity) -> Result<Vec<UsageRow>, StoreError> {
    rolled_up_to(rows, granularity).map_err(|e| StoreError::InvalidBatch(e.to_string()))
}
