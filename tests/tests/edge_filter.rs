#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The real `tollgate_edge_filter.wasm` in the proxy-wasm host: worker VMs sharing one
//! process's shared data, the singleton flushing to a real SQS server (moto, started by
//! `cargo xtask test`), the snapshot answered by the test as the usage API would.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::Client;
use chrono::{DateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use serde_json::json;
use tollgate_core::aggregate::AggregateState;
use tollgate_core::message::EdgeBatch;
use tollgate_core::tenant::ApiKeyHash;
use tollgate_gateway::{Cluster, ClusterClient, SigV4};
use tollgate_wasm_host::testing::built_wasm;
use tollgate_wasm_host::{
    Clock, FilterAction, HostEnv, HttpCall, HttpCallResult, ManualClock, PluginConfig, Vm,
    WasmModule,
};

const VM_ID: &str = "tollgate";

fn module() -> WasmModule {
    static MODULE: std::sync::OnceLock<WasmModule> = std::sync::OnceLock::new();
    MODULE
        .get_or_init(|| {
            WasmModule::from_file(&built_wasm("tollgate_edge_filter").unwrap()).unwrap()
        })
        .clone()
}

fn start_time() -> SystemTime {
    let at: DateTime<Utc> = Utc
        .with_ymd_and_hms(2026, 11, 23, 10, 0, 0)
        .single()
        .unwrap();
    UNIX_EPOCH + Duration::from_millis(at.timestamp_millis() as u64)
}

fn utc(t: SystemTime) -> DateTime<Utc> {
    DateTime::<Utc>::from(t)
}

/// The plugin configuration every test uses, pointing SQS at `queue_url`.
fn plugin_config(queue_url: &str, extra: serde_json::Value) -> Vec<u8> {
    let mut config = json!({
        "gatewayId": "gw-test",
        "identity": {"source": "apiKey", "header": "x-api-key"},
        "snapshot": {"cluster": "usage_api", "path": "/v1/edge/snapshot", "intervalSeconds": 1},
        "sqs": {"cluster": "sqs", "queueUrl": queue_url},
        "flushIntervalSeconds": 2,
        "stale": {"policy": "failOpen", "maxAgeSeconds": 60},
        "meters": {"requests": "requests", "responseBytes": "response_bytes", "latencyMs": "latency_ms"},
        "routeGroups": [{"prefix": "/v1/items", "group": "items"}]
    });
    if let (Some(base), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            base.insert(k.clone(), v.clone());
        }
    }
    serde_json::to_vec(&config).unwrap()
}

/// One tenant of the test snapshot.
struct TenantSpec {
    id: &'static str,
    key: &'static str,
    per_second: Option<u64>,
    per_minute: Option<u64>,
    day_quota: Option<(u64, u64)>,
    blocked: bool,
}

fn snapshot_json(tenants: &[TenantSpec], at: DateTime<Utc>) -> Vec<u8> {
    let mut keys: Vec<(String, &str)> = tenants
        .iter()
        .map(|t| (ApiKeyHash::of(t.key).as_hex().to_owned(), t.id))
        .collect();
    keys.sort();
    let api_keys: Vec<serde_json::Value> = keys
        .into_iter()
        .map(|(sha, id)| json!({"sha256": sha, "tenant": id}))
        .collect();
    let day_start = at.date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc();
    let body = json!({
        "schema": "tollgate.edge-snapshot/1",
        "generatedAt": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "tenants": tenants.iter().map(|t| json!({
            "tenant": t.id,
            "plan": "test",
            "rateLimits": {"perSecond": t.per_second, "perMinute": t.per_minute, "perHour": null, "perDay": null},
            "quotas": t.day_quota.iter().map(|(limit, used)| json!({
                "meter": "requests", "period": "day",
                "limit": limit.to_string(), "used": used.to_string(),
                "windowStart": day_start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            })).collect::<Vec<_>>(),
            "blocked": if t.blocked { json!("budget_hard_limit") } else { json!(null) }
        })).collect::<Vec<_>>(),
        "apiKeys": api_keys
    });
    serde_json::to_vec(&body).unwrap()
}

/// One Envoy process: a singleton and `workers` worker VMs over one [`HostEnv`].
struct Instance {
    env: HostEnv,
    clock: Arc<ManualClock>,
    singleton: Vm,
    workers: Vec<Vm>,
}

