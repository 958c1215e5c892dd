//! [`Vm`]: one instance of a plugin, and [`Stream`]: one HTTP stream through it.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use wasmtime::{Instance, Store, StoreLimitsBuilder, TypedFunc, WasmParams, WasmResults};

use crate::abi;
use crate::env::{HostEnv, LogLevel};
use crate::error::HostError;
use crate::module::WasmModule;
use crate::state::{CallResponse, Direction, HostState, Phase, StreamState};

/// The most linear memory one VM may grow to: 256 MiB. Growing past it fails the
/// `memory.grow` (the guest's allocator then aborts, which is a trap), so a runaway plugin
/// fails its own VM instead of the process.
pub const MEMORY_LIMIT_BYTES: usize = 256 * 1024 * 1024;

/// The context id of every VM's root context; stream contexts count up from 2.
const ROOT_CONTEXT: u32 = 1;

/// How a plugin is configured, as in Envoy's `envoy.filters.http.wasm` config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginConfig {
    /// VMs with the same vm_id share data and queue names.
    pub vm_id: String,
    pub root_id: String,
    pub plugin_name: String,
    /// What `proxy_on_vm_start` can read (buffer type 6).
    pub vm_configuration: Vec<u8>,
    /// What `proxy_on_configure` can read (buffer type 7).
    pub plugin_configuration: Vec<u8>,
}

/// What a filter callback asked the stream to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterAction {
    /// Go on to the next filter / upstream.
    Continue,
    /// Stop here until the plugin resumes the stream (or replied locally).
    Pause,
}

/// A reply the plugin sent instead of forwarding (`proxy_send_local_response`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    pub details: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The gRPC status, when the plugin gave one (`-1` on the wire means none).
    pub grpc_status: Option<u32>,
}

/// An HTTP call the plugin dispatched (`proxy_http_call`), for the driver to perform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    pub token: u32,
    pub cluster: String,
    /// Lower-cased names, pseudo-headers (`:method`, `:path`, `:authority`) included.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
    pub timeout: Duration,
}

/// How a dispatched HTTP call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpCallResult {
    /// A response; `headers` include `:status`.
    Response {
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        trailers: Vec<(String, String)>,
    },
    /// Reset, timeout, no healthy upstream: the plugin sees 0 headers and no body.
    Failed,
}

/// `proxy_on_http_call_response(context, token, headers, body_size, trailers)`.
type CallResponseFunc = TypedFunc<(u32, u32, u32, u32, u32), ()>;

/// The guest's exported callbacks, looked up once. Missing optional ones are skipped,
/// as Envoy does.
#[derive(Clone)]
struct Exports {
    context_create: TypedFunc<(u32, u32), ()>,
    vm_start: Option<TypedFunc<(u32, u32), u32>>,
    configure: Option<TypedFunc<(u32, u32), u32>>,
    tick: Option<TypedFunc<u32, ()>>,
    queue_ready: Option<TypedFunc<(u32, u32), ()>>,
    request_headers: Option<TypedFunc<(u32, u32, u32), u32>>,
    request_body: Option<TypedFunc<(u32, u32, u32), u32>>,
    response_headers: Option<TypedFunc<(u32, u32, u32), u32>>,
    response_body: Option<TypedFunc<(u32, u32, u32), u32>>,
    http_call_response: Option<CallResponseFunc>,
    done: Option<TypedFunc<u32, u32>>,
    log: Option<TypedFunc<u32, ()>>,
    delete: Option<TypedFunc<u32, ()>>,
}

fn optional<P: WasmParams, R: WasmResults>(
    instance: &Instance,
    store: &mut Store<HostState>,
    name: &str,
) -> Result<Option<TypedFunc<P, R>>, HostError> {
    if instance.get_func(&mut *store, name).is_none() {
        return Ok(None);
    }
    instance
        .get_typed_func::<P, R>(&mut *store, name)
        .map(Some)
        .map_err(|_| HostError::MissingExport {
            name: name.to_owned(),
        })
}

fn required<P: WasmParams, R: WasmResults>(
    instance: &Instance,
    store: &mut Store<HostState>,
    name: &str,
) -> Result<TypedFunc<P, R>, HostError> {
    optional(instance, store, name)?.ok_or_else(|| HostError::MissingExport {
        name: name.to_owned(),
    })
}

