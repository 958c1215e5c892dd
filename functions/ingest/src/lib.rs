//! # tollgate-ingest
//!
//! The Lambda behind the usage queue's event source mapping. It turns every usage event
//! (a message holds one, a CloudEvents batch of many, or an edge batch) into one
//! [`UsageBatch`](tollgate_core::usage::UsageBatch) (core's [`parse_message`]) and
//! applies them all through the store, exactly once.
//!
//! ## Why this is exactly-once under any regrouping
//!
//! SQS delivers at least once and Lambda retries whole batches, so a message can come
//! back alone, with other companions, in another invocation, or in two invocations at
//! once. Ingest therefore never lets one message's usage depend on its companions:
//!
//! 1. each message becomes a batch whose id is the message's *content* dedupe key (the
//!    CloudEvent's (subject, source, id), or the edge batch's (gateway, batch id)) — not
//!    the SQS message id, so a producer's retry that sent the same event twice is also
//!    counted once;
//! 2. the store merges the messages' rows so each counter is written once per run, but
//!    every message keeps its own dedupe marker, claimed *in the same transaction* as
//!    its rows or as the journal that holds them ([`DynamoDbStore::apply_batches`]): its
//!    rows are counted if and only if its marker is written, whoever it travelled with;
//! 3. a claim that meets an existing marker fails as a whole (nothing written); the
//!    already-applied messages are dropped and the rest retried, so no message is counted
//!    twice and none is skipped;
//! 4. a run that claimed a journal but could not apply all of it returns those messages
//!    to the queue; every run first finishes journals older than
//!    [`JOURNAL_GRACE`](tollgate_store::JOURNAL_GRACE), so the redelivery (recognised as
//!    already claimed) brings the run that completes it.
//!
//! `tests/regrouping.rs` checks this with random groupings, redeliveries and concurrent
//! invocations against DynamoDB Local, comparing with a ground truth computed in the test.
//!
//! ## Failures
//!
//! Usage of a tenant that is not registered is rejected too (`unregistered_tenant`): it
//! would be counted but never rolled up or billed. Registered tenants are cached for the
//! life of the Lambda instance, so the check costs one read per tenant and instance.
//!
//! Usage that can never be applied (bad JSON, broken contract, unknown meter, too old) is
//! recorded as a rejection with its reason and acknowledged, so it does not cycle to the
//! DLQ unexplained; a bad element of a CloudEvents batch is rejected alone, as
//! `{message id}#{index}`. Transient failures (throttling, timeouts, contention) are
//! reported in `batchItemFailures`, so only those messages return to the queue; their
//! events that did apply are recognised as duplicates on redelivery.

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use chrono::{DateTime, Utc};
use tollgate_core::ids::TenantId;
use tollgate_core::message::{Rejection, parse_message};
use tollgate_core::meter::MeterCatalog;
use tollgate_core::usage::UsageBatch;
use tollgate_core::window::EventTimePolicy;
use tollgate_store::{
    ApplyReport, BatchOutcome, BatchesReport, DynamoDbStore, JOURNAL_GRACE, StoreError,
};

/// What ingest needs from storage.
pub trait UsageSink {
    /// Applies each batch exactly once; one outcome per batch, in order.
    fn apply_batches(
        &self,
        batches: &[UsageBatch],
        now: DateTime<Utc>,
    ) -> impl Future<Output = BatchesReport> + Send;

