#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Fuzzing the real `tollgate_edge_filter.wasm` in the proxy-wasm host: random request
//! and response headers, random answers to the singleton's snapshot and SQS calls, and
//! mutated plugin configurations. Nothing may trap: every request ends forwarded or with
//! one of the filter's own replies, and every configuration starts or is rejected.
//!
//! The test suite runs a few thousand inputs; `cargo xtask soak filter-fuzz` runs
//! 1,000,000 requests (and a fiftieth of that in configurations, each a VM start).

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tollgate_core::tenant::ApiKeyHash;
use tollgate_wasm_host::testing::module;
use tollgate_wasm_host::{
    Clock, HostEnv, HostError, HttpCallResult, ManualClock, PluginConfig, Vm, WasmModule,
};

const DEFAULT_INPUTS: u64 = 4_000;

/// `$TOLLGATE_FUZZ_INPUTS` (`cargo xtask soak` sets 1,000,000), else [`DEFAULT_INPUTS`].
fn inputs() -> u64 {
    tollgate_devstack::report::fuzz_inputs(DEFAULT_INPUTS)
}

/// xorshift64*: deterministic, so a failure reproduces from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a>(&mut self, options: &[&'a str]) -> &'a str {
        options[self.below(options.len() as u64) as usize]
    }
    fn text(&mut self, max_len: u64) -> String {
        let len = self.below(max_len + 1);
        (0..len)
            .map(|_| match self.below(10) {
                0 => char::from_u32(self.below(0x11_0000) as u32).unwrap_or('\u{fffd}'),
                1 => char::from(self.below(32) as u8),
                2 => self
                    .pick(&["é", "日", "🙂", "\u{202e}", "\\", "\"", " ", "\t"])
                    .chars()
                    .next()
                    .unwrap(),
                _ => char::from(b' ' + self.below(95) as u8),
            })
            .collect()
    }
}

const KEYS: [&str; 3] = ["tg_acme", "tg_slow", "tg_broke"];

fn config() -> String {
    r#"{"gatewayId":"gw-fuzz","identity":{"source":"apiKey","header":"x-api-key"},
      "snapshot":{"cluster":"usage_api","path":"/v1/edge/snapshot","intervalSeconds":1},
      "sqs":{"cluster":"sqs","queueUrl":"http://127.0.0.1:9/0/q"},"flushIntervalSeconds":1,
      "maxBufferRows":500,"stale":{"policy":"failClosed","maxAgeSeconds":30},
      "routeGroups":[{"prefix":"/v1/items","group":"items"},{"prefix":"/v1","group":"v1"}]}"#
        .to_owned()
}

fn snapshot(at_ms: u64) -> Vec<u8> {
    let at = chrono::DateTime::from_timestamp_millis(at_ms as i64).unwrap();
    let day = at.format("%Y-%m-%dT00:00:00Z");
    let mut keys: Vec<(String, &str)> = [
        ("tg_acme", "acme"),
        ("tg_slow", "slow"),
        ("tg_broke", "broke"),
    ]
    .iter()
    .map(|(k, t)| (ApiKeyHash::of(k).as_hex().to_owned(), *t))
    .collect();
    keys.sort();
    let keys: Vec<String> = keys
        .iter()
        .map(|(sha, t)| format!(r#"{{"sha256":"{sha}","tenant":"{t}"}}"#))
        .collect();
    format!(
        r#"{{"schema":"tollgate.edge-snapshot/1","generatedAt":"{}","tenants":[
        {{"tenant":"acme","plan":"p","rateLimits":{{"perSecond":50,"perMinute":null,"perHour":null,"perDay":null}},
          "quotas":[{{"meter":"requests","period":"day","limit":"1000000","used":"10","windowStart":"{day}"}},
                    {{"meter":"response_bytes","period":"month","limit":"5000000","used":"0","windowStart":"{}"}}],"blocked":null}},
        {{"tenant":"slow","plan":"p","rateLimits":{{"perSecond":1,"perMinute":5,"perHour":null,"perDay":null}},"quotas":[],"blocked":null}},
        {{"tenant":"broke","plan":"p","rateLimits":{{"perSecond":null,"perMinute":null,"perHour":null,"perDay":null}},"quotas":[],"blocked":"budget_hard_limit"}}],
        "apiKeys":[{}]}}"#,
        at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        at.format("%Y-%m-01T00:00:00Z"),
        keys.join(",")
    )
    .into_bytes()
}

