//! A proxy-wasm filter for `tollgate-wasm-host`'s tests and for the host benchmark.
//!
//! Built with `cargo build --release --target wasm32-wasip1 -p tollgate-test-filter`
//! (`cargo xtask test` does it before the tests). What it does is chosen by the plugin
//! configuration:
//!
//! - `noop`: every callback returns `Continue` and calls nothing: the baseline the
//!   benchmark compares the real filter against.
//! - `probe`: exercises the ABI so each feature can be asserted from the outside:
//!   - on every request: a shared-data counter `probe_counter` incremented with CAS
//!     retries, its value in request header `x-probe-count` and the retries in
//!     `x-probe-cas-retries`; request header `x-probe-added: 1` added,
//!     `x-probe-replaced` replaced with `new`, `x-probe-remove` removed;
//!     `x-probe-time` set to the host clock in nanoseconds since the epoch; counter
//!     metric `probe_requests` incremented; the stream property `probe.seen` set;
//!   - request header `x-probe-trap` → panic (a trap);
//!   - request header `x-probe-reply: <status>` → local reply with that status, body
//!     `probe local reply`, header `x-probe-local: 1`, and `Pause`;
//!   - request header `x-probe-call: <cluster>` → `dispatch_http_call` to that cluster.
//!     A refused call sets `x-probe-call-error: <status>`; an accepted one pauses the
//!     request, and when the response arrives the request gets
//!     `x-probe-call-status: <status>` (`failed` when the call failed), is resumed, and
//!     the same value is copied into the response headers;
//!   - request header `x-probe-property: a.b.c` → the property `a`,`b`,`c` read back in
//!     the response header `x-probe-property` (`<missing>` when not found);
//!   - response: `x-probe-response: 1` added, `server` replaced with `probe`,
//!     `x-probe-response-remove` removed, `x-probe-plugin-name`, `x-probe-root-id`,
//!     `x-probe-vm-id` and `x-probe-set-property` from properties; gauge
//!     `probe_last_status` set to the response status;
//!   - request body: counter `probe_request_body_bytes`; buffered (`Pause`) until the end
//!     of the stream, then upper-cased in place;
//!   - `on_done` / `on_log` increment counters `probe_done` / `probe_logged`;
//!   - a tick every second (set in `on_configure`) enqueues `tick <n>` to the queue
//!     `probe_queue` of the same vm_id and increments counter `probe_ticks`.
//!
//!   With root_id `probe_singleton` the root registers `probe_queue` instead, and each
//!   `on_queue_ready` dequeues everything, counting counter `probe_queue_ready_calls` and
//!   `probe_queue_items`, and logging each item at info level.
//!
//! Any other configuration is refused by `on_configure` with an error log; the VM
//! configuration `reject` makes `on_vm_start` refuse.

use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType, Status};

const SINGLETON_ROOT_ID: &str = "probe_singleton";
const QUEUE_NAME: &str = "probe_queue";
const COUNTER_KEY: &str = "probe_counter";
const TICK_PERIOD: Duration = Duration::from_secs(1);

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(ProbeRoot::default()) });
}}

fn log(level: LogLevel, message: &str) {
    // Nothing useful to do if logging itself fails.
    let _ = hostcalls::log(level, message);
}

fn header(map: MapType, name: &str) -> Option<String> {
    hostcalls::get_map_value(map, name).ok().flatten()
}

fn set_header(map: MapType, name: &str, value: &str) {
    if let Err(status) = hostcalls::set_map_value(map, name, Some(value)) {
        log(LogLevel::Error, &format!("replace {name}: {status:?}"));
    }
}

fn add_header(map: MapType, name: &str, value: &str) {
    if let Err(status) = hostcalls::add_map_value(map, name, value) {
        log(LogLevel::Error, &format!("add {name}: {status:?}"));
    }
}

fn remove_header(map: MapType, name: &str) {
    if let Err(status) = hostcalls::remove_map_value(map, name) {
        log(LogLevel::Error, &format!("remove {name}: {status:?}"));
    }
}

