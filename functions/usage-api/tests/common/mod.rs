//! Shared set-up for the usage API's handler tests: the real adapters on a fresh
//! DynamoDB Local table and a fresh queue on the local SQS (moto), sample plans, three
//! tenants, keys for each, requests built in-process, and a small OpenAPI check.

// Test helpers: panicking on broken set-up is the point, and each test binary uses a
// different subset of them.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod schema;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;

use aws_sdk_sqs::types::QueueAttributeName;
use chrono::{DateTime, Utc};
use lambda_http::http::{HeaderMap, StatusCode};
use lambda_http::{Body, Request};
use rust_decimal::Decimal;
use serde_json::Value;
use tollgate_core::aggregate::AggregateState;
use tollgate_core::ids::{MeterName, TenantId};
use tollgate_core::meter::MeterCatalog;
use tollgate_core::plan::Plan;
use tollgate_core::tenant::{ApiKeyHash, ApiKeyRecord, ApiKeyRole, TenantProfile, TenantStatus};
use tollgate_core::usage::{Dimensions, UsageBatch, UsageKey, UsageRow};
use tollgate_core::window::{Granularity, Window};
use tollgate_store::DynamoDbStore;
use tollgate_usage_api::sqs::SqsEventQueue;
use tollgate_usage_api::{App, Clock};

pub const METERS: &str = include_str!("../../../../events/samples/meters.json");
pub const PLANS: &str = include_str!("../../../../events/samples/plans.json");

/// The instant every test runs at.
pub const NOW: &str = "2026-11-23T12:30:00Z";

pub const ADMIN_KEY: &str = "tg_test_admin";
pub const ACME_KEY: &str = "tg_test_acme";
pub const GLOBEX_KEY: &str = "tg_test_globex";
pub const PODCO_KEY: &str = "tg_test_podco";
pub const REVOKED_KEY: &str = "tg_test_revoked";

static NAMES: AtomicU32 = AtomicU32::new(0);