impl Exports {
    fn find(instance: &Instance, store: &mut Store<HostState>) -> Result<Self, HostError> {
        Ok(Self {
            context_create: required(instance, store, "proxy_on_context_create")?,
            vm_start: optional(instance, store, "proxy_on_vm_start")?,
            configure: optional(instance, store, "proxy_on_configure")?,
            tick: optional(instance, store, "proxy_on_tick")?,
            queue_ready: optional(instance, store, "proxy_on_queue_ready")?,
            request_headers: optional(instance, store, "proxy_on_request_headers")?,
            request_body: optional(instance, store, "proxy_on_request_body")?,
            response_headers: optional(instance, store, "proxy_on_response_headers")?,
            response_body: optional(instance, store, "proxy_on_response_body")?,
            http_call_response: optional(instance, store, "proxy_on_http_call_response")?,
            done: optional(instance, store, "proxy_on_done")?,
            log: optional(instance, store, "proxy_on_log")?,
            delete: optional(instance, store, "proxy_on_delete")?,
        })
    }
}

/// One instance of a plugin: an Envoy worker thread's copy, or the singleton service VM.
/// `Send`, so a gateway can move each into its own thread.
pub struct Vm {
    store: Store<HostState>,
    exports: Exports,
    failed: bool,
    last_context: u32,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("vm", &self.store.data().label)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

fn action(code: Option<u32>) -> FilterAction {
    match code {
        None | Some(0) => FilterAction::Continue,
        Some(_) => FilterAction::Pause,
    }
}

fn lowered(headers: Vec<(String, String)>) -> Vec<(String, String)> {
    headers
        .into_iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value))
        .collect()
}

impl Vm {
    /// Starts a VM the way Envoy starts a plugin: instantiate, `_initialize` (the
    /// reactor entry point `proxy-wasm` 0.2.5 exports for wasip1; `_start` for a command
    /// module; then `main(0, 0)` if exported, as proxy-wasm-cpp-host does), create the
    /// root context (id 1), `proxy_on_vm_start`, then `proxy_on_configure`. A `false` from
    /// either is [`HostError::VmStartRejected`] / [`HostError::ConfigureRejected`] with the
    /// VM's log records; a trap is [`HostError::Trap`].
    pub fn start(
        module: &WasmModule,
        env: &HostEnv,
        config: PluginConfig,
    ) -> Result<Self, HostError> {
        let number = env.next_vm_number();
        let label = format!("{}/{}#{number}", config.vm_id, config.root_id);
        let state = HostState {
            env: env.clone(),
            vm_key: number,
            label,
            config,
            limits: StoreLimitsBuilder::new()
                .memory_size(MEMORY_LIMIT_BYTES)
                .build(),
            memory: None,
            allocate: None,
            root_context: ROOT_CONTEXT,
            effective_context: ROOT_CONTEXT,
            phase: Phase::Other,
            streams: HashMap::new(),
            root_properties: HashMap::new(),
            call_response: None,
            tick_period: None,
            next_tick: None,
            pending_calls: Vec::new(),
            call_owners: HashMap::new(),
            last_token: 0,
            stdout: Vec::new(),
            stderr: Vec::new(),
            error_lines: Vec::new(),
        };
        let mut store = Store::new(module.engine(), state);
        store.limiter(|state| &mut state.limits);
        let instance =
            module
                .pre()
                .instantiate(&mut store)
                .map_err(|err| HostError::Instantiate {
                    source: err.into_boxed_dyn_error(),
                })?;
        let memory =
            instance
                .get_memory(&mut store, "memory")
                .ok_or_else(|| HostError::MissingExport {
                    name: "memory".to_owned(),
                })?;
        let allocate =
            match optional::<i32, i32>(&instance, &mut store, "proxy_on_memory_allocate")? {
                Some(allocate) => allocate,
                None => required(&instance, &mut store, "malloc")?,
            };
        store.data_mut().memory = Some(memory);
        store.data_mut().allocate = Some(allocate);
        let exports = Exports::find(&instance, &mut store)?;
        let initialize = optional::<(), ()>(&instance, &mut store, "_initialize")?;
        let start = optional::<(), ()>(&instance, &mut store, "_start")?;
        let main = optional::<(u32, u32), u32>(&instance, &mut store, "main")?;

        let mut vm = Self {
            store,
            exports,
            failed: false,
            last_context: ROOT_CONTEXT,
        };
        env.vm_started(number);
        if let Some(initialize) = initialize {
            vm.call("_initialize", &initialize, ROOT_CONTEXT, ())?;
        } else if let Some(start) = start {
            vm.call("_start", &start, ROOT_CONTEXT, ())?;
        }
        if let Some(main) = main {
            vm.call("main", &main, ROOT_CONTEXT, (0, 0))?;
        }
        let create = vm.exports.context_create.clone();
        vm.call(
            "proxy_on_context_create",
            &create,
            ROOT_CONTEXT,
            (ROOT_CONTEXT, 0),
        )?;

        let vm_config_len = len_u32(vm.store.data().config.vm_configuration.len());
        vm.store.data_mut().phase = Phase::VmStart;
        let started = vm.call_optional(
            "proxy_on_vm_start",
            vm.exports.vm_start.clone(),
            ROOT_CONTEXT,
            (ROOT_CONTEXT, vm_config_len),
        );
        vm.store.data_mut().phase = Phase::Other;
        if started? == Some(0) {
            return Err(HostError::VmStartRejected {
                logs: vm.own_logs(),
            });
        }

        let plugin_config_len = len_u32(vm.store.data().config.plugin_configuration.len());
        vm.store.data_mut().phase = Phase::Configure;
        let configured = vm.call_optional(
            "proxy_on_configure",
            vm.exports.configure.clone(),
            ROOT_CONTEXT,
            (ROOT_CONTEXT, plugin_config_len),
        );
        vm.store.data_mut().phase = Phase::Other;
        if configured? == Some(0) {
            return Err(HostError::ConfigureRejected {
                logs: vm.own_logs(),
            });
        }
        Ok(vm)
    }

