//! `POST /v1/events`: usage intake. One CloudEvent or an array of up to
//! [`MAX_EVENTS`], each validated by core and, if valid, queued for ingest.
//!
//! Each event is judged on its own and gets its own result, so one bad event never
//! holds back the others. An event is accepted only once the queue confirmed it; if the
//! queue failed it, it is reported as not accepted (`queue_unavailable`, safe to retry:
//! ingest deduplicates by subject, source and id). The request fails with 503 only when
//! there were valid events and none of them could be queued.
//!
//! The queued body is the event's canonical CloudEvents JSON ([`UsageEvent::to_json`]):
//! UTC time, `datacontenttype` set, no extension attributes.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use serde_json::Value;
use tollgate_core::event::UsageEvent;

use crate::App;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::http::{Query, body_bytes, json};
use crate::ports::{EventQueue, QueuedEvent, UsageApiStore};
use crate::sqs::MAX_BATCH_BYTES;
use tollgate_core::message::MAX_EVENTS_PER_MESSAGE;

/// The most events one request may carry.
pub const MAX_EVENTS: usize = 500;

/// The largest queued event body.
pub const MAX_EVENT_BYTES: usize = MAX_BATCH_BYTES;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum EventStatus {
    Accepted,
    Rejected,
}

/// The outcome of one submitted event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventResult {
    /// Position in the submitted array (0 for a single event).
    pub index: usize,
    /// The event's `id`, when it had a string one.
    pub id: Option<String>,
    pub status: EventStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl EventResult {
    fn rejected(index: usize, id: Option<String>, code: &str, reason: String) -> EventResult {
        EventResult {
            index,
            id,
            status: EventStatus::Rejected,
            code: Some(code.to_owned()),
            reason: Some(reason),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Submission {
    accepted: usize,
    rejected: usize,
    results: Vec<EventResult>,
}

/// `POST /v1/events`.
pub async fn submit<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    principal: &Principal,
    request: &Request,
) -> Result<Response<Body>, ApiError> {
    let query = Query::of(request, &["tenant"])?;
    // Tenant keys may only submit their own tenant's events; an admin naming a tenant
    // is held to it too.
    let allowed_subject = match principal {
        Principal::Tenant { .. } => Some(principal.tenant_scope(query.get("tenant"))?),
        Principal::Admin => query
            .get("tenant")
            .map(|t| principal.tenant_scope(Some(t)))
            .transpose()?,
    };
    let events = parse_body(body_bytes(request)?)?;
    let now = app.now();
    let mut results = Vec::with_capacity(events.len());
    let mut queued: Vec<(usize, QueuedEvent)> = Vec::new();
    for (index, value) in events.iter().enumerate() {
        let id = value.get("id").and_then(Value::as_str).map(str::to_owned);
        let event = match UsageEvent::from_json(value, app.policy(), now) {
            Ok(event) => event,
            Err(e) => {
                results.push(EventResult::rejected(index, id, e.code(), e.to_string()));
                continue;
            }
        };
        if allowed_subject.as_ref().is_some_and(|t| *t != event.tenant) {
            results.push(EventResult::rejected(
                index,
                id,
                "subject_not_allowed",
                "`subject` must be the tenant this key belongs to".to_owned(),
            ));
            continue;
        }
        if let Err(e) = app.catalog().measure(&event) {
            results.push(EventResult::rejected(index, id, e.code(), e.to_string()));
            continue;
        }
        let body = event.to_json().to_string();
        if body.len() > MAX_EVENT_BYTES {
            results.push(EventResult::rejected(
                index,
                id,
                "event_too_large",
                format!("the event is larger than {MAX_EVENT_BYTES} bytes"),
            ));
            continue;
        }
        results.push(EventResult {
            index,
            id,
            status: EventStatus::Accepted,
            code: None,
            reason: None,
        });
        queued.push((results.len() - 1, QueuedEvent { body }));
    }

    // Accepted events travel as CloudEvents batches (a JSON array per message), so the
    // SQS requests a submission costs do not grow with every event.
    let packed = pack_events(&queued);
    let messages: Vec<QueuedEvent> = packed.iter().map(|(message, _)| message.clone()).collect();
    let outcomes = if messages.is_empty() {
        Vec::new()
    } else {
        app.queue().send(&messages).await
    };
    let mut failed = 0;
    for ((_, slots), outcome) in packed.iter().zip(&outcomes) {
        if let Err(failure) = outcome {
            failed += slots.len();
            tracing::warn!(code = %failure.code, sender_fault = failure.sender_fault, events = slots.len(), "events not queued");
            for slot in slots {
                if let Some(result) = results.get_mut(*slot) {
                    *result = EventResult::rejected(
                        result.index,
                        result.id.take(),
                        "queue_unavailable",
                        "the event could not be queued; retry it".to_owned(),
                    );
                }
            }
        }
    }
    if !queued.is_empty() && failed == queued.len() {
        return Err(ApiError::QueueUnavailable);
    }
    let accepted = results
        .iter()
        .filter(|r| r.status == EventStatus::Accepted)
        .count();
    tracing::info!(
        accepted,
        rejected = results.len() - accepted,
        queue_failures = failed,
        "events submitted"
    );
    json(
        StatusCode::ACCEPTED,
        &Submission {
            accepted,
            rejected: results.len() - accepted,
            results,
        },
    )
}

/// One event object or an array of 1 to [`MAX_EVENTS`] of them.
fn parse_body(bytes: &[u8]) -> Result<Vec<Value>, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "bad_json",
            "the request needs a JSON body: a CloudEvent or an array of them",
        ));
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request("bad_json", format!("the body is not valid JSON: {e}"))
    })?;
    match value {
        Value::Object(_) => Ok(vec![value]),
        Value::Array(events) if events.is_empty() => Err(ApiError::bad_request(
            "no_events",
            "the array holds no events",
        )),
        Value::Array(events) if events.len() > MAX_EVENTS => Err(ApiError::bad_request(
            "too_many_events",
            format!(
                "at most {MAX_EVENTS} events per request, got {}",
                events.len()
            ),
        )),
        Value::Array(events) => Ok(events),
        _ => Err(ApiError::bad_request(
            "bad_json",
            "the body must be a CloudEvent object or an array of them",
        )),
    }
}

/// Bytes of events packed into one queue message (below the 256 KiB SQS limit, with room
/// for the array's brackets and commas).
const PACKED_BYTES: usize = 200 * 1024;

/// Packs event bodies, in order, into CloudEvents batch messages of at most
/// [`MAX_EVENTS_PER_MESSAGE`] events and about [`PACKED_BYTES`]; returns each message with
/// the result slots of the events it carries.
fn pack_events(queued: &[(usize, QueuedEvent)]) -> Vec<(QueuedEvent, Vec<usize>)> {
    let mut packed: Vec<(QueuedEvent, Vec<usize>)> = Vec::new();
    let mut body = String::new();
    let mut slots = Vec::new();
    let mut flush = |body: &mut String, slots: &mut Vec<usize>| {
        if !slots.is_empty() {
            body.push(']');
            packed.push((
                QueuedEvent {
                    body: std::mem::take(body),
                },
                std::mem::take(slots),
            ));
        }
    };
    for (slot, event) in queued {
        if !slots.is_empty()
            && (slots.len() == MAX_EVENTS_PER_MESSAGE
                || body.len() + event.body.len() + 2 > PACKED_BYTES)
        {
            flush(&mut body, &mut slots);
        }
        body.push(if slots.is_empty() { '[' } else { ',' });
        body.push_str(&event.body);
        slots.push(*slot);
    }
    flush(&mut body, &mut slots);
    packed
}
