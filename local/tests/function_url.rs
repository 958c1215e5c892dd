//! The Function URL front with real binaries: a `lambda_http` function sees the request a
//! client sent and its response comes back whole; a plain JSON result is a 200; failures
//! are 502; oversized bodies are 413.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tollgate_local::{FunctionUrl, LocalFunction, MAX_PAYLOAD_BYTES};

use common::{json_function, spec, unique};

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn send(request: Request<Full<Bytes>>) -> (StatusCode, hyper::HeaderMap, Bytes) {
    let response = client().request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

async fn http_function() -> Arc<LocalFunction> {
    Arc::new(
        LocalFunction::start_with(spec(&unique("api"), "http", &[], Duration::from_secs(5)))
            .await
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_reaches_a_lambda_http_function_and_its_response_comes_back() {
    let url = FunctionUrl::start(http_function().await).await.unwrap();
    let request = Request::post(format!(
        "{}v1/usage/t1?meter=a&meter=b&status=201&cookie=session%3Dabc",
        url.url()
    ))
    .header("content-type", "application/json")
    .header("x-custom", "hello")
    .header("cookie", "a=1; b=2")
    .body(Full::new(Bytes::from_static(br#"{"n":1}"#)))
    .unwrap();

    let (status, headers, body) = send(request).await;

    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["x-echo-method"], "POST");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["set-cookie"], "session=abc");
    assert!(headers.contains_key("x-amzn-requestid"));
    let seen: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/v1/usage/t1");
    assert_eq!(seen["rawPath"], "/v1/usage/t1");
    assert_eq!(
        seen["query"],
        "meter=a&meter=b&status=201&cookie=session%3Dabc"
    );
    assert_eq!(seen["meter"], json!(["a", "b"]));
    assert_eq!(seen["headers"]["x-custom"], "hello");
    assert_eq!(seen["headers"]["cookie"], "a=1; b=2");
    assert_eq!(seen["body"], r#"{"n":1}"#);
    assert_eq!(seen["json"], json!({"n": 1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_without_body_or_query_arrives_as_such() {
    let url = FunctionUrl::start(http_function().await).await.unwrap();
    let request = Request::get(format!("{}health", url.url()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, body) = send(request).await;
    assert_eq!(status, StatusCode::OK);
    let seen: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["path"], "/health");
    assert_eq!(seen["query"], Value::Null);
    assert_eq!(seen["body"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_json_result_is_a_200_and_a_failure_is_a_502() {
    let function = Arc::new(json_function(&unique("plain"), &[], Duration::from_secs(5)).await);
    let url = FunctionUrl::start(Arc::clone(&function)).await.unwrap();

    let (status, headers, body) = send(
        Request::get(format!("{}anything?x=1", url.url()))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    let echoed: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echoed["event"]["rawPath"], "/anything");
    assert_eq!(echoed["event"]["queryStringParameters"], json!({"x": "1"}));

    let (status, _, body) = send(
        Request::get(format!("{}?action=fail", url.url()))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    // The function's error text is not echoed to the client.
    assert!(!String::from_utf8_lossy(&body).contains("failing as asked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_6_mb_is_a_413_and_does_not_invoke() {
    let function = http_function().await;
    let url = FunctionUrl::start(Arc::clone(&function)).await.unwrap();
    let invocations_before = function.stats().invocations;

    let big = Bytes::from(vec![b'x'; MAX_PAYLOAD_BYTES + 1]);
    let (status, _, _) = send(
        Request::post(format!("{}v1/events", url.url()))
            .header("content-type", "text/plain")
            .body(Full::new(big))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(function.stats().invocations, invocations_before);
}
