//! `cargo xtask bench cost`: what metering costs on AWS, measured and then modelled.
//!
//! 1. **Gateways.** G gateway instances, each the real `tollgate_edge_filter.wasm` in the
//!    proxy-wasm host (a singleton and one worker VM over its own [`HostEnv`] and manual
//!    clock), started a flush interval apart in turn so their flushes do not line up. The
//!    simulated clock runs at R requests/s over all of them; each request picks its
//!    tenant uniformly at random (a fixed seed), gets a 200 with 100–2,000 bytes after
//!    5–255 ms, and is metered by the filter's three meters. Every `SendMessageBatch` the
//!    singletons make is captured and answered as SQS would.
//! 2. **Ingest.** The captured bodies go to the real [`Ingest::handle`] against DynamoDB
//!    Local, grouped as the event source mapping would: one invocation per batching
//!    window W (up to the batch size) over all gateways' messages in time order. An
//!    interceptor records every DynamoDB call and which items each write touched; a Scan
//!    afterwards gives every item's size, from which write and read units follow by
//!    DynamoDB's item-size rules (DynamoDB Local's consumed capacity is not realistic).
//! 3. **Check.** The hourly counters must hold exactly the requests sent, per tenant.
//! 4. **Model.** The run calibrates [`super::cost_model`], which prints the headline, a
//!    sweep, the idle floor and the naive design; `docs/cost.md` explains every term.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tollgate_core::aggregate::AggregateState;
use tollgate_core::ids::{MeterName, PlanName, TenantId};
use tollgate_core::meter::MeterCatalog;
use tollgate_core::tenant::{ApiKeyHash, TenantProfile, TenantStatus};
use tollgate_core::window::{EventTimePolicy, Granularity};
use tollgate_ingest::Ingest;
use tollgate_store::DynamoDbStore;
use tollgate_wasm_host::{Clock, HostEnv, HttpCallResult, ManualClock, PluginConfig, Vm};

use super::calls::{Recorder, number_size};
use super::cost_model::{
    self, Calibration, Deployment, PRICES_AS_OF, Prices, Scenario, dollars, per_million, ratio,
};

/// Overrides the request count of the headline run (for a quick look; the docs quote the
/// full 1,000,000).
pub const REQUESTS_ENV: &str = "TOLLGATE_BENCH_COST_REQUESTS";

const METERS: [&str; 3] = ["requests", "response_bytes", "latency_ms"];
/// The event source mapping's batch size in every run (above 10 needs a window ≥ 1 s).
const BATCH_SIZE: usize = 100;
/// Messages one receive hands over when there is no window.
const RECEIVE_MAX: usize = 10;

/// One measured configuration.
#[derive(Debug, Clone, Copy)]
struct Setup {
    requests: u64,
    rate: u64,
    gateways: usize,
    tenants: usize,
    flush_seconds: u64,
}

/// One message a singleton sent.
#[derive(Debug, Clone)]
struct Sent {
    at: DateTime<Utc>,
    body: String,
}

/// What the gateways did.
#[derive(Debug, Default)]
struct Gateways {
    messages: Vec<Sent>,
    send_calls: u64,
    /// Requests SQS bills the calls as: ⌈payload / 64 KiB⌉ each.
    send_billed: u64,
    payload_bytes: u64,
    /// Requests sent per tenant, and response bytes per tenant (ground truth).
    sent: Vec<u64>,
    bytes: Vec<u64>,
    /// Minute rows in all messages, and their serialised bytes.
    rows: u64,
    row_bytes: u64,
    envelope_bytes: u64,
    wall: Duration,
}

/// A tiny deterministic generator (splitmix64): the same traffic on every run.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn traffic_start() -> Result<DateTime<Utc>> {
    Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0)
        .single()
        .context("the start time")
}

fn system_time(at: DateTime<Utc>) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(at.timestamp_millis()).unwrap_or(0))
}

fn tenant_id(t: usize) -> String {
    format!("tenant-{t}")
}

fn api_key(t: usize) -> String {
    format!("tg_cost_{t}")
}

fn snapshot_json(tenants: usize, at: DateTime<Utc>) -> Vec<u8> {
    let mut keys: Vec<(String, String)> = (0..tenants)
        .map(|t| {
            (
                ApiKeyHash::of(&api_key(t)).as_hex().to_owned(),
                tenant_id(t),
            )
        })
        .collect();
    keys.sort();
    json!({
        "schema": "tollgate.edge-snapshot/1",
        "generatedAt": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "tenants": (0..tenants).map(|t| json!({
            "tenant": tenant_id(t), "plan": "bench",
            "rateLimits": {"perSecond": null, "perMinute": null, "perHour": null, "perDay": null},
            "quotas": [], "blocked": null
        })).collect::<Vec<_>>(),
        "apiKeys": keys.into_iter().map(|(sha, t)| json!({"sha256": sha, "tenant": t})).collect::<Vec<_>>()
    })
    .to_string()
    .into_bytes()
}

