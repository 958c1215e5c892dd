//! The writes of one transaction: dedupe markers, counter updates, refusals, and the
//! reading of the states a non-additive update merges with.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, Put, TransactWriteItem, Update};
use chrono::{DateTime, Utc};
use tollgate_core::aggregate::AggregateState;
use tollgate_core::message::Rejection;
use tollgate_core::usage::{UsageKey, UsageRow};

use super::{ApplyReport, MAX_ATTEMPTS};
use crate::DynamoDbStore;
use crate::codec::{self, StoredState};
use crate::error::StoreError;
use crate::table::{PK, SK, TTL, keys};

/// The rejection code of a counter the table refused after merging.
pub const STORAGE_REFUSED: &str = "storage_refused";

/// Counters that cannot be written (their stored state is of another aggregation, or
/// does not merge), with the reason. Kept across the attempts of one transaction: a
/// refused counter is recorded as a rejection in its place, so it loses nothing and
/// does not block the counters it travels with.
pub(super) type Refused = BTreeMap<UsageKey, String>;

/// Why a transaction did not commit.
pub(super) enum Cancelled {
    /// Cancelled by DynamoDB, with a reason code per action (`None`: that action was fine).
    Reasons {
        codes: Vec<Option<String>>,
        error: StoreError,
    },
    /// The call itself failed (throttling, network, validation).
    Failed(StoreError),
}

impl Cancelled {
    /// Whether action `i`'s condition failed.
    pub(super) fn condition_failed(&self, i: usize) -> bool {
        matches!(self, Cancelled::Reasons { codes, .. }
            if codes.get(i).and_then(|c| c.as_deref()) == Some("ConditionalCheckFailed"))
    }

    /// Whether another transaction held one of the items.
    pub(super) fn conflicted(&self) -> bool {
        matches!(self, Cancelled::Reasons { codes, .. }
            if codes.iter().flatten().any(|c| c == "TransactionConflict"))
    }

    pub(super) fn into_error(self) -> StoreError {
        match self {
            Cancelled::Reasons { error, .. } | Cancelled::Failed(error) => error,
        }
    }
}

/// What happened to the counter actions of a cancelled transaction.
pub(super) enum RowsVerdict {
    /// None of them failed.
    Fine,
    /// An additive counter holds another aggregation: it is now refused; retry at once.
    NewlyRefused,
    /// A versioned counter changed since it was read: re-read and retry after a pause.
    Changed,
}

