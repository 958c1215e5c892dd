//! [`Gateway`]: the HTTP/1 server in front of the upstream, and [`RunningGateway`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::oneshot;
use tollgate_wasm_host::{HostEnv, LocalReply, PluginConfig, SystemClock, Vm, WasmModule};

use crate::cluster::{Cluster, ClusterClient};
use crate::error::GatewayError;
use crate::vm_thread::{
    self, CallContext, Headers, Job, RequestOutcome, ResponseOutcome, VmStatsCell,
};

/// The largest request body the gateway buffers; larger ones get a 413.
pub const MAX_REQUEST_BODY_BYTES: usize = 8 * 1024 * 1024;
/// The largest upstream response body the gateway buffers; larger ones are a 502.
pub const MAX_RESPONSE_BODY_BYTES: usize = 64 * 1024 * 1024;
/// How long the upstream has to answer (headers and body), as Envoy's route timeout.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a request may wait for the filter's decision (it may be paused on its own
/// HTTP call).
pub const FILTER_TIMEOUT: Duration = Duration::from_secs(30);

/// Root id of the worker VMs (the HTTP filter).
pub const ROOT_ID_FILTER: &str = "tollgate";
/// Root id of the singleton service VM.
pub const ROOT_ID_SERVICE: &str = "tollgate_flush";

/// How to start a [`Gateway`].
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Where to listen; `127.0.0.1:0` picks a free port ([`RunningGateway::addr`]).
    pub listen: SocketAddr,
    /// The upstream's base URL, `http://127.0.0.1:PORT`; the request's path is appended.
    pub upstream: String,
    /// The filter, compiled.
    pub module: WasmModule,
    /// The plugin configuration every VM gets (`proxy_on_configure`).
    pub plugin_configuration: Vec<u8>,
    /// The VMs' `vm_id` (they share data and queues under it).
    pub vm_id: String,
    /// Worker VMs, one OS thread each (Envoy's `--concurrency`).
    pub workers: usize,
    /// Where the plugin's HTTP calls go.
    pub clusters: Vec<Cluster>,
    /// When a VM is failed, pass requests through unfiltered (Envoy's `fail_open`)
    /// instead of answering 503.
    pub fail_open: bool,
}

impl GatewayConfig {
    /// Loopback on a free port, `vm_id` `tollgate`, 4 workers, no clusters, fail closed.
    pub fn new(
        upstream: impl Into<String>,
        module: WasmModule,
        plugin_configuration: Vec<u8>,
    ) -> GatewayConfig {
        GatewayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            upstream: upstream.into(),
            module,
            plugin_configuration,
            vm_id: "tollgate".to_owned(),
            workers: 4,
            clusters: Vec::new(),
            fail_open: false,
        }
    }

    /// Adds a cluster.
    pub fn with_cluster(mut self, cluster: Cluster) -> GatewayConfig {
        self.clusters.push(cluster);
        self
    }
}

/// The local gateway: Envoy's role for the filter, on loopback. See the crate docs.
#[derive(Debug)]
pub struct Gateway;

