#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The gateway with the real `tollgate_edge_filter.wasm` (built by `cargo xtask test`, or
//! `cargo build --release --target wasm32-wasip1 -p tollgate-edge-filter`) in front of a
//! tiny upstream, the snapshot served by a fake usage API on loopback.

mod common;

use common::{header, serve};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tollgate_core::tenant::ApiKeyHash;
use tollgate_gateway::{Cluster, Gateway, GatewayConfig, RunningGateway};
use tollgate_wasm_host::testing;

const OPEN_KEY: &str = "tg_test_open_key";
const LIMITED_KEY: &str = "tg_test_limited_key";
const LIMIT_PER_MINUTE: u64 = 5;
const UPSTREAM_BODY: &str = r#"{"items":[1,2,3],"note":"from the upstream"}"#;

fn snapshot_json() -> Vec<u8> {
    let at = Utc::now();
    let tenants = [
        ("t-open", OPEN_KEY, 10_000u64),
        ("t-limited", LIMITED_KEY, LIMIT_PER_MINUTE),
    ];
    let mut keys: Vec<(String, &str)> = tenants
        .iter()
        .map(|(id, key, _)| (ApiKeyHash::of(key).as_hex().to_owned(), *id))
        .collect();
    keys.sort();
    let body = json!({
        "schema": "tollgate.edge-snapshot/1",
        "generatedAt": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "tenants": tenants.iter().map(|(id, _, per_minute)| json!({
            "tenant": id,
            "plan": "test",
            "rateLimits": {"perSecond": null, "perMinute": per_minute, "perHour": null, "perDay": null},
            "quotas": [],
            "blocked": null
        })).collect::<Vec<_>>(),
        "apiKeys": keys.into_iter().map(|(sha, id)| json!({"sha256": sha, "tenant": id})).collect::<Vec<_>>()
    });
    serde_json::to_vec(&body).unwrap()
}

fn plugin_config() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "gatewayId": "gw-gateway-test",
        "identity": {"source": "apiKey", "header": "x-api-key"},
        "snapshot": {"cluster": "usage_api", "path": "/v1/edge/snapshot", "intervalSeconds": 1},
        "sqs": {"cluster": "sqs", "queueUrl": "http://127.0.0.1:9/000000000000/usage"},
        "flushIntervalSeconds": 2,
        "stale": {"policy": "failClosed", "maxAgeSeconds": 60},
        "meters": {"requests": "requests", "responseBytes": "response_bytes", "latencyMs": "latency_ms"},
        "routeGroups": [{"prefix": "/v1/items", "group": "items"}]
    }))
    .unwrap()
}

struct Harness {
    gateway: RunningGateway,
    client: Client<HttpConnector, Full<Bytes>>,
    upstream_hits: Arc<AtomicUsize>,
}

async fn harness(upstream: Option<SocketAddr>) -> Harness {
    let upstream_hits = Arc::new(AtomicUsize::new(0));
    let hits = Arc::clone(&upstream_hits);
    let upstream = match upstream {
        Some(addr) => addr,
        None => {
            serve(move |request| {
                hits.fetch_add(1, Ordering::SeqCst);
                let echoed = request
                    .headers()
                    .get("x-api-key")
                    .map(|v| v.to_str().unwrap_or_default().to_owned())
                    .unwrap_or_default();
                Response::builder()
                    .header("content-type", "application/json")
                    .header("x-upstream-saw-key", echoed)
                    .header("x-upstream-path", request.uri().path())
                    .body(Full::new(Bytes::from_static(UPSTREAM_BODY.as_bytes())))
                    .unwrap()
            })
            .await
        }
    };
    let snapshot = snapshot_json();
    let usage_api = serve(move |request| {
        if request.uri().path() == "/v1/edge/snapshot" {
            Response::new(Full::new(Bytes::from(snapshot.clone())))
        } else {
            Response::builder()
                .status(404)
                .body(Full::new(Bytes::new()))
                .unwrap()
        }
    })
    .await;
    let module = testing::module("tollgate_edge_filter").unwrap_or_else(|e| panic!("{e}"));
    let mut config = GatewayConfig::new(format!("http://{upstream}"), module, plugin_config())
        .with_cluster(Cluster::new("usage_api", format!("http://{usage_api}")))
        .with_cluster(Cluster::new("sqs", "http://127.0.0.1:9"));
    config.workers = 2;
    let gateway = tokio::task::spawn_blocking(move || Gateway::start(config))
        .await
        .unwrap()
        .unwrap();
    Harness {
        gateway,
        client: Client::builder(TokioExecutor::new()).build_http(),
        upstream_hits,
    }
}

