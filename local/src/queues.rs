//! SQS set-up for the local stack: a client for the emulator, and a queue with its
//! dead-letter queue wired the way the SAM template wires them in AWS.

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::QueueAttributeName;

use crate::function::LOCAL_REGION;

/// SQS's limits on `maxReceiveCount`.
const MAX_RECEIVE_COUNT: std::ops::RangeInclusive<u32> = 1..=1000;
/// SQS's limit on a visibility timeout: 12 hours.
const MAX_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(12 * 60 * 60);
/// The longest retention SQS allows (14 days): a dead-letter queue keeps its messages for
/// as long as possible, since they are the ones somebody has to look at.
const DLQ_RETENTION_SECONDS: u32 = 14 * 24 * 60 * 60;

/// Why queues could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// An argument is outside SQS's limits.
    #[error("invalid queue settings: {0}")]
    Invalid(String),
    /// An SQS call failed.
    #[error("SQS {operation} for {queue} failed")]
    Sqs {
        /// The operation.
        operation: &'static str,
        /// The queue name or URL.
        queue: String,
        /// The SDK error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// SQS answered without something it always sends.
    #[error("SQS {operation} for {queue} answered without {missing}")]
    Incomplete {
        /// The operation.
        operation: &'static str,
        /// The queue name or URL.
        queue: String,
        /// What was missing.
        missing: &'static str,
    },
}

/// A client for a local SQS endpoint (moto), with static dummy credentials and region
/// `us-east-1`: for tests and the local stack only. Mirrors `tollgate_store::local_client`.
pub fn local_sqs_client(endpoint: &str) -> Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(LOCAL_REGION))
        .credentials_provider(Credentials::new(
            "local",
            "local",
            None,
            None,
            "tollgate-local",
        ))
        .build();
    Client::from_conf(config)
}

/// Creates the standard queue `name` and its dead-letter queue `name-dlq`, and returns
/// `(queue_url, dlq_url)`.
///
/// The queue gets `VisibilityTimeout = visibility_timeout` and a `RedrivePolicy` sending a
/// message to the DLQ once it has been received `max_receive_count` times without being
/// deleted; the DLQ keeps messages 14 days. Creating queues that already exist with the
/// same attributes is not an error (SQS's `CreateQueue` is idempotent).
///
/// # Errors
///
/// When `max_receive_count` is not 1–1000 or the visibility timeout is over 12 hours, or a
/// call to SQS fails.
pub async fn create_queue_with_dlq(
    client: &Client,
    name: &str,
    max_receive_count: u32,
    visibility_timeout: Duration,
) -> Result<(String, String), QueueError> {
    if !MAX_RECEIVE_COUNT.contains(&max_receive_count) {
        return Err(QueueError::Invalid(format!(
            "maxReceiveCount {max_receive_count} is not within 1-1000"
        )));
    }
    if visibility_timeout > MAX_VISIBILITY_TIMEOUT {
        return Err(QueueError::Invalid(format!(
            "visibility timeout {visibility_timeout:?} is over 12 hours"
        )));
    }
    let dlq_name = format!("{name}-dlq");
    let dlq_url = client
        .create_queue()
        .queue_name(&dlq_name)
        .attributes(
            QueueAttributeName::MessageRetentionPeriod,
            DLQ_RETENTION_SECONDS.to_string(),
        )
        .send()
        .await
        .map_err(|err| sqs_error("CreateQueue", &dlq_name, err))?
        .queue_url
        .ok_or_else(|| incomplete("CreateQueue", &dlq_name, "QueueUrl"))?;
    let dlq_arn = queue_arn(client, &dlq_url).await?;

    let redrive_policy = serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": max_receive_count,
    })
    .to_string();
    let queue_url = client
        .create_queue()
        .queue_name(name)
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            visibility_timeout.as_secs().to_string(),
        )
        .attributes(QueueAttributeName::RedrivePolicy, redrive_policy)
        .send()
        .await
        .map_err(|err| sqs_error("CreateQueue", name, err))?
        .queue_url
        .ok_or_else(|| incomplete("CreateQueue", name, "QueueUrl"))?;
    Ok((queue_url, dlq_url))
}

/// The queue's ARN (`GetQueueAttributes`).
pub(crate) async fn queue_arn(client: &Client, queue_url: &str) -> Result<String, QueueError> {
    let attributes = queue_attributes(client, queue_url, QueueAttributeName::QueueArn).await?;
    attributes
        .get(&QueueAttributeName::QueueArn)
        .cloned()
        .ok_or_else(|| incomplete("GetQueueAttributes", queue_url, "QueueArn"))
}

/// One or all (`QueueAttributeName::All`) of a queue's attributes.
pub(crate) async fn queue_attributes(
    client: &Client,
    queue_url: &str,
    name: QueueAttributeName,
) -> Result<std::collections::HashMap<QueueAttributeName, String>, QueueError> {
    Ok(client
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(name)
        .send()
        .await
        .map_err(|err| sqs_error("GetQueueAttributes", queue_url, err))?
        .attributes
        .unwrap_or_default())
}

pub(crate) fn sqs_error(
    operation: &'static str,
    queue: &str,
    err: impl std::error::Error + Send + Sync + 'static,
) -> QueueError {
    QueueError::Sqs {
        operation,
        queue: queue.to_owned(),
        source: Box::new(err),
    }
}

fn incomplete(operation: &'static str, queue: &str, missing: &'static str) -> QueueError {
    QueueError::Incomplete {
        operation,
        queue: queue.to_owned(),
        missing,
    }
}
