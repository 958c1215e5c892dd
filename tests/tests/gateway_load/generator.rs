//! The bounded load generator: `clients` keep-alive HTTP/1 connections per tenant, each
//! paced at its share of the tenant's rate, every request bounded by [`CLIENT_TIMEOUT`],
//! the whole run bounded by a deadline and a request budget. Every answer is classified
//! and checked against the filter's documented replies as it arrives.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// The most one request may take, connect included: the gateway's own limits are 15 s
/// upstream and 30 s for the filter, so anything near this is a fault.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// One tenant's share of the load.
#[derive(Debug, Clone)]
pub struct TenantLoad {
    pub key: String,
    /// Requests per second offered, spread evenly over the tenant's clients.
    pub per_second: f64,
    pub clients: usize,
}

/// How a request ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 200 from the upstream, through the filter.
    Allowed,
    /// 429 `rate_limited`.
    RateLimited,
    /// 429 `quota_exceeded`.
    QuotaExceeded,
    /// 402 `budget_exceeded`.
    Blocked,
    /// Anything else: a connection error, a timeout, another status, a reply without its
    /// documented headers. The text says which.
    Error(String),
}

/// One request: who sent it, when (since the run started), and what came back.
#[derive(Debug, Clone)]
pub struct Sample {
    pub tenant: usize,
    pub sent: Duration,
    pub answered: Duration,
    pub outcome: Outcome,
    /// `RateLimit-Policy`'s `(q, w)`: the limit the filter decided under, when it says.
    pub policy: Option<(u64, u64)>,
}

/// Allowed requests per tenant so far, readable while the load runs (the quota changes
/// are set relative to what a tenant has used).
#[derive(Debug)]
pub struct Tally {
    allowed: Vec<AtomicU64>,
}

