//! `cargo xtask demo`: tollgate running on this machine, end to end.
//!
//! Builds the Lambda binaries and starts the local stack (`tollgate_local::LocalStack`):
//! DynamoDB Local, the SQS emulator, a Stripe stand-in, the real `ingest` behind the SQS
//! event source mapping, `rollup`, `budget` and `billing-sync` on 15-second schedules and
//! `usage-api` behind a Function URL. Then it uses the product the way an operator and its
//! tenants would, over HTTP:
//!
//! 1. [`bootstrap`]: one admin key written straight to the store (the only step that
//!    bypasses the API), then plans, tenants (each with a Stripe customer) and tenant keys
//!    through the admin endpoints;
//! 2. [`send_usage`]: a few thousand CloudEvents per tenant through `POST /v1/events`,
//!    with duplicates, a late event and malformed events;
//! 3. [`wait_for_ingest`], one explicit rollup, then [`show_tenant`]: each tenant's usage,
//!    forecast and invoice preview as the API serves them, and a check that duplicates
//!    were counted once;
//! 4. [`gateway_traffic`]: the local gateway (`tollgate-gateway`, the real edge filter
//!    `.wasm`) in front of a tiny upstream, a bounded burst of requests per tenant key
//!    (allowed, 429, 402), then the edge's usage flushed to SQS, ingested, and read back
//!    from the usage API: metered requests equal allowed ones;
//! 5. [`budgets_and_stripe`]: a webhook (a verifying receiver on loopback) and a budget
//!    acme's month so far exceeds, with a hard limit, and one globex stays under; one
//!    explicit budget run, then the alerts (50, 80, 100 %) with their delivery status, the
//!    deliveries the receiver verified, acme on the edge snapshot's block list and 402 at
//!    the gateway; then one explicit billing-sync run, the Stripe meter-event requests it
//!    made, and a check that Stripe's accepted units equal the usage of the closed hours
//!    (the open hour shows in the reconciliation as not reported yet);
//! 6. the stack stays up for poking at, until Ctrl-C or for at most 10 minutes, unless
//!    `--no-wait`.
//!
//! Every check fails the demo: duplicates counted twice, metered edge requests that are
//! not the allowed ones, an alert missing or not delivered, a delivery that does not
//! verify, no block at the edge, Stripe totals that are not the usage, an identifier
//! accepted twice.
//!
//! The sample month (`sample_month.rs`, checked by `tests/tests/sample_month.rs`) is a
//! separate, in-process path; this demo goes through the deployed shape of the product.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use aws_sdk_sqs::types::QueueAttributeName;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tollgate_core::meter::MeterCatalog;
use tollgate_core::tenant::{ApiKeyHash, ApiKeyRecord, ApiKeyRole};
use tollgate_core::webhook::WebhookSecret;
use tollgate_core::window::{Granularity, Window};
use tollgate_devstack::webhook::WebhookReceiver;
use tollgate_local::{LOCAL_STRIPE_KEY, LocalStack, MappingMetrics, StackConfig, build_functions};

use crate::util;

/// The demo's meter catalog, relative to the repository root.
const METERS: &str = "events/samples/demo-stack/meters.json";
/// The plans posted through the admin API.
const PLANS: &str = "events/samples/plans.json";
/// The interval of the rollup, budget and billing-sync schedules.
const SCHEDULE_EVERY: Duration = Duration::from_secs(15);
const DRAIN_DEADLINE: Duration = Duration::from_secs(180);
const KEEP_UP: Duration = Duration::from_secs(600);
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);
/// The most events `POST /v1/events` takes in one request.
const EVENTS_PER_REQUEST: usize = 500;
const SOURCE: &str = "/demo/xtask";

/// `cargo xtask demo [--no-wait]`.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Keep the stack up after printing, until Ctrl-C or [`KEEP_UP`].
    pub wait: bool,
}

/// A demo tenant and its plan.
#[derive(Debug)]
struct TenantSpec {
    id: &'static str,
    name: &'static str,
    plan: &'static str,
    /// The Stripe customer billing-sync reports the tenant's usage for.
    stripe_customer: &'static str,
}

const TENANTS: [TenantSpec; 3] = [
    TenantSpec {
        id: "acme",
        stripe_customer: "cus_demo_acme",
        name: "Acme Corp (API, starter plan)",
        plan: "starter",
    },
    TenantSpec {
        id: "globex",
        stripe_customer: "cus_demo_globex",
        name: "Globex (API, professional plan)",
        plan: "professional",
    },
    TenantSpec {
        id: "podco",
        stripe_customer: "cus_demo_podco",
        name: "PodCo (one pod billed by the hour)",
        plan: "pod-hourly",
    },
];

/// A tenant created through the API, with the secret of its key.
#[derive(Debug)]
struct Tenant {
    spec: &'static TenantSpec,
    key: String,
}

