//! [`EventQueue`] on SQS: `SendMessageBatch`, at most 10 entries and
//! [`MAX_BATCH_BYTES`] of bodies per call, with per-entry failures checked.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

use crate::ports::{EventQueue, QueueFailure, QueuedEvent};

/// `SendMessageBatch` takes at most this many entries.
pub const MAX_BATCH_ENTRIES: usize = 10;

/// The most body bytes sent in one call. SQS on AWS accepts 1 MiB per batch since 2026,
/// but emulators and older regions still enforce 256 KiB, so batches stay under that.
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

/// The usage queue on SQS.
#[derive(Debug, Clone)]
pub struct SqsEventQueue {
    client: Client,
    queue_url: String,
}

impl SqsEventQueue {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        SqsEventQueue {
            client,
            queue_url: queue_url.into(),
        }
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// Sends one batch (indices into `messages`), recording each entry's outcome.
    async fn send_batch(
        &self,
        messages: &[QueuedEvent],
        batch: &[usize],
        outcomes: &mut [Result<(), QueueFailure>],
    ) {
        let mut entries = Vec::with_capacity(batch.len());
        for &i in batch {
            let entry = SendMessageBatchRequestEntry::builder()
                .id(entry_id(i))
                .message_body(messages[i].body.clone())
                .build();
            match entry {
                Ok(entry) => entries.push(entry),
                Err(e) => outcomes[i] = Err(failure("InvalidEntry", e.to_string(), true)),
            }
        }
        if entries.is_empty() {
            return;
        }
        let reply = self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(error) => {
                let code = error.code().unwrap_or("SendFailed").to_owned();
                let detail = error
                    .message()
                    .map_or_else(|| error.to_string(), str::to_owned);
                for &i in batch {
                    if outcomes[i].as_ref().is_err_and(|f| f.code == PENDING) {
                        outcomes[i] = Err(failure(&code, detail.clone(), false));
                    }
                }
                return;
            }
        };
        record_reply(batch, &reply, outcomes);
    }
}

/// Records the outcome of every entry of `batch` that `reply` mentions. An entry the
/// reply does not mention keeps its pending failure: it is reported as not sent rather
/// than assumed delivered.
fn record_reply(
    batch: &[usize],
    reply: &SendMessageBatchOutput,
    outcomes: &mut [Result<(), QueueFailure>],
) {
    for ok in reply.successful() {
        if let Some(i) = parse_entry_id(ok.id()).filter(|i| batch.contains(i)) {
            outcomes[i] = Ok(());
        }
    }
    for failed in reply.failed() {
        if let Some(i) = parse_entry_id(failed.id()).filter(|i| batch.contains(i)) {
            outcomes[i] = Err(failure(
                failed.code(),
                failed.message().unwrap_or_default().to_owned(),
                failed.sender_fault(),
            ));
        }
    }
}

const PENDING: &str = "NoReply";

fn failure(code: &str, detail: String, sender_fault: bool) -> QueueFailure {
    QueueFailure {
        code: code.to_owned(),
        detail,
        sender_fault,
    }
}

fn entry_id(index: usize) -> String {
    format!("m{index}")
}

fn parse_entry_id(id: &str) -> Option<usize> {
    id.strip_prefix('m')?.parse().ok()
}

/// Groups message indices into batches of at most [`MAX_BATCH_ENTRIES`] entries and
/// [`MAX_BATCH_BYTES`] bytes, in order. A message larger than the byte limit goes alone.
pub fn batches(messages: &[QueuedEvent]) -> Vec<Vec<usize>> {
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut bytes = 0;
    for (i, message) in messages.iter().enumerate() {
        let size = message.body.len();
        if !current.is_empty()
            && (current.len() == MAX_BATCH_ENTRIES || bytes + size > MAX_BATCH_BYTES)
        {
            batches.push(std::mem::take(&mut current));
            bytes = 0;
        }
        current.push(i);
        bytes += size;
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

impl EventQueue for SqsEventQueue {
    async fn send(&self, messages: &[QueuedEvent]) -> Vec<Result<(), QueueFailure>> {
        let mut outcomes: Vec<Result<(), QueueFailure>> = messages
            .iter()
            .map(|_| {
                Err(failure(
                    PENDING,
                    "not confirmed by the queue".to_owned(),
                    false,
                ))
            })
            .collect();
        for batch in batches(messages) {
            self.send_batch(messages, &batch, &mut outcomes).await;
        }
        outcomes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: usize) -> QueuedEvent {
        QueuedEvent {
            body: "x".repeat(len),
        }
    }

    #[test]
    fn batches_hold_at_most_ten_entries() {
        let messages: Vec<QueuedEvent> = (0..23).map(|_| message(10)).collect();
        let sizes: Vec<usize> = batches(&messages).iter().map(Vec::len).collect();
        assert_eq!(sizes, [10, 10, 3]);
    }

    #[test]
    fn batches_stay_under_the_byte_limit_and_keep_order() {
        let messages = vec![
            message(100_000),
            message(100_000),
            message(100_000),
            message(5),
        ];
        assert_eq!(batches(&messages), vec![vec![0, 1], vec![2, 3]]);
    }

    fn pending(n: usize) -> Vec<Result<(), QueueFailure>> {
        (0..n)
            .map(|_| Err(failure(PENDING, String::new(), false)))
            .collect()
    }

    #[test]
    fn per_entry_failures_fail_only_their_entries_and_unmentioned_entries_stay_unsent() {
        use aws_sdk_sqs::types::{BatchResultErrorEntry, SendMessageBatchResultEntry};
        let reply = SendMessageBatchOutput::builder()
            .successful(
                SendMessageBatchResultEntry::builder()
                    .id("m0")
                    .message_id("id-0")
                    .md5_of_message_body("-")
                    .build()
                    .unwrap(),
            )
            .failed(
                BatchResultErrorEntry::builder()
                    .id("m1")
                    .code("InvalidMessageContents")
                    .sender_fault(true)
                    .build()
                    .unwrap(),
            )
            // Not part of this batch: ignored.
            .successful(
                SendMessageBatchResultEntry::builder()
                    .id("m9")
                    .message_id("id-9")
                    .md5_of_message_body("-")
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let mut outcomes = pending(10);
        record_reply(&[0, 1, 2], &reply, &mut outcomes);
        assert_eq!(outcomes[0], Ok(()));
        let failed = outcomes[1].clone().unwrap_err();
        assert_eq!(
            (failed.code.as_str(), failed.sender_fault),
            ("InvalidMessageContents", true)
        );
        assert_eq!(
            outcomes[2].clone().unwrap_err().code,
            PENDING,
            "no word on m2"
        );
        assert!(outcomes[9].is_err(), "m9 is not in the batch");
    }

    #[test]
    fn entry_ids_round_trip() {
        assert_eq!(parse_entry_id(&entry_id(417)), Some(417));
        assert_eq!(parse_entry_id("x1"), None);
    }
}
