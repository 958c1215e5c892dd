//! What arrives on the usage queue, and how each message becomes one [`UsageBatch`].
//!
//! A message body is one of three contracts:
//!
//! - a **CloudEvents usage event** (`specversion` present): any producer. Its dedupe key
//!   is (subject, source, id).
//! - a **CloudEvents batch** (CloudEvents' JSON batch format,
//!   `application/cloudevents-batch+json`: an array of events, at most
//!   [`MAX_EVENTS_PER_MESSAGE`]): what the usage API's `POST /v1/events` sends, packing many
//!   events into one message so SQS requests do not grow with every event. Each event is
//!   still its own batch with its own dedupe key; a malformed element is rejected alone
//!   and the others apply.
//! - an **edge batch** (`schema: "tollgate.edge-batch/1"`): what a gateway instance's
//!   filter flushes every interval: rows of mergeable aggregate states per (tenant, meter,
//!   minute, dimensions). Its dedupe key is (gateway, batch id), unique per instance and
//!   flush.
//!
//! Every event, and every edge batch, becomes exactly one `UsageBatch` whose id is its
//! dedupe key, with rows folded into hourly windows. An event or edge batch is valid or
//! rejected as a whole, with a typed reason: a batch is never half applied.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::aggregate::AggregateState;
use crate::event::{EventError, UsageEvent, json_type};
use crate::ids::{MeterName, TenantId};
use crate::meter::MeterCatalog;
use crate::usage::{
    Dimensions, UsageAggregator, UsageBatch, UsageError, UsageKey, UsageRow, merge_rows,
};
use crate::window::{EventTimeError, EventTimePolicy, Granularity, Window};

/// The `schema` value of an edge batch.
pub const EDGE_BATCH_SCHEMA: &str = "tollgate.edge-batch/1";

/// Most events in one CloudEvents batch message.
pub const MAX_EVENTS_PER_MESSAGE: usize = 1000;

/// Longest accepted gateway id or edge batch id, in characters.
pub const MAX_EDGE_ID_LEN: usize = 128;

/// A batch of aggregated usage flushed by one gateway instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EdgeBatch {
    /// Always [`EDGE_BATCH_SCHEMA`].
    pub schema: String,
    /// Unique per gateway instance and flush.
    pub batch_id: String,
    /// The gateway instance that flushed it.
    pub gateway: String,
    pub flushed_at: DateTime<Utc>,
    pub rows: Vec<EdgeRow>,
}

/// One aggregate state of one (tenant, meter, minute, dimensions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EdgeRow {
    pub tenant: TenantId,
    pub meter: MeterName,
    /// The minute window key, `2026-11-23T15:04`.
    pub minute: String,
    #[serde(default, skip_serializing_if = "Dimensions::is_empty")]
    pub dimensions: Dimensions,
    pub state: AggregateState,
}

