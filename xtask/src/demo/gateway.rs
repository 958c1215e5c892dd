//! The demo's gateway: the local gateway (`tollgate-gateway`) running the real edge
//! filter `.wasm` in front of a tiny upstream, a bounded traffic generator per tenant, and
//! the tally of what the gateway answered each tenant, which the closing summary checks
//! against what was metered and billed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tollgate_local::LocalStack;

use super::{Api, HTTP_TIMEOUT, Tenant, decimal, queue_depth, seconds};
use crate::util;

/// Edge meters (in the demo catalog, `meters.json`, with the aggregations the filter
/// records: count, sum, percentiles).
pub(super) const EDGE_REQUESTS: &str = "edge_requests";
const EDGE_RESPONSE_BYTES: &str = "edge_response_bytes";
const EDGE_LATENCY_MS: &str = "edge_latency_ms";
/// The most time one round of traffic may take, whatever the loads ask for.
const ROUND_DEADLINE: Duration = Duration::from_secs(20);
/// How long the edge usage may take to be flushed, ingested and served.
const EDGE_DEADLINE: Duration = Duration::from_secs(90);

/// One tenant's traffic in a round: `requests` requests paced at `per_second`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Load {
    pub(super) tenant: &'static str,
    pub(super) per_second: u32,
    pub(super) requests: u32,
}

/// The first round pushes each plan differently: acme (starter: 10/s, and a daily quota
/// the month's API usage has already spent) above its rate, globex (professional: 50/s)
/// above its rate, podco (pod-hourly: no limits) at a steady pace.
pub(super) const FIRST_ROUND: [Load; 3] = [
    Load {
        tenant: "acme",
        per_second: 20,
        requests: 100,
    },
    Load {
        tenant: "globex",
        per_second: 100,
        requests: 400,
    },
    Load {
        tenant: "podco",
        per_second: 25,
        requests: 100,
    },
];

/// What the gateway answered one tenant's requests.
#[derive(Debug, Default, Clone)]
pub(super) struct Tally {
    pub(super) sent: u64,
    pub(super) allowed: u64,
    pub(super) rate_limited: u64,
    pub(super) quota_exceeded: u64,
    pub(super) blocked: u64,
    pub(super) other: BTreeMap<u16, u64>,
}

impl Tally {
    /// Every request sent has exactly one of the outcomes counted.
    pub(super) fn adds_up(&self) -> bool {
        let others: u64 = self.other.values().sum();
        self.sent == self.allowed + self.rate_limited + self.quota_exceeded + self.blocked + others
    }
}

/// Every tenant's tally, shared by the generator's tasks.
#[derive(Debug, Default, Clone)]
pub(super) struct Traffic(Arc<Mutex<BTreeMap<String, Tally>>>);

impl Traffic {
    /// Counts one answer: 2xx allowed, 429 by its `code` (rate limit or quota), 402 a
    /// budget block, anything else by status.
    fn record(&self, tenant: &str, status: u16, body: &[u8]) {
        let code = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|reply| reply["code"].as_str().map(str::to_owned));
        let mut tallies = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let tally = tallies.entry(tenant.to_owned()).or_default();
        tally.sent += 1;
        match (status, code.as_deref()) {
            (200..=299, _) => tally.allowed += 1,
            (429, Some("quota_exceeded")) => tally.quota_exceeded += 1,
            (429, _) => tally.rate_limited += 1,
            (402, _) => tally.blocked += 1,
            (other, _) => *tally.other.entry(other).or_default() += 1,
        }
    }

    pub(super) fn tally(&self, tenant: &str) -> Tally {
        let tallies = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tallies.get(tenant).cloned().unwrap_or_default()
    }
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

/// The gateway and its upstream, up from the first round of traffic until the closing
/// summary, with the tally of every tenant request sent through it.
pub(super) struct DemoGateway {
    gateway: tollgate_gateway::RunningGateway,
    upstream: tokio::task::JoinHandle<()>,
    client: Client<HttpConnector, Full<Bytes>>,
    pub(super) traffic: Traffic,
}

impl DemoGateway {
    pub(super) fn url(&self) -> String {
        self.gateway.url()
    }

    /// One request with a tenant's key, tallied.
    pub(super) async fn get(&self, tenant: &Tenant, path: &str) -> Result<(u16, Bytes)> {
        let (status, body) = edge_get(&self.client, &self.url(), path, Some(&tenant.key)).await?;
        self.traffic.record(tenant.spec.id, status, &body);
        Ok((status, body))
    }

    /// One round of traffic: every load at once, each tenant's requests paced at its
    /// rate, bounded by count and by [`ROUND_DEADLINE`]; then the tallies so far.
    pub(super) async fn round(&self, tenants: &[Tenant], loads: &[Load]) -> Result<()> {
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for load in loads {
            let tenant = super::tenant(tenants, load.tenant)?;
            let (client, url, key, traffic) = (
                self.client.clone(),
                self.url(),
                tenant.key.clone(),
                self.traffic.clone(),
            );
            let load = *load;
            tasks.spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs_f64(
                    1.0 / f64::from(load.per_second.max(1)),
                ));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                for i in 0..load.requests {
                    tick.tick().await;
                    if started.elapsed() > ROUND_DEADLINE {
                        break;
                    }
                    let path = format!("/v1/items/{}", i % 7);
                    let (status, body) = edge_get(&client, &url, &path, Some(&key)).await?;
                    traffic.record(load.tenant, status, &body);
                }
                anyhow::Ok(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.context("a traffic task panicked")??;
        }
        println!(
            "    round done in {}; the tallies so far:",
            seconds(started.elapsed())
        );
        print_tallies(tenants, &self.traffic);
        Ok(())
    }

