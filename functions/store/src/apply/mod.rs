//! Exactly-once application of usage batches.
//!
//! SQS delivers at least once and Lambda retries whole batches, so the same
//! [`UsageBatch`] can arrive many times, possibly at once in two invocations, alone or
//! with other companions. Each batch (one per queue message) therefore has a **dedupe
//! marker** `DEDUPE#{batch id}` / `CHUNK#0`, put with `attribute_not_exists` *in the same
//! transaction* that counts its usage, never before it: a batch is counted if and only if
//! its marker is written.
//!
//! Cost drives the rest. Writing a counter transactionally costs two write units, so the
//! aim is to write each counter once per invocation, not once per message: the batches
//! of an invocation are merged by key and claimed together. A **claim** is
//!
//! - *direct* when its markers and merged counters fit one transaction (100 actions):
//!   markers and counters commit together;
//! - *journalled* otherwise: one transaction puts the markers together with the merged
//!   delta of exactly those batches, cut into journal chunks; each chunk is then applied
//!   by its own transaction that deletes the chunk and moves its counters (see
//!   [`journal`]). A claimer that dies half-way leaves chunks behind, and the next run
//!   finishes them ([`finish_journals`](DynamoDbStore::finish_journals)).
//!
//! Either way a claim that meets an existing marker fails as a whole, writing nothing;
//! the batches already counted are dropped and the rest claimed again. A batch too wide
//! to be claimed at all (more counters than one claim's journal can hold) is applied on
//! its own in content-defined chunks, each with its own marker `CHUNK#{i}`: the same
//! content always yields the same chunks, so a retry re-applies only the missing ones.
//!
//! Counters whose state is additive (count, sum, avg, gauge integral) are updated with
//! `ADD`, which needs no read. Other states (min, max, latest, sketches) are read, merged
//! in memory and written back under a version condition; if another writer got there
//! first the transaction is re-read and retried. A counter the table cannot take (its
//! stored state is of another aggregation, because a meter was changed in place) is
//! recorded as a rejection with the whole row, in its place in the same transaction, so
//! it neither blocks its companions nor gets lost.

mod counters;
pub mod journal;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tollgate_core::aggregate::AggregateState;
use tollgate_core::usage::{UsageBatch, UsageKey, UsageRow, merge_rows};

use self::counters::{Cancelled, Refused, RowsVerdict, backoff};
use self::journal::{CLAIM_BYTES, JOURNAL_CHUNK_BYTES, JOURNAL_CHUNK_ROWS};
use crate::DynamoDbStore;
use crate::error::StoreError;
use crate::table::keys;

pub use self::counters::STORAGE_REFUSED;
pub use self::journal::JOURNAL_GRACE;

/// DynamoDB's limit of actions in one `TransactWriteItems`.
pub const MAX_TRANSACTION_ITEMS: usize = 100;

/// Counter updates per content chunk of a wide batch; the 100th action is its marker.
pub const ROWS_PER_CHUNK: usize = MAX_TRANSACTION_ITEMS - 1;

/// The longest accepted batch id, in bytes (it becomes part of a partition key).
pub const MAX_BATCH_ID_BYTES: usize = 1024;

const MAX_ATTEMPTS: u32 = 8;

/// A slice of a wide batch applied in one transaction with its own marker.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub index: usize,
    pub rows: Vec<UsageRow>,
}

/// The rows `batch` contributes: merged by key, sorted, without no-op states. Refuses
/// what can never be stored (a bad id, minute rows, states that do not merge).
pub fn plan_rows(batch: &UsageBatch) -> Result<Vec<UsageRow>, StoreError> {
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
    Ok(rows)
}

/// Cuts planned rows into the content chunks of a wide batch, every [`ROWS_PER_CHUNK`].
/// The same batch content always yields the same chunks, whatever the row order.
pub fn content_chunks(rows: &[UsageRow]) -> Vec<Chunk> {
    rows.chunks(ROWS_PER_CHUNK)
        .enumerate()
        .map(|(index, rows)| Chunk {
            index,
            rows: rows.to_vec(),
        })
        .collect()
}

