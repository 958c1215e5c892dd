//! Exactly-once application of usage batches.
//!
//! SQS delivers at least once and Lambda retries whole batches, so the same
//! [`UsageBatch`] can arrive many times, possibly at once in two invocations. A batch is
//! applied in **chunks**, each one `TransactWriteItems` holding
//!
//! 1. a dedupe marker `DEDUPE#{batch id}` / `CHUNK#{i}` put with `attribute_not_exists`,
//! 2. up to 99 counter updates.
//!
//! The marker and the counters commit together or not at all, so a chunk is counted
//! exactly once: a retry of a committed chunk fails on its marker and is reported as
//! already applied; a chunk that failed left no marker and is applied by the retry. The
//! dedupe key is claimed *in the same transaction* as the write, never before it.
//!
//! Chunks are cut from the batch's own content: rows are merged by key and sorted, then
//! cut every 99 rows. A redelivered batch therefore forms exactly the same chunks, so a
//! retry after a partial failure re-applies only the chunks that did not commit.
//!
//! Counters whose state is additive (count, sum, avg, gauge integral) are updated with
//! `ADD`, which needs no read and never conflicts. Other states (min, max, latest,
//! sketches) are read, merged in memory and written back under a version condition; if
//! another writer got there first the chunk is re-read and retried.
//!
//! Cost: a transactional write costs two write units per KB per item, so a chunk of `n`
//! counters costs about `2 × (n + 1)` units. Merging rows by key before cutting chunks
//! keeps `n` as small as the batch allows.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, Put, TransactWriteItem, Update};
use chrono::{DateTime, Utc};
use tollgate_core::aggregate::AggregateState;
use tollgate_core::usage::{UsageBatch, UsageKey, UsageRow, merge_rows};

use crate::DynamoDbStore;
use crate::codec::{self, StoredState};
use crate::error::StoreError;
use crate::table::{PK, SK, TTL, keys};

/// DynamoDB's limit of actions in one `TransactWriteItems`.
pub const MAX_TRANSACTION_ITEMS: usize = 100;

/// Counter updates per transaction; the 100th action is the chunk's dedupe marker.
pub const ROWS_PER_CHUNK: usize = MAX_TRANSACTION_ITEMS - 1;

/// The longest accepted batch id, in bytes (it becomes part of a partition key).
pub const MAX_BATCH_ID_BYTES: usize = 1024;

const MAX_ATTEMPTS: u32 = 8;

/// A slice of a batch applied in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub index: usize,
    pub rows: Vec<UsageRow>,
}

/// Cuts `batch` into chunks: rows merged by key, sorted, every [`ROWS_PER_CHUNK`].
/// The same batch content always yields the same chunks, whatever the row order.
pub fn plan_chunks(batch: &UsageBatch) -> Result<Vec<Chunk>, StoreError> {
    if batch.batch_id.is_empty() || batch.batch_id.len() > MAX_BATCH_ID_BYTES {
        return Err(StoreError::InvalidBatch(format!(
            "batch id must be 1 to {MAX_BATCH_ID_BYTES} bytes, it is {}",
            batch.batch_id.len()
        )));
    }
    let rows = merge_rows(batch.rows.iter().cloned())
        .map_err(|e| StoreError::InvalidBatch(e.to_string()))?;
    let rows: Vec<UsageRow> = rows
        .into_iter()
        .filter(|r| !r.state.is_identity())
        .collect();
    for row in &rows {
        if keys::usage_sort(&row.key).is_none() {
            return Err(StoreError::InvalidBatch(format!(
                "{}: minute rows are aggregated into hours before they are stored",
                row.key
            )));
        }
    }
    Ok(rows
        .chunks(ROWS_PER_CHUNK)
        .enumerate()
        .map(|(index, rows)| Chunk {
            index,
            rows: rows.to_vec(),
        })
        .collect())
}

/// What applying a batch did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApplyReport {
    /// Chunks this call committed.
    pub chunks_applied: usize,
    /// Chunks that an earlier delivery had already committed.
    pub chunks_already_applied: usize,
    /// Counter rows this call wrote.
    pub rows_written: usize,
    /// Transactions attempted, including retries after conflicts.
    pub transactions: usize,
    /// Items written by committed transactions (markers and counters). DynamoDB bills each
    /// as two write units per started KB; items here stay under 1 KB except sketches.
    pub items_written: usize,
}

