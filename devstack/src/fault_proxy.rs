//! A fault-injecting HTTP/1.1 reverse proxy on loopback, put between the code under test
//! and DynamoDB Local or the SQS emulator, so faults come over the wire as AWS sends them
//! and the real AWS SDK classifies and retries them as it would in AWS.
//!
//! Faults are injected on cue ([`FaultRule`]: which requests, how many to let through
//! first, how many to hit), and the whole endpoint can go down and come back on the same
//! port ([`FaultProxy::set_down`]). An outage is how the suites model an SQS server
//! restart: moto keeps its queues in memory, so restarting the process would lose
//! messages that real SQS, which is durable, never loses; what a client of SQS sees of a
//! restart is refused and reset connections, then the same queues again.
//!
//! Error bodies follow the AWS JSON protocols (`awsJson1_0` for DynamoDB and SQS): a
//! `__type` naming the error shape and a `message`; SQS adds its query-compatible code in
//! `x-amzn-query-error`. A `TransactionCanceledException` lists one cancellation reason
//! per item of the transaction, `TransactionConflict` for each, as DynamoDB does when
//! another transaction holds the items.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum FaultProxyError {
    #[error("binding a loopback port for the fault proxy: {0}")]
    Bind(#[source] std::io::Error),
    #[error("the upstream {0:?} is not an http://host:port URL")]
    Upstream(String),
}

/// Which requests a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestMatch {
    /// Every request.
    Any,
    /// Requests whose `X-Amz-Target` ends with this operation (`TransactWriteItems`).
    AmzTarget(&'static str),
    /// SQS requests for this action (`SendMessageBatch`), JSON protocol
    /// (`X-Amz-Target: AmazonSQS.<action>`) or query protocol (`Action=<action>`).
    SqsAction(&'static str),
}

/// What happens to a request a rule hits.
#[derive(Clone)]
pub enum Fault {
    /// 400 `ThrottlingException` (retried by the SDK's standard retry).
    Throttle,
    /// 400 `ProvisionedThroughputExceededException`.
    ThroughputExceeded,
    /// 400 `TransactionCanceledException`, every item `TransactionConflict`.
    TransactionConflict,
    /// This status with an `InternalFailure` body (500, 503, …).
    Status(u16),
    /// The connection is dropped before the request is forwarded.
    ResetConnection,
    /// The request is forwarded and takes effect; the connection is dropped before the
    /// answer, so the client cannot know it did.
    LoseResponse,
    /// Forwarded, then `hook` runs (kill the caller, say), then the answer is lost.
    Hook(Arc<dyn Fn() + Send + Sync>),
}

impl Fault {
    /// The name stats count this fault under.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Throttle => "throttle",
            Fault::ThroughputExceeded => "throughput_exceeded",
            Fault::TransactionConflict => "transaction_conflict",
            Fault::Status(_) => "status",
            Fault::ResetConnection => "reset_connection",
            Fault::LoseResponse => "lose_response",
            Fault::Hook(_) => "hook",
        }
    }
}

impl fmt::Debug for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Status(status) => write!(f, "Status({status})"),
            other => f.write_str(other.kind()),
        }
    }
}

/// A fault on cue: among the requests `matching`, let `skip` through, then hit `count`.
#[derive(Debug, Clone)]
pub struct FaultRule {
    pub matching: RequestMatch,
    pub skip: u32,
    pub count: u32,
    pub fault: Fault,
}

/// What the proxy saw and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Requests that reached the proxy (outages excluded).
    pub requests: u64,
    /// Requests forwarded to the upstream.
    pub forwarded: u64,
    /// Faults injected, by [`Fault::kind`].
    pub injected: BTreeMap<&'static str, u64>,
    /// Connections refused while down.
    pub refused_connections: u64,
}

impl FaultStats {
    /// Every fault injected, whatever its kind.
    pub fn faults(&self) -> u64 {
        self.injected.values().sum()
    }
}

#[derive(Default)]
struct Shared {
    rules: Vec<FaultRule>,
    stats: FaultStats,
}

struct Inner {
    upstream: String,
    client: Client<HttpConnector, Full<Bytes>>,
    shared: Mutex<Shared>,
    down: AtomicBool,
    /// Flipped on every outage start: live connections drop when it changes.
    outages: watch::Sender<u64>,
}

