//! An SQS event source mapping: what Lambda runs between the usage queue and `ingest`.
//!
//! On AWS the mapping is not our code, but its semantics decide whether usage is counted
//! once: which messages a batch holds, which are deleted, which come back. Running the
//! real function behind a faithful mapping locally is how we test that. It follows the
//! documented behaviour for a standard queue:
//!
//! - **Polling.** Long polls `ReceiveMessage` (at most 10 messages a call, all system
//!   attributes, all message attributes) and gathers a batch of up to
//!   [`batch_size`](SqsMappingConfig::batch_size) messages: it invokes when the batch is
//!   full, when the [`batching_window`](SqsMappingConfig::batching_window) (started by the
//!   first message) ends, or at once with no window. It also stops gathering past ~4 MB of
//!   bodies so the event stays under Lambda's 6 MB. Up to
//!   [`max_concurrency`](SqsMappingConfig::max_concurrency) batches are in flight at once.
//! - **The event** is an [`aws_lambda_events::sqs::SqsEvent`] as Lambda builds it: per
//!   record `messageId`, `receiptHandle`, `body`, `attributes` (`ApproximateReceiveCount`,
//!   `SentTimestamp`, `SenderId`, `ApproximateFirstReceiveTimestamp`, …),
//!   `messageAttributes`, `md5OfBody`, `md5OfMessageAttributes`, `eventSource: "aws:sqs"`,
//!   `eventSourceARN`, `awsRegion`.
//! - **Results** with `ReportBatchItemFailures` (the default): a reply
//!   `{"batchItemFailures": [{"itemIdentifier": "<messageId>"}, …]}` deletes every other
//!   message of the batch (`DeleteMessageBatch`, per-entry failures checked) and leaves the
//!   listed ones to reappear after the visibility timeout. `null`, `{}`, an absent, `null`
//!   or empty list mean full success. A function error, a timeout, a crash, or a reply that
//!   is not of that shape (an identifier missing, empty, not a string, or not a message of
//!   the batch) fails the whole batch: nothing is deleted. Without
//!   `ReportBatchItemFailures`, any successful invocation deletes the whole batch.
//! - **Dead-letter queue.** Redrive is the *queue's* behaviour in AWS, not the mapping's:
//!   once a message has been received `maxReceiveCount` times, SQS moves it to the DLQ
//!   instead of delivering it again. moto (5.2.5, the devstack emulator) does the same, in
//!   `ReceiveMessage` (it checks each visible message's receive count against the queue's
//!   `RedrivePolicy` before delivering it), so the mapping does not move messages itself.
//!   It counts, as [`MappingMetrics::bound_for_dlq`], the messages it returned whose
//!   receive count has reached the queue's `maxReceiveCount`: those are the ones the
//!   queue moves next.
//! - **Checks at start**, as `CreateEventSourceMapping` makes them: batch size 1–10,000
//!   (over 10 needs a window of at least 1 s), window at most 300 s, maximum concurrency
//!   2–1,000, and a queue visibility timeout not shorter than the function timeout.
//!
//! Bounded: pollers stop on [`SqsMapping::stop`] (they finish the batch in hand) or when
//! the mapping is dropped (they are aborted); every retry after an error waits first.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_lambda_events::encodings::Base64Data;
use aws_lambda_events::sqs::{SqsEvent, SqsMessage, SqsMessageAttribute};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, Message, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName,
};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::function::{LOCAL_REGION, LocalFunction};
use crate::queues::{QueueError, queue_attributes, sqs_error};

/// Lambda's largest batch size for a standard queue.
pub const MAX_BATCH_SIZE: usize = 10_000;
/// Lambda's longest batching window.
pub const MAX_BATCHING_WINDOW: Duration = Duration::from_secs(300);
/// The mapping's default maximum concurrency (also Lambda's minimum).
pub const DEFAULT_MAX_CONCURRENCY: usize = 2;
/// SQS's longest long poll.
const MAX_POLL_WAIT: Duration = Duration::from_secs(20);
/// Stop gathering once the bodies reach this size, keeping the event under 6 MB.
const GATHER_LIMIT_BYTES: usize = 4 * 1024 * 1024;
/// Pause after a failed `ReceiveMessage` before polling again.
const RECEIVE_ERROR_BACKOFF: Duration = Duration::from_secs(1);
/// Pause between empty short polls (only with a zero poll wait).
const EMPTY_POLL_PAUSE: Duration = Duration::from_millis(200);
/// Pause between short polls near the end of a batching window.
const WINDOW_POLL_PAUSE: Duration = Duration::from_millis(100);