fn plugin_config(gateway: usize, flush_seconds: u64) -> Vec<u8> {
    json!({
        "gatewayId": format!("gw-{gateway}"),
        "identity": {"source": "apiKey", "header": "x-api-key"},
        "snapshot": {"cluster": "usage_api", "path": "/v1/edge/snapshot", "intervalSeconds": 60},
        "sqs": {"cluster": "sqs", "queueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/usage"},
        "flushIntervalSeconds": flush_seconds,
        "stale": {"policy": "failOpen", "maxAgeSeconds": 3600},
        "meters": {"requests": METERS[0], "responseBytes": METERS[1], "latencyMs": METERS[2]},
        "routeGroups": [{"prefix": "/v1/items", "group": "items"}]
    })
    .to_string()
    .into_bytes()
}

/// One gateway instance: a singleton and a worker over one host.
struct Gateway {
    clock: Arc<ManualClock>,
    singleton: Vm,
    worker: Vm,
}

impl Gateway {
    fn start(gateway: usize, at: DateTime<Utc>, flush_seconds: u64) -> Result<Gateway> {
        let module = tollgate_wasm_host::testing::module("tollgate_edge_filter")?;
        let clock = Arc::new(ManualClock::new(system_time(at)));
        let env = HostEnv::new(clock.clone() as Arc<dyn Clock>).with_clusters(["usage_api", "sqs"]);
        let plugin = |root_id: &str| PluginConfig {
            vm_id: "tollgate".to_owned(),
            root_id: root_id.to_owned(),
            plugin_name: "tollgate".to_owned(),
            vm_configuration: Vec::new(),
            plugin_configuration: plugin_config(gateway, flush_seconds),
        };
        let singleton = Vm::start(&module, &env, plugin("tollgate_flush"))?;
        let worker = Vm::start(&module, &env, plugin("tollgate"))?;
        Ok(Gateway {
            clock,
            singleton,
            worker,
        })
    }

    /// One request at `at`, answered 200 with `bytes` bytes after `latency`.
    fn request(&mut self, at: SystemTime, key: &str, body: &[u8], latency: Duration) -> Result<()> {
        self.clock.set(at);
        let mut stream = self.worker.new_stream()?;
        let headers = vec![
            (":method".to_owned(), "GET".to_owned()),
            (":path".to_owned(), "/v1/items/42".to_owned()),
            (":authority".to_owned(), "api.example".to_owned()),
            (":scheme".to_owned(), "https".to_owned()),
            ("x-api-key".to_owned(), key.to_owned()),
        ];
        stream.on_request_headers(headers, true)?;
        if let Some(reply) = stream.local_reply() {
            bail!("the filter answered {} to a bench request", reply.status);
        }
        self.clock.set(at + latency);
        stream.on_response_headers(
            vec![
                (":status".to_owned(), "200".to_owned()),
                ("content-length".to_owned(), body.len().to_string()),
            ],
            false,
        )?;
        stream.on_response_body(body, true)?;
        stream.finish()?;
        Ok(())
    }

    /// Moves the clock to `at`, fires ticks and hand-overs, and answers every call the
    /// singleton makes: the snapshot as the usage API would, `SendMessageBatch` as SQS.
    fn step(&mut self, at: DateTime<Utc>, tenants: usize, out: &mut Gateways) -> Result<()> {
        self.clock.set(system_time(at));
        self.worker.poll()?;
        self.singleton.poll()?;
        self.singleton.poll()?;
        for _ in 0..1_000 {
            let calls = self.singleton.take_http_calls();
            if calls.is_empty() {
                return Ok(());
            }
            for call in calls {
                let body = if call.cluster == "usage_api" {
                    snapshot_json(tenants, at)
                } else {
                    sqs_answer(&call.body, at, out)?
                };
                self.singleton.deliver_http_response(
                    call.token,
                    HttpCallResult::Response {
                        headers: vec![(":status".to_owned(), "200".to_owned())],
                        body,
                        trailers: Vec::new(),
                    },
                )?;
            }
        }
        bail!("the singleton kept calling out")
    }
}

