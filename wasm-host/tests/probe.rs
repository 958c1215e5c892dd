#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The host against the real `tollgate-test-filter` (`probe` and `noop` configurations),
//! built by `cargo xtask test` (or `cargo build --release --target wasm32-wasip1 -p
//! tollgate-test-filter`). The module is compiled once per test binary.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tollgate_wasm_host::{
    FilterAction, HostEnv, HostError, HttpCallResult, LogLevel, ManualClock, PluginConfig,
    SystemClock, Vm, WasmModule, testing,
};

const VM_ID: &str = "probe_vm";

fn module() -> WasmModule {
    testing::module("tollgate_test_filter").unwrap_or_else(|err| panic!("{err}"))
}

fn config(root_id: &str, plugin_configuration: &str) -> PluginConfig {
    PluginConfig {
        vm_id: VM_ID.to_owned(),
        root_id: root_id.to_owned(),
        plugin_name: format!("{root_id}_plugin"),
        vm_configuration: Vec::new(),
        plugin_configuration: plugin_configuration.as_bytes().to_vec(),
    }
}

fn start() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn manual_env() -> (HostEnv, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(start()));
    (HostEnv::new(clock.clone()), clock)
}

fn probe(env: &HostEnv) -> Vm {
    Vm::start(&module(), env, config("probe", "probe")).unwrap()
}