/// Why a message was rejected. Permanent: retrying the same body cannot succeed.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum MessageError {
    #[error("message body is not JSON: {0}")]
    NotJson(String),
    #[error("message body must be a JSON object or an array of CloudEvents, found {found}")]
    NotAnObject { found: &'static str },
    #[error("a CloudEvents batch must hold 1 to {MAX_EVENTS_PER_MESSAGE} events, it holds {len}")]
    BadEventCount { len: usize },
    #[error("message is neither a CloudEvent (specversion) nor an edge batch (schema)")]
    UnknownContract,
    #[error("unsupported edge batch schema {0:?}; expected {EDGE_BATCH_SCHEMA:?}")]
    UnsupportedSchema(String),
    #[error(transparent)]
    Event(#[from] EventError),
    #[error(transparent)]
    Usage(#[from] UsageError),
    #[error("edge batch is malformed: {0}")]
    MalformedEdgeBatch(String),
    #[error("edge batch {field} is empty or longer than {MAX_EDGE_ID_LEN} characters")]
    BadEdgeId { field: &'static str },
    #[error("edge row {row}: {reason}")]
    BadEdgeRow { row: usize, reason: String },
    #[error("edge row {row}: {source}")]
    EdgeRowTime {
        row: usize,
        #[source]
        source: EventTimeError,
    },
}

impl MessageError {
    /// A stable, machine-readable code for rejection records.
    pub fn code(&self) -> &'static str {
        match self {
            MessageError::NotJson(_) => "not_json",
            MessageError::NotAnObject { .. } => "not_an_object",
            MessageError::BadEventCount { .. } => "bad_event_count",
            MessageError::UnknownContract => "unknown_contract",
            MessageError::UnsupportedSchema(_) => "unsupported_schema",
            MessageError::Event(e) => e.code(),
            MessageError::Usage(e) => e.code(),
            MessageError::MalformedEdgeBatch(_) => "malformed_edge_batch",
            MessageError::BadEdgeId { .. } => "bad_edge_id",
            MessageError::BadEdgeRow { .. } => "bad_edge_row",
            MessageError::EdgeRowTime { source, .. } => match source {
                EventTimeError::TooFarInFuture { .. } => "time_in_future",
                EventTimeError::BeyondLateHorizon { .. } => "time_too_old",
            },
        }
    }
}

/// What one queue message holds once parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedMessage {
    /// One exactly-once batch per usage event, or the edge batch's one.
    pub batches: Vec<UsageBatch>,
    /// Elements of a CloudEvents batch rejected on their own, by position; the rest apply.
    pub rejected: Vec<(usize, MessageError)>,
}

/// Turns one queue message body into the batches that apply it exactly once. An error
/// rejects the whole message; a CloudEvents batch can also reject single elements.
pub fn parse_message(
    body: &str,
    catalog: &MeterCatalog,
    policy: &EventTimePolicy,
    now: DateTime<Utc>,
) -> Result<ParsedMessage, MessageError> {
    let value: Value =
        serde_json::from_str(body).map_err(|e| MessageError::NotJson(e.to_string()))?;
    if let Value::Array(events) = &value {
        if events.is_empty() || events.len() > MAX_EVENTS_PER_MESSAGE {
            return Err(MessageError::BadEventCount { len: events.len() });
        }
        let mut parsed = ParsedMessage::default();
        for (i, event) in events.iter().enumerate() {
            match event_batch(event, catalog, policy, now) {
                Ok(batch) => parsed.batches.push(batch),
                Err(error) => parsed.rejected.push((i, error)),
            }
        }
        return Ok(parsed);
    }
    let object = value.as_object().ok_or(MessageError::NotAnObject {
        found: json_type(&value),
    })?;
    if object.contains_key("specversion") {
        return Ok(ParsedMessage {
            batches: vec![event_batch(&value, catalog, policy, now)?],
            rejected: Vec::new(),
        });
    }
    match object.get("schema").and_then(Value::as_str) {
        Some(EDGE_BATCH_SCHEMA) => {}
        Some(other) => return Err(MessageError::UnsupportedSchema(other.to_owned())),
        None => return Err(MessageError::UnknownContract),
    }
    let batch: EdgeBatch = serde_json::from_value(value)
        .map_err(|e| MessageError::MalformedEdgeBatch(e.to_string()))?;
    Ok(ParsedMessage {
        batches: vec![edge_batch_to_usage(&batch, catalog, policy, now)?],
        rejected: Vec::new(),
    })
}

/// One CloudEvent as the batch that applies it once, keyed by its dedupe key.
fn event_batch(
    value: &Value,
    catalog: &MeterCatalog,
    policy: &EventTimePolicy,
    now: DateTime<Utc>,
) -> Result<UsageBatch, MessageError> {
    let event = UsageEvent::from_json(value, policy, now)?;
    let mut aggregator = UsageAggregator::new(catalog, Granularity::Hour);
    aggregator.add_event(&event)?;
    Ok(UsageBatch {
        batch_id: format!("evt\u{1f}{}", event.dedupe_key()),
        rows: aggregator.into_rows(),
    })
}

/// Validates an edge batch and folds its minute rows into hourly rows.
pub fn edge_batch_to_usage(
    batch: &EdgeBatch,
    catalog: &MeterCatalog,
    policy: &EventTimePolicy,
    now: DateTime<Utc>,
) -> Result<UsageBatch, MessageError> {
    for (field, value) in [("batchId", &batch.batch_id), ("gateway", &batch.gateway)] {
        if value.trim().is_empty() || value.chars().count() > MAX_EDGE_ID_LEN {
            return Err(MessageError::BadEdgeId { field });
        }
    }
    let mut rows = Vec::with_capacity(batch.rows.len());
    for (i, row) in batch.rows.iter().enumerate() {
        let bad = |reason: String| MessageError::BadEdgeRow { row: i, reason };
        let minute =
            Window::parse_key(Granularity::Minute, &row.minute).map_err(|e| bad(e.to_string()))?;
        policy
            .check(minute.start(), now)
            .map_err(|source| MessageError::EdgeRowTime { row: i, source })?;
        let meter = catalog
            .get(&row.meter)
            .ok_or_else(|| bad(format!("meter {} is not configured", row.meter)))?;
        if !meter.aggregation.matches(&row.state) {
            return Err(bad(format!(
                "meter {} aggregates `{}` but the row carries `{}`",
                row.meter,
                meter.aggregation.kind(),
                row.state.kind()
            )));
        }
        rows.push(UsageRow {
            key: UsageKey {
                tenant: row.tenant.clone(),
                meter: row.meter.clone(),
                window: Window::containing(Granularity::Hour, minute.start()),
                dimensions: row.dimensions.clone(),
            },
            state: row.state.clone(),
        });
    }
    Ok(UsageBatch {
        batch_id: format!("edge\u{1f}{}\u{1f}{}", batch.gateway, batch.batch_id),
        rows: merge_rows(rows)?,
    })
}

/// A message that was rejected for good, kept so that nothing disappears silently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejection {
    /// The queue's message id (stable across redeliveries), or the API request's event id.
    pub message_id: String,
    /// The tenant, when the message names one that could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    pub code: String,
    pub reason: String,
    pub received_at: DateTime<Utc>,
    /// The first [`Rejection::EXCERPT_BYTES`] bytes of the body, for diagnosis.
    pub body_excerpt: String,
}