/// What applying batches did; figures add up over calls.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApplyReport {
    /// Batches this call counted.
    pub batches_applied: usize,
    /// Batches an earlier delivery had already counted.
    pub batches_already_applied: usize,
    /// Journal chunks this call applied (its own claims' and those it finished).
    pub journal_chunks_applied: usize,
    /// Counters this call wrote.
    pub rows_written: usize,
    /// Counters refused by the table and recorded as rejections instead.
    pub rows_refused: usize,
    /// Transactions attempted, including retries after conflicts.
    pub transactions: usize,
    /// Items written or deleted by committed transactions: markers, journal chunks,
    /// counters, rejections. DynamoDB bills each as two write units per started KB.
    pub items_written: usize,
}

impl ApplyReport {
    /// True when every batch had already been applied: a pure redelivery.
    pub fn was_duplicate(&self) -> bool {
        self.batches_applied == 0 && self.batches_already_applied > 0
    }

    /// Adds another report's figures to this one (for totals over many calls).
    pub fn add(&mut self, other: &ApplyReport) {
        self.batches_applied += other.batches_applied;
        self.batches_already_applied += other.batches_already_applied;
        self.journal_chunks_applied += other.journal_chunks_applied;
        self.rows_written += other.rows_written;
        self.rows_refused += other.rows_refused;
        self.transactions += other.transactions;
        self.items_written += other.items_written;
    }
}

/// What happened to one batch of an [`apply_batches`](DynamoDbStore::apply_batches) call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// This call counted the batch.
    Applied,
    /// An earlier delivery had counted it; nothing was written for it.
    AlreadyApplied,
}

/// Outcomes in the order of the batches given, and totals over the call.
#[derive(Debug, Default)]
pub struct BatchesReport {
    pub outcomes: Vec<Result<BatchOutcome, StoreError>>,
    pub totals: ApplyReport,
}

/// A batch's planned rows, waiting to be claimed.
struct Member<'a> {
    position: usize,
    batch_id: &'a str,
    rows: Vec<UsageRow>,
}

/// How one attempt at a claim ended.
enum Attempt {
    /// Every member is counted.
    Applied,
    /// The members at these positions were counted before; nothing was written.
    MarkersExist(Vec<usize>),
    /// Lost a race (a conflict, or a versioned counter changed); retry after a pause.
    Contended,
    /// A counter is newly refused; retry at once with its rejection in its place.
    Refused,
    /// The claim committed, but its journal could not be applied yet.
    Pending(StoreError),
}