/// Records a `SendMessageBatch` call and answers that every entry was taken.
fn sqs_answer(request: &[u8], at: DateTime<Utc>, out: &mut Gateways) -> Result<Vec<u8>> {
    let request: Value = serde_json::from_slice(request).context("a SendMessageBatch body")?;
    let entries = request["Entries"].as_array().cloned().unwrap_or_default();
    let mut payload = 0u64;
    let mut successful = Vec::new();
    for entry in entries {
        let body = entry["MessageBody"].as_str().unwrap_or_default().to_owned();
        payload += body.len() as u64;
        let parsed: Value = serde_json::from_str(&body).context("an edge batch")?;
        let rows = parsed["rows"].as_array().cloned().unwrap_or_default();
        let row_bytes: u64 = rows.iter().map(|r| r.to_string().len() as u64).sum();
        out.rows += rows.len() as u64;
        out.row_bytes += row_bytes;
        out.envelope_bytes += body.len() as u64 - row_bytes - (rows.len() as u64).saturating_sub(1);
        successful.push(
            json!({"Id": entry["Id"], "MessageId": format!("m-{}", out.messages.len()),
                               "MD5OfMessageBody": ""}),
        );
        out.messages.push(Sent { at, body });
    }
    out.send_calls += 1;
    out.send_billed += payload.div_ceil(64 * 1024).max(1);
    out.payload_bytes += payload;
    Ok(json!({"Successful": successful, "Failed": []})
        .to_string()
        .into_bytes())
}

/// Runs `setup` through the gateways and returns what they sent.
fn run_gateways(setup: Setup) -> Result<Gateways> {
    let started = Instant::now();
    let t0 = traffic_start()?;
    let flush = i64::try_from(setup.flush_seconds)?;
    let g_count = setup.gateways;
    let mut out = Gateways {
        sent: vec![0; setup.tenants],
        bytes: vec![0; setup.tenants],
        ..Gateways::default()
    };
    let keys: Vec<String> = (0..setup.tenants).map(api_key).collect();
    let body = vec![b'x'; 2_000];
    let mut random = Random(0x7011_6a7e);
    // Gateway g starts g·F/G seconds into a warm-up of F + 2 s: flushes are staggered.
    let warm_up = flush + 2;
    let mut gateways: Vec<Option<Gateway>> = (0..g_count).map(|_| None).collect();
    let start_of = |g: usize| {
        t0 - chrono::Duration::seconds(warm_up)
            + chrono::Duration::milliseconds(flush * 1000 * g as i64 / g_count as i64)
    };
    let seconds = i64::try_from(setup.requests.div_ceil(setup.rate))?;
    let mut issued = 0u64;
    for second in -warm_up..seconds + flush + 3 {
        let now = t0 + chrono::Duration::seconds(second);
        let next = now + chrono::Duration::seconds(1);
        for (g, slot) in gateways.iter_mut().enumerate() {
            if slot.is_none() && start_of(g) < next {
                *slot = Some(Gateway::start(g, start_of(g), setup.flush_seconds)?);
            }
        }
        // This second's requests, round-robin over the gateways, spread evenly in it.
        let due = if second >= 0 {
            setup.rate.min(setup.requests - issued)
        } else {
            0
        };
        let per_gateway: Vec<u64> = (0..g_count as u64)
            .map(|g| due / g_count as u64 + u64::from(g < due % g_count as u64))
            .collect();
        for (g, slot) in gateways.iter_mut().enumerate() {
            let Some(gateway) = slot else { continue };
            let n = per_gateway[g];
            for j in 0..n {
                let at = system_time(now) + Duration::from_nanos(j * 1_000_000_000 / n.max(1));
                let tenant = random.below(setup.tenants as u64) as usize;
                let bytes = 100 + random.below(1_901) as usize;
                let spread = random.below(1_000);
                let latency = Duration::from_millis(5 + spread * spread / 4_000);
                gateway.request(at, &keys[tenant], &body[..bytes], latency)?;
                out.sent[tenant] += 1;
                out.bytes[tenant] += bytes as u64;
            }
            gateway.step(next, setup.tenants, &mut out)?;
        }
        issued += due;
    }
    let counted: u64 = out
        .messages
        .iter()
        .map(|m| requests_in(&m.body))
        .sum::<Result<u64>>()?;
    ensure!(
        counted == setup.requests,
        "the gateways sent {counted} requests' usage, not {}",
        setup.requests
    );
    out.wall = started.elapsed();
    Ok(out)
}

/// The `requests` count rows of one message, summed.
fn requests_in(body: &str) -> Result<u64> {
    let batch: tollgate_core::message::EdgeBatch = serde_json::from_str(body)?;
    Ok(batch
        .rows
        .iter()
        .filter(|r| r.meter.as_str() == METERS[0])
        .map(|r| match r.state {
            AggregateState::Count { n } => n,
            _ => 0,
        })
        .sum())
}

