//! The journal: how a claim wider than one transaction stays exactly-once.
//!
//! A claim writes its batches' markers together with the merged delta of exactly those
//! batches, cut into **journal chunks** of at most [`JOURNAL_CHUNK_ROWS`] counters (and
//! [`JOURNAL_CHUNK_BYTES`]). Each chunk is then applied by one transaction that deletes
//! the chunk (on condition that it still exists) and updates its counters. The delete is
//! the chunk's marker: a chunk's counters move if and only if the chunk disappears, so
//! whoever applies it — the claimer, a concurrent finisher, a later run — applies it
//! once. A claimer that dies between chunks leaves the rest in the table, found by
//! [`finish_journals`](DynamoDbStore::finish_journals) under one partition, sorted by
//! claim time.
//!
//! The chunk body is compact JSON, one `[tenant, sort key, state]` per counter, because
//! the journal is written and deleted transactionally: its size is paid four times.

use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem};
use chrono::{DateTime, Utc};
use tollgate_core::aggregate::AggregateState;
use tollgate_core::ids::TenantId;
use tollgate_core::usage::{UsageKey, UsageRow};

use super::{ApplyReport, MAX_TRANSACTION_ITEMS};
use crate::DynamoDbStore;
use crate::codec::{self, Item};
use crate::error::StoreError;
use crate::table::{PK, SK, keys};

/// Counters per journal chunk: the chunk's transaction also deletes the chunk.
pub const JOURNAL_CHUNK_ROWS: usize = MAX_TRANSACTION_ITEMS - 1;

/// Body bytes per journal chunk, under DynamoDB's 400 KB item limit.
pub const JOURNAL_CHUNK_BYTES: usize = 350_000;

/// Journal bytes per claim, under DynamoDB's 4 MB transaction limit.
pub const CLAIM_BYTES: usize = 3_500_000;

/// How old a journal must be before another run finishes it. Longer than the ingest
/// Lambda's timeout, so a live claimer is not raced (racing would still be correct, only
/// slower: both would contend for the same chunks).
pub const JOURNAL_GRACE: chrono::Duration = chrono::Duration::seconds(60);

/// Journal chunks one [`finish_journals`](DynamoDbStore::finish_journals) call applies at
/// most, so a backlog after an outage is worked off across runs without timing one out.
pub const MAX_CHUNKS_PER_FINISH: i32 = 50;

const ROWS: &str = "rows";

/// One journal chunk: where it is stored and the counters it carries.
#[derive(Debug, Clone)]
pub(super) struct JournalChunk {
    pub sk: String,
    pub rows: Vec<UsageRow>,
    /// The encoded rows, as stored.
    pub body: String,
}

/// A row as journalled: `[tenant, sort key, state]`.
type Line = (TenantId, String, AggregateState);

fn encode(key: &UsageKey, state: &AggregateState) -> Result<String, StoreError> {
    let sk = keys::usage_sort(key).ok_or_else(|| {
        StoreError::InvalidBatch(format!("{key}: not an hourly or coarser counter"))
    })?;
    codec::to_json("journal row", &(&key.tenant, sk, state))
}

/// The encoded size of a counter in a journal chunk (one comma included).
pub(super) fn encoded_len(key: &UsageKey, state: &AggregateState) -> Result<usize, StoreError> {
    Ok(encode(key, state)?.len() + 1)
}

/// Cuts sorted, merged rows into journal chunks of `journal` claimed at `claimed_at`.
pub(super) fn cut(
    rows: &[UsageRow],
    journal: &str,
    claimed_at: &DateTime<Utc>,
) -> Result<Vec<JournalChunk>, StoreError> {
    let mut chunks = Vec::new();
    let mut current: Vec<UsageRow> = Vec::new();
    let mut lines: Vec<String> = Vec::new();
    let mut bytes = 0;
    let mut close = |current: &mut Vec<UsageRow>, lines: &mut Vec<String>, bytes: &mut usize| {
        if current.is_empty() {
            return;
        }
        let index = chunks.len();
        chunks.push(JournalChunk {
            sk: keys::journal_sort(claimed_at, journal, index),
            rows: std::mem::take(current),
            body: format!("[{}]", lines.join(",")),
        });
        lines.clear();
        *bytes = 0;
    };
    for row in rows {
        let line = encode(&row.key, &row.state)?;
        if current.len() == JOURNAL_CHUNK_ROWS || bytes + line.len() + 1 > JOURNAL_CHUNK_BYTES {
            close(&mut current, &mut lines, &mut bytes);
        }
        bytes += line.len() + 1;
        lines.push(line);
        current.push(row.clone());
    }
    close(&mut current, &mut lines, &mut bytes);
    Ok(chunks)
}

