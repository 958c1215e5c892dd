//! `POST /v1/events`: validation by core, delivery to the queue (a local SQS, moto),
//! per-event results.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::schema::assert_documented;
use common::*;
use serde_json::{Value, json};
use tollgate_core::event::UsageEvent;
use tollgate_core::window::EventTimePolicy;

/// The body the queue must receive for `event`: its canonical CloudEvents JSON.
fn canonical(event: &Value) -> String {
    UsageEvent::from_json(event, &EventTimePolicy::default(), now())
        .unwrap()
        .to_json()
        .to_string()
}

fn sorted(mut bodies: Vec<String>) -> Vec<String> {
    bodies.sort();
    bodies
}

#[tokio::test]
async fn one_valid_event_is_accepted_and_arrives_on_the_queue_as_sent() {
    let h = harness_with_queue("events-one").await;
    let event = api_event("e-1", "acme", "2026-11-23T12:29:00+01:00", 3);
    let reply = h.post("/v1/events", ACME_KEY, &event.to_string()).await;
    reply.expect(202);
    assert_documented("POST", "/v1/events", 202, &reply.json);
    assert_eq!(
        reply.json,
        json!({"accepted": 1, "rejected": 0,
               "results": [{"index": 0, "id": "e-1", "status": "accepted"}]})
    );
    let bodies = h.drain_queue().await;
    assert_eq!(bodies, [canonical(&event)]);
    let queued: Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(queued["time"], "2026-11-23T11:29:00Z", "normalised to UTC");
    assert_eq!(queued["data"], json!({"requests": 3, "route": "/v1/items"}));
}