/// How a mapping polls and invokes. Build with [`SqsMappingConfig::new`] and `with_*`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SqsMappingConfig {
    /// The queue to poll.
    pub queue_url: String,
    /// The most messages in one invocation (1–10,000; default 10).
    pub batch_size: usize,
    /// How long to keep gathering after the first message (0–300 s; default 0).
    pub batching_window: Duration,
    /// How many batches may be in flight at once (2–1,000; default 2). Invocations also
    /// wait for a free instance of the function (see `FunctionSpec::max_instances`).
    pub max_concurrency: usize,
    /// `FunctionResponseTypes: [ReportBatchItemFailures]` (default on, as tollgate's
    /// template sets it).
    pub report_batch_item_failures: bool,
    /// The long-poll wait of each `ReceiveMessage` (0–20 s; default 20 s, as Lambda).
    pub poll_wait: Duration,
}

impl SqsMappingConfig {
    /// Lambda's defaults for `queue_url`, with `ReportBatchItemFailures` on.
    pub fn new(queue_url: impl Into<String>) -> Self {
        Self {
            queue_url: queue_url.into(),
            batch_size: 10,
            batching_window: Duration::ZERO,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            report_batch_item_failures: true,
            poll_wait: MAX_POLL_WAIT,
        }
    }

    /// Sets the batch size.
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Sets the batching window.
    pub fn with_batching_window(mut self, window: Duration) -> Self {
        self.batching_window = window;
        self
    }

    /// Sets the maximum concurrency.
    pub fn with_max_concurrency(mut self, max_concurrency: usize) -> Self {
        self.max_concurrency = max_concurrency;
        self
    }

    /// Turns `ReportBatchItemFailures` on or off.
    pub fn with_report_batch_item_failures(mut self, on: bool) -> Self {
        self.report_batch_item_failures = on;
        self
    }

    /// Sets the long-poll wait.
    pub fn with_poll_wait(mut self, wait: Duration) -> Self {
        self.poll_wait = wait;
        self
    }

    fn check(&self) -> Result<(), MappingError> {
        let invalid = |reason: String| Err(MappingError::Invalid(reason));
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            return invalid(format!(
                "batch size {} is not within 1-{MAX_BATCH_SIZE}",
                self.batch_size
            ));
        }
        if self.batch_size > 10 && self.batching_window < Duration::from_secs(1) {
            return invalid("a batch size over 10 needs a batching window of at least 1 s".into());
        }
        if self.batching_window > MAX_BATCHING_WINDOW {
            return invalid(format!(
                "batching window {:?} is over {MAX_BATCHING_WINDOW:?}",
                self.batching_window
            ));
        }
        if !(2..=1000).contains(&self.max_concurrency) {
            return invalid(format!(
                "maximum concurrency {} is not within 2-1000",
                self.max_concurrency
            ));
        }
        if self.poll_wait > MAX_POLL_WAIT {
            return invalid(format!(
                "poll wait {:?} is over {MAX_POLL_WAIT:?}",
                self.poll_wait
            ));
        }
        Ok(())
    }
}

/// Why a mapping could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MappingError {
    /// The configuration breaks one of Lambda's rules.
    #[error("invalid event source mapping: {0}")]
    Invalid(String),
    /// Reading the queue's attributes failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// The mapping's counters, as a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MappingMetrics {
    /// Messages received from the queue.
    pub received: u64,
    /// Invocations made (one per batch).
    pub invoked_batches: u64,
    /// Messages deleted after a successful invocation.
    pub deleted: u64,
    /// Messages left in the queue to come back after the visibility timeout: those listed
    /// in `batchItemFailures`, and every message of a failed batch.
    pub returned_for_retry: u64,
    /// Batches that failed as a whole (function error, timeout, crash, malformed reply).
    pub whole_batch_failures: u64,
    /// Returned messages whose receive count reached the queue's `maxReceiveCount`: the
    /// queue moves them to its dead-letter queue instead of delivering them again.
    pub bound_for_dlq: u64,
    /// Messages SQS refused to delete (they will come back: at-least-once).
    pub delete_failures: u64,
    /// `ReceiveMessage` calls that failed.
    pub receive_errors: u64,
}