// ---------------------------------------------------------------------------------------
// DynamoDB: every call, and the items each write or read touched
// ---------------------------------------------------------------------------------------

/// An item's size by DynamoDB's rules: attribute names plus values; a number is about
/// 1 byte per 2 significant digits plus 1; a list or map 3 bytes plus 1 per element.
/// <https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html>
fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter()
        .map(|(name, v)| name.len() + value_size(v))
        .sum()
}

fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number_size(n),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::L(v) => 3 + v.iter().map(|e| value_size(e) + 1).sum::<usize>(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, e)| k.len() + value_size(e) + 1)
                .sum::<usize>()
        }
        _ => 0,
    }
}

/// Every item of `table` with its size.
async fn item_sizes(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<HashMap<(String, String), usize>> {
    let mut sizes = HashMap::new();
    let mut start: Option<HashMap<String, AttributeValue>> = None;
    for _ in 0..100_000 {
        let page = client
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .context("scanning the bench table")?;
        for item in page.items() {
            let s = |name: &str| {
                item.get(name)
                    .and_then(|v| v.as_s().ok())
                    .cloned()
                    .unwrap_or_default()
            };
            sizes.insert((s("pk"), s("sk")), item_size(item));
        }
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return Ok(sizes),
        }
    }
    bail!("the scan did not end")
}

// ---------------------------------------------------------------------------------------
// Ingest
// ---------------------------------------------------------------------------------------

/// What ingest did with the messages for one batching window.
#[derive(Debug, Default)]
struct IngestRun {
    window_seconds: u64,
    invocations: u64,
    messages: u64,
    /// Milliseconds per invocation on this machine against DynamoDB Local.
    durations_ms: Vec<f64>,
    transactions: u64,
    other_writes: u64,
    batch_gets: u64,
    other_reads: u64,
    counter_writes: u64,
    marker_writes: u64,
    /// Journal chunk puts and deletes, and the bytes and counters the chunks carried.
    journal_writes: u64,
    journal_bytes: u64,
    journal_counters: u64,
    other_item_writes: u64,
    items_written: u64,
    counter_write_kb: u64,
    write_units: u64,
    reads: u64,
    read_units_x2: u64,
    deletes: u64,
    counters: usize,
    checked: u64,
}

fn catalog() -> Result<MeterCatalog> {
    Ok(MeterCatalog::from_json(
        r#"[
          {"name": "requests", "eventTypes": ["edge.request"], "aggregation": {"kind": "count"},
           "unit": "requests", "groupBy": ["route", "status"]},
          {"name": "response_bytes", "eventTypes": ["edge.request"], "valueField": "response_bytes",
           "aggregation": {"kind": "sum"}, "unit": "bytes", "groupBy": ["route", "status"]},
          {"name": "latency_ms", "eventTypes": ["edge.request"], "valueField": "latency_ms",
           "aggregation": {"kind": "percentiles"}, "unit": "ms", "groupBy": ["route", "status"]}
        ]"#,
    )?)
}

/// The invocations the mapping would make: with a window, all messages sent within W of
/// the first (up to the batch size); without, the messages one receive finds (those sent
/// at the same instant, up to 10).
fn invocations(messages: &[Sent], window_seconds: u64) -> Vec<(DateTime<Utc>, &[Sent])> {
    let window = chrono::Duration::seconds(i64::try_from(window_seconds).unwrap_or(0));
    let mut out = Vec::new();
    let mut i = 0;
    while i < messages.len() {
        let first = messages[i].at;
        let limit = if window_seconds == 0 {
            RECEIVE_MAX
        } else {
            BATCH_SIZE
        };
        let mut j = i;
        while j < messages.len()
            && j - i < limit
            && (messages[j].at < first + window || (window_seconds == 0 && messages[j].at == first))
        {
            j += 1;
        }
        out.push((first + window, &messages[i..j]));
        i = j;
    }
    out
}

