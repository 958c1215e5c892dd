//! `LocalFunction` against a real `lambda_runtime` binary: invocation context and
//! environment, function errors, panics, timeouts, crashes and restarts, init failures,
//! one invocation at a time per instance.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tollgate_local::{InvokeError, LocalFunction, MAX_PAYLOAD_BYTES, StartError};

use common::{json_function, spec, unique};

fn pid(reply: &Value) -> u64 {
    reply["pid"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invocation_gets_the_event_the_context_and_lambdas_environment() {
    let name = unique("echo");
    let function = json_function(
        &name,
        &[("TOLLGATE_TABLE", "usage-table")],
        Duration::from_secs(5),
    )
    .await;
    let before_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;

    let reply = function.invoke(json!({"hello": "world"})).await.unwrap();

    assert_eq!(reply["event"], json!({"hello": "world"}));
    assert!(!reply["requestId"].as_str().unwrap().is_empty());
    assert_eq!(reply["invokedFunctionArn"], function.spec().arn());
    assert!(reply["traceId"].as_str().unwrap().starts_with("Root=1-"));
    let deadline = reply["deadlineMs"].as_u64().unwrap();
    assert!(deadline >= before_ms + 4_000 && deadline <= before_ms + 60_000);

    let env = &reply["env"];
    assert_eq!(env["TOLLGATE_TABLE"], "usage-table");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_NAME"], name.as_str());
    assert_eq!(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "128");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_VERSION"], "$LATEST");
    assert_eq!(env["AWS_REGION"], "us-east-1");
    assert!(env["AWS_ACCESS_KEY_ID"].is_string());
    assert!(env["AWS_SECRET_ACCESS_KEY"].is_string());
    assert!(
        env["AWS_LAMBDA_RUNTIME_API"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    // Nothing else leaks in from the parent's environment.
    assert!(env.get("HOME").is_none(), "{env}");
    assert!(env.get("CARGO_PKG_NAME").is_none(), "{env}");

    let stats = function.stats();
    assert_eq!(
        (stats.invocations, stats.succeeded, stats.cold_starts),
        (1, 1, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_error_carries_the_error_body_and_keeps_the_instance() {
    let function = json_function(&unique("fails"), &[], Duration::from_secs(5)).await;
    let first = function.invoke(json!({})).await.unwrap();

    let err = function
        .invoke(json!({"action": "fail"}))
        .await
        .unwrap_err();
    let InvokeError::Function { body, .. } = &err else {
        panic!("expected a function error, got {err:?}");
    };
    assert_eq!(body["errorMessage"], "failing as asked", "{body}");
    assert!(body["errorType"].is_string(), "{body}");

    let err = function
        .invoke(json!({"action": "panic"}))
        .await
        .unwrap_err();
    let InvokeError::Function { body, .. } = &err else {
        panic!("expected a function error for a panic, got {err:?}");
    };
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("panicking as asked"),
        "{body}"
    );

    // An error is not a crash: the same warm process answers.
    let after = function.invoke(json!({})).await.unwrap();
    assert_eq!(pid(&after), pid(&first));
    let stats = function.stats();
    assert_eq!(
        (stats.function_errors, stats.cold_starts, stats.crashes),
        (2, 1, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_is_reported_and_the_next_invocation_gets_a_new_process() {
    let function = json_function(&unique("crashes"), &[], Duration::from_secs(5)).await;
    let before = function.invoke(json!({})).await.unwrap();

    let err = function
        .invoke(json!({"action": "crash"}))
        .await
        .unwrap_err();
    let InvokeError::ProcessDied { output, status, .. } = &err else {
        panic!("expected a dead process, got {err:?}");
    };
    assert!(output.contains("crashing as asked"), "{output}");
    assert!(status.contains('3'), "{status}");

    let after = function.invoke(json!({})).await.unwrap();
    assert_ne!(pid(&after), pid(&before));
    let stats = function.stats();
    assert_eq!(
        (stats.crashes, stats.cold_starts, stats.succeeded),
        (1, 2, 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invocation_past_the_timeout_fails_and_the_instance_is_replaced() {
    let function = json_function(&unique("slow"), &[], Duration::from_secs(1)).await;
    let before = function.invoke(json!({})).await.unwrap();

    let started = std::time::Instant::now();
    let err = function
        .invoke(json!({"action": "sleep", "ms": 30_000}))
        .await
        .unwrap_err();
    assert!(
        matches!(err, InvokeError::Timeout { timeout, .. } if timeout == Duration::from_secs(1)),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));

    let after = function
        .invoke(json!({"action": "sleep", "ms": 10}))
        .await
        .unwrap();
    assert_eq!(after, json!({"slept": 10}));
    let again = function.invoke(json!({})).await.unwrap();
    assert_ne!(pid(&again), pid(&before));
    assert_eq!(function.stats().timeouts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_runs_invocations_one_at_a_time_and_more_instances_run_in_parallel() {
    let single = json_function(&unique("single"), &[], Duration::from_secs(10)).await;
    let (a, b) = tokio::join!(single.invoke(json!({})), single.invoke(json!({})));
    assert_eq!(pid(&a.unwrap()), pid(&b.unwrap()));
    assert_eq!(single.stats().cold_starts, 1);

    let double = LocalFunction::start_with(
        spec(&unique("double"), "json", &[], Duration::from_secs(10)).with_max_instances(2),
    )
    .await
    .unwrap();
    // Both invocations are in flight at once, so the second needs a second instance.
    let slow = json!({"action": "sleep", "ms": 500});
    let (a, b) = tokio::join!(double.invoke(slow.clone()), double.invoke(slow));
    assert_eq!(a.unwrap(), json!({"slept": 500}));
    assert_eq!(b.unwrap(), json!({"slept": 500}));
    assert_eq!(double.stats().cold_starts, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_that_exits_during_init_is_a_start_error_with_its_output() {
    let err = LocalFunction::start_with(spec(
        &unique("dies"),
        "exit-at-start",
        &[],
        Duration::from_secs(5),
    ))
    .await
    .unwrap_err();
    let StartError::ExitedDuringInit { output, .. } = &err else {
        panic!("expected an init exit, got {err:?}");
    };
    assert!(output.contains("exiting at start"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_specs_are_refused_before_anything_runs() {
    let missing = LocalFunction::start(
        "ghost",
        "/nonexistent/bootstrap",
        Vec::new(),
        Duration::from_secs(1),
    )
    .await;
    assert!(matches!(missing, Err(StartError::InvalidSpec { .. })));
    let bad_name = LocalFunction::start(
        "no spaces",
        common::TEST_FUNCTION,
        Vec::new(),
        Duration::from_secs(1),
    )
    .await;
    assert!(matches!(bad_name, Err(StartError::InvalidSpec { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_over_6_mb_is_refused_without_invoking() {
    let function = json_function(&unique("big"), &[], Duration::from_secs(5)).await;
    let big = "x".repeat(MAX_PAYLOAD_BYTES);
    let err = function.invoke(json!({"data": big})).await.unwrap_err();
    assert!(
        matches!(err, InvokeError::RequestTooLarge { .. }),
        "{err:?}"
    );
    assert_eq!(function.stats().invocations, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_function_kills_its_process() {
    let function = json_function(&unique("dropped"), &[], Duration::from_secs(5)).await;
    let pid = pid(&function.invoke(json!({})).await.unwrap());
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(function);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let running = stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'));
    assert!(!running, "process {pid} still running: {stat}");
}