#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    invoked_batches: AtomicU64,
    deleted: AtomicU64,
    returned_for_retry: AtomicU64,
    whole_batch_failures: AtomicU64,
    bound_for_dlq: AtomicU64,
    delete_failures: AtomicU64,
    receive_errors: AtomicU64,
}

fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// A running mapping. [`stop`](Self::stop) it to let in-flight batches finish; dropping it
/// aborts them (their messages come back after the visibility timeout).
#[derive(Debug)]
pub struct SqsMapping {
    stop: watch::Sender<bool>,
    pollers: Vec<JoinHandle<()>>,
    poller: Arc<Poller>,
}

impl SqsMapping {
    /// Checks `config` against the queue, then starts `max_concurrency` pollers that
    /// invoke `function`.
    ///
    /// # Errors
    ///
    /// When the configuration breaks one of Lambda's rules (see the module docs), or the
    /// queue's attributes cannot be read.
    pub async fn start(
        client: Client,
        function: Arc<LocalFunction>,
        config: SqsMappingConfig,
    ) -> Result<Self, MappingError> {
        config.check()?;
        let attributes =
            queue_attributes(&client, &config.queue_url, QueueAttributeName::All).await?;
        let queue_arn = attributes
            .get(&QueueAttributeName::QueueArn)
            .cloned()
            .ok_or_else(|| {
                MappingError::Invalid(format!("{} has no QueueArn", config.queue_url))
            })?;
        let visibility_timeout = attributes
            .get(&QueueAttributeName::VisibilityTimeout)
            .and_then(|seconds| seconds.parse::<u64>().ok())
            .map(Duration::from_secs);
        let function_timeout = function.spec().timeout;
        if let Some(visibility_timeout) =
            visibility_timeout.filter(|visibility| *visibility < function_timeout)
        {
            return Err(MappingError::Invalid(format!(
                "queue visibility timeout {visibility_timeout:?} is less than the function timeout {function_timeout:?}"
            )));
        }
        let max_receive_count = attributes
            .get(&QueueAttributeName::RedrivePolicy)
            .and_then(|policy| max_receive_count(policy));
        let region = queue_arn
            .split(':')
            .nth(3)
            .filter(|region| !region.is_empty())
            .unwrap_or(LOCAL_REGION)
            .to_owned();

        let poller = Arc::new(Poller {
            client,
            function,
            config,
            queue_arn,
            region,
            max_receive_count,
            counters: Counters::default(),
        });
        let (stop, stopped) = watch::channel(false);
        let pollers = (0..poller.config.max_concurrency)
            .map(|_| tokio::spawn(Arc::clone(&poller).run(stopped.clone())))
            .collect();
        Ok(Self {
            stop,
            pollers,
            poller,
        })
    }

    /// The queue's ARN (the events' `eventSourceARN`).
    pub fn queue_arn(&self) -> &str {
        &self.poller.queue_arn
    }

    /// The counters so far.
    pub fn metrics(&self) -> MappingMetrics {
        let c = &self.poller.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        MappingMetrics {
            received: get(&c.received),
            invoked_batches: get(&c.invoked_batches),
            deleted: get(&c.deleted),
            returned_for_retry: get(&c.returned_for_retry),
            whole_batch_failures: get(&c.whole_batch_failures),
            bound_for_dlq: get(&c.bound_for_dlq),
            delete_failures: get(&c.delete_failures),
            receive_errors: get(&c.receive_errors),
        }
    }

    /// Stops polling and waits until the batches in hand are settled (at most about the
    /// function timeout).
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for poller in std::mem::take(&mut self.pollers) {
            if let Err(err) = poller.await {
                tracing::warn!(error = %err, "an SQS poller ended abnormally");
            }
        }
    }
}

impl Drop for SqsMapping {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for poller in &self.pollers {
            poller.abort();
        }
    }
}

