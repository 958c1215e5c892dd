//! The stack side: the usage API over HTTP, the plans, tenants and keys, the upstream and
//! the gateway, and waiting for what they report.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tollgate_core::tenant::{ApiKeyHash, ApiKeyRecord, ApiKeyRole};
use tollgate_gateway::{Cluster, Gateway, GatewayConfig, RunningGateway, SigV4};
use tollgate_local::LocalStack;
use tollgate_wasm_host::WasmModule;
use tollgate_wasm_host::testing::built_wasm;

use super::generator::UPSTREAM_BODY;
use super::phases::limits_of;
use super::{
    ADMIN_KEY, DELTA, DRAIN_DEADLINE, EDGE_REQUESTS, FAST_PER_SECOND, FLUSH_INTERVAL_SECONDS,
    OPEN_QUOTA, QUOTA_PLAN_PER_SECOND, SNAPSHOT_INTERVAL_SECONDS, TENANTS, WORKERS,
};

// ---------------------------------------------------------------------------------------
// The usage API, over HTTP

impl Api {
    /// The month's `edge_requests` as `GET /v1/usage` serves them to the tenant.
    pub async fn metered(&self, key: &str) -> u64 {
        let usage = self.call("GET", key, "/v1/usage", None).await;
        let quantity = usage["meters"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["meter"] == EDGE_REQUESTS)
            .map(|m| match &m["quantity"] {
                Value::String(s) => s.parse::<Decimal>().unwrap(),
                Value::Number(n) => n.to_string().parse::<Decimal>().unwrap(),
                other => panic!("quantity {other}"),
            })
            .unwrap_or_default();
        u64::try_from(quantity).unwrap()
    }
}

pub fn plan(name: &str, effective: DateTime<Utc>, base_fee: &str, limits: Value) -> Value {
    json!({
        "name": name,
        "effectiveFrom": effective.to_rfc3339_opts(SecondsFormat::Millis, true),
        "currency": "USD",
        "baseFee": base_fee,
        "meters": [{"meter": EDGE_REQUESTS, "price": {"type": "perUnit", "unitPrice": "0.0001"}}],
        "limits": limits,
    })
}

pub fn standard_plan(effective: DateTime<Utc>, per_second: u64) -> Value {
    plan(
        "load-standard",
        effective,
        "0",
        json!({"rate": {"perSecond": per_second}}),
    )
}

pub fn quota_plan(effective: DateTime<Utc>, per_day: u64) -> Value {
    plan(
        "load-quota",
        effective,
        "0",
        json!({
            "rate": {"perSecond": QUOTA_PLAN_PER_SECOND},
            "quotas": [{"meter": EDGE_REQUESTS, "perDay": per_day.to_string()}]
        }),
    )
}

/// A hard-limited budget: 20 USD is below `load-billed`'s 29 USD base fee (blocked),
/// 1,000 USD far above the spend.
pub fn budget(blocked: bool) -> Value {
    json!({"monthlyAmount": if blocked { "20" } else { "1000" }, "currency": "USD", "hardLimit": true})
}

/// Plans, tenants and keys through the admin API (one admin key written to the store
/// first, as `cargo xtask demo` does). Returns the tenant keys, in [`TENANTS`] order.
pub async fn bootstrap(stack: &LocalStack, api: &Api) -> Vec<String> {
    stack
        .store
        .create_api_key(&ApiKeyRecord {
            hash: ApiKeyHash::of(ADMIN_KEY),
            role: ApiKeyRole::Admin,
            tenant: None,
            label: "gateway load test".into(),
            created_at: Utc::now(),
            revoked_at: None,
        })
        .await
        .unwrap();
    let first: DateTime<Utc> = "2020-01-01T00:00:00Z".parse().unwrap();
    let initial = limits_of(0);
    for body in [
        standard_plan(first, initial.standard),
        plan(
            "load-fast",
            first,
            "0",
            json!({"rate": {"perSecond": FAST_PER_SECOND}}),
        ),
        quota_plan(first, OPEN_QUOTA),
        plan("load-billed", first, "29", json!({})),
    ] {
        api.call("POST", ADMIN_KEY, "/v1/admin/plans", Some(&body))
            .await;
    }
    let mut keys = Vec::new();
    for spec in &TENANTS {
        let body = json!({"tenant": spec.id, "displayName": spec.id, "plan": spec.plan});
        api.call("POST", ADMIN_KEY, "/v1/admin/tenants", Some(&body))
            .await;
        let created = api
            .call(
                "POST",
                ADMIN_KEY,
                &format!("/v1/admin/tenants/{}/keys", spec.id),
                Some(&json!({"label": "load"})),
            )
            .await;
        keys.push(created["key"].as_str().unwrap().to_owned());
    }
    let reply = api
        .call("PUT", &keys[DELTA], "/v1/budget", Some(&budget(false)))
        .await;
    assert_eq!(reply["evaluation"]["verdict"], "allow", "{reply}");
    keys
}