pub fn run(options: Options) -> Result<()> {
    let started = Instant::now();
    let root = util::repo_root()?;
    println!(
        "==> building the function binaries ({})",
        tollgate_local::FUNCTION_BINARIES.join(", ")
    );
    let binaries = build_functions(&root).context("building the function binaries")?;
    println!("    built in {}", seconds(started.elapsed()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(demo(&root, binaries, options, started));
    println!("==> demo finished in {}", seconds(started.elapsed()));
    result
}

async fn demo(root: &Path, binaries: PathBuf, options: Options, started: Instant) -> Result<()> {
    let mut config = StackConfig::new(binaries, root.join(METERS));
    config.rollup_every = Some(SCHEDULE_EVERY);
    config.budget_every = Some(SCHEDULE_EVERY);
    config.billing_sync_every = Some(SCHEDULE_EVERY);
    // The functions log warnings only, unless the caller asks for more with RUST_LOG.
    config.function_log = Some(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()));
    println!(
        "==> starting the local stack: DynamoDB Local, SQS emulator (moto), a Stripe stand-in, \
         ingest behind the event source mapping, rollup, budget and billing-sync every {}s, \
         usage-api behind a Function URL",
        SCHEDULE_EVERY.as_secs()
    );
    let step = Instant::now();
    let stack = LocalStack::start(&config)
        .await
        .context("starting the local stack")?;
    println!(
        "    up in {}: usage API {}, DynamoDB {}, SQS {}, Stripe stand-in {}",
        seconds(step.elapsed()),
        stack.usage_api_url(),
        stack.dynamodb_endpoint,
        stack.sqs_endpoint,
        stack.stripe.url()
    );
    println!(
        "    the functions log warnings to stderr, prefixed with their name (RUST_LOG=info shows more)"
    );
    let result = run_on(&stack, root, options, started).await;
    println!("==> stopping the stack");
    stack.stop().await;
    result
}

/// Everything between starting and stopping the stack.
async fn run_on(stack: &LocalStack, root: &Path, options: Options, started: Instant) -> Result<()> {
    let api = Api::new(&stack.usage_api_url());
    let step = Instant::now();
    println!("==> bootstrap");
    let (admin_key, tenants) = bootstrap(stack, &api, root).await?;
    println!("    done in {}", seconds(step.elapsed()));

    let now = Utc::now();
    let month = Window::containing(Granularity::Month, now);
    let step = Instant::now();
    println!(
        "==> sending usage through POST /v1/events (≤ {EVENTS_PER_REQUEST} events per request; \
         the API packs accepted events into CloudEvents batch messages on the queue)"
    );
    let mut sent = Vec::new();
    for tenant in &tenants {
        let stream = usage_stream(tenant.spec.id, now, month.start());
        let outcome = send_usage(&api, tenant, &stream).await?;
        print_sent(tenant, &stream, &outcome);
        sent.push(outcome);
    }
    println!("    sent in {}", seconds(step.elapsed()));

    let step = Instant::now();
    println!(
        "==> waiting for ingest to drain the queue (at most {}s)",
        DRAIN_DEADLINE.as_secs()
    );
    let metrics = wait_for_ingest(stack).await?;
    let dlq = queue_depth(stack, &stack.dlq_url).await?;
    println!(
        "    drained in {}: {} messages in {} ingest invocations, {} deleted, {} returned for \
         retry, {} whole-batch failures, DLQ depth {dlq}",
        seconds(step.elapsed()),
        metrics.received,
        metrics.invoked_batches,
        metrics.deleted,
        metrics.returned_for_retry,
        metrics.whole_batch_failures
    );

    let step = Instant::now();
    let reply = stack
        .run_rollup(Utc::now())
        .await
        .context("running the rollup")?;
    ensure!(
        reply["complete"] == json!(true),
        "the rollup did not complete: {reply}"
    );
    println!(
        "==> rollup (also running every {}s): {} tenants, {} days and {} months written, in {}",
        SCHEDULE_EVERY.as_secs(),
        reply["tenants"],
        reply["daysWritten"],
        reply["monthsWritten"],
        seconds(step.elapsed())
    );

    if Window::containing(Granularity::Month, Utc::now()) != month {
        bail!("the month changed while the demo ran; run it again");
    }
    for (tenant, outcome) in tenants.iter().zip(&sent) {
        let usage = show_tenant(&api, tenant, &month.key()).await?;
        if tenant.spec.id == "acme" {
            check_counted_once(&usage, outcome)?;
        }
    }
    let gateway = gateway_traffic(stack, root, &api, &admin_key, &tenants).await?;
    // Up until the stack stops, so later deliveries (the schedule's) land and verify too.
    let receiver = WebhookReceiver::start(placeholder_secret()?)
        .await
        .context("starting the webhook receiver")?;
    let billing =
        budgets_and_stripe(stack, root, &api, &admin_key, &tenants, &gateway, &receiver).await;
    gateway.stop();
    let summary = billing?;
    let rejected = api.get(&admin_key, "/v1/admin/rejected").await?;
    println!(
        "==> GET /v1/admin/rejected: {} messages rejected by ingest (events the API refused \
         never reach the queue)",
        rejected["rejections"].as_array().map_or(0, Vec::len)
    );
    print_where_to_look(&api, &admin_key, &tenants, &summary, &receiver, stack);
    println!("==> everything above took {}", seconds(started.elapsed()));
    if options.wait {
        keep_up().await;
    } else {
        println!("==> --no-wait: not keeping the stack up");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Bootstrap

/// Stores one admin key, then creates the plans, tenants and tenant keys through the API.
/// Returns the admin key and the tenants with their keys.
async fn bootstrap(stack: &LocalStack, api: &Api, root: &Path) -> Result<(String, Vec<Tenant>)> {
    let admin_key = new_secret()?;
    stack
        .store
        .create_api_key(&ApiKeyRecord {
            hash: ApiKeyHash::of(&admin_key),
            role: ApiKeyRole::Admin,
            tenant: None,
            label: "cargo xtask demo".into(),
            created_at: Utc::now(),
            revoked_at: None,
        })
        .await
        .context("storing the admin key")?;
    println!("    admin key: written to DynamoDB as its SHA-256 digest; the rest goes over HTTP");

    let path = root.join(PLANS);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let plans: Vec<Value> =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let mut names = Vec::new();
    for plan in &plans {
        let created = api.post(&admin_key, "/v1/admin/plans", plan).await?;
        names.push(text_of(&created["name"]));
    }
    println!("    POST /v1/admin/plans: {}", names.join(", "));

    let mut tenants = Vec::new();
    for spec in &TENANTS {
        let body = json!({
            "tenant": spec.id,
            "displayName": spec.name,
            "plan": spec.plan,
            "stripeCustomerId": spec.stripe_customer,
        });
        api.post(&admin_key, "/v1/admin/tenants", &body).await?;
        let created = api
            .post(
                &admin_key,
                &format!("/v1/admin/tenants/{}/keys", spec.id),
                &json!({"label": "demo"}),
            )
            .await?;
        let key = created["key"]
            .as_str()
            .with_context(|| format!("the key reply for {} has no `key`: {created}", spec.id))?
            .to_owned();
        println!(
            "    POST /v1/admin/tenants {} → {}, Stripe customer {}; POST /v1/admin/tenants/{}/keys → key {}…",
            spec.id,
            spec.plan,
            spec.stripe_customer,
            spec.id,
            key.get(..10).unwrap_or(&key)
        );
        tenants.push(Tenant { spec, key });
    }
    Ok((admin_key, tenants))
}

/// `tg_` and 32 bytes from the operating system's random source, hex encoded: the format
/// of the keys the API issues.
fn new_secret() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("the operating system's random source failed: {e}"))?;
    Ok(format!("tg_{}", hex::encode(bytes)))
}

// ---------------------------------------------------------------------------------------
// Usage

/// One event to send, and the requests it adds to this month's `api_requests` once.
#[derive(Debug, Clone)]
struct Outgoing {
    event: Value,
    requests_this_month: u64,
}

/// A tenant's events in sending order, and what they are made of.
#[derive(Debug)]
struct Stream {
    events: Vec<Outgoing>,
    distinct: usize,
    duplicates: usize,
    late: usize,
    malformed: usize,
}

/// What the API replied to a tenant's events.
#[derive(Debug, Default)]
struct Sent {
    requests: usize,
    accepted: usize,
    rejected: BTreeMap<String, usize>,
    /// Per-event rejections: (id, code, reason).
    rejections: Vec<(String, String, String)>,
    /// Requests this month per accepted event id (a duplicate overwrites its original).
    counted: BTreeMap<String, u64>,
}

/// The demo's usage for one tenant: acme and globex call an API over the last ~24 hours
/// of the month, podco runs one pod sampled every minute for the last ~12 hours.
fn usage_stream(tenant: &str, now: DateTime<Utc>, month_start: DateTime<Utc>) -> Stream {
    match tenant {
        "acme" => {
            let mut rng = Rng(0xACED_0000_0000_0001);
            let distinct = api_events(tenant, 1_500, 20..=180, now, month_start, &mut rng);
            let late_time = now - TimeDelta::days(2);
            let late = Outgoing {
                event: event(
                    tenant,
                    "acme-late-1",
                    "api.usage",
                    late_time,
                    json!({"requests": 100, "route": "/v1/search"}),
                ),
                requests_this_month: if late_time >= month_start { 100 } else { 0 },
            };
            let mut bad_time = event(
                tenant,
                "acme-bad-time",
                "api.usage",
                now,
                json!({"requests": 5, "route": "/v1/search"}),
            );
            bad_time["time"] = json!("yesterday");
            let bad_value = event(
                tenant,
                "acme-bad-value",
                "api.usage",
                now,
                json!({"requests": "lots", "route": "/v1/search"}),
            );
            Stream::mix(
                distinct,
                vec![late],
                vec![malformed(bad_time), malformed(bad_value)],
            )
        }
        "globex" => {
            let mut rng = Rng(0x610B_E700_0000_0001);
            let distinct = api_events(tenant, 2_000, 50..=250, now, month_start, &mut rng);
            // A tenant key may only send its own tenant's events.
            let as_acme = event(
                "acme",
                "globex-as-acme",
                "api.usage",
                now,
                json!({"requests": 1, "route": "/v1/search"}),
            );
            Stream::mix(distinct, Vec::new(), vec![malformed(as_acme)])
        }
        _ => Stream::mix(pod_events(tenant, now, month_start), Vec::new(), Vec::new()),
    }
}

/// An event the API should reject; it adds nothing.
fn malformed(event: Value) -> Outgoing {
    Outgoing {
        event,
        requests_this_month: 0,
    }
}

impl Stream {
    /// Every 20th distinct event is sent a second time (same id) about 250 events later,
    /// so usually in another request and another queue message; the late events go in the
    /// middle and the malformed ones are spread out.
    fn mix(distinct: Vec<Outgoing>, late: Vec<Outgoing>, malformed: Vec<Outgoing>) -> Stream {
        let count = distinct.len();
        let mut events = Vec::with_capacity(count + count / 20 + 8);
        let mut pending: VecDeque<(usize, Outgoing)> = VecDeque::new();
        let mut duplicates = 0;
        for (i, outgoing) in distinct.into_iter().enumerate() {
            while pending.front().is_some_and(|(due, _)| *due <= i) {
                events.extend(pending.pop_front().map(|(_, again)| again));
            }
            if i % 20 == 0 {
                pending.push_back((i + 250, outgoing.clone()));
                duplicates += 1;
            }
            events.push(outgoing);
        }
        events.extend(pending.into_iter().map(|(_, again)| again));
        let (late_count, malformed_count) = (late.len(), malformed.len());
        let middle = events.len() / 2;
        events.splice(middle..middle, late);
        let gap = events.len() / (malformed_count + 1);
        for (k, outgoing) in malformed.into_iter().enumerate() {
            events.insert((k + 1) * gap + k, outgoing);
        }
        Stream {
            events,
            distinct: count + late_count,
            duplicates,
            late: late_count,
            malformed: malformed_count,
        }
    }
}

/// `count` `api.usage` events spread over the last 24 hours (never before `month_start`).
fn api_events(
    tenant: &str,
    count: u64,
    requests: std::ops::RangeInclusive<u64>,
    now: DateTime<Utc>,
    month_start: DateTime<Utc>,
    rng: &mut Rng,
) -> Vec<Outgoing> {
    const ROUTES: [&str; 4] = ["/v1/search", "/v1/orders", "/v1/users", "/v1/reports"];
    let start = (now - TimeDelta::hours(24)).max(month_start);
    let span = (now - start).num_seconds().max(1).unsigned_abs();
    let step = (span / count).max(1);
    (0..count)
        .map(|i| {
            let offset = (span * i / count + rng.below(step)).min(span - 1);
            let time = start + TimeDelta::seconds(i64::try_from(offset).unwrap_or(0));
            let n = requests.start() + rng.below(requests.end() - requests.start() + 1);
            let route = ROUTES[usize::try_from(rng.below(4)).unwrap_or(0)];
            Outgoing {
                event: event(
                    tenant,
                    &format!("{tenant}-{i:05}"),
                    "api.usage",
                    time,
                    json!({"requests": n, "route": route}),
                ),
                requests_this_month: n,
            }
        })
        .collect()
}

/// One pod (2 vCPU, 4 GB, 50 GB disk) sampled every minute for the last 12 hours, and its
/// network traffic once an hour (never before `month_start`).
fn pod_events(tenant: &str, now: DateTime<Utc>, month_start: DateTime<Utc>) -> Vec<Outgoing> {
    let mut rng = Rng(0x90DC_0000_0000_0001);
    let mut events = Vec::new();
    for minute in (1..=12 * 60).rev() {
        let time = now - TimeDelta::minutes(minute);
        if minute % 60 == 30 {
            let data = json!({
                "out_gb": format!("{}.{:02}", rng.below(3), rng.below(100)),
                "in_gb": format!("0.{:02}", rng.below(100)),
            });
            events.push((
                time,
                format!("{tenant}-net-{minute:03}"),
                "pod.network",
                data,
            ));
        }
        let data = json!({"cpu_vcpu": 2, "memory_gb": 4, "disk_gb": 50});
        events.push((
            time,
            format!("{tenant}-sample-{minute:03}"),
            "pod.sample",
            data,
        ));
    }
    events
        .into_iter()
        .filter(|(time, ..)| *time >= month_start)
        .map(|(time, id, kind, data)| Outgoing {
            event: event(tenant, &id, kind, time, data),
            requests_this_month: 0,
        })
        .collect()
}

fn event(tenant: &str, id: &str, kind: &str, time: DateTime<Utc>, data: Value) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": SOURCE,
        "type": kind,
        "subject": tenant,
        "time": time.to_rfc3339_opts(SecondsFormat::Secs, true),
        "datacontenttype": "application/json",
        "data": data,
    })
}