/// A running fault proxy; dropping it stops it.
pub struct FaultProxy {
    addr: SocketAddr,
    inner: Arc<Inner>,
    _shutdown: watch::Sender<()>,
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.inner.upstream)
            .finish_non_exhaustive()
    }
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream` (`http://127.0.0.1:p`).
    pub async fn start(upstream: &str) -> Result<FaultProxy, FaultProxyError> {
        let upstream = upstream.trim_end_matches('/').to_owned();
        if !upstream.starts_with("http://") || upstream["http://".len()..].contains('/') {
            return Err(FaultProxyError::Upstream(upstream));
        }
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .map_err(FaultProxyError::Bind)?;
        let addr = listener.local_addr().map_err(FaultProxyError::Bind)?;
        let (outages, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            upstream,
            client: Client::builder(TokioExecutor::new()).build_http(),
            shared: Mutex::new(Shared::default()),
            down: AtomicBool::new(false),
            outages,
        });
        let (shutdown, stopped) = watch::channel(());
        tokio::spawn(serve(listener, Arc::clone(&inner), stopped));
        Ok(FaultProxy {
            addr,
            inner,
            _shutdown: shutdown,
        })
    }

    /// The endpoint to give the code under test instead of the upstream's.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds a rule; rules are tried in the order they were added.
    pub fn inject(&self, rule: FaultRule) {
        self.inner.lock().rules.push(rule);
    }

    /// Drops every rule not yet used up.
    pub fn clear(&self) {
        self.inner.lock().rules.clear();
    }

    /// Down: new connections are closed as soon as they are accepted and live ones are
    /// dropped. Up again: the same port serves as before.
    pub fn set_down(&self, down: bool) {
        let was = self.inner.down.swap(down, Ordering::SeqCst);
        if down && !was {
            self.inner.outages.send_modify(|n| *n += 1);
        }
    }

    pub fn stats(&self) -> FaultStats {
        self.inner.lock().stats.clone()
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts the request and picks the fault of the first rule that hits it.
    fn cue(&self, target: &str, body: &[u8]) -> Option<Fault> {
        let mut shared = self.lock();
        shared.stats.requests += 1;
        let mut chosen = None;
        for rule in &mut shared.rules {
            if rule.count == 0 || !matches(&rule.matching, target, body) {
                continue;
            }
            if rule.skip > 0 {
                rule.skip -= 1;
                continue;
            }
            rule.count -= 1;
            chosen = Some(rule.fault.clone());
            break;
        }
        shared.rules.retain(|rule| rule.count > 0);
        if let Some(fault) = &chosen {
            *shared.stats.injected.entry(fault.kind()).or_default() += 1;
        }
        chosen
    }
}

fn matches(matching: &RequestMatch, target: &str, body: &[u8]) -> bool {
    match matching {
        RequestMatch::Any => true,
        RequestMatch::AmzTarget(operation) => target
            .rsplit_once('.')
            .is_some_and(|(_, op)| op == *operation),
        RequestMatch::SqsAction(action) => {
            target == format!("AmazonSQS.{action}")
                || String::from_utf8_lossy(body)
                    .split('&')
                    .any(|pair| pair == format!("Action={action}"))
        }
    }
}

async fn serve(listener: TcpListener, inner: Arc<Inner>, mut stopped: watch::Receiver<()>) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            _ = stopped.changed() => return,
        };
        if inner.down.load(Ordering::SeqCst) {
            inner.lock().stats.refused_connections += 1;
            // Linger 0: the peer sees a reset, as from a server that is not there.
            let _ = stream.set_zero_linger();
            drop(stream);
            continue;
        }
        let inner = Arc::clone(&inner);
        let mut stopped = stopped.clone();
        let mut outages = inner.outages.subscribe();
        tokio::spawn(async move {
            let service = hyper::service::service_fn({
                let inner = Arc::clone(&inner);
                move |request| handle(Arc::clone(&inner), request)
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                _ = stopped.changed() => {}
                _ = outages.changed() => {}
            }
        });
    }
}

/// An error from the service makes hyper drop the connection without an answer.
#[derive(Debug, thiserror::Error)]
#[error("fault proxy: {0}")]
struct Dropped(&'static str);

async fn handle(
    inner: Arc<Inner>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|_| Dropped("request body"))?
        .to_bytes();
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let fault = inner.cue(&target, &body);
    let sqs = target.starts_with("AmazonSQS") || body.starts_with(b"Action=");
    match fault {
        Some(Fault::ResetConnection) => return Err(Dropped("reset")),
        Some(Fault::Throttle) => return Ok(throttled(sqs)),
        Some(Fault::ThroughputExceeded) => {
            return Ok(aws_error(
                400,
                "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                "The level of configured provisioned throughput for the table was exceeded.",
                None,
                None,
            ));
        }
        Some(Fault::TransactionConflict) => return Ok(transaction_conflict(&body)),
        Some(Fault::Status(status)) => {
            return Ok(aws_error(
                status,
                "InternalFailure",
                "The request processing has failed because of an unknown error (injected).",
                None,
                sqs.then_some("InternalFailure;Receiver"),
            ));
        }
        _ => {}
    }
    let answer = forward(&inner, parts, body).await;
    inner.lock().stats.forwarded += 1;
    match fault {
        Some(Fault::LoseResponse) => Err(Dropped("response lost")),
        Some(Fault::Hook(hook)) => {
            hook();
            Err(Dropped("response lost after the hook"))
        }
        _ => answer,
    }
}