#[tokio::test]
async fn a_batch_is_judged_event_by_event_and_only_valid_events_are_queued() {
    let h = harness_with_queue("events-batch").await;
    let mut events: Vec<Value> = (0..23)
        .map(|i| api_event(&format!("ok-{i}"), "acme", "2026-11-23T12:00:00Z", i))
        .collect();
    events.insert(3, api_event("old", "acme", "2026-11-01T00:00:00Z", 1));
    events.insert(
        5,
        json!({"specversion": "1.0", "id": "no-meter", "source": "s", "type": "unknown.type",
                            "subject": "acme", "time": "2026-11-23T12:00:00Z", "data": {}}),
    );
    events.insert(
        7,
        json!({"specversion": "1.0", "id": "no-value", "source": "s", "type": "api.usage",
                            "subject": "acme", "time": "2026-11-23T12:00:00Z", "data": {}}),
    );
    events.insert(
        9,
        api_event("other-tenant", "globex", "2026-11-23T12:00:00Z", 1),
    );
    events.insert(11, json!("not an object"));
    let reply = h
        .post(
            "/v1/events",
            ACME_KEY,
            &Value::Array(events.clone()).to_string(),
        )
        .await;
    reply.expect(202);
    assert_documented("POST", "/v1/events", 202, &reply.json);
    assert_eq!(reply.json["accepted"], 23);
    assert_eq!(reply.json["rejected"], 5);
    let results = reply.json["results"].as_array().unwrap();
    assert_eq!(results.len(), 28);
    let rejected: Vec<(u64, &str)> = results
        .iter()
        .filter(|r| r["status"] == "rejected")
        .map(|r| (r["index"].as_u64().unwrap(), r["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        rejected,
        [
            (3, "time_too_old"),
            (5, "no_meter_for_type"),
            (7, "missing_value"),
            (9, "subject_not_allowed"),
            (11, "not_an_object"),
        ]
    );
    assert!(
        results
            .iter()
            .all(|r| r["status"] == "accepted" || r["reason"].is_string())
    );
    let expected: Vec<String> = events
        .iter()
        .filter(|e| e["id"].as_str().is_some_and(|id| id.starts_with("ok-")))
        .map(canonical)
        .collect();
    assert_eq!(sorted(h.drain_queue().await), sorted(expected));
}

#[tokio::test]
async fn admins_submit_for_any_tenant_unless_they_name_one() {
    let h = harness_with_queue("events-admin").await;
    let events = json!([
        api_event("a", "acme", "2026-11-23T12:00:00Z", 1),
        api_event("g", "globex", "2026-11-23T12:00:00Z", 1)
    ]);
    let reply = h.post("/v1/events", ADMIN_KEY, &events.to_string()).await;
    reply.expect(202);
    assert_eq!(reply.json["accepted"], 2);
    assert_eq!(h.drain_queue().await.len(), 2);
    let named = h
        .post("/v1/events?tenant=acme", ADMIN_KEY, &events.to_string())
        .await;
    named.expect(202);
    assert_eq!(named.json["results"][1]["code"], "subject_not_allowed");
    assert_eq!(h.drain_queue().await.len(), 1);
}

#[tokio::test]
async fn malformed_requests_are_refused_whole_and_nothing_is_queued() {
    let h = harness_with_queue("events-bad").await;
    let too_many = Value::Array(
        (0..501)
            .map(|i| api_event(&format!("e{i}"), "acme", "2026-11-23T12:00:00Z", 1))
            .collect(),
    );
    for (body, status, code) in [
        ("{not json".to_owned(), 400, "bad_json"),
        ("".to_owned(), 400, "bad_json"),
        ("42".to_owned(), 400, "bad_json"),
        ("[]".to_owned(), 400, "no_events"),
        (too_many.to_string(), 400, "too_many_events"),
        (
            format!("[{}]", " ".repeat(1024 * 1024)),
            413,
            "payload_too_large",
        ),
    ] {
        let reply = h.post("/v1/events", ACME_KEY, &body).await;
        reply.expect_error(status, code);
        assert_documented("POST", "/v1/events", status, &reply.json);
    }
    h.post("/v1/events?source=x", ACME_KEY, "{}")
        .await
        .expect_error(400, "unknown_query_parameter");
    assert_eq!(h.queue_depth().await, 0);
}

#[tokio::test]
async fn a_tenant_key_naming_another_tenant_is_not_found() {
    let h = harness_with_queue("events-foreign").await;
    let event = api_event("e", "globex", "2026-11-23T12:00:00Z", 1);
    h.post("/v1/events?tenant=globex", ACME_KEY, &event.to_string())
        .await
        .expect_error(404, "not_found");
    assert_eq!(h.queue_depth().await, 0);
}

#[tokio::test]
async fn when_the_queue_takes_nothing_the_request_fails_with_503() {
    let h = harness_with_broken_queue("events-no-queue").await;
    let events = json!([
        api_event("a", "acme", "2026-11-23T12:00:00Z", 1),
        api_event("old", "acme", "2026-01-01T00:00:00Z", 1)
    ]);
    let reply = h.post("/v1/events", ACME_KEY, &events.to_string()).await;
    reply.expect_error(503, "queue_unavailable");
    assert_documented("POST", "/v1/events", 503, &reply.json);
}

#[tokio::test]
async fn only_invalid_events_need_no_queue_and_are_all_reported() {
    let h = harness_with_broken_queue("events-all-invalid").await;
    let event = api_event("old", "acme", "2026-01-01T00:00:00Z", 1);
    let reply = h.post("/v1/events", ACME_KEY, &event.to_string()).await;
    reply.expect(202);
    assert_eq!(reply.json["rejected"], 1);
    assert_eq!(reply.json["results"][0]["code"], "time_too_old");
}

// Per-entry failures inside a batch (`Failed` entries of a SendMessageBatch reply) cannot
// be provoked on moto, which fails only whole calls for the bodies this API sends; their
// mapping to per-message outcomes is unit-tested in `src/sqs.rs`.

#[tokio::test]
async fn events_spread_over_several_sqs_batches_all_arrive_once() {
    let h = harness_with_queue("events-many").await;
    let events: Vec<Value> = (0..120)
        .map(|i| api_event(&format!("bulk-{i}"), "acme", "2026-11-23T12:00:00Z", i))
        .collect();
    let reply = h
        .post(
            "/v1/events",
            ACME_KEY,
            &Value::Array(events.clone()).to_string(),
        )
        .await;
    reply.expect(202);
    assert_eq!(reply.json["accepted"], 120);
    let expected: Vec<String> = events.iter().map(canonical).collect();
    assert_eq!(sorted(h.drain_queue().await), sorted(expected));
}

#[tokio::test]
async fn a_submission_travels_as_one_cloudevents_batch_message() {
    let h = harness_with_queue("events-packed").await;
    let events: Vec<Value> = (0..25)
        .map(|i| api_event(&format!("p-{i}"), "acme", "2026-11-23T12:29:00+01:00", 1))
        .collect();
    let reply = h
        .post("/v1/events", ACME_KEY, &Value::Array(events).to_string())
        .await;
    reply.expect(202);
    let messages = h.drain_messages().await;
    assert_eq!(messages.len(), 1, "25 events, one message");
    let elements: Vec<Value> = serde_json::from_str(&messages[0]).unwrap();
    assert_eq!(elements.len(), 25);
}