async fn run_ingest(
    endpoint: &str,
    name: &str,
    setup: Setup,
    gateways: &Gateways,
    window_seconds: u64,
) -> Result<IngestRun> {
    let recorder = Recorder::default();
    let plain = tollgate_store::local_client(endpoint);
    let config = plain
        .config()
        .to_builder()
        .interceptor(recorder.clone())
        .build();
    let table = format!("bench-cost-{name}-w{window_seconds}");
    let store = DynamoDbStore::new(aws_sdk_dynamodb::Client::from_conf(config), table.clone());
    store.ensure_table().await?;
    for t in 0..setup.tenants {
        store
            .create_tenant(&TenantProfile {
                tenant: TenantId::new(tenant_id(t))?,
                display_name: tenant_id(t),
                plan: PlanName::new("bench")?,
                status: TenantStatus::Active,
                stripe_customer_id: None,
                created_at: traffic_start()? - chrono::Duration::days(1),
            })
            .await?;
    }
    let _ = recorder.take(); // only ingest's own calls count
    let ingest = Ingest::new(store, catalog()?, EventTimePolicy::default());
    let mut run = IngestRun {
        window_seconds,
        ..IngestRun::default()
    };
    let mut ids = 0u64;
    for (now, batch) in invocations(&gateways.messages, window_seconds) {
        let mut event = SqsEvent::default();
        event.records = batch
            .iter()
            .map(|sent| {
                ids += 1;
                let mut record = SqsMessage::default();
                record.message_id = Some(format!("msg-{ids}"));
                record.body = Some(sent.body.clone());
                record
            })
            .collect();
        let started = Instant::now();
        let (response, stats) = ingest.handle(&event, now).await;
        run.durations_ms
            .push(started.elapsed().as_secs_f64() * 1000.0);
        ensure!(
            response.batch_item_failures.is_empty() && stats.rejected == 0,
            "ingest did not apply every message ({} retried, {} rejected)",
            response.batch_item_failures.len(),
            stats.rejected
        );
        run.invocations += 1;
        run.messages += batch.len() as u64;
        run.items_written += stats.items_written as u64;
        run.deletes += (batch.len() as u64).div_ceil(10);
    }
    let calls = recorder.take();
    ensure!(
        calls.failed == 0,
        "{} DynamoDB calls failed during the run",
        calls.failed
    );
    let op = |name: &str| calls.by_operation.get(name).copied().unwrap_or(0);
    run.transactions = op("TransactWriteItems");
    run.other_writes = op("PutItem") + op("UpdateItem") + op("DeleteItem") + op("BatchWriteItem");
    run.batch_gets = op("BatchGetItem");
    run.other_reads = op("GetItem") + op("Query") + op("Scan");

    // Units from the items' final sizes: an upper bound, since an update is billed on
    // the larger of the item's size before and after, and these items only grow.
    let sizes = item_sizes(&plain, &table).await?;
    let kb =
        |key: &(String, String)| sizes.get(key).copied().unwrap_or(0).div_ceil(1024).max(1) as u64;
    for (key, n) in &calls.transact_writes {
        if let Some(&(bytes, counters)) = calls.journal_chunks.get(key) {
            run.write_units += 2 * n * bytes.div_ceil(1024).max(1) as u64;
            run.journal_writes += n;
            run.journal_bytes += bytes as u64;
            run.journal_counters += counters as u64;
            continue;
        }
        run.write_units += 2 * n * kb(key);
        if key.0.starts_with("USAGE#") {
            run.counter_writes += n;
            run.counter_write_kb += n * kb(key);
        } else if key.0.starts_with("DEDUPE#") {
            run.marker_writes += n;
        } else {
            run.other_item_writes += n;
        }
    }
    for (key, n) in &calls.writes {
        run.write_units += n * kb(key);
        run.other_item_writes += n;
    }
    for (key, n) in &calls.reads {
        run.reads += n;
        // Strongly consistent: 1 unit per started 4 KB (kept doubled to stay whole).
        let four_kb = sizes.get(key).copied().unwrap_or(0).div_ceil(4096).max(1) as u64;
        run.read_units_x2 += 2 * n * four_kb;
    }
    // Eventually consistent lookups (GetItem/Query of registrations): 0.5 unit each.
    run.read_units_x2 += run.other_reads;
    run.counters = sizes.keys().filter(|k| k.0.starts_with("USAGE#")).count();
    run.checked = check_totals(&plain, &table, setup, gateways).await?;
    Ok(run)
}

/// The hourly counters hold exactly what was sent, per tenant, requests and bytes.
async fn check_totals(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    setup: Setup,
    gateways: &Gateways,
) -> Result<u64> {
    let store = DynamoDbStore::new(client.clone(), table);
    let from = traffic_start()? - chrono::Duration::hours(1);
    let to = traffic_start()? + chrono::Duration::hours(2);
    let mut total = 0u64;
    let requests = MeterName::new(METERS[0])?;
    let bytes = MeterName::new(METERS[1])?;
    for t in 0..setup.tenants {
        let rows = store
            .usage_at(
                &TenantId::new(tenant_id(t))?,
                Granularity::Hour,
                from,
                to,
                traffic_start()?,
            )
            .await?;
        let mut n = 0u64;
        let mut sum = Decimal::ZERO;
        for row in rows {
            match (
                &row.state,
                row.key.meter == requests,
                row.key.meter == bytes,
            ) {
                (AggregateState::Count { n: c }, true, _) => n += c,
                (AggregateState::Sum { sum: s }, _, true) => sum += s,
                _ => {}
            }
        }
        ensure!(
            n == gateways.sent[t] && sum == Decimal::from(gateways.bytes[t]),
            "{}: {n} requests and {sum} bytes stored, {} and {} sent",
            tenant_id(t),
            gateways.sent[t],
            gateways.bytes[t]
        );
        total += n;
    }
    ensure!(
        total == setup.requests,
        "{total} stored, {} sent",
        setup.requests
    );
    Ok(total)
}