impl Gateway {
    /// Starts the VMs (singleton first, then the workers), binds the listener and serves
    /// until [`RunningGateway::shutdown`] (or drop). Any failure stops what was started.
    pub fn start(config: GatewayConfig) -> Result<RunningGateway, GatewayError> {
        let upstream = validate(&config)?;
        let names: Vec<String> = config.clusters.iter().map(|c| c.name.clone()).collect();
        let env = HostEnv::new(Arc::new(SystemClock)).with_clusters(names);
        let plugin = |root_id: &str| PluginConfig {
            vm_id: config.vm_id.clone(),
            root_id: root_id.to_owned(),
            plugin_name: "tollgate".to_owned(),
            vm_configuration: Vec::new(),
            plugin_configuration: config.plugin_configuration.clone(),
        };
        let start_vm = |root_id: &str| {
            Vm::start(&config.module, &env, plugin(root_id)).map_err(|source| {
                GatewayError::VmStart {
                    root_id: root_id.to_owned(),
                    source,
                }
            })
        };
        let singleton = start_vm(ROOT_ID_SERVICE)?;
        let workers = (0..config.workers)
            .map(|_| start_vm(ROOT_ID_FILTER))
            .collect::<Result<Vec<_>, _>>()?;

        let listener =
            std::net::TcpListener::bind(config.listen).map_err(|source| GatewayError::Bind {
                addr: config.listen,
                source,
            })?;
        let bind_error = |source| GatewayError::Bind {
            addr: config.listen,
            source,
        };
        listener.set_nonblocking(true).map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tollgate-gateway-io")
            .enable_all()
            .build()
            .map_err(|source| GatewayError::Spawn {
                what: "runtime",
                source,
            })?;
        let calls = CallContext {
            clusters: Arc::new(
                config
                    .clusters
                    .iter()
                    .map(|c| (c.name.clone(), c.clone()))
                    .collect::<HashMap<_, _>>(),
            ),
            client: ClusterClient::new(),
            runtime: runtime.handle().clone(),
        };

        let mut running = RunningGateway {
            addr,
            env,
            server: None,
            vms: Vec::new(),
        };
        for vm in std::iter::once(singleton).chain(workers) {
            let label = vm.label().to_owned();
            let (tx, rx) = mpsc::channel();
            let own = tx.clone();
            let calls = calls.clone();
            let stats = VmStatsCell::of(&vm);
            let thread_stats = Arc::clone(&stats);
            let join = std::thread::Builder::new()
                .name(format!("vm {label}"))
                .spawn(move || vm_thread::run(vm, rx, own, calls, thread_stats))
                .map_err(|source| GatewayError::Spawn {
                    what: "VM thread",
                    source,
                })?;
            running.vms.push(VmHandle { tx, join, stats });
        }

        let shared = Arc::new(Shared {
            workers: running.vms[1..].iter().map(|vm| vm.tx.clone()).collect(),
            next: AtomicUsize::new(0),
            upstream,
            client: Client::builder(TokioExecutor::new()).build_http(),
            fail_open: config.fail_open,
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let join = std::thread::Builder::new()
            .name("tollgate-gateway".to_owned())
            .spawn(move || serve(runtime, listener, shared, stop_rx))
            .map_err(|source| GatewayError::Spawn {
                what: "server thread",
                source,
            })?;
        running.server = Some((stop_tx, join));
        tracing::info!(%addr, workers = config.workers, "gateway listening");
        Ok(running)
    }
}

fn validate(config: &GatewayConfig) -> Result<String, GatewayError> {
    let invalid = |reason: String| GatewayError::InvalidConfig { reason };
    if config.workers == 0 {
        return Err(invalid("workers must be at least 1".to_owned()));
    }
    let upstream = config.upstream.trim_end_matches('/').to_owned();
    let uri: hyper::Uri = upstream
        .parse()
        .map_err(|e| invalid(format!("upstream `{upstream}`: {e}")))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(invalid(format!(
            "upstream `{upstream}` must be an http://host:port URL"
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for cluster in &config.clusters {
        if !seen.insert(cluster.name.as_str()) {
            return Err(invalid(format!("cluster `{}` defined twice", cluster.name)));
        }
    }
    Ok(upstream)
}

struct VmHandle {
    tx: mpsc::Sender<Job>,
    join: JoinHandle<()>,
    stats: Arc<VmStatsCell>,
}

/// One VM of a running gateway, as [`RunningGateway::vm_stats`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmStats {
    /// `"{vm_id}/{root_id}#{n}"`, as in the VM's log records.
    pub label: String,
    /// The guest's linear memory ([`Vm::memory_bytes`]): it only grows, so a long run
    /// that keeps it flat has bounded memory in the filter.
    pub memory_bytes: u64,
    /// The VM trapped and is failed for good (its requests get 503, or pass through with
    /// [`GatewayConfig::fail_open`]).
    pub failed: bool,
}

/// A started [`Gateway`]. Stops (server, then every VM thread, each joined) on
/// [`RunningGateway::shutdown`] or drop.
pub struct RunningGateway {
    addr: SocketAddr,
    env: HostEnv,
    server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
    vms: Vec<VmHandle>,
}

impl std::fmt::Debug for RunningGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningGateway")
            .field("addr", &self.addr)
            .field("vms", &self.vms.len())
            .finish_non_exhaustive()
    }
}

impl RunningGateway {
    /// The address the gateway listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://{addr}`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The "Envoy process": the plugin's metrics, logs and shared data.
    pub fn env(&self) -> &HostEnv {
        &self.env
    }

    /// Every VM, the singleton first, as its thread last saw it (at most one poll
    /// interval, 20 ms, old): memory and whether it trapped. For load tests and
    /// diagnostics; Envoy exposes neither per VM.
    pub fn vm_stats(&self) -> Vec<VmStats> {
        self.vms
            .iter()
            .map(|vm| VmStats {
                label: vm.stats.label.clone(),
                memory_bytes: vm.stats.memory_bytes(),
                failed: vm.stats.failed(),
            })
            .collect()
    }

    /// Stops accepting, drops open connections, stops and joins every thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some((stop, join)) = self.server.take() {
            let _ = stop.send(());
            if join.join().is_err() {
                tracing::error!("the gateway's server thread panicked");
            }
        }
        for vm in &self.vms {
            let _ = vm.tx.send(Job::Stop);
        }
        for vm in self.vms.drain(..) {
            if vm.join.join().is_err() {
                tracing::error!("a VM thread panicked");
            }
        }
        tracing::info!(addr = %self.addr, "gateway stopped");
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Shared {
    workers: Vec<mpsc::Sender<Job>>,
    next: AtomicUsize,
    upstream: String,
    client: Client<HttpConnector, Full<Bytes>>,
    fail_open: bool,
}

impl Shared {
    fn pick(&self) -> &mpsc::Sender<Job> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        &self.workers[n % self.workers.len()]
    }
}

fn serve(
    runtime: tokio::runtime::Runtime,
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(%error, "cannot use the listener");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = &mut stop => break,
                accepted = listener.accept() => match accepted {
                    Ok((socket, _)) => {
                        let _ = socket.set_nodelay(true);
                        let shared = Arc::clone(&shared);
                        tokio::spawn(async move {
                            let service = hyper::service::service_fn(move |request| {
                                let shared = Arc::clone(&shared);
                                async move { Ok::<_, Infallible>(handle(&shared, request).await) }
                            });
                            if let Err(error) = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(socket), service)
                                .await
                            {
                                tracing::debug!(%error, "connection ended with an error");
                            }
                        });
                    }
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
            }
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "content-length",
];

fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = format!(r#"{{"error":"{code}","message":"{message}"}}"#);
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn filter_unavailable() -> Response<Full<Bytes>> {
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "filter_unavailable",
        "the usage filter is unavailable",
    )
}

/// Finishes the stream if the request handler is dropped (client gone) before the
/// response was handed to the VM.
struct CancelGuard<'a> {
    tx: &'a mpsc::Sender<Job>,
    stream: Option<u32>,
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        if let Some(stream) = self.stream.take() {
            let _ = self.tx.send(Job::Cancel { stream });
        }
    }
}

async fn handle(shared: &Shared, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_REQUEST_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            if error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return json_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the request body is larger than 8 MiB",
                );
            }
            return json_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the request body could not be read",
            );
        }
    };
    let headers = request_headers(&parts);

    let worker = shared.pick();
    let (reply, outcome) = oneshot::channel();
    let job = Job::Request {
        headers: headers.clone(),
        body: body.clone(),
        reply,
    };
    let outcome = if worker.send(job).is_ok() {
        match tokio::time::timeout(FILTER_TIMEOUT, outcome).await {
            Ok(Ok(outcome)) => outcome,
            _ => RequestOutcome::Failed,
        }
    } else {
        RequestOutcome::Failed
    };

    match outcome {
        RequestOutcome::Reply(local) => local_reply(local),
        RequestOutcome::Failed => {
            if shared.fail_open {
                let (status, headers, body) = forward(shared, &headers, body).await;
                build_response(status_of(&headers, status), &headers, body)
            } else {
                filter_unavailable()
            }
        }
        RequestOutcome::Forward {
            stream,
            headers,
            body,
        } => {
            let mut guard = CancelGuard {
                tx: worker,
                stream: Some(stream),
            };
            let (_, upstream_headers, upstream_body) =
                forward(shared, &headers, Bytes::from(body)).await;
            let (reply, outcome) = oneshot::channel();
            guard.stream = None;
            let job = Job::Response {
                stream,
                headers: upstream_headers.clone(),
                body: upstream_body.clone(),
                reply,
            };
            let outcome = if worker.send(job).is_ok() {
                outcome.await.unwrap_or(ResponseOutcome::Failed)
            } else {
                ResponseOutcome::Failed
            };
            match outcome {
                ResponseOutcome::Response { headers, body } => {
                    let status = status_of(&headers, StatusCode::BAD_GATEWAY);
                    build_response(status, &headers, Bytes::from(body))
                }
                ResponseOutcome::Failed if shared.fail_open => build_response(
                    status_of(&upstream_headers, StatusCode::BAD_GATEWAY),
                    &upstream_headers,
                    upstream_body,
                ),
                ResponseOutcome::Failed => filter_unavailable(),
            }
        }
    }
}