impl Instance {
    fn start(clock: Arc<ManualClock>, workers: usize, config: Vec<u8>) -> Instance {
        let env = HostEnv::new(clock.clone() as Arc<dyn Clock>).with_clusters(["usage_api", "sqs"]);
        let plugin = |root_id: &str| PluginConfig {
            vm_id: VM_ID.to_owned(),
            root_id: root_id.to_owned(),
            plugin_name: "tollgate".to_owned(),
            vm_configuration: Vec::new(),
            plugin_configuration: config.clone(),
        };
        let singleton = Vm::start(&module(), &env, plugin("tollgate_flush")).unwrap();
        let workers = (0..workers)
            .map(|_| Vm::start(&module(), &env, plugin("tollgate")).unwrap())
            .collect();
        Instance {
            env,
            clock,
            singleton,
            workers,
        }
    }

    /// Advances the clock by `by` and polls every VM once (ticks, queue deliveries).
    fn advance(&mut self, by: Duration) {
        self.clock.advance(by);
        self.singleton.poll().unwrap();
        for w in &mut self.workers {
            w.poll().unwrap();
        }
        self.singleton.poll().unwrap();
    }

    /// Answers the singleton's pending snapshot calls with `body`; returns the other calls.
    fn answer_snapshot(&mut self, body: &[u8]) -> Vec<HttpCall> {
        let mut others = Vec::new();
        for call in self.singleton.take_http_calls() {
            if call.cluster == "usage_api" {
                assert_eq!(header(&call.headers, ":method"), Some("GET"));
                assert_eq!(header(&call.headers, ":path"), Some("/v1/edge/snapshot"));
                self.singleton
                    .deliver_http_response(
                        call.token,
                        HttpCallResult::Response {
                            headers: vec![(":status".into(), "200".into())],
                            body: body.to_vec(),
                            trailers: Vec::new(),
                        },
                    )
                    .unwrap();
            } else {
                others.push(call);
            }
        }
        others
    }