// ---------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------

fn per_million_of(value: f64, requests: u64) -> f64 {
    value * 1_000_000.0 / requests as f64
}

fn calibration(gateways: &Gateways, run: &IngestRun) -> Calibration {
    let total_ms: f64 = run.durations_ms.iter().sum();
    Calibration {
        envelope_bytes: gateways.envelope_bytes as f64 / gateways.messages.len().max(1) as f64,
        row_bytes: gateways.row_bytes as f64 / gateways.rows.max(1) as f64,
        counter_kb: run.counter_write_kb as f64 / run.counter_writes.max(1) as f64,
        // Measured where the run journalled; otherwise the size of a count row.
        journal_row_bytes: if run.journal_counters > 0 {
            run.journal_bytes as f64 / run.journal_counters as f64
        } else {
            70.0
        },
        read_share: run.reads as f64 / run.counter_writes.max(1) as f64,
        read_4kb: (run.read_units_x2 - run.other_reads) as f64 / 2.0 / run.reads.max(1) as f64,
        ingest_ms_per_item: total_ms / run.items_written.max(1) as f64,
    }
}

fn print_gateways(setup: Setup, g: &Gateways) {
    let per_m = |v: f64| per_million_of(v, setup.requests);
    println!(
        "    gateways: {} requests at {} req/s over {} gateways, {} tenants (uniform), 3 meters, flush every {} s",
        setup.requests, setup.rate, setup.gateways, setup.tenants, setup.flush_seconds
    );
    println!(
        "      {} messages in {} SendMessageBatch calls, {:.1} KiB per message, {:.0} minute rows per message ({:.0} bytes per row)",
        g.messages.len(),
        g.send_calls,
        g.payload_bytes as f64 / g.messages.len().max(1) as f64 / 1024.0,
        g.rows as f64 / g.messages.len().max(1) as f64,
        g.row_bytes as f64 / g.rows.max(1) as f64
    );
    println!(
        "      per 1M metered requests: {:.0} SendMessageBatch calls billed as {:.0} SQS requests (64 KiB chunks), {:.0} messages",
        per_m(g.send_calls as f64),
        per_m(g.send_billed as f64),
        per_m(g.messages.len() as f64)
    );
    println!(
        "      (simulated {} s of traffic in {:.1} s of wall time)",
        setup.requests.div_ceil(setup.rate),
        g.wall.as_secs_f64()
    );
}

fn print_ingest(setup: Setup, run: &IngestRun) {
    let per_m = |v: u64| per_million_of(v as f64, setup.requests);
    let mut sorted = run.durations_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
    let max = sorted.last().copied().unwrap_or(0.0);
    println!(
        "    ingest, window {} s (batch size ≤ {}): {} invocations of {:.1} messages; {} hourly counters; exact: {} of {} requests stored",
        run.window_seconds,
        if run.window_seconds == 0 {
            RECEIVE_MAX
        } else {
            BATCH_SIZE
        },
        run.invocations,
        run.messages as f64 / run.invocations.max(1) as f64,
        run.counters,
        run.checked,
        setup.requests
    );
    println!(
        "      per 1M: {:.0} invocations, {:.0} TransactWriteItems + {:.0} other writes, {:.0} items ({:.0} counters, {:.0} markers, {:.0} journal chunk puts + deletes, {:.0} other), {:.0} write units",
        per_m(run.invocations),
        per_m(run.transactions),
        per_m(run.other_writes),
        per_m(run.counter_writes + run.marker_writes + run.journal_writes + run.other_item_writes),
        per_m(run.counter_writes),
        per_m(run.marker_writes),
        per_m(run.journal_writes),
        per_m(run.other_item_writes),
        per_m(run.write_units)
    );
    println!(
        "              {:.0} BatchGetItem ({:.0} keys) + {:.0} other reads, {:.1} read units; SQS {:.0} receives + {:.0} deletes (modelled: 1 per message, 1 per 10)",
        per_m(run.batch_gets),
        per_m(run.reads),
        per_m(run.other_reads),
        per_million_of(run.read_units_x2 as f64 / 2.0, setup.requests),
        per_m(run.messages),
        per_m(run.deletes)
    );
    println!(
        "      invocation time here (DynamoDB Local; an upper bound for AWS): median {median:.0} ms, max {max:.0} ms"
    );
}

