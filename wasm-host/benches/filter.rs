//! The per-request cost of the tollgate filter: run as the real `.wasm` in this host
//! against the no-op filter in the same host, and the native cost of its decision.
//!
//! `cargo xtask bench` runs it (release build); alone:
//! `cargo build --release --target wasm32-wasip1 -p tollgate-edge-filter -p tollgate-test-filter`
//! then `cargo bench -p tollgate-wasm-host --bench filter`.
//!
//! Each figure is the median of 7 runs of a fixed number of requests, so a slow run
//! (another process on the machine) does not move it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tollgate_core::ids::MeterName;
use tollgate_edge_filter::admission::{AdmissionRequest, admit};
use tollgate_edge_filter::quota::{StalePolicy, Staleness};
use tollgate_edge_filter::snapshot::SnapshotView;
use tollgate_wasm_host::testing::module;
use tollgate_wasm_host::{Clock, HostEnv, HttpCallResult, ManualClock, PluginConfig, Vm};

const REQUESTS: u32 = 20_000;
const RUNS: usize = 7;

fn snapshot(at: DateTime<Utc>) -> String {
    let day = at.format("%Y-%m-%dT00:00:00Z");
    let sha = tollgate_core::tenant::ApiKeyHash::of("tg_bench");
    format!(
        r#"{{"schema":"tollgate.edge-snapshot/1","generatedAt":"{}","tenants":[{{"tenant":"acme","plan":"pro",
        "rateLimits":{{"perSecond":1000000,"perMinute":60000000,"perHour":null,"perDay":null}},
        "quotas":[{{"meter":"requests","period":"day","limit":"1000000000","used":"0","windowStart":"{day}"}}],
        "blocked":null}}],"apiKeys":[{{"sha256":"{}","tenant":"acme"}}]}}"#,
        at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        sha.as_hex()
    )
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[samples.len() / 2]
}

/// Nanoseconds per request through `vm`, the clock advancing 1 µs per request.
fn per_request(vm: &mut Vm, clock: &ManualClock) -> f64 {
    let headers = vec![
        (":method".to_owned(), "GET".to_owned()),
        (":path".to_owned(), "/v1/items/42".to_owned()),
        (":authority".to_owned(), "api.example".to_owned()),
        (":scheme".to_owned(), "https".to_owned()),
        ("x-api-key".to_owned(), "tg_bench".to_owned()),
        ("user-agent".to_owned(), "bench/1.0".to_owned()),
    ];
    let response = vec![
        (":status".to_owned(), "200".to_owned()),
        ("content-type".to_owned(), "application/json".to_owned()),
    ];
    let body = vec![b'x'; 512];
    let runs = (0..RUNS)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..REQUESTS {
                clock.advance(Duration::from_micros(1));
                let mut stream = vm.new_stream().unwrap();
                stream.on_request_headers(headers.clone(), true).unwrap();
                assert!(
                    stream.local_reply().is_none(),
                    "the bench request was refused"
                );
                stream.on_response_headers(response.clone(), false).unwrap();
                stream.on_response_body(&body, true).unwrap();
                stream.finish().unwrap();
            }
            started.elapsed().as_nanos() as f64 / f64::from(REQUESTS)
        })
        .collect();
    median(runs)
}

fn start(package: &str, root_id: &str, config: &[u8], env: &HostEnv) -> Vm {
    Vm::start(
        &module(package).unwrap(),
        env,
        PluginConfig {
            vm_id: "tollgate".to_owned(),
            root_id: root_id.to_owned(),
            plugin_name: "bench".to_owned(),
            vm_configuration: Vec::new(),
            plugin_configuration: config.to_vec(),
        },
    )
    .unwrap()
}

fn main() {
    let t0 = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    let now: DateTime<Utc> = DateTime::from(t0);

    // The no-op filter in the host: the cost of the host and the ABI alone.
    let clock = Arc::new(ManualClock::new(t0));
    let env = HostEnv::new(clock.clone() as Arc<dyn Clock>);
    let mut noop = start("tollgate_test_filter", "noop", b"noop", &env);
    let noop_ns = per_request(&mut noop, &clock);

    // The tollgate filter with a snapshot loaded, metering every request.
    let clock = Arc::new(ManualClock::new(t0));
    let env = HostEnv::new(clock.clone() as Arc<dyn Clock>).with_clusters(["usage_api", "sqs"]);
    let config = br#"{"gatewayId":"bench","identity":{"source":"apiKey","header":"x-api-key"},
        "snapshot":{"cluster":"usage_api","path":"/v1/edge/snapshot","intervalSeconds":60},
        "sqs":{"cluster":"sqs","queueUrl":"http://127.0.0.1:9/0/q"},"flushIntervalSeconds":300,
        "stale":{"policy":"failOpen","maxAgeSeconds":3600}}"#;
    let mut singleton = start("tollgate_edge_filter", "tollgate_flush", config, &env);
    let mut worker = start("tollgate_edge_filter", "tollgate", config, &env);
    clock.advance(Duration::from_secs(1));
    singleton.poll().unwrap();
    for call in singleton.take_http_calls() {
        singleton
            .deliver_http_response(
                call.token,
                HttpCallResult::Response {
                    headers: vec![(":status".to_owned(), "200".to_owned())],
                    body: snapshot(now).into_bytes(),
                    trailers: Vec::new(),
                },
            )
            .unwrap();
    }
    let filter_ns = per_request(&mut worker, &clock);

    // The decision alone, natively: identify by key digest, then admit against the
    // tenant's counters (2 rate limits, 1 quota) and write them back.
    let view = SnapshotView::parse(snapshot(now).as_bytes()).unwrap();
    let staleness = Staleness {
        policy: StalePolicy::FailOpen,
        max_age: chrono::Duration::hours(1),
    };
    let units = [(MeterName::new("requests").unwrap(), Decimal::ONE)];
    let native_runs: Vec<f64> = (0..RUNS)
        .map(|run| {
            let mut stored: Option<Vec<u8>> = None;
            let started = Instant::now();
            for i in 0..REQUESTS {
                let tenant = view.tenant_of_key(black_box("tg_bench")).unwrap();
                let limits = view.tenant(tenant).unwrap();
                let at = now
                    + chrono::Duration::microseconds(
                        i64::from(i) + i64::from(REQUESTS) * run as i64,
                    );
                let admission = admit(
                    stored.as_deref(),
                    &AdmissionRequest {
                        now: at,
                        limits,
                        snapshot_taken_at: Some(view.generated_at),
                        staleness: &staleness,
                        units_at_admission: &units,
                        emit_headers_on_allowed: true,
                    },
                );
                if let Some(state) = admission.new_state {
                    stored = Some(state);
                }
                black_box(&admission.verdict);
            }
            started.elapsed().as_nanos() as f64 / f64::from(REQUESTS)
        })
        .collect();
    let native_ns = median(native_runs);

    let _ = SystemTime::now();
    println!("filter per-request cost (median of {RUNS} runs of {REQUESTS} requests)");
    println!(
        "  no-op filter in the host           {:>9.0} ns/request",
        noop_ns
    );
    println!(
        "  tollgate filter in the host        {:>9.0} ns/request",
        filter_ns
    );
    println!(
        "  tollgate filter / no-op filter     {:>9.1} x  (filter's own cost {:.0} ns)",
        filter_ns / noop_ns,
        filter_ns - noop_ns
    );
    println!(
        "  native decision (key + admission)  {:>9.0} ns/request",
        native_ns
    );
    println!(
        "  in-host filter / native decision   {:>9.1} x",
        filter_ns / native_ns
    );
}