    /// Starts up: the first tick fetches the snapshot, the next lets workers take it.
    fn boot(&mut self, snapshot: &[u8]) {
        self.advance(Duration::from_secs(1));
        let others = self.answer_snapshot(snapshot);
        assert!(others.is_empty());
        self.advance(Duration::from_secs(1));
        let _ = self.answer_snapshot(snapshot);
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// What the client sees of one request.
#[derive(Debug)]
struct Outcome {
    status: u32,
    headers: Vec<(String, String)>,
    body: String,
}

/// Runs one request through a worker VM; forwarded requests get a 200 with `body_len`
/// bytes from the "upstream".
fn request(vm: &mut Vm, key: Option<&str>, path: &str, body_len: usize) -> Outcome {
    request_with(vm, key, path, body_len, &[])
}

/// [`request`] with stream properties set first (what Envoy's other filters leave in
/// dynamic metadata).
fn request_with(
    vm: &mut Vm,
    key: Option<&str>,
    path: &str,
    body_len: usize,
    properties: &[(&[&str], &str)],
) -> Outcome {
    let mut headers = vec![
        (":method".to_owned(), "GET".to_owned()),
        (":path".to_owned(), path.to_owned()),
        (":authority".to_owned(), "api.example".to_owned()),
        (":scheme".to_owned(), "http".to_owned()),
    ];
    if let Some(key) = key {
        headers.push(("x-api-key".to_owned(), key.to_owned()));
    }
    let mut stream = vm.new_stream().unwrap();
    for (path, value) in properties {
        stream.set_property(path, value.as_bytes().to_vec());
    }
    let action = stream.on_request_headers(headers, true).unwrap();
    if let Some(reply) = stream.local_reply() {
        let outcome = Outcome {
            status: reply.status,
            headers: reply.headers.clone(),
            body: String::from_utf8_lossy(&reply.body).into_owned(),
        };
        stream.finish().unwrap();
        return outcome;
    }
    assert_eq!(action, FilterAction::Continue);
    stream
        .on_response_headers(
            vec![
                (":status".to_owned(), "200".to_owned()),
                ("content-length".to_owned(), body_len.to_string()),
            ],
            body_len == 0,
        )
        .unwrap();
    if body_len > 0 {
        stream
            .on_response_body(&vec![b'x'; body_len], true)
            .unwrap();
    }
    let outcome = Outcome {
        status: 200,
        headers: stream.response_headers().to_vec(),
        body: String::new(),
    };
    stream.finish().unwrap();
    outcome
}

#[test]
fn unknown_keys_get_401_blocked_tenants_402_and_limited_ones_429_with_every_header() {
    let clock = Arc::new(ManualClock::new(start_time()));
    let mut instance = Instance::start(
        clock.clone(),
        1,
        plugin_config("http://127.0.0.1:9/0/q", json!({})),
    );
    let snapshot = snapshot_json(
        &[
            TenantSpec {
                id: "acme",
                key: "tg_acme",
                per_second: Some(2),
                per_minute: Some(100),
                day_quota: None,
                blocked: false,
            },
            TenantSpec {
                id: "broke",
                key: "tg_broke",
                per_second: None,
                per_minute: None,
                day_quota: None,
                blocked: true,
            },
        ],
        utc(clock.now()),
    );
    instance.boot(&snapshot);
    let vm = &mut instance.workers[0];

    let unknown = request(vm, Some("tg_nobody"), "/v1/items", 0);
    assert_eq!(unknown.status, 401);
    let missing = request(vm, None, "/v1/items", 0);
    assert_eq!(missing.status, 401);
    let body: serde_json::Value = serde_json::from_str(&unknown.body).unwrap();
    assert_eq!(body["code"], "unknown_tenant", "{body}");

    let blocked = request(vm, Some("tg_broke"), "/v1/items", 0);
    assert_eq!(blocked.status, 402);
    assert_eq!(
        header(&blocked.headers, "content-type"),
        Some("application/json")
    );
    let body: serde_json::Value = serde_json::from_str(&blocked.body).unwrap();
    assert_eq!(body["code"], "budget_exceeded", "{body}");

    let first = request(vm, Some("tg_acme"), "/v1/items", 10);
    assert_eq!(first.status, 200);
    assert_eq!(
        header(&first.headers, "ratelimit-policy"),
        Some("\"default\";q=2;w=1")
    );
    assert_eq!(header(&first.headers, "x-ratelimit-limit"), Some("2"));
    assert_eq!(header(&first.headers, "x-ratelimit-remaining"), Some("1"));
    let second = request(vm, Some("tg_acme"), "/v1/items", 10);
    assert_eq!(second.status, 200);
    assert_eq!(header(&second.headers, "x-ratelimit-remaining"), Some("0"));

    let limited = request(vm, Some("tg_acme"), "/v1/items", 10);
    assert_eq!(limited.status, 429);
    assert_eq!(
        header(&limited.headers, "ratelimit-policy"),
        Some("\"default\";q=2;w=1")
    );
    assert_eq!(
        header(&limited.headers, "ratelimit"),
        Some("\"default\";r=0;t=1")
    );
    assert_eq!(header(&limited.headers, "x-ratelimit-limit"), Some("2"));
    assert_eq!(header(&limited.headers, "x-ratelimit-remaining"), Some("0"));
    assert_eq!(header(&limited.headers, "x-ratelimit-reset"), Some("1"));
    assert_eq!(header(&limited.headers, "retry-after"), Some("1"));
    let body: serde_json::Value = serde_json::from_str(&limited.body).unwrap();
    assert_eq!(body["code"], "rate_limited", "{body}");

    assert_eq!(instance.env.metric("tollgate.requests_allowed"), Some(2));
    assert_eq!(
        instance.env.metric("tollgate.requests_rate_limited"),
        Some(1)
    );
    assert_eq!(instance.env.metric("tollgate.requests_blocked"), Some(1));
    assert_eq!(
        instance.env.metric("tollgate.requests_unauthorized"),
        Some(2)
    );
    for log in instance.env.logs() {
        assert!(
            !log.message.contains("tg_acme"),
            "a key reached the log: {}",
            log.message
        );
    }
}

#[test]
fn tenants_from_jwt_claims_and_the_anonymous_policy() {
    let clock = Arc::new(ManualClock::new(start_time()));
    let config = plugin_config(
        "http://127.0.0.1:9/0/q",
        json!({
            "identity": {"source": "jwtClaim", "payloadInMetadata": "jwt_payload", "claim": "org.id"},
            "unknownTenant": {"policy": "anonymous", "anonymousTenant": "anon"}
        }),
    );
    let mut instance = Instance::start(clock.clone(), 1, config);
    let snapshot = snapshot_json(
        &[
            TenantSpec {
                id: "acme",
                key: "k1",
                per_second: Some(1),
                per_minute: None,
                day_quota: None,
                blocked: false,
            },
            TenantSpec {
                id: "anon",
                key: "k2",
                per_second: None,
                per_minute: Some(1),
                day_quota: None,
                blocked: false,
            },
        ],
        utc(clock.now()),
    );
    instance.boot(&snapshot);
    let claim: &[&str] = &[
        "metadata",
        "filter_metadata",
        "envoy.filters.http.jwt_authn",
        "jwt_payload",
        "org",
        "id",
    ];
    let vm = &mut instance.workers[0];
    let first = request_with(vm, None, "/", 0, &[(claim, "acme")]);
    assert_eq!(first.status, 200);
    assert_eq!(header(&first.headers, "x-ratelimit-limit"), Some("1"));
    assert_eq!(
        request_with(vm, None, "/", 0, &[(claim, "acme")]).status,
        429
    );
    // No claim, or a tenant the snapshot does not know: limited as `anon` (1 per minute).
    let anon = request_with(vm, None, "/", 0, &[]);
    assert_eq!(anon.status, 200);
    assert_eq!(
        header(&anon.headers, "ratelimit-policy"),
        Some("\"default\";q=1;w=60")
    );
    assert_eq!(
        request_with(vm, None, "/", 0, &[(claim, "nobody")]).status,
        429
    );
}

#[test]
fn fail_closed_refuses_with_503_until_a_snapshot_arrives() {
    let clock = Arc::new(ManualClock::new(start_time()));
    let config = plugin_config(
        "http://127.0.0.1:9/0/q",
        json!({"identity": {"source": "header", "header": "x-tenant"},
               "stale": {"policy": "failClosed", "maxAgeSeconds": 5}}),
    );
    let mut instance = Instance::start(clock.clone(), 1, config);
    let ask = |vm: &mut Vm| {
        let mut stream = vm.new_stream().unwrap();
        stream
            .on_request_headers(
                vec![
                    (":method".to_owned(), "GET".to_owned()),
                    (":path".to_owned(), "/".to_owned()),
                    (":authority".to_owned(), "api".to_owned()),
                    ("x-tenant".to_owned(), "acme".to_owned()),
                ],
                true,
            )
            .unwrap();
        let status = stream.local_reply().map_or(200, |r| r.status);
        stream.finish().unwrap();
        status
    };
    assert_eq!(ask(&mut instance.workers[0]), 503);
    let snapshot = snapshot_json(
        &[TenantSpec {
            id: "acme",
            key: "k",
            per_second: None,
            per_minute: None,
            day_quota: Some((100, 0)),
            blocked: false,
        }],
        utc(clock.now()),
    );
    instance.boot(&snapshot);
    assert_eq!(ask(&mut instance.workers[0]), 200);
    // The usage API goes away: once the snapshot is older than 5 s, quotas cannot be
    // checked and fail-closed refuses again.
    for _ in 0..6 {
        instance.advance(Duration::from_secs(1));
        for call in instance.singleton.take_http_calls() {
            instance
                .singleton
                .deliver_http_response(call.token, HttpCallResult::Failed)
                .unwrap();
        }
    }
    assert_eq!(ask(&mut instance.workers[0]), 503);
    assert!(
        instance
            .env
            .metric("tollgate.snapshot_failures")
            .unwrap_or(0)
            >= 5
    );
}

#[test]
fn a_bad_plugin_configuration_fails_the_start_with_every_problem_logged() {
    let clock = Arc::new(ManualClock::new(start_time()));
    let env = HostEnv::new(clock as Arc<dyn Clock>);
    let config = br#"{"gatewayId": "", "identity": {"source": "header"},
        "snapshot": {"cluster": "u", "path": "nope"}, "sqs": {"cluster": "s", "queueUrl": "x"}}"#;
    let Err(error) = Vm::start(
        &module(),
        &env,
        PluginConfig {
            vm_id: VM_ID.to_owned(),
            root_id: "tollgate".to_owned(),
            plugin_name: "tollgate".to_owned(),
            vm_configuration: Vec::new(),
            plugin_configuration: config.to_vec(),
        },
    ) else {
        panic!("the start must fail");
    };
    let text = format!("{error}");
    let logs: String = env
        .logs()
        .iter()
        .map(|l| l.message.clone())
        .collect::<Vec<_>>()
        .join("\n");
    for path in [
        "gatewayId",
        "identity.header",
        "snapshot.path",
        "sqs.queueUrl",
    ] {
        assert!(
            logs.contains(path) || text.contains(path),
            "{path} missing from: {logs}"
        );
    }
}

#[test]
fn rate_limits_hold_across_four_workers_running_at_once() {
    let clock = Arc::new(ManualClock::new(start_time()));
    let mut instance = Instance::start(
        clock.clone(),
        4,
        plugin_config("http://127.0.0.1:9/0/q", json!({})),
    );
    let snapshot = snapshot_json(
        &[TenantSpec {
            id: "acme",
            key: "tg_acme",
            per_second: None,
            per_minute: Some(300),
            day_quota: None,
            blocked: false,
        }],
        utc(clock.now()),
    );
    instance.boot(&snapshot);
    // The first request creates the tenant's entry (Envoy inserts a missing key without a
    // CAS check, so creation races are documented, not tested here).
    assert_eq!(
        request(&mut instance.workers[0], Some("tg_acme"), "/", 0).status,
        200
    );
    let workers = std::mem::take(&mut instance.workers);
    let handles: Vec<_> = workers
        .into_iter()
        .map(|mut vm| {
            std::thread::spawn(move || {
                let mut allowed = 0u32;
                let mut limited = 0u32;
                for _ in 0..200 {
                    match request(&mut vm, Some("tg_acme"), "/v1/items/1", 0).status {
                        200 => allowed += 1,
                        429 => limited += 1,
                        other => panic!("unexpected {other}"),
                    }
                }
                (vm, allowed, limited)
            })
        })
        .collect();
    let mut allowed = 1;
    let mut limited = 0;
    for handle in handles {
        let (vm, a, l) = handle.join().unwrap();
        instance.workers.push(vm);
        allowed += a;
        limited += l;
    }
    // The clock stands still: GCRA allows exactly the burst (the limit) and no more.
    assert_eq!(allowed, 300);
    assert_eq!(limited, 801 - 300);
    assert_eq!(instance.env.metric("tollgate.requests_allowed"), Some(300));
}

#[test]
fn quota_overshoot_across_instances_stays_within_the_stated_bound() {
    // N instances, snapshot interval I = 1 s, snapshot data delay D = 2 s, each instance
    // admitting up to R = 20 requests/s: overshoot ≤ N·(⌈(I + D)·R⌉ + 1)·u.
    const N: usize = 3;
    const R: u64 = 20;
    const I_S: u64 = 1;
    const D_S: u64 = 2;
    const LIMIT: u64 = 200;
    let clock = Arc::new(ManualClock::new(start_time()));
    let config = plugin_config("http://127.0.0.1:9/0/q", json!({}));
    let mut instances: Vec<Instance> = (0..N)
        .map(|_| Instance::start(clock.clone(), 1, config.clone()))
        .collect();
    // Ground truth: every admitted request, with its time.
    let mut admitted: Vec<SystemTime> = Vec::new();
    let snapshot_at = |admitted: &[SystemTime], now: SystemTime| {
        let visible = admitted
            .iter()
            .filter(|t| **t + Duration::from_secs(D_S) <= now)
            .count() as u64;
        snapshot_json(
            &[TenantSpec {
                id: "acme",
                key: "tg_acme",
                per_second: Some(R),
                per_minute: None,
                day_quota: Some((LIMIT, visible)),
                blocked: false,
            }],
            utc(now),
        )
    };
    for _ in 0..(60 * 10) {
        // Every 100 ms: ticks and snapshot answers, then R/10 requests per instance.
        let now = clock.now();
        let body = snapshot_at(&admitted, now);
        for instance in &mut instances {
            instance.singleton.poll().unwrap();
            instance.workers[0].poll().unwrap();
            let _ = instance.answer_snapshot(&body);
            for _ in 0..(R / 10) {
                if request(&mut instance.workers[0], Some("tg_acme"), "/", 0).status == 200 {
                    admitted.push(now);
                }
            }
        }
        clock.advance(Duration::from_millis(100));
    }
    let total = admitted.len() as u64;
    let bound = LIMIT + N as u64 * ((I_S + D_S) * R + 1);
    assert!(total >= LIMIT, "the quota was reached: {total}");
    assert!(total <= bound, "admitted {total}, bound {bound}");
}

async fn perform(call: &HttpCall, sqs_endpoint: &str) -> HttpCallResult {
    let cluster = Cluster::new("sqs", sqs_endpoint).signed(SigV4::local("sqs"));
    ClusterClient::new().call(call, &cluster).await
}

#[tokio::test(flavor = "multi_thread")]
async fn every_forwarded_request_reaches_sqs_once_in_batches_with_unique_ids() {
    let endpoint = tollgate_devstack::sqs_endpoint_for_tests();
    let sqs: Client = tollgate_local::local_sqs_client(&endpoint);
    let name = format!("edge-{}", std::process::id());
    let queue_url = sqs
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();

    let clock = Arc::new(ManualClock::new(start_time()));
    let mut instance = Instance::start(clock.clone(), 4, plugin_config(&queue_url, json!({})));
    let tenants = [
        TenantSpec {
            id: "acme",
            key: "tg_acme",
            per_second: None,
            per_minute: None,
            day_quota: None,
            blocked: false,
        },
        TenantSpec {
            id: "globex",
            key: "tg_globex",
            per_second: None,
            per_minute: None,
            day_quota: None,
            blocked: false,
        },
        TenantSpec {
            id: "initech",
            key: "tg_initech",
            per_second: None,
            per_minute: None,
            day_quota: None,
            blocked: false,
        },
    ];
    let snapshot = snapshot_json(&tenants, utc(clock.now()));
    instance.boot(&snapshot);

    let mut sent: BTreeMap<&str, u64> = BTreeMap::new();
    let mut bytes: BTreeMap<&str, u64> = BTreeMap::new();
    let mut calls = 0usize;
    let mut first_failed = false;
    for round in 0..6 {
        for i in 0..300usize {
            let tenant = &tenants[(i + round) % tenants.len()];
            let worker = i % instance.workers.len();
            let size = i % 7 * 100;
            let path = if i % 2 == 0 {
                "/v1/items/7"
            } else {
                "/v2/search"
            };
            let outcome = request(&mut instance.workers[worker], Some(tenant.key), path, size);
            assert_eq!(outcome.status, 200);
            *sent.entry(tenant.id).or_default() += 1;
            *bytes.entry(tenant.id).or_default() += size as u64;
        }
        instance.advance(Duration::from_secs(1));
        for call in instance.answer_snapshot(&snapshot) {
            assert_eq!(call.cluster, "sqs");
            assert_eq!(
                header(&call.headers, "x-amz-target"),
                Some("AmazonSQS.SendMessageBatch")
            );
            calls += 1;
            let result = if !first_failed {
                // The first call fails as a whole: it must come back with the same body.
                first_failed = true;
                HttpCallResult::Failed
            } else {
                perform(&call, &endpoint).await
            };
            instance
                .singleton
                .deliver_http_response(call.token, result)
                .unwrap();
        }
    }
    // Drain: keep ticking until nothing is left to send (backoff ≤ 60 s).
    for _ in 0..120 {
        instance.advance(Duration::from_secs(1));
        for call in instance.answer_snapshot(&snapshot) {
            calls += 1;
            let result = perform(&call, &endpoint).await;
            instance
                .singleton
                .deliver_http_response(call.token, result)
                .unwrap();
        }
    }
    assert!(calls >= 2);

    let mut batch_ids = BTreeSet::new();
    let mut counted: BTreeMap<String, u64> = BTreeMap::new();
    let mut summed: BTreeMap<String, Decimal> = BTreeMap::new();
    loop {
        let received = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for message in messages {
            let body = message.body.unwrap();
            let batch: EdgeBatch = serde_json::from_str(&body).unwrap();
            assert!(
                batch_ids.insert(batch.batch_id.clone()),
                "batch id {} twice",
                batch.batch_id
            );
            assert!(batch.batch_id.starts_with("gw-test-"));
            for row in batch.rows {
                match (row.meter.as_str(), row.state) {
                    ("requests", AggregateState::Count { n }) => {
                        *counted.entry(row.tenant.as_str().to_owned()).or_default() += n
                    }
                    ("response_bytes", AggregateState::Sum { sum }) => {
                        *summed.entry(row.tenant.as_str().to_owned()).or_default() += sum
                    }
                    _ => {}
                }
            }
            sqs.delete_message()
                .queue_url(&queue_url)
                .receipt_handle(message.receipt_handle.unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    for (tenant, n) in &sent {
        assert_eq!(counted.get(*tenant), Some(n), "requests of {tenant}");
        assert_eq!(
            summed.get(*tenant).copied().unwrap_or_default(),
            Decimal::from(bytes[tenant])
        );
    }
    assert_eq!(instance.env.metric("tollgate.rows_dropped").unwrap_or(0), 0);
    assert!(instance.env.metric("tollgate.flush_failures").unwrap_or(0) >= 1);
    sqs.delete_queue()
        .queue_url(&queue_url)
        .send()
        .await
        .unwrap();
}
