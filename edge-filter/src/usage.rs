//! Usage metering in the VM: per-request usage folded into mergeable aggregate states,
//! then cut into [`EdgeBatch`] messages for the usage queue.
//!
//! ## What is counted
//!
//! Each request adds one observation to up to three meters (their names are configured
//! and must exist in the usage pipeline's meter catalog with the same aggregation):
//!
//! | meter | aggregation | observation |
//! |---|---|---|
//! | requests | `count` | 1 |
//! | response bytes | `sum` | response body bytes |
//! | latency | `percentiles` | milliseconds from request headers to response end |
//!
//! per (tenant, meter, UTC minute, route group, status class) — the dimensions `route`
//! and `status` (`2xx`, `4xx`, …). States are core's [`AggregateState`]s, so any split of
//! the requests merged together equals the aggregate of all of them: worker VMs each
//! aggregate, hand their rows over a shared queue, and the singleton merges them with
//! [`UsageBuffer::merge_rows`] before flushing.
//!
//! ## Bounded memory
//!
//! A buffer holds at most `max_rows` distinct rows. An observation or a handed-over row
//! that would need a new row beyond that is dropped and **counted** in
//! [`Dropped::over_capacity`]; observations into existing rows always fold in. Rows that
//! cannot be merged (a kind that does not match, an overflow) are counted in
//! [`Dropped::invalid`], and a single row larger than a whole message in
//! [`Dropped::oversized`]. The glue reports these as the dropped-rows metric.
//!
//! ## Flushing
//!
//! [`UsageBuffer::drain_into_batches`] empties the buffer into messages whose serialised
//! body never exceeds `max_body_bytes` (default [`DEFAULT_MAX_BODY_BYTES`], which every
//! SQS-compatible server accepts). Every row lands in exactly one batch. Batch ids are
//! `{gateway}-{seq}`, `seq` counting up per batch, so the gateway id must be unique per
//! VM lifetime (host name plus start time, say): a reused id would be deduplicated
//! downstream as a redelivery and its usage lost. An empty buffer produces no batch and
//! uses no sequence number. A batch whose send fails is retried as is — same id, same
//! body — and never merged back, since a send that failed only from the sender's point of
//! view may have been applied.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use tollgate_core::aggregate::{AggregateState, Aggregation, Observation, ObservedValue};
use tollgate_core::ids::{MeterName, TenantId};
use tollgate_core::message::{EDGE_BATCH_SCHEMA, EdgeBatch, EdgeRow};
use tollgate_core::usage::Dimensions;
use tollgate_core::window::{Granularity, Window};

/// Default largest message body: 256 KiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024;

/// The route group recorded when the configured one is not a valid dimension value.
pub const INVALID_ROUTE_GROUP: &str = "invalid";

/// Which meters the filter records into; `None` turns a meter off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeMeters {
    pub requests: Option<MeterName>,
    pub response_bytes: Option<MeterName>,
    pub latency_ms: Option<MeterName>,
}

/// What one finished request used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestUsage {
    pub tenant: TenantId,
    /// The route group the request matched (`items`, `search`), bounded by the config.
    pub route_group: String,
    pub status: u32,
    pub response_bytes: u64,
    pub latency_ms: u64,
    pub at: DateTime<Utc>,
}

/// The HTTP status class dimension: `1xx` … `5xx`, `other` for anything else.
pub fn status_class(status: u32) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

/// Rows that were dropped, by reason. Never silent: the glue exports them as a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dropped {
    /// A new row was needed and the buffer was full.
    pub over_capacity: u64,
    /// A row could not be merged or serialised.
    pub invalid: u64,
    /// A single row did not fit in a message body.
    pub oversized: u64,
}

