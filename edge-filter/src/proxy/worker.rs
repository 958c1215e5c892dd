//! The HTTP filter role: one VM per Envoy worker thread.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel, MapType, Status};
use rust_decimal::Decimal;
use tollgate_core::ids::TenantId;

use super::host::{self, Metrics};
use super::{SNAPSHOT_GENERATION_KEY, SNAPSHOT_KEY, USAGE_QUEUE};
use crate::admission::{self, AdmissionRequest};
use crate::config::{FilterConfig, TenantSource, UnknownTenant};
use crate::decision::Verdict;
use crate::headers::{LocalReply, Refusal, refusal_reply};
use crate::quota::StalePolicy;
use crate::snapshot::SnapshotView;
use crate::usage::{RequestUsage, UsageBuffer};

/// How often a worker hands its rows to the singleton and looks for a new snapshot.
const TICK: Duration = Duration::from_secs(1);
/// Read-decide-write rounds before a request is refused as contended. Each round some
/// worker's write wins, so this is reached only under extreme contention on one tenant.
const MAX_CAS_ROUNDS: usize = 64;

/// The filter's root context of one worker VM.
pub struct WorkerRoot {
    state: Rc<RefCell<WorkerState>>,
}

struct WorkerState {
    config: Rc<FilterConfig>,
    metrics: Metrics,
    snapshot: Option<Rc<SnapshotView>>,
    snapshot_generation: Option<Vec<u8>>,
    usage: UsageBuffer,
    dropped_reported: u64,
    vm_id: String,
    queue: Option<u32>,
}

impl WorkerRoot {
    pub fn start(config: FilterConfig) -> WorkerRoot {
        let _ = hostcalls::set_tick_period(TICK);
        let mut state = WorkerState {
            usage: UsageBuffer::new(config.max_buffer_rows),
            config: Rc::new(config),
            metrics: Metrics::define(),
            snapshot: None,
            snapshot_generation: None,
            dropped_reported: 0,
            vm_id: host::property_string(&["plugin_vm_id"]).unwrap_or_default(),
            queue: None,
        };
        state.refresh_snapshot();
        WorkerRoot {
            state: Rc::new(RefCell::new(state)),
        }
    }

    pub fn on_tick(&mut self) {
        let mut state = self.state.borrow_mut();
        state.refresh_snapshot();
        state.hand_over_usage();
    }

    pub fn new_request(&self) -> Request {
        Request {
            state: Rc::clone(&self.state),
            admitted: None,
            status: 0,
            response_bytes: 0,
        }
    }
}

impl WorkerState {
    /// Takes the singleton's latest snapshot if its generation changed.
    fn refresh_snapshot(&mut self) {
        let (generation, _) = host::shared_data(SNAPSHOT_GENERATION_KEY);
        if generation.is_none() || generation == self.snapshot_generation {
            return;
        }
        let (body, _) = host::shared_data(SNAPSHOT_KEY);
        match body.as_deref().map(SnapshotView::parse) {
            Some(Ok(view)) => {
                self.snapshot = Some(Rc::new(view));
                self.snapshot_generation = generation;
            }
            Some(Err(e)) => host::log(
                LogLevel::Error,
                &format!("tollgate: the published snapshot does not parse: {e}"),
            ),
            None => {}
        }
    }

    /// Hands this worker's rows to the singleton. Rows stay (bounded) while the queue
    /// cannot be resolved or refuses them.
    fn hand_over_usage(&mut self) {
        if self.usage.is_empty() {
            self.report_dropped();
            return;
        }
        if self.queue.is_none() {
            self.queue = hostcalls::resolve_shared_queue(&self.vm_id, USAGE_QUEUE)
                .ok()
                .flatten();
        }
        if let Some(queue) = self.queue {
            let rows = self.usage.drain_rows();
            match serde_json::to_vec(&rows) {
                Ok(message) => match hostcalls::enqueue_shared_queue(queue, Some(&message)) {
                    Ok(()) => {}
                    Err(status) => {
                        host::log(
                            LogLevel::Warn,
                            &format!("tollgate: usage queue refused rows ({status:?}); kept"),
                        );
                        self.queue = None;
                        self.usage.merge_rows(rows);
                    }
                },
                Err(_) => self.usage.merge_rows(rows),
            }
        } else {
            host::log(
                LogLevel::Warn,
                &format!(
                    "tollgate: no singleton has registered `{USAGE_QUEUE}` in vm `{}`; \
                     usage is kept until it does (see infra/envoy/README.md)",
                    self.vm_id
                ),
            );
        }
        self.report_dropped();
    }