/// `maxReceiveCount` from a `RedrivePolicy` (SQS writes it as a number or a string).
fn max_receive_count(policy: &str) -> Option<u64> {
    let policy: Value = serde_json::from_str(policy).ok()?;
    match policy.get("maxReceiveCount")? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// State shared by a mapping's pollers.
#[derive(Debug)]
struct Poller {
    client: Client,
    function: Arc<LocalFunction>,
    config: SqsMappingConfig,
    queue_arn: String,
    region: String,
    max_receive_count: Option<u64>,
    counters: Counters,
}

/// Resolves once a stop is requested (or the mapping is gone).
async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

impl Poller {
    async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        while !*stop.borrow() {
            let gathered = tokio::select! {
                () = stop_requested(&mut stop) => break,
                gathered = self.gather() => gathered,
            };
            let pause = match gathered {
                Ok(batch) if batch.is_empty() => {
                    // A long poll already waited; only short polls need a pause.
                    self.config.poll_wait.is_zero().then_some(EMPTY_POLL_PAUSE)
                }
                Ok(batch) => {
                    self.settle(batch).await;
                    None
                }
                Err(err) => {
                    add(&self.counters.receive_errors, 1);
                    tracing::warn!(queue = %self.config.queue_url, error = %DisplayErrorContext(&err), "receiving from SQS failed; retrying");
                    Some(RECEIVE_ERROR_BACKOFF)
                }
            };
            if let Some(pause) = pause {
                tokio::select! {
                    () = stop_requested(&mut stop) => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }

    /// Gathers one batch; empty when a poll found nothing.
    async fn gather(&self) -> Result<Vec<Message>, QueueError> {
        let config = &self.config;
        let mut batch: Vec<Message> = Vec::new();
        let mut window_end: Option<Instant> = None;
        loop {
            let wait = match window_end {
                None => config.poll_wait,
                Some(end) => end.saturating_duration_since(Instant::now()),
            };
            let wait_seconds = wait.min(MAX_POLL_WAIT).as_secs();
            let want = (config.batch_size - batch.len()).min(10);
            let received = match self.receive(want, wait_seconds).await {
                Ok(received) => received,
                // Messages already in hand are invoked rather than left to time out
                // (they are the function's now; the failed poll is retried after).
                Err(err) if !batch.is_empty() => {
                    add(&self.counters.receive_errors, 1);
                    tracing::warn!(queue = %config.queue_url, error = %DisplayErrorContext(&err), "receiving from SQS failed mid-window; invoking with the messages gathered");
                    return Ok(batch);
                }
                Err(err) => return Err(err),
            };
            let got_some = !received.is_empty();
            add_deduplicated(&mut batch, received);
            if batch.is_empty() {
                return Ok(batch);
            }
            let end = *window_end.get_or_insert_with(|| Instant::now() + config.batching_window);
            let bytes: usize = batch
                .iter()
                .map(|m| m.body.as_deref().map_or(0, str::len))
                .sum();
            if batch.len() >= config.batch_size
                || bytes >= GATHER_LIMIT_BYTES
                || Instant::now() >= end
            {
                return Ok(batch);
            }
            if !got_some && wait_seconds == 0 {
                // Less than a second of window left: short polls, paced.
                let left = end.saturating_duration_since(Instant::now());
                tokio::time::sleep(left.min(WINDOW_POLL_PAUSE)).await;
            }
        }
    }

    async fn receive(&self, want: usize, wait_seconds: u64) -> Result<Vec<Message>, QueueError> {
        let messages = self
            .client
            .receive_message()
            .queue_url(&self.config.queue_url)
            .max_number_of_messages(i32::try_from(want).unwrap_or(10))
            .wait_time_seconds(i32::try_from(wait_seconds).unwrap_or(20))
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|err| sqs_error("ReceiveMessage", &self.config.queue_url, err))?
            .messages
            .unwrap_or_default();
        add(&self.counters.received, messages.len());
        Ok(messages)
    }

    /// Invokes the function with `batch` and deletes what succeeded.
    async fn settle(&self, batch: Vec<Message>) {
        let event = sqs_event(&batch, &self.queue_arn, &self.region);
        add(&self.counters.invoked_batches, 1);
        let verdict = match serde_json::to_value(&event) {
            Err(err) => Err(format!("the event could not be serialised: {err}")),
            Ok(payload) => match self.function.invoke(payload).await {
                Ok(reply) if self.config.report_batch_item_failures => {
                    let ids: HashSet<&str> = batch
                        .iter()
                        .filter_map(|m| m.message_id.as_deref())
                        .collect();
                    batch_item_failures(&reply, &ids)
                }
                Ok(_) => Ok(HashSet::new()),
                Err(err) => Err(err.to_string()),
            },
        };
        let (to_delete, to_return): (Vec<Message>, Vec<Message>) = match verdict {
            Ok(failed) => batch.into_iter().partition(|m| {
                m.message_id
                    .as_deref()
                    .is_none_or(|id| !failed.contains(id))
            }),
            Err(reason) => {
                add(&self.counters.whole_batch_failures, 1);
                tracing::warn!(
                    function = %self.function.name(),
                    messages = batch.len(),
                    %reason,
                    "the whole batch failed; its messages return to the queue"
                );
                (Vec::new(), batch)
            }
        };
        add(&self.counters.returned_for_retry, to_return.len());
        if let Some(max) = self.max_receive_count {
            let exhausted = to_return
                .iter()
                .filter(|m| receive_count(m).is_some_and(|count| count >= max))
                .count();
            add(&self.counters.bound_for_dlq, exhausted);
        }
        self.delete(&to_delete).await;
    }

    /// `DeleteMessageBatch`, ten at a time, checking every entry.
    async fn delete(&self, messages: &[Message]) {
        for chunk in messages.chunks(10) {
            let entries: Result<Vec<_>, _> = chunk
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .set_receipt_handle(m.receipt_handle.clone())
                        .build()
                })
                .collect();
            let result = match entries {
                Ok(entries) => self
                    .client
                    .delete_message_batch()
                    .queue_url(&self.config.queue_url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .map_err(|err| DisplayErrorContext(err).to_string()),
                Err(err) => Err(err.to_string()),
            };
            match result {
                Ok(output) => {
                    add(&self.counters.deleted, output.successful.len());
                    add(&self.counters.delete_failures, output.failed.len());
                    for failure in &output.failed {
                        tracing::warn!(
                            queue = %self.config.queue_url,
                            entry = %failure.id,
                            code = %failure.code,
                            message = failure.message.as_deref().unwrap_or_default(),
                            "SQS refused to delete a processed message; it will be delivered again"
                        );
                    }
                }
                Err(err) => {
                    add(&self.counters.delete_failures, chunk.len());
                    tracing::warn!(queue = %self.config.queue_url, error = %err, "deleting processed messages failed; they will be delivered again");
                }
            }
        }
    }
}

/// Appends `received` to `batch`; a message received twice (a standard queue may do so)
/// keeps only its latest receipt.
fn add_deduplicated(batch: &mut Vec<Message>, received: Vec<Message>) {
    for message in received {
        if let Some(earlier) = batch
            .iter_mut()
            .find(|m| m.message_id.is_some() && m.message_id == message.message_id)
        {
            *earlier = message;
        } else {
            batch.push(message);
        }
    }
}

fn receive_count(message: &Message) -> Option<u64> {
    message
        .attributes
        .as_ref()?
        .get(&MessageSystemAttributeName::ApproximateReceiveCount)?
        .parse()
        .ok()
}

/// The message ids a `ReportBatchItemFailures` reply lists, or why the reply fails the
/// whole batch. See the module docs for the rules.
pub(crate) fn batch_item_failures(
    reply: &Value,
    batch_ids: &HashSet<&str>,
) -> Result<HashSet<String>, String> {
    let failures = match reply {
        Value::Null => return Ok(HashSet::new()),
        Value::Object(fields) => match fields.get("batchItemFailures") {
            None | Some(Value::Null) => return Ok(HashSet::new()),
            Some(Value::Array(failures)) => failures,
            Some(other) => return Err(format!("batchItemFailures is not a list: {other}")),
        },
        other => return Err(format!("the reply is not an object: {other}")),
    };
    let mut failed = HashSet::new();
    for failure in failures {
        let id = failure
            .get("itemIdentifier")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                format!("a batchItemFailures entry has no usable itemIdentifier: {failure}")
            })?;
        if !batch_ids.contains(id) {
            return Err(format!(
                "itemIdentifier {id:?} is not a message of this batch"
            ));
        }
        failed.insert(id.to_owned());
    }
    Ok(failed)
}