fn plugin(root_id: &str, configuration: &[u8]) -> PluginConfig {
    PluginConfig {
        vm_id: "tollgate".to_owned(),
        root_id: root_id.to_owned(),
        plugin_name: "tollgate".to_owned(),
        vm_configuration: Vec::new(),
        plugin_configuration: configuration.to_vec(),
    }
}

fn edge_module() -> WasmModule {
    module("tollgate_edge_filter").unwrap()
}

/// Answers the singleton's calls at random: the real snapshot, garbage, errors, failures.
fn answer_calls(vm: &mut Vm, rng: &mut Rng, now_ms: u64) {
    for call in vm.take_http_calls() {
        let result = match rng.below(6) {
            0 => HttpCallResult::Failed,
            1 => HttpCallResult::Response {
                headers: vec![(":status".into(), rng.pick(&["200", "500", "429", "abc", ""]).into())],
                body: rng.text(200).into_bytes(),
                trailers: Vec::new(),
            },
            2 => HttpCallResult::Response {
                headers: Vec::new(),
                body: Vec::new(),
                trailers: Vec::new(),
            },
            _ if call.cluster == "usage_api" => HttpCallResult::Response {
                headers: vec![(":status".into(), "200".into())],
                body: snapshot(now_ms),
                trailers: Vec::new(),
            },
            _ => HttpCallResult::Response {
                headers: vec![(":status".into(), "200".into())],
                body: br#"{"Successful":[{"Id":"m0","MessageId":"x","MD5OfMessageBody":"y"}],"Failed":[{"Id":"m1","SenderFault":false,"Code":"X"}]}"#.to_vec(),
                trailers: Vec::new(),
            },
        };
        vm.deliver_http_response(call.token, result).unwrap();
    }
}

#[test]
fn fuzzed_requests_and_call_answers_never_trap_the_filter() {
    let total = inputs();
    let start = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    let clock = Arc::new(ManualClock::new(start));
    let env = HostEnv::new(clock.clone() as Arc<dyn Clock>).with_clusters(["usage_api", "sqs"]);
    let module = edge_module();
    let config = config();
    let mut singleton =
        Vm::start(&module, &env, plugin("tollgate_flush", config.as_bytes())).unwrap();
    let mut workers: Vec<Vm> = (0..2)
        .map(|_| Vm::start(&module, &env, plugin("tollgate", config.as_bytes())).unwrap())
        .collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let body = vec![b'x'; 64 * 1024];
    let mut statuses = std::collections::BTreeMap::<u32, u64>::new();
    for i in 0..total {
        clock.advance(Duration::from_micros(rng.below(5_000)));
        if i % 64 == 0 {
            let now_ms = clock.now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
            singleton.poll().unwrap();
            answer_calls(&mut singleton, &mut rng, now_ms);
            for w in &mut workers {
                w.poll().unwrap();
            }
        }
        let mut headers = Vec::new();
        for (name, options) in [
            (":method", &["GET", "POST", "", "DELETE", "\u{0}"][..]),
            (
                ":path",
                &["/", "/v1/items/1", "/v1", "//", "/v1/items?x=1"][..],
            ),
            (":authority", &["api.example", "", "[::1]:80"][..]),
        ] {
            match rng.below(8) {
                0 => {}
                1 => headers.push((name.to_owned(), rng.text(300))),
                _ => headers.push((name.to_owned(), rng.pick(options).to_owned())),
            }
        }
        match rng.below(8) {
            0 => {}
            1 => headers.push(("x-api-key".to_owned(), rng.text(100))),
            2 => headers.push((
                "x-api-key".to_owned(),
                format!("Bearer {}", rng.pick(&KEYS)),
            )),
            3 => headers.push((
                "x-api-key".to_owned(),
                "x".repeat(rng.below(20_000) as usize),
            )),
            _ => headers.push(("x-api-key".to_owned(), rng.pick(&KEYS).to_owned())),
        }
        if rng.below(4) == 0 {
            headers.push(("x-api-key".to_owned(), rng.pick(&KEYS).to_owned()));
        }
        if rng.below(4) == 0 {
            // JWT-looking garbage, for a filter configured to read a claim.
            let token = format!("{}.{}.{}", rng.text(40), rng.text(200), rng.text(40));
            headers.push(("authorization".to_owned(), format!("Bearer {token}")));
        }
        for _ in 0..rng.below(4) {
            let name: String = (0..1 + rng.below(20))
                .map(|_| char::from(b'a' + rng.below(26) as u8))
                .collect();
            headers.push((name, rng.text(200)));
        }
        if rng.below(16) == 0 {
            // Odd names (upper case, spaces, controls, non-ASCII) and many headers.
            for _ in 0..rng.below(200) {
                headers.push((rng.text(24), rng.text(24)));
            }
        }
        let worker = &mut workers[(i % 2) as usize];
        let mut stream = worker.new_stream().unwrap();
        stream
            .on_request_headers(headers, rng.below(2) == 0)
            .unwrap_or_else(|e| panic!("input {i}: request headers trapped: {e}"));
        let status = match stream.local_reply() {
            Some(reply) => reply.status,
            None => {
                let status =
                    rng.pick(&["200", "404", "503", "abc", "", "99999999999", "-1", "1xx"]);
                stream
                    .on_response_headers(vec![(":status".to_owned(), status.to_owned())], false)
                    .unwrap_or_else(|e| panic!("input {i}: response headers trapped: {e}"));
                let chunks = rng.below(3);
                for c in 0..chunks {
                    let len = rng.below(body.len() as u64) as usize;
                    stream
                        .on_response_body(&body[..len], c + 1 == chunks)
                        .unwrap_or_else(|e| panic!("input {i}: response body trapped: {e}"));
                }
                0
            }
        };
        stream
            .finish()
            .unwrap_or_else(|e| panic!("input {i}: finish trapped: {e}"));
        assert!(
            matches!(status, 0 | 401 | 402 | 429 | 503),
            "input {i}: status {status}"
        );
        *statuses.entry(status).or_default() += 1;
    }
    assert!(!singleton.is_failed() && workers.iter().all(|w| !w.is_failed()));
    eprintln!("{total} fuzzed requests; outcomes (0 = forwarded): {statuses:?}");
    let forwarded = statuses.get(&0).copied().unwrap_or(0);
    // A trap fails the test above, so reaching here means none.
    tollgate_devstack::report::report(&serde_json::json!({
        "kind": "fuzz", "target": "filter-requests-in-host", "inputs": total,
        "accepted": forwarded, "rejected": total - forwarded, "panics": 0, "traps": 0,
    }));
    assert!(
        statuses.get(&0).copied().unwrap_or(0) > 0,
        "some requests were forwarded"
    );
}