fn request(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut headers = vec![
        (":method", "GET"),
        (":path", "/v1/things"),
        (":authority", "api.example.com"),
        (":scheme", "https"),
    ];
    headers.extend_from_slice(extra);
    headers
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

fn response(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut headers = vec![(":status", "200"), ("server", "upstream")];
    headers.extend_from_slice(extra);
    headers
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

#[test]
fn a_missing_wasm_names_the_build_command() {
    let err = testing::built_wasm("tollgate_no_such_filter").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(
            "build it with: cargo build --release --target wasm32-wasip1 -p tollgate-no-such-filter"
        ),
        "{text}"
    );
}

#[test]
fn the_filter_needs_only_the_wasi_calls_the_host_implements() {
    let module = module();
    assert_eq!(module.abi_version(), "proxy_abi_version_0_2_1");
    let wasi: Vec<String> = module
        .imports()
        .into_iter()
        .filter(|(from, _)| from != "env")
        .map(|(from, name)| format!("{from}.{name}"))
        .collect();
    for import in &wasi {
        assert!(import.starts_with("wasi_snapshot_preview1."), "{import}");
    }
    assert!(module.exports().contains(&"_initialize".to_owned()));
    // The SDK imports the gRPC calls this host does not implement: they are linked to
    // stubs answering Unimplemented, so the module still instantiates.
    assert!(
        module
            .imports()
            .contains(&("env".to_owned(), "proxy_grpc_call".to_owned()))
    );
}

#[test]
fn an_unknown_plugin_configuration_is_rejected_with_the_vm_logs() {
    let (env, _) = manual_env();
    let err = Vm::start(&module(), &env, config("probe", "bogus")).unwrap_err();
    let HostError::ConfigureRejected { logs } = &err else {
        panic!("expected ConfigureRejected, got {err:?}");
    };
    assert!(
        logs.iter().any(|record| record.level == LogLevel::Error
            && record
                .message
                .contains("unknown plugin configuration \"bogus\"")
            && record.vm == format!("{VM_ID}/probe#1")),
        "{logs:?}"
    );
    assert!(
        err.to_string().contains("unknown plugin configuration"),
        "{err}"
    );
}

#[test]
fn a_vm_configuration_refused_by_on_vm_start_fails_the_start() {
    let (env, _) = manual_env();
    let mut config = config("probe", "probe");
    config.vm_configuration = b"reject".to_vec();
    let err = Vm::start(&module(), &env, config).unwrap_err();
    let HostError::VmStartRejected { logs } = &err else {
        panic!("expected VmStartRejected, got {err:?}");
    };
    assert!(
        logs.iter()
            .any(|record| record.message.contains("says reject")),
        "{logs:?}"
    );
}

#[test]
fn request_and_response_headers_are_read_and_modified() {
    let (env, _) = manual_env();
    let mut vm = probe(&env);
    let mut stream = vm.new_stream().unwrap();
    let action = stream
        .on_request_headers(
            request(&[
                ("X-Probe-Replaced", "old"),
                ("x-probe-remove", "bye"),
                ("x-probe-replaced", "dup"),
            ]),
            true,
        )
        .unwrap();
    assert_eq!(action, FilterAction::Continue);
    let headers = stream.request_headers();
    assert_eq!(header(headers, "x-probe-added"), Some("1"));
    assert_eq!(header(headers, "x-probe-replaced"), Some("new"));
    assert_eq!(
        headers
            .iter()
            .filter(|(key, _)| key == "x-probe-replaced")
            .count(),
        1,
        "replace keeps one value: {headers:?}"
    );
    assert_eq!(header(headers, "x-probe-remove"), None);
    assert_eq!(header(headers, ":path"), Some("/v1/things"));
    assert_eq!(header(headers, "x-probe-count"), Some("1"));
    let nanos = start()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        .to_string();
    assert_eq!(header(headers, "x-probe-time"), Some(nanos.as_str()));
    assert!(stream.local_reply().is_none());

    let action = stream
        .on_response_headers(response(&[("x-probe-response-remove", "x")]), false)
        .unwrap();
    assert_eq!(action, FilterAction::Continue);
    let headers = stream.response_headers();
    assert_eq!(header(headers, "x-probe-response"), Some("1"));
    assert_eq!(header(headers, "server"), Some("probe"));
    assert_eq!(header(headers, "x-probe-response-remove"), None);
    assert_eq!(header(headers, ":status"), Some("200"));
    stream.finish().unwrap();
    assert_eq!(env.metric("probe_last_status"), Some(200));
    assert_eq!(env.metric("probe_done"), Some(1));
    assert_eq!(env.metric("probe_logged"), Some(1));
}

#[test]
fn a_paused_body_is_buffered_and_rewritten_at_the_end() {
    let (env, _) = manual_env();
    let mut vm = probe(&env);
    let mut stream = vm.new_stream().unwrap();
    stream.on_request_headers(request(&[]), false).unwrap();
    assert_eq!(
        stream.on_request_body(b"hello ", false).unwrap(),
        FilterAction::Pause
    );
    assert_eq!(
        stream.on_request_body(b"world", true).unwrap(),
        FilterAction::Continue
    );
    assert_eq!(stream.request_body(), b"HELLO WORLD");
    stream.finish().unwrap();
    // 6 bytes seen first, then the whole buffered 11.
    assert_eq!(env.metric("probe_request_body_bytes"), Some(17));
}

#[test]
fn a_local_reply_is_recorded_and_the_request_paused() {
    let (env, _) = manual_env();
    let mut vm = probe(&env);
    let mut stream = vm.new_stream().unwrap();
    let action = stream
        .on_request_headers(request(&[("x-probe-reply", "429")]), true)
        .unwrap();
    assert_eq!(action, FilterAction::Pause);
    let reply = stream.local_reply().unwrap();
    assert_eq!(reply.status, 429);
    assert_eq!(reply.body, b"probe local reply");
    assert_eq!(header(&reply.headers, "x-probe-local"), Some("1"));
    assert_eq!(reply.grpc_status, None);
    stream.finish().unwrap();
}

#[test]
fn shared_data_cas_counts_exactly_across_four_vms_on_four_threads() {
    const REQUESTS: usize = 250;
    let env = HostEnv::new(Arc::new(SystemClock));
    let module = module();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let mut vm = Vm::start(&module, &env, config("probe", "probe")).unwrap();
            thread::spawn(move || {
                let mut retries = 0u64;
                for _ in 0..REQUESTS {
                    let mut stream = vm.new_stream().unwrap();
                    stream.on_request_headers(request(&[]), true).unwrap();
                    retries += header(stream.request_headers(), "x-probe-cas-retries")
                        .unwrap()
                        .parse::<u64>()
                        .unwrap();
                    stream.finish().unwrap();
                }
                retries
            })
        })
        .collect();
    let retries: u64 = workers
        .into_iter()
        .map(|worker| worker.join().unwrap())
        .sum();
    let (value, cas) = env.shared_data("probe_counter").unwrap();
    assert_eq!(
        String::from_utf8(value).unwrap(),
        (4 * REQUESTS).to_string()
    );
    assert_ne!(cas, 0);
    assert_eq!(env.metric("probe_requests"), Some(4 * REQUESTS as i64));
    // Not asserted (scheduling decides), but shown: how often a CAS lost a race.
    eprintln!("CAS retries across the 4 VMs: {retries}");
}

#[test]
fn ticks_fire_once_per_due_poll_without_catching_up() {
    let (env, clock) = manual_env();
    let mut vm = probe(&env);
    assert_eq!(vm.next_tick_at(), Some(start() + Duration::from_secs(1)));
    vm.poll().unwrap();
    assert_eq!(env.metric("probe_ticks"), Some(0), "not due yet");
    clock.advance(Duration::from_secs(1));
    vm.poll().unwrap();
    vm.poll().unwrap();
    assert_eq!(env.metric("probe_ticks"), Some(1));
    clock.advance(Duration::from_secs(10));
    vm.poll().unwrap();
    vm.poll().unwrap();
    assert_eq!(
        env.metric("probe_ticks"),
        Some(2),
        "ten missed periods give one tick"
    );
    assert_eq!(vm.next_tick_at(), Some(start() + Duration::from_secs(12)));
    // No singleton registered the queue: the worker logged that and carried on.
    assert!(
        env.logs()
            .iter()
            .any(|r| r.level == LogLevel::Warn && r.message.contains("no queue probe_queue"))
    );
}