/// Measured vs model at the measured scenario, per 1M requests.
fn print_model_check(
    setup: Setup,
    scenario: &Scenario,
    cal: &Calibration,
    g: &Gateways,
    run: &IngestRun,
) {
    let v = cost_model::volumes(scenario, cal);
    let seconds = 1_000_000.0 / scenario.rate;
    let per_m = |x: u64| per_million_of(x as f64, setup.requests);
    println!("    model vs measured, per 1M requests:");
    let rows = [
        (
            "messages",
            v.messages * seconds,
            per_m(g.messages.len() as u64),
        ),
        (
            "SQS send requests billed",
            v.send_billed * seconds,
            per_m(g.send_billed),
        ),
        (
            "ingest invocations",
            v.invocations * seconds,
            per_m(run.invocations),
        ),
        (
            "TransactWriteItems",
            v.transactions * seconds,
            per_m(run.transactions),
        ),
        (
            "items written",
            (v.counter_items + v.marker_items + 2.0 * v.journal_items) * seconds,
            per_m(run.counter_writes + run.marker_writes + run.journal_writes),
        ),
        (
            "write units",
            v.write_units * seconds,
            per_m(run.write_units),
        ),
    ];
    for (name, model, measured) in rows {
        println!("      {name:<26} model {model:>12.0}   measured {measured:>12.0}");
    }
}

fn print_breakdown(title: &str, s: &Scenario, cal: &Calibration, prices: &Prices) {
    let b = per_million(s, cal, prices);
    println!(
        "    {title}: {} per 1M metered requests",
        dollars(b.total())
    );
    for (line, amount) in b.lines() {
        let share = ratio(amount, b.total()) * 100.0;
        println!("      {line:<30} {:>12}  {share:>5.1} %", dollars(amount));
    }
}

fn print_sweep(cal: &Calibration, prices: &Prices) {
    let h = Scenario::headline();
    println!("==> sweep (model, calibrated by the measured run; one parameter changed at a time)");
    println!(
        "    {:<38} {:>12} {:>12}  largest line",
        "scenario", "$ per 1M", "$ per month"
    );
    let mut rows: Vec<(String, Scenario)> = Vec::new();
    for rate in [100.0, 1_000.0, 10_000.0] {
        rows.push((format!("R = {rate} req/s"), Scenario { rate, ..h }));
    }
    for tenants in [10.0, 100.0, 1_000.0] {
        rows.push((format!("T = {tenants} tenants"), Scenario { tenants, ..h }));
    }
    for gateways in [1.0, 10.0, 50.0] {
        rows.push((
            format!("G = {gateways} gateways"),
            Scenario { gateways, ..h },
        ));
    }
    for flush_seconds in [5.0, 10.0, 60.0, 300.0] {
        rows.push((
            format!("F = {flush_seconds} s flush"),
            Scenario { flush_seconds, ..h },
        ));
    }
    for window_seconds in [0.0, 10.0, 30.0, 60.0, 90.0, 120.0] {
        rows.push((
            format!("W = {window_seconds} s window"),
            Scenario {
                window_seconds,
                ..h
            },
        ));
    }
    for snapshot_seconds in [15.0, 60.0] {
        rows.push((
            format!("S = {snapshot_seconds} s snapshot"),
            Scenario {
                snapshot_seconds,
                ..h
            },
        ));
    }
    for snapshot_cache_seconds in [0.0, 5.0, 15.0] {
        rows.push((
            format!("A = {snapshot_cache_seconds} s snapshot max age"),
            Scenario {
                snapshot_cache_seconds,
                ..h
            },
        ));
    }
    rows.push((
        "W = 1 s (the local stack)".to_owned(),
        Scenario {
            window_seconds: 1.0,
            ..h
        },
    ));
    rows.push((
        "F = 300 s, S = 60 s".to_owned(),
        Scenario {
            flush_seconds: 300.0,
            snapshot_seconds: 60.0,
            ..h
        },
    ));
    rows.push((
        "T = 10, F = 60 s, W = 60 s, S = 60 s".to_owned(),
        Scenario {
            tenants: 10.0,
            flush_seconds: 60.0,
            window_seconds: 60.0,
            snapshot_seconds: 60.0,
            ..h
        },
    ));
    for (name, s) in rows {
        let b = per_million(&s, cal, prices);
        let month = b.total()
            * Decimal::from_f64_retain(s.rate * cost_model::SECONDS_PER_MONTH / 1_000_000.0)
                .unwrap_or_default();
        let (largest, _) = b.lines().first().copied().unwrap_or(("-", Decimal::ZERO));
        println!(
            "    {name:<38} {:>12} {:>12}  {largest}",
            dollars(b.total()),
            dollars(month.round_dp(2))
        );
    }
}