impl DynamoDbStore {
    /// Commits `actions` as one transaction.
    pub(super) async fn transact_counters(
        &self,
        actions: Vec<TransactWriteItem>,
    ) -> Result<(), Cancelled> {
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(actions))
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(()),
            Err(err) => err,
        };
        let codes = match err.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(cancel)) => cancel
                .cancellation_reasons()
                .iter()
                .map(|r| r.code().map(str::to_owned))
                .collect(),
            _ => {
                return Err(Cancelled::Failed(StoreError::from_sdk(
                    "TransactWriteItems",
                    err,
                )));
            }
        };
        Err(Cancelled::Reasons {
            codes,
            error: StoreError::from_sdk("TransactWriteItems", err),
        })
    }

    /// Commits `rows` together with `guard`, an action whose failed condition means the
    /// rows were applied already (a content chunk's marker put, a journal chunk's
    /// delete). True if this call applied them, false if someone had.
    pub(super) async fn apply_guarded(
        &self,
        guard: &TransactWriteItem,
        rows: &[UsageRow],
        origin: &str,
        now: DateTime<Utc>,
        report: &mut ApplyReport,
    ) -> Result<bool, StoreError> {
        let mut refused = Refused::new();
        let mut attempt = 0;
        while attempt < MAX_ATTEMPTS {
            let stored = self.read_versioned_states(rows).await?;
            let mut actions = vec![guard.clone()];
            actions.extend(self.row_actions(rows, &stored, &mut refused, origin, now)?);
            report.transactions += 1;
            let Err(cancelled) = self.transact_counters(actions).await else {
                report.rows_refused += refused.len();
                report.rows_written += rows.len() - refused.len();
                report.items_written += rows.len() + 1;
                return Ok(true);
            };
            if cancelled.condition_failed(0) {
                return Ok(false);
            }
            match Self::rows_verdict(&cancelled, rows, 1, &mut refused) {
                RowsVerdict::NewlyRefused => continue,
                RowsVerdict::Changed => {}
                RowsVerdict::Fine if cancelled.conflicted() => {}
                RowsVerdict::Fine => return Err(cancelled.into_error()),
            }
            backoff(attempt).await;
            attempt += 1;
        }
        Err(StoreError::Contended {
            what: origin.to_owned(),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// One action per row, in row order: the counter update, or the refusal recorded in
    /// its place. `origin` names the claim the rows come from (it makes refusals unique).
    pub(super) fn row_actions(
        &self,
        rows: &[UsageRow],
        stored: &HashMap<(String, String), StoredState>,
        refused: &mut Refused,
        origin: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let mut actions = Vec::with_capacity(rows.len());
        for row in rows {
            let sk = keys::usage_sort(&row.key).unwrap_or_default();
            let update = if refused.contains_key(&row.key) {
                None
            } else if row.state.is_additive() {
                Some(self.additive_update(row, &sk)?)
            } else {
                let pk = keys::usage_partition(&row.key.tenant);
                match self.versioned_put(row, stored.get(&(pk, sk.clone()))) {
                    Ok(action) => Some(action),
                    Err(
                        error @ (StoreError::KindMismatch { .. } | StoreError::Aggregate { .. }),
                    ) => {
                        refused.insert(row.key.clone(), error.to_string());
                        None
                    }
                    Err(error) => return Err(error),
                }
            };
            let action = match update {
                Some(action) => action,
                None => {
                    let reason = refused.get(&row.key).cloned().unwrap_or_default();
                    self.rejection_put(&refusal(row, &sk, reason, origin, now)?)?
                }
            };
            actions.push(action);
        }
        Ok(actions)
    }

    /// Reads the row actions (from `first`) of a cancelled transaction.
    pub(super) fn rows_verdict(
        cancelled: &Cancelled,
        rows: &[UsageRow],
        first: usize,
        refused: &mut Refused,
    ) -> RowsVerdict {
        let mut verdict = RowsVerdict::Fine;
        for (i, row) in rows.iter().enumerate() {
            if !cancelled.condition_failed(first + i) || refused.contains_key(&row.key) {
                continue;
            }
            if row.state.is_additive() {
                refused.insert(
                    row.key.clone(),
                    format!(
                        "{}: the stored counter is not a `{}`; the meter's aggregation was changed in place",
                        row.key,
                        row.state.kind()
                    ),
                );
                verdict = RowsVerdict::NewlyRefused;
            } else if matches!(verdict, RowsVerdict::Fine) {
                verdict = RowsVerdict::Changed;
            }
        }
        verdict
    }

    /// Reads, consistently, the stored states of the non-additive rows (at most 99: one
    /// transaction's worth, within `BatchGetItem`'s 100 keys).
    pub(super) async fn read_versioned_states(
        &self,
        rows: &[UsageRow],
    ) -> Result<HashMap<(String, String), StoredState>, StoreError> {
        let mut pending: Vec<HashMap<String, AttributeValue>> = rows
            .iter()
            .filter(|r| !r.state.is_additive())
            .map(|row| {
                HashMap::from([
                    (
                        PK.to_owned(),
                        AttributeValue::S(keys::usage_partition(&row.key.tenant)),
                    ),
                    (
                        SK.to_owned(),
                        AttributeValue::S(keys::usage_sort(&row.key).unwrap_or_default()),
                    ),
                ])
            })
            .collect();
        let mut found = HashMap::new();
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

    /// The dedupe marker of chunk `chunk` of batch `batch_id`, put only if absent.
    pub(super) fn marker_put(
        &self,
        batch_id: &str,
        chunk: usize,
        rows: usize,
        now: DateTime<Utc>,
    ) -> Result<TransactWriteItem, StoreError> {
        let expires = (now + self.retention.dedupe).timestamp();
        let put = Put::builder()
            .table_name(&self.table)
            .item(PK, AttributeValue::S(keys::dedupe_partition(batch_id)))
            .item(SK, AttributeValue::S(keys::dedupe_sort(chunk)))
            .item("rows", AttributeValue::N(rows.to_string()))
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

/// The rejection recorded in place of a refused counter: the whole row, so nothing is
/// lost, under an id unique to the claim and the counter.
fn refusal(
    row: &UsageRow,
    sk: &str,
    reason: String,
    origin: &str,
    now: DateTime<Utc>,
) -> Result<Rejection, StoreError> {
    Ok(Rejection {
        message_id: format!("{origin}/{}/{sk}", row.key.tenant),
        tenant: Some(row.key.tenant.clone()),
        code: STORAGE_REFUSED.to_owned(),
        reason,
        received_at: now,
        body_excerpt: codec::to_json("refused row", row)?,
    })
}

pub(super) async fn backoff(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(10u64 << attempt.min(6))).await;
}
