//! The usage API's month views against DynamoDB Local, as a tenant dashboard calls them,
//! and the edge snapshot with and without its cache: latency (p50, p99, max), requests per
//! second, reply size and DynamoDB calls per request.
//!
//! Set-up, as in production: a catalog of 50 meters (every aggregation kind), a plan
//! pricing them, the tenant and its key created through the admin API, this month's usage
//! so far (several events per meter and hour, from the month's first hour up to now)
//! written by the real ingest handler from SQS batches, then the real rollup, so daily
//! and monthly rollups exist.
//!
//! Timings are of the release `usage-api` binary, built by the bench with
//! `cargo build --release`, run as a Lambda (`tollgate-local`'s Runtime API) behind its
//! local Function URL, as the local stack and the demo run it, and called over loopback
//! HTTP with a keep-alive hyper client, one request at a time. It runs twice: with the
//! edge snapshot cache off and with the max age the SAM template deploys.
//!
//! DynamoDB calls cannot be intercepted inside the binary, so they are counted in a
//! separate in-process pass: the same `tollgate_usage_api::App` over a DynamoDB client
//! with the recording interceptor of [`super::calls`] (every operation, every attempt,
//! every page). Those counts transfer to AWS; the timings do not.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use chrono::{DateTime, Duration as TimeDelta, SecondsFormat, Utc};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tollgate_core::meter::MeterCatalog;
use tollgate_core::tenant::{ApiKeyHash, ApiKeyRecord, ApiKeyRole};
use tollgate_core::window::{EventTimePolicy, Granularity, Window};
use tollgate_ingest::Ingest;
use tollgate_local::{FunctionSpec, FunctionUrl, LocalFunction};
use tollgate_rollup::{Rollup, RollupRequest};
use tollgate_store::DynamoDbStore;
use tollgate_usage_api::App;
use tollgate_usage_api::snapshot_cache::RECOMMENDED_SNAPSHOT_MAX_AGE;
use tollgate_usage_api::sqs::SqsEventQueue;

use super::calls::Recorder;
use crate::util;

/// The usage API's package and binary.
const PACKAGE: &str = "tollgate-usage-api";
const BINARY: &str = "usage-api";
/// Where SQS would be: nothing listens there, and the routes measured send nothing.
const CLOSED_PORT: &str = "http://127.0.0.1:9";
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
/// In-process requests per view whose DynamoDB calls are counted.
const COUNTED: usize = 10;
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

