//! The singleton service role: merge the workers' usage, flush it to SQS, fetch the
//! edge snapshot.

use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType};
use tollgate_core::message::EdgeRow;

use super::host::{self, Jitter, Metrics};
use super::{SNAPSHOT_GENERATION_KEY, SNAPSHOT_KEY, USAGE_QUEUE};
use crate::config::FilterConfig;
use crate::snapshot::SnapshotView;
use crate::sqs::{Outbox, SendOutcome, parse_send_message_batch_response};
use crate::usage::UsageBuffer;

const TICK: Duration = Duration::from_secs(1);
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(5);
const SQS_TIMEOUT: Duration = Duration::from_secs(10);

/// The singleton's root context.
pub struct ServiceRoot {
    config: FilterConfig,
    metrics: Metrics,
    queue: u32,
    usage: UsageBuffer,
    dropped_reported: u64,
    outbox: Outbox,
    /// `{gatewayId}-{VM start, ms}`: batch ids never repeat across restarts.
    gateway: String,
    batch_seq: u64,
    next_flush_ms: u64,
    next_snapshot_ms: u64,
    snapshot_call: Option<u32>,
    sqs_call: Option<u32>,
    snapshot_generation: u64,
    snapshot_at: Option<chrono::DateTime<chrono::Utc>>,
    jitter: Jitter,
}

impl ServiceRoot {
    pub fn start(config: FilterConfig) -> Option<ServiceRoot> {
        let queue = match hostcalls::register_shared_queue(USAGE_QUEUE) {
            Ok(queue) => queue,
            Err(status) => {
                host::log(
                    LogLevel::Error,
                    &format!("tollgate: cannot register `{USAGE_QUEUE}`: {status:?}"),
                );
                return None;
            }
        };
        let _ = hostcalls::set_tick_period(TICK);
        let now = host::now();
        let now_ms = host::now_ms(now);
        let interval_ms = duration_ms(config.flush_interval);
        Some(ServiceRoot {
            metrics: Metrics::define(),
            queue,
            usage: UsageBuffer::new(config.max_buffer_rows),
            dropped_reported: 0,
            outbox: Outbox::new(
                config.queue_url.clone(),
                config.max_body_bytes,
                config.max_pending_bytes,
            ),
            gateway: format!("{}-{now_ms}", config.gateway_id),
            batch_seq: 0,
            next_flush_ms: now_ms + interval_ms,
            next_snapshot_ms: now_ms,
            snapshot_call: None,
            sqs_call: None,
            snapshot_generation: 0,
            snapshot_at: None,
            jitter: Jitter::seeded(now),
            config,
        })
    }

    pub fn on_queue_ready(&mut self, queue_id: u32) {
        if queue_id != self.queue {
            return;
        }
        while let Ok(Some(message)) = hostcalls::dequeue_shared_queue(self.queue) {
            match serde_json::from_slice::<Vec<EdgeRow>>(&message) {
                Ok(rows) => self.usage.merge_rows(rows),
                Err(e) => {
                    host::log(
                        LogLevel::Error,
                        &format!("tollgate: a worker's usage message does not parse: {e}"),
                    );
                    Metrics::add(self.metrics.rows_dropped, 1);
                }
            }
        }
    }

    pub fn on_tick(&mut self) {
        let now = host::now();
        let now_ms = host::now_ms(now);
        if now_ms >= self.next_snapshot_ms && self.snapshot_call.is_none() {
            self.next_snapshot_ms = now_ms + duration_ms(self.config.snapshot_interval);
            self.fetch_snapshot();
        }
        if now_ms >= self.next_flush_ms {
            self.next_flush_ms = now_ms + duration_ms(self.config.flush_interval);
            let batches = self.usage.drain_into_batches(
                self.config.max_body_bytes,
                &self.gateway,
                &mut self.batch_seq,
                now,
            );
            for batch in &batches {
                let dropped = self.outbox.push(batch);
                if dropped > 0 {
                    host::log(
                        LogLevel::Error,
                        &format!(
                            "tollgate: SQS backlog full ({} bytes): batch {} and its {dropped} \
                             rows dropped",
                            self.config.max_pending_bytes, batch.batch_id
                        ),
                    );
                    Metrics::add(self.metrics.rows_dropped, dropped);
                }
            }
        }
        self.report_dropped();
        self.pump(now_ms);
        if let Some(at) = self.snapshot_at {
            let age = (now - at).num_seconds().max(0);
            Metrics::set(
                self.metrics.snapshot_age_seconds,
                u64::try_from(age).unwrap_or(0),
            );
        }
    }