    fn own_logs(&self) -> Vec<crate::env::LogRecord> {
        let state = self.store.data();
        state.env.logs_of(&state.label)
    }

    /// Calls a guest function on `context`; a trap fails the VM for good.
    fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        callback: &str,
        func: &TypedFunc<P, R>,
        context: u32,
        params: P,
    ) -> Result<R, HostError> {
        if self.failed {
            return Err(HostError::Failed);
        }
        let state = self.store.data_mut();
        state.effective_context = context;
        state.error_lines.clear();
        match func.call(&mut self.store, params) {
            Ok(results) => Ok(results),
            Err(err) => {
                self.failed = true;
                let state = self.store.data_mut();
                state.flush_output();
                // The root cause is the trap ("wasm `unreachable` instruction executed");
                // the log record keeps the wasm backtrace too.
                let mut message = err.root_cause().to_string();
                if !state.error_lines.is_empty() {
                    message = format!("{} ({message})", state.error_lines.join("; "));
                }
                state.log(
                    LogLevel::Critical,
                    format!("trap in {callback}, the VM is failed: {message}\n{err:?}"),
                );
                Err(HostError::Trap {
                    callback: callback.to_owned(),
                    message,
                })
            }
        }
    }

    fn call_optional<P: WasmParams, R: WasmResults>(
        &mut self,
        callback: &str,
        func: Option<TypedFunc<P, R>>,
        context: u32,
        params: P,
    ) -> Result<Option<R>, HostError> {
        if self.failed {
            return Err(HostError::Failed);
        }
        match func {
            Some(func) => self.call(callback, &func, context, params).map(Some),
            None => Ok(None),
        }
    }

    /// Fires the tick if it is due (at most one per poll: a late poll does not catch up,
    /// and the next tick is one period after this one), then delivers
    /// `proxy_on_queue_ready` once per enqueue to the queues this VM owns since the last
    /// poll (Envoy posts one per enqueue, too).
    pub fn poll(&mut self) -> Result<(), HostError> {
        if self.failed {
            return Err(HostError::Failed);
        }
        let state = self.store.data_mut();
        let now = state.env.clock().now();
        if let (Some(period), Some(next)) = (state.tick_period, state.next_tick)
            && now >= next
        {
            state.next_tick = Some(now + period);
            let tick = self.exports.tick.clone();
            self.call_optional("proxy_on_tick", tick, ROOT_CONTEXT, ROOT_CONTEXT)?;
        }
        let state = self.store.data();
        let ready = state.env.take_ready(state.vm_key);
        for queue in ready {
            let queue_ready = self.exports.queue_ready.clone();
            self.call_optional(
                "proxy_on_queue_ready",
                queue_ready,
                ROOT_CONTEXT,
                (ROOT_CONTEXT, queue),
            )?;
        }
        Ok(())
    }

    /// When the next tick is due, if a tick period is set.
    pub fn next_tick_at(&self) -> Option<SystemTime> {
        self.store.data().next_tick
    }

    /// Blocks until a queue this VM owns receives an item, or `max` passes (real time).
    pub fn wait(&self, max: Duration) {
        let state = self.store.data();
        state.env.wait_ready(state.vm_key, max);
    }

    /// The HTTP calls dispatched since the last take, for the driver to perform; answer
    /// each with [`Vm::deliver_http_response`].
    pub fn take_http_calls(&mut self) -> Vec<HttpCall> {
        std::mem::take(&mut self.store.data_mut().pending_calls)
    }

    /// Runs `proxy_on_http_call_response` on the context that dispatched `token`; the
    /// response is readable (header maps 6 and 7, buffer 4) during that callback only. A
    /// failed call shows 0 headers and an empty body, as Envoy on reset or timeout. If the
    /// stream that made the call has finished, the response is dropped (Envoy cancels a
    /// context's calls when it is deleted).
    pub fn deliver_http_response(
        &mut self,
        token: u32,
        result: HttpCallResult,
    ) -> Result<(), HostError> {
        if self.failed {
            return Err(HostError::Failed);
        }
        let state = self.store.data_mut();
        let context = state
            .call_owners
            .remove(&token)
            .ok_or(HostError::UnknownCallToken { token })?;
        if context != ROOT_CONTEXT && !state.streams.contains_key(&context) {
            return Ok(());
        }
        let response = match result {
            HttpCallResult::Response {
                headers,
                body,
                trailers,
            } => abi::call_response(headers, body, trailers),
            HttpCallResult::Failed => CallResponse::default(),
        };
        let sizes = (
            len_u32(response.headers.len()),
            len_u32(response.body.len()),
            len_u32(response.trailers.len()),
        );
        state.call_response = Some(response);
        let callback = self.exports.http_call_response.clone();
        let result = self.call_optional(
            "proxy_on_http_call_response",
            callback,
            context,
            (context, token, sizes.0, sizes.1, sizes.2),
        );
        self.store.data_mut().call_response = None;
        result.map(|_| ())
    }

    /// A new HTTP stream (context) on this VM's root context.
    pub fn new_stream(&mut self) -> Result<Stream<'_>, HostError> {
        if self.failed {
            return Err(HostError::Failed);
        }
        self.last_context += 1;
        let id = self.last_context;
        self.store
            .data_mut()
            .streams
            .insert(id, StreamState::default());
        let create = self.exports.context_create.clone();
        if let Err(err) = self.call("proxy_on_context_create", &create, id, (id, ROOT_CONTEXT)) {
            self.store.data_mut().streams.remove(&id);
            return Err(err);
        }
        Ok(Stream {
            vm: self,
            id,
            finished: false,
        })
    }

    /// Re-attaches to a stream that is still open on this VM, typically one let go with
    /// [`Stream::detach`] so that several streams can be in flight on one VM (a driver
    /// detaches while the request is upstream, and re-attaches for the response). `None`
    /// if no open stream has that context id (never created, or finished).
    pub fn stream(&mut self, context_id: u32) -> Option<Stream<'_>> {
        if !self.store.data().streams.contains_key(&context_id) {
            return None;
        }
        Some(Stream {
            vm: self,
            id: context_id,
            finished: false,
        })
    }

    /// True after a trap: every later call is [`HostError::Failed`].
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// The env this VM runs in.
    pub fn env(&self) -> &HostEnv {
        &self.store.data().env
    }

    /// `"{vm_id}/{root_id}#{n}"`, as in its log records.
    pub fn label(&self) -> &str {
        &self.store.data().label
    }

    /// The size of the guest's linear memory, in bytes. Wasm memory never shrinks (there
    /// is no `memory.shrink`), so this is also the most the VM has needed so far: a long
    /// run samples it to show the filter's memory stays bounded (at most
    /// [`MEMORY_LIMIT_BYTES`]).
    pub fn memory_bytes(&self) -> usize {
        self.store
            .data()
            .memory
            .map_or(0, |memory| memory.data_size(&self.store))
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let state = self.store.data();
        state.env.vm_dropped(state.vm_key);
    }
}