async fn forward(
    inner: &Inner,
    parts: hyper::http::request::Parts,
    body: Bytes,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |path| path.as_str())
        .to_owned();
    let mut request = Request::builder()
        .method(parts.method)
        .uri(format!("{}{path}", inner.upstream));
    for (name, value) in &parts.headers {
        if name != hyper::header::HOST {
            request = request.header(name, value);
        }
    }
    let request = request
        .body(Full::new(body))
        .map_err(|_| Dropped("request rebuild"))?;
    let response = inner
        .client
        .request(request)
        .await
        .map_err(|_| Dropped("upstream unreachable"))?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|_| Dropped("upstream body"))?
        .to_bytes();
    Ok(Response::from_parts(parts, Full::new(body)))
}

fn throttled(sqs: bool) -> Response<Full<Bytes>> {
    if sqs {
        aws_error(
            400,
            "com.amazonaws.sqs#RequestThrottled",
            "Rate exceeded (injected).",
            None,
            Some("RequestThrottled;Sender"),
        )
    } else {
        aws_error(
            400,
            "com.amazonaws.dynamodb.v20120810#ThrottlingException",
            "Rate of requests exceeds the allowed throughput (injected).",
            None,
            None,
        )
    }
}

fn transaction_conflict(body: &[u8]) -> Response<Full<Bytes>> {
    let items = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|request| request["TransactItems"].as_array().map(Vec::len))
        .unwrap_or(1);
    let reasons: Vec<Value> = (0..items)
        .map(|_| json!({"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}))
        .collect();
    let codes = vec!["TransactionConflict"; items].join(", ");
    aws_error(
        400,
        "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
        &format!(
            "Transaction cancelled, please refer cancellation reasons for specific reasons [{codes}]"
        ),
        Some(("CancellationReasons", Value::Array(reasons))),
        None,
    )
}

fn aws_error(
    status: u16,
    shape: &str,
    message: &str,
    extra: Option<(&str, Value)>,
    query_error: Option<&str>,
) -> Response<Full<Bytes>> {
    let mut body = json!({ "__type": shape, "message": message });
    if let (Some((name, value)), Some(object)) = (extra, body.as_object_mut()) {
        object.insert(name.to_owned(), value);
    }
    let mut response = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/x-amz-json-1.0")
        .header("x-amzn-requestid", "fault-proxy");
    if let Some(code) = query_error {
        response = response.header("x-amzn-query-error", code);
    }
    response
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_skip_then_hit_their_count_of_matching_requests() {
        let shared = Mutex::new(Shared {
            rules: vec![FaultRule {
                matching: RequestMatch::AmzTarget("TransactWriteItems"),
                skip: 1,
                count: 2,
                fault: Fault::Throttle,
            }],
            ..Shared::default()
        });
        let (outages, _) = watch::channel(0);
        let inner = Inner {
            upstream: "http://127.0.0.1:9".to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
            shared,
            down: AtomicBool::new(false),
            outages,
        };
        let transact = "DynamoDB_20120810.TransactWriteItems";
        let hits: Vec<bool> = [
            transact,
            "DynamoDB_20120810.GetItem",
            transact,
            transact,
            transact,
        ]
        .iter()
        .map(|target| inner.cue(target, b"{}").is_some())
        .collect();
        assert_eq!(hits, [false, false, true, true, false]);
        assert_eq!(inner.lock().stats.injected["throttle"], 2);
        assert!(inner.lock().rules.is_empty());
    }

    #[test]
    fn sqs_actions_match_in_both_protocols() {
        let batch = RequestMatch::SqsAction("SendMessageBatch");
        assert!(matches(&batch, "AmazonSQS.SendMessageBatch", b"{}"));
        assert!(matches(
            &batch,
            "",
            b"Action=SendMessageBatch&Version=2012-11-05"
        ));
        assert!(!matches(&batch, "AmazonSQS.SendMessage", b"{}"));
    }

    #[test]
    fn a_conflict_gives_one_reason_per_item() {
        let body = br#"{"TransactItems":[{},{},{}]}"#;
        let response = transaction_conflict(body);
        assert_eq!(response.status(), 400);
    }
}
