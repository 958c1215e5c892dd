//! Schedules against a real binary: the payload EventBridge Scheduler would send, once
//! and on an interval.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use tollgate_local::Scheduler;

use common::{Recording, json_function, unique, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_sends_the_template_with_the_scheduled_time() {
    let function = Arc::new(json_function(&unique("rollup"), &[], Duration::from_secs(5)).await);
    let scheduler = Scheduler::new(function, json!({"job": "rollup"})).unwrap();
    let at = Utc.with_ymd_and_hms(2026, 11, 23, 16, 0, 0).unwrap();

    let reply = scheduler.run_once(at).await.unwrap();

    assert_eq!(
        reply["event"],
        json!({"job": "rollup", "scheduledTime": "2026-11-23T16:00:00Z"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_schedule_fires_until_stopped() {
    let recording = Recording::new();
    let function = Arc::new(
        json_function(
            &unique("billing"),
            &[recording.env()],
            Duration::from_secs(5),
        )
        .await,
    );
    let schedule = Scheduler::new(function, json!({}))
        .unwrap()
        .every(Duration::from_millis(200))
        .unwrap();

    wait_until(
        Duration::from_secs(30),
        "the schedule ran twice",
        || async { schedule.stats().runs >= 2 },
    )
    .await;
    schedule.stop();

    let events = recording.events();
    assert!(events.len() >= 2);
    for event in &events {
        let at = event["scheduledTime"].as_str().unwrap();
        assert!(
            at.ends_with('Z') && at.len() == "2026-11-23T16:00:00Z".len(),
            "{at}"
        );
        DateTime::parse_from_rfc3339(at).unwrap();
    }
}

#[test]
fn a_template_that_is_not_an_object_is_refused() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let function = Arc::new(json_function(&unique("bad"), &[], Duration::from_secs(5)).await);
        assert!(Scheduler::new(function, json!("rollup")).is_err());
    });
}