/// Sends a tenant's events with its own key, [`EVENTS_PER_REQUEST`] at a time, and tallies
/// the API's per-event results.
async fn send_usage(api: &Api, tenant: &Tenant, stream: &Stream) -> Result<Sent> {
    let mut sent = Sent::default();
    for batch in stream.events.chunks(EVENTS_PER_REQUEST) {
        let body = Value::Array(batch.iter().map(|o| o.event.clone()).collect());
        let reply = api.post(&tenant.key, "/v1/events", &body).await?;
        sent.requests += 1;
        let results = reply["results"]
            .as_array()
            .with_context(|| format!("POST /v1/events replied without `results`: {reply}"))?;
        for result in results {
            let outgoing = result["index"]
                .as_u64()
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| batch.get(i))
                .with_context(|| format!("a result for no event: {result}"))?;
            let id = text_of(&outgoing.event["id"]);
            if result["status"] == json!("accepted") {
                sent.accepted += 1;
                sent.counted.insert(id, outgoing.requests_this_month);
            } else {
                let code = text_of(&result["code"]);
                *sent.rejected.entry(code.clone()).or_default() += 1;
                sent.rejections.push((id, code, text_of(&result["reason"])));
            }
        }
    }
    Ok(sent)
}

fn print_sent(tenant: &Tenant, stream: &Stream, sent: &Sent) {
    let rejected: usize = sent.rejected.values().sum();
    let codes: Vec<String> = sent
        .rejected
        .iter()
        .map(|(code, n)| format!("{code} ×{n}"))
        .collect();
    let mut made_of = vec![format!(
        "{} distinct",
        grouped(&stream.distinct.to_string())
    )];
    if stream.late > 0 {
        made_of.push(format!("{} of them 2 days late", stream.late));
    }
    made_of.push(format!("{} duplicates", stream.duplicates));
    if stream.malformed > 0 {
        made_of.push(format!("{} malformed", stream.malformed));
    }
    println!(
        "    {:<7} sent {} events in {} requests ({}) → accepted {}, rejected {}{}",
        tenant.spec.id,
        grouped(&stream.events.len().to_string()),
        sent.requests,
        made_of.join(", "),
        grouped(&sent.accepted.to_string()),
        rejected,
        if codes.is_empty() {
            String::new()
        } else {
            format!(" [{}]", codes.join(", "))
        }
    );
    for (id, code, reason) in &sent.rejections {
        println!("            rejected {id}: {code}: {reason}");
    }
}

// ---------------------------------------------------------------------------------------
// Ingest