    pub(super) fn stop(self) {
        self.gateway.shutdown();
        self.upstream.abort();
    }
}

pub(super) fn print_tallies(tenants: &[Tenant], traffic: &Traffic) {
    println!(
        "      {:<36} {:>6} {:>8} {:>9} {:>10} {:>10}  other",
        "tenant", "sent", "allowed", "429 rate", "429 quota", "402 budget"
    );
    for tenant in tenants {
        let tally = traffic.tally(tenant.spec.id);
        println!(
            "      {:<36} {:>6} {:>8} {:>9} {:>10} {:>10}  {:?}",
            tenant.spec.name,
            tally.sent,
            tally.allowed,
            tally.rate_limited,
            tally.quota_exceeded,
            tally.blocked,
            tally.other
        );
    }
}

/// Starts the gateway in front of a demo upstream, runs the first round of traffic, then
/// waits for the edge usage to be flushed, ingested and served by the usage API.
/// Returns the gateway, still running.
pub(super) async fn gateway_traffic(
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
    let running = DemoGateway {
        gateway,
        upstream: upstream_task,
        client: api.client.clone(),
        traffic: Traffic::default(),
    };
    // The gateway stays up until its usage is flushed (every 2 s) and ingested.
    let result = match first_round(&running, tenants).await {
        Ok(()) => wait_for_edge_usage(stack, api, tenants, &running.traffic).await,
        Err(e) => Err(e),
    };
    print_gateway_metrics(&running);
    match result {
        Ok(()) => Ok(running),
        Err(e) => {
            running.stop();
            Err(e)
        }
    }
}

pub(super) fn print_gateway_metrics(gateway: &DemoGateway) {
    println!("    gateway metrics:");
    for (name, value) in gateway.gateway.env().metrics() {
        println!("      {name} = {value}");
    }
}

async fn first_round(gateway: &DemoGateway, tenants: &[Tenant]) -> Result<()> {
    let url = gateway.url();
    println!(
        "    listening on {url} (1 singleton + 4 worker VMs), upstream on loopback; waiting for the first snapshot"
    );
    // Until the first snapshot the filter fails closed (503) for everyone; an unknown
    // key's 401 says the snapshot is in, without spending any tenant's limits.
    let started = Instant::now();
    loop {
        let (status, _) =
            edge_get(&gateway.client, &url, "/v1/items", Some("tg_not_a_key")).await?;
        if status == 401 {
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(15),
            "the gateway got no snapshot from the usage API in 15 s (last status {status})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "    snapshot in after {}; an unknown key gets 401",
        seconds(started.elapsed())
    );
    println!(
        "    traffic, all tenants at once (bounded by count and {}s):",
        ROUND_DEADLINE.as_secs()
    );
    for load in &FIRST_ROUND {
        let plan = super::tenant(tenants, load.tenant)?.spec.plan;
        println!(
            "      {:<7} ({plan} plan): {} requests at {}/s",
            load.tenant, load.requests, load.per_second
        );
    }
    gateway.round(tenants, &FIRST_ROUND).await?;
    println!(
        "    (429 rate: the plan's rate limit; 429 quota: a used-up quota — acme's daily \
         api_requests quota went to the month's API usage; 402: a budget block)"
    );
    Ok(())
}

pub(super) async fn edge_get(
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
pub(super) async fn wait_for_edge_usage(
    stack: &LocalStack,
    api: &Api,
    tenants: &[Tenant],
    traffic: &Traffic,
) -> Result<()> {
    println!(
        "==> waiting for the edge usage: flushed to SQS, ingested, served by GET /v1/usage (at most {}s)",
        EDGE_DEADLINE.as_secs()
    );
    let step = Instant::now();
    loop {
        let mut metered = Vec::new();
        for tenant in tenants {
            metered.push(edge_requests_metered(api, tenant).await?);
        }
        let done = tenants
            .iter()
            .zip(&metered)
            .all(|(tenant, count)| *count == Decimal::from(traffic.tally(tenant.spec.id).allowed));
        if done || step.elapsed() > EDGE_DEADLINE {
            for (tenant, count) in tenants.iter().zip(&metered) {
                println!(
                    "    {:<36} allowed {:>6}   GET /v1/usage {EDGE_REQUESTS} {:>6}",
                    tenant.spec.name,
                    traffic.tally(tenant.spec.id).allowed,
                    count
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

/// The month's `edge_requests` as `GET /v1/usage` serves them to the tenant.
pub(super) async fn edge_requests_metered(api: &Api, tenant: &Tenant) -> Result<Decimal> {
    let usage = api.get(&tenant.key, "/v1/usage").await?;
    Ok(usage["meters"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["meter"] == json!(EDGE_REQUESTS))
        .and_then(|m| decimal(&m["quantity"]))
        .unwrap_or(Decimal::ZERO))
}
