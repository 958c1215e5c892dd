//! The SQS event source mapping against moto and a real `lambda_runtime` binary: partial
//! batch failures, whole-batch failures, malformed replies, redrive to the DLQ, and the
//! event's shape.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName};
use serde_json::Value;
use tollgate_local::{
    LocalFunction, MappingError, SqsMapping, SqsMappingConfig, create_queue_with_dlq,
    local_sqs_client,
};

use common::{Recording, json_function, unique, wait_until};

const GENEROUS: Duration = Duration::from_secs(60);

fn sqs() -> Client {
    local_sqs_client(&tollgate_devstack::sqs_endpoint_for_tests())
}

async fn send(client: &Client, queue_url: &str, bodies: &[&str]) {
    for body in bodies {
        client
            .send_message()
            .queue_url(queue_url)
            .message_body(*body)
            .send()
            .await
            .unwrap();
    }
}

/// Receives from `queue_url` until `expected` messages arrived or `limit` passed; returns
/// their bodies. Does not delete them.
async fn bodies_in(
    client: &Client,
    queue_url: &str,
    expected: usize,
    limit: Duration,
) -> BTreeSet<String> {
    let mut bodies = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + limit;
    while bodies.len() < expected && tokio::time::Instant::now() < deadline {
        let received = client
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .visibility_timeout(30)
            .send()
            .await
            .unwrap();
        bodies.extend(received.messages().iter().filter_map(|m| m.body.clone()));
    }
    bodies
}

async fn approximate_count(client: &Client, queue_url: &str) -> u64 {
    let attributes = client
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default();
    [
        QueueAttributeName::ApproximateNumberOfMessages,
        QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
    ]
    .iter()
    .map(|name| {
        attributes
            .get(name)
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    })
    .sum()
}

