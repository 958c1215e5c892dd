//! The usage API's month views against DynamoDB Local, as a tenant dashboard calls them:
//! latency (p50, p99, max), requests per second, reply size and DynamoDB calls per request.
//!
//! Set-up, as in production: a catalog of 50 meters (every aggregation kind), a plan
//! pricing them, the tenant and its key created through the admin API, this month's usage
//! so far (several events per meter and hour, from the month's first hour up to now)
//! written by the real ingest handler from SQS batches, then the real rollup, so daily
//! and monthly rollups exist. The real API (`tollgate_usage_api::App`) is served over
//! HTTP/1.1 on a free loopback port and called with a keep-alive hyper client, one request
//! at a time. DynamoDB calls are counted by an SDK interceptor on the API's client (every
//! operation, every attempt, every page): those counts transfer to AWS; the timings do not.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use chrono::{DateTime, Duration as TimeDelta, SecondsFormat, Utc};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tollgate_core::meter::MeterCatalog;
use tollgate_core::tenant::{ApiKeyHash, ApiKeyRecord, ApiKeyRole};
use tollgate_core::window::{EventTimePolicy, Granularity, Window};
use tollgate_ingest::Ingest;
use tollgate_rollup::{Rollup, RollupRequest};
use tollgate_store::DynamoDbStore;
use tollgate_usage_api::App;
use tollgate_usage_api::sqs::SqsEventQueue;

use super::calls::Recorder;

const TENANT: &str = "bench-dashboard";
const PLAN: &str = "bench-fifty";
/// Event types, ten meters each: 50 meters.
const EVENT_TYPES: [&str; 5] = [
    "api.request",
    "storage.sample",
    "compute.sample",
    "queue.message",
    "auth.login",
];
/// The aggregation of the meter at each position within an event type.
const KINDS: [&str; 10] = [
    "count",
    "sum",
    "sum",
    "gauge_integral_hour",
    "gauge_integral_month",
    "percentiles",
    "unique_count",
    "max",
    "avg",
    "latest",
];
/// Events of each type in every hour (so every meter has a counter in every hour).
const EVENTS_PER_HOUR: i64 = 4;
/// CloudEvents per batch message and messages per invocation, as the usage API sends them.
const EVENTS_PER_MESSAGE: usize = 100;
const MESSAGES_PER_INVOCATION: usize = 10;
const WARM_UP: usize = 20;
const REQUESTS: usize = 300;
/// Each view's measured requests stop early after this long.
const TIME_LIMIT: Duration = Duration::from_secs(15);

type HttpClient = Client<HttpConnector, Full<Bytes>>;
type Api = App<DynamoDbStore, SqsEventQueue>;

fn meter_name(t: usize, j: usize) -> String {
    let family = EVENT_TYPES[t].split('.').next().unwrap_or("meter");
    format!("{family}_{j:02}_{}", KINDS[j])
}

/// The catalog: ten meters per event type, one of each kind in [`KINDS`].
fn catalog_json() -> Value {
    let mut meters = Vec::new();
    for (t, event_type) in EVENT_TYPES.iter().enumerate() {
        for (j, kind) in KINDS.iter().enumerate() {
            let mut meter = json!({
                "name": meter_name(t, j),
                "eventTypes": [event_type],
                "unit": "units",
            });
            let (aggregation, field) = match *kind {
                "count" => (json!({"kind": "count"}), None),
                "gauge_integral_hour" => (
                    json!({"kind": "gauge_integral", "sampleSeconds": 900, "per": "hour"}),
                    Some(format!("v{j}")),
                ),
                "gauge_integral_month" => (
                    json!({"kind": "gauge_integral", "sampleSeconds": 900, "per": "month"}),
                    Some(format!("v{j}")),
                ),
                "unique_count" => (json!({"kind": "unique_count"}), Some("user".to_owned())),
                other => (json!({"kind": other}), Some(format!("v{j}"))),
            };
            meter["aggregation"] = aggregation;
            if let Some(field) = field {
                meter["valueField"] = json!(field);
            }
            meters.push(meter);
        }
    }
    Value::Array(meters)
}

