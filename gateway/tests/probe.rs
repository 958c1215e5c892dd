#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The gateway's own paths with the workspace's probe filter (`tollgate-test-filter`,
//! configuration `probe`): a trapped VM (503, or pass-through with `fail_open`), a
//! request paused on the plugin's own HTTP call to a cluster, and request and response
//! headers as the plugin rewrote them.

mod common;

use common::{header, serve};
use std::net::SocketAddr;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tollgate_gateway::{Cluster, Gateway, GatewayConfig, RunningGateway};
use tollgate_wasm_host::testing;

async fn echo_upstream() -> SocketAddr {
    serve(|request| {
        let mut response = Response::builder().header("server", "upstream");
        for (name, value) in request.headers() {
            if name.as_str().starts_with("x-probe") {
                response = response.header(format!("x-echo-{name}"), value);
            }
        }
        response
            .body(Full::new(Bytes::from_static(b"upstream body")))
            .unwrap()
    })
    .await
}

async fn gateway(fail_open: bool) -> RunningGateway {
    let upstream = echo_upstream().await;
    let side = serve(|_| {
        Response::builder()
            .status(204)
            .body(Full::new(Bytes::new()))
            .unwrap()
    })
    .await;
    let module = testing::module("tollgate_test_filter").unwrap_or_else(|e| panic!("{e}"));
    let mut config = GatewayConfig::new(format!("http://{upstream}"), module, b"probe".to_vec())
        .with_cluster(Cluster::new("side", format!("http://{side}")));
    config.workers = 1;
    config.fail_open = fail_open;
    tokio::task::spawn_blocking(move || Gateway::start(config))
        .await
        .unwrap()
        .unwrap()
}

async fn get(
    gateway: &RunningGateway,
    headers: &[(&str, &str)],
) -> (u16, hyper::HeaderMap, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = Request::post(format!("{}/v1/things", gateway.url()));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(
            request
                .body(Full::new(Bytes::from_static(b"hello")))
                .unwrap(),
        )
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status.as_u16(),
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_rewrites_request_and_response_headers_around_the_upstream() {
    let gateway = gateway(false).await;
    let (status, headers, body) = get(&gateway, &[("x-probe-remove", "bye")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "upstream body");
    assert_eq!(header(&headers, "x-echo-x-probe-added"), Some("1"));
    assert_eq!(header(&headers, "x-echo-x-probe-remove"), None);
    assert_eq!(header(&headers, "x-probe-response"), Some("1"));
    assert_eq!(header(&headers, "server"), Some("probe"));
    assert_eq!(gateway.env().metric("probe_done"), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_reply_is_returned_without_the_upstream() {
    let gateway = gateway(false).await;
    let (status, headers, body) = get(&gateway, &[("x-probe-reply", "418")]).await;
    assert_eq!(status, 418);
    assert_eq!(body, "probe local reply");
    assert_eq!(header(&headers, "x-probe-local"), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_paused_on_the_plugins_call_resumes_when_the_cluster_answers() {
    let gateway = gateway(false).await;
    let (status, headers, _) = get(&gateway, &[("x-probe-call", "side")]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-echo-x-probe-call-status"), Some("204"));
    assert_eq!(header(&headers, "x-probe-call-status"), Some("204"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapped_vm_answers_503_with_json_from_then_on() {
    let gateway = gateway(false).await;
    let (status, headers, body) = get(&gateway, &[("x-probe-trap", "1")]).await;
    assert_eq!(status, 503);
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    assert!(body.contains("filter_unavailable"), "{body}");
    // The one worker VM stays failed, as in Envoy; the gateway still answers.
    let (status, _, _) = get(&gateway, &[]).await;
    assert_eq!(status, 503);
    // The stats say which VM trapped (the singleton comes first), refreshed within a poll.
    let mut stats = gateway.vm_stats();
    for _ in 0..50 {
        if stats.iter().any(|vm| vm.failed) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        stats = gateway.vm_stats();
    }
    let failed: Vec<bool> = stats.iter().map(|vm| vm.failed).collect();
    assert_eq!(failed, [false, true], "{stats:?}");
    assert!(stats.iter().all(|vm| vm.memory_bytes > 0), "{stats:?}");
    gateway.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fail_open_a_trapped_vm_passes_requests_through_unfiltered() {
    let gateway = gateway(true).await;
    let (status, headers, body) = get(&gateway, &[("x-probe-trap", "1")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "upstream body");
    assert_eq!(header(&headers, "server"), Some("upstream"));
    let (status, headers, _) = get(&gateway, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-probe-response"), None, "unfiltered");
}