type Outcomes = Vec<(usize, Result<BatchOutcome, StoreError>)>;

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
        let mut report = self.apply_batches(std::slice::from_ref(batch), now).await;
        match report.outcomes.pop() {
            Some(Err(error)) => Err(error),
            _ => Ok(report.totals),
        }
    }

    /// Applies many batches (one per queue message), each exactly once, writing each
    /// counter as few times as that allows (see the module docs).
    ///
    /// Never fails as a whole: each batch gets its own outcome.
    pub async fn apply_batches(&self, batches: &[UsageBatch], now: DateTime<Utc>) -> BatchesReport {
        let mut totals = ApplyReport::default();
        let mut outcomes: Vec<Option<Result<BatchOutcome, StoreError>>> =
            batches.iter().map(|_| None).collect();
        let mut members = Vec::new();
        for (position, batch) in batches.iter().enumerate() {
            let planned = plan_rows(batch).and_then(|rows| {
                let bytes = rows
                    .iter()
                    .map(|r| journal::encoded_len(&r.key, &r.state))
                    .sum::<Result<usize, _>>()?;
                Ok((rows, bytes))
            });
            match planned {
                Err(e) => outcomes[position] = Some(Err(e)),
                Ok((rows, _)) if rows.is_empty() => {
                    outcomes[position] = Some(Ok(BatchOutcome::Applied));
                }
                Ok((rows, bytes)) if !claimable(1, rows.len(), bytes) => {
                    let applied = self.apply_wide(&batch.batch_id, &rows, now).await;
                    outcomes[position] = Some(applied.map(|report| {
                        totals.add(&report);
                        if report.was_duplicate() {
                            BatchOutcome::AlreadyApplied
                        } else {
                            BatchOutcome::Applied
                        }
                    }));
                }
                Ok((rows, _)) => members.push(Member {
                    position,
                    batch_id: &batch.batch_id,
                    rows,
                }),
            }
        }
        for claim in pack(members) {
            for (position, outcome) in self.apply_claim(claim, now, &mut totals).await {
                outcomes[position] = Some(outcome);
            }
        }
        BatchesReport {
            outcomes: outcomes
                .into_iter()
                .map(|o| {
                    o.unwrap_or_else(|| {
                        Err(StoreError::InvalidBatch(
                            "batch was not attempted".to_owned(),
                        ))
                    })
                })
                .collect(),
            totals,
        }
    }

    /// Claims `members` together, dropping those counted before, until the rest commit.
    async fn apply_claim(
        &self,
        mut members: Vec<Member<'_>>,
        now: DateTime<Utc>,
        totals: &mut ApplyReport,
    ) -> Outcomes {
        let mut outcomes = Vec::with_capacity(members.len());
        let mut refused = Refused::new();
        let mut attempt = 0;
        while attempt < MAX_ATTEMPTS && !members.is_empty() {
            let Ok(rows) = merge_rows(members.iter().flat_map(|m| m.rows.iter().cloned())) else {
                // Two batches disagree on a counter's aggregation: claim them one by one,
                // so the table decides which one is refused.
                break;
            };
            let id = claim_id(&members, now);
            let tried = if members.len() + rows.len() <= MAX_TRANSACTION_ITEMS {
                self.try_direct(&members, &rows, &id, &mut refused, now, totals)
                    .await
            } else {
                self.try_journal(&members, &rows, &id, now, totals).await
            };
            match tried {
                Ok(Attempt::Applied) => {
                    totals.batches_applied += members.len();
                    outcomes.extend(
                        members
                            .iter()
                            .map(|m| (m.position, Ok(BatchOutcome::Applied))),
                    );
                    return outcomes;
                }
                Ok(Attempt::Pending(error)) => {
                    outcomes.extend(
                        members
                            .iter()
                            .map(|m| (m.position, Err(journal::pending(&id, &error)))),
                    );
                    return outcomes;
                }
                Ok(Attempt::MarkersExist(done)) => {
                    totals.batches_already_applied += done.len();
                    let mut index = 0;
                    members.retain(|m| {
                        let keep = !done.contains(&index);
                        if !keep {
                            outcomes.push((m.position, Ok(BatchOutcome::AlreadyApplied)));
                        }
                        index += 1;
                        keep
                    });
                }
                Ok(Attempt::Refused) => {}
                Ok(Attempt::Contended) => {
                    backoff(attempt).await;
                    attempt += 1;
                }
                Err(error) if members.len() == 1 => {
                    outcomes.push((members[0].position, Err(error)));
                    return outcomes;
                }
                // Throttling or an outage: the whole claim comes back later.
                Err(error) if error.is_transient() => {
                    let reason = error.to_string();
                    outcomes.extend(members.iter().map(|m| {
                        let error = StoreError::ClaimFailed {
                            claim: id.clone(),
                            reason: reason.clone(),
                        };
                        (m.position, Err(error))
                    }));
                    return outcomes;
                }
                Err(_) => break,
            }
        }
        if members.len() == 1 {
            let what = format!("batch {}", members[0].batch_id);
            outcomes.push((
                members[0].position,
                Err(StoreError::Contended {
                    what,
                    attempts: MAX_ATTEMPTS,
                }),
            ));
            return outcomes;
        }
        // Something other than duplicates or contention failed the claim: claim each
        // member on its own, so each gets its own outcome and error.
        for member in members {
            outcomes.extend(Box::pin(self.apply_claim(vec![member], now, totals)).await);
        }
        outcomes
    }

    /// Markers and counters in one transaction.
    async fn try_direct(
        &self,
        members: &[Member<'_>],
        rows: &[UsageRow],
        id: &str,
        refused: &mut Refused,
        now: DateTime<Utc>,
        totals: &mut ApplyReport,
    ) -> Result<Attempt, StoreError> {
        let stored = self.read_versioned_states(rows).await?;
        let mut actions = Vec::with_capacity(members.len() + rows.len());
        for member in members {
            actions.push(self.marker_put(member.batch_id, 0, member.rows.len(), now)?);
        }
        actions.extend(self.row_actions(rows, &stored, refused, id, now)?);
        totals.transactions += 1;
        let Err(cancelled) = self.transact_counters(actions).await else {
            totals.rows_refused += refused.len();
            totals.rows_written += rows.len() - refused.len();
            totals.items_written += members.len() + rows.len();
            return Ok(Attempt::Applied);
        };
        if let Some(attempt) = markers_exist(&cancelled, members.len()) {
            return Ok(attempt);
        }
        match Self::rows_verdict(&cancelled, rows, members.len(), refused) {
            RowsVerdict::NewlyRefused => Ok(Attempt::Refused),
            RowsVerdict::Changed => Ok(Attempt::Contended),
            RowsVerdict::Fine if cancelled.conflicted() => Ok(Attempt::Contended),
            RowsVerdict::Fine => Err(cancelled.into_error()),
        }
    }

    /// Markers and the journal in one transaction, then the journal's chunks.
    async fn try_journal(
        &self,
        members: &[Member<'_>],
        rows: &[UsageRow],
        id: &str,
        now: DateTime<Utc>,
        totals: &mut ApplyReport,
    ) -> Result<Attempt, StoreError> {
        let chunks = journal::cut(rows, id, &now)?;
        let bytes: usize = chunks.iter().map(|c| c.body.len()).sum();
        if members.len() + chunks.len() > MAX_TRANSACTION_ITEMS || bytes > CLAIM_BYTES {
            return Err(StoreError::InvalidBatch(format!(
                "claim {id} needs {} markers and {} journal chunks ({bytes} bytes)",
                members.len(),
                chunks.len()
            )));
        }
        let mut actions = Vec::with_capacity(members.len() + chunks.len());
        for member in members {
            actions.push(self.marker_put(member.batch_id, 0, member.rows.len(), now)?);
        }
        for chunk in &chunks {
            actions.push(self.journal_put(chunk)?);
        }
        totals.transactions += 1;
        if let Err(cancelled) = self.transact_counters(actions).await {
            return match markers_exist(&cancelled, members.len()) {
                Some(attempt) => Ok(attempt),
                // A journal chunk's key taken (the same members claimed in the same
                // millisecond by a concurrent run) or a conflict: try again.
                None if cancelled.conflicted()
                    || (members.len()..members.len() + chunks.len())
                        .any(|i| cancelled.condition_failed(i)) =>
                {
                    Ok(Attempt::Contended)
                }
                None => Err(cancelled.into_error()),
            };
        }
        totals.items_written += members.len() + chunks.len();
        for chunk in &chunks {
            if let Err(error) = self.apply_journal_chunk(chunk, now, totals).await {
                return Ok(Attempt::Pending(error));
            }
        }
        Ok(Attempt::Applied)
    }

    /// A batch too wide for one claim: content chunks, each with its own marker.
    async fn apply_wide(
        &self,
        batch_id: &str,
        rows: &[UsageRow],
        now: DateTime<Utc>,
    ) -> Result<ApplyReport, StoreError> {
        let mut report = ApplyReport::default();
        let mut applied = 0;
        let chunks = content_chunks(rows);
        for chunk in &chunks {
            if self.apply_chunk(batch_id, chunk, now, &mut report).await? {
                applied += 1;
            }
        }
        if applied > 0 {
            report.batches_applied += 1;
        } else {
            report.batches_already_applied += 1;
        }
        Ok(report)
    }

    /// Applies one content chunk of a wide batch; true if this call committed it, false
    /// if an earlier delivery had. Public so that tests can commit part of a batch.
    pub async fn apply_chunk(
        &self,
        batch_id: &str,
        chunk: &Chunk,
        now: DateTime<Utc>,
        report: &mut ApplyReport,
    ) -> Result<bool, StoreError> {
        let guard = self.marker_put(batch_id, chunk.index, chunk.rows.len(), now)?;
        let origin = format!("{batch_id}#{}", chunk.index);
        self.apply_guarded(&guard, &chunk.rows, &origin, now, report)
            .await
    }
}

/// The members whose markers exist, if any did.
fn markers_exist(cancelled: &Cancelled, markers: usize) -> Option<Attempt> {
    let existing: Vec<usize> = (0..markers)
        .filter(|&i| cancelled.condition_failed(i))
        .collect();
    (!existing.is_empty()).then_some(Attempt::MarkersExist(existing))
}

/// Whether `markers` batches with `rows` counters (`bytes` journalled) fit one claim.
/// Rows and bytes are upper bounds: merging only shrinks them.
fn claimable(markers: usize, rows: usize, bytes: usize) -> bool {
    let chunks = rows.div_ceil(JOURNAL_CHUNK_ROWS) + bytes.div_ceil(JOURNAL_CHUNK_BYTES);
    markers + rows <= MAX_TRANSACTION_ITEMS
        || (markers + chunks <= MAX_TRANSACTION_ITEMS && bytes <= CLAIM_BYTES)
}

/// Groups members into claims, as large as [`claimable`] allows, in batch id order.
fn pack(mut members: Vec<Member<'_>>) -> Vec<Vec<Member<'_>>> {
    members.sort_by(|a, b| a.batch_id.cmp(b.batch_id));
    let mut claims: Vec<Vec<Member<'_>>> = Vec::new();
    let mut merged = Merged::default();
    for member in members {
        let growth = claims.last().and_then(|claim| {
            merged
                .growth(&member.rows)
                .filter(|g| claimable(claim.len() + 1, g.keys, g.bytes))
        });
        let growth = match growth {
            Some(growth) => growth,
            None => {
                claims.push(Vec::new());
                merged = Merged::default();
                merged.growth(&member.rows).unwrap_or_default()
            }
        };
        merged.grow(growth);
        if let Some(claim) = claims.last_mut() {
            claim.push(member);
        }
    }
    claims
}

/// A claim's counters as they merge, with their journal bytes: what decides whether one
/// more batch still fits.
#[derive(Debug, Default)]
struct Merged {
    states: BTreeMap<UsageKey, (AggregateState, usize)>,
    bytes: usize,
}

/// What merging one more batch into a claim would change.
#[derive(Debug, Default)]
struct Growth {
    updates: Vec<(UsageKey, AggregateState, usize)>,
    keys: usize,
    bytes: usize,
}

impl Merged {
    /// The claim's counters and bytes with `rows` (one batch's, distinct keys) merged in;
    /// `None` if a counter would not merge (two batches disagree on its aggregation: they
    /// go to different claims).
    fn growth(&self, rows: &[UsageRow]) -> Option<Growth> {
        let mut growth = Growth {
            updates: Vec::with_capacity(rows.len()),
            keys: self.states.len(),
            bytes: self.bytes,
        };
        for row in rows {
            let (state, old) = match self.states.get(&row.key) {
                Some((state, len)) => (state.clone().merged(&row.state).ok()?, *len),
                None => {
                    growth.keys += 1;
                    (row.state.clone(), 0)
                }
            };
            let len = journal::encoded_len(&row.key, &state).ok()?;
            growth.bytes = growth.bytes + len - old;
            growth.updates.push((row.key.clone(), state, len));
        }
        Some(growth)
    }

    fn grow(&mut self, growth: Growth) {
        self.bytes = growth.bytes;
        for (key, state, len) in growth.updates {
            self.states.insert(key, (state, len));
        }
    }
}

/// Names a claim: a digest of its members and time, for journal keys and refusals.
fn claim_id(members: &[Member<'_>], now: DateTime<Utc>) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for member in members {
        member.batch_id.hash(&mut hasher);
    }
    now.timestamp_nanos_opt().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}
