//! The Lambda Runtime API, as a function binary sees it on AWS.
//!
//! A `lambda_runtime` binary does not listen for requests: it asks Lambda for work. It
//! reads `AWS_LAMBDA_RUNTIME_API` (`host:port`), long-polls `GET …/invocation/next` for an
//! event, runs its handler and posts the result to `…/invocation/{id}/response` or
//! `…/invocation/{id}/error`; a failure before its first poll goes to `…/init/error`. This
//! module serves exactly that protocol (API version `2018-06-01`), so the binaries we ship
//! are run unchanged, the same way AWS runs them.
//!
//! What `lambda_runtime` 1.5 relies on (read from its source): the `next` reply carries the
//! event as its body and the headers `Lambda-Runtime-Aws-Request-Id` and
//! `Lambda-Runtime-Deadline-Ms` (epoch milliseconds; it panics without either),
//! `Lambda-Runtime-Invoked-Function-Arn` and `Lambda-Runtime-Trace-Id`; when the reply also
//! carries `Lambda-Runtime-Invocation-Id` it echoes it back on `/response` and `/error`. It
//! posts errors as `{"errorType": …, "errorMessage": …}` with a
//! `Lambda-Runtime-Function-Error-Type` header. Any non-2xx answer to a post is only logged
//! by it, so a stale or unknown request id is answered `400 InvalidRequestID` as Lambda does.
//!
//! One emulator serves one function instance (one process), and an instance handles one
//! invocation at a time, as on AWS: [`RuntimeApi::submit`] queues at most one event.
//!
//! Not emulated: response streaming (`Lambda-Runtime-Function-Response-Mode: streaming`;
//! such a body is not JSON and the invocation reports an invalid response), SnapStart's
//! `restore` routes, and the extensions and telemetry APIs.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::http_server::{Body, HttpServer, ReadBodyError, read_body, respond};

/// The largest event and the largest response a synchronous invocation may carry
/// (6 MB, Lambda's limit for both).
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;

const PREFIX: &str = "/2018-06-01/runtime/";
const JSON: &str = "application/json";

/// How an invocation ended, as the function reported it.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The body the function posted to `/response`.
    Response(Bytes),
    /// The function posted to `/error` (or its response was too large).
    Error {
        /// The `Lambda-Runtime-Function-Error-Type` header, if any.
        error_type: Option<String>,
        /// The posted body: `{"errorType", "errorMessage"}` from `lambda_runtime`.
        body: Value,
    },
}

/// An invocation handed to [`RuntimeApi::submit`]: its request id and where its outcome
/// arrives.
#[derive(Debug)]
pub(crate) struct Submitted {
    pub(crate) request_id: String,
    pub(crate) outcome: oneshot::Receiver<Outcome>,
}

/// Why [`RuntimeApi::submit`] refused an invocation.
#[derive(Debug, thiserror::Error)]
#[error("the instance already has an invocation queued")]
pub(crate) struct Busy;

/// A queued invocation, not yet fetched by the runtime.
struct Pending {
    request_id: String,
    payload: Bytes,
    deadline_ms: u128,
    trace_id: String,
    reply: oneshot::Sender<Outcome>,
}

/// The invocation the runtime fetched and has not answered yet.
struct InFlight {
    request_id: String,
    reply: oneshot::Sender<Outcome>,
}

struct Shared {
    function_arn: String,
    queue: tokio::sync::Mutex<mpsc::Receiver<Pending>>,
    in_flight: Mutex<Option<InFlight>>,
    polled: AtomicBool,
    init_error: Mutex<Option<Value>>,
}

/// A Runtime API emulator for one function instance. Stops when dropped.
#[derive(Debug)]
pub(crate) struct RuntimeApi {
    server: HttpServer,
    shared: Arc<Shared>,
    submit: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("function_arn", &self.function_arn)
            .field("polled", &self.polled)
            .finish_non_exhaustive()
    }
}

