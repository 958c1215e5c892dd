//! Helpers the end-to-end tests share: the usage API over HTTP, what a queue holds, a GET
//! with a key, and staying inside one UTC day.

#![allow(dead_code, clippy::unwrap_used)] // each test uses some; tests fail by panicking

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tollgate_local::LocalStack;

/// The usage API over HTTP, as a tenant or an operator calls it.
pub struct Api {
    pub base: String,
    pub client: Client<HttpConnector, Full<Bytes>>,
}

impl Api {
    pub fn new(base: &str) -> Api {
        Api {
            base: base.trim_end_matches('/').to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub async fn call(&self, method: &str, key: &str, path: &str, body: Option<&Value>) -> Value {
        let request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                body.map(Value::to_string).unwrap_or_default(),
            )))
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(30), self.client.request(request))
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no answer in 30 s"))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let reply: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert!(
            status.is_success(),
            "{method} {path}: HTTP {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        reply
    }
}

/// Quota arithmetic counts on one UTC day: when the run would cross midnight, wait for it.
pub async fn stay_within_one_day(seconds: u64) {
    let now = Utc::now();
    let tomorrow = now
        .date_naive()
        .succ_opt()
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let needed = TimeDelta::seconds(i64::try_from(seconds).unwrap() + 300);
    if tomorrow - now < needed {
        let wait = (tomorrow - now + TimeDelta::seconds(2)).to_std().unwrap();
        println!(
            "the run would cross UTC midnight: waiting {:.0} s for it",
            wait.as_secs_f64()
        );
        tokio::time::sleep(wait).await;
    }
}

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
