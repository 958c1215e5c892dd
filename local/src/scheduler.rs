//! EventBridge Scheduler, locally: invoke a function on a fixed rate with the payload its
//! target input template produces.
//!
//! tollgate's schedules (rollup, billing sync) use a target input template whose only
//! context attribute is `<aws.scheduler.scheduled-time>`, put in `scheduledTime`: so the
//! function learns which window it is for from the event, never from its own clock, and
//! a late or repeated run processes the same window. [`scheduled_payload`] builds that
//! payload: the template's fields plus `scheduledTime` as ISO-8601 UTC with seconds
//! (`2026-11-23T16:00:00Z`), which wins over a `scheduledTime` in the template.
//!
//! A [`Scheduler`] fires [`run_once`](Scheduler::run_once) every interval, the first one
//! interval after [`every`](Scheduler::every); the scheduled time of run `k` is the start
//! time plus `k` intervals, truncated to the second, as a rate schedule's. Runs do not
//! overlap: a run that outlasts the interval delays the next one and missed ticks are
//! skipped (EventBridge would run them concurrently). A failed run is logged and counted,
//! not retried (EventBridge's retry policy is a deployment setting, not emulated).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use serde_json::{Map, Value};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::function::{InvokeError, LocalFunction};

/// Why a schedule could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// The input template is not a JSON object, so `scheduledTime` cannot be merged in.
    #[error("the schedule's input template must be a JSON object, not {0}")]
    TemplateNotObject(Value),
    /// A zero interval.
    #[error("the schedule's interval must be positive")]
    ZeroInterval,
}

/// `template` with `scheduledTime` set to `at`, as EventBridge Scheduler renders our input
/// template.
///
/// # Errors
///
/// When `template` is not a JSON object.
pub fn scheduled_payload(template: &Value, at: DateTime<Utc>) -> Result<Value, ScheduleError> {
    match template {
        Value::Object(fields) => Ok(render(fields, at)),
        other => Err(ScheduleError::TemplateNotObject(other.clone())),
    }
}

fn render(template: &Map<String, Value>, at: DateTime<Utc>) -> Value {
    let mut fields = template.clone();
    fields.insert(
        "scheduledTime".to_owned(),
        Value::String(at.to_rfc3339_opts(SecondsFormat::Secs, true)),
    );
    Value::Object(fields)
}

/// A schedule targeting one function.
#[derive(Debug, Clone)]
pub struct Scheduler {
    function: Arc<LocalFunction>,
    template: Map<String, Value>,
}

impl Scheduler {
    /// A schedule invoking `function` with `template` plus `scheduledTime`.
    ///
    /// # Errors
    ///
    /// When `template` is not a JSON object.
    pub fn new(function: Arc<LocalFunction>, template: Value) -> Result<Self, ScheduleError> {
        match template {
            Value::Object(template) => Ok(Self { function, template }),
            other => Err(ScheduleError::TemplateNotObject(other)),
        }
    }

    /// Invokes the function once, as the schedule would for the scheduled time `at`.
    ///
    /// # Errors
    ///
    /// The invocation's error.
    pub async fn run_once(&self, at: DateTime<Utc>) -> Result<Value, InvokeError> {
        self.function.invoke(render(&self.template, at)).await
    }

    /// Starts firing every `interval`; stops when the returned guard is stopped or dropped.
    ///
    /// # Errors
    ///
    /// When `interval` is zero.
    pub fn every(self, interval: Duration) -> Result<RunningSchedule, ScheduleError> {
        if interval.is_zero() {
            return Err(ScheduleError::ZeroInterval);
        }
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(fire(self, interval, Arc::clone(&counters)));
        Ok(RunningSchedule { task, counters })
    }
}

#[derive(Debug, Default)]
struct Counters {
    runs: AtomicU64,
    failures: AtomicU64,
}

/// A schedule's counters, as a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScheduleStats {
    /// Invocations made.
    pub runs: u64,
    /// Invocations that failed.
    pub failures: u64,
}

/// A schedule that is firing. Dropping it stops it (aborting a run in progress).
#[derive(Debug)]
pub struct RunningSchedule {
    task: JoinHandle<()>,
    counters: Arc<Counters>,
}

impl RunningSchedule {
    /// The counters so far.
    pub fn stats(&self) -> ScheduleStats {
        ScheduleStats {
            runs: self.counters.runs.load(Ordering::Relaxed),
            failures: self.counters.failures.load(Ordering::Relaxed),
        }
    }

    /// Stops firing (aborting a run in progress).
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for RunningSchedule {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn fire(schedule: Scheduler, interval: Duration, counters: Arc<Counters>) {
    let started = Utc::now();
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut elapsed = Duration::ZERO;
    loop {
        ticks.tick().await;
        elapsed += interval;
        let Some(at) = chrono::Duration::from_std(elapsed)
            .ok()
            .and_then(|elapsed| started.checked_add_signed(elapsed))
        else {
            return;
        };
        // Scheduled times are whole seconds.
        let at = at.with_nanosecond(0).unwrap_or(at);
        counters.runs.fetch_add(1, Ordering::Relaxed);
        if let Err(err) = schedule.run_once(at).await {
            counters.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(function = %schedule.function.name(), scheduled_time = %at, error = %err, "a scheduled run failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    #[test]
    fn the_payload_is_the_template_with_the_scheduled_time() {
        let at = Utc.with_ymd_and_hms(2026, 11, 23, 16, 0, 0).unwrap();
        let payload =
            scheduled_payload(&json!({"job": "rollup", "scheduledTime": "old"}), at).unwrap();
        assert_eq!(
            payload,
            json!({"job": "rollup", "scheduledTime": "2026-11-23T16:00:00Z"})
        );
    }

    #[test]
    fn a_template_must_be_an_object() {
        let at = Utc.with_ymd_and_hms(2026, 11, 23, 16, 0, 0).unwrap();
        assert!(scheduled_payload(&json!("rollup"), at).is_err());
        assert!(scheduled_payload(&json!([1]), at).is_err());
    }
}