/// One HTTP stream through a [`Vm`]: feed it the request and response the way Envoy's
/// filter chain would, then [`Stream::finish`] it.
pub struct Stream<'vm> {
    vm: &'vm mut Vm,
    id: u32,
    finished: bool,
}

impl std::fmt::Debug for Stream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("vm", &self.vm.label())
            .field("context_id", &self.id)
            .finish_non_exhaustive()
    }
}

static NO_HEADERS: Vec<(String, String)> = Vec::new();

/// Which direction of a stream a callback is about.
#[derive(Debug, Clone, Copy)]
enum Side {
    Request,
    Response,
}

impl Stream<'_> {
    fn state(&self) -> Option<&StreamState> {
        self.vm.store.data().streams.get(&self.id)
    }

    fn state_mut(&mut self) -> Option<&mut StreamState> {
        self.vm.store.data_mut().streams.get_mut(&self.id)
    }

    /// This stream's context id.
    pub fn context_id(&self) -> u32 {
        self.id
    }

    /// The VM, e.g. to take and answer the HTTP calls this stream dispatched while it is
    /// paused.
    pub fn vm(&mut self) -> &mut Vm {
        self.vm
    }

    /// Sets a request-scoped property for `proxy_get_property` (e.g. `["metadata",
    /// "filter_metadata", "envoy.filters.http.jwt_authn", "payload"]`).
    pub fn set_property(&mut self, path: &[&str], value: Vec<u8>) {
        if let Some(state) = self.state_mut() {
            let path = path.iter().map(|segment| (*segment).to_owned()).collect();
            state.properties.insert(path, value);
        }
    }

    /// A property as the plugin would read it from this stream (stream-scoped ones, set
    /// by [`Stream::set_property`] or the plugin's `proxy_set_property`).
    pub fn property(&self, path: &[&str]) -> Option<&[u8]> {
        let path: Vec<String> = path.iter().map(|segment| (*segment).to_owned()).collect();
        self.state()?.properties.get(&path).map(Vec::as_slice)
    }

    fn filter_call(
        &mut self,
        callback: &str,
        func: Option<TypedFunc<(u32, u32, u32), u32>>,
        size: usize,
        end_of_stream: bool,
    ) -> Result<FilterAction, HostError> {
        let id = self.id;
        let code = self.vm.call_optional(
            callback,
            func,
            id,
            (id, len_u32(size), u32::from(end_of_stream)),
        )?;
        Ok(action(code))
    }

    /// `proxy_on_request_headers` with these headers (pseudo-headers `:method`, `:path`,
    /// `:authority`, `:scheme` included; names are lower-cased as Envoy does).
    pub fn on_request_headers(
        &mut self,
        headers: Vec<(String, String)>,
        end_of_stream: bool,
    ) -> Result<FilterAction, HostError> {
        self.headers_callback(Side::Request, headers, end_of_stream)
    }

    /// `proxy_on_request_body` with a chunk. After a `Pause` the next chunk is appended
    /// to what the plugin saw (Envoy's StopIterationAndBuffer), so it sees the whole body
    /// so far; after a `Continue` it sees the new chunk only.
    pub fn on_request_body(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<FilterAction, HostError> {
        self.body_callback(Side::Request, chunk, end_of_stream)
    }

    /// The request headers as the plugin left them.
    pub fn request_headers(&self) -> &[(String, String)] {
        self.headers(Side::Request)
    }

    /// The request body (buffered so far) as the plugin left it.
    pub fn request_body(&self) -> &[u8] {
        self.body(Side::Request)
    }

    /// The reply the plugin sent instead of forwarding, if any: the driver must send it
    /// and not forward the request. (Envoy would also run the reply through the filter's
    /// response callbacks; the driver may call `on_response_headers` to mimic that.)
    pub fn local_reply(&self) -> Option<&LocalReply> {
        self.state()?.local_reply.as_ref()
    }

    /// `proxy_on_response_headers` (`:status` included).
    pub fn on_response_headers(
        &mut self,
        headers: Vec<(String, String)>,
        end_of_stream: bool,
    ) -> Result<FilterAction, HostError> {
        self.headers_callback(Side::Response, headers, end_of_stream)
    }

    /// `proxy_on_response_body`, buffered like [`Stream::on_request_body`].
    pub fn on_response_body(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<FilterAction, HostError> {
        self.body_callback(Side::Response, chunk, end_of_stream)
    }

    /// The response headers as the plugin left them.
    pub fn response_headers(&self) -> &[(String, String)] {
        self.headers(Side::Response)
    }

    /// The response body (buffered so far) as the plugin left it.
    pub fn response_body(&self) -> &[u8] {
        self.body(Side::Response)
    }

    /// The plugin resumed the request (`proxy_continue_stream`) since the last request
    /// callback, e.g. after its HTTP call returned.
    pub fn is_request_resumed(&self) -> bool {
        self.state().is_some_and(|state| state.request.resumed)
    }

    /// The plugin resumed the response since the last response callback.
    pub fn is_response_resumed(&self) -> bool {
        self.state().is_some_and(|state| state.response.resumed)
    }

    fn headers_callback(
        &mut self,
        side: Side,
        headers: Vec<(String, String)>,
        end_of_stream: bool,
    ) -> Result<FilterAction, HostError> {
        let count = headers.len();
        if let Some(direction) = self.direction_mut(side) {
            direction.headers = Some(lowered(headers));
            direction.resumed = false;
        }
        let (callback, func) = match side {
            Side::Request => ("proxy_on_request_headers", &self.vm.exports.request_headers),
            Side::Response => (
                "proxy_on_response_headers",
                &self.vm.exports.response_headers,
            ),
        };
        let func = func.clone();
        self.filter_call(callback, func, count, end_of_stream)
    }

    fn body_callback(
        &mut self,
        side: Side,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<FilterAction, HostError> {
        let mut size = 0;
        if let Some(direction) = self.direction_mut(side) {
            if !direction.buffering {
                direction.body.clear();
            }
            direction.body.extend_from_slice(chunk);
            direction.resumed = false;
            size = direction.body.len();
        }
        let (callback, func) = match side {
            Side::Request => ("proxy_on_request_body", &self.vm.exports.request_body),
            Side::Response => ("proxy_on_response_body", &self.vm.exports.response_body),
        };
        let func = func.clone();
        let action = self.filter_call(callback, func, size, end_of_stream)?;
        if let Some(direction) = self.direction_mut(side) {
            direction.buffering = action == FilterAction::Pause;
        }
        Ok(action)
    }

    fn direction(&self, side: Side) -> Option<&Direction> {
        let state = self.state()?;
        Some(match side {
            Side::Request => &state.request,
            Side::Response => &state.response,
        })
    }

    fn direction_mut(&mut self, side: Side) -> Option<&mut Direction> {
        let state = self.state_mut()?;
        Some(match side {
            Side::Request => &mut state.request,
            Side::Response => &mut state.response,
        })
    }

    fn headers(&self, side: Side) -> &[(String, String)] {
        self.direction(side)
            .and_then(|direction| direction.headers.as_ref())
            .unwrap_or(&NO_HEADERS)
    }

    fn body(&self, side: Side) -> &[u8] {
        self.direction(side)
            .map_or(&[], |direction| direction.body.as_slice())
    }

    /// The plugin reset the stream (`proxy_close_stream`).
    pub fn is_closed(&self) -> bool {
        self.state().is_some_and(|state| state.closed)
    }

    /// Lets go of the stream without ending it and returns its context id: dropping a
    /// detached stream calls nothing, the stream stays open on the VM (its state, calls
    /// and replies kept) until [`Vm::stream`] re-attaches it and it is finished. A
    /// detached stream never re-attached stays open for the VM's lifetime.
    pub fn detach(mut self) -> u32 {
        self.finished = true;
        self.id
    }

    /// Ends the stream: `proxy_on_done`, `proxy_on_log`, then `proxy_on_delete`.
    ///
    /// That is the order of the ABI spec's HTTP stream lifecycle and of proxy-wasm-cpp-host
    /// (done when the host is finished with the stream, then the access-log callback, then
    /// the context is deleted). `on_done` returning false (the plugin wants to finish
    /// later) is not waited for: streams end here. HTTP calls the stream dispatched and
    /// were not answered are dropped, as Envoy cancels them. A stream dropped without
    /// `finish` gets the same calls, errors ignored.
    pub fn finish(mut self) -> Result<(), HostError> {
        self.finish_inner()
    }

    fn finish_inner(&mut self) -> Result<(), HostError> {
        self.finished = true;
        let id = self.id;
        let exports = self.vm.exports.clone();
        let result = self
            .vm
            .call_optional("proxy_on_done", exports.done, id, id)
            .and_then(|_| self.vm.call_optional("proxy_on_log", exports.log, id, id))
            .and_then(|_| {
                self.vm
                    .call_optional("proxy_on_delete", exports.delete, id, id)
            });
        let state = self.vm.store.data_mut();
        state.streams.remove(&id);
        state.call_owners.retain(|_, owner| *owner != id);
        let owners = &state.call_owners;
        state
            .pending_calls
            .retain(|call| owners.contains_key(&call.token));
        result.map(|_| ())
    }
}

impl Drop for Stream<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.finish_inner();
        }
    }
}