impl Rejection {
    pub const EXCERPT_BYTES: usize = 1024;

    /// The rejection of a message that broke its contract.
    pub fn new(
        message_id: &str,
        body: &str,
        error: &MessageError,
        received_at: DateTime<Utc>,
    ) -> Rejection {
        Rejection::with_reason(
            message_id,
            body,
            error.code(),
            error.to_string(),
            received_at,
        )
    }

    /// A rejection for any other permanent reason (storage refused the batch, say).
    pub fn with_reason(
        message_id: &str,
        body: &str,
        code: &str,
        reason: String,
        received_at: DateTime<Utc>,
    ) -> Rejection {
        let mut end = body.len().min(Rejection::EXCERPT_BYTES);
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        let tenant = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v.get("subject").and_then(Value::as_str).map(str::to_owned))
            .and_then(|s| TenantId::new(s).ok());
        Rejection {
            message_id: message_id.to_owned(),
            tenant,
            code: code.to_owned(),
            reason,
            received_at,
            body_excerpt: body[..end].to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Aggregation;
    use serde_json::json;

    fn catalog() -> MeterCatalog {
        MeterCatalog::from_json(
            r#"[
              {"name": "requests", "eventTypes": ["api.request"], "aggregation": {"kind": "count"}, "unit": "requests"},
              {"name": "bytes_out", "eventTypes": ["api.request"], "valueField": "bytes", "aggregation": {"kind": "sum"}, "unit": "bytes"}
            ]"#,
        )
        .unwrap()
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn parse(body: &str) -> Result<ParsedMessage, MessageError> {
        parse_message(body, &catalog(), &EventTimePolicy::default(), now())
    }

    fn edge_batch(rows: Value) -> String {
        json!({"schema": EDGE_BATCH_SCHEMA, "batchId": "f-17", "gateway": "gw-a",
               "flushedAt": "2026-11-23T11:59:00Z", "rows": rows})
        .to_string()
    }

    #[test]
    fn a_cloudevent_becomes_a_batch_keyed_by_its_dedupe_key() {
        let body = json!({"specversion": "1.0", "id": "e1", "source": "sdk", "type": "api.request",
                          "subject": "acme", "time": "2026-11-23T11:15:00Z", "data": {"bytes": 10}})
        .to_string();
        let parsed = parse(&body).unwrap();
        assert_eq!(parsed.batches.len(), 1);
        assert_eq!(parsed.batches[0].rows.len(), 2);
        assert!(parsed.batches[0].batch_id.starts_with("evt"));
        assert_eq!(parse(&body).unwrap(), parsed, "deterministic");
    }

    #[test]
    fn an_edge_batch_folds_minutes_into_hours() {
        let body = edge_batch(json!([
            {"tenant": "acme", "meter": "requests", "minute": "2026-11-23T11:01", "state": {"kind": "count", "n": 3}},
            {"tenant": "acme", "meter": "requests", "minute": "2026-11-23T11:59", "state": {"kind": "count", "n": 4}},
            {"tenant": "globex", "meter": "requests", "minute": "2026-11-23T10:59", "state": {"kind": "count", "n": 1}}
        ]));
        let parsed = parse(&body).unwrap();
        let batch = &parsed.batches[0];
        assert_eq!(batch.batch_id, "edge\u{1f}gw-a\u{1f}f-17");
        let acme = batch
            .rows
            .iter()
            .find(|r| r.key.tenant.as_str() == "acme")
            .unwrap();
        assert_eq!(acme.key.window.key(), "2026-11-23T11");
        assert_eq!(
            acme.state.quantity(&Aggregation::Count),
            Some(rust_decimal::Decimal::from(7))
        );
    }

    #[test]
    fn a_cloudevents_batch_applies_each_event_on_its_own_and_rejects_bad_elements_alone() {
        let event = |id: &str, subject: &str| {
            json!({"specversion": "1.0", "id": id, "source": "sdk", "type": "api.request",
                   "subject": subject, "time": "2026-11-23T11:15:00Z", "data": {"bytes": 10}})
        };
        let body = json!([
            event("e1", "acme"),
            event("e2", "bad#tenant"),
            event("e3", "globex")
        ])
        .to_string();
        let parsed = parse(&body).unwrap();
        assert_eq!(parsed.batches.len(), 2);
        assert_ne!(parsed.batches[0].batch_id, parsed.batches[1].batch_id);
        assert_eq!(parsed.rejected.len(), 1);
        assert_eq!(
            (parsed.rejected[0].0, parsed.rejected[0].1.code()),
            (1, "bad_subject")
        );
        let single = parse(&event("e1", "acme").to_string()).unwrap();
        assert_eq!(
            single.batches[0], parsed.batches[0],
            "the same event dedupes the same way alone or batched"
        );
        assert_eq!(parse("[]").unwrap_err().code(), "bad_event_count");
    }

    #[test]
    fn every_broken_contract_rule_is_a_typed_rejection() {
        let cases = [
            ("{oops".to_owned(), "not_json"),
            ("7".to_owned(), "not_an_object"),
            ("{\"hello\": 1}".to_owned(), "unknown_contract"),
            (json!({"schema": "tollgate.edge-batch/9"}).to_string(), "unsupported_schema"),
            (json!({"schema": EDGE_BATCH_SCHEMA, "rows": []}).to_string(), "malformed_edge_batch"),
            (edge_batch(json!([{"tenant": "acme", "meter": "requests", "minute": "2026-11-23T11", "state": {"kind": "count", "n": 1}}])), "bad_edge_row"),
            (edge_batch(json!([{"tenant": "acme", "meter": "nope", "minute": "2026-11-23T11:00", "state": {"kind": "count", "n": 1}}])), "bad_edge_row"),
            (edge_batch(json!([{"tenant": "acme", "meter": "bytes_out", "minute": "2026-11-23T11:00", "state": {"kind": "count", "n": 1}}])), "bad_edge_row"),
            (edge_batch(json!([{"tenant": "acme", "meter": "requests", "minute": "2026-11-01T11:00", "state": {"kind": "count", "n": 1}}])), "time_too_old"),
            (json!({"specversion": "1.0", "id": "e1", "source": "s", "type": "other", "subject": "acme",
                    "time": "2026-11-23T11:15:00Z", "data": {}}).to_string(), "no_meter_for_type"),
        ];
        for (body, code) in cases {
            let err = parse(&body).unwrap_err();
            assert_eq!(err.code(), code, "{body}: {err}");
        }
    }

    #[test]
    fn a_rejection_keeps_a_bounded_excerpt_and_the_tenant() {
        let body =
            json!({"specversion": "1.0", "subject": "acme", "pad": "é".repeat(800)}).to_string();
        let err = parse(&body).unwrap_err();
        let rejection = Rejection::new("m-1", &body, &err, now());
        assert_eq!(rejection.tenant.unwrap().as_str(), "acme");
        assert!(rejection.body_excerpt.len() <= Rejection::EXCERPT_BYTES);
        assert_eq!(rejection.code, "missing_attribute");
    }
}