#[test]
fn ticks_enqueue_from_workers_to_the_singleton_which_dequeues_on_queue_ready() {
    let (env, clock) = manual_env();
    let module = module();
    let mut singleton = Vm::start(&module, &env, config("probe_singleton", "probe")).unwrap();
    let mut workers: Vec<Vm> = (0..3).map(|_| probe(&env)).collect();
    clock.advance(Duration::from_secs(1));
    for worker in &mut workers {
        worker.poll().unwrap();
    }
    // The owner is woken: wait returns at once.
    let waited = std::time::Instant::now();
    singleton.wait(Duration::from_secs(5));
    assert!(waited.elapsed() < Duration::from_secs(1));
    singleton.poll().unwrap();
    assert_eq!(env.metric("probe_ticks"), Some(3));
    assert_eq!(env.metric("probe_queue_items"), Some(3));
    // One on_queue_ready per enqueue, as Envoy posts them; the first drained all three.
    assert_eq!(env.metric("probe_queue_ready_calls"), Some(3));
    let dequeued = env
        .logs()
        .iter()
        .filter(|r| r.vm == format!("{VM_ID}/probe_singleton#1") && r.message == "dequeued tick 1")
        .count();
    assert_eq!(dequeued, 3);
    singleton.poll().unwrap();
    assert_eq!(
        env.metric("probe_queue_ready_calls"),
        Some(3),
        "nothing new"
    );
}

#[test]
fn an_http_call_to_an_unknown_cluster_is_a_bad_argument() {
    let (env, _) = manual_env();
    let mut vm = probe(&env);
    let mut stream = vm.new_stream().unwrap();
    let action = stream
        .on_request_headers(request(&[("x-probe-call", "no_such_cluster")]), true)
        .unwrap();
    assert_eq!(action, FilterAction::Continue);
    assert_eq!(
        header(stream.request_headers(), "x-probe-call-error"),
        Some("BadArgument")
    );
    stream.finish().unwrap();
    assert!(vm.take_http_calls().is_empty());
}

#[test]
fn an_http_call_to_a_known_cluster_is_answered_on_the_stream_that_made_it() {
    let (env, _) = manual_env();
    let env = env.with_clusters(["upstream_cluster"]);
    let mut vm = probe(&env);
    let mut stream = vm.new_stream().unwrap();
    let action = stream
        .on_request_headers(request(&[("x-probe-call", "upstream_cluster")]), true)
        .unwrap();
    assert_eq!(action, FilterAction::Pause);
    let calls = stream.vm().take_http_calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.cluster, "upstream_cluster");
    assert_eq!(header(&call.headers, ":path"), Some("/probe"));
    assert_eq!(call.body, b"probe call body");
    assert_eq!(call.timeout, Duration::from_secs(5));
    assert!(!stream.is_request_resumed());

    let answer = HttpCallResult::Response {
        headers: vec![(":status".into(), "204".into())],
        body: Vec::new(),
        trailers: Vec::new(),
    };
    stream
        .vm()
        .deliver_http_response(call.token, answer)
        .unwrap();
    assert!(stream.is_request_resumed());
    assert_eq!(
        header(stream.request_headers(), "x-probe-call-status"),
        Some("204")
    );
    stream.on_response_headers(response(&[]), true).unwrap();
    assert_eq!(
        header(stream.response_headers(), "x-probe-call-status"),
        Some("204")
    );
    stream.finish().unwrap();

    // The token is spent.
    let err = vm
        .deliver_http_response(call.token, HttpCallResult::Failed)
        .unwrap_err();
    assert!(matches!(err, HostError::UnknownCallToken { .. }), "{err:?}");
}

#[test]
fn a_failed_http_call_shows_no_headers() {
    let env = HostEnv::new(Arc::new(SystemClock)).with_clusters(["upstream_cluster"]);
    let mut vm = probe(&env);
    let mut stream = vm.new_stream().unwrap();
    stream
        .on_request_headers(request(&[("x-probe-call", "upstream_cluster")]), true)
        .unwrap();
    let token = stream.vm().take_http_calls()[0].token;
    stream
        .vm()
        .deliver_http_response(token, HttpCallResult::Failed)
        .unwrap();
    assert_eq!(
        header(stream.request_headers(), "x-probe-call-status"),
        Some("failed")
    );
    stream.finish().unwrap();
}

