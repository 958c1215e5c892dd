//! Helpers the end-to-end tests share: what a queue holds, and a GET with a key.

#![allow(dead_code, clippy::unwrap_used)] // each test uses some; tests fail by panicking

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use serde_json::Value;
use tollgate_local::LocalStack;

/// Messages in `queue_url`, visible or in flight (received, not yet deleted).
pub async fn queue_depth(stack: &LocalStack, queue_url: &str) -> u64 {
    use aws_sdk_sqs::types::QueueAttributeName;
    let attributes = stack
        .sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap();
    let count = |name| {
        attributes
            .attributes()
            .and_then(|a| a.get(&name))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    count(QueueAttributeName::ApproximateNumberOfMessages)
        + count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
}

/// `GET url` with `Authorization: Bearer key`: the status and the JSON body (`Null`
/// when the body is not JSON).
pub async fn http_get(url: &str, key: &str) -> (u16, Value) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let request = hyper::Request::get(url)
        .header("authorization", format!("Bearer {key}"))
        .body(Empty::new())
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}