/// The event Lambda sends for `messages` received from the queue `queue_arn`.
pub(crate) fn sqs_event(messages: &[Message], queue_arn: &str, region: &str) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = messages
        .iter()
        .map(|message| {
            let mut record = SqsMessage::default();
            record.message_id.clone_from(&message.message_id);
            record.receipt_handle.clone_from(&message.receipt_handle);
            record.body.clone_from(&message.body);
            record.md5_of_body.clone_from(&message.md5_of_body);
            record
                .md5_of_message_attributes
                .clone_from(&message.md5_of_message_attributes);
            record.attributes = message
                .attributes
                .iter()
                .flatten()
                .map(|(name, value)| (name.as_str().to_owned(), value.clone()))
                .collect();
            record.message_attributes = message
                .message_attributes
                .iter()
                .flatten()
                .map(|(name, value)| (name.clone(), message_attribute(value)))
                .collect();
            record.event_source = Some("aws:sqs".to_owned());
            record.event_source_arn = Some(queue_arn.to_owned());
            record.aws_region = Some(region.to_owned());
            record
        })
        .collect();
    event
}

fn message_attribute(value: &MessageAttributeValue) -> SqsMessageAttribute {
    let base64 = |blob: &aws_sdk_sqs::primitives::Blob| {
        let mut data = Base64Data::default();
        data.extend_from_slice(blob.as_ref());
        data
    };
    let mut attribute = SqsMessageAttribute::default();
    attribute.string_value.clone_from(&value.string_value);
    attribute.binary_value = value.binary_value.as_ref().map(base64);
    attribute.string_list_values = value.string_list_values.clone().unwrap_or_default();
    attribute.binary_list_values = value
        .binary_list_values
        .iter()
        .flatten()
        .map(base64)
        .collect();
    attribute.data_type = Some(value.data_type.clone());
    attribute
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ids() -> HashSet<&'static str> {
        ["a", "b", "c"].into_iter().collect()
    }

    #[test]
    fn empty_replies_mean_full_success() {
        for reply in [
            Value::Null,
            json!({}),
            json!({"batchItemFailures": null}),
            json!({"batchItemFailures": []}),
        ] {
            assert_eq!(
                batch_item_failures(&reply, &ids()),
                Ok(HashSet::new()),
                "{reply}"
            );
        }
    }

    #[test]
    fn listed_ids_are_the_failures() {
        let reply =
            json!({"batchItemFailures": [{"itemIdentifier": "b"}, {"itemIdentifier": "c"}]});
        let failed = batch_item_failures(&reply, &ids()).unwrap();
        assert_eq!(
            failed,
            ["b".to_owned(), "c".to_owned()].into_iter().collect()
        );
    }

    #[test]
    fn malformed_replies_fail_the_whole_batch() {
        for reply in [
            json!({"batchItemFailures": [{"itemIdentifier": "zzz"}]}),
            json!({"batchItemFailures": [{"itemIdentifier": ""}]}),
            json!({"batchItemFailures": [{"itemIdentifier": null}]}),
            json!({"batchItemFailures": [{"itemId": "a"}]}),
            json!({"batchItemFailures": [{"itemIdentifier": 7}]}),
            json!({"batchItemFailures": "a"}),
            json!("ok"),
            json!([1]),
        ] {
            assert!(batch_item_failures(&reply, &ids()).is_err(), "{reply}");
        }
    }

    #[test]
    fn max_receive_count_is_read_as_number_or_string() {
        assert_eq!(
            max_receive_count(r#"{"deadLetterTargetArn":"x","maxReceiveCount":3}"#),
            Some(3)
        );
        assert_eq!(
            max_receive_count(r#"{"deadLetterTargetArn":"x","maxReceiveCount":"5"}"#),
            Some(5)
        );
        assert_eq!(max_receive_count("not json"), None);
    }

    #[test]
    fn the_event_has_the_shape_lambda_sends() {
        let message = Message::builder()
            .message_id("m-1")
            .receipt_handle("rh-1")
            .body("hello")
            .md5_of_body("5d41402abc4b2a76b9719d911017c592")
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "2")
            .attributes(MessageSystemAttributeName::SentTimestamp, "1520621625029")
            .message_attributes(
                "kind",
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value("edge")
                    .build()
                    .unwrap(),
            )
            .build();
        let event = sqs_event(
            &[message],
            "arn:aws:sqs:us-east-1:123456789012:usage",
            "us-east-1",
        );
        let value = serde_json::to_value(&event).unwrap();
        let record = &value["Records"][0];
        assert_eq!(record["messageId"], "m-1");
        assert_eq!(record["receiptHandle"], "rh-1");
        assert_eq!(record["body"], "hello");
        assert_eq!(record["eventSource"], "aws:sqs");
        assert_eq!(
            record["eventSourceARN"],
            "arn:aws:sqs:us-east-1:123456789012:usage"
        );
        assert_eq!(record["awsRegion"], "us-east-1");
        assert_eq!(record["attributes"]["ApproximateReceiveCount"], "2");
        assert_eq!(record["messageAttributes"]["kind"]["stringValue"], "edge");
        assert_eq!(record["messageAttributes"]["kind"]["dataType"], "String");
        let parsed: SqsEvent = serde_json::from_value(value).unwrap();
        assert_eq!(parsed, event);
    }
}