impl RuntimeApi {
    /// Starts an emulator on `127.0.0.1:<free port>` for the function `function_arn`.
    pub(crate) async fn start(function_arn: String) -> io::Result<Self> {
        let (submit, queue) = mpsc::channel(1);
        let shared = Arc::new(Shared {
            function_arn,
            queue: tokio::sync::Mutex::new(queue),
            in_flight: Mutex::new(None),
            polled: AtomicBool::new(false),
            init_error: Mutex::new(None),
        });
        let handler_state = Arc::clone(&shared);
        let server = HttpServer::start(move |request, _peer| {
            let shared = Arc::clone(&handler_state);
            async move { handle(&shared, request).await }
        })
        .await?;
        Ok(Self {
            server,
            shared,
            submit,
        })
    }

    /// `host:port`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Whether the runtime has asked for an invocation yet: the end of its init phase.
    pub(crate) fn has_polled(&self) -> bool {
        self.shared.polled.load(Ordering::SeqCst)
    }

    /// What the runtime posted to `/init/error`, if it did.
    pub(crate) fn init_error(&self) -> Option<Value> {
        lock(&self.shared.init_error).clone()
    }

    /// Queues `payload` for the runtime's next poll, with the given deadline.
    pub(crate) fn submit(&self, payload: Bytes, deadline: SystemTime) -> Result<Submitted, Busy> {
        let request_id = uuid::Uuid::new_v4().to_string();
        let (reply, outcome) = oneshot::channel();
        let deadline_ms = deadline
            .duration_since(UNIX_EPOCH)
            .map(|since| since.as_millis())
            .unwrap_or_default();
        self.submit
            .try_send(Pending {
                request_id: request_id.clone(),
                payload,
                deadline_ms,
                trace_id: trace_id(),
                reply,
            })
            .map_err(|_| Busy)?;
        Ok(Submitted {
            request_id,
            outcome,
        })
    }

    /// Forgets an invocation that timed out, so that a late answer to it is refused.
    pub(crate) fn abandon(&self, request_id: &str) {
        let mut in_flight = lock(&self.shared.in_flight);
        if in_flight
            .as_ref()
            .is_some_and(|current| current.request_id == request_id)
        {
            *in_flight = None;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An X-Ray trace header of the shape Lambda passes (`Root=1-<epoch hex>-<24 hex>;…`).
fn trace_id() -> String {
    let epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or_default();
    let root = uuid::Uuid::new_v4().simple().to_string();
    let parent = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "Root=1-{epoch:08x}-{};Parent={};Sampled=0",
        &root[..24],
        &parent[..16]
    )
}

async fn handle(shared: &Shared, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_owned();
    let Some(route) = path.strip_prefix(PREFIX) else {
        return not_found(&path);
    };
    match (request.method().clone(), route) {
        (Method::GET, "invocation/next") => next(shared).await,
        (Method::POST, "init/error") => init_error(shared, request).await,
        (Method::POST, route) => match route
            .strip_prefix("invocation/")
            .and_then(|rest| rest.split_once('/'))
        {
            Some((request_id, "response")) => response(shared, request_id, request).await,
            Some((request_id, "error")) => error(shared, request_id, request).await,
            _ => not_found(&path),
        },
        _ => not_found(&path),
    }
}

/// `GET /invocation/next`: blocks until an invocation is queued, then hands it over.
async fn next(shared: &Shared) -> Response<Body> {
    shared.polled.store(true, Ordering::SeqCst);
    // One poller at a time; a poll whose connection drops releases the lock (and loses
    // nothing: `recv` is cancellation safe).
    let mut queue = shared.queue.lock().await;
    loop {
        let Some(pending) = queue.recv().await else {
            return api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ServiceException",
                "stopped",
            );
        };
        if pending.reply.is_closed() {
            // The invoker gave up (timed out) before the runtime asked: skip it.
            continue;
        }
        let built = Response::builder()
            .status(StatusCode::OK)
            .header("content-type", JSON)
            .header("lambda-runtime-aws-request-id", &pending.request_id)
            .header("lambda-runtime-invocation-id", &pending.request_id)
            .header(
                "lambda-runtime-deadline-ms",
                pending.deadline_ms.to_string(),
            )
            .header(
                "lambda-runtime-invoked-function-arn",
                shared.function_arn.as_str(),
            )
            .header("lambda-runtime-trace-id", &pending.trace_id)
            .body(http_body_util::Full::new(pending.payload));
        return match built {
            Ok(response) => {
                *lock(&shared.in_flight) = Some(InFlight {
                    request_id: pending.request_id,
                    reply: pending.reply,
                });
                response
            }
            Err(err) => {
                let body =
                    json!({"errorType": "Emulator.InvalidHeader", "errorMessage": err.to_string()});
                let _ = pending.reply.send(Outcome::Error {
                    error_type: Some("Emulator.InvalidHeader".into()),
                    body,
                });
                api_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "ServiceException",
                    "could not build the invocation",
                )
            }
        };
    }
}

