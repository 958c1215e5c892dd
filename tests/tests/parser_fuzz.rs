//! Every parser tollgate runs on input it does not control, under fuzzed input: queue
//! messages (CloudEvents, CloudEvents batches, edge batches), single usage events as the
//! API takes them, the meter catalog, plan and budget configurations, the usage API's
//! request bodies and query strings, the edge filter's plugin configuration and its
//! snapshot, SQS's `SendMessageBatch` answers, Stripe's error and meter-event answers,
//! webhook signature headers and window / alert ids.
//!
//! cargo-fuzz needs a nightly toolchain, which this project's machines cannot fetch, so
//! this is a deterministic, structure-aware fuzzer on stable: each target starts from real
//! valid inputs (the samples in `events/samples`, documented shapes), and each input is
//! one of them mutated — bytes flipped, inserted, deleted, seeds spliced, JSON values
//! replaced by other types, huge or negative numbers, long strings, deep nesting,
//! duplicate keys, fields dropped or added — or plain random bytes. Every input goes
//! through the real parser inside `catch_unwind`: a panic fails the target with the
//! input and the seed that reproduce it, and a refusal must say why (a non-empty reason).
//!
//! Inputs per target: `$TOLLGATE_FUZZ_INPUTS` (`cargo xtask soak` sets 1,000,000), else a
//! size that keeps `cargo xtask test` quick. Each target prints one `tollgate-report` line.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use chrono::{DateTime, Utc};
use lambda_http::Body;
use serde_json::{Value, json};
use tollgate_core::alert::AlertId;
use tollgate_core::budget::BudgetConfig;
use tollgate_core::event::UsageEvent;
use tollgate_core::message::parse_message;
use tollgate_core::meter::MeterCatalog;
use tollgate_core::plan::PlanConfig;
use tollgate_core::webhook::{WebhookSecret, sign, verify};
use tollgate_core::window::{EventTimePolicy, Granularity, Window};
use tollgate_devstack::report::{fuzz_inputs, report};
use tollgate_edge_filter::config::FilterConfig;
use tollgate_edge_filter::snapshot::SnapshotView;
use tollgate_edge_filter::sqs::parse_send_message_batch_response;
use tollgate_usage_api::handlers::{billing, keys, tenants, usage, webhooks};
use tollgate_usage_api::http::{Query, json_body};

/// Inputs per target under `cargo xtask test`.
const DEFAULT_INPUTS: u64 = 3_000;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// Values that break naive parsers: wrong types, extremes, odd text.
fn odd_value(rng: &mut Rng) -> Value {
    match rng.below(16) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(-1),
        3 => json!(u64::MAX),
        4 => json!(i64::MIN),
        5 => json!(1e308),
        6 => json!(0.1),
        7 => json!(""),
        8 => json!("-0.000000000000000000000000000001"),
        9 => json!("79228162514264337593543950336"),
        10 => json!("9".repeat(rng.below(400) + 1)),
        11 => json!("\u{0}\u{202e}é漢\u{1F600}"),
        12 => json!("x".repeat(rng.below(70_000))),
        13 => json!([]),
        14 => json!({}),
        _ => json!("2026-02-30T25:61:61Z"),
    }
}