impl Dropped {
    pub fn total(&self) -> u64 {
        self.over_capacity
            .saturating_add(self.invalid)
            .saturating_add(self.oversized)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RowKey {
    tenant: TenantId,
    meter: MeterName,
    minute: Window,
    dimensions: Dimensions,
}

/// Aggregated usage of one VM, bounded to `max_rows` rows.
#[derive(Debug, Clone)]
pub struct UsageBuffer {
    rows: BTreeMap<RowKey, AggregateState>,
    max_rows: usize,
    dropped: Dropped,
}

impl UsageBuffer {
    pub fn new(max_rows: usize) -> UsageBuffer {
        UsageBuffer {
            rows: BTreeMap::new(),
            max_rows,
            dropped: Dropped::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Everything dropped so far (cumulative; the glue reports the increase).
    pub fn dropped(&self) -> Dropped {
        self.dropped
    }

    /// Folds one request into the configured meters.
    pub fn record(&mut self, meters: &EdgeMeters, usage: &RequestUsage) {
        let mut dimensions = Dimensions::new();
        if dimensions.insert("route", &usage.route_group).is_err() {
            // A route group from config is valid; this only guards against a bad one.
            let _ = dimensions.insert("route", INVALID_ROUTE_GROUP);
        }
        let _ = dimensions.insert("status", status_class(usage.status));
        let minute = Window::containing(Granularity::Minute, usage.at);
        let observations = [
            (&meters.requests, Aggregation::Count, ObservedValue::None),
            (
                &meters.response_bytes,
                Aggregation::Sum,
                ObservedValue::Number(Decimal::from(usage.response_bytes)),
            ),
            (
                &meters.latency_ms,
                Aggregation::Percentiles,
                ObservedValue::Number(Decimal::from(usage.latency_ms)),
            ),
        ];
        for (meter, aggregation, value) in observations {
            let Some(meter) = meter else { continue };
            let key = RowKey {
                tenant: usage.tenant.clone(),
                meter: meter.clone(),
                minute,
                dimensions: dimensions.clone(),
            };
            let observation = Observation {
                time: usage.at,
                event_id: "",
                value,
            };
            let Some(state) = self.slot(key, || AggregateState::identity(&aggregation)) else {
                continue;
            };
            if state.observe(&aggregation, &observation).is_err() {
                self.dropped.invalid = self.dropped.invalid.saturating_add(1);
            }
        }
    }

    /// The state under `key`, created if there is room; `None` (and counted) if not.
    fn slot(
        &mut self,
        key: RowKey,
        identity: impl FnOnce() -> AggregateState,
    ) -> Option<&mut AggregateState> {
        if !self.rows.contains_key(&key) && self.rows.len() >= self.max_rows {
            self.dropped.over_capacity = self.dropped.over_capacity.saturating_add(1);
            return None;
        }
        Some(self.rows.entry(key).or_insert_with(identity))
    }

    /// Merges rows handed over by another VM (or left by an earlier drain).
    pub fn merge_rows(&mut self, rows: impl IntoIterator<Item = EdgeRow>) {
        for row in rows {
            let Ok(minute) = Window::parse_key(Granularity::Minute, &row.minute) else {
                self.dropped.invalid = self.dropped.invalid.saturating_add(1);
                continue;
            };
            let key = RowKey {
                tenant: row.tenant,
                meter: row.meter,
                minute,
                dimensions: row.dimensions,
            };
            let full = self.rows.len() >= self.max_rows;
            match self.rows.get_mut(&key) {
                Some(state) => {
                    if state.merge(&row.state).is_err() {
                        self.dropped.invalid = self.dropped.invalid.saturating_add(1);
                    }
                }
                None if full => {
                    self.dropped.over_capacity = self.dropped.over_capacity.saturating_add(1);
                }
                None => {
                    self.rows.insert(key, row.state);
                }
            }
        }
    }

    /// Takes every row out, sorted by key.
    pub fn drain_rows(&mut self) -> Vec<EdgeRow> {
        std::mem::take(&mut self.rows)
            .into_iter()
            .map(|(key, state)| EdgeRow {
                tenant: key.tenant,
                meter: key.meter,
                minute: key.minute.key(),
                dimensions: key.dimensions,
                state,
            })
            .collect()
    }

    /// Empties the buffer into batches whose serialised bodies are at most
    /// `max_body_bytes`, numbered from `*batch_seq` (advanced past the last one used).
    /// An empty buffer gives no batch.
    pub fn drain_into_batches(
        &mut self,
        max_body_bytes: usize,
        gateway: &str,
        batch_seq: &mut u64,
        flushed_at: DateTime<Utc>,
    ) -> Vec<EdgeBatch> {
        let envelope = |seq: u64| EdgeBatch {
            schema: EDGE_BATCH_SCHEMA.to_owned(),
            batch_id: format!("{gateway}-{seq}"),
            gateway: gateway.to_owned(),
            flushed_at,
            rows: Vec::new(),
        };
        let mut batches = Vec::new();
        let mut current = envelope(*batch_seq);
        let mut size = serialized_len(&current);
        for row in self.drain_rows() {
            let Some(row_len) = serialized_len(&row) else {
                self.dropped.invalid = self.dropped.invalid.saturating_add(1);
                continue;
            };
            let separator = usize::from(!current.rows.is_empty());
            let fits = size.is_some_and(|s| s + separator + row_len <= max_body_bytes);
            if !fits && !current.rows.is_empty() {
                *batch_seq = batch_seq.saturating_add(1);
                batches.push(std::mem::replace(&mut current, envelope(*batch_seq)));
                size = serialized_len(&current);
            }
            let separator = usize::from(!current.rows.is_empty());
            match size {
                Some(s) if s + separator + row_len <= max_body_bytes => {
                    size = Some(s + separator + row_len);
                    current.rows.push(row);
                }
                _ => self.dropped.oversized = self.dropped.oversized.saturating_add(1),
            }
        }
        if !current.rows.is_empty() {
            *batch_seq = batch_seq.saturating_add(1);
            batches.push(current);
        }
        batches
    }
}

/// The compact JSON length of `value`; `None` if it cannot be serialised.
fn serialized_len<T: Serialize>(value: &T) -> Option<usize> {
    serde_json::to_vec(value).ok().map(|v| v.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use proptest::prelude::*;
    use tollgate_core::aggregate::QuantileSketch;

    fn meters() -> EdgeMeters {
        EdgeMeters {
            requests: MeterName::new("requests").ok(),
            response_bytes: MeterName::new("response_bytes").ok(),
            latency_ms: MeterName::new("latency_ms").ok(),
        }
    }

    fn start() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T15:04:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn request(
        tenant: &str,
        route: &str,
        status: u32,
        bytes: u64,
        ms: u64,
        sec: i64,
    ) -> RequestUsage {
        RequestUsage {
            tenant: TenantId::new(tenant).unwrap_or_else(|_| TenantId::new("t").unwrap()),
            route_group: route.to_owned(),
            status,
            response_bytes: bytes,
            latency_ms: ms,
            at: start() + Duration::seconds(sec),
        }
    }

    fn requests() -> impl Strategy<Value = Vec<RequestUsage>> {
        proptest::collection::vec(
            (
                prop_oneof![Just("acme"), Just("globex"), Just("initech")],
                prop_oneof![Just("items"), Just("search")],
                prop_oneof![Just(200u32), Just(404), Just(503), Just(99)],
                0u64..100_000,
                0u64..5_000,
                0i64..180,
            )
                .prop_map(|(t, r, s, b, ms, sec)| request(t, r, s, b, ms, sec)),
            0..120,
        )
    }

    #[test]
    fn a_request_becomes_three_rows_per_minute_route_and_status_class() {
        let mut buffer = UsageBuffer::new(100);
        buffer.record(&meters(), &request("acme", "items", 200, 512, 12, 1));
        buffer.record(&meters(), &request("acme", "items", 201, 488, 30, 59));
        let rows = buffer.drain_rows();
        assert_eq!(rows.len(), 3);
        assert!(buffer.is_empty());
        let by_meter = |name: &str| rows.iter().find(|r| r.meter.as_str() == name);
        assert_eq!(
            by_meter("requests").map(|r| &r.state),
            Some(&AggregateState::Count { n: 2 })
        );
        assert_eq!(
            by_meter("response_bytes").map(|r| &r.state),
            Some(&AggregateState::Sum {
                sum: Decimal::from(1_000)
            })
        );
        let Some(AggregateState::Percentiles(sketch)) = by_meter("latency_ms").map(|r| &r.state)
        else {
            panic!("latency is a sketch")
        };
        assert_eq!(sketch.count(), 2);
        let row = &rows[0];
        assert_eq!(row.minute, "2026-11-23T15:04");
        assert_eq!(row.dimensions.key(), "route=items,status=2xx");
        assert_eq!(status_class(99), "other");
        assert_eq!(status_class(599), "5xx");
    }

    #[test]
    fn a_full_buffer_counts_what_it_drops_and_still_folds_into_existing_rows() {
        let only_requests = EdgeMeters {
            requests: MeterName::new("requests").ok(),
            response_bytes: None,
            latency_ms: None,
        };
        let mut buffer = UsageBuffer::new(1);
        buffer.record(&only_requests, &request("acme", "items", 200, 0, 0, 0));
        buffer.record(&only_requests, &request("globex", "items", 200, 0, 0, 0));
        buffer.record(&only_requests, &request("acme", "items", 200, 0, 0, 1));
        assert_eq!(buffer.dropped().over_capacity, 1);
        let rows = buffer.drain_rows();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].state, AggregateState::Count { n: 2 });
    }

    #[test]
    fn a_bad_route_group_is_recorded_as_invalid_rather_than_dropped() {
        let mut buffer = UsageBuffer::new(10);
        buffer.record(&meters(), &request("acme", "bad\nroute", 200, 0, 0, 0));
        let rows = buffer.drain_rows();
        assert!(
            rows.iter()
                .all(|r| r.dimensions.key() == "route=invalid,status=2xx")
        );
    }

    #[test]
    fn an_empty_flush_sends_nothing_and_uses_no_sequence_number() {
        let mut buffer = UsageBuffer::new(10);
        let mut seq = 7;
        assert!(
            buffer
                .drain_into_batches(DEFAULT_MAX_BODY_BYTES, "gw-a", &mut seq, start())
                .is_empty()
        );
        assert_eq!(seq, 7);
        buffer.record(&meters(), &request("acme", "items", 200, 1, 1, 0));
        let batches = buffer.drain_into_batches(DEFAULT_MAX_BODY_BYTES, "gw-a", &mut seq, start());
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].batch_id, "gw-a-7");
        assert_eq!(batches[0].schema, EDGE_BATCH_SCHEMA);
        assert_eq!(seq, 8);
    }

    #[test]
    fn a_row_larger_than_a_message_is_counted_not_sent() {
        let mut buffer = UsageBuffer::new(10);
        buffer.record(&meters(), &request("acme", "items", 200, 1, 1, 0));
        let mut seq = 0;
        assert!(
            buffer
                .drain_into_batches(100, "gw-a", &mut seq, start())
                .is_empty()
        );
        assert_eq!(buffer.dropped().oversized, 3);
        assert_eq!(seq, 0);
    }

    #[test]
    fn mismatched_or_malformed_handed_over_rows_are_counted() {
        let mut buffer = UsageBuffer::new(10);
        buffer.record(&meters(), &request("acme", "items", 200, 1, 1, 0));
        let mut rows = buffer.clone().drain_rows();
        // Sorted by meter: latency_ms, requests, response_bytes.
        rows[1].state = AggregateState::Percentiles(QuantileSketch::new());
        rows[0].minute = "2026-11-23T15".to_owned();
        buffer.merge_rows(rows);
        assert_eq!(buffer.dropped().invalid, 2);
    }

    proptest! {
        #[test]
        fn merging_any_split_equals_aggregating_everything(
            requests in requests(), cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
        ) {
            let mut whole = UsageBuffer::new(10_000);
            for r in &requests {
                whole.record(&meters(), r);
            }
            let mut bounds: Vec<usize> = cuts.iter().map(|i| i.index(requests.len() + 1)).collect();
            bounds.push(0);
            bounds.push(requests.len());
            bounds.sort_unstable();
            let mut merged = UsageBuffer::new(10_000);
            for pair in bounds.windows(2) {
                let mut part = UsageBuffer::new(10_000);
                for r in &requests[pair[0]..pair[1]] {
                    part.record(&meters(), r);
                }
                merged.merge_rows(part.drain_rows());
            }
            prop_assert_eq!(merged.drain_rows(), whole.drain_rows());
            prop_assert_eq!(merged.dropped(), Dropped::default());
        }

        #[test]
        fn batches_fit_the_size_limit_and_carry_every_row_once(
            requests in requests(), max_body in 400usize..6_000, seq0 in 0u64..1_000,
        ) {
            let mut buffer = UsageBuffer::new(10_000);
            for r in &requests {
                buffer.record(&meters(), r);
            }
            let expected = buffer.clone().drain_rows();
            let mut seq = seq0;
            let batches = buffer.drain_into_batches(max_body, "gw-7", &mut seq, start());
            prop_assert!(buffer.is_empty());
            prop_assert_eq!(seq, seq0 + batches.len() as u64);
            let mut ids = std::collections::BTreeSet::new();
            let mut sent = Vec::new();
            for batch in &batches {
                let body = serde_json::to_string(batch).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(body.len() <= max_body, "{} > {}", body.len(), max_body);
                prop_assert!(!batch.rows.is_empty());
                prop_assert!(ids.insert(batch.batch_id.clone()));
                sent.extend(batch.rows.iter().cloned());
            }
            // Rows come out in key order, so what was sent is `expected` minus the rows
            // too large for any message, and nothing else.
            prop_assert_eq!(sent.len() as u64 + buffer.dropped().oversized, expected.len() as u64);
            let mut remaining = expected.iter();
            for row in &sent {
                prop_assert!(remaining.any(|e| e == row), "sent a row not held, or twice");
            }
            prop_assert_eq!(buffer.dropped().invalid + buffer.dropped().over_capacity, 0);
        }
    }
}