    /// Records a rejected message; recording the same message twice keeps one record.
    fn record_rejection(
        &self,
        rejection: &Rejection,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Finishes journals claimed before `claimed_before` that their claimer left behind.
    fn finish_journals(
        &self,
        claimed_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<ApplyReport, StoreError>> + Send;

    /// Whether `tenant` is registered (has a profile).
    fn is_registered(
        &self,
        tenant: &TenantId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

impl UsageSink for DynamoDbStore {
    fn apply_batches(
        &self,
        batches: &[UsageBatch],
        now: DateTime<Utc>,
    ) -> impl Future<Output = BatchesReport> + Send {
        DynamoDbStore::apply_batches(self, batches, now)
    }

    fn record_rejection(
        &self,
        rejection: &Rejection,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        DynamoDbStore::record_rejection(self, rejection)
    }

    fn finish_journals(
        &self,
        claimed_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<ApplyReport, StoreError>> + Send {
        DynamoDbStore::finish_journals(self, claimed_before, now)
    }

    async fn is_registered(&self, tenant: &TenantId) -> Result<bool, StoreError> {
        Ok(self.tenant(tenant).await?.is_some())
    }
}

/// Counts of one invocation, logged as a CloudWatch embedded metric. `applied`,
/// `duplicates` and `rejected` count usage events and edge batches (a CloudEvents batch
/// message holds many); `retried` counts messages returned to the queue.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IngestStats {
    pub messages: usize,
    pub applied: usize,
    pub duplicates: usize,
    pub rejected: usize,
    pub retried: usize,
    /// Counter rows written (after merging) and items written or deleted (counters,
    /// markers, journal chunks, refusals).
    pub rows_written: usize,
    pub items_written: usize,
    /// Counters the table refused (recorded as rejections with the whole row).
    pub rows_refused: usize,
    /// Journal chunks left by an earlier run and finished by this one.
    pub journal_chunks_finished: usize,
}

/// The ingest handler with its configuration.
#[derive(Debug)]
pub struct Ingest<S> {
    pub sink: S,
    pub catalog: MeterCatalog,
    pub policy: EventTimePolicy,
    /// Tenants known to be registered (a registration is never undone, so no expiry).
    registered: Mutex<HashSet<TenantId>>,
}

impl<S> Ingest<S> {
    pub fn new(sink: S, catalog: MeterCatalog, policy: EventTimePolicy) -> Self {
        Ingest {
            sink,
            catalog,
            policy,
            registered: Mutex::new(HashSet::new()),
        }
    }
}

impl<S: UsageSink + Sync> Ingest<S> {
    /// Drops the rows of unregistered tenants from `batch`, recording a rejection for each
    /// such tenant: their usage would be counted but never rolled up or billed. Returns
    /// false if a lookup or a record failed (the message must come back).
    async fn keep_registered(
        &self,
        id: &str,
        body: &str,
        batch: &mut UsageBatch,
        now: DateTime<Utc>,
        stats: &mut IngestStats,
    ) -> bool {
        let tenants: BTreeSet<TenantId> = batch.rows.iter().map(|r| r.key.tenant.clone()).collect();
        let mut complete = true;
        for tenant in tenants {
            let cached = self
                .registered
                .lock()
                .map(|known| known.contains(&tenant))
                .unwrap_or(false);
            if cached {
                continue;
            }
            match self.sink.is_registered(&tenant).await {
                Ok(true) => {
                    if let Ok(mut known) = self.registered.lock() {
                        known.insert(tenant);
                    }
                }
                Ok(false) => {
                    let dropped = batch.rows.iter().filter(|r| r.key.tenant == tenant).count();
                    batch.rows.retain(|r| r.key.tenant != tenant);
                    let rejection = Rejection::with_reason(
                        &format!("{id}#{tenant}"),
                        body,
                        "unregistered_tenant",
                        format!(
                            "tenant {tenant} is not registered; {dropped} usage rows were not counted"
                        ),
                        now,
                    );
                    complete &= self.reject(rejection, stats).await;
                }
                Err(error) => {
                    tracing::warn!(%tenant, %error, "could not look the tenant up; retrying");
                    complete = false;
                }
            }
        }
        complete
    }

    /// Handles one SQS batch; the reply lists exactly the messages to deliver again.
    pub async fn handle(
        &self,
        event: &SqsEvent,
        now: DateTime<Utc>,
    ) -> (SqsBatchResponse, IngestStats) {
        let mut stats = IngestStats {
            messages: event.records.len(),
            ..IngestStats::default()
        };
        match self.sink.finish_journals(now - JOURNAL_GRACE, now).await {
            Ok(finished) => {
                stats.journal_chunks_finished = finished.journal_chunks_applied;
                stats.rows_written += finished.rows_written;
                stats.items_written += finished.items_written;
                stats.rows_refused += finished.rows_refused;
            }
            // Not this batch's problem: the next run tries again.
            Err(error) => tracing::warn!(%error, "could not finish earlier journals"),
        }
        let mut retry: Vec<String> = Vec::new();
        let mut batches = Vec::new();
        // For each batch: the message it came from, and its position among that message's.
        let mut owners: Vec<(usize, usize)> = Vec::new();
        let ids: Vec<String> = event
            .records
            .iter()
            .map(|r| r.message_id.clone().unwrap_or_default())
            .collect();
        for (m, record) in event.records.iter().enumerate() {
            let id = &ids[m];
            let body = record.body.as_deref().unwrap_or_default();
            match parse_message(body, &self.catalog, &self.policy, now) {
                Ok(parsed) => {
                    let elements: Vec<serde_json::Value> = if parsed.rejected.is_empty() {
                        Vec::new()
                    } else {
                        serde_json::from_str(body).unwrap_or_default()
                    };
                    for (i, error) in parsed.rejected {
                        let element = elements.get(i).map(ToString::to_string).unwrap_or_default();
                        let rejection = Rejection::new(&format!("{id}#{i}"), &element, &error, now);
                        if !self.reject(rejection, &mut stats).await {
                            retry.push(id.clone());
                        }
                    }
                    for (position, mut batch) in parsed.batches.into_iter().enumerate() {
                        if !self
                            .keep_registered(id, body, &mut batch, now, &mut stats)
                            .await
                        {
                            retry.push(id.clone());
                            continue;
                        }
                        if !batch.rows.is_empty() {
                            batches.push(batch);
                            owners.push((m, position));
                        }
                    }
                }
                Err(error) => {
                    let rejection = Rejection::new(id, body, &error, now);
                    if !self.reject(rejection, &mut stats).await {
                        retry.push(id.clone());
                    }
                }
            }
        }
        let report = self.sink.apply_batches(&batches, now).await;
        stats.rows_written += report.totals.rows_written;
        stats.items_written += report.totals.items_written;
        stats.rows_refused += report.totals.rows_refused;
        for ((m, position), outcome) in owners.into_iter().zip(report.outcomes) {
            let id = &ids[m];
            match outcome {
                Ok(BatchOutcome::Applied) => stats.applied += 1,
                Ok(BatchOutcome::AlreadyApplied) => stats.duplicates += 1,
                Err(error) if error.is_transient() => {
                    tracing::warn!(message_id = %id, %error, "transient failure; the message will be retried");
                    stats.retried += 1;
                    retry.push(id.clone());
                }
                Err(error) => {
                    let body = event.records[m].body.as_deref().unwrap_or_default();
                    let rejection = Rejection::with_reason(
                        &format!("{id}#{position}"),
                        body,
                        "storage_refused",
                        error.to_string(),
                        now,
                    );
                    if !self.reject(rejection, &mut stats).await {
                        retry.push(id.clone());
                    }
                }
            }
        }
        retry.sort();
        retry.dedup();
        let mut response = SqsBatchResponse::default();
        response.batch_item_failures = retry
            .into_iter()
            .map(|item_identifier| {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = item_identifier;
                failure
            })
            .collect();
        (response, stats)
    }

    /// Records a rejection; false if it could not be recorded (the message must return).
    async fn reject(&self, rejection: Rejection, stats: &mut IngestStats) -> bool {
        let id = &rejection.message_id;
        match self.sink.record_rejection(&rejection).await {
            Ok(()) => {
                tracing::info!(message_id = %id, code = rejection.code, "usage rejected");
                stats.rejected += 1;
                true
            }
            Err(store_error) => {
                // Not recorded yet: keep the message so the rejection is not lost.
                tracing::warn!(message_id = %id, error = %store_error, "could not record a rejection; retrying");
                stats.retried += 1;
                false
            }
        }
    }
}

impl IngestStats {
    /// The counts as a CloudWatch Embedded Metric Format line (low cardinality: no tenant
    /// dimension, so it costs a handful of metrics, not one per tenant).
    pub fn emf_line(&self, now: DateTime<Utc>) -> String {
        serde_json::json!({
            "_aws": {
                "Timestamp": now.timestamp_millis(),
                "CloudWatchMetrics": [{
                    "Namespace": "tollgate",
                    "Dimensions": [["Function"]],
                    "Metrics": [
                        {"Name": "MessagesReceived", "Unit": "Count"},
                        {"Name": "MessagesApplied", "Unit": "Count"},
                        {"Name": "MessagesDuplicate", "Unit": "Count"},
                        {"Name": "MessagesRejected", "Unit": "Count"},
                        {"Name": "MessagesRetried", "Unit": "Count"},
                        {"Name": "CountersRefused", "Unit": "Count"},
                        {"Name": "JournalChunksFinished", "Unit": "Count"}
                    ]
                }]
            },
            "Function": "ingest",
            "MessagesReceived": self.messages,
            "MessagesApplied": self.applied,
            "MessagesDuplicate": self.duplicates,
            "MessagesRejected": self.rejected,
            "MessagesRetried": self.retried,
            "CountersRefused": self.rows_refused,
            "JournalChunksFinished": self.journal_chunks_finished,
        })
        .to_string()
    }
}