    fn report_dropped(&mut self) {
        self.metrics
            .report_dropped(self.usage.dropped().total(), &mut self.dropped_reported);
    }
}

/// What a forwarded request needs until its end.
struct Admitted {
    tenant: TenantId,
    /// The snapshot the request was admitted under (its limits, its time).
    snapshot: Option<Rc<SnapshotView>>,
    route_group: String,
    started: DateTime<Utc>,
    response_headers: Vec<(&'static str, String)>,
}

/// One HTTP stream.
pub struct Request {
    state: Rc<RefCell<WorkerState>>,
    admitted: Option<Admitted>,
    status: u32,
    response_bytes: u64,
}

/// The tenant of a request; its limits are [`SnapshotView::limits_of`] that tenant.
enum Identity {
    Known(TenantId),
    Refused(Refusal),
}

impl Request {
    fn identify(&self, state: &WorkerState) -> Identity {
        let config = &state.config;
        let presented = match &config.tenant_source {
            TenantSource::Header { name } => {
                text(host::header(MapType::HttpRequestHeaders, name)).and_then(tenant_id)
            }
            TenantSource::ApiKey { header } => {
                let key = text(host::header(MapType::HttpRequestHeaders, header))
                    .map(|v| strip_bearer(header, &v).to_owned());
                match (&state.snapshot, key) {
                    (Some(snapshot), Some(key)) => snapshot.tenant_of_key(&key).cloned(),
                    _ => None,
                }
            }
            TenantSource::JwtClaim { property, claim } => {
                let path: Vec<&str> = property
                    .iter()
                    .chain(claim.iter())
                    .map(String::as_str)
                    .collect();
                host::property_string(&path).and_then(tenant_id)
            }
        };
        let anonymous = match &config.unknown_tenant {
            UnknownTenant::Anonymous(tenant) => Some(tenant),
            UnknownTenant::Reject => None,
        };
        let Some(snapshot) = &state.snapshot else {
            // No snapshot yet: the stale policy decides for everyone.
            return match (config.staleness.policy, presented.or(anonymous.cloned())) {
                (StalePolicy::FailClosed, _) => Identity::Refused(Refusal::QuotaUnavailable),
                (StalePolicy::FailOpen, Some(tenant)) => Identity::Known(tenant),
                (StalePolicy::FailOpen, None) => Identity::Refused(Refusal::UnknownTenant),
            };
        };
        match (presented, anonymous) {
            (Some(tenant), _) if snapshot.tenant(&tenant).is_some() => Identity::Known(tenant),
            (_, Some(anonymous)) => Identity::Known(anonymous.clone()),
            (_, None) => Identity::Refused(Refusal::UnknownTenant),
        }
    }

