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
//!    `.wasm`) in front of a tiny upstream, a traffic generator pushing each tenant's plan
//!    at its own pace, all at once and bounded (allowed, 429 rate, 429 quota), then the edge's usage flushed to SQS, ingested, and read back
//!    from the usage API: metered requests equal allowed ones;
//! 5. [`budgets_and_stripe`]: a webhook (a verifying receiver on loopback) and a budget
//!    acme's month so far exceeds, with a hard limit, and one globex stays under; one
//!    explicit budget run, then the alerts (50, 80, 100 %) with their delivery status, the
//!    deliveries the receiver verified, acme on the edge snapshot's block list and 402 at
//!    the gateway; then one explicit billing-sync run, the Stripe meter-event requests it
//!    made, and a check that Stripe's accepted units equal the usage of the closed hours
//!    (the open hour shows in the reconciliation as not reported yet);
//! 6. [`summary::close_the_books`]: a last round of traffic (acme's requests now meet
//!    402), billing-sync with the payload of the first run after this hour closes, and
//!    the summary per tenant — sent, allowed, limited, blocked, metered, billed — which
//!    must agree, and Stripe's units for every tenant and meter = the month's usage;
//! 7. the stack stays up for poking at, until Ctrl-C or for at most 10 minutes, unless
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
use tollgate_core::tenant::{ApiKeyHash, ApiKeyRecord, ApiKeyRole};
use tollgate_core::window::{Granularity, Window};
use tollgate_devstack::webhook::WebhookReceiver;
use tollgate_local::{LOCAL_STRIPE_KEY, LocalStack, MappingMetrics, StackConfig, build_functions};

use crate::util;

mod billing;
mod gateway;
mod summary;

use billing::{BillingSummary, OVER_BUDGET, budgets_and_stripe, placeholder_secret};
use gateway::gateway_traffic;

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

/// The demo tenant `id`.
fn tenant<'a>(tenants: &'a [Tenant], id: &str) -> Result<&'a Tenant> {
    tenants
        .iter()
        .find(|t| t.spec.id == id)
        .with_context(|| format!("the demo has no tenant {id}"))
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
    let closed = match billing {
        Ok(summary) => summary::close_the_books(stack, root, &api, &tenants, &gateway)
            .await
            .map(|()| summary),
        Err(e) => Err(e),
    };
    gateway.stop();
    let summary = closed?;
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
    let admin_key = util::new_api_key()?;
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
        util::grouped(&stream.distinct.to_string())
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
        util::grouped(&stream.events.len().to_string()),
        sent.requests,
        made_of.join(", "),
        util::grouped(&sent.accepted.to_string()),
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
        util::grouped(&expected.to_string()),
        util::grouped(&served.normalize().to_string()),
        util::grouped(&sent.accepted.to_string()),
        util::grouped(&sent.counted.len().to_string()),
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
            "    dashboard  {}#key={}    # {} (open in a browser; the key leaves the address bar at once)",
            api.url("/v1/dashboard"),
            tenant.key,
            tenant.spec.id
        );
    }
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
        util::grouped(&summary.stripe_units.to_string()),
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
        |d| util::grouped(&d.round_dp(3).normalize().to_string()),
    )
}

fn seconds(elapsed: Duration) -> String {
    format!("{:.1}s", elapsed.as_secs_f64())
}