impl ApplyReport {
    /// True when every chunk had already been applied: a pure redelivery.
    pub fn was_duplicate(&self) -> bool {
        self.chunks_applied == 0 && self.chunks_already_applied > 0
    }

    /// What this report means for its batch as a whole.
    pub fn outcome(&self) -> BatchOutcome {
        if self.was_duplicate() {
            BatchOutcome::AlreadyApplied
        } else {
            BatchOutcome::Applied
        }
    }

    /// Adds another report's figures to this one (for totals over many batches).
    pub fn add(&mut self, other: &ApplyReport) {
        self.chunks_applied += other.chunks_applied;
        self.chunks_already_applied += other.chunks_already_applied;
        self.rows_written += other.rows_written;
        self.transactions += other.transactions;
        self.items_written += other.items_written;
    }
}

/// What happened to one batch of an [`apply_batches`](DynamoDbStore::apply_batches) call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// This call committed the batch.
    Applied,
    /// An earlier delivery had committed it; nothing was written.
    AlreadyApplied,
}

/// Outcomes in the order of the batches given, and totals over the call.
#[derive(Debug, Default)]
pub struct BatchesReport {
    pub outcomes: Vec<Result<BatchOutcome, StoreError>>,
    pub totals: ApplyReport,
}

/// One dedupe marker in a transaction: chunk `chunk` of batch `batch_id`.
struct Marker<'a> {
    batch_id: &'a str,
    chunk: usize,
    rows: usize,
}

enum TransactionOutcome {
    Applied,
    /// The markers at these positions already exist: those chunks were applied before.
    MarkersExist(Vec<usize>),
    /// Another writer changed a versioned counter (or the transaction lost a race).
    Conflict,
}

/// A single-chunk batch waiting to share a transaction.
struct Member<'a> {
    position: usize,
    batch_id: &'a str,
    chunk: Chunk,
}

impl DynamoDbStore {
    /// Applies `batch` exactly once. Safe to call again with the same batch, at any time
    /// and concurrently; see the module docs for the argument.
    pub async fn apply_batch(&self, batch: &UsageBatch) -> Result<ApplyReport, StoreError> {
        self.apply_batch_at(batch, Utc::now()).await
    }

    /// [`apply_batch`](Self::apply_batch) with an explicit clock for marker expiry.
    pub async fn apply_batch_at(
        &self,
        batch: &UsageBatch,
        now: DateTime<Utc>,
    ) -> Result<ApplyReport, StoreError> {
        let mut report = ApplyReport::default();
        for chunk in plan_chunks(batch)? {
            self.apply_chunk(&batch.batch_id, &chunk, now, &mut report)
                .await?;
        }
        Ok(report)
    }

