//! A webhook receiver on loopback that verifies every delivery's `Tollgate-Signature`
//! with `tollgate_core::webhook::verify`, as a tenant's endpoint would, and records it.
//!
//! Tests and the local demo point a tenant's webhook at it. It answers 2xx by default,
//! 401 to a signature that does not verify, and scripted statuses or delays on cue, so a
//! test can drive the sender's retries. It listens on `127.0.0.1:<free port>` and stops
//! when dropped.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tollgate_core::webhook::{
    DEFAULT_TOLERANCE, SIGNATURE_HEADER, SignatureError, WEBHOOK_ID_HEADER, WebhookSecret, verify,
};

/// One delivery as the receiver saw it.
#[derive(Debug, Clone)]
pub struct ReceivedWebhook {
    pub path: String,
    pub content_type: Option<String>,
    pub user_agent: Option<String>,
    pub webhook_id: Option<String>,
    pub body: Bytes,
    /// The signature check, against the receiver's clock.
    pub verified: Result<(), SignatureError>,
    /// The status the receiver answered.
    pub status: StatusCode,
}

#[derive(Debug)]
struct Script {
    secret: WebhookSecret,
    /// The status of every answer not scripted otherwise.
    status: StatusCode,
    /// Statuses for the next deliveries, in order.
    next: VecDeque<StatusCode>,
    delay: Duration,
    /// The clock signatures are checked against; the system clock when `None`.
    now: Option<DateTime<Utc>>,
    received: Vec<ReceivedWebhook>,
}

/// A verifying webhook receiver; stops when dropped.
#[derive(Debug)]
pub struct WebhookReceiver {
    addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    accept_loop: JoinHandle<()>,
}

impl WebhookReceiver {
    /// Starts a receiver that verifies with `secret` and answers 204.
    pub async fn start(secret: WebhookSecret) -> std::io::Result<WebhookReceiver> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let script = Arc::new(Mutex::new(Script {
            secret,
            status: StatusCode::NO_CONTENT,
            next: VecDeque::new(),
            delay: Duration::ZERO,
            now: None,
            received: Vec::new(),
        }));
        let accept_loop = tokio::spawn(accept_loop(listener, script.clone()));
        Ok(WebhookReceiver {
            addr,
            script,
            accept_loop,
        })
    }

    /// `http://127.0.0.1:<port>{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Verifies with another secret from now on (the tenant's secret, once known).
    pub fn set_secret(&self, secret: WebhookSecret) {
        self.lock().secret = secret;
    }

    /// Answers `status` to every delivery not scripted otherwise.
    pub fn answer_with(&self, status: StatusCode) {
        self.lock().status = status;
    }

    /// Answers `status` to the next `count` deliveries.
    pub fn fail_next(&self, count: usize, status: StatusCode) {
        self.lock().next.extend(std::iter::repeat_n(status, count));
    }

    /// Waits this long before answering.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// Checks signatures as of `now` (a test's simulated clock); `None` for the system
    /// clock.
    pub fn set_now(&self, now: Option<DateTime<Utc>>) {
        self.lock().now = now;
    }

    /// Every delivery so far, in arrival order.
    pub fn received(&self) -> Vec<ReceivedWebhook> {
        self.lock().received.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Script> {
        self.script
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

async fn accept_loop(listener: TcpListener, script: Arc<Mutex<Script>>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            Ok((stream, _)) = listener.accept() => {
                let script = script.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request| receive(request, script.clone()));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn receive(
    request: Request<Incoming>,
    script: Arc<Mutex<Script>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let path = request.uri().path().to_owned();
    let content_type = header("content-type");
    let user_agent = header("user-agent");
    let webhook_id = header(WEBHOOK_ID_HEADER);
    let signature = header(SIGNATURE_HEADER).unwrap_or_default();
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let (status, delay) = {
        let mut script = script
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = script.now.unwrap_or_else(Utc::now);
        let verified = verify(&script.secret, &signature, &body, now, DEFAULT_TOLERANCE);
        let status = match (&verified, script.next.pop_front()) {
            (Err(_), _) => StatusCode::UNAUTHORIZED,
            (Ok(()), Some(status)) => status,
            (Ok(()), None) => script.status,
        };
        script.received.push(ReceivedWebhook {
            path,
            content_type,
            user_agent,
            webhook_id,
            body,
            verified,
            status,
        });
        (status, script.delay)
    };
    tokio::time::sleep(delay).await;
    let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
    *response.status_mut() = status;
    if status.is_redirection() {
        response.headers_mut().insert(
            hyper::header::LOCATION,
            hyper::header::HeaderValue::from_static("/redirected"),
        );
    }
    Ok(response)
}
