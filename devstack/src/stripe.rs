//! [`StripeStandIn`]: a local stand-in for Stripe's `POST /v1/billing/meter_events`.
//!
//! Stripe has no local server, and its test mode cannot be told to fail on cue, so
//! billing-sync's Stripe adapter is tested against this one. It listens on a free loopback
//! port, checks each request the way Stripe's API reference describes, keeps what it
//! accepted, and stops when its handle is dropped.
//!
//! What it checks, in Stripe's order (facts from Stripe's API reference for "Create a
//! billing meter event" and "Idempotent requests", checked 2026-11):
//! - `POST /v1/billing/meter_events` only (anything else: 404 `invalid_request_error`);
//! - `Authorization: Bearer <key>` equal to the configured key (else 401);
//! - `Idempotency-Key` (at most 255 characters): the same key with the same parameters
//!   replays the first stored answer with `Idempotent-Replayed: true`; the same key with
//!   other parameters is a 400 `idempotency_error`; a request while another with the
//!   same key is running is a 409 `idempotency_key_in_use`. Only accepted events (200)
//!   are stored: Stripe does not store validation failures or concurrency conflicts, so
//!   a corrected retry may succeed;
//! - a form body (`application/x-www-form-urlencoded`), parsed, so field order and
//!   escaping do not matter; only `event_name`, `payload[stripe_customer_id]`,
//!   `payload[value]`, `identifier` and `timestamp` are known. Stricter than Stripe, which
//!   also takes extra `payload[...]` keys and `expand[]`: tollgate sends neither;
//! - `event_name` 1 to 100 characters; `payload[stripe_customer_id]` present;
//!   `payload[value]` a whole number (decimals rejected, as Stripe does; negative values,
//!   which Stripe takes, are rejected too because tollgate never sends one and the
//!   stand-in sums `u64`s); `identifier` at most 100 characters (optional unless
//!   [`StandInConfig::require_identifier`]); `timestamp` within the past 35 days and at
//!   most 5 minutes ahead of the stand-in's clock ([`StripeStandIn::set_now`]);
//! - one call at a time per (customer, event name): Stripe's live-mode limit; a second
//!   concurrent one is a 429 with code `rate_limit`;
//! - an identifier accepted before answers 400 `invalid_request_error` "An event already
//!   exists with identifier …" with `Stripe-Should-Retry: false` and no error code. That
//!   shape is what users report from Stripe (langfuse/langfuse#16292); Stripe's reference
//!   does not document it, nor an error code for it.
//!
//! Faults on cue ([`Fault`]): [`StripeStandIn::fail_next`] answers the next requests with
//! a 429 or a 500, or lets one be accepted and answers 500 anyway (the lost-response case:
//! Stripe stored the event and the idempotent 200, the client saw an error).
//! [`StripeStandIn::fail_identifier`] does the same for requests whose identifier contains
//! a given text, and [`StripeStandIn::set_delay`] slows every request down.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tollgate_devstack::stripe::StandInError> {
//! use tollgate_devstack::stripe::{StandInConfig, StripeStandIn};
//!
//! let stripe = StripeStandIn::start(StandInConfig::new("sk_test_standin")).await?;
//! // Point the Stripe client at stripe.url() with key stripe.api_key(), send, then:
//! assert!(stripe.duplicate_identifiers().is_empty());
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The only path the stand-in serves.
pub const METER_EVENTS_PATH: &str = "/v1/billing/meter_events";
/// Stripe's limit on `event_name` and `identifier`, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Stripe's limit on an `Idempotency-Key`, in characters.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;
/// How far back a `timestamp` may lie: 35 days.
pub const MAX_PAST_SECS: i64 = 35 * 24 * 60 * 60;
/// How far ahead a `timestamp` may lie: 5 minutes (clock drift).
pub const MAX_FUTURE_SECS: i64 = 5 * 60;
/// The largest body the stand-in reads; a meter event is a few hundred bytes.
const MAX_BODY_BYTES: usize = 64 * 1024;

const FIELD_EVENT_NAME: &str = "event_name";
const FIELD_CUSTOMER: &str = "payload[stripe_customer_id]";
const FIELD_VALUE: &str = "payload[value]";
const FIELD_IDENTIFIER: &str = "identifier";
const FIELD_TIMESTAMP: &str = "timestamp";
const KNOWN_FIELDS: [&str; 5] = [
    FIELD_EVENT_NAME,
    FIELD_CUSTOMER,
    FIELD_VALUE,
    FIELD_IDENTIFIER,
    FIELD_TIMESTAMP,
];

/// How to start a [`StripeStandIn`].
#[derive(Clone)]
pub struct StandInConfig {
    /// The secret key requests must carry as `Authorization: Bearer <key>`.
    pub api_key: String,
    /// Reject events without an `identifier` (Stripe would generate one); tollgate always
    /// sends one, so its tests turn this on.
    pub require_identifier: bool,
    /// The stand-in's clock in Unix seconds, for the timestamp window; `None` is the
    /// system clock. Changeable later with [`StripeStandIn::set_now`].
    pub now: Option<i64>,
}

impl StandInConfig {
    /// The given key, identifier optional, system clock.
    pub fn new(api_key: impl Into<String>) -> StandInConfig {
        StandInConfig {
            api_key: api_key.into(),
            require_identifier: false,
            now: None,
        }
    }