impl Tally {
    pub fn new(tenants: usize) -> Arc<Tally> {
        Arc::new(Tally {
            allowed: (0..tenants).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    pub fn allowed(&self, tenant: usize) -> u64 {
        self.allowed
            .get(tenant)
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }
}

/// The upstream's body: a 200 that does not carry it did not come from the upstream.
pub const UPSTREAM_BODY: &str = r#"{"ok":true,"source":"load upstream"}"#;

/// Runs every tenant's clients until `deadline` or until each has sent its share of
/// `max_requests`; returns every sample, in no particular order.
pub async fn run(
    gateway: SocketAddr,
    loads: &[TenantLoad],
    start: Instant,
    deadline: Instant,
    max_requests: u64,
    tally: Arc<Tally>,
) -> Vec<Sample> {
    let offered: f64 = loads.iter().map(|l| l.per_second).sum();
    let mut tasks = tokio::task::JoinSet::new();
    for (tenant, load) in loads.iter().enumerate() {
        let clients = load.clients.max(1);
        let rate = load.per_second / clients as f64;
        // Each client's share of the request budget, in proportion to its rate.
        let budget = ((max_requests as f64) * rate / offered).ceil() as u64;
        for _ in 0..clients {
            let client = Client {
                tenant,
                key: load.key.clone(),
                gateway,
                interval: Duration::from_secs_f64(1.0 / rate),
                start,
                deadline,
                budget,
                tally: Arc::clone(&tally),
            };
            tasks.spawn(client.run());
        }
    }
    let mut samples = Vec::new();
    while let Some(done) = tasks.join_next().await {
        samples.extend(done.expect("a load client panicked"));
    }
    samples
}

struct Client {
    tenant: usize,
    key: String,
    gateway: SocketAddr,
    interval: Duration,
    start: Instant,
    deadline: Instant,
    budget: u64,
    tally: Arc<Tally>,
}

impl Client {
    async fn run(self) -> Vec<Sample> {
        let mut samples = Vec::new();
        let mut connection: Option<SendRequest<Empty<Bytes>>> = None;
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for i in 0..self.budget {
            tick.tick().await;
            if Instant::now() >= self.deadline {
                break;
            }
            let sent = self.start.elapsed();
            let (outcome, policy) = match tokio::time::timeout(
                CLIENT_TIMEOUT,
                self.request(&mut connection, i),
            )
            .await
            {
                Ok(Ok((status, headers, body))) => classify(status, &headers, &body),
                Ok(Err(error)) => {
                    connection = None;
                    (Outcome::Error(error), None)
                }
                Err(_) => {
                    connection = None;
                    (
                        Outcome::Error(format!("no answer in {}s", CLIENT_TIMEOUT.as_secs_f64())),
                        None,
                    )
                }
            };
            if outcome == Outcome::Allowed
                && let Some(n) = self.tally.allowed.get(self.tenant)
            {
                n.fetch_add(1, Ordering::Relaxed);
            }
            samples.push(Sample {
                tenant: self.tenant,
                sent,
                answered: self.start.elapsed(),
                outcome,
                policy,
            });
        }
        samples
    }

    /// One GET on the kept-alive connection (opened first if there is none).
    async fn request(
        &self,
        connection: &mut Option<SendRequest<Empty<Bytes>>>,
        i: u64,
    ) -> Result<(u16, hyper::HeaderMap, Bytes), String> {
        if connection.as_ref().is_none_or(SendRequest::is_closed) {
            let stream = tokio::net::TcpStream::connect(self.gateway)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let _ = stream.set_nodelay(true);
            let (sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(async move {
                let _ = driver.await;
            });
            *connection = Some(sender);
        }
        let sender = connection
            .as_mut()
            .ok_or_else(|| "no connection".to_owned())?;
        sender
            .ready()
            .await
            .map_err(|e| format!("connection not ready: {e}"))?;
        let request = hyper::Request::get(format!("/v1/items/{}", i % 7))
            .header(hyper::header::HOST, self.gateway.to_string())
            .header("x-api-key", &self.key)
            .body(Empty::new())
            .map_err(|e| format!("request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let status = response.status().as_u16();
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok((status, parts.headers, body))
    }
}

fn header<'a>(headers: &'a hyper::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `"default";q=L;w=W` as `(L, W)`.
fn policy(headers: &hyper::HeaderMap) -> Option<(u64, u64)> {
    let text = header(headers, "ratelimit-policy")?;
    let mut q = None;
    let mut w = None;
    for part in text.split(';') {
        if let Some(v) = part.strip_prefix("q=") {
            q = v.parse().ok();
        } else if let Some(v) = part.strip_prefix("w=") {
            w = v.parse().ok();
        }
    }
    Some((q?, w?))
}

/// The outcome of an answer, checked against the filter's documented replies
/// (`edge-filter/src/headers.rs`): a 429 carries `Content-Type: application/json`, the
/// five rate-limit headers and `Retry-After` (equal to the body's `retryAfterSeconds`),
/// and its code; a 402 carries JSON with `budget_exceeded`; a 200 is the upstream's body.
pub fn classify(
    status: u16,
    headers: &hyper::HeaderMap,
    body: &[u8],
) -> (Outcome, Option<(u64, u64)>) {
    let policy = policy(headers);
    let json = || serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
    let outcome = match status {
        200 if body == UPSTREAM_BODY.as_bytes() => Outcome::Allowed,
        200 => Outcome::Error(format!(
            "200 with a body that is not the upstream's: {}",
            String::from_utf8_lossy(body)
        )),
        429 => {
            let reply = json();
            let missing: Vec<&str> = [
                "ratelimit-policy",
                "ratelimit",
                "x-ratelimit-limit",
                "x-ratelimit-remaining",
                "x-ratelimit-reset",
                "retry-after",
            ]
            .into_iter()
            .filter(|name| header(headers, name).is_none())
            .collect();
            let retry_after = header(headers, "retry-after").and_then(|v| v.parse::<u64>().ok());
            if !missing.is_empty() {
                Outcome::Error(format!("429 without {}", missing.join(", ")))
            } else if header(headers, "content-type") != Some("application/json") {
                Outcome::Error("429 that is not JSON".to_owned())
            } else if reply["retryAfterSeconds"].as_u64() != retry_after {
                Outcome::Error(format!(
                    "429 whose body says retry after {} but Retry-After is {retry_after:?}",
                    reply["retryAfterSeconds"]
                ))
            } else if policy.map(|(q, _)| q.to_string()).as_deref()
                != header(headers, "x-ratelimit-limit")
            {
                Outcome::Error("429 whose X-RateLimit-Limit is not its policy's q".to_owned())
            } else {
                match reply["code"].as_str() {
                    Some("rate_limited") => Outcome::RateLimited,
                    Some("quota_exceeded") => Outcome::QuotaExceeded,
                    other => Outcome::Error(format!("429 with code {other:?}")),
                }
            }
        }
        402 => {
            let reply = json();
            if header(headers, "content-type") == Some("application/json")
                && reply["code"] == "budget_exceeded"
            {
                Outcome::Blocked
            } else {
                Outcome::Error(format!("402 that is not budget_exceeded JSON: {reply}"))
            }
        }
        other => Outcome::Error(format!(
            "HTTP {other}: {}",
            String::from_utf8_lossy(body.get(..body.len().min(200)).unwrap_or_default())
        )),
    };
    (outcome, policy)
}