    fn refuse(&self, state: &WorkerState, reply: &LocalReply) -> Action {
        let metric = match reply.refusal {
            Refusal::UnknownTenant => state.metrics.requests_unauthorized,
            Refusal::BudgetExceeded => state.metrics.requests_blocked,
            Refusal::QuotaUnavailable => state.metrics.requests_unavailable,
            Refusal::QuotaExceeded => state.metrics.requests_quota_exceeded,
            Refusal::RateLimited => state.metrics.requests_rate_limited,
        };
        Metrics::add(metric, 1);
        let headers: Vec<(&str, &str)> = reply
            .headers
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        if let Err(status) =
            hostcalls::send_http_response(reply.status_code(), headers, Some(reply.body.as_bytes()))
        {
            host::log(
                LogLevel::Error,
                &format!("tollgate: local reply failed: {status:?}"),
            );
        }
        Action::Pause
    }
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let now = host::now();
        // One small shared-data read per request: a new snapshot counts from the first
        // request after it is published, which the overshoot bound relies on.
        self.state.borrow_mut().refresh_snapshot();
        let state = self.state.borrow();
        let tenant = match self.identify(&state) {
            Identity::Known(tenant) => tenant,
            Identity::Refused(refusal) => {
                return self.refuse(&state, &refusal_reply(refusal, None));
            }
        };
        let snapshot = state.snapshot.clone();
        let limits = SnapshotView::limits_of(snapshot.as_deref(), &tenant);
        let config = Rc::clone(&state.config);
        let units: Vec<_> = config
            .meters
            .requests
            .iter()
            .map(|meter| (meter.clone(), Decimal::ONE))
            .collect();
        let request = AdmissionRequest {
            now,
            limits,
            snapshot_taken_at: snapshot.as_ref().map(|s| s.generated_at),
            staleness: &config.staleness,
            units_at_admission: &units,
            emit_headers_on_allowed: config.emit_headers_on_allowed,
        };
        let key = admission::shared_data_key(&tenant);
        let mut verdict = None;
        for _ in 0..MAX_CAS_ROUNDS {
            let (stored, cas) = host::shared_data(&key);
            let admission = admission::admit(stored.as_deref(), &request);
            match admission.new_state {
                None => {
                    verdict = Some(admission.verdict);
                    break;
                }
                Some(new_state) => match host::set_shared_data(&key, &new_state, cas) {
                    Ok(()) => {
                        verdict = Some(admission.verdict);
                        break;
                    }
                    Err(Status::CasMismatch) => continue,
                    Err(status) => {
                        host::log(
                            LogLevel::Error,
                            &format!("tollgate: shared data write failed: {status:?}"),
                        );
                        break;
                    }
                },
            }
        }
        match verdict {
            Some(Verdict::Forward { response_headers }) => {
                Metrics::add(state.metrics.requests_allowed, 1);
                let path =
                    text(host::header(MapType::HttpRequestHeaders, ":path")).unwrap_or_default();
                self.admitted = Some(Admitted {
                    route_group: config.route_group(&path).to_owned(),
                    tenant,
                    snapshot,
                    started: now,
                    response_headers,
                });
                Action::Continue
            }
            Some(Verdict::Refuse(reply)) => self.refuse(&state, &reply),
            None => self.refuse(&state, &refusal_reply(Refusal::QuotaUnavailable, None)),
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.status = text(host::header(MapType::HttpResponseHeaders, ":status"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if let Some(admitted) = &self.admitted {
            for (name, value) in &admitted.response_headers {
                host::add_header(MapType::HttpResponseHeaders, name, value);
            }
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        let size = u64::try_from(body_size).unwrap_or(u64::MAX);
        self.response_bytes = self.response_bytes.saturating_add(size);
        Action::Continue
    }

    fn on_log(&mut self) {
        let Some(admitted) = self.admitted.take() else {
            return;
        };
        let now = host::now();
        let latency_ms = u64::try_from((now - admitted.started).num_milliseconds()).unwrap_or(0);
        let mut state = self.state.borrow_mut();
        let config = Rc::clone(&state.config);
        state.usage.record(
            &config.meters,
            &RequestUsage {
                tenant: admitted.tenant.clone(),
                route_group: admitted.route_group,
                status: self.status,
                response_bytes: self.response_bytes,
                latency_ms,
                at: admitted.started,
            },
        );
        let Some(meter) = &config.meters.response_bytes else {
            return;
        };
        let snapshot = admitted.snapshot.as_deref();
        let limits = SnapshotView::limits_of(snapshot, &admitted.tenant);
        // Most tenants have no quota on response bytes: then there is nothing to charge
        // and no reason to read the shared entry.
        if !limits.quotas.iter().any(|q| &q.meter == meter) {
            return;
        }
        let key = admission::shared_data_key(&admitted.tenant);
        for _ in 0..MAX_CAS_ROUNDS {
            let (stored, cas) = host::shared_data(&key);
            let Some(new_state) = admission::record_after_response(
                stored.as_deref(),
                limits,
                snapshot.map(|s| s.generated_at),
                meter,
                Decimal::from(self.response_bytes),
                now,
            ) else {
                break;
            };
            match host::set_shared_data(&key, &new_state, cas) {
                Err(Status::CasMismatch) => continue,
                _ => break,
            }
        }
    }
}

fn text(bytes: Option<Vec<u8>>) -> Option<String> {
    bytes.and_then(|b| String::from_utf8(b).ok())
}

fn tenant_id(value: String) -> Option<TenantId> {
    TenantId::new(value.trim()).ok()
}

/// `authorization: Bearer <key>` carries the key after the scheme; other headers carry
/// it bare.
fn strip_bearer<'a>(header: &str, value: &'a str) -> &'a str {
    let value = value.trim();
    if header == "authorization" {
        let mut parts = value.splitn(2, ' ');
        if let (Some(scheme), Some(rest)) = (parts.next(), parts.next())
            && scheme.eq_ignore_ascii_case("bearer")
        {
            return rest.trim();
        }
    }
    value
}