/// Waits until the queue is empty and the event source mapping holds nothing (every
/// message received was deleted or returned for retry), three polls in a row.
async fn wait_for_ingest(stack: &LocalStack) -> Result<MappingMetrics> {
    let started = Instant::now();
    let mut quiet_polls = 0;
    while quiet_polls < 3 {
        if started.elapsed() > DRAIN_DEADLINE {
            bail!(
                "the queue did not drain in {}s: {:?}",
                DRAIN_DEADLINE.as_secs(),
                stack.mapping_metrics()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let pending = queue_depth(stack, &stack.queue_url).await?;
        let metrics = stack.mapping_metrics();
        let in_hand = metrics
            .received
            .saturating_sub(metrics.deleted + metrics.returned_for_retry);
        quiet_polls = if pending == 0 && in_hand == 0 {
            quiet_polls + 1
        } else {
            0
        };
    }
    Ok(stack.mapping_metrics())
}

/// Messages in a queue, visible or in flight.
async fn queue_depth(stack: &LocalStack, queue_url: &str) -> Result<u64> {
    let attributes = stack
        .sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .with_context(|| format!("reading the attributes of {queue_url}"))?;
    let count = |name| {
        attributes
            .attributes()
            .and_then(|a| a.get(&name))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(count(QueueAttributeName::ApproximateNumberOfMessages)
        + count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible))
}

// ---------------------------------------------------------------------------------------
// Reading it back

/// Prints a tenant's usage, forecast and invoice preview for `month`, as the API serves
/// them with the tenant's own key; returns the `/v1/usage` reply.
async fn show_tenant(api: &Api, tenant: &Tenant, month: &str) -> Result<Value> {
    let key = &tenant.key;
    let usage = api.get(key, "/v1/usage").await?;
    let forecast = api.get(key, "/v1/forecast").await?;
    let invoice = api
        .get(key, &format!("/v1/invoice/preview?month={month}"))
        .await?;
    let currency = text_of(&usage["currency"]);
    println!();
    println!(
        "==> {} — plan {}, {} (as of {})",
        tenant.spec.name,
        text_of(&usage["plan"]),
        text_of(&usage["period"]["key"]),
        text_of(&usage["asOf"])
    );
    println!("    GET /v1/usage");
    println!(
        "      {:<16} {:>14} {:>14} {:>12} {:<11} {:>10}",
        "meter", "month to date", "today", "included", "unit", "cost"
    );
    for meter in usage["meters"].as_array().into_iter().flatten() {
        println!(
            "      {:<16} {:>14} {:>14} {:>12} {:<11} {:>10}",
            text_of(&meter["meter"]),
            shown(&meter["quantity"]),
            shown(&meter["today"]),
            shown(&meter["included"]),
            text_of(&meter["unit"]),
            text_of(&meter["cost"]),
        );
        for (period, quota) in meter["quotas"].as_object().into_iter().flatten() {
            if quota["exhausted"] == json!(true) {
                println!(
                    "        quota {period}: {} of {} used, exhausted until {} (the edge answers 429)",
                    shown(&quota["used"]),
                    shown(&quota["limit"]),
                    text_of(&quota["resetsAt"])
                );
            }
        }
    }
    println!(
        "      cost so far {} {currency}",
        text_of(&usage["costSoFar"])
    );
    let elapsed = decimal(&forecast["elapsedFraction"]).map_or_else(
        || text_of(&forecast["elapsedFraction"]),
        |f| (f * Decimal::ONE_HUNDRED).round_dp(1).to_string(),
    );
    println!(
        "    GET /v1/forecast ({elapsed} % of the month elapsed): {} {currency} so far → {} {currency} at month end",
        text_of(&forecast["cost"]["soFar"]),
        text_of(&forecast["cost"]["projected"]),
    );
    for meter in forecast["meters"].as_array().into_iter().flatten() {
        println!(
            "      {:<16} {:>14} → {:>14} {}",
            text_of(&meter["meter"]),
            shown(&meter["quantity"]),
            shown(&meter["projected"]),
            text_of(&meter["unit"]),
        );
    }
    println!("    GET /v1/invoice/preview?month={month}");
    for line in invoice["lines"].as_array().into_iter().flatten() {
        println!(
            "      {:<96} {:>10} {}",
            text_of(&line["description"]),
            text_of(&line["amount"]),
            text_of(&invoice["currency"])
        );
    }
    println!(
        "      {:<96} {:>10} {}",
        "total",
        text_of(&invoice["total"]),
        text_of(&invoice["currency"])
    );
    Ok(usage)
}

/// The API must count every distinct event once, however often it was sent: compares
/// acme's `api_requests` this month with the requests of the distinct events it accepted.
fn check_counted_once(usage: &Value, sent: &Sent) -> Result<()> {
    let expected: u64 = sent.counted.values().sum();
    let served = usage["meters"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["meter"] == json!("api_requests"))
        .and_then(|m| decimal(&m["quantity"]))
        .context("GET /v1/usage lists no api_requests quantity for acme")?;
    println!(
        "    acme api_requests: distinct sent {} vs counted by the API {} ({} events accepted, {} of them distinct)",
        grouped(&expected.to_string()),
        grouped(&served.normalize().to_string()),
        grouped(&sent.accepted.to_string()),
        grouped(&sent.counted.len().to_string()),
    );
    ensure!(
        served == Decimal::from(expected),
        "acme's api_requests: the API counts {served} but the distinct events it accepted add up \
         to {expected}: duplicates were counted twice or events were lost"
    );
    println!("    ✓ duplicates counted once");
    Ok(())
}

fn print_where_to_look(
    api: &Api,
    admin_key: &str,
    tenants: &[Tenant],
    summary: &BillingSummary,
    receiver: &WebhookReceiver,
    stack: &LocalStack,
) {
    println!();
    println!("==> where to look");
    println!("    usage API  {}", api.url("/"));
    for tenant in tenants {
        println!(
            "    curl -H \"Authorization: Bearer {}\" {}    # {}",
            tenant.key,
            api.url("/v1/usage"),
            tenant.spec.id
        );
    }
    println!(
        "    curl -H \"Authorization: Bearer {admin_key}\" {}    # admin",
        api.url("/v1/admin/rejected")
    );
    if let Some(over) = tenants.iter().find(|t| t.spec.id == OVER_BUDGET) {
        println!(
            "    curl -H \"Authorization: Bearer {}\" {}    # {OVER_BUDGET}'s budget alerts and their webhook deliveries",
            over.key,
            api.url("/v1/alerts")
        );
    }
    println!(
        "    curl -H \"Authorization: Bearer {admin_key}\" '{}'    # Stripe ledger vs usage",
        api.url(&format!(
            "/v1/admin/billing/reconciliation?month={}",
            Window::containing(Granularity::Month, Utc::now()).key()
        ))
    );
    println!(
        "    webhook receiver {} — {OVER_BUDGET}'s alert deliveries, signatures verified ({} alerts, {} deliveries verified so far)",
        receiver.url(&format!("/hooks/{OVER_BUDGET}")),
        summary.alerts,
        receiver
            .received()
            .iter()
            .filter(|d| d.verified.is_ok())
            .count()
    );
    println!(
        "    Stripe stand-in {}v1/billing/meter_events (key {LOCAL_STRIPE_KEY}) — billing-sync's meter events, every {}s: {} requests, {} units accepted when checked ({} events now)",
        stack.stripe.url(),
        SCHEDULE_EVERY.as_secs(),
        summary.stripe_requests,
        grouped(&summary.stripe_units.to_string()),
        stack.stripe.accepted().len()
    );
    println!("    curl {}", api.url("/v1/openapi.json"));
}

/// Keeps the stack up until Ctrl-C or [`KEEP_UP`], whichever comes first.
async fn keep_up() {
    println!(
        "==> the stack stays up: Ctrl-C to stop (it stops by itself in {} minutes)",
        KEEP_UP.as_secs() / 60
    );
    tokio::select! {
        signal = tokio::signal::ctrl_c() => match signal {
            Ok(()) => println!("==> Ctrl-C"),
            Err(e) => println!("==> cannot listen for Ctrl-C ({e}); stopping"),
        },
        () = tokio::time::sleep(KEEP_UP) => println!("==> {} minutes are up", KEEP_UP.as_secs() / 60),
    }
}

// ---------------------------------------------------------------------------------------
// Helpers

/// A small HTTP/1 client for the usage API.
#[derive(Debug)]
struct Api {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Api {
    fn new(base: &str) -> Api {
        Api {
            base: base.trim_end_matches('/').to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, key: &str, path: &str) -> Result<Value> {
        self.call("GET", key, path, None).await
    }

    async fn post(&self, key: &str, path: &str, body: &Value) -> Result<Value> {
        self.call("POST", key, path, Some(body)).await
    }

    async fn put(&self, key: &str, path: &str, body: &Value) -> Result<Value> {
        self.call("PUT", key, path, Some(body)).await
    }

    /// One request with a bearer key; a reply that is not 2xx JSON is an error.
    async fn call(
        &self,
        method: &str,
        key: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        let what = format!("{method} {path}");
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(self.url(path))
            .header("authorization", format!("Bearer {key}"));
        let bytes = match body {
            Some(body) => {
                request = request.header("content-type", "application/json");
                Bytes::from(body.to_string())
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(bytes))
            .with_context(|| format!("building {what}"))?;
        let response = tokio::time::timeout(HTTP_TIMEOUT, self.client.request(request))
            .await
            .with_context(|| format!("{what}: no reply in {}s", HTTP_TIMEOUT.as_secs()))?
            .with_context(|| what.clone())?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .with_context(|| format!("{what}: reading the reply"))?
            .to_bytes();
        let reply: Value = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{what}: HTTP {status} with a body that is not JSON: {}",
                String::from_utf8_lossy(&bytes)
            )
        })?;
        ensure!(status.is_success(), "{what}: HTTP {status}: {reply}");
        Ok(reply)
    }
}

/// A small deterministic generator (xorshift64*) for the demo's usage figures.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// A JSON value as text: strings without quotes, `null` as "–".
fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "–".to_owned(),
        other => other.to_string(),
    }
}