/// `value` with one random node changed.
fn mutate_json(rng: &mut Rng, value: &mut Value, depth: usize) {
    let descend = depth < 12 && !rng.chance(3);
    match value {
        Value::Object(map) if !map.is_empty() => {
            let key = map.keys().nth(rng.below(map.len())).cloned().unwrap();
            match rng.below(6) {
                0 => {
                    map.remove(&key);
                }
                1 => {
                    map.insert(format!("{key}_extra"), odd_value(rng));
                }
                2 => {
                    let inner = map.remove(&key).unwrap();
                    map.insert(key.to_uppercase(), inner);
                }
                _ if descend => mutate_json(rng, map.get_mut(&key).unwrap(), depth + 1),
                _ => {
                    map.insert(key, odd_value(rng));
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let i = rng.below(items.len());
            match rng.below(5) {
                0 => {
                    items.remove(i);
                }
                1 => {
                    let copy = items[i].clone();
                    for _ in 0..rng.below(600) + 1 {
                        items.push(copy.clone());
                    }
                }
                _ if descend => mutate_json(rng, &mut items[i], depth + 1),
                _ => items[i] = odd_value(rng),
            }
        }
        _ => {
            *value = if rng.chance(8) {
                // Deep nesting around the old value.
                let mut nested = value.take();
                for _ in 0..rng.below(200) + 1 {
                    nested = json!([nested]);
                }
                nested
            } else {
                odd_value(rng)
            };
        }
    }
}

/// One fuzzed input from the seeds.
fn fuzzed(rng: &mut Rng, seeds: &[Vec<u8>], parsed: &[Option<Value>]) -> Vec<u8> {
    let pick = rng.below(seeds.len());
    match rng.below(10) {
        // Structure-aware: a JSON seed with one to three nodes changed, sometimes with a
        // duplicated key written into the text.
        0..=4 if parsed[pick].is_some() => {
            let mut value = parsed[pick].clone().unwrap();
            for _ in 0..=rng.below(3) {
                mutate_json(rng, &mut value, 0);
            }
            let mut text = value.to_string().into_bytes();
            if rng.chance(6) && text.first() == Some(&b'{') {
                let duplicate = br#""id":"dup","id":7,"#;
                text.splice(1..1, duplicate.iter().copied());
            }
            text
        }
        // Byte-level: flips, inserts, deletes, truncation.
        0..=7 => {
            let mut bytes = seeds[pick].clone();
            for _ in 0..=rng.below(8) {
                if bytes.is_empty() {
                    bytes.push(rng.next() as u8);
                    continue;
                }
                let at = rng.below(bytes.len());
                match rng.below(5) {
                    0 => bytes[at] ^= 1 << rng.below(8),
                    1 => bytes.insert(at, b"{}[]\",:\\0-e.9 \x00\xff"[rng.below(16)]),
                    2 => {
                        bytes.remove(at);
                    }
                    3 => bytes.truncate(at),
                    _ => bytes[at] = rng.next() as u8,
                }
            }
            bytes
        }
        // Splice: the head of one seed and the tail of another.
        8 => {
            let other = &seeds[rng.below(seeds.len())];
            let head = &seeds[pick][..rng.below(seeds[pick].len() + 1)];
            let tail = &other[rng.below(other.len() + 1)..];
            [head, tail].concat()
        }
        // Plain random bytes.
        _ => (0..rng.below(256)).map(|_| rng.next() as u8).collect(),
    }
}

/// Runs `parse` on fuzzed inputs grown from `seeds`; `Ok` is an accepted input, `Err` a
/// refusal and its reason.
fn fuzz(target: &str, seeds: Vec<Vec<u8>>, parse: impl Fn(&[u8]) -> Result<(), String>) {
    assert!(!seeds.is_empty(), "{target}: no seeds");
    let parsed: Vec<Option<Value>> = seeds
        .iter()
        .map(|seed| serde_json::from_slice(seed).ok())
        .collect();
    // The seeds themselves must parse: otherwise the fuzzer only explores refusals.
    for (i, seed) in seeds.iter().enumerate() {
        if let Err(reason) = parse(seed) {
            panic!(
                "{target}: seed {i} is refused ({reason}): {}",
                String::from_utf8_lossy(seed)
            );
        }
    }
    let inputs = fuzz_inputs(DEFAULT_INPUTS);
    let seed = 0x5EED_0000_u64
        ^ target
            .bytes()
            .fold(0_u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let mut rng = Rng(seed | 1);
    let (mut accepted, mut rejected) = (0_u64, 0_u64);
    for n in 0..inputs {
        let input = fuzzed(&mut rng, &seeds, &parsed);
        match catch_unwind(AssertUnwindSafe(|| parse(&input))) {
            Ok(Ok(())) => accepted += 1,
            Ok(Err(reason)) => {
                assert!(
                    !reason.trim().is_empty(),
                    "{target}: input {n} refused without a reason: {:?}",
                    String::from_utf8_lossy(&input)
                );
                rejected += 1;
            }
            Err(_) => panic!(
                "{target}: input {n} (generator seed {seed:#x}) panicked: {:?}",
                String::from_utf8_lossy(&input)
            ),
        }
    }
    report(&json!({
        "kind": "fuzz", "target": target, "inputs": inputs,
        "accepted": accepted, "rejected": rejected, "panics": 0,
    }));
    assert_eq!(accepted + rejected, inputs);
}

fn repo_file(path: &str) -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The file, and each element when it is a JSON array.
fn seeds_from(path: &str) -> Vec<Vec<u8>> {
    let bytes = repo_file(path);
    let mut seeds = vec![bytes.clone()];
    if let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(&bytes) {
        seeds.extend(items.iter().map(|item| item.to_string().into_bytes()));
    }
    seeds
}

fn text_seeds(texts: &[&str]) -> Vec<Vec<u8>> {
    texts.iter().map(|text| text.as_bytes().to_vec()).collect()
}

fn now() -> DateTime<Utc> {
    "2026-10-14T10:05:00Z".parse().unwrap()
}

fn catalog() -> MeterCatalog {
    MeterCatalog::from_json(std::str::from_utf8(&repo_file("events/samples/meters.json")).unwrap())
        .unwrap()
}

fn policy() -> EventTimePolicy {
    EventTimePolicy::default()
}

#[test]
fn queue_messages() {
    let catalog = catalog();
    let mut seeds = seeds_from("events/samples/usage-event.json");
    seeds.extend(
        seeds_from("events/samples/usage-event-batch.json")
            .into_iter()
            .take(1),
    );
    seeds.extend(seeds_from("events/samples/edge-batch.json"));
    fuzz("queue-message", seeds, |input| {
        // SQS bodies are text: a byte string that is not UTF-8 never reaches ingest.
        let body = String::from_utf8_lossy(input);
        let parsed = parse_message(&body, &catalog, &policy(), now()).map_err(|e| e.to_string())?;
        for (_, error) in &parsed.rejected {
            assert!(
                !error.to_string().is_empty(),
                "an element refused without a reason"
            );
        }
        Ok(())
    });
}

#[test]
fn usage_events_as_the_api_takes_them() {
    let catalog = catalog();
    let mut seeds = seeds_from("events/samples/usage-event.json");
    seeds.extend(
        seeds_from("events/samples/usage-event-batch.json")
            .into_iter()
            .skip(1),
    );
    fuzz("usage-event", seeds, |input| {
        let event = UsageEvent::parse(input, &policy(), now()).map_err(|e| e.to_string())?;
        catalog.measure(&event).map_err(|e| e.to_string())?;
        // What the API queues must parse back to the same event.
        let again = UsageEvent::from_json(&event.to_json(), &policy(), now())
            .map_err(|e| format!("round trip: {e}"))?;
        assert_eq!(
            again.to_json(),
            event.to_json(),
            "round trip changed the event"
        );
        Ok(())
    });
}

#[test]
fn meter_catalogs() {
    let seeds = vec![
        repo_file("infra/config/meters.json"),
        repo_file("events/samples/meters.json"),
    ];
    fuzz("meter-catalog", seeds, |input| {
        let text = std::str::from_utf8(input).map_err(|e| e.to_string())?;
        MeterCatalog::from_json(text)
            .map(drop)
            .map_err(|e| e.to_string())
    });
}

#[test]
fn plan_configurations() {
    let seeds: Vec<Vec<u8>> = seeds_from("events/samples/plans.json").split_off(1);
    fuzz("plan-config", seeds, |input| {
        let config: PlanConfig = serde_json::from_slice(input).map_err(|e| e.to_string())?;
        config.compile().map(drop).map_err(|e| e.to_string())
    });
}

#[test]
fn budget_configurations() {
    let seeds = text_seeds(&[
        r#"{"monthlyAmount":"500","currency":"USD","thresholds":[50,80,100],"severities":{"warningAt":80,"criticalAt":95},"hardLimit":false}"#,
        r#"{"monthlyAmount":"12.34","currency":"EUR","hardLimit":true}"#,
    ]);
    fuzz("budget-config", seeds, |input| {
        let config: BudgetConfig = serde_json::from_slice(input).map_err(|e| e.to_string())?;
        config.compile().map(drop).map_err(|e| e.to_string())
    });
}

/// A usage API request carrying `body`, as the Function URL hands it over.
fn request_with_body(body: &[u8]) -> lambda_http::Request {
    lambda_http::http::Request::builder()
        .method("POST")
        .uri("/v1/estimate")
        .body(Body::from(body.to_vec()))
        .unwrap()
}

#[test]
fn api_request_bodies() {
    // Each seed is tagged by its route's body type in a wrapper the closure unpacks, so
    // one target covers every body (mutations may also damage the tag: then it is
    // refused like any body that is not what the route takes).
    let bodies = [
        (
            "estimate",
            r#"{"usage":{"api_requests":"1200","egress_gb":3.5},"month":"2026-10"}"#,
        ),
        (
            "tenant",
            r#"{"tenant":"acme","displayName":"Acme","plan":"starter","status":"active","stripeCustomerId":"cus_1"}"#,
        ),
        (
            "tenant-update",
            r#"{"tenant":"acme","displayName":"Acme","plan":"pro","status":"suspended"}"#,
        ),
        ("key", r#"{"label":"ci key"}"#),
        (
            "webhook",
            r#"{"url":"https://hooks.example.com/tollgate","secret":"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYq"}"#,
        ),
    ];
    let seeds: Vec<Vec<u8>> = bodies
        .iter()
        .map(|(kind, body)| {
            let body: Value = serde_json::from_str(body).unwrap();
            json!({ "kind": kind, "body": body })
                .to_string()
                .into_bytes()
        })
        .collect();
    fuzz("api-request-body", seeds, |input| {
        let wrapper: Value = serde_json::from_slice(input).map_err(|e| e.to_string())?;
        let kind = wrapper.get("kind").and_then(Value::as_str).unwrap_or("");
        // The body as the route receives it: whatever bytes the wrapper holds.
        let body = wrapper
            .get("body")
            .map(Value::to_string)
            .unwrap_or_default();
        let request = request_with_body(body.as_bytes());
        let parsed = match kind {
            "estimate" => json_body::<billing::EstimateRequest>(&request).map(drop),
            "tenant" => json_body::<tenants::NewTenant>(&request).map(drop),
            "tenant-update" => json_body::<tenants::TenantUpdate>(&request).map(drop),
            "key" => json_body::<keys::NewKey>(&request).map(drop),
            "webhook" => json_body::<webhooks::WebhookRequest>(&request).map(drop),
            other => return Err(format!("no route takes a {other:?} body")),
        };
        parsed.map_err(|e| e.to_string())
    });
}

#[test]
fn api_query_strings() {
    let seeds = text_seeds(&[
        "granularity=hour&from=2026-10-14T00:00:00Z&to=2026-10-14T10:00:00Z&meter=api_requests",
        "granularity=day&from=2026-10-01T00:00:00Z",
        "tenant=acme&granularity=month",
        "from=2026-10-14T09:00:00%2B02:00&meter=egress_gb",
    ]);
    let allowed = ["tenant", "granularity", "from", "to", "meter"];
    fuzz("api-query-string", seeds, |input| {
        let query = String::from_utf8_lossy(input);
        // A target the HTTP layer would refuse never reaches the API.
        let request = lambda_http::http::Request::builder()
            .uri(format!("/v1/usage/history?{query}"))
            .body(Body::Empty)
            .map_err(|e| format!("not an HTTP request target: {e}"))?;
        let query = Query::of(&request, &allowed).map_err(|e| e.to_string())?;
        usage::range(&query, now())
            .map(drop)
            .map_err(|e| e.to_string())
    });
}

#[test]
fn filter_plugin_configurations() {
    let seeds = text_seeds(&[
        r#"{"gatewayId":"gw-fuzz","identity":{"source":"apiKey","header":"x-api-key"},
          "snapshot":{"cluster":"usage_api","path":"/v1/edge/snapshot","intervalSeconds":1},
          "sqs":{"cluster":"sqs","queueUrl":"http://127.0.0.1:9/0/q"},"flushIntervalSeconds":1,
          "maxBufferRows":500,"stale":{"policy":"failClosed","maxAgeSeconds":30},
          "routeGroups":[{"prefix":"/v1/items","group":"items"},{"prefix":"/v1","group":"v1"}]}"#,
        r#"{"gatewayId":"gw-a","identity":{"source":"header","header":"x-tenant-id"},
          "snapshot":{"cluster":"usage_api","path":"/v1/edge/snapshot"},
          "sqs":{"cluster":"sqs","queueUrl":"https://sqs.eu-west-1.amazonaws.com/123456789012/usage"}}"#,
    ]);
    fuzz("filter-plugin-config", seeds, |input| {
        let text = std::str::from_utf8(input).map_err(|e| e.to_string())?;
        FilterConfig::from_json(text)
            .map(drop)
            .map_err(|e| e.to_string())
    });
}

#[test]
fn edge_snapshots() {
    fuzz(
        "edge-snapshot",
        seeds_from("events/samples/edge-snapshot.json"),
        |input| {
            SnapshotView::parse(input)
                .map(drop)
                .map_err(|e| e.to_string())
        },
    );
}

#[test]
fn sqs_send_message_batch_answers() {
    let seeds = text_seeds(&[
        r#"{"Successful":[{"Id":"0","MessageId":"m-1","MD5OfMessageBody":"abc"}],"Failed":[]}"#,
        r#"{"Successful":[],"Failed":[{"Id":"0","SenderFault":false,"Code":"InternalError","Message":"try again"},{"Id":"1","SenderFault":true,"Code":"InvalidParameterValue"}]}"#,
        r#"{"__type":"com.amazonaws.sqs#ServiceUnavailable","message":"Service Unavailable"}"#,
    ]);
    fuzz("sqs-send-message-batch-answer", seeds, |input| {
        let code = [200, 200, 200, 400, 403, 500, 503][input.len() % 7];
        // Every answer has an outcome (sent, retry, give up): nothing to refuse.
        let _ = parse_send_message_batch_response(code, input);
        Ok(())
    });
}

#[test]
fn stripe_answers() {
    use stripe::StripeError;
    let seeds = text_seeds(&[
        r#"{"error":{"type":"invalid_request_error","code":"resource_missing","message":"No such customer: 'cus_x'","param":"payload[stripe_customer_id]","doc_url":"https://stripe.com/docs/error-codes/resource-missing","request_log_url":"https://dashboard.stripe.com/test/logs/req_1"}}"#,
        r#"{"error":{"type":"rate_limit_error","message":"Too many requests"}}"#,
        r#"{"error":{"type":"api_error","message":"An error occurred with our connection to Stripe."}}"#,
        r#"{"error":{"type":"invalid_request_error","message":"An event already exists with identifier tg-acme-api_requests-2026101409.","param":"identifier"}}"#,
        r#"{"object":"billing.meter_event","created":1760436000,"event_name":"api_requests","identifier":"tg-acme-api_requests-2026101409","livemode":false,"payload":{"stripe_customer_id":"cus_1","value":"25"},"timestamp":1760432400}"#,
    ]);
    fuzz("stripe-answer", seeds, |input| {
        let code = [400, 402, 404, 409, 429, 500, 503][input.len() % 7];
        let text = std::str::from_utf8(input).map_err(|e| e.to_string())?;
        // As async-stripe reads an answer: an error object for a failed status (else the
        // body is a garbled answer), the meter event for a success.
        let error = match miniserde::json::from_str::<stripe_shared::Error>(text) {
            Ok(e) => StripeError::Stripe(e.error, code),
            Err(_) => match miniserde::json::from_str::<stripe_billing::BillingMeterEvent>(text) {
                Ok(_) => return Ok(()),
                // A garbled answer: the client reports it, tollgate retries it.
                Err(_) => {
                    let failure = tollgate_billing_sync::stripe::failure(
                        StripeError::JSONDeserialize("not a Stripe answer".to_owned()),
                    );
                    return Err(format!("{failure:?}"));
                }
            },
        };
        // tollgate's reading of the failure must always land somewhere, with a message.
        let failure = tollgate_billing_sync::stripe::failure(error);
        assert!(!format!("{failure:?}").is_empty());
        Ok(())
    });
}

#[test]
fn webhook_signature_headers() {
    let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYq").unwrap();
    let body = br#"{"type":"budget.threshold_crossed"}"#;
    let header = sign(&secret, now(), body);
    let rotated = format!("{header},v1={}", "0".repeat(64));
    let seeds = vec![header.into_bytes(), rotated.into_bytes()];
    fuzz("webhook-signature-header", seeds, |input| {
        let header = String::from_utf8_lossy(input);
        verify(
            &secret,
            &header,
            body,
            now(),
            std::time::Duration::from_secs(300),
        )
        .map_err(|e| e.to_string())
    });
}

#[test]
fn window_and_alert_ids() {
    let seeds = text_seeds(&[
        "2026-10",
        "2026-10-14",
        "2026-10-14T09",
        "2026-10.threshold-80",
        "2026-10.forecast",
    ]);
    fuzz("window-and-alert-id", seeds, |input| {
        let text = String::from_utf8_lossy(input);
        if text.contains('.') {
            return AlertId::parse(&text).map(drop).map_err(|e| e.to_string());
        }
        let mut reasons = Vec::new();
        for granularity in [Granularity::Hour, Granularity::Day, Granularity::Month] {
            match Window::parse_key(granularity, &text) {
                // A key parses back to itself.
                Ok(window) => {
                    assert_eq!(window.key(), text, "{granularity:?} key round trip");
                    return Ok(());
                }
                Err(e) => reasons.push(e.to_string()),
            }
        }
        Err(reasons.join("; "))
    });
}