/// A plan pricing every meter that has a quantity (percentile sketches have none, so they
/// are shown but not priced), with the four price shapes in turn, allowances, quotas on
/// the count meters and rate limits.
fn plan_json() -> Value {
    let mut priced = Vec::new();
    let mut quotas = Vec::new();
    for t in 0..EVENT_TYPES.len() {
        for (j, kind) in KINDS.iter().enumerate() {
            let meter = meter_name(t, j);
            if *kind == "percentiles" {
                continue;
            }
            if *kind == "count" {
                quotas.push(json!({"meter": meter, "perDay": "1000000", "perMonth": "20000000"}));
            }
            let price = match (t * KINDS.len() + j) % 4 {
                0 => json!({"type": "perUnit", "unitPrice": "0.0001"}),
                1 => json!({"type": "perPackage", "packageSize": "1000", "packagePrice": "0.25"}),
                2 => json!({"type": "tiered", "mode": "graduated", "tiers": [
                    {"upTo": "10000", "unitPrice": "0"},
                    {"upTo": "1000000", "unitPrice": "0.00002", "flatFee": "1"},
                    {"upTo": null, "unitPrice": "0.00001"}]}),
                _ => json!({"type": "tiered", "mode": "volume", "tiers": [
                    {"upTo": "50000", "unitPrice": "0.00005"},
                    {"upTo": null, "unitPrice": "0.00003"}]}),
            };
            let included = if j % 3 == 0 { "1000" } else { "0" };
            priced.push(json!({"meter": meter, "included": included, "price": price}));
        }
    }
    json!({
        "name": PLAN, "effectiveFrom": "2026-01-01T00:00:00Z", "currency": "USD", "baseFee": "49",
        "meters": priced,
        "limits": {"rate": {"perSecond": 100, "perMinute": 3000}, "quotas": quotas}
    })
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The CloudEvents of one hour: [`EVENTS_PER_HOUR`] of each type, spread over the part
/// of the hour that has passed by `now`.
fn hour_events(hour: DateTime<Utc>, now: DateTime<Utc>, serial: &mut u64) -> Vec<String> {
    let span = (now - hour).num_seconds().clamp(0, 3600);
    let mut events = Vec::new();
    for event_type in EVENT_TYPES {
        for k in 0..EVENTS_PER_HOUR {
            *serial += 1;
            let n = *serial;
            let time = hour + TimeDelta::seconds(k * span / EVENTS_PER_HOUR);
            let mut data = serde_json::Map::new();
            for j in 1..KINDS.len() {
                data.insert(format!("v{j}"), json!((n * 7 + j as u64 * 13) % 500 + 1));
            }
            data.insert("user".into(), json!(format!("user-{}", n % 700)));
            let event = json!({"specversion": "1.0", "id": format!("bench-api-{n}"), "source": "bench",
                               "type": event_type, "subject": TENANT, "time": rfc3339(time),
                               "data": data});
            events.push(event.to_string());
        }
    }
    events
}

/// SQS invocations carrying `events` as CloudEvents batch messages.
fn invocations(events: &[String], serial: &mut u64) -> Vec<SqsEvent> {
    let messages: Vec<SqsMessage> = events
        .chunks(EVENTS_PER_MESSAGE)
        .map(|chunk| {
            *serial += 1;
            let mut message = SqsMessage::default();
            message.message_id = Some(format!("m-bench-api-{serial}"));
            message.body = Some(format!("[{}]", chunk.join(",")));
            message
        })
        .collect();
    messages
        .chunks(MESSAGES_PER_INVOCATION)
        .map(|chunk| {
            let mut event = SqsEvent::default();
            event.records = chunk.to_vec();
            event
        })
        .collect()
}

/// Serves the API over HTTP/1.1 on a free loopback port until the task is aborted
/// (which also ends the connections it accepted).
async fn serve(app: Arc<Api>) -> Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding a loopback port for the usage API")?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        while let Ok((socket, _)) = listener.accept().await {
            let app = app.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(function_url(&app, request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    Ok((addr, task))
}

/// One HTTP request handed to the API as a Function URL hands it to the Lambda.
async fn function_url(
    app: &Api,
    request: hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let reply = match to_lambda(request).await {
        Ok(request) => app.handle(request).await,
        Err(_) => {
            return plain(400, "unreadable request");
        }
    };
    let mut response = hyper::Response::builder().status(reply.status().as_u16());
    for (name, value) in reply.headers() {
        response = response.header(name.as_str(), value.as_bytes());
    }
    let bytes = match reply.into_body() {
        lambda_http::Body::Text(text) => text.into_bytes(),
        lambda_http::Body::Binary(bytes) => bytes,
        _ => Vec::new(),
    };
    response
        .body(Full::new(Bytes::from(bytes)))
        .unwrap_or_else(|_| plain(500, "unrepresentable reply"))
}

fn plain(status: u16, text: &'static str) -> hyper::Response<Full<Bytes>> {
    let mut response = hyper::Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    response
}

async fn to_lambda(request: hyper::Request<Incoming>) -> Result<lambda_http::Request> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    let mut lambda = lambda_http::http::Request::builder()
        .method(parts.method.as_str())
        .uri(format!("https://usage.bench.local{}", parts.uri));
    for (name, value) in &parts.headers {
        lambda = lambda.header(name.as_str(), value.as_bytes());
    }
    let body = if body.is_empty() {
        lambda_http::Body::Empty
    } else {
        lambda_http::Body::Binary(body.to_vec())
    };
    Ok(lambda.body(body)?)
}

/// Sends one request; returns the status and the body.
async fn call(
    client: &HttpClient,
    method: &str,
    url: &str,
    key: &str,
    body: Option<&Value>,
) -> Result<(u16, Bytes)> {
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {key}"));
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let body = body.map(Value::to_string).unwrap_or_default();
    let response = client
        .request(request.body(Full::new(Bytes::from(body)))?)
        .await
        .with_context(|| format!("{method} {url}"))?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, bytes))
}