/// `POST /invocation/{id}/response`.
async fn response(shared: &Shared, request_id: &str, request: Request<Incoming>) -> Response<Body> {
    match read_body(request.into_body(), MAX_PAYLOAD_BYTES).await {
        Ok(body) => answer(shared, request_id, Outcome::Response(body)),
        Err(ReadBodyError::TooLarge) => {
            let message = format!(
                "Response payload size exceeded maximum allowed payload size ({MAX_PAYLOAD_BYTES} bytes)."
            );
            let body =
                json!({"errorType": "Function.ResponseSizeTooLarge", "errorMessage": message});
            answer(
                shared,
                request_id,
                Outcome::Error {
                    error_type: Some("Function.ResponseSizeTooLarge".into()),
                    body,
                },
            );
            api_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                &message,
            )
        }
        Err(ReadBodyError::Broken(reason)) => {
            api_error(StatusCode::BAD_REQUEST, "InvalidRequest", &reason)
        }
    }
}

/// `POST /invocation/{id}/error`.
async fn error(shared: &Shared, request_id: &str, request: Request<Incoming>) -> Response<Body> {
    let error_type = request
        .headers()
        .get("lambda-runtime-function-error-type")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    match read_body(request.into_body(), MAX_PAYLOAD_BYTES).await {
        Ok(body) => answer(
            shared,
            request_id,
            Outcome::Error {
                error_type,
                body: json_or_text(&body),
            },
        ),
        Err(ReadBodyError::TooLarge) => api_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "error body too large",
        ),
        Err(ReadBodyError::Broken(reason)) => {
            api_error(StatusCode::BAD_REQUEST, "InvalidRequest", &reason)
        }
    }
}

/// `POST /init/error`: the runtime failed before its first poll; it exits next.
async fn init_error(shared: &Shared, request: Request<Incoming>) -> Response<Body> {
    let body = match read_body(request.into_body(), MAX_PAYLOAD_BYTES).await {
        Ok(body) => json_or_text(&body),
        Err(_) => json!({"errorType": "Runtime.InitError", "errorMessage": "unreadable"}),
    };
    *lock(&shared.init_error) = Some(body);
    respond(StatusCode::ACCEPTED, JSON, r#"{"status":"OK"}"#)
}

/// Delivers `outcome` to the invocation `request_id` if it is the one in flight.
fn answer(shared: &Shared, request_id: &str, outcome: Outcome) -> Response<Body> {
    let in_flight = {
        let mut in_flight = lock(&shared.in_flight);
        if in_flight
            .as_ref()
            .is_some_and(|current| current.request_id == request_id)
        {
            in_flight.take()
        } else {
            None
        }
    };
    match in_flight {
        Some(current) => {
            // The invoker may have stopped waiting in between; nothing to do then.
            let _ = current.reply.send(outcome);
            respond(StatusCode::ACCEPTED, JSON, r#"{"status":"OK"}"#)
        }
        None => api_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestID",
            "Invalid request ID (unknown, already answered, or timed out)",
        ),
    }
}

fn json_or_text(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

fn not_found(path: &str) -> Response<Body> {
    api_error(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("no Runtime API route {path}"),
    )
}

fn api_error(status: StatusCode, error_type: &str, message: &str) -> Response<Body> {
    let body = json!({"errorType": error_type, "errorMessage": message}).to_string();
    respond(status, JSON, body)
}