    /// Requires an `identifier` on every event.
    pub fn requiring_identifier(mut self) -> StandInConfig {
        self.require_identifier = true;
        self
    }

    /// Fixes the clock at `now` (Unix seconds).
    pub fn at(mut self, now: i64) -> StandInConfig {
        self.now = Some(now);
        self
    }
}

impl std::fmt::Debug for StandInConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandInConfig")
            .field("api_key", &"<redacted>")
            .field("require_identifier", &self.require_identifier)
            .field("now", &self.now)
            .finish()
    }
}

/// Why the stand-in did not start.
#[derive(Debug, thiserror::Error)]
pub enum StandInError {
    /// The loopback listener could not be bound.
    #[error("cannot listen on 127.0.0.1: {0}")]
    Bind(#[source] std::io::Error),
}

/// A scripted failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 429 `rate_limit` before anything is looked at; nothing is stored.
    RateLimited,
    /// 500 `api_error` before anything is looked at; nothing is stored.
    ServerError,
    /// The request is handled normally; if it is accepted, the event and the idempotent
    /// 200 are stored but the client sees a 500 (a response lost on the way back). A
    /// request that is not accepted gets its normal answer.
    ServerErrorAfterAccept,
}

/// An event the stand-in accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedEvent {
    pub event_name: String,
    pub customer: String,
    pub value: u64,
    /// As sent, or generated (`standin_<n>`) when the request had none.
    pub identifier: String,
    /// The event's `timestamp` (Unix seconds), the stand-in's clock when it had none.
    pub timestamp: i64,
    /// The stand-in's clock when it accepted the event (Unix seconds).
    pub received_at: i64,
}

/// One request as the stand-in saw it, with its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// The `Authorization` header, as sent.
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub idempotency_key: Option<String>,
    pub stripe_version: Option<String>,
    /// The body parsed as a form, in the order sent; empty when it was not a form.
    pub form: Vec<(String, String)>,
    /// The status the client got.
    pub status: u16,
    /// Whether the answer was an idempotent replay.
    pub replayed: bool,
}

impl RecordedRequest {
    /// The first value of a form field.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The form as a map (the stand-in rejects repeated fields, so nothing is lost for
    /// accepted requests).
    pub fn form_map(&self) -> BTreeMap<String, String> {
        self.form.iter().cloned().collect()
    }
}

/// A running stand-in; dropping it stops the server.
pub struct StripeStandIn {
    addr: SocketAddr,
    api_key: String,
    state: Arc<Mutex<State>>,
    /// Dropping the sender tells the accept loop and every connection to stop.
    _shutdown: watch::Sender<()>,
}

impl std::fmt::Debug for StripeStandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeStandIn")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl StripeStandIn {
    /// Binds `127.0.0.1:0` and serves on the current tokio runtime until dropped.
    pub async fn start(config: StandInConfig) -> Result<StripeStandIn, StandInError> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .map_err(StandInError::Bind)?;
        let addr = listener.local_addr().map_err(StandInError::Bind)?;
        let state = Arc::new(Mutex::new(State::new(&config)));
        let (shutdown, stopped) = watch::channel(());
        tokio::spawn(serve(listener, Arc::clone(&state), stopped));
        Ok(StripeStandIn {
            addr,
            api_key: config.api_key,
            state,
            _shutdown: shutdown,
        })
    }

    /// The base URL, ending with `/` (async-stripe appends `v1/...`).
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The secret key requests must carry.
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// Sets the clock used for the timestamp window (Unix seconds).
    pub fn set_now(&self, now: i64) {
        self.lock().now = Some(now);
    }

    /// Goes back to the system clock.
    pub fn use_system_clock(&self) {
        self.lock().now = None;
    }

    /// The stand-in's clock (Unix seconds).
    pub fn now(&self) -> i64 {
        self.lock().now()
    }

    /// Answers the next `count` requests with `fault`: those that pass authentication and
    /// the form check and are not answered from the idempotency store (a replay comes
    /// before any fault, as in Stripe's idempotency layer).
    pub fn fail_next(&self, count: usize, fault: Fault) {
        let mut state = self.lock();
        state.next_faults.extend(std::iter::repeat_n(fault, count));
    }

    /// Answers every request whose identifier contains `pattern` with `fault`, until
    /// [`StripeStandIn::clear_faults`].
    pub fn fail_identifier(&self, pattern: impl Into<String>, fault: Fault) {
        self.lock().identifier_faults.push((pattern.into(), fault));
    }

    /// Drops every scripted fault and the delay.
    pub fn clear_faults(&self) {
        let mut state = self.lock();
        state.next_faults.clear();
        state.identifier_faults.clear();
        state.delay = None;
    }

    /// Holds each valid request this long before answering (while it counts as in
    /// flight for its customer and event name).
    pub fn set_delay(&self, delay: Option<Duration>) {
        self.lock().delay = delay;
    }

    /// Every accepted event, in order.
    pub fn accepted(&self) -> Vec<AcceptedEvent> {
        self.lock().accepted.clone()
    }

    /// Every request, in the order answered.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// Accepted values summed per (customer, event name).
    pub fn totals(&self) -> BTreeMap<(String, String), u64> {
        let mut totals = BTreeMap::new();
        for event in &self.lock().accepted {
            let total: &mut u64 = totals
                .entry((event.customer.clone(), event.event_name.clone()))
                .or_default();
            *total = total.saturating_add(event.value);
        }
        totals
    }

    /// Identifiers accepted more than once; empty unless the stand-in is broken, since
    /// it refuses duplicates. Tests assert it stays empty.
    pub fn duplicate_identifiers(&self) -> Vec<String> {
        let mut seen = HashSet::new();
        let mut duplicates = Vec::new();
        for event in &self.lock().accepted {
            if !seen.insert(event.identifier.as_str()) && !duplicates.contains(&event.identifier) {
                duplicates.push(event.identifier.clone());
            }
        }
        duplicates
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

/// A poisoned lock only means a handler panicked; the data is still consistent enough
/// for a test double.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct State {
    api_key: String,
    require_identifier: bool,
    now: Option<i64>,
    accepted: Vec<AcceptedEvent>,
    identifiers: HashSet<String>,
    idempotent: HashMap<String, StoredAnswer>,
    keys_in_flight: HashSet<String>,
    pairs_in_flight: HashSet<(String, String)>,
    next_faults: VecDeque<Fault>,
    identifier_faults: Vec<(String, Fault)>,
    delay: Option<Duration>,
    requests: Vec<RecordedRequest>,
    generated: u64,
}