// ---------------------------------------------------------------------------------------
// Gateway and upstream

/// A trivial upstream on loopback: the same small JSON body for every request.
pub async fn upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_request| async {
                    Ok::<_, Infallible>(
                        hyper::Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from_static(UPSTREAM_BODY.as_bytes())))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    (addr, task)
}

pub fn start_gateway(
    stack: &LocalStack,
    upstream: SocketAddr,
    sqs_endpoint: &str,
) -> RunningGateway {
    let module = WasmModule::from_file(&built_wasm("tollgate_edge_filter").unwrap()).unwrap();
    let plugin = json!({
        "gatewayId": "load-gateway",
        "identity": {"source": "apiKey", "header": "x-api-key"},
        "snapshot": {"cluster": "usage_api", "path": "/v1/edge/snapshot",
                     "intervalSeconds": SNAPSHOT_INTERVAL_SECONDS, "apiKey": ADMIN_KEY},
        "sqs": {"cluster": "sqs", "queueUrl": stack.queue_url},
        "flushIntervalSeconds": FLUSH_INTERVAL_SECONDS,
        "stale": {"policy": "failClosed", "maxAgeSeconds": 60},
        "meters": {"requests": EDGE_REQUESTS, "responseBytes": "edge_response_bytes",
                   "latencyMs": "edge_latency_ms"},
        "routeGroups": [{"prefix": "/v1/items", "group": "items"}]
    });
    let mut config = GatewayConfig::new(
        format!("http://{upstream}"),
        module,
        serde_json::to_vec(&plugin).unwrap(),
    )
    .with_cluster(Cluster::new("usage_api", stack.usage_api_url()))
    .with_cluster(Cluster::new("sqs", sqs_endpoint).signed(SigV4::local("sqs")));
    config.workers = WORKERS;
    Gateway::start(config).unwrap()
}

/// Until the first snapshot is in, the filter fails closed (503) for everyone; an unknown
/// key's 401 says it is in without spending any tenant's limits.
pub async fn wait_for_snapshot(gateway: &RunningGateway) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let started = Instant::now();
    loop {
        let request = hyper::Request::get(format!("{}/v1/items", gateway.url()))
            .header("x-api-key", "tg_not_a_key")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let status = client.request(request).await.unwrap().status().as_u16();
        if status == 401 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no snapshot after 30 s (status {status})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the usage API reports, for every tenant, exactly the requests the clients
/// saw allowed, with the queue drained; returns what it reports.
pub async fn wait_for_metered(
    stack: &LocalStack,
    api: &Api,
    keys: &[String],
    allowed: &[u64],
) -> Vec<u64> {
    let started = Instant::now();
    loop {
        let mut metered = Vec::new();
        for key in keys {
            metered.push(api.metered(key).await);
        }
        let depth = queue_depth(stack, &stack.queue_url).await;
        let m = stack.mapping_metrics();
        let in_hand = m.received.saturating_sub(m.deleted + m.returned_for_retry);
        if (metered.as_slice() == allowed && depth == 0 && in_hand == 0)
            || started.elapsed() > DRAIN_DEADLINE
        {
            println!(
                "  drained after {:.1} s: metered {metered:?}, allowed {allowed:?}, queue depth \
                 {depth}, mapping {m:?}",
                started.elapsed().as_secs_f64()
            );
            return metered;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub use super::common::{Api, queue_depth, stay_within_one_day};