#[test]
fn metrics_are_shared_by_name_across_vms() {
    let (env, _) = manual_env();
    let mut vms = [probe(&env), probe(&env)];
    for index in [0, 1, 0] {
        let mut stream = vms[index].new_stream().unwrap();
        stream.on_request_headers(request(&[]), true).unwrap();
        stream.finish().unwrap();
    }
    assert_eq!(env.metric("probe_requests"), Some(3));
    assert_eq!(env.metrics().get("probe_done"), Some(&3));
    assert_eq!(env.metric("no_such_metric"), None);
}

#[test]
fn a_trap_fails_that_vm_only() {
    let (env, _) = manual_env();
    let mut doomed = probe(&env);
    let mut healthy = probe(&env);
    let mut stream = doomed.new_stream().unwrap();
    let err = stream
        .on_request_headers(request(&[("x-probe-trap", "1")]), true)
        .unwrap_err();
    let HostError::Trap { callback, message } = &err else {
        panic!("expected a trap, got {err:?}");
    };
    assert_eq!(callback, "proxy_on_request_headers");
    assert!(message.contains("probe trap requested"), "{message}");
    assert!(matches!(stream.finish(), Err(HostError::Failed)));
    assert!(doomed.is_failed());
    assert!(matches!(doomed.new_stream(), Err(HostError::Failed)));
    assert!(matches!(doomed.poll(), Err(HostError::Failed)));
    assert!(
        env.logs().iter().any(|r| r.level == LogLevel::Critical
            && r.message.contains("trap in proxy_on_request_headers"))
    );

    assert!(!healthy.is_failed());
    let mut stream = healthy.new_stream().unwrap();
    assert_eq!(
        stream.on_request_headers(request(&[]), true).unwrap(),
        FilterAction::Continue
    );
    stream.finish().unwrap();
}

#[test]
fn linear_memory_is_reported_in_whole_pages_and_does_not_grow_on_repeated_requests() {
    const PAGE: usize = 64 * 1024;
    let (env, _) = manual_env();
    let mut vm = probe(&env);
    let mut run = |n: usize| {
        for _ in 0..n {
            let mut stream = vm.new_stream().unwrap();
            stream.on_request_headers(request(&[]), true).unwrap();
            stream.finish().unwrap();
        }
        vm.memory_bytes()
    };
    let warm = run(100);
    assert!(warm >= PAGE && warm % PAGE == 0, "{warm}");
    assert_eq!(run(1_000), warm, "streams that ended left nothing behind");
}

#[test]
fn properties_come_from_the_plugin_config_and_the_stream() {
    let (env, _) = manual_env();
    let mut vm = probe(&env);
    let mut stream = vm.new_stream().unwrap();
    let claim_path = [
        "metadata",
        "filter_metadata",
        "envoy.filters.http.jwt_authn",
        "tenant",
    ];
    stream.set_property(&claim_path, b"acme".to_vec());
    stream
        .on_request_headers(
            request(&[(
                "x-probe-property",
                "metadata.filter_metadata.envoy.filters.http.jwt_authn.tenant",
            )]),
            true,
        )
        .unwrap();
    stream.on_response_headers(response(&[]), true).unwrap();
    let headers = stream.response_headers();
    // The dotted header splits "envoy.filters.http.jwt_authn" too: that path is missing.
    assert_eq!(header(headers, "x-probe-property"), Some("<missing>"));
    assert_eq!(header(headers, "x-probe-plugin-name"), Some("probe_plugin"));
    assert_eq!(header(headers, "x-probe-root-id"), Some("probe"));
    assert_eq!(header(headers, "x-probe-vm-id"), Some(VM_ID));
    assert_eq!(header(headers, "x-probe-set-property"), Some("yes"));
    assert_eq!(stream.property(&["probe", "seen"]), Some(&b"yes"[..]));
    stream.finish().unwrap();

    let mut stream = vm.new_stream().unwrap();
    stream.set_property(&["tenant"], b"acme".to_vec());
    stream
        .on_request_headers(request(&[("x-probe-property", "tenant")]), true)
        .unwrap();
    stream.on_response_headers(response(&[]), true).unwrap();
    assert_eq!(
        header(stream.response_headers(), "x-probe-property"),
        Some("acme")
    );
    stream.finish().unwrap();
}

#[test]
fn the_noop_filter_continues_and_touches_nothing() {
    let (env, _) = manual_env();
    let mut vm = Vm::start(&module(), &env, config("noop", "noop")).unwrap();
    let mut stream = vm.new_stream().unwrap();
    assert_eq!(
        stream
            .on_request_headers(request(&[("x-probe-trap", "1")]), true)
            .unwrap(),
        FilterAction::Continue
    );
    assert_eq!(
        stream.request_headers(),
        request(&[("x-probe-trap", "1")]).as_slice()
    );
    stream.on_response_headers(response(&[]), true).unwrap();
    stream.finish().unwrap();
    assert!(env.metrics().is_empty());
    assert_eq!(vm.next_tick_at(), None);
}