impl State {
    fn new(config: &StandInConfig) -> State {
        State {
            api_key: config.api_key.clone(),
            require_identifier: config.require_identifier,
            now: config.now,
            accepted: Vec::new(),
            identifiers: HashSet::new(),
            idempotent: HashMap::new(),
            keys_in_flight: HashSet::new(),
            pairs_in_flight: HashSet::new(),
            next_faults: VecDeque::new(),
            identifier_faults: Vec::new(),
            delay: None,
            requests: Vec::new(),
            generated: 0,
        }
    }

    fn now(&self) -> i64 {
        self.now.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                .unwrap_or(0)
        })
    }
}

/// The idempotency layer's memory of one key.
#[derive(Clone)]
struct StoredAnswer {
    /// The parameters, sorted, to compare a reuse against.
    params: Vec<(String, String)>,
    answer: Answer,
}

#[derive(Debug, Clone)]
struct Answer {
    status: StatusCode,
    body: Value,
    should_retry: Option<bool>,
}

impl Answer {
    fn error(status: StatusCode, kind: &str, code: Option<&str>, message: String) -> Answer {
        Answer::error_on(status, kind, code, None, message)
    }

    fn error_on(
        status: StatusCode,
        kind: &str,
        code: Option<&str>,
        param: Option<&str>,
        message: String,
    ) -> Answer {
        let mut error = serde_json::Map::new();
        error.insert("type".to_owned(), Value::from(kind));
        error.insert("message".to_owned(), Value::from(message));
        if let Some(code) = code {
            error.insert("code".to_owned(), Value::from(code));
        }
        if let Some(param) = param {
            error.insert("param".to_owned(), Value::from(param));
        }
        Answer {
            status,
            body: json!({ "error": Value::Object(error) }),
            should_retry: None,
        }
    }

    /// Stripe's `invalid_request_error` with no code or parameter.
    fn invalid_request(status: StatusCode, message: String) -> Answer {
        Answer::error(status, "invalid_request_error", None, message)
    }

    fn invalid(code: Option<&str>, param: &str, message: String) -> Answer {
        Answer::error_on(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            code,
            Some(param),
            message,
        )
    }

    fn rate_limited(message: &str) -> Answer {
        Answer::error(
            StatusCode::TOO_MANY_REQUESTS,
            "invalid_request_error",
            Some("rate_limit"),
            message.to_owned(),
        )
    }

    fn server_error() -> Answer {
        Answer::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            None,
            "An unknown error occurred (stand-in fault).".to_owned(),
        )
    }

    fn retry_hint(mut self, should_retry: bool) -> Answer {
        self.should_retry = Some(should_retry);
        self
    }
}

async fn serve(listener: TcpListener, state: Arc<Mutex<State>>, mut stopped: watch::Receiver<()>) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            _ = stopped.changed() => return,
        };
        let state = Arc::clone(&state);
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(handle(&state, request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                _ = stopped.changed() => {}
            }
        });
    }
}

/// What a request carried, before the form is checked.
struct Received {
    method: Method,
    path: String,
    authorization: Option<String>,
    content_type: Option<String>,
    idempotency_key: Option<String>,
    stripe_version: Option<String>,
    body: Result<Bytes, Answer>,
}

async fn handle(state: &Mutex<State>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let header = |headers: &HeaderMap, name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(_) => Err(Answer::invalid_request(
            StatusCode::PAYLOAD_TOO_LARGE,
            "The request body could not be read or is too large.".to_owned(),
        )),
    };
    let incoming = Received {
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        authorization: header(&parts.headers, AUTHORIZATION.as_str()),
        content_type: header(&parts.headers, CONTENT_TYPE.as_str()),
        idempotency_key: header(&parts.headers, "idempotency-key"),
        stripe_version: header(&parts.headers, "stripe-version"),
        body,
    };
    let form = incoming
        .body
        .as_ref()
        .ok()
        .and_then(|bytes| parse_form(bytes).ok())
        .unwrap_or_default();
    let (answer, replayed) = answer(state, &incoming).await;

    lock(state).requests.push(RecordedRequest {
        method: incoming.method.to_string(),
        path: incoming.path,
        authorization: incoming.authorization,
        content_type: incoming.content_type,
        idempotency_key: incoming.idempotency_key,
        stripe_version: incoming.stripe_version,
        form,
        status: answer.status.as_u16(),
        replayed,
    });
    respond(answer, replayed)
}