/// A call that must succeed; returns its JSON reply.
async fn expect_ok(
    client: &HttpClient,
    method: &str,
    url: &str,
    key: &str,
    body: Option<&Value>,
) -> Result<Value> {
    let (status, bytes) = call(client, method, url, key, body).await?;
    if !(200..300).contains(&status) {
        bail!(
            "{method} {url} answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// One measured view.
struct View {
    name: &'static str,
    path: String,
    key: String,
}

struct Figures {
    requests: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    per_second: f64,
    bytes: usize,
    calls: BTreeMap<String, u64>,
}

/// The nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted.get(rank - 1).copied().unwrap_or_default()
}

async fn measure(
    client: &HttpClient,
    base: &str,
    view: &View,
    counter: &Recorder,
) -> Result<Figures> {
    let url = format!("{base}{}", view.path);
    let mut bytes = 0;
    for _ in 0..WARM_UP {
        let (status, body) = call(client, "GET", &url, &view.key, None).await?;
        ensure!(
            status == 200,
            "GET {} answered {status}: {}",
            view.path,
            String::from_utf8_lossy(&body)
        );
        bytes = body.len();
    }
    counter.take();
    let mut samples = Vec::with_capacity(REQUESTS);
    let started = Instant::now();
    while samples.len() < REQUESTS && started.elapsed() < TIME_LIMIT {
        let sent = Instant::now();
        let (status, body) = call(client, "GET", &url, &view.key, None).await?;
        samples.push(sent.elapsed());
        ensure!(status == 200, "GET {} answered {status}", view.path);
        bytes = body.len();
    }
    let elapsed = started.elapsed();
    let calls = counter.take().by_operation;
    samples.sort();
    Ok(Figures {
        requests: samples.len(),
        p50: percentile(&samples, 50),
        p99: percentile(&samples, 99),
        max: samples.last().copied().unwrap_or_default(),
        per_second: samples.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        bytes,
        calls,
    })
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Sets up the tenant and its month, serves the API and measures each view.
pub async fn run(endpoint: &str) -> Result<()> {
    let now = Utc::now();
    let catalog_text = catalog_json().to_string();
    let catalog = MeterCatalog::from_json(&catalog_text).context("the bench's meter catalog")?;
    ensure!(
        catalog.meters().count() == EVENT_TYPES.len() * KINDS.len(),
        "the catalog should hold 50 meters"
    );

    let counter = Recorder::default();
    let base_client = tollgate_store::local_client(endpoint);
    let counted = aws_sdk_dynamodb::Client::from_conf(
        base_client
            .config()
            .to_builder()
            .interceptor(counter.clone())
            .build(),
    );
    let store = DynamoDbStore::new(counted, format!("bench-api-{}", std::process::id()));
    store.ensure_table().await?;
    let admin_key = crate::util::new_api_key()?;
    store
        .create_api_key(&ApiKeyRecord {
            hash: ApiKeyHash::of(&admin_key),
            role: ApiKeyRole::Admin,
            tenant: None,
            label: "cargo xtask bench api".into(),
            created_at: now,
            revoked_at: None,
        })
        .await
        .context("storing the admin key")?;

    // Loopback only: SQS is not used by the routes measured, so the queue points at a
    // closed port and would fail loudly if anything were sent.
    let queue = SqsEventQueue::new(
        tollgate_local::local_sqs_client("http://127.0.0.1:9"),
        "http://127.0.0.1:9/000000000000/unused",
    );
    let app = Arc::new(App::new(store.clone(), queue, catalog.clone()));
    let (addr, server) = serve(app).await?;
    let bench = Bench {
        endpoint,
        store,
        counter,
        addr,
        admin_key,
        now,
    };
    let result = bench.run(catalog).await;
    server.abort();
    let _ = server.await;
    result
}

/// What the measurements share: the table, the API's address and the admin key.
struct Bench<'a> {
    endpoint: &'a str,
    store: DynamoDbStore,
    counter: Recorder,
    addr: SocketAddr,
    admin_key: String,
    now: DateTime<Utc>,
}

impl Bench<'_> {
    async fn run(&self, catalog: MeterCatalog) -> Result<()> {
        let Bench {
            endpoint,
            store,
            counter,
            addr,
            admin_key,
            now,
        } = self;
        let (addr, now) = (*addr, *now);
        let month = Window::containing(Granularity::Month, now);
        let today = Window::containing(Granularity::Day, now);
        let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
        let base = format!("http://{addr}");

        // The plan, tenant and key through the admin API.
        expect_ok(
            &client,
            "POST",
            &format!("{base}/v1/admin/plans"),
            admin_key,
            Some(&plan_json()),
        )
        .await?;
        let tenant = json!({"tenant": TENANT, "displayName": "Dashboard bench", "plan": PLAN});
        expect_ok(
            &client,
            "POST",
            &format!("{base}/v1/admin/tenants"),
            admin_key,
            Some(&tenant),
        )
        .await?;
        let created = expect_ok(
            &client,
            "POST",
            &format!("{base}/v1/admin/tenants/{TENANT}/keys"),
            admin_key,
            Some(&json!({"label": "bench"})),
        )
        .await?;
        let key = created["key"]
            .as_str()
            .with_context(|| format!("the key reply has no `key`: {created}"))?
            .to_owned();

        // The month so far through the real ingest, a day at a time with that day's clock
        // (so no event is older than the late-event horizon when it arrives).
        let started = Instant::now();
        let ingest = Ingest::new(store.clone(), catalog, EventTimePolicy::default());
        let (mut events, mut rows, mut calls) = (0usize, 0usize, 0usize);
        let (mut serial, mut message_serial) = (0u64, 0u64);
        let mut day = month.start();
        while day < now {
            let day_end = (day + TimeDelta::days(1)).min(now);
            let mut day_events = Vec::new();
            let mut hour = day;
            while hour < day_end {
                day_events.extend(hour_events(hour, now, &mut serial));
                hour += TimeDelta::hours(1);
            }
            events += day_events.len();
            for invocation in invocations(&day_events, &mut message_serial) {
                let (response, stats) = ingest.handle(&invocation, day_end).await;
                ensure!(
                    response.batch_item_failures.is_empty() && stats.rejected == 0,
                    "ingest did not take the bench's events: {stats:?}"
                );
                rows += stats.rows_written;
                calls += 1;
            }
            day = day_end;
        }
        let ingest_time = started.elapsed();
        let hours = (now - month.start()).num_hours() + 1;

        let started = Instant::now();
        let rollup = Rollup {
            store: store.clone(),
            concurrency: 4,
            page_size: 100,
            safety_margin: Duration::from_secs(5),
        };
        let request = RollupRequest {
            scheduled_time: now,
            lookback_days: None,
        };
        let rolled = rollup
            .run(&request, Instant::now() + Duration::from_secs(600))
            .await?;
        ensure!(rolled.complete, "the rollup did not complete: {rolled:?}");
        let rollup_time = started.elapsed();

        let month_key = month.key();
        let yesterday = (today.start() - TimeDelta::days(1)).max(month.start());
        let hour_day_end = if yesterday < today.start() {
            today.start()
        } else {
            now
        };
        let views = [
            View {
                name: "month usage summary",
                path: "/v1/usage".into(),
                key: key.clone(),
            },
            View {
                name: "invoice preview (month)",
                path: format!("/v1/invoice/preview?month={month_key}"),
                key: key.clone(),
            },
            View {
                name: "forecast",
                path: "/v1/forecast".into(),
                key: key.clone(),
            },
            View {
                name: "daily history (month)",
                path: format!(
                    "/v1/usage/history?granularity=day&from={}&to={}",
                    rfc3339(month.start()),
                    rfc3339(now)
                ),
                key: key.clone(),
            },
            View {
                name: "hourly history (one day)",
                path: format!(
                    "/v1/usage/history?granularity=hour&from={}&to={}",
                    rfc3339(yesterday),
                    rfc3339(hour_day_end)
                ),
                key: key.clone(),
            },
            View {
                name: "edge snapshot (admin key)",
                path: "/v1/edge/snapshot".into(),
                key: admin_key.to_owned(),
            },
        ];

        let summary = expect_ok(&client, "GET", &format!("{base}/v1/usage"), &key, None).await?;
        let shown = summary["meters"].as_array().map_or(0, Vec::len);

        println!(
            "==> usage API month views against DynamoDB Local ({endpoint}), served in process over HTTP/1.1 on {addr}"
        );
        println!(
            "    set-up: 1 tenant, 50 meters ({}), plan {PLAN} pricing {} of them; month {month_key}, {hours} hours so far",
            KINDS.join(", "),
            plan_json()["meters"].as_array().map_or(0, Vec::len),
        );
        println!(
            "    ingest: {events} CloudEvents ({EVENTS_PER_HOUR} per event type and hour) in batch messages of {EVENTS_PER_MESSAGE}, \
             {calls} invocations (a day each, on that day's clock): {} hourly counters, {rows} counter writes, {:.1} s",
            hours as usize * EVENT_TYPES.len() * KINDS.len(),
            ingest_time.as_secs_f64()
        );
        println!(
            "    rollup: {} daily and {} monthly rows in {:.1} s; GET /v1/usage lists {shown} meters \
             (percentile sketches have no quantity to list or price)",
            rolled.days_written,
            rolled.months_written,
            rollup_time.as_secs_f64()
        );
        println!(
            "    {WARM_UP} warm-up requests, then up to {REQUESTS} sequential ones (at most {} s) per view, one keep-alive connection",
            TIME_LIMIT.as_secs()
        );
        println!(
            "    {:<27} {:>5} {:>8} {:>8} {:>8} {:>7} {:>9} {:>10}",
            "view", "reqs", "p50 ms", "p99 ms", "max ms", "req/s", "bytes", "DDB calls"
        );
        println!(
            "    {:<27} {:>5} {:>8} {:>8} {:>8} {:>7} {:>9} {:>10}",
            "", "", "", "", "", "", "", "per req."
        );
        let mut breakdowns = Vec::new();
        for view in &views {
            let figures = measure(&client, &base, view, counter).await?;
            let total: u64 = figures.calls.values().sum();
            let per_request = total as f64 / figures.requests.max(1) as f64;
            println!(
                "    {:<27} {:>5} {:>8.2} {:>8.2} {:>8.2} {:>7.0} {:>9} {:>10.1}",
                view.name,
                figures.requests,
                millis(figures.p50),
                millis(figures.p99),
                millis(figures.max),
                figures.per_second,
                figures.bytes,
                per_request
            );
            let ops: Vec<String> = figures
                .calls
                .iter()
                .map(|(op, n)| format!("{op} {:.1}", *n as f64 / figures.requests.max(1) as f64))
                .collect();
            breakdowns.push((view, ops.join(", ")));
        }
        println!("    DynamoDB calls per request by operation (every attempt and page counts):");
        for (view, ops) in breakdowns {
            println!("      {:<27} GET {}", view.name, view.path);
            println!("      {:<27} {ops}", "");
        }
        println!(
            "    (timings: DynamoDB Local on loopback, and the API running in xtask's unoptimised dev \
             build; they only compare runs on one machine. The DynamoDB calls per request are what \
             transfers to AWS.)"
        );
        Ok(())
    }
}