/// A decimal the API sent (as a string or a number).
fn decimal(value: &Value) -> Option<Decimal> {
    match value {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.to_string().parse().ok(),
        _ => None,
    }
}

/// A quantity for display: at most three decimal places, thousands grouped.
fn shown(value: &Value) -> String {
    decimal(value).map_or_else(
        || text_of(value),
        |d| grouped(&d.round_dp(3).normalize().to_string()),
    )
}

/// `1234567.5` → `1,234,567.5`.
fn grouped(number: &str) -> String {
    let (sign, rest) = number
        .strip_prefix('-')
        .map_or(("", number), |rest| ("-", rest));
    let (whole, fraction) = rest.split_once('.').map_or((rest, ""), |(w, f)| (w, f));
    let mut out = String::new();
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    if fraction.is_empty() {
        format!("{sign}{out}")
    } else {
        format!("{sign}{out}.{fraction}")
    }
}

fn seconds(elapsed: Duration) -> String {
    format!("{:.1}s", elapsed.as_secs_f64())
}

// ---------------------------------------------------------------------------------------
// The gateway: the edge filter in front of an upstream

/// Edge meters (in the demo catalog, `meters.json`, with the aggregations the filter
/// records: count, sum, percentiles).
const EDGE_REQUESTS: &str = "edge_requests";
const EDGE_RESPONSE_BYTES: &str = "edge_response_bytes";
const EDGE_LATENCY_MS: &str = "edge_latency_ms";
/// Requests per tenant in the traffic burst, and the most time the burst may take.
const BURST_REQUESTS: usize = 120;
const BURST_DEADLINE: Duration = Duration::from_secs(20);
const EDGE_DEADLINE: Duration = Duration::from_secs(90);

/// Per-tenant outcome of the burst.
#[derive(Debug, Default)]
struct Burst {
    sent: u64,
    allowed: u64,
    limited: u64,
    blocked: u64,
    other: BTreeMap<u16, u64>,
}

fn edge_filter_wasm(root: &Path) -> Result<PathBuf> {
    if let Ok(path) = tollgate_wasm_host::testing::built_wasm("tollgate_edge_filter") {
        return Ok(path);
    }
    println!(
        "    building the filters: cargo {}",
        util::wasm_build_args().join(" ")
    );
    util::run(util::cargo(root).args(util::wasm_build_args()))?;
    tollgate_wasm_host::testing::built_wasm("tollgate_edge_filter")
        .context("the edge filter was built but its .wasm is not where expected")
}

/// A tiny upstream: a JSON body of a few hundred bytes for every request.
async fn demo_upstream() -> Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the demo upstream")?;
    let addr = listener.local_addr()?;
    let body = Bytes::from(
        json!({
            "items": (1..=12).map(|i| json!({"id": i, "name": format!("item {i}"), "price": "9.99"})).collect::<Vec<_>>(),
            "source": "demo upstream"
        })
        .to_string(),
    );
    let task = tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request| {
                    let body = body.clone();
                    async move {
                        hyper::Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(body))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    Ok((addr, task))
}

/// The gateway and its upstream, kept up after the burst so the budget step can show a
/// 402 through them.
struct DemoGateway {
    gateway: tollgate_gateway::RunningGateway,
    upstream: tokio::task::JoinHandle<()>,
}

impl DemoGateway {
    fn stop(self) {
        self.gateway.shutdown();
        self.upstream.abort();
    }
}

/// Starts the gateway in front of a demo upstream, sends a bounded burst per tenant key,
/// then waits for the edge usage to be flushed, ingested and served by the usage API.
/// Returns the gateway, still running.
async fn gateway_traffic(
    stack: &LocalStack,
    root: &Path,
    api: &Api,
    admin_key: &str,
    tenants: &[Tenant],
) -> Result<DemoGateway> {
    println!();
    println!("==> the gateway: the edge filter (.wasm) in front of a demo upstream");
    let module = tollgate_wasm_host::WasmModule::from_file(&edge_filter_wasm(root)?)
        .context("compiling the edge filter")?;
    let (upstream, upstream_task) = demo_upstream().await?;
    let plugin = json!({
        "gatewayId": "demo-gateway",
        "identity": {"source": "apiKey", "header": "x-api-key"},
        "snapshot": {"cluster": "usage_api", "path": "/v1/edge/snapshot", "intervalSeconds": 1, "apiKey": admin_key},
        "sqs": {"cluster": "sqs", "queueUrl": stack.queue_url},
        "flushIntervalSeconds": 2,
        "stale": {"policy": "failClosed", "maxAgeSeconds": 60},
        "meters": {"requests": EDGE_REQUESTS, "responseBytes": EDGE_RESPONSE_BYTES, "latencyMs": EDGE_LATENCY_MS},
        "routeGroups": [{"prefix": "/v1/items", "group": "items"}]
    });
    let config = tollgate_gateway::GatewayConfig::new(
        format!("http://{upstream}"),
        module,
        serde_json::to_vec(&plugin)?,
    )
    .with_cluster(tollgate_gateway::Cluster::new(
        "usage_api",
        stack.usage_api_url(),
    ))
    .with_cluster(
        tollgate_gateway::Cluster::new("sqs", stack.sqs_endpoint.clone())
            .signed(tollgate_gateway::SigV4::local("sqs")),
    );
    let gateway = tollgate_gateway::Gateway::start(config).context("starting the gateway")?;
    // The gateway stays up until its usage is flushed (every 2 s) and ingested.
    let result = match drive_gateway(&gateway, api, tenants).await {
        Ok(bursts) => wait_for_edge_usage(stack, api, tenants, &bursts).await,
        Err(e) => Err(e),
    };
    println!("    gateway metrics:");
    for (name, value) in gateway.env().metrics() {
        println!("      {name} = {value}");
    }
    let running = DemoGateway {
        gateway,
        upstream: upstream_task,
    };
    match result {
        Ok(()) => Ok(running),
        Err(e) => {
            running.stop();
            Err(e)
        }
    }
}

