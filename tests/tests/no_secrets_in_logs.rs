//! No secret reaches a log line, even at `RUST_LOG=trace`: the real Lambda binaries run
//! in the local stack and the real edge filter in the local gateway, through issuing
//! keys, calls with valid, unknown, revoked and oversized keys (and keys in the query
//! string or the wrong header), event intake and ingest, signed webhook deliveries that
//! succeed and fail, and billing-sync against the Stripe stand-in with failing calls. Then
//! every line the functions printed and every record the filter logged is searched for
//! each API key issued, the Stripe secret key and each webhook secret.
//!
//! The function processes' output is echoed to this process's stderr (`[usage-api] …`,
//! see `tollgate_local::FunctionSpec::echo_output`), which a test cannot read, so the test
//! runs itself again as a child process with its output sent to a file: the child (the
//! same test, with [`CHILD_ENV`] set) drives the scenario and writes the secrets it made
//! to a second file; the parent searches the first for the second.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tollgate_core::tenant::{ApiKeyHash, ApiKeyRecord, ApiKeyRole};
use tollgate_core::webhook::WebhookSecret;
use tollgate_devstack::stripe::Fault;
use tollgate_devstack::webhook::WebhookReceiver;
use tollgate_gateway::{Cluster, Gateway, GatewayConfig, SigV4};
use tollgate_local::{LOCAL_STRIPE_KEY, LocalStack, StackConfig, build_functions};
use tollgate_usage_api::handlers::keys::generate_secret;
use tollgate_wasm_host::LogLevel;

/// Set in the child: run the scenario instead of spawning it.
const CHILD_ENV: &str = "TOLLGATE_NO_SECRETS_CHILD";
/// Where the child writes the secrets it made, one per line.
const SECRETS_ENV: &str = "TOLLGATE_NO_SECRETS_FILE";
/// This test's name, for the child's libtest filter.
const TEST: &str = "no_secret_reaches_a_log_line_at_trace_level";
/// The functions' log filter: everything, as verbose as it gets.
const FUNCTION_LOG: &str = "trace";
/// How long the child may take (the function build included).
const CHILD_DEADLINE: Duration = Duration::from_secs(900);
/// The prefixes of the lines searched: what the functions printed, what the filter logged.
const SOURCES: [&str; 6] = [
    "[ingest] ",
    "[rollup] ",
    "[usage-api] ",
    "[budget] ",
    "[billing-sync] ",
    "[edge-filter] ",
];