    pub fn on_http_call_response(
        &mut self,
        token: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let status = host::header(MapType::HttpCallResponseHeaders, ":status")
            .and_then(|s| String::from_utf8(s).ok())
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0);
        let body = host::buffer(BufferType::HttpCallResponseBody, body_size);
        if self.snapshot_call == Some(token) {
            self.snapshot_call = None;
            self.take_snapshot(status, &body);
        } else if self.sqs_call == Some(token) {
            self.sqs_call = None;
            let outcome = parse_send_message_batch_response(status, &body);
            self.on_sqs_outcome(outcome);
        }
    }

    fn fetch_snapshot(&mut self) {
        let target = &self.config.snapshot;
        let bearer = self
            .config
            .snapshot_api_key
            .as_ref()
            .map(|key| format!("Bearer {}", key.expose()));
        let mut headers = vec![
            (":method", "GET"),
            (":path", target.path.as_str()),
            (":authority", target.authority.as_str()),
            ("accept", "application/json"),
        ];
        if let Some(bearer) = &bearer {
            headers.push(("authorization", bearer.as_str()));
        }
        match hostcalls::dispatch_http_call(
            &target.cluster,
            headers,
            None,
            Vec::new(),
            SNAPSHOT_TIMEOUT,
        ) {
            Ok(token) => self.snapshot_call = Some(token),
            Err(status) => {
                Metrics::add(self.metrics.snapshot_failures, 1);
                host::log(
                    LogLevel::Error,
                    &format!(
                        "tollgate: snapshot call to cluster `{}` not dispatched: {status:?}",
                        target.cluster
                    ),
                );
            }
        }
    }

    fn take_snapshot(&mut self, status: u32, body: &[u8]) {
        if status != 200 {
            Metrics::add(self.metrics.snapshot_failures, 1);
            host::log(
                LogLevel::Warn,
                &format!("tollgate: snapshot call answered {status}; keeping the last one"),
            );
            return;
        }
        match SnapshotView::parse(body) {
            Ok(view) => {
                let published = host::set_shared_data(SNAPSHOT_KEY, body, None).and_then(|()| {
                    self.snapshot_generation += 1;
                    host::set_shared_data(
                        SNAPSHOT_GENERATION_KEY,
                        self.snapshot_generation.to_string().as_bytes(),
                        None,
                    )
                });
                match published {
                    Ok(()) => self.snapshot_at = Some(view.generated_at),
                    Err(status) => {
                        Metrics::add(self.metrics.snapshot_failures, 1);
                        host::log(
                            LogLevel::Error,
                            &format!("tollgate: snapshot not published: {status:?}"),
                        );
                    }
                }
            }
            Err(e) => {
                Metrics::add(self.metrics.snapshot_failures, 1);
                host::log(
                    LogLevel::Error,
                    &format!("tollgate: snapshot refused, keeping the last one: {e}"),
                );
            }
        }
    }

    /// Sends the next waiting call if none is in flight and the backoff allows.
    fn pump(&mut self, now_ms: u64) {
        if self.sqs_call.is_some() {
            return;
        }
        let Some(call) = self.outbox.next_call(now_ms) else {
            return;
        };
        let target = &self.config.sqs;
        let headers = vec![
            (":method", "POST"),
            (":path", "/"),
            (":authority", target.authority.as_str()),
            ("content-type", "application/x-amz-json-1.0"),
            ("x-amz-target", "AmazonSQS.SendMessageBatch"),
        ];
        match hostcalls::dispatch_http_call(
            &target.cluster,
            headers,
            Some(&call.body),
            Vec::new(),
            SQS_TIMEOUT,
        ) {
            Ok(token) => self.sqs_call = Some(token),
            Err(status) => self.on_sqs_outcome(SendOutcome::CallFailed {
                reason: format!(
                    "SendMessageBatch to cluster `{}` not dispatched: {status:?}",
                    target.cluster
                ),
            }),
        }
    }

    fn on_sqs_outcome(&mut self, outcome: SendOutcome) {
        let now_ms = host::now_ms(host::now());
        let report = self.outbox.on_outcome(outcome, now_ms, self.jitter.next());
        Metrics::add(self.metrics.batches_flushed, report.sent_batches);
        Metrics::add(self.metrics.rows_flushed, report.sent_rows);
        Metrics::add(self.metrics.rows_dropped, report.dropped_rows);
        if !report.failures.is_empty() {
            Metrics::add(self.metrics.flush_failures, 1);
            for failure in &report.failures {
                host::log(LogLevel::Warn, &format!("tollgate: flush: {failure}"));
            }
        }
        if report.retried_batches == 0 {
            self.pump(now_ms);
        }
    }

    fn report_dropped(&mut self) {
        self.metrics
            .report_dropped(self.usage.dropped().total(), &mut self.dropped_reported);
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
