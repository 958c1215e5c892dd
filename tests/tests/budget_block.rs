//! A budget's hard limit, end to end at the edge: a tenant sets a budget below its spend
//! through the usage API, the API's edge snapshot lists it as `budget_hard_limit`, and the
//! local gateway running the real `.wasm` answers its key with 402 while another tenant
//! passes; raising the budget lets it through again.
//!
//! The usage API is the real handler (`tollgate_usage_api::App`) over DynamoDB Local,
//! served on loopback for the gateway's `usage_api` cluster.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tollgate_core::meter::MeterCatalog;
use tollgate_core::plan::Plan;
use tollgate_core::tenant::{ApiKeyHash, ApiKeyRecord, ApiKeyRole, TenantProfile, TenantStatus};
use tollgate_gateway::{Cluster, Gateway, GatewayConfig};
use tollgate_store::DynamoDbStore;
use tollgate_usage_api::App;
use tollgate_usage_api::sqs::SqsEventQueue;
use tollgate_wasm_host::WasmModule;
use tollgate_wasm_host::testing::built_wasm;

const ADMIN: &str = "tg_admin_budget_block_test";
const ACME: &str = "tg_acme_budget_block_test";
const GLOBEX: &str = "tg_globex_budget_block_test";

type Api = App<DynamoDbStore, SqsEventQueue>;