fn decode(item: &Item) -> Result<JournalChunk, StoreError> {
    let sk = codec::string(item, SK)
        .ok_or_else(|| codec::corrupt(item, "no sort key"))?
        .to_owned();
    let body = codec::string(item, ROWS)
        .ok_or_else(|| codec::corrupt(item, "no rows"))?
        .to_owned();
    let lines: Vec<Line> = serde_json::from_str(&body)
        .map_err(|e| codec::corrupt(item, format!("journal rows: {e}")))?;
    let rows = lines
        .into_iter()
        .map(|(tenant, sk, state)| {
            let key = keys::parse_usage(&tenant, &sk)
                .ok_or_else(|| codec::corrupt(item, format!("not a usage key: {sk}")))?;
            Ok(UsageRow { key, state })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(JournalChunk { sk, rows, body })
}

impl DynamoDbStore {
    /// The journal chunk as one action of its claim, put only if absent.
    pub(super) fn journal_put(
        &self,
        chunk: &JournalChunk,
    ) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .item(PK, AttributeValue::S(keys::JOURNAL_PARTITION.to_owned()))
            .item(SK, AttributeValue::S(chunk.sk.clone()))
            .item(ROWS, AttributeValue::S(chunk.body.clone()))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .build()
            .map_err(|e| StoreError::InvalidBatch(format!("journal chunk: {e}")))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn journal_delete(&self, chunk: &JournalChunk) -> Result<TransactWriteItem, StoreError> {
        let delete = Delete::builder()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(keys::JOURNAL_PARTITION.to_owned()))
            .key(SK, AttributeValue::S(chunk.sk.clone()))
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .build()
            .map_err(|e| StoreError::InvalidBatch(format!("journal delete: {e}")))?;
        Ok(TransactWriteItem::builder().delete(delete).build())
    }

    /// Applies one journal chunk: deletes it and moves its counters, in one transaction.
    /// A chunk already gone was applied by someone else; that is success too.
    pub(super) async fn apply_journal_chunk(
        &self,
        chunk: &JournalChunk,
        now: DateTime<Utc>,
        report: &mut ApplyReport,
    ) -> Result<(), StoreError> {
        let guard = self.journal_delete(chunk)?;
        if self
            .apply_guarded(&guard, &chunk.rows, &chunk.sk, now, report)
            .await?
        {
            report.journal_chunks_applied += 1;
        }
        Ok(())
    }

    /// Finishes journals claimed before `claimed_before` whose claimer did not apply them
    /// (it died, or its chunks failed): at most [`MAX_CHUNKS_PER_FINISH`] chunks, oldest
    /// first. Ingest calls it at the start of every run with `now -`[`JOURNAL_GRACE`],
    /// rollup before every run. Safe at any time, concurrently with anyone.
    pub async fn finish_journals(
        &self,
        claimed_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<ApplyReport, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND #sk < :before")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .expression_attribute_values(
                ":pk",
                AttributeValue::S(keys::JOURNAL_PARTITION.to_owned()),
            )
            .expression_attribute_values(
                ":before",
                AttributeValue::S(keys::journal_time(&claimed_before)),
            )
            .consistent_read(true)
            .limit(MAX_CHUNKS_PER_FINISH)
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("Query", e))?;
        let mut report = ApplyReport::default();
        let mut first_error = None;
        for item in output.items() {
            let applied = match decode(item) {
                Ok(chunk) => self.apply_journal_chunk(&chunk, now, &mut report).await,
                Err(error) => Err(error),
            };
            if let Err(error) = applied {
                tracing::warn!(%error, "could not finish a journal chunk; a later run retries");
                first_error.get_or_insert(error);
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(report),
        }
    }
}

/// What a failed journal means for each batch it claimed.
pub(super) fn pending(journal: &str, error: &StoreError) -> StoreError {
    StoreError::JournalPending {
        journal: journal.to_owned(),
        reason: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tollgate_core::ids::MeterName;
    use tollgate_core::usage::Dimensions;
    use tollgate_core::window::{Granularity, Window};

    fn row(tenant: &str, hour: u32, n: u64) -> UsageRow {
        let start = format!("2026-11-23T{hour:02}:00:00Z").parse().unwrap();
        UsageRow {
            key: UsageKey {
                tenant: TenantId::new(tenant).unwrap(),
                meter: MeterName::new("api_requests").unwrap(),
                window: Window::containing(Granularity::Hour, start),
                dimensions: Dimensions::default(),
            },
            state: AggregateState::Count { n },
        }
    }

    #[test]
    fn chunks_hold_at_most_99_rows_and_decode_to_what_was_cut() {
        let rows: Vec<UsageRow> = (0..250)
            .map(|i| row(&format!("t{i:03}"), i % 24, u64::from(i) + 1))
            .collect();
        let at = "2026-11-23T10:00:00.123Z".parse().unwrap();
        let chunks = cut(&rows, "j1", &at).unwrap();
        assert_eq!(
            chunks.iter().map(|c| c.rows.len()).collect::<Vec<_>>(),
            [99, 99, 52]
        );
        assert_eq!(chunks[2].sk, "2026-11-23T10:00:00.123Z#j1#0002");
        for chunk in &chunks {
            let item = Item::from([
                (PK.to_owned(), AttributeValue::S("JOURNAL".to_owned())),
                (SK.to_owned(), AttributeValue::S(chunk.sk.clone())),
                (ROWS.to_owned(), AttributeValue::S(chunk.body.clone())),
            ]);
            assert_eq!(decode(&item).unwrap().rows, chunk.rows);
        }
    }

    #[test]
    fn a_journalled_counter_costs_under_80_bytes() {
        let row = row("tenant-042", 10, 1234);
        let line = encoded_len(&row.key, &row.state).unwrap();
        assert!(line < 80, "{line} bytes");
    }
}