/// Builds the release `usage-api` binary (the one deployments run) and returns its path.
fn build_binary(root: &Path) -> Result<PathBuf> {
    eprintln!("[bench] api: building the {BINARY} binary in release, as deployments run it");
    let started = Instant::now();
    util::run(util::cargo(root).args(["build", "--release", "-p", PACKAGE, "--bin", BINARY]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let binary = target.join("release").join(BINARY);
    ensure!(
        binary.is_file(),
        "cargo built no {} (looked at {})",
        BINARY,
        binary.display()
    );
    eprintln!(
        "[bench] api: {} ready in {:.1} s",
        binary.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(binary)
}

/// The release binary run as a Lambda function (one instance, the local Runtime API)
/// behind a local Function URL, as the local stack and the demo run it. Stops when dropped.
struct ApiFunction {
    function: Arc<LocalFunction>,
    url: FunctionUrl,
}

impl ApiFunction {
    /// Starts `binary` as function `name` with the API's configuration and the edge
    /// snapshot max age `snapshot_max_age`, and waits for its cold start.
    async fn start(
        name: &str,
        binary: &Path,
        table: &str,
        meters_file: &Path,
        dynamodb: &str,
        snapshot_max_age: Duration,
    ) -> Result<ApiFunction> {
        let env = [
            ("TOLLGATE_TABLE", table.to_owned()),
            (
                "TOLLGATE_QUEUE_URL",
                format!("{CLOSED_PORT}/000000000000/unused"),
            ),
            ("TOLLGATE_METERS_FILE", meters_file.display().to_string()),
            (
                "TOLLGATE_SNAPSHOT_MAX_AGE_SECONDS",
                snapshot_max_age.as_secs().to_string(),
            ),
            ("AWS_ENDPOINT_URL_DYNAMODB", dynamodb.to_owned()),
            ("AWS_ENDPOINT_URL_SQS", CLOSED_PORT.to_owned()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
        // One instance: the requests are sequential, and the snapshot cache is per instance.
        let spec = FunctionSpec::new(name, binary)
            .with_env(env)
            .with_timeout(Duration::from_secs(30))
            .with_max_instances(1)
            .with_echo_output(false);
        let function = Arc::new(
            LocalFunction::start_with(spec)
                .await
                .with_context(|| format!("starting {name} ({})", binary.display()))?,
        );
        let url = FunctionUrl::start(Arc::clone(&function))
            .await
            .context("starting the local Function URL")?;
        Ok(ApiFunction { function, url })
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    fn base(&self) -> String {
        format!("http://{}", self.url.addr())
    }
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

/// Which API a view is measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cache {
    /// `TOLLGATE_SNAPSHOT_MAX_AGE_SECONDS=0`: every snapshot is built.
    Off,
    /// `TOLLGATE_SNAPSHOT_MAX_AGE_SECONDS` as the SAM template sets it.
    Deployed,
}

/// One measured view.
struct View {
    name: String,
    path: String,
    key: String,
    /// The status every request must get.
    status: u16,
    cache: Cache,
}

/// A view's latency over the binary.
struct Timing {
    requests: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    per_second: f64,
    bytes: usize,
    /// From the first timed request to the end of the last.
    elapsed: Duration,
}

/// The nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted.get(rank - 1).copied().unwrap_or_default()
}

/// [`WARM_UP`] requests, then up to [`REQUESTS`] timed ones (at most [`TIME_LIMIT`]), one
/// at a time over one keep-alive connection to the binary's Function URL.
async fn time_view(client: &HttpClient, base: &str, view: &View) -> Result<Timing> {
    let url = format!("{base}{}", view.path);
    let mut bytes = 0;
    for _ in 0..WARM_UP {
        let (status, body) = call(client, "GET", &url, &view.key, None).await?;
        ensure!(
            status == view.status,
            "GET {} answered {status}: {}",
            view.path,
            String::from_utf8_lossy(&body)
        );
        bytes = body.len();
    }
    let mut samples = Vec::with_capacity(REQUESTS);
    let started = Instant::now();
    while samples.len() < REQUESTS && started.elapsed() < TIME_LIMIT {
        let sent = Instant::now();
        let (status, body) = call(client, "GET", &url, &view.key, None).await?;
        samples.push(sent.elapsed());
        ensure!(status == view.status, "GET {} answered {status}", view.path);
        bytes = body.len();
    }
    let elapsed = started.elapsed();
    samples.sort();
    Ok(Timing {
        requests: samples.len(),
        p50: percentile(&samples, 50),
        p99: percentile(&samples, 99),
        max: samples.last().copied().unwrap_or_default(),
        per_second: samples.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        bytes,
        elapsed,
    })
}

/// DynamoDB calls per request of a view, by operation: one warm-up request, then
/// [`COUNTED`] requests through the same `App` code the binary runs, in process, over the
/// client whose interceptor records every call (the binary's own calls are not visible).
async fn count_view(api: &Api, view: &View, counter: &Recorder) -> Result<BTreeMap<String, f64>> {
    let request = || -> Result<lambda_http::Request> {
        Ok(lambda_http::http::Request::builder()
            .method("GET")
            .uri(format!("https://usage.bench.local{}", view.path))
            .header("authorization", format!("Bearer {}", view.key))
            .body(lambda_http::Body::Empty)?)
    };
    let status = api.handle(request()?).await.status().as_u16();
    ensure!(
        status == view.status,
        "in process, GET {} answered {status}",
        view.path
    );
    counter.take();
    for _ in 0..COUNTED {
        let status = api.handle(request()?).await.status().as_u16();
        ensure!(
            status == view.status,
            "in process, GET {} answered {status}",
            view.path
        );
    }
    Ok(counter
        .take()
        .by_operation
        .into_iter()
        .map(|(operation, n)| (operation, n as f64 / COUNTED as f64))
        .collect())
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Builds the binary, sets up the tenant and its month, serves the API from the binary
/// and measures each view.
pub async fn run(endpoint: &str) -> Result<()> {
    let root = util::repo_root()?;
    let binary = {
        let root = root.clone();
        tokio::task::spawn_blocking(move || build_binary(&root))
            .await
            .context("the build task")??
    };
    let now = Utc::now();
    let catalog_text = catalog_json().to_string();
    let catalog = MeterCatalog::from_json(&catalog_text).context("the bench's meter catalog")?;
    ensure!(
        catalog.meters().count() == EVENT_TYPES.len() * KINDS.len(),
        "the catalog should hold 50 meters"
    );
    let work = binary
        .parent()
        .and_then(Path::parent)
        .unwrap_or(&root)
        .join("bench-api");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let meters_file = work.join(format!("meters-{}.json", std::process::id()));
    std::fs::write(&meters_file, &catalog_text)
        .with_context(|| format!("writing {}", meters_file.display()))?;

    let counter = Recorder::default();
    let base_client = tollgate_store::local_client(endpoint);
    let counted = aws_sdk_dynamodb::Client::from_conf(
        base_client
            .config()
            .to_builder()
            .interceptor(counter.clone())
            .build(),
    );
    let table = format!("bench-api-{}", std::process::id());
    let store = DynamoDbStore::new(counted, table.clone());
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

    eprintln!(
        "[bench] api: starting {BINARY} twice as a Lambda behind a local Function URL (snapshot cache off, and {} s)",
        RECOMMENDED_SNAPSHOT_MAX_AGE.as_secs()
    );
    let start = |name: &'static str, max_age: Duration| {
        ApiFunction::start(name, &binary, &table, &meters_file, endpoint, max_age)
    };
    let uncached = start("usage-api", Duration::ZERO).await?;
    let cached = start("usage-api-cached", RECOMMENDED_SNAPSHOT_MAX_AGE).await?;

    // In process, for the call counts only. SQS is not used by the routes measured, so
    // the queue points at a closed port and would fail loudly if anything were sent.
    let queue = || {
        SqsEventQueue::new(
            tollgate_local::local_sqs_client(CLOSED_PORT),
            format!("{CLOSED_PORT}/000000000000/unused"),
        )
    };
    let in_process = InProcess {
        uncached: App::new(store.clone(), queue(), catalog.clone()),
        cached: App::new(store.clone(), queue(), catalog.clone())
            .with_snapshot_max_age(RECOMMENDED_SNAPSHOT_MAX_AGE),
    };
    let bench = Bench {
        endpoint,
        store,
        counter,
        uncached: &uncached,
        cached: &cached,
        in_process,
        admin_key,
        now,
    };
    let result = bench.run(catalog).await;
    for api in [&uncached, &cached] {
        let stats = api.function.stats();
        if stats.crashes > 0 || stats.timeouts > 0 {
            eprintln!(
                "[bench] api: {}: {} crashes, {} timeouts",
                api.function.name(),
                stats.crashes,
                stats.timeouts
            );
        }
    }
    let _ = std::fs::remove_file(&meters_file);
    result
}

/// The in-process APIs the DynamoDB calls are counted on.
struct InProcess {
    uncached: Api,
    cached: Api,
}

/// What the measurements share: the table, the two functions, the in-process APIs and
/// the admin key.
struct Bench<'a> {
    endpoint: &'a str,
    store: DynamoDbStore,
    counter: Recorder,
    uncached: &'a ApiFunction,
    cached: &'a ApiFunction,
    in_process: InProcess,
    admin_key: String,
    now: DateTime<Utc>,
}

impl Bench<'_> {
    async fn run(&self, catalog: MeterCatalog) -> Result<()> {
        let Bench {
            endpoint,
            store,
            counter,
            uncached,
            cached,
            in_process,
            admin_key,
            now,
        } = self;
        let now = *now;
        let month = Window::containing(Granularity::Month, now);
        let today = Window::containing(Granularity::Day, now);
        let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
        let base = uncached.base();

        // The plan, tenant and key through the admin API, served by the binary.
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
        eprintln!("[bench] api: ingesting the month so far and rolling it up");
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
        let max_age = RECOMMENDED_SNAPSHOT_MAX_AGE.as_secs();
        let tenant_view = |name: &str, path: String| View {
            name: name.to_owned(),
            path,
            key: key.clone(),
            status: 200,
            cache: Cache::Off,
        };
        let views = [
            View {
                name: "floor: unknown path (404)".into(),
                path: "/v1/no-such-route".into(),
                key: key.clone(),
                status: 404,
                cache: Cache::Off,
            },
            tenant_view("month usage summary", "/v1/usage".into()),
            tenant_view(
                "invoice preview (month)",
                format!("/v1/invoice/preview?month={month_key}"),
            ),
            tenant_view("forecast", "/v1/forecast".into()),
            tenant_view(
                "daily history (month)",
                format!(
                    "/v1/usage/history?granularity=day&from={}&to={}",
                    rfc3339(month.start()),
                    rfc3339(now)
                ),
            ),
            tenant_view(
                "hourly history (one day)",
                format!(
                    "/v1/usage/history?granularity=hour&from={}&to={}",
                    rfc3339(yesterday),
                    rfc3339(hour_day_end)
                ),
            ),
            View {
                name: "edge snapshot, cache off".into(),
                path: "/v1/edge/snapshot".into(),
                key: admin_key.to_owned(),
                status: 200,
                cache: Cache::Off,
            },
            View {
                name: format!("edge snapshot, cache {max_age} s"),
                path: "/v1/edge/snapshot".into(),
                key: admin_key.to_owned(),
                status: 200,
                cache: Cache::Deployed,
            },
        ];

        let summary = expect_ok(&client, "GET", &format!("{base}/v1/usage"), &key, None).await?;
        let shown = summary["meters"].as_array().map_or(0, Vec::len);

        println!(
            "==> usage API month views: the release {BINARY} binary as a Lambda (local Runtime API) behind a local Function URL, on DynamoDB Local ({endpoint})"
        );
        println!(
            "    Function URLs: {} (TOLLGATE_SNAPSHOT_MAX_AGE_SECONDS=0) and {} (={max_age}, as the SAM template sets it); one instance each",
            uncached.url.url(),
            cached.url.url()
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
            "", "", "", "", "", "", "", "per req.*"
        );
        let mut breakdowns = Vec::new();
        let mut cached_span = Duration::ZERO;
        for view in &views {
            let (function, api) = match view.cache {
                Cache::Off => (uncached, &in_process.uncached),
                Cache::Deployed => (cached, &in_process.cached),
            };
            let timing = time_view(&client, &function.base(), view).await?;
            if view.cache == Cache::Deployed {
                cached_span = timing.elapsed;
            }
            let calls = count_view(api, view, counter).await?;
            let total = calls.values().fold(0.0, |total, n| total + n);
            println!(
                "    {:<27} {:>5} {:>8.2} {:>8.2} {:>8.2} {:>7.0} {:>9} {:>10.1}",
                view.name,
                timing.requests,
                millis(timing.p50),
                millis(timing.p99),
                millis(timing.max),
                timing.per_second,
                timing.bytes,
                total
            );
            let ops: Vec<String> = calls.iter().map(|(op, n)| format!("{op} {n:.1}")).collect();
            let ops = if ops.is_empty() {
                "none".to_owned()
            } else {
                ops.join(", ")
            };
            breakdowns.push((view, ops));
        }
        println!(
            "    * DynamoDB calls are counted in a separate in-process pass: the same tollgate_usage_api::App \
             code the binary runs, over a client with a recording interceptor, {COUNTED} requests per view \
             after one warm-up (every attempt and page counts). They transfer to AWS; the binary's own \
             calls are not intercepted."
        );
        println!("    DynamoDB calls per request by operation:");
        for (view, ops) in breakdowns {
            println!("      {:<27} GET {}", view.name, view.path);
            println!("      {:<27} {ops}", "");
        }
        println!(
            "    edge snapshot, cache {max_age} s: a request within the max age only checks the key \
             (GetItem); at most one request per {max_age} s and instance rebuilds, at the cache-off \
             row's cost. Its timed requests spanned {:.1} s, so at most {} of them rebuilt it.",
            cached_span.as_secs_f64(),
            cached_span.as_secs() / max_age.max(1) + 1
        );
        println!(
            "    (timings: each request goes over loopback HTTP to the local Function URL, which hands a \
             payload 2.0 event to the binary through the local Runtime API; both emulators run in \
             xtask's dev build and their cost is in every figure (the 404 row is that floor plus the \
             binary's routing). DynamoDB Local on loopback stands in for DynamoDB, so timings only \
             compare runs on one machine.)"
        );
        Ok(())
    }
}
