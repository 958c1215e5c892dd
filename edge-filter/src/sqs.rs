//! The flush to SQS: usage batches wait in a bounded [`Outbox`] and leave in
//! `SendMessageBatch` calls (AWS JSON 1.0 protocol), retried with backoff until SQS
//! takes them.
//!
//! ## Request
//!
//! `POST /` to the queue's host with `x-amz-target: AmazonSQS.SendMessageBatch`,
//! `content-type: application/x-amz-json-1.0` and
//! `{"QueueUrl": …, "Entries": [{"Id": "m0", "MessageBody": …}, …]}`: at most
//! [`MAX_ENTRIES`] entries, each body one [`EdgeBatch`] of at most `max_body_bytes`, and
//! the bodies of one call together at most `max_body_bytes` too (SQS limits the whole
//! request, not only each message). The request is signed by Envoy's
//! `aws_request_signing` filter on the SQS cluster, so no credential enters the VM.
//!
//! ## Exactly once downstream, at least once here
//!
//! A batch keeps its id and body from its first attempt to its last: the ingest function
//! deduplicates on the batch id, so a call that SQS applied but whose answer was lost is
//! simply sent again. Entries SQS reports as failed by its own fault (`SenderFault:
//! false`, throttling) and calls that fail as a whole (a timeout, 5xx, 403 while
//! credentials rotate) are retried with exponential backoff and full jitter, 1 s doubling
//! to 60 s. Entries SQS refuses as the sender's fault cannot succeed on a retry; their
//! rows are dropped and counted.
//!
//! ## Bounded
//!
//! The outbox holds at most `max_pending_bytes` of bodies. A batch that does not fit
//! while SQS is unreachable is dropped whole and its rows counted in
//! [`FlushReport::dropped_rows`], which the glue exports as the dropped-rows metric.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use tollgate_core::message::EdgeBatch;

/// Most entries one `SendMessageBatch` call takes.
pub const MAX_ENTRIES: usize = 10;
/// First retry delay.
pub const BACKOFF_BASE_MS: u64 = 1_000;
/// Longest retry delay.
pub const BACKOFF_CAP_MS: u64 = 60_000;

/// One batch waiting to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundMessage {
    pub batch_id: String,
    pub body: String,
    pub rows: u64,
}

/// A `SendMessageBatch` call to dispatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendBatchCall {
    pub body: Vec<u8>,
    pub entries: usize,
}

/// What SQS answered to a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The call went through; some entries may have failed individually.
    Answered { failed: Vec<FailedEntry> },
    /// The call failed as a whole (no answer, or an error status): retry all of it.
    CallFailed { reason: String },
}

/// One entry SQS did not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedEntry {
    pub id: String,
    pub sender_fault: bool,
    pub code: String,
}

/// What one answered call changed, for metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FlushReport {
    pub sent_batches: u64,
    pub sent_rows: u64,
    /// Batches that will be retried.
    pub retried_batches: u64,
    pub dropped_rows: u64,
    /// Why something failed, for the log.
    pub failures: Vec<String>,
}

/// Batches waiting for SQS, at most one call in flight.
#[derive(Debug, Clone)]
pub struct Outbox {
    queue_url: String,
    max_body_bytes: usize,
    max_pending_bytes: usize,
    waiting: VecDeque<OutboundMessage>,
    in_flight: Vec<OutboundMessage>,
    pending_bytes: usize,
    failures_in_a_row: u32,
    next_attempt_ms: u64,
}

impl Outbox {
    pub fn new(queue_url: String, max_body_bytes: usize, max_pending_bytes: usize) -> Outbox {
        Outbox {
            queue_url,
            max_body_bytes,
            max_pending_bytes,
            waiting: VecDeque::new(),
            in_flight: Vec::new(),
            pending_bytes: 0,
            failures_in_a_row: 0,
            next_attempt_ms: 0,
        }
    }