#[test]
fn no_secret_reaches_a_log_line_at_trace_level() {
    if std::env::var_os(CHILD_ENV).is_some() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(scenario());
        return;
    }
    let dir = std::env::temp_dir().join(format!("tollgate-no-secrets-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (output, secrets_file) = (dir.join("output.log"), dir.join("secrets.txt"));
    let status = run_child(&output, &secrets_file);
    let text = String::from_utf8_lossy(&std::fs::read(&output).unwrap()).into_owned();
    assert!(
        status,
        "the scenario failed; its output is in {}:\n{}",
        output.display(),
        tail(&text, 80)
    );
    let secrets: Vec<(String, String)> = std::fs::read_to_string(&secrets_file)
        .unwrap()
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(what, secret)| (what.to_owned(), secret.to_owned()))
        .collect();
    assert!(secrets.len() >= 8, "{secrets:?}");

    let mut scanned: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut leaks = Vec::new();
    for line in text.lines() {
        let Some(source) = SOURCES.iter().find(|s| line.starts_with(**s)) else {
            continue;
        };
        let entry = scanned.entry(source.trim()).or_default();
        entry.0 += 1;
        entry.1 += line.len();
        for (what, secret) in &secrets {
            if line.contains(secret.as_str()) {
                leaks.push(format!(
                    "{what} in: {}",
                    mask(line, &secrets).chars().take(400).collect::<String>()
                ));
            }
        }
    }
    println!(
        "lines searched at RUST_LOG={FUNCTION_LOG}, for {} secrets:",
        secrets.len()
    );
    for (source, (lines, bytes)) in &scanned {
        println!("    {source:<16} {lines:>7} lines {bytes:>10} bytes");
    }
    // The search means something only if every source was heard from, at trace level.
    for source in SOURCES {
        assert!(
            scanned.get(source.trim()).is_some_and(|(n, _)| *n > 0),
            "no output captured from {source}"
        );
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("[usage-api] ") && l.contains("TRACE")),
        "the functions did not log at trace level"
    );
    assert!(
        leaks.is_empty(),
        "{} log lines hold a secret:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs this test again as a child with its output in `output`; whether it passed.
fn run_child(output: &Path, secrets: &Path) -> bool {
    let file = std::fs::File::create(output).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .env(SECRETS_ENV, secrets)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + CHILD_DEADLINE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The line with every secret replaced by its name, so a failure does not print it again.
fn mask(line: &str, secrets: &[(String, String)]) -> String {
    secrets
        .iter()
        .fold(line.to_owned(), |line, (what, secret)| {
            line.replace(secret.as_str(), &format!("<{what}>"))
        })
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

type Http = Client<HttpConnector, Full<Bytes>>;

/// One request to the usage API: headers as given, so keys can go where they should not.
async fn send(
    http: &Http,
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> (u16, Value) {
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(format!("{}{}", base.trim_end_matches('/'), path))
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(
            body.map(Value::to_string).unwrap_or_default(),
        )))
        .unwrap();
    let response = http.request(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// The secrets the scenario made, written for the parent as `what<TAB>secret` lines.
#[derive(Default)]
struct Secrets(Vec<(String, String)>);

impl Secrets {
    fn add(&mut self, what: impl Into<String>, secret: impl Into<String>) {
        self.0.push((what.into(), secret.into()));
    }

    fn write(&self) {
        let path = PathBuf::from(std::env::var_os(SECRETS_ENV).unwrap());
        let text: String = self
            .0
            .iter()
            .map(|(what, secret)| format!("{what}\t{secret}\n"))
            .collect();
        std::fs::write(path, text).unwrap();
    }
}

async fn scenario() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let binaries = build_functions(&workspace).unwrap();
    let mut config = StackConfig::new(
        binaries,
        workspace.join("events/samples/demo-stack/meters.json"),
    );
    config.function_log = Some(FUNCTION_LOG.to_owned());
    config.table = format!("no-secrets-{}", std::process::id());
    let stack = LocalStack::start(&config).await.unwrap();
    let base = stack.usage_api_url();
    let http: Http = Client::builder(TokioExecutor::new()).build_http();
    let mut secrets = Secrets::default();
    secrets.add("the Stripe secret key", LOCAL_STRIPE_KEY);

    // One admin key in the table, as `cargo xtask admin-key` writes it; the rest over HTTP.
    let admin = generate_secret().unwrap();
    secrets.add("the admin key", &admin);
    stack
        .store
        .create_api_key(&ApiKeyRecord {
            hash: ApiKeyHash::of(&admin),
            role: ApiKeyRole::Admin,
            tenant: None,
            label: "no secrets in logs".into(),
            created_at: Utc::now(),
            revoked_at: None,
        })
        .await
        .unwrap();
    let as_admin = format!("Bearer {admin}");
    let admin_auth = [("authorization", as_admin.as_str())];
    let plans: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(workspace.join("events/samples/plans.json")).unwrap(),
    )
    .unwrap();
    for plan in &plans {
        let (status, reply) = send(
            &http,
            &base,
            "POST",
            "/v1/admin/plans",
            &admin_auth,
            Some(plan),
        )
        .await;
        assert_eq!(status, 201, "{reply}");
    }
    let mut keys = BTreeMap::new();
    for (tenant, customer) in [("acme", "cus_acme"), ("globex", "cus_globex")] {
        let body = json!({"tenant": tenant, "displayName": tenant, "plan": "starter",
                          "stripeCustomerId": customer});
        let (status, reply) = send(
            &http,
            &base,
            "POST",
            "/v1/admin/tenants",
            &admin_auth,
            Some(&body),
        )
        .await;
        assert_eq!(status, 201, "{reply}");
        for label in ["main", "spare"] {
            let (status, reply) = send(
                &http,
                &base,
                "POST",
                &format!("/v1/admin/tenants/{tenant}/keys"),
                &admin_auth,
                Some(&json!({"label": label})),
            )
            .await;
            assert_eq!(status, 201, "{reply}");
            let key = reply["key"].as_str().unwrap().to_owned();
            secrets.add(format!("{tenant}'s {label} key"), &key);
            keys.insert((tenant, label), key);
        }
    }
    let acme = keys[&("acme", "main")].clone();
    let revoked = keys[&("acme", "spare")].clone();
    let digest = ApiKeyHash::of(&revoked).as_hex().to_owned();
    let (status, _) = send(
        &http,
        &base,
        "DELETE",
        &format!("/v1/admin/keys/{digest}"),
        &admin_auth,
        None,
    )
    .await;
    assert_eq!(status, 200);

    // Keys where they belong, and where they do not.
    let bearer = |key: &str| format!("Bearer {key}");
    let basic = format!("Basic {acme}");
    let oversized = format!("{acme}{}", "x".repeat(300));
    let (acme_bearer, revoked_bearer, oversized_bearer) =
        (bearer(&acme), bearer(&revoked), bearer(&oversized));
    let unknown = generate_secret().unwrap();
    secrets.add("an unknown key", &unknown);
    let unknown_bearer = bearer(&unknown);
    for (path, headers, want) in [
        (
            "/v1/usage",
            vec![("authorization", acme_bearer.as_str())],
            200,
        ),
        ("/v1/usage", vec![("x-api-key", acme.as_str())], 200),
        (
            "/v1/usage",
            vec![("authorization", unknown_bearer.as_str())],
            401,
        ),
        (
            "/v1/usage",
            vec![("authorization", revoked_bearer.as_str())],
            401,
        ),
        (
            "/v1/usage",
            vec![("authorization", oversized_bearer.as_str())],
            401,
        ),
        ("/v1/usage", vec![("authorization", basic.as_str())], 401),
        ("/v1/usage", vec![("authorization", acme.as_str())], 401),
        ("/v1/usage", vec![("x-api-token", acme.as_str())], 401),
        (
            "/v1/admin/tenants",
            vec![("authorization", acme_bearer.as_str())],
            403,
        ),
        (
            &format!("/v1/usage?api_key={acme}") as &str,
            vec![("authorization", acme_bearer.as_str())],
            400,
        ),
        (&format!("/v1/usage?api_key={acme}"), vec![], 401),
        (
            &format!("/v1/usage?tenant={acme}"),
            vec![("authorization", acme_bearer.as_str())],
            404,
        ),
    ] {
        let (status, reply) = send(&http, &base, "GET", path, &headers, None).await;
        assert_eq!(status, want, "{path}: {reply}");
    }

    // Events: some an hour and a half ago (a closed hour for billing-sync), some now, one
    // malformed; then ingest applies them.
    let now = Utc::now();
    let events: Vec<Value> = (0..40)
        .map(|i| {
            let at = if i % 2 == 0 {
                now - TimeDelta::minutes(90)
            } else {
                now
            };
            json!({"specversion": "1.0", "id": format!("e-{i}"), "source": "/no-secrets",
                   "type": "api.usage", "subject": "acme", "time": at.to_rfc3339(),
                   "data": {"requests": 25_000, "route": "/v1/items"}})
        })
        .chain([json!({"specversion": "1.0", "id": "bad", "subject": "acme"})])
        .collect();
    let (status, reply) = send(
        &http,
        &base,
        "POST",
        "/v1/events",
        &[("x-api-key", acme.as_str())],
        Some(&Value::Array(events)),
    )
    .await;
    assert_eq!(
        (status, reply["accepted"].as_u64()),
        (202, Some(40)),
        "{reply}"
    );
    let started = Instant::now();
    loop {
        let (_, usage) = send(
            &http,
            &base,
            "GET",
            "/v1/usage",
            &[("x-api-key", acme.as_str())],
            None,
        )
        .await;
        if usage.to_string().contains("1000000") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "ingest: {usage}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // The edge: the real filter takes its snapshot with the admin key and admits keys.
    let module = tollgate_wasm_host::testing::module("tollgate_edge_filter").unwrap();
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let upstream_task = tokio::spawn(async move {
        while let Ok((socket, _)) = upstream.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_request| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        Bytes::from_static(b"{}"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    let plugin = json!({
        "gatewayId": "no-secrets",
        "identity": {"source": "apiKey", "header": "x-api-key"},
        "snapshot": {"cluster": "usage_api", "path": "/v1/edge/snapshot", "intervalSeconds": 1, "apiKey": admin},
        "sqs": {"cluster": "sqs", "queueUrl": stack.queue_url},
        "flushIntervalSeconds": 1,
        "stale": {"policy": "failClosed", "maxAgeSeconds": 60},
        "meters": {"requests": "edge_requests"}
    });
    let gateway = Gateway::start(
        GatewayConfig::new(
            format!("http://{upstream_addr}"),
            module,
            serde_json::to_vec(&plugin).unwrap(),
        )
        .with_cluster(Cluster::new("usage_api", stack.usage_api_url()))
        .with_cluster(Cluster::new("sqs", stack.sqs_endpoint.clone()).signed(SigV4::local("sqs"))),
    )
    .unwrap();
    gateway.env().set_log_level(LogLevel::Trace);
    let edge = gateway.url();
    let started = Instant::now();
    // globex, with no usage yet, is admitted once the snapshot is in; acme's month is
    // past its quota, so it is answered 429.
    let globex = keys[&("globex", "main")].clone();
    loop {
        let (status, reply) = send(
            &http,
            &edge,
            "GET",
            "/v1/items",
            &[("x-api-key", globex.as_str())],
            None,
        )
        .await;
        if status == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the edge never admitted globex: {status} {reply}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for headers in [
        vec![("x-api-key", acme.as_str())],
        vec![("x-api-key", unknown.as_str())],
        vec![("x-api-key", revoked.as_str())],
        vec![("x-api-key", oversized.as_str())],
        vec![("authorization", acme_bearer.as_str())],
        vec![],
    ] {
        let (status, _) = send(&http, &edge, "GET", "/v1/items", &headers, None).await;
        assert_ne!(status, 200, "{}", headers.len());
    }
    // A second gateway whose snapshot key is unknown and whose queue does not answer:
    // the filter logs its failures, with the key it was configured with at hand.
    let mut broken = plugin.clone();
    broken["gatewayId"] = json!("no-secrets-broken");
    broken["snapshot"]["apiKey"] = json!(unknown);
    let broken = Gateway::start(
        GatewayConfig::new(
            format!("http://{upstream_addr}"),
            tollgate_wasm_host::testing::module("tollgate_edge_filter").unwrap(),
            serde_json::to_vec(&broken).unwrap(),
        )
        .with_cluster(Cluster::new("usage_api", stack.usage_api_url()))
        .with_cluster(Cluster::new("sqs", "http://127.0.0.1:9")),
    )
    .unwrap();
    broken.env().set_log_level(LogLevel::Trace);
    for _ in 0..3 {
        let (status, _) = send(
            &http,
            &broken.url(),
            "GET",
            "/v1/items",
            &[("x-api-key", globex.as_str())],
            None,
        )
        .await;
        assert_ne!(status, 200);
    }
    tokio::time::sleep(Duration::from_secs(3)).await; // snapshot attempts and a flush

    // Budgets and signed webhooks: acme's secret is the admin's own and its receiver
    // verifies it; globex's is generated, and its receiver expects another one, so every
    // delivery to it fails verification (401) and is logged as a failure.
    let acme_secret = WebhookSecret::from_random_bytes(rand_bytes());
    secrets.add("acme's webhook secret", acme_secret.expose());
    let receiver = WebhookReceiver::start(acme_secret.clone()).await.unwrap();
    let body = json!({"url": receiver.url("/hooks/acme"), "secret": acme_secret.expose()});
    let (status, reply) = send(
        &http,
        &base,
        "PUT",
        "/v1/admin/tenants/acme/webhook",
        &admin_auth,
        Some(&body),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let body = json!({"url": receiver.url("/hooks/globex")});
    let (status, reply) = send(
        &http,
        &base,
        "PUT",
        "/v1/admin/tenants/globex/webhook",
        &admin_auth,
        Some(&body),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    secrets.add("globex's webhook secret", reply["secret"].as_str().unwrap());
    for (tenant, key) in [("acme", &acme), ("globex", &globex)] {
        let budget = json!({"monthlyAmount": "1", "currency": "USD", "hardLimit": true});
        let (status, reply) = send(
            &http,
            &base,
            "PUT",
            "/v1/budget",
            &[("x-api-key", key.as_str())],
            Some(&budget),
        )
        .await;
        assert_eq!(status, 200, "{tenant}: {reply}");
    }
    let report = stack.run_budget(Utc::now()).await.unwrap();
    assert!(
        report["alertsRaised"].as_u64().unwrap_or(0) >= 2,
        "{report}"
    );
    assert!(
        !receiver.received().is_empty(),
        "no webhook arrived: {report}"
    );

    // Billing-sync: Stripe fails the first calls (server errors, rate limits), then takes
    // the closed hour's usage.
    stack.stripe.fail_next(2, Fault::ServerError);
    stack.stripe.fail_next(2, Fault::RateLimited);
    let _ = stack.run_billing_sync(Utc::now()).await;
    stack.stripe.clear_faults();
    let report = stack.run_billing_sync(Utc::now()).await.unwrap();
    assert!(
        !stack.stripe.accepted().is_empty(),
        "Stripe accepted nothing: {report}"
    );
    assert!(stack.stripe.requests().len() > stack.stripe.accepted().len());

    // The filter's log, as the gateway kept it, for the parent to search.
    for record in gateway.env().logs().into_iter().chain(broken.env().logs()) {
        eprintln!(
            "[edge-filter] {:?} {} {}",
            record.level, record.vm, record.message
        );
    }
    broken.shutdown();
    gateway.shutdown();
    upstream_task.abort();
    secrets.write();
    stack.stop().await;
}

/// 32 random bytes for a webhook secret.
fn rand_bytes() -> [u8; 32] {
    let key = generate_secret().unwrap();
    let mut bytes = [0u8; 32];
    for (byte, pair) in bytes.iter_mut().zip(key.as_bytes()[3..].chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap();
    }
    bytes
}