/// The bodies of the SQS records of every recorded invocation, one list per invocation.
fn batches(recording: &Recording) -> Vec<Vec<(String, String)>> {
    recording
        .events()
        .iter()
        .filter_map(|event| event["Records"].as_array().cloned())
        .map(|records| {
            records
                .iter()
                .map(|r| {
                    (
                        r["messageId"].as_str().unwrap().to_owned(),
                        r["body"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .collect()
}

async fn function_for(recording: &Recording, timeout: Duration) -> Arc<LocalFunction> {
    Arc::new(json_function(&unique("consumer"), &[recording.env()], timeout).await)
}

fn config(queue_url: &str) -> SqsMappingConfig {
    SqsMappingConfig::new(queue_url)
        .with_poll_wait(Duration::from_secs(1))
        .with_batching_window(Duration::from_secs(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_batch_failure_returns_exactly_the_failed_messages() {
    let client = sqs();
    let (queue_url, _dlq) =
        create_queue_with_dlq(&client, &unique("partial"), 100, Duration::from_secs(2))
            .await
            .unwrap();
    send(
        &client,
        &queue_url,
        &["ok-1", "ok-2", "fail-3", "ok-4", "fail-5"],
    )
    .await;
    let recording = Recording::new();
    let function = function_for(&recording, Duration::from_secs(2)).await;

    let mapping = SqsMapping::start(client.clone(), function, config(&queue_url))
        .await
        .unwrap();
    wait_until(GENEROUS, "the three good messages are deleted", || async {
        mapping.metrics().deleted == 3 && mapping.metrics().returned_for_retry >= 2
    })
    .await;
    // Let the failed ones come back at least once more, then stop.
    wait_until(GENEROUS, "a failed message is redelivered", || async {
        mapping.metrics().returned_for_retry >= 4
    })
    .await;
    let metrics = mapping.metrics();
    mapping.stop().await;

    assert_eq!(metrics.deleted, 3);
    assert_eq!(metrics.whole_batch_failures, 0);
    assert_eq!(metrics.delete_failures, 0);
    assert_eq!(approximate_count(&client, &queue_url).await, 2);
    let left = bodies_in(&client, &queue_url, 2, GENEROUS).await;
    assert_eq!(
        left,
        BTreeSet::from(["fail-3".to_owned(), "fail-5".to_owned()])
    );
    // After the first deliveries, only failed messages were ever delivered again.
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (id, body) in batches(&recording).into_iter().flatten() {
        let count = seen.entry(body.clone()).or_default();
        *count += 1;
        assert!(
            *count == 1 || body.starts_with("fail"),
            "{body} ({id}) delivered again"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_error_returns_the_whole_batch() {
    let client = sqs();
    let (queue_url, _dlq) =
        create_queue_with_dlq(&client, &unique("whole"), 100, Duration::from_secs(2))
            .await
            .unwrap();
    send(&client, &queue_url, &["ok-a", "error-b", "ok-c"]).await;
    let recording = Recording::new();
    let function = function_for(&recording, Duration::from_secs(2)).await;

    let mapping = SqsMapping::start(client.clone(), function, config(&queue_url))
        .await
        .unwrap();
    wait_until(GENEROUS, "the failing batch is delivered twice", || async {
        mapping.metrics().whole_batch_failures >= 2
    })
    .await;
    mapping.stop().await;

    // Every message that shared a batch with the error came back and was delivered again,
    // even though the function had nothing against it.
    let batches = batches(&recording);
    let failed_batch = batches
        .iter()
        .find(|batch| batch.iter().any(|(_, body)| body == "error-b"))
        .unwrap();
    for (id, body) in failed_batch {
        let deliveries = batches
            .iter()
            .flatten()
            .filter(|(other, _)| other == id)
            .count();
        assert!(deliveries >= 2, "{body} was delivered {deliveries} time(s)");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_naming_a_message_outside_the_batch_fails_the_whole_batch() {
    let client = sqs();
    let (queue_url, _dlq) =
        create_queue_with_dlq(&client, &unique("bogus"), 100, Duration::from_secs(2))
            .await
            .unwrap();
    send(&client, &queue_url, &["bogus-id"]).await;
    let recording = Recording::new();
    let function = function_for(&recording, Duration::from_secs(2)).await;

    let mapping = SqsMapping::start(client.clone(), function, config(&queue_url))
        .await
        .unwrap();
    wait_until(GENEROUS, "the batch fails as a whole", || async {
        mapping.metrics().whole_batch_failures >= 1
    })
    .await;
    let metrics = mapping.metrics();
    mapping.stop().await;
    assert_eq!(metrics.deleted, 0);
    assert_eq!(approximate_count(&client, &queue_url).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_failing_max_receive_count_times_lands_in_the_dlq() {
    let client = sqs();
    let (queue_url, dlq_url) =
        create_queue_with_dlq(&client, &unique("redrive"), 2, Duration::from_secs(3))
            .await
            .unwrap();
    send(&client, &queue_url, &["fail-forever", "ok-once"]).await;
    let recording = Recording::new();
    let function = function_for(&recording, Duration::from_secs(1)).await;

    // No batching window: a message must not sit in a gathering batch while its
    // visibility timeout runs out (AWS advises a visibility timeout well above the
    // function timeout plus the window for the same reason).
    let no_window = config(&queue_url).with_batching_window(Duration::ZERO);
    let mapping = SqsMapping::start(client.clone(), function, no_window)
        .await
        .unwrap();
    let in_dlq = bodies_in(&client, &dlq_url, 1, GENEROUS).await;
    let metrics = mapping.metrics();
    mapping.stop().await;

    assert_eq!(in_dlq, BTreeSet::from(["fail-forever".to_owned()]));
    assert_eq!(approximate_count(&client, &queue_url).await, 0);
    // Delivered exactly maxReceiveCount times, then moved by the queue, not delivered.
    let deliveries = batches(&recording)
        .into_iter()
        .flatten()
        .filter(|(_, body)| body == "fail-forever")
        .count();
    assert_eq!(deliveries, 2);
    assert_eq!(metrics.bound_for_dlq, 1);
    assert_eq!(metrics.deleted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_carries_what_lambda_puts_in_an_sqs_record() {
    let client = sqs();
    let (queue_url, _dlq) =
        create_queue_with_dlq(&client, &unique("shape"), 5, Duration::from_secs(2))
            .await
            .unwrap();
    client
        .send_message()
        .queue_url(&queue_url)
        .message_body(r#"{"specversion":"1.0"}"#)
        .message_attributes(
            "source",
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value("edge")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let recording = Recording::new();
    let function = function_for(&recording, Duration::from_secs(2)).await;
    let mapping = SqsMapping::start(client.clone(), function, config(&queue_url))
        .await
        .unwrap();
    wait_until(GENEROUS, "the message is deleted", || async {
        mapping.metrics().deleted == 1
    })
    .await;
    let queue_arn = mapping.queue_arn().to_owned();
    mapping.stop().await;

    let events = recording.events();
    let record = &events[0]["Records"][0];
    assert_eq!(record["body"], r#"{"specversion":"1.0"}"#);
    assert_eq!(record["eventSource"], "aws:sqs");
    assert_eq!(record["eventSourceARN"], queue_arn.as_str());
    assert_eq!(record["awsRegion"], "us-east-1");
    assert!(record["messageId"].is_string());
    assert!(record["receiptHandle"].is_string());
    assert_eq!(record["md5OfBody"].as_str().unwrap().len(), 32);
    for attribute in [
        "ApproximateReceiveCount",
        "SentTimestamp",
        "SenderId",
        "ApproximateFirstReceiveTimestamp",
    ] {
        assert!(
            record["attributes"][attribute].is_string(),
            "{attribute}: {record}"
        );
    }
    assert_eq!(record["attributes"]["ApproximateReceiveCount"], "1");
    assert_eq!(record["messageAttributes"]["source"]["stringValue"], "edge");
    assert_eq!(record["messageAttributes"]["source"]["dataType"], "String");
    let typed: aws_lambda_events::sqs::SqsEvent =
        serde_json::from_value(events[0].clone()).unwrap();
    assert_eq!(typed.records.len(), 1);
    assert!(matches!(events[0]["Records"], Value::Array(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_lambda_would_refuse_are_refused() {
    let client = sqs();
    let (queue_url, _dlq) =
        create_queue_with_dlq(&client, &unique("rules"), 5, Duration::from_secs(1))
            .await
            .unwrap();
    let recording = Recording::new();
    let function = function_for(&recording, Duration::from_secs(3)).await;
    let refused = |config: SqsMappingConfig| {
        let client = client.clone();
        let function = Arc::clone(&function);
        async move {
            matches!(
                SqsMapping::start(client, function, config).await,
                Err(MappingError::Invalid(_))
            )
        }
    };
    // The queue's visibility timeout (1 s) is shorter than the function timeout (3 s).
    assert!(refused(config(&queue_url)).await);
    assert!(refused(config(&queue_url).with_batch_size(0)).await);
    assert!(
        refused(
            config(&queue_url)
                .with_batch_size(11)
                .with_batching_window(Duration::ZERO)
        )
        .await
    );
    assert!(refused(config(&queue_url).with_max_concurrency(1)).await);
    assert!(refused(config(&queue_url).with_batching_window(Duration::from_secs(301))).await);
}