    /// Batches waiting or in flight.
    pub fn len(&self) -> usize {
        self.waiting.len() + self.in_flight.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_in_flight(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// Queues a batch; returns the rows dropped because the outbox is full (0 or all of
    /// the batch's rows).
    pub fn push(&mut self, batch: &EdgeBatch) -> u64 {
        let rows = u64::try_from(batch.rows.len()).unwrap_or(u64::MAX);
        let Ok(body) = serde_json::to_string(batch) else {
            return rows;
        };
        if self.pending_bytes + body.len() > self.max_pending_bytes {
            return rows;
        }
        self.pending_bytes += body.len();
        self.waiting.push_back(OutboundMessage {
            batch_id: batch.batch_id.clone(),
            body,
            rows,
        });
        0
    }

    /// The next call to make at `now_ms`, if none is in flight, something waits and the
    /// backoff has passed. The batches go in flight until [`Outbox::on_outcome`].
    pub fn next_call(&mut self, now_ms: u64) -> Option<SendBatchCall> {
        if self.is_in_flight() || self.waiting.is_empty() || now_ms < self.next_attempt_ms {
            return None;
        }
        let mut total = 0usize;
        while let Some(next) = self.waiting.front() {
            let fits = self.in_flight.is_empty() || total + next.body.len() <= self.max_body_bytes;
            if self.in_flight.len() == MAX_ENTRIES || !fits {
                break;
            }
            total += next.body.len();
            if let Some(message) = self.waiting.pop_front() {
                self.in_flight.push(message);
            }
        }
        let body = send_message_batch_body(&self.queue_url, &self.in_flight);
        Some(SendBatchCall {
            body,
            entries: self.in_flight.len(),
        })
    }

    /// Takes the answer to the call in flight. `jitter` is any random number; it picks
    /// the retry delay within the backoff window.
    pub fn on_outcome(&mut self, outcome: SendOutcome, now_ms: u64, jitter: u64) -> FlushReport {
        let mut report = FlushReport::default();
        let in_flight = std::mem::take(&mut self.in_flight);
        let mut retry = Vec::new();
        match outcome {
            SendOutcome::CallFailed { reason } => {
                report.failures.push(reason);
                retry = in_flight;
            }
            SendOutcome::Answered { failed } => {
                for (i, message) in in_flight.into_iter().enumerate() {
                    match failed.iter().find(|f| f.id == entry_id(i)) {
                        None => {
                            report.sent_batches += 1;
                            report.sent_rows += message.rows;
                            self.pending_bytes -= message.body.len();
                        }
                        Some(f) if f.sender_fault => {
                            report.failures.push(format!(
                                "batch {} refused by SQS ({}): its {} rows are dropped",
                                message.batch_id, f.code, message.rows
                            ));
                            report.dropped_rows += message.rows;
                            self.pending_bytes -= message.body.len();
                        }
                        Some(f) => {
                            report
                                .failures
                                .push(format!("batch {} not taken ({})", message.batch_id, f.code));
                            retry.push(message);
                        }
                    }
                }
            }
        }
        report.retried_batches = u64::try_from(retry.len()).unwrap_or(u64::MAX);
        if retry.is_empty() {
            self.failures_in_a_row = 0;
            self.next_attempt_ms = now_ms;
        } else {
            self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
            self.next_attempt_ms = now_ms + backoff_ms(self.failures_in_a_row, jitter);
            for message in retry.into_iter().rev() {
                self.waiting.push_front(message);
            }
        }
        report
    }
}

/// The delay before retry `attempt` (1-based): full jitter over `min(cap, base·2^(n−1))`,
/// at least 100 ms.
pub fn backoff_ms(attempt: u32, jitter: u64) -> u64 {
    let window = BACKOFF_BASE_MS
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(16))
        .min(BACKOFF_CAP_MS);
    (jitter % (window + 1)).max(100)
}

fn entry_id(index: usize) -> String {
    format!("m{index}")
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SendMessageBatchRequest<'a> {
    queue_url: &'a str,
    entries: Vec<RequestEntry<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RequestEntry<'a> {
    id: String,
    message_body: &'a str,
}

/// The JSON body of a `SendMessageBatch` call with one entry per message (`m0`, `m1`, …).
pub fn send_message_batch_body(queue_url: &str, messages: &[OutboundMessage]) -> Vec<u8> {
    let request = SendMessageBatchRequest {
        queue_url,
        entries: messages
            .iter()
            .enumerate()
            .map(|(i, m)| RequestEntry {
                id: entry_id(i),
                message_body: &m.body,
            })
            .collect(),
    };
    serde_json::to_vec(&request).unwrap_or_default()
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SendMessageBatchResponse {
    #[serde(default)]
    failed: Vec<ResponseFailure>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ResponseFailure {
    id: String,
    #[serde(default)]
    sender_fault: bool,
    #[serde(default)]
    code: String,
}

/// Reads SQS's answer: `status` 0 means the call got no answer (reset, timeout).
pub fn parse_send_message_batch_response(status: u32, body: &[u8]) -> SendOutcome {
    if status != 200 {
        let detail =
            String::from_utf8_lossy(body.get(..body.len().min(200)).unwrap_or(&[])).into_owned();
        return SendOutcome::CallFailed {
            reason: match status {
                0 => "no answer from the SQS cluster".to_owned(),
                _ => format!("SQS answered {status}: {detail}"),
            },
        };
    }
    match serde_json::from_slice::<SendMessageBatchResponse>(body) {
        Ok(response) => SendOutcome::Answered {
            failed: response
                .failed
                .into_iter()
                .map(|f| FailedEntry {
                    id: f.id,
                    sender_fault: f.sender_fault,
                    code: f.code,
                })
                .collect(),
        },
        Err(e) => SendOutcome::CallFailed {
            reason: format!("unreadable SendMessageBatch answer: {e}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use proptest::prelude::*;

    use super::*;

    fn batch(id: &str, rows: usize) -> EdgeBatch {
        let sample: EdgeBatch =
            serde_json::from_str(include_str!("../../events/samples/edge-batch.json")).unwrap();
        let row = sample.rows[0].clone();
        EdgeBatch {
            batch_id: id.to_owned(),
            flushed_at: Utc
                .with_ymd_and_hms(2026, 11, 23, 10, 0, 0)
                .single()
                .unwrap(),
            rows: vec![row; rows],
            ..sample
        }
    }

    fn answered_ok() -> SendOutcome {
        SendOutcome::Answered { failed: Vec::new() }
    }

    #[test]
    fn the_request_is_sqs_json_with_one_entry_per_batch() {
        let mut outbox = Outbox::new("http://127.0.0.1:9/0/q".to_owned(), 256 * 1024, 1 << 20);
        outbox.push(&batch("gw-1", 2));
        outbox.push(&batch("gw-2", 1));
        let call = outbox.next_call(0).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&call.body).unwrap();
        assert_eq!(json["QueueUrl"], "http://127.0.0.1:9/0/q");
        assert_eq!(json["Entries"][0]["Id"], "m0");
        assert_eq!(json["Entries"][1]["Id"], "m1");
        let body: EdgeBatch =
            serde_json::from_str(json["Entries"][1]["MessageBody"].as_str().unwrap()).unwrap();
        assert_eq!(body.batch_id, "gw-2");
        assert!(
            outbox.next_call(0).is_none(),
            "one call in flight at a time"
        );
        let report = outbox.on_outcome(answered_ok(), 0, 0);
        assert_eq!((report.sent_batches, report.sent_rows), (2, 3));
        assert!(outbox.is_empty());
    }

    #[test]
    fn calls_take_at_most_ten_entries_and_at_most_the_body_limit_together() {
        let one = serde_json::to_string(&batch("gw-0", 1)).unwrap().len();
        let mut outbox = Outbox::new("http://h/0/q".to_owned(), one * 3 + 10, 1 << 30);
        for i in 0..25 {
            outbox.push(&batch(&format!("gw-{i}"), 1));
        }
        let call = outbox.next_call(0).unwrap();
        assert_eq!(call.entries, 3);
        outbox.on_outcome(answered_ok(), 0, 0);
        let mut big = Outbox::new("http://h/0/q".to_owned(), 1 << 20, 1 << 30);
        for i in 0..25 {
            big.push(&batch(&format!("gw-{i}"), 1));
        }
        assert_eq!(big.next_call(0).unwrap().entries, MAX_ENTRIES);
    }

    #[test]
    fn failed_calls_and_entries_are_retried_with_the_same_id_and_body_after_backoff() {
        let mut outbox = Outbox::new("http://h/0/q".to_owned(), 1 << 20, 1 << 20);
        outbox.push(&batch("gw-1", 1));
        outbox.push(&batch("gw-2", 1));
        let first = outbox.next_call(0).unwrap();
        let report = outbox.on_outcome(
            SendOutcome::CallFailed {
                reason: "timeout".to_owned(),
            },
            0,
            u64::MAX,
        );
        assert_eq!(report.retried_batches, 2);
        assert!(outbox.next_call(50).is_none(), "backing off");
        let again = outbox.next_call(BACKOFF_CAP_MS).unwrap();
        assert_eq!(again.body, first.body, "same ids, same bodies");
        let report = outbox.on_outcome(
            SendOutcome::Answered {
                failed: vec![FailedEntry {
                    id: "m1".to_owned(),
                    sender_fault: false,
                    code: "InternalError".to_owned(),
                }],
            },
            BACKOFF_CAP_MS,
            0,
        );
        assert_eq!((report.sent_batches, report.retried_batches), (1, 1));
        let last = outbox.next_call(BACKOFF_CAP_MS * 2).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&last.body).unwrap();
        assert!(
            json["Entries"][0]["MessageBody"]
                .as_str()
                .unwrap()
                .contains("gw-2")
        );
    }

    #[test]
    fn sender_faults_drop_and_count_and_a_full_outbox_refuses_whole_batches() {
        let one = serde_json::to_string(&batch("gw-0", 3)).unwrap().len();
        let mut outbox = Outbox::new("http://h/0/q".to_owned(), 1 << 20, one * 2);
        assert_eq!(outbox.push(&batch("gw-1", 3)), 0);
        assert_eq!(outbox.push(&batch("gw-2", 3)), 0);
        assert_eq!(outbox.push(&batch("gw-3", 3)), 3, "over max_pending_bytes");
        outbox.next_call(0).unwrap();
        let report = outbox.on_outcome(
            SendOutcome::Answered {
                failed: vec![FailedEntry {
                    id: "m0".to_owned(),
                    sender_fault: true,
                    code: "InvalidMessageContents".to_owned(),
                }],
            },
            0,
            0,
        );
        assert_eq!((report.sent_rows, report.dropped_rows), (3, 3));
        assert_eq!(outbox.push(&batch("gw-4", 3)), 0, "room again");
    }

    #[test]
    fn answers_are_read_whatever_sqs_says() {
        assert_eq!(
            parse_send_message_batch_response(
                200,
                br#"{"Successful":[{"Id":"m0","MessageId":"x","MD5OfMessageBody":"y"}]}"#
            ),
            answered_ok()
        );
        let failed = parse_send_message_batch_response(
            200,
            br#"{"Successful":[],"Failed":[{"Id":"m0","SenderFault":true,"Code":"X","Message":"m"}]}"#,
        );
        assert!(matches!(failed, SendOutcome::Answered { failed } if failed[0].sender_fault));
        for (status, body) in [(0, &b""[..]), (500, b"oops"), (400, b"{}"), (200, b"nope")] {
            assert!(matches!(
                parse_send_message_batch_response(status, body),
                SendOutcome::CallFailed { .. }
            ));
        }
    }

    proptest! {
        /// Whatever fails and however often, every batch pushed is in the end sent once
        /// as acknowledged or counted as dropped, never lost silently or sent twice as
        /// acknowledged.
        #[test]
        fn every_row_is_sent_or_counted(
            sizes in proptest::collection::vec(1usize..4, 1..30),
            outcomes in proptest::collection::vec(0u8..4, 1..60),
            jitters in proptest::collection::vec(any::<u64>(), 1..60),
        ) {
            let mut outbox = Outbox::new("http://h/0/q".to_owned(), 4096, 4096 * 3);
            let mut pushed = 0u64;
            let mut dropped = 0u64;
            for (i, rows) in sizes.iter().enumerate() {
                pushed += *rows as u64;
                dropped += outbox.push(&batch(&format!("gw-{i}"), *rows));
            }
            let mut sent = 0u64;
            let mut now = 0u64;
            let mut step = 0usize;
            while !outbox.is_empty() && step < 10_000 {
                now += BACKOFF_CAP_MS;
                if let Some(call) = outbox.next_call(now) {
                    let pick = if step > 200 { 3 } else { outcomes[step % outcomes.len()] };
                    let outcome = match pick {
                        0 => SendOutcome::CallFailed { reason: "x".to_owned() },
                        1 => SendOutcome::Answered { failed: vec![FailedEntry {
                            id: "m0".to_owned(), sender_fault: false, code: "T".to_owned() }] },
                        2 if call.entries > 1 => SendOutcome::Answered { failed: vec![FailedEntry {
                            id: "m1".to_owned(), sender_fault: true, code: "S".to_owned() }] },
                        _ => answered_ok(),
                    };
                    let report = outbox.on_outcome(outcome, now, jitters[step % jitters.len()]);
                    sent += report.sent_rows;
                    dropped += report.dropped_rows;
                }
                step += 1;
            }
            prop_assert!(outbox.is_empty());
            prop_assert_eq!(sent + dropped, pushed);
        }
    }
}