fn respond(answer: Answer, replayed: bool) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(answer.body.to_string())));
    *response.status_mut() = answer.status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    if let Some(should_retry) = answer.should_retry {
        let value = if should_retry { "true" } else { "false" };
        headers.insert("stripe-should-retry", HeaderValue::from_static(value));
    }
    response
}

/// Removes a request's claims on its idempotency key and (customer, event name) pair
/// however the handler ends.
struct InFlight<'a> {
    state: &'a Mutex<State>,
    key: Option<String>,
    pair: Option<(String, String)>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut state = lock(self.state);
        if let Some(key) = &self.key {
            state.keys_in_flight.remove(key);
        }
        if let Some(pair) = &self.pair {
            state.pairs_in_flight.remove(pair);
        }
    }
}

/// The answer to a request and whether it is an idempotent replay.
async fn answer(state: &Mutex<State>, incoming: &Received) -> (Answer, bool) {
    if incoming.path != METER_EVENTS_PATH || incoming.method != Method::POST {
        let message = format!(
            "Unrecognized request URL ({}: {}).",
            incoming.method, incoming.path
        );
        let answer = Answer::invalid_request(StatusCode::NOT_FOUND, message);
        return (answer, false);
    }
    let expected = format!("Bearer {}", lock(state).api_key);
    let unauthorized = match incoming.authorization.as_deref() {
        None => Some("You did not provide an API key."),
        Some(sent) if sent != expected => Some("Invalid API Key provided."),
        Some(_) => None,
    };
    if let Some(message) = unauthorized {
        let answer = Answer::invalid_request(StatusCode::UNAUTHORIZED, message.to_owned());
        return (answer, false);
    }
    let body = match &incoming.body {
        Ok(body) => body,
        Err(answer) => return (answer.clone(), false),
    };
    if let Some(key) = &incoming.idempotency_key
        && (key.is_empty() || key.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS)
    {
        let message =
            format!("Idempotency keys must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters long.");
        let answer = Answer::invalid_request(StatusCode::BAD_REQUEST, message);
        return (answer, false);
    }
    let is_form = incoming.content_type.as_deref().is_some_and(|ct| {
        ct.split(';').next().is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    });
    if !is_form {
        let message = "Content-Type must be application/x-www-form-urlencoded.".to_owned();
        let answer = Answer::invalid_request(StatusCode::BAD_REQUEST, message);
        return (answer, false);
    }
    let form = match parse_form(body) {
        Ok(form) => form,
        Err(message) => {
            let answer = Answer::invalid_request(StatusCode::BAD_REQUEST, message);
            return (answer, false);
        }
    };
    let mut params = form.clone();
    params.sort();

    let mut in_flight = InFlight {
        state,
        key: None,
        pair: None,
    };
    let after_accept = {
        let mut guard = lock(state);
        if let Some(key) = &incoming.idempotency_key {
            if let Some(stored) = guard.idempotent.get(key) {
                if stored.params == params {
                    return (stored.answer.clone(), true);
                }
                let message = format!(
                    "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request."
                );
                let answer =
                    Answer::error(StatusCode::BAD_REQUEST, "idempotency_error", None, message);
                return (answer, false);
            }
            if !guard.keys_in_flight.insert(key.clone()) {
                let message = "There is currently another in-progress request using this Idempotent Key (that probably means you submitted twice, and the other request is still going through): retry later.".to_owned();
                let answer = Answer::error(
                    StatusCode::CONFLICT,
                    "idempotency_error",
                    Some("idempotency_key_in_use"),
                    message,
                );
                return (answer, false);
            }
            in_flight.key = Some(key.clone());
        }
        let identifier = form
            .iter()
            .find(|(name, _)| name == FIELD_IDENTIFIER)
            .map(|(_, value)| value.as_str());
        let scripted = guard.next_faults.pop_front().or_else(|| {
            identifier.and_then(|identifier| {
                guard
                    .identifier_faults
                    .iter()
                    .find(|(pattern, _)| identifier.contains(pattern.as_str()))
                    .map(|(_, fault)| *fault)
            })
        });
        match scripted {
            Some(Fault::RateLimited) => {
                let answer = Answer::rate_limited(
                    "Request rate limit exceeded (stand-in fault); retry with exponential backoff.",
                );
                return (answer.retry_hint(true), false);
            }
            Some(Fault::ServerError) => return (Answer::server_error(), false),
            Some(Fault::ServerErrorAfterAccept) => true,
            None => false,
        }
    };

    let now = lock(state).now();
    let require_identifier = lock(state).require_identifier;
    let event = match validate(&form, now, require_identifier) {
        Ok(event) => event,
        Err(answer) => return (answer, false),
    };

    {
        let mut guard = lock(state);
        let pair = (event.customer.clone(), event.event_name.clone());
        if !guard.pairs_in_flight.insert(pair.clone()) {
            let answer = Answer::rate_limited(
                "Only one concurrent meter event call is allowed per customer and meter; retry later.",
            );
            return (answer.retry_hint(true), false);
        }
        in_flight.pair = Some(pair);
    }
    let delay = lock(state).delay;
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }

    let mut guard = lock(state);
    if let Some(identifier) = &event.identifier
        && guard.identifiers.contains(identifier)
    {
        let message = format!("An event already exists with identifier {identifier}.");
        let answer = Answer::invalid_request(StatusCode::BAD_REQUEST, message);
        return (answer.retry_hint(false), false);
    }
    let identifier = match &event.identifier {
        Some(identifier) => identifier.clone(),
        None => {
            guard.generated += 1;
            format!("standin_{}", guard.generated)
        }
    };
    let received_at = guard.now();
    let accepted = AcceptedEvent {
        event_name: event.event_name.clone(),
        customer: event.customer.clone(),
        value: event.value,
        identifier: identifier.clone(),
        timestamp: event.timestamp.unwrap_or(received_at),
        received_at,
    };
    let answer = Answer {
        status: StatusCode::OK,
        body: json!({
            "object": "billing.meter_event",
            "created": received_at,
            "event_name": accepted.event_name,
            "identifier": accepted.identifier,
            "livemode": false,
            "payload": {
                "stripe_customer_id": accepted.customer,
                "value": event.value_text,
            },
            "timestamp": accepted.timestamp,
        }),
        should_retry: None,
    };
    guard.identifiers.insert(identifier);
    guard.accepted.push(accepted);
    if let Some(key) = &incoming.idempotency_key {
        guard.idempotent.insert(
            key.clone(),
            StoredAnswer {
                params,
                answer: answer.clone(),
            },
        );
    }
    drop(guard);
    drop(in_flight);
    if after_accept {
        (Answer::server_error(), false)
    } else {
        (answer, false)
    }
}

