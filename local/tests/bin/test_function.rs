//! A test-only Lambda function for tollgate-local's own tests: a real `lambda_runtime`
//! binary whose behaviour the event chooses, so the tests exercise the emulators against
//! the runtime crates the real functions use.
//!
//! `TEST_FUNCTION_MODE` picks the handler:
//! - `json` (default), a `serde_json::Value` handler. An SQS event (`Records`) gets a
//!   `batchItemFailures` reply listing the records whose body contains `fail`; a body
//!   containing `error` fails the invocation, `crash` exits the process, `bogus-id` lists an
//!   id that is not in the batch. Any other event is an `{"action": …}`: `echo` (default)
//!   returns the event with the invocation context and environment, `fail` returns an
//!   error, `panic` panics, `crash` exits, `sleep` sleeps `ms` milliseconds (through a
//!   Function URL, `?action=…` works too).
//! - `http`, a `lambda_http` handler that describes the request it got, with the status
//!   from the `status` query parameter and a `Set-Cookie` per `cookie` parameter.
//! - `exit-at-start` exits before talking to the Runtime API.
//!
//! With `TEST_FUNCTION_RECORD` set to a path, every event is appended to it as a line.

#![allow(
    clippy::panic,
    reason = "panicking on cue is one of this test function's behaviours"
)]

use std::io::Write;
use std::time::Duration;

use lambda_http::{Body, RequestExt, RequestPayloadExt};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Error> {
    match std::env::var("TEST_FUNCTION_MODE").as_deref() {
        Ok("http") => lambda_http::run(lambda_http::service_fn(http)).await,
        Ok("exit-at-start") => {
            eprintln!("test function: exiting at start, as asked");
            std::process::exit(2)
        }
        _ => lambda_runtime::run(service_fn(json_handler)).await,
    }
}

fn record(event: &Value) {
    if let Ok(path) = std::env::var("TEST_FUNCTION_RECORD")
        && let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = writeln!(file, "{event}");
    }
}

async fn json_handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let (payload, context) = event.into_parts();
    record(&payload);
    if let Some(records) = payload.get("Records").and_then(Value::as_array) {
        return sqs(records);
    }
    // Through a Function URL, the action comes as a query parameter.
    let action = payload
        .get("action")
        .or_else(|| payload.pointer("/queryStringParameters/action"))
        .and_then(Value::as_str)
        .unwrap_or("echo");
    match action {
        "fail" => Err("failing as asked".into()),
        "panic" => panic!("panicking as asked"),
        "crash" => {
            eprintln!("test function: crashing as asked");
            std::process::exit(3)
        }
        "sleep" => {
            let ms = payload.get("ms").and_then(Value::as_u64).unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(json!({"slept": ms}))
        }
        _ => {
            let env: serde_json::Map<String, Value> = std::env::vars()
                .map(|(name, value)| (name, Value::String(value)))
                .collect();
            Ok(json!({
                "event": payload,
                "requestId": context.request_id,
                "deadlineMs": context.deadline,
                "invokedFunctionArn": context.invoked_function_arn,
                "traceId": context.xray_trace_id,
                "env": env,
                "pid": std::process::id(),
            }))
        }
    }
}

fn sqs(records: &[Value]) -> Result<Value, Error> {
    let body = |record: &Value| {
        record
            .get("body")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    if records.iter().any(|r| body(r).contains("crash")) {
        eprintln!("test function: crashing on a message, as asked");
        std::process::exit(3)
    }
    if records.iter().any(|r| body(r).contains("error")) {
        return Err("a message asked for a batch error".into());
    }
    if records.iter().any(|r| body(r).contains("bogus-id")) {
        return Ok(json!({"batchItemFailures": [{"itemIdentifier": "not-in-this-batch"}]}));
    }
    let failures: Vec<Value> = records
        .iter()
        .filter(|r| body(r).contains("fail"))
        .map(|r| json!({"itemIdentifier": r.get("messageId")}))
        .collect();
    Ok(json!({"batchItemFailures": failures}))
}

async fn http(request: lambda_http::Request) -> Result<lambda_http::Response<Body>, Error> {
    let query = request.query_string_parameters();
    let status: u16 = query
        .first("status")
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let headers: serde_json::Map<String, Value> = request
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned()),
            )
        })
        .collect();
    let body = match request.body() {
        Body::Empty => Value::Null,
        Body::Text(text) => Value::String(text.clone()),
        Body::Binary(bytes) => json!({"binaryLength": bytes.len()}),
        _ => Value::Null,
    };
    let parsed: Option<Value> = request.payload().ok().flatten();
    let description = json!({
        "method": request.method().as_str(),
        "path": request.uri().path(),
        "rawPath": request.raw_http_path(),
        "query": request.uri().query(),
        "meter": query.all("meter"),
        "headers": headers,
        "body": body,
        "json": parsed,
    });
    let mut response = lambda_http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-echo-method", request.method().as_str());
    for cookie in query.all("cookie").unwrap_or_default() {
        response = response.header("set-cookie", cookie);
    }
    Ok(response.body(Body::Text(description.to_string()))?)
}