struct Reply {
    status: u16,
    headers: hyper::HeaderMap,
    body: String,
}

impl Harness {
    async fn get(&self, path: &str, key: Option<&str>) -> Reply {
        let mut request = Request::get(format!("{}{path}", self.gateway.url()));
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        let response = self
            .client
            .request(request.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    /// Waits (≤ 10 s) for the singleton's first snapshot to reach the workers: until
    /// the open tenant's request is allowed.
    async fn ready(&self) -> Reply {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let reply = self.get("/v1/items/ready", Some(OPEN_KEY)).await;
            if reply.status == 200 {
                return reply;
            }
            assert!(
                Instant::now() < deadline,
                "no snapshot after 10 s: last reply {} {}",
                reply.status,
                reply.body
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_request_reaches_the_upstream_and_comes_back_with_rate_limit_headers() {
    let h = harness(None).await;
    h.ready().await;
    let before = h.upstream_hits.load(Ordering::SeqCst);
    let reply = h.get("/v1/items/42?x=1", Some(OPEN_KEY)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body, UPSTREAM_BODY);
    assert_eq!(h.upstream_hits.load(Ordering::SeqCst), before + 1);
    assert_eq!(
        header(&reply.headers, "x-upstream-path"),
        Some("/v1/items/42")
    );
    assert_eq!(header(&reply.headers, "x-upstream-saw-key"), Some(OPEN_KEY));
    assert_eq!(header(&reply.headers, "x-ratelimit-limit"), Some("10000"));
    assert!(header(&reply.headers, "x-ratelimit-remaining").is_some());
    assert!(header(&reply.headers, "x-ratelimit-reset").is_some());
    assert_eq!(
        header(&reply.headers, "content-length"),
        Some(UPSTREAM_BODY.len().to_string().as_str())
    );
    // The filter metered what it forwarded.
    let metrics = h.gateway.env().metrics();
    assert!(!metrics.is_empty());
    h.gateway.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_key_gets_401_and_never_reaches_the_upstream() {
    let h = harness(None).await;
    h.ready().await;
    let before = h.upstream_hits.load(Ordering::SeqCst);
    let reply = h.get("/v1/items", Some("tg_nobody")).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    let missing = h.get("/v1/items", None).await;
    assert_eq!(missing.status, 401, "{}", missing.body);
    assert_eq!(h.upstream_hits.load(Ordering::SeqCst), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_is_shared_by_every_worker_and_then_429() {
    let h = harness(None).await;
    h.ready().await;
    let before = h.upstream_hits.load(Ordering::SeqCst);
    let mut statuses = Vec::new();
    for _ in 0..LIMIT_PER_MINUTE + 3 {
        let reply = h.get("/v1/items", Some(LIMITED_KEY)).await;
        if reply.status == 429 {
            assert!(header(&reply.headers, "retry-after").is_some());
            assert_eq!(header(&reply.headers, "x-ratelimit-remaining"), Some("0"));
        }
        statuses.push(reply.status);
    }
    let allowed = statuses.iter().filter(|s| **s == 200).count() as u64;
    assert_eq!(allowed, LIMIT_PER_MINUTE, "{statuses:?}");
    assert!(
        statuses[LIMIT_PER_MINUTE as usize..]
            .iter()
            .all(|s| *s == 429),
        "{statuses:?}"
    );
    assert_eq!(
        h.upstream_hits.load(Ordering::SeqCst) - before,
        allowed as usize
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_all_complete() {
    let h = Arc::new(harness(None).await);
    h.ready().await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let h = Arc::clone(&h);
        tasks.push(tokio::spawn(async move {
            h.get(&format!("/v1/items/{i}"), Some(OPEN_KEY))
                .await
                .status
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_upstream_is_a_502_not_a_crash() {
    // A port that was free a moment ago: nothing listens there.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let h = harness(Some(dead)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let reply = loop {
        let reply = h.get("/v1/items", Some(OPEN_KEY)).await;
        if reply.status != 503 || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert!(
        reply.body.contains("upstream_unavailable"),
        "{}",
        reply.body
    );
    // The gateway still serves.
    assert_eq!(h.get("/v1/items", Some("tg_nobody")).await.status, 401);
}
