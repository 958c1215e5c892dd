#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Several streams in flight on one VM: `Stream::detach` and `Vm::stream`, against the
//! real `tollgate-test-filter` (`probe` configuration).

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tollgate_wasm_host::{FilterAction, HostEnv, ManualClock, PluginConfig, Vm, testing};

fn probe(env: &HostEnv) -> Vm {
    let module = testing::module("tollgate_test_filter").unwrap_or_else(|err| panic!("{err}"));
    let config = PluginConfig {
        vm_id: "probe_vm".to_owned(),
        root_id: "probe".to_owned(),
        plugin_name: "probe_plugin".to_owned(),
        vm_configuration: Vec::new(),
        plugin_configuration: b"probe".to_vec(),
    };
    Vm::start(&module, env, config).unwrap()
}

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

fn request() -> Vec<(String, String)> {
    headers(&[
        (":method", "GET"),
        (":path", "/v1/things"),
        (":authority", "api.example.com"),
        (":scheme", "https"),
    ])
}

#[test]
fn detached_streams_stay_open_and_finish_when_reattached_in_any_order() {
    let clock = Arc::new(ManualClock::new(
        UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ));
    let env = HostEnv::new(clock);
    let mut vm = probe(&env);

    let mut first = vm.new_stream().unwrap();
    assert_eq!(
        first.on_request_headers(request(), true).unwrap(),
        FilterAction::Continue
    );
    let first = first.detach();
    let mut second = vm.new_stream().unwrap();
    second.on_request_headers(request(), true).unwrap();
    let second = second.detach();
    assert_ne!(first, second);
    // Detaching finished nothing.
    assert_eq!(env.metric("probe_done").unwrap_or(0), 0);

    // The second stream finishes first; the first keeps its request state meanwhile.
    let mut stream = vm.stream(second).unwrap();
    stream
        .on_response_headers(headers(&[(":status", "201")]), true)
        .unwrap();
    stream.finish().unwrap();
    assert_eq!(env.metric("probe_done"), Some(1));
    assert!(vm.stream(second).is_none(), "a finished stream is gone");

    let mut stream = vm.stream(first).unwrap();
    assert!(
        stream
            .request_headers()
            .iter()
            .any(|(name, value)| name == ":path" && value == "/v1/things")
    );
    stream
        .on_response_headers(headers(&[(":status", "200")]), true)
        .unwrap();
    assert!(
        stream
            .response_headers()
            .iter()
            .any(|(name, value)| name == "x-probe-response" && value == "1")
    );
    // Dropping a re-attached (not detached) stream finishes it, as for any stream.
    drop(stream);
    assert_eq!(env.metric("probe_done"), Some(2));
    assert_eq!(env.metric("probe_last_status"), Some(200));
    assert!(vm.stream(first).is_none());
    assert!(vm.stream(12345).is_none());
}