/// A request's fields after validation.
struct ValidEvent {
    event_name: String,
    customer: String,
    value: u64,
    value_text: String,
    identifier: Option<String>,
    timestamp: Option<i64>,
}

fn validate(
    form: &[(String, String)],
    now: i64,
    require_identifier: bool,
) -> Result<ValidEvent, Answer> {
    let mut fields: HashMap<&str, &str> = HashMap::new();
    for (name, value) in form {
        if !KNOWN_FIELDS.contains(&name.as_str()) {
            return Err(Answer::invalid(
                Some("parameter_unknown"),
                name,
                format!("Received unknown parameter: {name}"),
            ));
        }
        if fields.insert(name.as_str(), value.as_str()).is_some() {
            return Err(Answer::invalid(
                None,
                name,
                format!("Received parameter {name} more than once."),
            ));
        }
    }
    let required = |name: &str| {
        fields.get(name).copied().ok_or_else(|| {
            Answer::invalid(
                Some("parameter_missing"),
                name,
                format!("Missing required param: {name}."),
            )
        })
    };
    let event_name = required(FIELD_EVENT_NAME)?;
    check_length(FIELD_EVENT_NAME, event_name)?;
    let customer = required(FIELD_CUSTOMER)?;
    if customer.is_empty() {
        return Err(empty(FIELD_CUSTOMER));
    }
    let value_text = required(FIELD_VALUE)?;
    let value = parse_whole(value_text).ok_or_else(|| {
        Answer::invalid(
            Some("parameter_invalid_integer"),
            FIELD_VALUE,
            format!("Invalid integer: {value_text}; payload[value] must be a whole number."),
        )
    })?;
    let identifier = match fields.get(FIELD_IDENTIFIER) {
        Some(identifier) => {
            check_length(FIELD_IDENTIFIER, identifier)?;
            Some((*identifier).to_owned())
        }
        None if require_identifier => {
            return Err(Answer::invalid(
                Some("parameter_missing"),
                FIELD_IDENTIFIER,
                "Missing required param: identifier (this stand-in requires one).".to_owned(),
            ));
        }
        None => None,
    };
    let timestamp = match fields.get(FIELD_TIMESTAMP) {
        Some(text) => {
            let timestamp: i64 = text.parse().map_err(|_| {
                Answer::invalid(
                    Some("parameter_invalid_integer"),
                    FIELD_TIMESTAMP,
                    format!("Invalid timestamp: {text}; must be an integer Unix timestamp."),
                )
            })?;
            if timestamp < now.saturating_sub(MAX_PAST_SECS) {
                return Err(Answer::invalid(
                    None,
                    FIELD_TIMESTAMP,
                    format!(
                        "Timestamp {timestamp} is too far in the past: it must be within the past 35 calendar days."
                    ),
                ));
            }
            if timestamp > now.saturating_add(MAX_FUTURE_SECS) {
                return Err(Answer::invalid(
                    None,
                    FIELD_TIMESTAMP,
                    format!(
                        "Timestamp {timestamp} is too far in the future: it must be at most 5 minutes ahead."
                    ),
                ));
            }
            Some(timestamp)
        }
        None => None,
    };
    Ok(ValidEvent {
        event_name: event_name.to_owned(),
        customer: customer.to_owned(),
        value,
        value_text: value_text.to_owned(),
        identifier,
        timestamp,
    })
}

fn empty(name: &str) -> Answer {
    Answer::invalid(
        Some("parameter_invalid_empty"),
        name,
        format!(
            "You passed an empty string for '{name}'. We assume empty values are an attempt to unset a parameter; however '{name}' cannot be unset. You should remove '{name}' from your request or supply a non-empty value."
        ),
    )
}