fn print_floor(prices: &Prices) {
    let d = Deployment::idle(100.0, 3.0);
    let f = cost_model::floor(&d, prices);
    println!(
        "==> idle floor per month (model; 100 tenants × 3 meters, nothing metered, free tiers ignored): {}",
        dollars(f.total())
    );
    for (line, amount) in f.lines() {
        println!("      {line:<38} {:>10}", dollars(amount));
    }
    let polling = |gateways: f64| {
        dollars(cost_model::snapshot_polling_month(
            gateways, 100.0, 15.0, 15.0, prices,
        ))
    };
    println!(
        "      plus gateways polling the snapshot every 15 s (15 s max age): 1 gateway {} per month, 10 gateways {}, 100 gateways {}",
        polling(1.0),
        polling(10.0),
        polling(100.0)
    );
}

/// The headline run, the sweep's small-tenant run, the model and its output.
pub async fn run(endpoint: &str) -> Result<()> {
    let requests = match std::env::var(REQUESTS_ENV) {
        Ok(n) => n.parse().with_context(|| format!("{REQUESTS_ENV}={n}"))?,
        Err(_) => 1_000_000,
    };
    let prices = Prices::list();
    println!(
        "==> cost: the real edge filter (.wasm) in G gateways → captured SQS messages → the real ingest on DynamoDB Local"
    );
    println!(
        "    prices as of {PRICES_AS_OF} (us-east-1, list, free tiers ignored; sources in docs/cost.md)"
    );
    let headline = Setup {
        requests,
        rate: 1_000,
        gateways: 10,
        tenants: 100,
        flush_seconds: 10,
    };
    let gateways = tokio::task::block_in_place(|| run_gateways(headline))?;
    println!("==> measured: headline");
    print_gateways(headline, &gateways);
    let scenario = Scenario::headline();
    let window = scenario.window_seconds as u64;
    let run = run_ingest(endpoint, "headline", headline, &gateways, window).await?;
    print_ingest(headline, &run);
    let cal = calibration(&gateways, &run);
    println!(
        "    calibration: envelope {:.0} B, {:.1} B per minute row, {:.3} KB-units per counter write, {:.1} B per journalled counter, {:.3} reads per counter write of {:.2} 4 KB-units, {:.3} ms per item",
        cal.envelope_bytes,
        cal.row_bytes,
        cal.counter_kb,
        cal.journal_row_bytes,
        cal.read_share,
        cal.read_4kb,
        cal.ingest_ms_per_item
    );
    print_model_check(headline, &scenario, &cal, &gateways, &run);

    // Few tenants: messages fit one chunk, so the window merges them (measured).
    let small = Setup {
        requests: requests.min(200_000),
        tenants: 10,
        ..headline
    };
    let small_gateways = tokio::task::block_in_place(|| run_gateways(small))?;
    println!(
        "==> measured: 10 tenants ({} requests, scaled per 1M)",
        small.requests
    );
    print_gateways(small, &small_gateways);
    for window in [0, 30, 60] {
        let run = run_ingest(endpoint, "small", small, &small_gateways, window).await?;
        print_ingest(small, &run);
        let s = Scenario {
            tenants: 10.0,
            window_seconds: window as f64,
            ..scenario
        };
        print_model_check(small, &s, &cal, &small_gateways, &run);
    }

    println!(
        "==> headline (model at the measured configuration: R = 1,000 req/s, G = 10, T = 100, M = 3, F = 10 s, W = 90 s, B = 100, S = 15 s, A = 15 s)"
    );
    print_breakdown("cost", &scenario, &cal, &prices);
    let total = per_million(&scenario, &cal, &prices).total();
    let goal = Decimal::new(1, 2);
    println!(
        "    goal ≤ $0.01 per 1M: {} ({:.1} × the goal)",
        if total <= goal { "met" } else { "NOT met" },
        ratio(total, goal)
    );
    print_sweep(&cal, &prices);
    print_floor(&prices);
    let naive = cost_model::naive_per_million(&prices, false);
    let naive_once = cost_model::naive_per_million(&prices, true);
    println!(
        "==> naive design (1 SendMessage + 1 counter write per request; ESM receives/deletes 10 at a time)"
    );
    println!(
        "    {} per 1M ({} with exactly-once: a transactional write of counter + marker); tollgate at the headline: {}, {:.1} × cheaper",
        dollars(naive),
        dollars(naive_once),
        dollars(total),
        ratio(naive, total)
    );
    Ok(())
}