fn property(path: &[&str]) -> Option<String> {
    hostcalls::get_property(path.to_vec())
        .ok()
        .flatten()
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Mode {
    #[default]
    Noop,
    Probe,
    Singleton,
}

/// The metric ids a probe context uses (same ids in every VM of a host).
#[derive(Debug, Default, Clone, Copy)]
struct Metrics {
    requests: u32,
    last_status: u32,
    body_bytes: u32,
    done: u32,
    logged: u32,
    ticks: u32,
    queue_ready_calls: u32,
    queue_items: u32,
}

impl Metrics {
    fn define() -> Result<Self, Status> {
        let counter = |name| hostcalls::define_metric(MetricType::Counter, name);
        Ok(Self {
            requests: counter("probe_requests")?,
            last_status: hostcalls::define_metric(MetricType::Gauge, "probe_last_status")?,
            body_bytes: counter("probe_request_body_bytes")?,
            done: counter("probe_done")?,
            logged: counter("probe_logged")?,
            ticks: counter("probe_ticks")?,
            queue_ready_calls: counter("probe_queue_ready_calls")?,
            queue_items: counter("probe_queue_items")?,
        })
    }

    fn increment(id: u32, by: i64) {
        if let Err(status) = hostcalls::increment_metric(id, by) {
            log(
                LogLevel::Error,
                &format!("increment metric {id}: {status:?}"),
            );
        }
    }
}

#[derive(Debug, Default)]
struct ProbeRoot {
    mode: Mode,
    metrics: Metrics,
    ticks: u64,
    queue: Option<u32>,
}

impl Context for ProbeRoot {}

impl RootContext for ProbeRoot {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        let config = hostcalls::get_buffer(BufferType::VmConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        if config == b"reject" {
            log(LogLevel::Error, "vm configuration says reject");
            return false;
        }
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        let root_id = property(&["plugin_root_id"]).unwrap_or_default();
        self.mode = match (config.as_slice(), root_id.as_str()) {
            (b"noop", _) => return true,
            (b"probe", SINGLETON_ROOT_ID) => Mode::Singleton,
            (b"probe", _) => Mode::Probe,
            (other, _) => {
                let shown = String::from_utf8_lossy(other);
                log(
                    LogLevel::Error,
                    &format!("unknown plugin configuration {shown:?}: expected noop or probe"),
                );
                return false;
            }
        };
        self.metrics = match Metrics::define() {
            Ok(metrics) => metrics,
            Err(status) => {
                log(LogLevel::Error, &format!("define metrics: {status:?}"));
                return false;
            }
        };
        match self.mode {
            Mode::Singleton => match hostcalls::register_shared_queue(QUEUE_NAME) {
                Ok(id) => {
                    self.queue = Some(id);
                    log(LogLevel::Info, &format!("registered {QUEUE_NAME} as {id}"));
                }
                Err(status) => {
                    log(LogLevel::Error, &format!("register queue: {status:?}"));
                    return false;
                }
            },
            Mode::Probe => {
                if let Err(status) = hostcalls::set_tick_period(TICK_PERIOD) {
                    log(LogLevel::Error, &format!("set tick period: {status:?}"));
                    return false;
                }
            }
            Mode::Noop => {}
        }
        log(LogLevel::Info, &format!("configured as {:?}", self.mode));
        true
    }

    fn on_tick(&mut self) {
        if self.mode != Mode::Probe {
            return;
        }
        self.ticks += 1;
        Metrics::increment(self.metrics.ticks, 1);
        let vm_id = property(&["plugin_vm_id"]).unwrap_or_default();
        match hostcalls::resolve_shared_queue(&vm_id, QUEUE_NAME) {
            Ok(Some(queue)) => {
                let item = format!("tick {}", self.ticks);
                if let Err(status) = hostcalls::enqueue_shared_queue(queue, Some(item.as_bytes())) {
                    log(LogLevel::Error, &format!("enqueue: {status:?}"));
                }
            }
            Ok(None) => log(LogLevel::Warn, &format!("no queue {QUEUE_NAME} in {vm_id}")),
            Err(status) => log(LogLevel::Error, &format!("resolve queue: {status:?}")),
        }
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        Metrics::increment(self.metrics.queue_ready_calls, 1);
        loop {
            match hostcalls::dequeue_shared_queue(queue_id) {
                Ok(Some(item)) => {
                    Metrics::increment(self.metrics.queue_items, 1);
                    let item = String::from_utf8_lossy(&item);
                    log(LogLevel::Info, &format!("dequeued {item}"));
                }
                Ok(None) => break,
                Err(status) => {
                    log(LogLevel::Error, &format!("dequeue: {status:?}"));
                    break;
                }
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(match self.mode {
            Mode::Probe | Mode::Singleton => Box::new(ProbeHttp {
                metrics: self.metrics,
                call_status: None,
            }),
            Mode::Noop => Box::new(NoopHttp),
        })
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// The `noop` stream: the SDK's defaults, which return `Continue` and call nothing.
#[derive(Debug)]
struct NoopHttp;

impl Context for NoopHttp {}
impl HttpContext for NoopHttp {}

#[derive(Debug)]
struct ProbeHttp {
    metrics: Metrics,
    call_status: Option<String>,
}

impl ProbeHttp {
    /// Increments the shared counter with CAS retries; returns (new value, retries).
    fn bump_counter() -> Result<(u64, u32), Status> {
        let mut retries = 0;
        loop {
            let (value, cas) = hostcalls::get_shared_data(COUNTER_KEY)?;
            let current = value
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .and_then(|text| text.parse::<u64>().ok())
                .unwrap_or(0);
            let next = current + 1;
            match hostcalls::set_shared_data(COUNTER_KEY, Some(next.to_string().as_bytes()), cas) {
                Ok(()) => return Ok((next, retries)),
                Err(Status::CasMismatch) => retries += 1,
                Err(status) => return Err(status),
            }
        }
    }
}

impl Context for ProbeHttp {
    fn on_http_call_response(
        &mut self,
        _token_id: u32,
        _num_headers: usize,
        _body_size: usize,
        _num_trailers: usize,
    ) {
        let status = header(MapType::HttpCallResponseHeaders, ":status")
            .unwrap_or_else(|| "failed".to_owned());
        set_header(MapType::HttpRequestHeaders, "x-probe-call-status", &status);
        self.call_status = Some(status);
        if let Err(status) = hostcalls::resume_http_request() {
            log(LogLevel::Error, &format!("resume: {status:?}"));
        }
    }

    fn on_done(&mut self) -> bool {
        Metrics::increment(self.metrics.done, 1);
        true
    }
}

impl HttpContext for ProbeHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        const REQUEST: MapType = MapType::HttpRequestHeaders;
        if header(REQUEST, "x-probe-trap").is_some() {
            #[allow(clippy::panic, reason = "the trap is what x-probe-trap asks for")]
            {
                panic!("probe trap requested");
            }
        }
        match Self::bump_counter() {
            Ok((count, retries)) => {
                set_header(REQUEST, "x-probe-count", &count.to_string());
                set_header(REQUEST, "x-probe-cas-retries", &retries.to_string());
            }
            Err(status) => log(LogLevel::Error, &format!("shared counter: {status:?}")),
        }
        Metrics::increment(self.metrics.requests, 1);
        add_header(REQUEST, "x-probe-added", "1");
        if header(REQUEST, "x-probe-replaced").is_some() {
            set_header(REQUEST, "x-probe-replaced", "new");
        }
        remove_header(REQUEST, "x-probe-remove");
        if let Ok(now) = hostcalls::get_current_time() {
            let nanos = now
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            set_header(REQUEST, "x-probe-time", &nanos.to_string());
        }
        if let Err(status) = hostcalls::set_property(vec!["probe", "seen"], Some(b"yes")) {
            log(LogLevel::Error, &format!("set property: {status:?}"));
        }

        if let Some(status) = header(REQUEST, "x-probe-reply") {
            let status = status.trim().parse::<u32>().unwrap_or(500);
            let reply = hostcalls::send_http_response(
                status,
                vec![("x-probe-local", "1")],
                Some(b"probe local reply"),
            );
            if let Err(status) = reply {
                log(LogLevel::Error, &format!("local reply: {status:?}"));
            }
            return Action::Pause;
        }

        if let Some(cluster) = header(REQUEST, "x-probe-call") {
            let call = hostcalls::dispatch_http_call(
                &cluster,
                vec![
                    (":method", "GET"),
                    (":path", "/probe"),
                    (":authority", "upstream"),
                    ("x-probe-from", "filter"),
                ],
                Some(b"probe call body"),
                vec![],
                Duration::from_secs(5),
            );
            return match call {
                Ok(token) => {
                    log(LogLevel::Debug, &format!("dispatched call {token}"));
                    Action::Pause
                }
                Err(status) => {
                    set_header(REQUEST, "x-probe-call-error", &format!("{status:?}"));
                    Action::Continue
                }
            };
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        Metrics::increment(self.metrics.body_bytes, body_size as i64);
        if !end_of_stream {
            return Action::Pause;
        }
        let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        let upper = body.to_ascii_uppercase();
        if let Err(status) =
            hostcalls::set_buffer(BufferType::HttpRequestBody, 0, body_size, &upper)
        {
            log(LogLevel::Error, &format!("set body: {status:?}"));
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        const RESPONSE: MapType = MapType::HttpResponseHeaders;
        add_header(RESPONSE, "x-probe-response", "1");
        set_header(RESPONSE, "server", "probe");
        remove_header(RESPONSE, "x-probe-response-remove");
        let shown = |value: Option<String>| value.unwrap_or_else(|| "<missing>".to_owned());
        set_header(
            RESPONSE,
            "x-probe-plugin-name",
            &shown(property(&["plugin_name"])),
        );
        set_header(
            RESPONSE,
            "x-probe-root-id",
            &shown(property(&["plugin_root_id"])),
        );
        set_header(
            RESPONSE,
            "x-probe-vm-id",
            &shown(property(&["plugin_vm_id"])),
        );
        set_header(
            RESPONSE,
            "x-probe-set-property",
            &shown(property(&["probe", "seen"])),
        );
        if let Some(path) = header(MapType::HttpRequestHeaders, "x-probe-property") {
            let segments: Vec<&str> = path.split('.').collect();
            set_header(RESPONSE, "x-probe-property", &shown(property(&segments)));
        }
        if let Some(status) = &self.call_status {
            set_header(RESPONSE, "x-probe-call-status", status);
        }
        if let Some(status) = header(RESPONSE, ":status").and_then(|s| s.parse::<u64>().ok())
            && let Err(err) = hostcalls::record_metric(self.metrics.last_status, status)
        {
            log(LogLevel::Error, &format!("record metric: {err:?}"));
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        Metrics::increment(self.metrics.logged, 1);
    }
}