/// Serves `handle` on a free loopback port until the task is aborted.
async fn serve<F, Fut>(handle: F) -> (SocketAddr, JoinHandle<()>)
where
    F: Fn(hyper::Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = hyper::Response<Full<Bytes>>> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let handle = handle.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let handle = handle.clone();
                    async move { Ok::<_, Infallible>(handle(request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    (addr, task)
}

/// The usage API handler behind plain HTTP, as its Function URL would put it.
async fn usage_api(
    app: Arc<Api>,
    request: hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let mut lambda = lambda_http::http::Request::builder()
        .method(parts.method.as_str())
        .uri(format!("https://api.local{}", parts.uri));
    for (name, value) in &parts.headers {
        lambda = lambda.header(name.as_str(), value.as_bytes());
    }
    let lambda = lambda
        .body(if body.is_empty() {
            lambda_http::Body::Empty
        } else {
            lambda_http::Body::Binary(body.to_vec())
        })
        .unwrap();
    let reply = app.handle(lambda).await;
    let status = reply.status().as_u16();
    let mut response = hyper::Response::builder().status(status);
    for (name, value) in reply.headers() {
        response = response.header(name.as_str(), value.as_bytes());
    }
    let bytes = match reply.into_body() {
        lambda_http::Body::Empty => Vec::new(),
        lambda_http::Body::Text(text) => text.into_bytes(),
        lambda_http::Body::Binary(bytes) => bytes,
        _ => Vec::new(),
    };
    response.body(Full::new(Bytes::from(bytes))).unwrap()
}

async fn seeded_store() -> DynamoDbStore {
    let endpoint = tollgate_devstack::dynamodb_endpoint_for_tests();
    let store = DynamoDbStore::new(
        tollgate_store::local_client(&endpoint),
        format!("budget-block-{}", std::process::id()),
    );
    store.ensure_table().await.unwrap();
    let plan: Plan = serde_json::from_value(json!({
        "name": "starter", "effectiveFrom": "2026-01-01T00:00:00Z", "currency": "USD",
        "baseFee": "29",
        "meters": [{"meter": "api_requests", "included": "1000",
                    "price": {"type": "perUnit", "unitPrice": "0.01"}}]
    }))
    .unwrap();
    store.create_plan_version(&plan).await.unwrap();
    for tenant in ["acme", "globex"] {
        store
            .create_tenant(&TenantProfile {
                tenant: tenant.parse().unwrap(),
                display_name: tenant.to_owned(),
                plan: "starter".parse().unwrap(),
                status: TenantStatus::Active,
                stripe_customer_id: None,
                created_at: Utc::now(),
            })
            .await
            .unwrap();
    }
    for (secret, role, tenant) in [
        (ADMIN, ApiKeyRole::Admin, None),
        (ACME, ApiKeyRole::Tenant, Some("acme")),
        (GLOBEX, ApiKeyRole::Tenant, Some("globex")),
    ] {
        store
            .create_api_key(&ApiKeyRecord {
                hash: ApiKeyHash::of(secret),
                role,
                tenant: tenant.map(|t| t.parse().unwrap()),
                label: "budget block test".into(),
                created_at: Utc::now(),
                revoked_at: None,
            })
            .await
            .unwrap();
    }
    store
}

async fn call(
    client: &Client<HttpConnector, Full<Bytes>>,
    method: &str,
    url: String,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let request = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("x-api-key", key)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_up_hard_limit_answers_402_at_the_gateway_until_the_budget_is_raised() {
    let store = seeded_store().await;
    let catalog = MeterCatalog::from_json(
        r#"[{"name": "api_requests", "eventTypes": ["api.request"],
             "aggregation": {"kind": "count"}, "unit": "requests"}]"#,
    )
    .unwrap();
    let queue = SqsEventQueue::new(
        tollgate_local::local_sqs_client("http://127.0.0.1:9"),
        "http://127.0.0.1:9/000000000000/unused".to_owned(),
    );
    let app = Arc::new(App::new(store, queue, catalog));
    let (api_addr, api_task) = serve(move |request| usage_api(app.clone(), request)).await;
    let (upstream, upstream_task) = serve(|_request| async {
        hyper::Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}")))
    })
    .await;
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let api = |path: &str| format!("http://{api_addr}{path}");

    // The base fee alone (29 USD) is more than a 20 USD budget with a hard limit.
    let budget = json!({"monthlyAmount": "20", "currency": "USD", "hardLimit": true});
    let (status, reply) = call(&client, "PUT", api("/v1/budget"), ACME, Some(budget)).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["evaluation"]["verdict"], "block", "{reply}");
    let (status, snapshot) = call(&client, "GET", api("/v1/edge/snapshot"), ADMIN, None).await;
    assert_eq!(status, 200);
    let blocked = |tenant: &str| {
        snapshot["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tenant"] == tenant)
            .map(|t| t["blocked"].clone())
    };
    assert_eq!(
        blocked("acme"),
        Some(json!("budget_hard_limit")),
        "{snapshot}"
    );
    assert_eq!(blocked("globex"), Some(Value::Null), "{snapshot}");

    let module = WasmModule::from_file(&built_wasm("tollgate_edge_filter").unwrap()).unwrap();
    let plugin = json!({
        "gatewayId": "budget-block-test",
        "identity": {"source": "apiKey", "header": "x-api-key"},
        "snapshot": {"cluster": "usage_api", "path": "/v1/edge/snapshot", "intervalSeconds": 1, "apiKey": ADMIN},
        "sqs": {"cluster": "sqs", "queueUrl": "http://127.0.0.1:9/000000000000/unused"},
        "meters": {"requests": "api_requests"},
        "stale": {"policy": "failClosed", "maxAgeSeconds": 60}
    });
    let gateway = Gateway::start(
        GatewayConfig::new(
            format!("http://{upstream}"),
            module,
            serde_json::to_vec(&plugin).unwrap(),
        )
        .with_cluster(Cluster::new("usage_api", format!("http://{api_addr}")))
        .with_cluster(Cluster::new("sqs", "http://127.0.0.1:9")),
    )
    .unwrap();
    let edge = |key: &'static str| {
        let client = client.clone();
        let url = format!("{}/v1/items", gateway.url());
        async move { call(&client, "GET", url, key, None).await }
    };
    // Until the first snapshot arrives the filter fails closed with 503.
    let until = |want: u16, key: &'static str| async move {
        let started = Instant::now();
        loop {
            let (status, body) = edge(key).await;
            if status == want {
                return body;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{key}: still {status} {body}, waiting for {want}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let refusal = until(402, ACME).await;
    assert_eq!(refusal["code"], "budget_exceeded", "{refusal}");
    assert_eq!(edge(GLOBEX).await.0, 200);

    // Raising the budget above the spend lifts the block at once; the edge follows with
    // its next snapshot.
    let raised = json!({"monthlyAmount": "100", "currency": "USD", "hardLimit": true});
    let (status, reply) = call(&client, "PUT", api("/v1/budget"), ACME, Some(raised)).await;
    assert_eq!(
        (status, reply["evaluation"]["verdict"].as_str()),
        (200, Some("allow"))
    );
    until(200, ACME).await;

    gateway.shutdown();
    api_task.abort();
    upstream_task.abort();
}