    /// Applies many batches (one per queue message), each exactly once, with as few
    /// writes as that allows.
    ///
    /// Batches that fit one chunk share transactions: each transaction holds one marker
    /// per member batch and the members' rows **merged by key**, at most 100 items. A
    /// member's contribution is written if and only if its marker is, in the same
    /// transaction, so the result is exactly-once under any grouping: a redelivered
    /// message may arrive with other companions in another invocation, or alone, and its
    /// marker still commits once, with its own rows. When a transaction fails because some
    /// members' markers exist, those members are already applied; the rest are merged
    /// again without them and retried. Batches larger than a chunk are applied on their own.
    ///
    /// Never fails as a whole: each batch gets its own outcome.
    pub async fn apply_batches(&self, batches: &[UsageBatch], now: DateTime<Utc>) -> BatchesReport {
        let mut report = BatchesReport {
            outcomes: Vec::with_capacity(batches.len()),
            totals: ApplyReport::default(),
        };
        let mut outcomes: Vec<Option<Result<BatchOutcome, StoreError>>> =
            batches.iter().map(|_| None).collect();
        let mut members = Vec::new();
        for (position, batch) in batches.iter().enumerate() {
            match plan_chunks(batch) {
                Err(e) => outcomes[position] = Some(Err(e)),
                Ok(chunks) if chunks.len() <= 1 => match chunks.into_iter().next() {
                    Some(chunk) => members.push(Member {
                        position,
                        batch_id: &batch.batch_id,
                        chunk,
                    }),
                    None => outcomes[position] = Some(Ok(BatchOutcome::Applied)),
                },
                Ok(_) => {
                    let applied = self.apply_batch_at(batch, now).await;
                    outcomes[position] = Some(applied.map(|r| {
                        report.totals.add(&r);
                        r.outcome()
                    }));
                }
            }
        }
        for group in pack(members) {
            for (position, outcome) in self.apply_group(group, now, &mut report.totals).await {
                outcomes[position] = Some(outcome);
            }
        }
        report.outcomes = outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| {
                    Err(StoreError::InvalidBatch(
                        "batch was not attempted".to_owned(),
                    ))
                })
            })
            .collect();
        report
    }

    async fn apply_group(
        &self,
        mut remaining: Vec<Member<'_>>,
        now: DateTime<Utc>,
        totals: &mut ApplyReport,
    ) -> Vec<(usize, Result<BatchOutcome, StoreError>)> {
        let mut outcomes = Vec::with_capacity(remaining.len());
        for attempt in 0..MAX_ATTEMPTS {
            if remaining.is_empty() {
                return outcomes;
            }
            let Ok(rows) = merge_rows(remaining.iter().flat_map(|m| m.chunk.rows.iter().cloned()))
            else {
                break;
            };
            let markers: Vec<Marker<'_>> = remaining
                .iter()
                .map(|m| Marker {
                    batch_id: m.batch_id,
                    chunk: m.chunk.index,
                    rows: m.chunk.rows.len(),
                })
                .collect();
            totals.transactions += 1;
            match self.try_transaction(&markers, &rows, now).await {
                Ok(TransactionOutcome::Applied) => {
                    totals.chunks_applied += remaining.len();
                    totals.rows_written += rows.len();
                    totals.items_written += rows.len() + remaining.len();
                    outcomes.extend(
                        remaining
                            .iter()
                            .map(|m| (m.position, Ok(BatchOutcome::Applied))),
                    );
                    return outcomes;
                }
                Ok(TransactionOutcome::MarkersExist(done)) => {
                    totals.chunks_already_applied += done.len();
                    let mut index = 0;
                    remaining.retain(|m| {
                        let keep = !done.contains(&index);
                        if !keep {
                            outcomes.push((m.position, Ok(BatchOutcome::AlreadyApplied)));
                        }
                        index += 1;
                        keep
                    });
                }
                Ok(TransactionOutcome::Conflict) => backoff(attempt).await,
                Err(_) => break,
            }
        }
        // Something other than duplicates or conflicts (or persistent contention): apply
        // each member on its own, so each gets its own outcome and error.
        for member in remaining {
            let mut report = ApplyReport::default();
            let applied = self
                .apply_chunk(member.batch_id, &member.chunk, now, &mut report)
                .await
                .map(|()| report.outcome());
            totals.add(&report);
            outcomes.push((member.position, applied));
        }
        outcomes
    }

    /// Applies one chunk of a batch; public so that tests can commit part of a batch.
    pub async fn apply_chunk(
        &self,
        batch_id: &str,
        chunk: &Chunk,
        now: DateTime<Utc>,
        report: &mut ApplyReport,
    ) -> Result<(), StoreError> {
        let marker = [Marker {
            batch_id,
            chunk: chunk.index,
            rows: chunk.rows.len(),
        }];
        for attempt in 0..MAX_ATTEMPTS {
            report.transactions += 1;
            match self.try_transaction(&marker, &chunk.rows, now).await? {
                TransactionOutcome::Applied => {
                    report.chunks_applied += 1;
                    report.rows_written += chunk.rows.len();
                    report.items_written += chunk.rows.len() + 1;
                    return Ok(());
                }
                TransactionOutcome::MarkersExist(_) => {
                    report.chunks_already_applied += 1;
                    return Ok(());
                }
                TransactionOutcome::Conflict => backoff(attempt).await,
            }
        }
        Err(StoreError::Contended {
            what: format!("batch {batch_id} chunk {}", chunk.index),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// One transaction: every marker (with `attribute_not_exists`) and every row.
    async fn try_transaction(
        &self,
        markers: &[Marker<'_>],
        rows: &[UsageRow],
        now: DateTime<Utc>,
    ) -> Result<TransactionOutcome, StoreError> {
        let stored = self.read_versioned_states(rows).await?;
        let mut actions = Vec::with_capacity(markers.len() + rows.len());
        for marker in markers {
            actions.push(self.marker_put(marker, now)?);
        }
        for row in rows {
            let sk = keys::usage_sort(&row.key).unwrap_or_default();
            let action = if row.state.is_additive() {
                self.additive_update(row, &sk)?
            } else {
                let pk = keys::usage_partition(&row.key.tenant);
                self.versioned_put(row, stored.get(&(pk, sk)))?
            };
            actions.push(action);
        }
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(actions))
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(TransactionOutcome::Applied),
            Err(err) => err,
        };
        let reasons: Vec<Option<String>> = match err.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(cancel)) => cancel
                .cancellation_reasons()
                .iter()
                .map(|r| r.code().map(str::to_owned))
                .collect(),
            _ => return Err(StoreError::from_sdk("TransactWriteItems", err)),
        };
        let failed = |i: usize| reasons.get(i).and_then(|r| r.as_deref());
        let existing: Vec<usize> = (0..markers.len())
            .filter(|&i| failed(i) == Some("ConditionalCheckFailed"))
            .collect();
        if !existing.is_empty() {
            return Ok(TransactionOutcome::MarkersExist(existing));
        }
        for (i, row) in rows.iter().enumerate() {
            match failed(markers.len() + i) {
                Some("ConditionalCheckFailed") if row.state.is_additive() => {
                    return Err(StoreError::KindMismatch {
                        key: row.key.to_string(),
                        stored: "another aggregation".to_owned(),
                        incoming: row.state.kind().to_owned(),
                    });
                }
                Some("ConditionalCheckFailed") => return Ok(TransactionOutcome::Conflict),
                _ => {}
            }
        }
        if reasons
            .iter()
            .flatten()
            .any(|code| code == "TransactionConflict")
        {
            return Ok(TransactionOutcome::Conflict);
        }
        Err(StoreError::from_sdk("TransactWriteItems", err))
    }

    /// Reads, consistently, the stored states of the non-additive rows.
    async fn read_versioned_states(
        &self,
        rows: &[UsageRow],
    ) -> Result<HashMap<(String, String), StoredState>, StoreError> {
        let mut wanted: Vec<HashMap<String, AttributeValue>> = Vec::new();
        for row in rows.iter().filter(|r| !r.state.is_additive()) {
            let sk = keys::usage_sort(&row.key).unwrap_or_default();
            wanted.push(HashMap::from([
                (
                    PK.to_owned(),
                    AttributeValue::S(keys::usage_partition(&row.key.tenant)),
                ),
                (SK.to_owned(), AttributeValue::S(sk)),
            ]));
        }
        let mut found = HashMap::new();
        let mut pending = wanted;
        let mut rounds = 0u32;
        while !pending.is_empty() {
            rounds += 1;
            if rounds > MAX_ATTEMPTS {
                return Err(StoreError::Contended {
                    what: "reading counters (unprocessed keys)".to_owned(),
                    attempts: MAX_ATTEMPTS,
                });
            }
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut pending)))
                .consistent_read(true)
                .build()
                .map_err(|e| StoreError::InvalidBatch(format!("read request: {e}")))?;
            let output = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(|e| StoreError::from_sdk("BatchGetItem", e))?;
            for item in output
                .responses()
                .and_then(|r| r.get(&self.table))
                .into_iter()
                .flatten()
            {
                let stored = codec::stored_state(item)?;
                found.insert(stored.key.clone(), stored);
            }
            if let Some(unprocessed) = output.unprocessed_keys().and_then(|u| u.get(&self.table)) {
                pending = unprocessed.keys().to_vec();
                tokio::time::sleep(Duration::from_millis(20 << rounds.min(5))).await;
            }
        }
        Ok(found)
    }

    fn marker_put(
        &self,
        marker: &Marker<'_>,
        now: DateTime<Utc>,
    ) -> Result<TransactWriteItem, StoreError> {
        let expires = (now + self.retention.dedupe).timestamp();
        let put = Put::builder()
            .table_name(&self.table)
            .item(
                PK,
                AttributeValue::S(keys::dedupe_partition(marker.batch_id)),
            )
            .item(SK, AttributeValue::S(keys::dedupe_sort(marker.chunk)))
            .item("rows", AttributeValue::N(marker.rows.to_string()))
            .item(TTL, AttributeValue::N(expires.to_string()))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .build()
            .map_err(|e| StoreError::InvalidBatch(format!("marker: {e}")))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// `ADD` for each additive part; the condition guards against a stored state of
    /// another aggregation under the same key.
    fn additive_update(&self, row: &UsageRow, sk: &str) -> Result<TransactWriteItem, StoreError> {
        let parts = row.state.additive_parts().unwrap_or_default();
        let mut names = BTreeMap::from([
            ("#kind".to_owned(), codec::KIND.to_owned()),
            ("#ttl".to_owned(), TTL.to_owned()),
        ]);
        let mut values = BTreeMap::from([(
            ":kind".to_owned(),
            AttributeValue::S(row.state.kind().to_owned()),
        )]);
        let mut adds = Vec::new();
        for (i, (part, amount)) in parts.iter().enumerate() {
            names.insert(format!("#p{i}"), codec::part_attribute(part));
            values.insert(format!(":p{i}"), AttributeValue::N(amount.to_string()));
            adds.push(format!("#p{i} :p{i}"));
        }
        let mut expression = "SET #kind = :kind".to_owned();
        match self.retention.expiry(&row.key.window) {
            Some(expiry) => {
                values.insert(
                    ":ttl".to_owned(),
                    AttributeValue::N(expiry.timestamp().to_string()),
                );
                expression.push_str(", #ttl = :ttl");
            }
            None => {
                names.remove("#ttl");
            }
        }
        if !adds.is_empty() {
            expression.push_str(" ADD ");
            expression.push_str(&adds.join(", "));
        }
        let update = Update::builder()
            .table_name(&self.table)
            .key(
                PK,
                AttributeValue::S(keys::usage_partition(&row.key.tenant)),
            )
            .key(SK, AttributeValue::S(sk.to_owned()))
            .update_expression(expression)
            .condition_expression("attribute_not_exists(#kind) OR #kind = :kind")
            .set_expression_attribute_names(Some(names.into_iter().collect()))
            .set_expression_attribute_values(Some(values.into_iter().collect()))
            .build()
            .map_err(|e| StoreError::InvalidBatch(format!("counter update: {e}")))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// Merged state written back only if nobody changed it since it was read.
    fn versioned_put(
        &self,
        row: &UsageRow,
        stored: Option<&StoredState>,
    ) -> Result<TransactWriteItem, StoreError> {
        let (merged, next_version, condition) = match stored {
            None => (
                row.state.clone(),
                1u64,
                "attribute_not_exists(#pk)".to_owned(),
            ),
            Some(stored) => {
                if stored.state.kind() != row.state.kind() {
                    return Err(StoreError::KindMismatch {
                        key: row.key.to_string(),
                        stored: stored.state.kind().to_owned(),
                        incoming: row.state.kind().to_owned(),
                    });
                }
                let merged: AggregateState =
                    stored.state.clone().merged(&row.state).map_err(|source| {
                        StoreError::Aggregate {
                            key: row.key.to_string(),
                            source,
                        }
                    })?;
                (merged, stored.version + 1, "#ver = :expected".to_owned())
            }
        };
        let mut builder = Put::builder()
            .table_name(&self.table)
            .set_item(Some(codec::versioned_item(
                &row.key,
                &merged,
                next_version,
                self.retention.expiry(&row.key.window),
            )?))
            .condition_expression(condition);
        builder = match stored {
            Some(stored) => builder
                .expression_attribute_names("#ver", codec::VERSION)
                .expression_attribute_values(
                    ":expected",
                    AttributeValue::N(stored.version.to_string()),
                ),
            None => builder.expression_attribute_names("#pk", PK),
        };
        let put = builder
            .build()
            .map_err(|e| StoreError::InvalidBatch(format!("counter put: {e}")))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }
}

async fn backoff(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(10u64 << attempt.min(6))).await;
}

/// Groups single-chunk batches into transactions of at most 100 items: one marker per
/// member plus the distinct counter keys of all members. Deterministic for a given input.
fn pack(mut members: Vec<Member<'_>>) -> Vec<Vec<Member<'_>>> {
    members.sort_by(|a, b| a.batch_id.cmp(b.batch_id));
    let mut groups: Vec<Vec<Member<'_>>> = Vec::new();
    let mut keys: std::collections::BTreeSet<UsageKey> = std::collections::BTreeSet::new();
    for member in members {
        let new_keys = member
            .chunk
            .rows
            .iter()
            .filter(|r| !keys.contains(&r.key))
            .count();
        let fits = groups
            .last()
            .is_some_and(|g| g.len() + 1 + keys.len() + new_keys <= MAX_TRANSACTION_ITEMS);
        if !fits {
            groups.push(Vec::new());
            keys.clear();
        }
        keys.extend(member.chunk.rows.iter().map(|r| r.key.clone()));
        if let Some(group) = groups.last_mut() {
            group.push(member);
        }
    }
    groups
}