async fn drive_gateway(
    gateway: &tollgate_gateway::RunningGateway,
    api: &Api,
    tenants: &[Tenant],
) -> Result<Vec<Burst>> {
    let url = gateway.url();
    println!(
        "    listening on {url} (1 singleton + 4 worker VMs), upstream on loopback; waiting for the first snapshot"
    );
    // Until the first snapshot the filter fails closed (503) for everyone; an unknown
    // key's 401 says the snapshot is in, without spending any tenant's limits.
    let started = Instant::now();
    loop {
        let (status, _) = edge_get(&api.client, &url, "/v1/items", Some("tg_not_a_key")).await?;
        if status == 401 {
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(15),
            "the gateway got no snapshot from the usage API in 15 s (last status {status})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("    snapshot in after {}", seconds(started.elapsed()));
    let mut bursts: Vec<Burst> = tenants.iter().map(|_| Burst::default()).collect();
    let deadline = Instant::now() + BURST_DEADLINE;
    for (tenant, burst) in tenants.iter().zip(&mut bursts) {
        for i in 0..BURST_REQUESTS {
            if Instant::now() > deadline {
                break;
            }
            let path = format!("/v1/items/{}", i % 7);
            let (status, _) = edge_get(&api.client, &url, &path, Some(&tenant.key)).await?;
            burst.sent += 1;
            match status {
                200..=299 => burst.allowed += 1,
                429 => burst.limited += 1,
                402 => burst.blocked += 1,
                other => *burst.other.entry(other).or_default() += 1,
            }
        }
    }
    let (unknown, _) = edge_get(&api.client, &url, "/v1/items", Some("tg_not_a_key")).await?;
    println!(
        "    {:<36} {:>6} {:>8} {:>6} {:>6}  other",
        "tenant", "sent", "allowed", "429", "402"
    );
    for (tenant, burst) in tenants.iter().zip(&bursts) {
        println!(
            "    {:<36} {:>6} {:>8} {:>6} {:>6}  {:?}",
            tenant.spec.name, burst.sent, burst.allowed, burst.limited, burst.blocked, burst.other
        );
    }
    println!("    an unknown key: {unknown}");
    println!(
        "    (429 is a rate limit or a used-up quota — the gateway metrics below tell them apart; \
         402 a budget block)"
    );
    Ok(bursts)
}

async fn edge_get(
    client: &Client<HttpConnector, Full<Bytes>>,
    base: &str,
    path: &str,
    key: Option<&str>,
) -> Result<(u16, Bytes)> {
    let mut request = hyper::Request::get(format!("{base}{path}"));
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    let response = tokio::time::timeout(
        HTTP_TIMEOUT,
        client.request(request.body(Full::new(Bytes::new()))?),
    )
    .await
    .context("the gateway did not answer in time")?
    .context("calling the gateway")?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// Waits until the usage API reports, for every tenant, as many `edge_requests` as the
/// gateway allowed (the edge flushes every 2 s; ingest runs behind the queue).
async fn wait_for_edge_usage(
    stack: &LocalStack,
    api: &Api,
    tenants: &[Tenant],
    bursts: &[Burst],
) -> Result<()> {
    println!(
        "==> waiting for the edge usage: flushed to SQS, ingested, served by GET /v1/usage (at most {}s)",
        EDGE_DEADLINE.as_secs()
    );
    let step = Instant::now();
    loop {
        let mut metered = Vec::new();
        for tenant in tenants {
            let usage = api.get(&tenant.key, "/v1/usage").await?;
            let count = usage["meters"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["meter"] == json!(EDGE_REQUESTS))
                .and_then(|m| decimal(&m["quantity"]))
                .unwrap_or(Decimal::ZERO);
            metered.push(count);
        }
        let done = metered
            .iter()
            .zip(bursts)
            .all(|(count, burst)| *count == Decimal::from(burst.allowed));
        if done || step.elapsed() > EDGE_DEADLINE {
            for ((tenant, burst), count) in tenants.iter().zip(bursts).zip(&metered) {
                println!(
                    "    {:<36} allowed {:>6}   GET /v1/usage {EDGE_REQUESTS} {:>6}",
                    tenant.spec.name, burst.allowed, count
                );
            }
            let dlq = queue_depth(stack, &stack.dlq_url).await?;
            ensure!(
                done,
                "the usage API does not report the allowed requests after {}s (DLQ depth {dlq})",
                EDGE_DEADLINE.as_secs()
            );
            println!(
                "    ✓ every allowed request metered once, in {}",
                seconds(step.elapsed())
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Budgets, alerts and Stripe

/// The tenant whose budget is used up (hard limit, webhook) and the one that stays under.
const OVER_BUDGET: &str = "acme";
const UNDER_BUDGET: &str = "globex";
/// How long webhook deliveries and the edge's 402 may take to show.
const BUDGET_DEADLINE: Duration = Duration::from_secs(45);
/// Billing-sync runs (explicit) before the check gives up: one more when an hour closed
/// while it was checked.
const BILLING_ATTEMPTS: usize = 3;

/// Budgets with a webhook for one tenant, one explicit budget run, the alerts, the
/// verified deliveries and the edge block; then one explicit billing-sync run, the Stripe
/// requests it made and the reconciliation. Fails when any of them disagree.
async fn budgets_and_stripe(
    stack: &LocalStack,
    root: &Path,
    api: &Api,
    admin_key: &str,
    tenants: &[Tenant],
    gateway: &DemoGateway,
    receiver: &WebhookReceiver,
) -> Result<BillingSummary> {
    println!();
    println!("==> budgets, alerts and Stripe");
    let over = tenant(tenants, OVER_BUDGET)?;
    let under = tenant(tenants, UNDER_BUDGET)?;
    let webhook = api
        .put(
            admin_key,
            &format!("/v1/admin/tenants/{OVER_BUDGET}/webhook"),
            &json!({"url": receiver.url(&format!("/hooks/{OVER_BUDGET}"))}),
        )
        .await?;
    let secret = WebhookSecret::parse(&text_of(&webhook["secret"]))
        .map_err(|e| anyhow::anyhow!("the webhook reply's secret does not parse: {e}"))?;
    receiver.set_secret(secret);
    println!(
        "    webhook receiver on {} (verifies Tollgate-Signature); PUT /v1/admin/tenants/{OVER_BUDGET}/webhook → {} (secret shown once: {}…)",
        receiver.url("/"),
        text_of(&webhook["url"]),
        text_of(&webhook["secret"]).get(..10).unwrap_or("")
    );

    let month = Window::containing(Granularity::Month, Utc::now()).key();
    let preview = api
        .get(&over.key, &format!("/v1/invoice/preview?month={month}"))
        .await?;
    let spent = decimal(&preview["total"]).context("the invoice preview has no total")?;
    let currency = text_of(&preview["currency"]);
    // Low enough that the month so far is over it: 50, 80 and 100 % are all crossed.
    let low = (spent * Decimal::new(8, 1)).floor().max(Decimal::ONE);
    ensure!(
        spent >= low,
        "{OVER_BUDGET}'s month so far ({spent} {currency}) is too small for the demo's budget"
    );
    let budget = json!({"monthlyAmount": low.to_string(), "currency": currency, "thresholds": [50, 80, 100], "hardLimit": true});
    api.put(&over.key, "/v1/budget", &budget).await?;
    println!(
        "    PUT /v1/budget ({OVER_BUDGET}'s own key): {low} {currency} a month, hard limit (invoice preview so far: {spent} {currency})"
    );
    let forecast = api.get(&under.key, "/v1/forecast").await?;
    let projected = decimal(&forecast["cost"]["projected"]).unwrap_or_default();
    let under_spent = decimal(&forecast["cost"]["soFar"]).unwrap_or_default();
    // Twice the projection, in hundreds: neither a threshold nor the forecast is reached.
    let high = ((projected.max(under_spent) * Decimal::TWO) / Decimal::ONE_HUNDRED).ceil()
        * Decimal::ONE_HUNDRED;
    let high = high.max(Decimal::ONE_HUNDRED);
    let budget = json!({"monthlyAmount": high.to_string(), "currency": currency, "thresholds": [50, 80, 100], "hardLimit": false});
    api.put(
        admin_key,
        &format!("/v1/budget?tenant={UNDER_BUDGET}"),
        &budget,
    )
    .await?;
    println!(
        "    PUT /v1/budget?tenant={UNDER_BUDGET} (admin key): {high} {currency} a month, no hard limit (so far {under_spent}, projected {projected})"
    );

    let step = Instant::now();
    let report = stack
        .run_budget(Utc::now())
        .await
        .context("running the budget function")?;
    println!(
        "    budget run (also every {}s): {} tenants, {} with a budget, {} alerts raised, {} delivered, newly blocked {} (a PUT /v1/budget below the spend with a hard limit blocks at once), in {}",
        SCHEDULE_EVERY.as_secs(),
        report["tenants"],
        report["evaluated"],
        report["alertsRaised"],
        report["deliveriesSucceeded"],
        report["blocked"],
        seconds(step.elapsed())
    );
    ensure!(
        report["skipped"].as_object().is_none_or(|s| s.is_empty()),
        "the budget run skipped tenants: {}",
        report["skipped"]
    );
    let alerts = wait_for_deliveries(api, over).await?;
    show_alerts(&alerts, receiver)?;
    let quiet = api.get(&under.key, "/v1/alerts").await?;
    let quiet = quiet["alerts"].as_array().map_or(0, Vec::len);
    ensure!(
        quiet == 0,
        "{UNDER_BUDGET} stays under its budget but has {quiet} alerts"
    );
    println!("    GET /v1/alerts ({UNDER_BUDGET}): none — it stays under its budget");
    show_block(api, admin_key, over, under, gateway).await?;

    let catalog = demo_catalog(root)?;
    let mut attempt = 1;
    loop {
        match billing_sync(stack, api, admin_key, tenants, &catalog).await? {
            Checked::Agrees(stripe_units) => {
                return Ok(BillingSummary {
                    alerts: alerts.len(),
                    stripe_requests: stack.stripe.requests().len(),
                    stripe_units,
                });
            }
            Checked::HourClosed(why) if attempt < BILLING_ATTEMPTS => {
                println!("    an hour closed while checking ({why}); running billing-sync again");
                attempt += 1;
            }
            Checked::HourClosed(why) => bail!("billing-sync: {why}"),
        }
    }
}

/// What the budget and Stripe step saw, for the closing summary.
#[derive(Debug)]
struct BillingSummary {
    alerts: usize,
    stripe_requests: usize,
    stripe_units: u64,
}

fn tenant<'a>(tenants: &'a [Tenant], id: &str) -> Result<&'a Tenant> {
    tenants
        .iter()
        .find(|t| t.spec.id == id)
        .with_context(|| format!("the demo has no tenant {id}"))
}

/// A secret for the receiver until the API issues the tenant's.
fn placeholder_secret() -> Result<WebhookSecret> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("the operating system's random source failed: {e}"))?;
    Ok(WebhookSecret::from_random_bytes(bytes))
}

/// The tenant's alerts once none is waiting for a delivery attempt (the budget schedule
/// retries failed ones), at most [`BUDGET_DEADLINE`].
async fn wait_for_deliveries(api: &Api, tenant: &Tenant) -> Result<Vec<Value>> {
    let started = Instant::now();
    loop {
        let reply = api.get(&tenant.key, "/v1/alerts").await?;
        let alerts = reply["alerts"].as_array().cloned().unwrap_or_default();
        let pending = alerts
            .iter()
            .filter(|a| a["delivery"]["status"] == json!("pending"))
            .count();
        if pending == 0 || started.elapsed() > BUDGET_DEADLINE {
            return Ok(alerts);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Prints the alerts and the deliveries the receiver verified; every threshold must have
/// an alert, delivered and verified.
fn show_alerts(alerts: &[Value], receiver: &WebhookReceiver) -> Result<()> {
    println!("    GET /v1/alerts ({OVER_BUDGET}):");
    println!(
        "      {:<24} {:<9} {:>8} {:>10} {:>8}  delivery",
        "id", "severity", "used %", "spent", "budget"
    );
    for alert in alerts {
        println!(
            "      {:<24} {:<9} {:>8} {:>10} {:>8}  {} after {} attempt(s)",
            text_of(&alert["id"]),
            text_of(&alert["severity"]),
            text_of(&alert["percentUsed"]),
            text_of(&alert["spent"]),
            text_of(&alert["budget"]),
            text_of(&alert["delivery"]["status"]),
            alert["delivery"]["attempts"],
        );
    }
    let month = Window::containing(Granularity::Month, Utc::now()).key();
    let received = receiver.received();
    println!(
        "    the webhook receiver got {} deliveries:",
        received.len()
    );
    let mut verified_alerts = BTreeMap::new();
    for delivery in &received {
        let body: Value = serde_json::from_slice(&delivery.body).unwrap_or(Value::Null);
        let ok = delivery.verified.is_ok();
        println!(
            "      {} {:<24} {:<26} signature {} → HTTP {}",
            delivery.path,
            text_of(&body["alert"]["id"]),
            text_of(&body["type"]),
            if ok { "ok" } else { "NOT VERIFIED" },
            delivery.status.as_u16()
        );
        ensure!(
            ok,
            "a webhook delivery did not verify: {:?}",
            delivery.verified
        );
        if delivery.status.is_success() {
            verified_alerts.insert(text_of(&body["alert"]["id"]), ());
        }
    }
    for threshold in [50, 80, 100] {
        let id = format!("{month}.threshold-{threshold}");
        let alert = alerts
            .iter()
            .find(|a| text_of(&a["id"]) == id)
            .with_context(|| format!("no alert {id} for {OVER_BUDGET}"))?;
        ensure!(
            alert["delivery"]["status"] == json!("delivered"),
            "alert {id} is not delivered: {}",
            alert["delivery"]
        );
    }
    for alert in alerts {
        let id = text_of(&alert["id"]);
        ensure!(
            verified_alerts.contains_key(&id),
            "alert {id} has no verified delivery at the receiver"
        );
    }
    println!(
        "    ✓ {} alerts (50, 80 and 100 %), each delivered once at least and verified",
        alerts.len()
    );
    Ok(())
}

/// The over-budget tenant must be on the edge snapshot's block list, and the gateway must
/// answer its key 402 once it has the new snapshot.
async fn show_block(
    api: &Api,
    admin_key: &str,
    over: &Tenant,
    under: &Tenant,
    gateway: &DemoGateway,
) -> Result<()> {
    let snapshot = api.get(admin_key, "/v1/edge/snapshot").await?;
    let blocked_of = |id: &str| {
        snapshot["tenants"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["tenant"] == json!(id))
            .map(|t| t["blocked"].clone())
    };
    let over_blocked = blocked_of(OVER_BUDGET).unwrap_or(Value::Null);
    let under_blocked = blocked_of(UNDER_BUDGET).unwrap_or(Value::Null);
    println!(
        "    GET /v1/edge/snapshot: {OVER_BUDGET} blocked: {}, {UNDER_BUDGET} blocked: {}",
        text_of(&over_blocked),
        text_of(&under_blocked)
    );
    ensure!(
        over_blocked == json!("budget_hard_limit"),
        "{OVER_BUDGET} is not on the snapshot's block list as budget_hard_limit: {over_blocked}"
    );
    ensure!(
        under_blocked.is_null(),
        "{UNDER_BUDGET} is blocked: {under_blocked}"
    );
    // The gateway refreshes its snapshot every second.
    let url = gateway.gateway.url();
    let started = Instant::now();
    let (status, body) = loop {
        let (status, body) = edge_get(&api.client, &url, "/v1/items/1", Some(&over.key)).await?;
        if status == 402 || started.elapsed() > BUDGET_DEADLINE {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let code: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    println!(
        "    through the gateway: {OVER_BUDGET}'s key → HTTP {status} {} (after {})",
        text_of(&code["code"]),
        seconds(started.elapsed())
    );
    ensure!(
        status == 402,
        "the gateway answers {OVER_BUDGET}'s key {status}, not 402, {}s after the block",
        BUDGET_DEADLINE.as_secs()
    );
    let (status, _) = edge_get(&api.client, &url, "/v1/items/1", Some(&under.key)).await?;
    println!("    through the gateway: {UNDER_BUDGET}'s key → HTTP {status}");
    ensure!(status != 402, "the gateway blocks {UNDER_BUDGET} too");
    println!("    ✓ the hard limit blocks {OVER_BUDGET} at the edge (402), and only it");
    Ok(())
}

/// The demo catalog's meters reported to Stripe: meter, event name, units per quantity.
fn demo_catalog(root: &Path) -> Result<Vec<(String, String, Decimal)>> {
    let path = root.join(METERS);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let catalog =
        MeterCatalog::from_json(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(catalog
        .meters()
        .filter_map(|m| {
            m.stripe.as_ref().map(|s| {
                (
                    m.name.to_string(),
                    s.event_name.clone(),
                    s.units_per_quantity,
                )
            })
        })
        .collect())
}

/// How a billing-sync check ended.
enum Checked {
    /// With the units Stripe accepted in all.
    Agrees(u64),
    /// The numbers moved because an hour closed during the check: run again.
    HourClosed(String),
}

/// One explicit billing-sync run, the requests Stripe got, and the check that Stripe's
/// accepted units are exactly the usage of the closed hours, as the reconciliation says.
async fn billing_sync(
    stack: &LocalStack,
    api: &Api,
    admin_key: &str,
    tenants: &[Tenant],
    catalog: &[(String, String, Decimal)],
) -> Result<Checked> {
    let at = Utc::now();
    let hour = Window::containing(Granularity::Hour, at);
    let month = Window::containing(Granularity::Month, at);
    let step = Instant::now();
    let report = stack
        .run_billing_sync(at)
        .await
        .context("running billing-sync")?;
    println!(
        "    billing-sync run at {} (also every {}s; reports closed hours, so up to {}): {} events recorded, {} sent with {} units, {} carried (under one unit), {} resent, {} rejected, in {}",
        at.to_rfc3339_opts(SecondsFormat::Secs, true),
        SCHEDULE_EVERY.as_secs(),
        hour.start().to_rfc3339_opts(SecondsFormat::Secs, true),
        report["eventsRecorded"],
        report["eventsSent"],
        report["unitsSent"],
        report["eventsCarried"],
        report["eventsResent"],
        report["eventsRejected"],
        seconds(step.elapsed())
    );
    ensure!(
        report["complete"] == json!(true) && report["stopped"].as_array().is_none_or(Vec::is_empty),
        "billing-sync did not finish cleanly: {report}"
    );
    if report["eventsRecorded"] == json!(0) {
        println!(
            "    (nothing new for this run: the schedule's runs had already reported every closed hour, and a closed hour is reported once)"
        );
    }

    let requests = stack.stripe.requests();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for request in &requests {
        *statuses.entry(request.status).or_default() += 1;
    }
    println!(
        "    the Stripe requests that would be sent ({} so far to the stand-in, by status {:?}); a few:",
        requests.len(),
        statuses
    );
    let mut shown_customers = Vec::new();
    for request in &requests {
        let customer = request
            .field("payload[stripe_customer_id]")
            .unwrap_or_default()
            .to_owned();
        if shown_customers.contains(&customer) {
            continue;
        }
        println!("      {} {}", request.method, request.path);
        println!(
            "        Idempotency-Key: {}",
            request.idempotency_key.as_deref().unwrap_or("–")
        );
        for field in [
            "event_name",
            "payload[stripe_customer_id]",
            "payload[value]",
            "identifier",
        ] {
            println!("        {field}={}", request.field(field).unwrap_or("–"));
        }
        let timestamp = request.field("timestamp").unwrap_or("–");
        let when = timestamp
            .parse::<i64>()
            .ok()
            .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0))
            .map(|t| {
                format!(
                    " ({}, the hour's start)",
                    t.to_rfc3339_opts(SecondsFormat::Secs, true)
                )
            })
            .unwrap_or_default();
        println!("        timestamp={timestamp}{when}");
        shown_customers.push(customer);
    }
    let duplicates = stack.stripe.duplicate_identifiers();
    ensure!(
        duplicates.is_empty(),
        "Stripe accepted identifiers more than once: {duplicates:?}"
    );

    let totals = stack.stripe.totals();
    let reconciliation = api
        .get(
            admin_key,
            &format!("/v1/admin/billing/reconciliation?month={}", month.key()),
        )
        .await?;
    let lines = reconciliation["lines"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    println!(
        "    Stripe's accepted units against the usage of the closed hours, and GET /v1/admin/billing/reconciliation?month={}:",
        month.key()
    );
    println!(
        "      {:<7} {:<20} {:>16} {:>10} {:>10} {:>16} {:>16}",
        "tenant", "meter", "closed hours", "units due", "Stripe", "reported", "open hour"
    );
    let mut problems = Vec::new();
    let mut open = 0;
    for tenant in tenants {
        for (meter, event_name, units_per_quantity) in catalog {
            let closed = closed_hours_usage(api, tenant, meter, month, hour).await?;
            let due = (closed * units_per_quantity).floor();
            let accepted = totals
                .get(&(tenant.spec.stripe_customer.to_owned(), event_name.clone()))
                .copied()
                .unwrap_or(0);
            let line = lines
                .iter()
                .find(|l| l["tenant"] == json!(tenant.spec.id) && l["meter"] == json!(meter));
            let reported = line
                .and_then(|l| decimal(&l["reported"]))
                .unwrap_or_default();
            let difference = line
                .and_then(|l| decimal(&l["difference"]))
                .unwrap_or_default();
            let nothing = closed.is_zero() && accepted == 0 && reported.is_zero();
            if nothing && difference.is_zero() {
                continue;
            }
            println!(
                "      {:<7} {:<20} {:>16} {:>10} {:>10} {:>16} {:>16}",
                tenant.spec.id,
                meter,
                shown(&json!(closed.to_string())),
                due,
                accepted,
                shown(&json!(reported.to_string())),
                shown(&json!(difference.to_string())),
            );
            let what = format!("{}/{meter}", tenant.spec.id);
            if Decimal::from(accepted) != due {
                problems.push(format!(
                    "{what}: Stripe accepted {accepted} units, the closed hours make {due}"
                ));
            }
            if reported != closed {
                problems.push(format!(
                    "{what}: the ledger reports {reported}, the closed hours hold {closed}"
                ));
            }
            if let Some(line) = line {
                let accepted_line = line["unitsAccepted"].as_u64().unwrap_or(u64::MAX);
                let pending = line["unitsPending"].as_u64().unwrap_or(u64::MAX);
                let rejected = decimal(&line["rejected"]).unwrap_or(Decimal::ONE);
                if accepted_line != accepted || pending != 0 || !rejected.is_zero() {
                    problems.push(format!(
                        "{what}: reconciliation says {accepted_line} units accepted, {pending} pending, {rejected} rejected; Stripe has {accepted}"
                    ));
                }
                // What is not reported yet is the open hour's usage: never negative.
                if difference.is_zero() {
                    continue;
                }
                if difference.is_sign_negative() {
                    problems.push(format!("{what}: reported more than used ({difference})"));
                } else {
                    open += 1;
                }
            }
        }
    }
    println!(
        "    reconciliation: {} lines, {} differences, settled {}: {open} of them usage of the open hour {} (reported once it closes)",
        lines.len(),
        reconciliation["differences"],
        reconciliation["settled"],
        hour.key()
    );
    if !problems.is_empty() && Window::containing(Granularity::Hour, Utc::now()) != hour {
        return Ok(Checked::HourClosed(problems.join("; ")));
    }
    ensure!(
        problems.is_empty(),
        "Stripe and the usage disagree:\n  {}",
        problems.join("\n  ")
    );
    println!(
        "    ✓ Stripe's accepted units = the usage of every closed hour, in whole units; no identifier accepted twice; nothing pending or rejected"
    );
    Ok(Checked::Agrees(totals.values().sum()))
}

/// A meter's usage of the month's hours that closed before `open` (the hour in progress),
/// from `GET /v1/usage/history` with the tenant's key.
async fn closed_hours_usage(
    api: &Api,
    tenant: &Tenant,
    meter: &str,
    month: Window,
    open: Window,
) -> Result<Decimal> {
    if open.start() <= month.start() {
        return Ok(Decimal::ZERO);
    }
    let path = format!(
        "/v1/usage/history?granularity=hour&meter={meter}&from={}&to={}",
        month.start().to_rfc3339_opts(SecondsFormat::Secs, true),
        open.start().to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    let history = api.get(&tenant.key, &path).await?;
    let open_key = open.key();
    let mut total = Decimal::ZERO;
    for row in history["rows"].as_array().into_iter().flatten() {
        // Keys of one granularity sort by time.
        if text_of(&row["window"]["key"]) >= open_key {
            continue;
        }
        total += decimal(&row["quantity"]).unwrap_or_default();
    }
    Ok(total)
}