#[test]
fn fuzzed_plugin_configurations_start_or_are_rejected_never_trap() {
    let total = (inputs() / 50).max(200);
    let clock = Arc::new(ManualClock::new(
        UNIX_EPOCH + Duration::from_secs(1_795_000_000),
    ));
    let env = HostEnv::new(clock as Arc<dyn Clock>).with_clusters(["usage_api", "sqs"]);
    let module = edge_module();
    let base = config().into_bytes();
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let (mut started, mut rejected) = (0u64, 0u64);
    for i in 0..total {
        let mut input = base.clone();
        for _ in 0..1 + rng.below(6) {
            let at = rng.below(input.len() as u64 + 1) as usize;
            match rng.below(5) {
                0 if at < input.len() => {
                    input.remove(at);
                }
                1 => input.insert(
                    at,
                    rng.pick(&["{", "}", "\"", ",", ":", "null", "-1", "1e999", "[]"])
                        .as_bytes()[0],
                ),
                2 => input.truncate(at),
                3 if at < input.len() => input[at] = rng.below(256) as u8,
                _ => {
                    let text = rng.text(16);
                    input.splice(at..at, text.bytes());
                }
            }
        }
        let root = if rng.below(2) == 0 {
            "tollgate"
        } else {
            "tollgate_flush"
        };
        match Vm::start(&module, &env, plugin(root, &input)) {
            Ok(_) => started += 1,
            Err(HostError::ConfigureRejected { .. }) => rejected += 1,
            Err(other) => panic!("configuration input {i} did not start cleanly: {other}"),
        }
    }
    eprintln!("{total} fuzzed configurations: {started} started, {rejected} rejected");
    tollgate_devstack::report::report(&serde_json::json!({
        "kind": "fuzz", "target": "filter-config-in-host", "inputs": total,
        "accepted": started, "rejected": rejected, "panics": 0, "traps": 0,
    }));
    assert_eq!(started + rejected, total);
}