fn unique(name: &str) -> String {
    format!(
        "{name}-{}-{}",
        std::process::id(),
        NAMES.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

pub fn now() -> DateTime<Utc> {
    at(NOW)
}

/// The API over real adapters, plus direct handles on its table and queue.
pub struct Harness {
    pub app: App<DynamoDbStore, SqsEventQueue>,
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
}

/// A reply, its body parsed as JSON where it is JSON.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Reply {
    /// The `code` of an error reply.
    pub fn code(&self) -> &str {
        self.json["code"].as_str().unwrap_or_default()
    }

    /// Asserts the status, printing the body when it differs.
    pub fn expect(&self, status: u16) -> &Self {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        self
    }

    /// Asserts an error status and code.
    pub fn expect_error(&self, status: u16, code: &str) -> &Self {
        self.expect(status);
        assert_eq!(self.code(), code, "{}", self.text);
        assert!(self.json["message"].is_string(), "{}", self.text);
        self
    }
}

/// A harness with the sample plans, tenants `acme` (starter), `globex` (starter) and
/// `podco` (pod-hourly), and a key for each plus an admin key and a revoked acme key.
///
/// Its queue is a real SQS adapter aimed at a closed loopback port: routes that must not
/// send anything fail loudly if they do, and no SQS emulator is started for them. Use
/// [`harness_with_queue`] where events are sent.
pub async fn harness(name: &str) -> Harness {
    let (sqs, queue_url) = unused_queue();
    build(name, sqs, queue_url).await
}

/// A harness whose queue is a fresh queue on the local SQS (moto).
pub async fn harness_with_queue(name: &str) -> Harness {
    let (sqs, queue_url) = fresh_queue(name).await;
    build(name, sqs, queue_url).await
}

/// A harness on the local SQS whose queue URL names no queue: every send fails.
pub async fn harness_with_broken_queue(name: &str) -> Harness {
    let (sqs, _) = fresh_queue(name).await;
    let queue_url = format!("{}/000000000000/no-such-queue", sqs_endpoint());
    build(name, sqs, queue_url).await
}

/// A harness like [`harness`] whose meter catalog is `meters` (JSON) instead of the
/// sample meters.
pub async fn harness_with_meters(name: &str, meters: &str) -> Harness {
    let (sqs, queue_url) = unused_queue();
    build_with(name, sqs, queue_url, meters).await
}

/// DynamoDB calls by operation, as the SDK sends them (every attempt and page), counted
/// by an interceptor on the client.
#[derive(Debug, Default, Clone)]
pub struct DynamoDbCalls(Arc<Mutex<BTreeMap<String, u64>>>);

impl DynamoDbCalls {
    /// The calls counted since the last take.
    pub fn take(&self) -> BTreeMap<String, u64> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl Intercept for DynamoDbCalls {
    fn name(&self) -> &'static str {
        "DynamoDbCalls"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let target = context
            .request()
            .headers()
            .get("x-amz-target")
            .unwrap_or_default();
        let operation = target.rsplit('.').next().unwrap_or_default().to_owned();
        *self.0.lock().unwrap().entry(operation).or_default() += 1;
        Ok(())
    }
}

/// A harness like [`harness`] whose API keeps an edge snapshot for `snapshot_max_age`,
/// and the count of the DynamoDB calls its store makes (set-up calls already taken).
pub async fn counted_harness(name: &str, snapshot_max_age: Duration) -> (Harness, DynamoDbCalls) {
    let calls = DynamoDbCalls::default();
    let endpoint = tollgate_devstack::dynamodb_endpoint_for_tests();
    let local = tollgate_store::local_client(&endpoint);
    let counted = aws_sdk_dynamodb::Client::from_conf(
        local
            .config()
            .to_builder()
            .interceptor(calls.clone())
            .build(),
    );
    let store = DynamoDbStore::new(counted, unique(name));
    store.ensure_table().await.expect("create table");
    let mut h = build_on(store, unused_queue(), METERS).await;
    h.app = h.app.with_snapshot_max_age(snapshot_max_age);
    calls.take();
    (h, calls)
}

/// The real SQS adapter aimed at a closed loopback port: sending anything fails loudly.
fn unused_queue() -> (aws_sdk_sqs::Client, String) {
    (
        tollgate_local::local_sqs_client("http://127.0.0.1:9"),
        "http://127.0.0.1:9/000000000000/unused".to_owned(),
    )
}

async fn build(name: &str, sqs: aws_sdk_sqs::Client, queue_url: String) -> Harness {
    build_with(name, sqs, queue_url, METERS).await
}

async fn build_with(
    name: &str,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    meters: &str,
) -> Harness {
    build_on(fresh_store(name).await, (sqs, queue_url), meters).await
}

/// Seeds `store` and builds the API over it, on the fixed clock.
async fn build_on(
    store: DynamoDbStore,
    (sqs, queue_url): (aws_sdk_sqs::Client, String),
    meters: &str,
) -> Harness {
    seed(&store).await;
    let catalog = MeterCatalog::from_json(meters).unwrap();
    Harness {
        app: App::new(
            store,
            SqsEventQueue::new(sqs.clone(), queue_url.clone()),
            catalog,
        )
        .with_clock(Clock::Fixed(now())),
        sqs,
        queue_url,
    }
}

pub async fn fresh_store(name: &str) -> DynamoDbStore {
    let endpoint = tollgate_devstack::dynamodb_endpoint_for_tests();
    let store = DynamoDbStore::new(tollgate_store::local_client(&endpoint), unique(name));
    store.ensure_table().await.expect("create table");
    store
}

fn sqs_endpoint() -> String {
    tollgate_devstack::sqs_endpoint_for_tests()
}

pub async fn fresh_queue(name: &str) -> (aws_sdk_sqs::Client, String) {
    let sqs = tollgate_local::local_sqs_client(&sqs_endpoint());
    let created = sqs
        .create_queue()
        .queue_name(unique(name))
        .send()
        .await
        .expect("create queue");
    let url = created.queue_url().expect("queue url").to_owned();
    (sqs, url)
}

async fn seed(store: &DynamoDbStore) {
    let plans: Vec<Plan> = serde_json::from_str(PLANS).unwrap();
    for plan in &plans {
        store.create_plan_version(plan).await.unwrap();
    }
    for (tenant, plan) in [
        ("acme", "starter"),
        ("globex", "starter"),
        ("podco", "pod-hourly"),
    ] {
        store
            .create_tenant(&TenantProfile {
                tenant: tenant_id(tenant),
                display_name: format!("{tenant} inc."),
                plan: plan.parse().unwrap(),
                status: TenantStatus::Active,
                stripe_customer_id: None,
                created_at: at("2026-09-01T00:00:00Z"),
            })
            .await
            .unwrap();
    }
    for (secret, tenant) in [
        (ADMIN_KEY, None),
        (ACME_KEY, Some("acme")),
        (GLOBEX_KEY, Some("globex")),
        (PODCO_KEY, Some("podco")),
        (REVOKED_KEY, Some("acme")),
    ] {
        store
            .create_api_key(&ApiKeyRecord {
                hash: ApiKeyHash::of(secret),
                role: if tenant.is_some() {
                    ApiKeyRole::Tenant
                } else {
                    ApiKeyRole::Admin
                },
                tenant: tenant.map(tenant_id),
                label: "test".into(),
                created_at: at("2026-09-01T00:00:00Z"),
                revoked_at: None,
            })
            .await
            .unwrap();
    }
    store
        .revoke_api_key(&ApiKeyHash::of(REVOKED_KEY), at("2026-10-01T00:00:00Z"))
        .await
        .unwrap();
}

pub fn tenant_id(id: &str) -> TenantId {
    TenantId::new(id).unwrap()
}

/// An `api_requests` (sum) row of `tenant` in `hour`, optionally with a route dimension.
pub fn requests_row(tenant: &str, hour: &str, route: Option<&str>, n: i64) -> UsageRow {
    let mut dimensions = Dimensions::new();
    if let Some(route) = route {
        dimensions.insert("route", route).unwrap();
    }
    UsageRow {
        key: UsageKey {
            tenant: tenant_id(tenant),
            meter: MeterName::new("api_requests").unwrap(),
            window: Window::parse_key(Granularity::Hour, hour).unwrap(),
            dimensions,
        },
        state: AggregateState::Sum {
            sum: Decimal::from(n),
        },
    }
}

impl Harness {
    pub fn store(&self) -> &DynamoDbStore {
        self.app.store()
    }

    /// An API over the same table, queue, catalog and clock that builds every edge
    /// snapshot afresh.
    pub fn uncached_twin(&self) -> Harness {
        Harness {
            app: App::new(
                self.store().clone(),
                SqsEventQueue::new(self.sqs.clone(), self.queue_url.clone()),
                self.app.catalog().clone(),
            )
            .with_clock(Clock::Fixed(now())),
            sqs: self.sqs.clone(),
            queue_url: self.queue_url.clone(),
        }
    }

    /// Applies hourly rows as the ingest would.
    pub async fn apply(&self, rows: Vec<UsageRow>) {
        self.store()
            .apply_batch(&UsageBatch {
                batch_id: unique("batch"),
                rows,
            })
            .await
            .unwrap();
    }

    /// Sends a request built in-process, as lambda_http would hand it over.
    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        key: Option<&str>,
        body: Option<&str>,
    ) -> Reply {
        let request = request(method, uri, key, body.map(|b| Body::Text(b.to_owned())));
        self.send(request).await
    }

    pub async fn send(&self, request: Request) -> Reply {
        let response = self.app.handle(request).await;
        let status = response.status();
        let headers = response.headers().clone();
        let text = String::from_utf8(response.body().as_ref().to_vec()).unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            json,
        }
    }

    pub async fn get(&self, uri: &str, key: &str) -> Reply {
        self.call("GET", uri, Some(key), None).await
    }

    pub async fn post(&self, uri: &str, key: &str, body: &str) -> Reply {
        self.call("POST", uri, Some(key), Some(body)).await
    }

    /// Receives every message on the queue and returns the events they carry, unpacking
    /// CloudEvents batches (JSON arrays), in any order.
    pub async fn drain_queue(&self) -> Vec<String> {
        let mut events = Vec::new();
        for body in self.drain_messages().await {
            match serde_json::from_str::<serde_json::Value>(&body) {
                Ok(serde_json::Value::Array(elements)) => {
                    events.extend(elements.iter().map(ToString::to_string))
                }
                _ => events.push(body),
            }
        }
        events
    }

    /// Receives every message on the queue (long enough to drain it), bodies in any order.
    pub async fn drain_messages(&self) -> Vec<String> {
        let mut bodies = Vec::new();
        loop {
            let received = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .send()
                .await
                .unwrap();
            let messages = received.messages();
            if messages.is_empty() {
                return bodies;
            }
            let mut delete = self.sqs.delete_message_batch().queue_url(&self.queue_url);
            for (i, message) in messages.iter().enumerate() {
                bodies.push(message.body().unwrap_or_default().to_owned());
                delete = delete.entries(
                    aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                        .id(format!("d{i}"))
                        .receipt_handle(message.receipt_handle().unwrap())
                        .build()
                        .unwrap(),
                );
            }
            let deleted = delete.send().await.unwrap();
            assert!(deleted.failed().is_empty(), "{:?}", deleted.failed());
        }
    }

    /// The number of messages the queue holds.
    pub async fn queue_depth(&self) -> usize {
        let attributes = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .unwrap();
        attributes
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
            .map_or(0, |n| n.parse().unwrap())
    }
}

/// A request as lambda_http hands it to the handler: method, URI with query, headers and
/// body.
pub fn request(method: &str, uri: &str, key: Option<&str>, body: Option<Body>) -> Request {
    let mut builder = lambda_http::http::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "usage.example.com");
    if let Some(key) = key {
        builder = builder.header("authorization", format!("Bearer {key}"));
    }
    if body.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    builder.body(body.unwrap_or(Body::Empty)).unwrap()
}

/// A CloudEvent of `tenant` with `requests` API requests on `route`, at `time`.
pub fn api_event(id: &str, tenant: &str, time: &str, requests: i64) -> Value {
    serde_json::json!({
        "specversion": "1.0",
        "id": id,
        "source": "/test/gateway",
        "type": "api.usage",
        "subject": tenant,
        "time": time,
        "data": {"requests": requests, "route": "/v1/items"}
    })
}