/// The request as Envoy hands it to a filter: pseudo-headers first, names lower-case,
/// `host` folded into `:authority`, connection-specific headers dropped.
fn request_headers(parts: &hyper::http::request::Parts) -> Headers {
    let authority = parts
        .headers
        .get(hyper::header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(ToString::to_string))
        .unwrap_or_default();
    let mut headers = vec![
        (":method".to_owned(), parts.method.as_str().to_owned()),
        (
            ":path".to_owned(),
            parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned(),
        ),
        (":authority".to_owned(), authority),
        (":scheme".to_owned(), "http".to_owned()),
    ];
    for (name, value) in &parts.headers {
        let name = name.as_str();
        if name == "host" || HOP_BY_HOP.contains(&name) {
            continue;
        }
        headers.push((
            name.to_owned(),
            String::from_utf8_lossy(value.as_bytes()).into_owned(),
        ));
    }
    headers
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn status_of(headers: &[(String, String)], default: StatusCode) -> StatusCode {
    header(headers, ":status")
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(default)
}

/// Sends the request upstream; the response as `:status` + headers and its body. A
/// connection failure is a 502, a timeout a 504, both with a JSON body (Envoy's router
/// would answer 503/504 itself; the filter sees it either way).
async fn forward(
    shared: &Shared,
    headers: &[(String, String)],
    body: Bytes,
) -> (StatusCode, Headers, Bytes) {
    let error = |status: StatusCode, code: &str, message: &str| {
        let body = Bytes::from(format!(r#"{{"error":"{code}","message":"{message}"}}"#));
        let headers = vec![
            (":status".to_owned(), status.as_u16().to_string()),
            ("content-type".to_owned(), "application/json".to_owned()),
            ("content-length".to_owned(), body.len().to_string()),
        ];
        (status, headers, body)
    };
    let method = header(headers, ":method").unwrap_or("GET");
    let path = header(headers, ":path").unwrap_or("/");
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("{}{path}", shared.upstream));
    if let Some(authority) = header(headers, ":authority")
        && !authority.is_empty()
    {
        builder = builder.header(hyper::header::HOST, authority);
    }
    let Ok(mut request) = builder.body(Full::new(body)) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request cannot be forwarded",
        );
    };
    append_headers(request.headers_mut(), headers);
    let exchange = async {
        let response = shared.client.request(request).await.ok()?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_RESPONSE_BODY_BYTES)
            .collect()
            .await
            .ok()?
            .to_bytes();
        let mut headers = vec![(":status".to_owned(), parts.status.as_u16().to_string())];
        for (name, value) in &parts.headers {
            if HOP_BY_HOP.contains(&name.as_str()) && name != hyper::header::CONTENT_LENGTH {
                continue;
            }
            headers.push((
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ));
        }
        Some((parts.status, headers, body))
    };
    match tokio::time::timeout(UPSTREAM_TIMEOUT, exchange).await {
        Ok(Some(response)) => response,
        Ok(None) => {
            tracing::warn!(upstream = %shared.upstream, "upstream unavailable");
            error(
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                "the upstream did not answer",
            )
        }
        Err(_) => {
            tracing::warn!(upstream = %shared.upstream, "upstream timed out");
            error(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "the upstream did not answer in time",
            )
        }
    }
}

/// Non-pseudo, non-connection headers onto `map`; invalid ones are skipped.
fn append_headers(map: &mut hyper::HeaderMap, headers: &[(String, String)]) {
    for (name, value) in headers {
        if name.starts_with(':') || HOP_BY_HOP.contains(&name.as_str()) || name == "host" {
            continue;
        }
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(name), Ok(value)) => {
                map.append(name, value);
            }
            _ => tracing::debug!(header = %name, "invalid header skipped"),
        }
    }
}

fn build_response(
    status: StatusCode,
    headers: &[(String, String)],
    body: Bytes,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    append_headers(response.headers_mut(), headers);
    response
}

fn local_reply(reply: LocalReply) -> Response<Full<Bytes>> {
    let status = u16::try_from(reply.status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    build_response(status, &reply.headers, Bytes::from(reply.body))
}