fn check_length(name: &str, value: &str) -> Result<(), Answer> {
    if value.is_empty() {
        return Err(empty(name));
    }
    if value.chars().count() > MAX_NAME_CHARS {
        return Err(Answer::invalid(
            None,
            name,
            format!("Invalid string: {name} must be at most {MAX_NAME_CHARS} characters."),
        ));
    }
    Ok(())
}

/// A whole, non-negative number in plain decimal digits.
fn parse_whole(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Parses `application/x-www-form-urlencoded`: `&`-separated `name=value` pairs,
/// percent-escapes and `+` for space, in either part.
fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "The body is not UTF-8.".to_owned())?;
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(name)?, decode(value)?))
        })
        .collect()
}

fn decode(text: &str) -> Result<String, String> {
    let bad = || format!("Invalid percent-encoding in the form body near '{text}'.");
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
                let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 3;
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;

    const KEY: &str = "sk_test_standin";
    const NOW: i64 = 1_790_000_000;

    struct Reply {
        status: u16,
        headers: HeaderMap,
        body: Value,
    }

    fn client() -> Client<HttpConnector, Full<Bytes>> {
        Client::builder(TokioExecutor::new()).build_http()
    }

    async fn start() -> StripeStandIn {
        StripeStandIn::start(StandInConfig::new(KEY).requiring_identifier().at(NOW))
            .await
            .unwrap()
    }

    async fn send(
        stripe: &StripeStandIn,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let mut request =
            Request::builder()
                .method(method)
                .uri(format!("http://{}{}", stripe.addr(), path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let response = client().request(request).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap(),
        }
    }

    async fn post(stripe: &StripeStandIn, key: Option<&str>, body: &str) -> Reply {
        let auth = format!("Bearer {KEY}");
        let mut headers = vec![
            ("authorization", auth.as_str()),
            ("content-type", "application/x-www-form-urlencoded"),
        ];
        if let Some(key) = key {
            headers.push(("idempotency-key", key));
        }
        send(stripe, Method::POST, METER_EVENTS_PATH, &headers, body).await
    }

    fn event(identifier: &str, value: &str) -> String {
        format!(
            "event_name=api_calls&payload%5Bstripe_customer_id%5D=cus_A&payload%5Bvalue%5D={value}&identifier={identifier}&timestamp={NOW}"
        )
    }

    fn error_of(reply: &Reply) -> (&str, Option<&str>) {
        let error = &reply.body["error"];
        (error["type"].as_str().unwrap(), error["code"].as_str())
    }

    #[tokio::test]
    async fn a_valid_event_is_accepted_stored_and_answered_as_a_meter_event_object() {
        let stripe = start().await;
        let reply = post(&stripe, None, &event("id-1", "25")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.body,
            json!({
                "object": "billing.meter_event",
                "created": NOW,
                "event_name": "api_calls",
                "identifier": "id-1",
                "livemode": false,
                "payload": {"stripe_customer_id": "cus_A", "value": "25"},
                "timestamp": NOW,
            })
        );
        assert_eq!(
            stripe.accepted(),
            vec![AcceptedEvent {
                event_name: "api_calls".to_owned(),
                customer: "cus_A".to_owned(),
                value: 25,
                identifier: "id-1".to_owned(),
                timestamp: NOW,
                received_at: NOW,
            }]
        );
        let requests = stripe.requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].status, 200);
        assert_eq!(requests[0].field(FIELD_CUSTOMER), Some("cus_A"));
        assert_eq!(
            requests[0].authorization.as_deref(),
            Some("Bearer sk_test_standin")
        );
    }

    #[tokio::test]
    async fn fields_may_come_in_any_order_with_unescaped_brackets() {
        let stripe = start().await;
        let body = format!(
            "timestamp={NOW}&payload[value]=3&identifier=id-2&payload[stripe_customer_id]=cus_B&event_name=api+calls"
        );
        let reply = post(&stripe, None, &body).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(stripe.accepted()[0].event_name, "api calls");
        assert_eq!(stripe.accepted()[0].customer, "cus_B");
    }

    #[tokio::test]
    async fn a_wrong_or_missing_key_is_a_401_in_stripes_error_shape() {
        let stripe = start().await;
        let form = ("content-type", "application/x-www-form-urlencoded");
        for headers in [
            vec![form],
            vec![form, ("authorization", "Bearer sk_test_other")],
            vec![form, ("authorization", KEY)],
        ] {
            let reply = send(
                &stripe,
                Method::POST,
                METER_EVENTS_PATH,
                &headers,
                &event("id", "1"),
            )
            .await;
            assert_eq!(reply.status, 401);
            assert_eq!(error_of(&reply).0, "invalid_request_error");
            assert!(reply.body["error"]["message"].is_string());
        }
        assert!(stripe.accepted().is_empty());
    }

    #[tokio::test]
    async fn other_paths_and_methods_are_404() {
        let stripe = start().await;
        let auth = format!("Bearer {KEY}");
        let headers = [("authorization", auth.as_str())];
        let get = send(&stripe, Method::GET, METER_EVENTS_PATH, &headers, "").await;
        let other = send(
            &stripe,
            Method::POST,
            "/v1/billing/meter_events/x",
            &headers,
            "",
        )
        .await;
        assert_eq!((get.status, other.status), (404, 404));
    }

    #[tokio::test]
    async fn a_body_that_is_not_a_form_is_rejected() {
        let stripe = start().await;
        let auth = format!("Bearer {KEY}");
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        let reply = send(&stripe, Method::POST, METER_EVENTS_PATH, &headers, "{}").await;
        assert_eq!(reply.status, 400);
        assert!(stripe.accepted().is_empty());
    }

    #[tokio::test]
    async fn invalid_fields_are_400_with_stripes_codes() {
        let stripe = start().await;
        let long = "x".repeat(101);
        let cases: Vec<(String, Option<&str>, &str)> = vec![
            (
                format!(
                    "payload[stripe_customer_id]=cus_A&payload[value]=1&identifier=a&timestamp={NOW}"
                ),
                Some("parameter_missing"),
                "event_name",
            ),
            (
                format!(
                    "event_name=&payload[stripe_customer_id]=cus_A&payload[value]=1&identifier=a&timestamp={NOW}"
                ),
                Some("parameter_invalid_empty"),
                "event_name",
            ),
            (
                format!(
                    "event_name={long}&payload[stripe_customer_id]=cus_A&payload[value]=1&identifier=a&timestamp={NOW}"
                ),
                None,
                "event_name",
            ),
            (
                format!("event_name=e&payload[value]=1&identifier=a&timestamp={NOW}"),
                Some("parameter_missing"),
                "payload[stripe_customer_id]",
            ),
            (
                event("a", "1.5"),
                Some("parameter_invalid_integer"),
                "payload[value]",
            ),
            (
                event("a", "-1"),
                Some("parameter_invalid_integer"),
                "payload[value]",
            ),
            (
                event("a", ""),
                Some("parameter_invalid_integer"),
                "payload[value]",
            ),
            (event(&long, "1"), None, "identifier"),
            (
                format!(
                    "event_name=e&payload[stripe_customer_id]=cus_A&payload[value]=1&timestamp={NOW}"
                ),
                Some("parameter_missing"),
                "identifier",
            ),
            (
                format!("{}&extra=1", event("a", "1")),
                Some("parameter_unknown"),
                "extra",
            ),
            (
                format!("{}&payload[region]=eu", event("a", "1")),
                Some("parameter_unknown"),
                "payload[region]",
            ),
            (
                format!("{}&payload[value]=2", event("a", "1")),
                None,
                "payload[value]",
            ),
        ];
        for (body, code, param) in cases {
            let reply = post(&stripe, None, &body).await;
            assert_eq!(reply.status, 400, "{body}");
            assert_eq!(error_of(&reply), ("invalid_request_error", code), "{body}");
            assert_eq!(reply.body["error"]["param"], param, "{body}");
        }
        assert!(stripe.accepted().is_empty());
    }

    #[tokio::test]
    async fn the_timestamp_must_lie_within_35_days_back_and_5_minutes_ahead() {
        let stripe = start().await;
        let at = |timestamp: i64, id: &str| {
            format!(
                "event_name=e&payload[stripe_customer_id]=cus_A&payload[value]=1&identifier={id}&timestamp={timestamp}"
            )
        };
        let cases = [
            (NOW - MAX_PAST_SECS, 200),
            (NOW - MAX_PAST_SECS - 1, 400),
            (NOW + MAX_FUTURE_SECS, 200),
            (NOW + MAX_FUTURE_SECS + 1, 400),
        ];
        for (n, (timestamp, status)) in cases.into_iter().enumerate() {
            let reply = post(&stripe, None, &at(timestamp, &format!("t{n}"))).await;
            assert_eq!(reply.status, status, "{timestamp}");
        }
        stripe.set_now(NOW + 10 * 60);
        let reply = post(&stripe, None, &at(NOW + MAX_FUTURE_SECS + 1, "moved")).await;
        assert_eq!(reply.status, 200);
        let reply = post(
            &stripe,
            None,
            &at(NOW, "t").replace("timestamp=", "timestamp=x"),
        )
        .await;
        assert_eq!(reply.status, 400);
    }

    #[tokio::test]
    async fn a_duplicate_identifier_is_refused_and_not_accepted_twice() {
        let stripe = start().await;
        assert_eq!(post(&stripe, None, &event("dup", "5")).await.status, 200);
        let reply = post(&stripe, None, &event("dup", "5")).await;
        assert_eq!(reply.status, 400);
        assert_eq!(error_of(&reply), ("invalid_request_error", None));
        assert_eq!(reply.headers.get("stripe-should-retry").unwrap(), "false");
        assert_eq!(stripe.accepted().len(), 1);
        assert!(stripe.duplicate_identifiers().is_empty());
        assert_eq!(
            stripe.totals(),
            BTreeMap::from([(("cus_A".to_owned(), "api_calls".to_owned()), 5)])
        );
    }

    #[tokio::test]
    async fn an_idempotency_key_replays_the_first_answer_for_the_same_parameters() {
        let stripe = start().await;
        let first = post(&stripe, Some("key-1"), &event("idem", "7")).await;
        let second = post(&stripe, Some("key-1"), &event("idem", "7")).await;
        assert_eq!((first.status, second.status), (200, 200));
        assert_eq!(first.body, second.body);
        assert!(first.headers.get("idempotent-replayed").is_none());
        assert_eq!(second.headers.get("idempotent-replayed").unwrap(), "true");
        assert_eq!(stripe.accepted().len(), 1);
        assert!(stripe.requests()[1].replayed);
    }

    #[tokio::test]
    async fn an_idempotency_key_with_other_parameters_is_an_idempotency_error() {
        let stripe = start().await;
        assert_eq!(
            post(&stripe, Some("key-2"), &event("a", "7")).await.status,
            200
        );
        let reply = post(&stripe, Some("key-2"), &event("a", "8")).await;
        assert_eq!(reply.status, 400);
        assert_eq!(error_of(&reply).0, "idempotency_error");
        assert_eq!(stripe.totals().values().sum::<u64>(), 7);
    }

    #[tokio::test]
    async fn an_idempotency_key_longer_than_255_characters_is_rejected() {
        let stripe = start().await;
        let key = "k".repeat(256);
        let reply = post(&stripe, Some(&key), &event("a", "1")).await;
        assert_eq!(reply.status, 400);
        assert!(stripe.accepted().is_empty());
    }

    #[tokio::test]
    async fn a_validation_failure_is_not_stored_under_the_idempotency_key() {
        let stripe = start().await;
        let bad = post(&stripe, Some("key-3"), &event("a", "1.5")).await;
        assert_eq!(bad.status, 400);
        let fixed = post(&stripe, Some("key-3"), &event("a", "2")).await;
        assert_eq!(fixed.status, 200);
        assert!(fixed.headers.get("idempotent-replayed").is_none());
    }

    #[tokio::test]
    async fn a_concurrent_call_for_the_same_customer_and_meter_is_a_429() {
        let stripe = start().await;
        stripe.set_delay(Some(Duration::from_millis(300)));
        let (first_body, second_body) = (event("c1", "1"), event("c2", "1"));
        let (first, second) = tokio::join!(post(&stripe, None, &first_body), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            post(&stripe, None, &second_body).await
        });
        assert_eq!(first.status, 200);
        assert_eq!(second.status, 429);
        assert_eq!(error_of(&second).1, Some("rate_limit"));
        let other_customer = event("c3", "1").replace("cus_A", "cus_B");
        stripe.set_delay(None);
        assert_eq!(post(&stripe, None, &other_customer).await.status, 200);
        assert_eq!(post(&stripe, None, &event("c2", "1")).await.status, 200);
    }

    #[tokio::test]
    async fn scripted_faults_answer_the_next_requests_then_stop() {
        let stripe = start().await;
        stripe.fail_next(2, Fault::RateLimited);
        stripe.fail_next(1, Fault::ServerError);
        let statuses = [
            post(&stripe, None, &event("f", "1")).await.status,
            post(&stripe, None, &event("f", "1")).await.status,
            post(&stripe, None, &event("f", "1")).await.status,
            post(&stripe, None, &event("f", "1")).await.status,
        ];
        assert_eq!(statuses, [429, 429, 500, 200]);
        assert_eq!(stripe.accepted().len(), 1);
    }

    #[tokio::test]
    async fn a_500_after_accept_stores_the_event_and_a_retry_with_the_key_replays_200() {
        let stripe = start().await;
        stripe.fail_next(1, Fault::ServerErrorAfterAccept);
        let lost = post(&stripe, Some("lost"), &event("lost", "4")).await;
        assert_eq!(lost.status, 500);
        assert_eq!(error_of(&lost).0, "api_error");
        assert_eq!(stripe.accepted().len(), 1);
        let retry = post(&stripe, Some("lost"), &event("lost", "4")).await;
        assert_eq!(retry.status, 200);
        assert_eq!(retry.headers.get("idempotent-replayed").unwrap(), "true");
        let without_key = post(&stripe, None, &event("lost", "4")).await;
        assert_eq!(without_key.status, 400);
        assert_eq!(stripe.accepted().len(), 1);
    }

    #[tokio::test]
    async fn requests_whose_identifier_matches_fail_until_cleared() {
        let stripe = start().await;
        stripe.fail_identifier("poison", Fault::ServerError);
        assert_eq!(
            post(&stripe, None, &event("x-poison-1", "1")).await.status,
            500
        );
        assert_eq!(
            post(&stripe, None, &event("x-poison-1", "1")).await.status,
            500
        );
        assert_eq!(post(&stripe, None, &event("fine", "1")).await.status, 200);
        stripe.clear_faults();
        assert_eq!(
            post(&stripe, None, &event("x-poison-1", "1")).await.status,
            200
        );
    }

    #[tokio::test]
    async fn the_server_stops_when_dropped() {
        let stripe = start().await;
        let addr = stripe.addr();
        drop(stripe);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[test]
    fn the_config_debug_output_hides_the_key() {
        let shown = format!("{:?}", StandInConfig::new("sk_test_secret"));
        assert!(!shown.contains("sk_test_secret"));
    }

    #[test]
    fn the_form_parser_decodes_escapes_and_plus() {
        assert_eq!(
            parse_form(b"a%5Bb%5D=c+d&e=%C3%A9&f").unwrap(),
            vec![
                ("a[b]".to_owned(), "c d".to_owned()),
                ("e".to_owned(), "é".to_owned()),
                ("f".to_owned(), String::new()),
            ]
        );
        assert!(parse_form(b"a=%zz").is_err());
        assert!(parse_form(b"a=%4").is_err());
    }
}
