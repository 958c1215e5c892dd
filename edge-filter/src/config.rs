//! The plugin configuration: JSON as Envoy passes it to `on_configure`, read in two
//! stages.
//!
//! 1. [`FilterConfigJson`] mirrors the JSON: camelCase, unknown fields rejected, defaults
//!    filled in. A syntax error or an unknown field stops here with one problem.
//! 2. [`FilterConfigJson::compile`] checks everything else and reports **every** problem
//!    at once, each with its field path (`sqs.queueUrl`, `routeGroups[2].prefix`), so an
//!    operator reading Envoy's log fixes the file in one pass. A configuration with any
//!    problem fails the plugin start; it never reaches a request.
//!
//! ```
//! use tollgate_edge_filter::config::FilterConfig;
//!
//! let config = FilterConfig::from_json(r#"{
//!   "gatewayId": "gw-eu-1",
//!   "identity": {"source": "apiKey", "header": "x-api-key"},
//!   "snapshot": {"cluster": "usage_api", "path": "/v1/edge/snapshot"},
//!   "sqs": {"cluster": "sqs", "queueUrl": "http://localhost:9324/000000000000/usage"}
//! }"#)?;
//! assert_eq!(config.max_body_bytes, 256 * 1024);
//!
//! let error = FilterConfig::from_json(r#"{
//!   "gatewayId": "",
//!   "identity": {"source": "header"},
//!   "snapshot": {"cluster": "usage_api", "path": "v1/edge/snapshot"},
//!   "sqs": {"cluster": "sqs", "queueUrl": "sqs://nope"}
//! }"#).unwrap_err();
//! let paths: Vec<&str> = error.problems().iter().map(|p| p.path.as_str()).collect();
//! assert_eq!(paths, ["gatewayId", "identity.header", "snapshot.path", "sqs.queueUrl"]);
//! # Ok::<(), tollgate_edge_filter::config::FilterConfigError>(())
//! ```

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use tollgate_core::ids::{MeterName, TenantId};

use crate::quota::{StalePolicy, Staleness};
use crate::usage::{DEFAULT_MAX_BODY_BYTES, EdgeMeters};

/// Smallest accepted message body: room for the envelope and a few rows.
pub const MIN_BODY_BYTES: usize = 4 * 1024;
/// Largest accepted message body: the SQS limit on AWS (1 MiB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default bound of the batches held for SQS: 8 MiB.
pub const DEFAULT_MAX_PENDING_BYTES: usize = 8 * 1024 * 1024;
/// Largest accepted bound of the batches held for SQS: 256 MiB.
pub const MAX_PENDING_BYTES: usize = 256 * 1024 * 1024;
/// Longest gateway id; the batch id `{gateway}-{seq}` must stay within core's 128.
pub const MAX_GATEWAY_ID_LEN: usize = 80;
/// Where Envoy's `jwt_authn` filter puts verified payloads in dynamic metadata.
pub const JWT_AUTHN_METADATA: &str = "envoy.filters.http.jwt_authn";

// ---------------------------------------------------------------------------------------
// Stage one: the JSON as written
// ---------------------------------------------------------------------------------------

/// The configuration as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterConfigJson {
    /// This gateway's id in batch ids; the glue appends the VM start time.
    pub gateway_id: String,
    pub identity: IdentityJson,
    #[serde(default)]
    pub unknown_tenant: UnknownTenantJson,
    #[serde(default)]
    pub stale: StaleJson,
    #[serde(default = "default_flush_interval")]
    pub flush_interval_seconds: u64,
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    #[serde(default = "default_max_buffer_rows")]
    pub max_buffer_rows: u64,
    /// Rate-limit headers on allowed responses too, not only on 429s.
    #[serde(default = "default_true")]
    pub emit_headers_on_allowed: bool,
    pub snapshot: SnapshotJson,
    pub sqs: SqsJson,
    #[serde(default)]
    pub meters: MetersJson,
    /// Path prefixes mapped to route groups, the `route` dimension of usage rows.
    #[serde(default)]
    pub route_groups: Vec<RouteGroupJson>,
}

/// Where the tenant of a request comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum IdentitySource {
    /// A request header holds the tenant id (set by a trusted upstream filter).
    Header,
    /// A request header holds an API key, looked up by its SHA-256 in the snapshot.
    ApiKey,
    /// A claim of the JWT payload that `jwt_authn` verified and put in dynamic metadata.
    JwtClaim,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdentityJson {
    pub source: IdentitySource,
    /// For `header` and `apiKey`.
    #[serde(default)]
    pub header: Option<String>,
    /// For `jwtClaim`: `jwt_authn`'s `payload_in_metadata` name.
    #[serde(default)]
    pub payload_in_metadata: Option<String>,
    /// For `jwtClaim`: the claim, dotted for nested claims (`org.id`).
    #[serde(default)]
    pub claim: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum UnknownTenantPolicy {
    /// Answer 401.
    #[default]
    Reject,
    /// Pass the request as the anonymous tenant.
    Anonymous,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UnknownTenantJson {
    #[serde(default)]
    pub policy: UnknownTenantPolicy,
    /// The tenant id anonymous requests are metered and limited as.
    #[serde(default)]
    pub anonymous_tenant: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StaleJson {
    pub policy: StalePolicy,
    pub max_age_seconds: u64,
}

impl Default for StaleJson {
    fn default() -> Self {
        StaleJson {
            policy: StalePolicy::FailOpen,
            max_age_seconds: 300,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotJson {
    /// The Envoy cluster of the usage API.
    pub cluster: String,
    pub path: String,
    /// The `:authority` of the call; the cluster name when absent.
    #[serde(default)]
    pub authority: Option<String>,
    #[serde(default = "default_snapshot_interval")]
    pub interval_seconds: u64,
    /// An admin key of the usage API, sent as `authorization: Bearer …`. Leave it out
    /// when Envoy adds the header on the cluster instead (keeps it out of the plugin
    /// configuration).
    #[serde(default)]
    pub api_key: Option<SecretKey>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SqsJson {
    /// The Envoy cluster of the SQS endpoint (signed by `aws_request_signing` there).
    pub cluster: String,
    pub queue_url: String,
    /// Most bytes of batches held for SQS while it does not take them; beyond that,
    /// new batches are dropped and counted.
    #[serde(default = "default_max_pending_bytes")]
    pub max_pending_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetersJson {
    /// `null` turns a meter off.
    #[serde(default = "default_requests_meter")]
    pub requests: Option<String>,
    #[serde(default = "default_bytes_meter")]
    pub response_bytes: Option<String>,
    #[serde(default = "default_latency_meter")]
    pub latency_ms: Option<String>,
}

impl Default for MetersJson {
    fn default() -> Self {
        MetersJson {
            requests: default_requests_meter(),
            response_bytes: default_bytes_meter(),
            latency_ms: default_latency_meter(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteGroupJson {
    pub prefix: String,
    pub group: String,
}

fn default_flush_interval() -> u64 {
    10
}
fn default_max_body_bytes() -> u64 {
    DEFAULT_MAX_BODY_BYTES as u64
}
fn default_max_buffer_rows() -> u64 {
    10_000
}
fn default_max_pending_bytes() -> u64 {
    DEFAULT_MAX_PENDING_BYTES as u64
}
fn default_true() -> bool {
    true
}
fn default_snapshot_interval() -> u64 {
    15
}
fn default_requests_meter() -> Option<String> {
    Some("requests".to_owned())
}
fn default_bytes_meter() -> Option<String> {
    Some("response_bytes".to_owned())
}
fn default_latency_meter() -> Option<String> {
    Some("latency_ms".to_owned())
}

// ---------------------------------------------------------------------------------------
// Problems
// ---------------------------------------------------------------------------------------

/// What is wrong at a [`ConfigProblem`]'s path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProblemKind {
    Syntax { message: String },
    Empty,
    Missing { reason: &'static str },
    NotAllowed { reason: &'static str },
    OutOfRange { value: u64, min: u64, max: u64 },
    BadHeaderName,
    BadPath,
    BadQueueUrl,
    BadGatewayId,
    BadRouteGroup,
    InvalidId { message: String },
    Duplicate { first_at: String },
    MaxAgeBelowInterval { interval: u64 },
    BadApiKey,
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProblemKind::Syntax { message } => write!(f, "not valid configuration JSON: {message}"),
            ProblemKind::Empty => write!(f, "must not be empty"),
            ProblemKind::Missing { reason } => write!(f, "is required {reason}"),
            ProblemKind::NotAllowed { reason } => write!(f, "is not allowed {reason}"),
            ProblemKind::OutOfRange { value, min, max } => {
                write!(f, "must be between {min} and {max}, got {value}")
            }
            ProblemKind::BadHeaderName => {
                write!(f, "must be a lower-case HTTP header name (a-z, 0-9, -)")
            }
            ProblemKind::BadPath => write!(f, "must start with `/` and hold no spaces"),
            ProblemKind::BadQueueUrl => {
                write!(f, "must be an http:// or https:// SQS queue URL")
            }
            ProblemKind::BadGatewayId => write!(
                f,
                "must be 1 to {MAX_GATEWAY_ID_LEN} characters of ASCII letters, digits, - _ . :"
            ),
            ProblemKind::BadRouteGroup => {
                write!(
                    f,
                    "must be 1 to 64 characters of ASCII letters, digits, - _ ."
                )
            }
            ProblemKind::InvalidId { message } => write!(f, "{message}"),
            ProblemKind::Duplicate { first_at } => write!(f, "appears twice; first at {first_at}"),
            ProblemKind::BadApiKey => {
                write!(
                    f,
                    "must be a non-empty key without spaces or control characters"
                )
            }
            ProblemKind::MaxAgeBelowInterval { interval } => write!(
                f,
                "must be at least snapshot.intervalSeconds ({interval}), or every snapshot is stale"
            ),
        }
    }
}

/// One problem, located by its JSON field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub path: String,
    pub kind: ProblemKind,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.kind)
    }
}

/// Every problem of a configuration, in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterConfigError {
    problems: Vec<ConfigProblem>,
}

impl FilterConfigError {
    pub fn problems(&self) -> &[ConfigProblem] {
        &self.problems
    }
}

impl fmt::Display for FilterConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid tollgate filter configuration ({} problems)",
            self.problems.len()
        )?;
        for problem in &self.problems {
            write!(f, "; {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FilterConfigError {}

#[derive(Debug, Default)]
struct Problems(Vec<ConfigProblem>);

impl Problems {
    fn report(&mut self, path: impl Into<String>, kind: ProblemKind) {
        self.0.push(ConfigProblem {
            path: path.into(),
            kind,
        });
    }

    fn range(&mut self, path: &str, value: u64, min: u64, max: u64) -> u64 {
        if !(min..=max).contains(&value) {
            self.report(path, ProblemKind::OutOfRange { value, min, max });
        }
        value.clamp(min, max)
    }

    fn non_empty(&mut self, path: &str, value: &str) -> String {
        if value.trim().is_empty() {
            self.report(path, ProblemKind::Empty);
        }
        value.to_owned()
    }

    fn header(&mut self, path: &str, value: Option<&str>, reason: &'static str) -> String {
        match value {
            None => {
                self.report(path, ProblemKind::Missing { reason });
                String::new()
            }
            Some(name) => {
                let ok = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                if !ok {
                    self.report(path, ProblemKind::BadHeaderName);
                }
                name.to_owned()
            }
        }
    }

    fn meter(&mut self, path: &str, value: Option<&str>) -> Option<MeterName> {
        let value = value?;
        MeterName::new(value)
            .map_err(|e| {
                self.report(
                    path,
                    ProblemKind::InvalidId {
                        message: e.to_string(),
                    },
                )
            })
            .ok()
    }
}

// ---------------------------------------------------------------------------------------
// Stage two: the validated configuration
// ---------------------------------------------------------------------------------------

/// Where the filter reads the tenant of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantSource {
    Header {
        name: String,
    },
    /// The header's value is digested ([`tollgate_core::tenant::ApiKeyHash::of`]) and
    /// looked up in the snapshot; the key itself is never stored or logged.
    ApiKey {
        header: String,
    },
    /// `property` is the dynamic-metadata path to read with `get_property`; `claim` the
    /// path inside that JSON payload.
    JwtClaim {
        property: Vec<String>,
        claim: Vec<String>,
    },
}

/// What happens to a request whose tenant cannot be established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnknownTenant {
    /// 401.
    Reject,
    /// Metered and limited as this tenant.
    Anonymous(TenantId),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    pub cluster: String,
    pub authority: String,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteGroup {
    pub prefix: String,
    pub group: String,
}

/// The validated plugin configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterConfig {
    pub gateway_id: String,
    pub tenant_source: TenantSource,
    pub unknown_tenant: UnknownTenant,
    pub staleness: Staleness,
    pub flush_interval: Duration,
    pub max_body_bytes: usize,
    pub max_buffer_rows: usize,
    pub emit_headers_on_allowed: bool,
    pub snapshot: HttpTarget,
    pub snapshot_interval: Duration,
    /// Sent as `authorization: Bearer …` on snapshot calls.
    pub snapshot_api_key: Option<SecretKey>,
    pub sqs: HttpTarget,
    pub queue_url: String,
    pub max_pending_bytes: usize,
    pub meters: EdgeMeters,
    /// Longest prefix first.
    pub route_groups: Vec<RouteGroup>,
}

/// A key that must not reach a log: its `Debug` shows only its length.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretKey(String);

impl SecretKey {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({} chars, redacted)", self.0.len())
    }
}

/// The route group of requests that match no configured prefix.
pub const OTHER_ROUTE_GROUP: &str = "other";

impl FilterConfig {
    /// Parses and compiles the plugin configuration.
    pub fn from_json(json: &str) -> Result<FilterConfig, FilterConfigError> {
        let parsed: FilterConfigJson =
            serde_json::from_str(json).map_err(|e| FilterConfigError {
                problems: vec![ConfigProblem {
                    path: format!("line {} column {}", e.line(), e.column()),
                    kind: ProblemKind::Syntax {
                        message: e.to_string(),
                    },
                }],
            })?;
        parsed.compile()
    }

    /// The route group of a request path: the longest matching prefix, or `other`.
    pub fn route_group(&self, path: &str) -> &str {
        self.route_groups
            .iter()
            .find(|g| path.starts_with(&g.prefix))
            .map_or(OTHER_ROUTE_GROUP, |g| g.group.as_str())
    }
}

impl FilterConfigJson {
    /// Validates everything, reporting every problem at once.
    pub fn compile(&self) -> Result<FilterConfig, FilterConfigError> {
        let mut p = Problems::default();

        let gateway_ok = !self.gateway_id.is_empty()
            && self.gateway_id.len() <= MAX_GATEWAY_ID_LEN
            && self
                .gateway_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        if !gateway_ok {
            p.report("gatewayId", ProblemKind::BadGatewayId);
        }

        let id = &self.identity;
        let tenant_source = match id.source {
            IdentitySource::Header | IdentitySource::ApiKey => {
                let header = p.header(
                    "identity.header",
                    id.header.as_deref(),
                    "for the header and apiKey sources",
                );
                for (field, value) in [
                    ("payloadInMetadata", &id.payload_in_metadata),
                    ("claim", &id.claim),
                ] {
                    if value.is_some() {
                        p.report(
                            format!("identity.{field}"),
                            ProblemKind::NotAllowed {
                                reason: "except for the jwtClaim source",
                            },
                        );
                    }
                }
                if id.source == IdentitySource::Header {
                    TenantSource::Header { name: header }
                } else {
                    TenantSource::ApiKey { header }
                }
            }
            IdentitySource::JwtClaim => {
                if id.header.is_some() {
                    p.report(
                        "identity.header",
                        ProblemKind::NotAllowed {
                            reason: "for the jwtClaim source",
                        },
                    );
                }
                let mut segment = |field: &str, value: &Option<String>| match value {
                    None => {
                        p.report(
                            format!("identity.{field}"),
                            ProblemKind::Missing {
                                reason: "for the jwtClaim source",
                            },
                        );
                        Vec::new()
                    }
                    Some(v) if v.split('.').any(str::is_empty) => {
                        p.report(format!("identity.{field}"), ProblemKind::Empty);
                        Vec::new()
                    }
                    Some(v) => v.split('.').map(str::to_owned).collect(),
                };
                let payload = segment("payloadInMetadata", &id.payload_in_metadata).join(".");
                let claim = segment("claim", &id.claim);
                TenantSource::JwtClaim {
                    property: vec![
                        "metadata".to_owned(),
                        "filter_metadata".to_owned(),
                        JWT_AUTHN_METADATA.to_owned(),
                        payload,
                    ],
                    claim,
                }
            }
        };

        let unknown_tenant = match (
            self.unknown_tenant.policy,
            &self.unknown_tenant.anonymous_tenant,
        ) {
            (UnknownTenantPolicy::Reject, None) => UnknownTenant::Reject,
            (UnknownTenantPolicy::Reject, Some(_)) => {
                p.report(
                    "unknownTenant.anonymousTenant",
                    ProblemKind::NotAllowed {
                        reason: "unless the policy is anonymous",
                    },
                );
                UnknownTenant::Reject
            }
            (UnknownTenantPolicy::Anonymous, tenant) => {
                let tenant = tenant.as_deref().unwrap_or("anonymous");
                match TenantId::new(tenant) {
                    Ok(t) => UnknownTenant::Anonymous(t),
                    Err(e) => {
                        p.report(
                            "unknownTenant.anonymousTenant",
                            ProblemKind::InvalidId {
                                message: e.to_string(),
                            },
                        );
                        UnknownTenant::Reject
                    }
                }
            }
        };

        let flush = p.range("flushIntervalSeconds", self.flush_interval_seconds, 1, 300);
        let max_body = p.range(
            "maxBodyBytes",
            self.max_body_bytes,
            MIN_BODY_BYTES as u64,
            MAX_BODY_BYTES as u64,
        );
        let max_rows = p.range("maxBufferRows", self.max_buffer_rows, 1, 1_000_000);

        let snapshot_interval = p.range(
            "snapshot.intervalSeconds",
            self.snapshot.interval_seconds,
            1,
            3_600,
        );
        let max_age = p.range("stale.maxAgeSeconds", self.stale.max_age_seconds, 1, 86_400);
        if self.stale.max_age_seconds < self.snapshot.interval_seconds {
            p.report(
                "stale.maxAgeSeconds",
                ProblemKind::MaxAgeBelowInterval {
                    interval: self.snapshot.interval_seconds,
                },
            );
        }

        let snapshot_cluster = p.non_empty("snapshot.cluster", &self.snapshot.cluster);
        if !self.snapshot.path.starts_with('/') || self.snapshot.path.contains(char::is_whitespace)
        {
            p.report("snapshot.path", ProblemKind::BadPath);
        }
        let snapshot_authority = match &self.snapshot.authority {
            Some(a) => p.non_empty("snapshot.authority", a),
            None => snapshot_cluster.clone(),
        };

        let snapshot_api_key = match &self.snapshot.api_key {
            None => None,
            Some(key)
                if key.0.is_empty()
                    || key
                        .0
                        .contains(|c: char| c.is_whitespace() || c.is_control()) =>
            {
                p.report("snapshot.apiKey", ProblemKind::BadApiKey);
                None
            }
            Some(key) => Some(key.clone()),
        };

        let sqs_cluster = p.non_empty("sqs.cluster", &self.sqs.cluster);
        let max_pending = p.range(
            "sqs.maxPendingBytes",
            self.sqs.max_pending_bytes,
            self.max_body_bytes
                .clamp(MIN_BODY_BYTES as u64, MAX_BODY_BYTES as u64),
            MAX_PENDING_BYTES as u64,
        );
        let (sqs_authority, sqs_path) = match split_url(&self.sqs.queue_url) {
            Some(parts) => parts,
            None => {
                p.report("sqs.queueUrl", ProblemKind::BadQueueUrl);
                (String::new(), String::new())
            }
        };

        let meters = EdgeMeters {
            requests: p.meter("meters.requests", self.meters.requests.as_deref()),
            response_bytes: p.meter(
                "meters.responseBytes",
                self.meters.response_bytes.as_deref(),
            ),
            latency_ms: p.meter("meters.latencyMs", self.meters.latency_ms.as_deref()),
        };

        let mut route_groups: Vec<RouteGroup> = Vec::new();
        let mut seen: Vec<(&str, usize)> = Vec::new();
        for (i, g) in self.route_groups.iter().enumerate() {
            let path = format!("routeGroups[{i}]");
            if !g.prefix.starts_with('/') || g.prefix.contains(char::is_whitespace) {
                p.report(format!("{path}.prefix"), ProblemKind::BadPath);
            }
            if let Some((_, first)) = seen.iter().find(|(prefix, _)| *prefix == g.prefix) {
                p.report(
                    format!("{path}.prefix"),
                    ProblemKind::Duplicate {
                        first_at: format!("routeGroups[{first}].prefix"),
                    },
                );
            }
            seen.push((&g.prefix, i));
            // Route groups become a usage dimension: keep them short and plain.
            let group_ok = (1..=64).contains(&g.group.len())
                && g.group
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !group_ok {
                p.report(format!("{path}.group"), ProblemKind::BadRouteGroup);
            }
            route_groups.push(RouteGroup {
                prefix: g.prefix.clone(),
                group: g.group.clone(),
            });
        }
        route_groups.sort_by_key(|g| std::cmp::Reverse(g.prefix.len()));

        if !p.0.is_empty() {
            return Err(FilterConfigError { problems: p.0 });
        }
        Ok(FilterConfig {
            gateway_id: self.gateway_id.clone(),
            tenant_source,
            unknown_tenant,
            staleness: Staleness {
                policy: self.stale.policy,
                max_age: chrono::Duration::seconds(i64::try_from(max_age).unwrap_or(86_400)),
            },
            flush_interval: Duration::from_secs(flush),
            max_body_bytes: usize::try_from(max_body).unwrap_or(DEFAULT_MAX_BODY_BYTES),
            max_buffer_rows: usize::try_from(max_rows).unwrap_or(10_000),
            emit_headers_on_allowed: self.emit_headers_on_allowed,
            snapshot: HttpTarget {
                cluster: snapshot_cluster,
                authority: snapshot_authority,
                path: self.snapshot.path.clone(),
            },
            snapshot_interval: Duration::from_secs(snapshot_interval),
            snapshot_api_key,
            sqs: HttpTarget {
                cluster: sqs_cluster,
                authority: sqs_authority,
                path: sqs_path,
            },
            queue_url: self.sqs.queue_url.clone(),
            max_pending_bytes: usize::try_from(max_pending).unwrap_or(DEFAULT_MAX_PENDING_BYTES),
            meters,
            route_groups,
        })
    }
}

/// `http(s)://authority/path` → (authority, path); `None` if it is not such a URL.
fn split_url(url: &str) -> Option<(String, String)> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let ok = !authority.is_empty()
        && !authority.contains(char::is_whitespace)
        && !path.contains(char::is_whitespace);
    ok.then(|| (authority.to_owned(), path.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn base() -> Value {
        json!({
            "gatewayId": "gw-eu-1",
            "identity": {"source": "header", "header": "x-tenant-id"},
            "snapshot": {"cluster": "usage_api", "path": "/v1/edge/snapshot"},
            "sqs": {"cluster": "sqs", "queueUrl": "https://sqs.eu-west-1.amazonaws.com/123456789012/usage"}
        })
    }

    fn with(mut value: Value, pointer: &str, new: Value) -> Value {
        if let Some(slot) = value.pointer_mut(pointer) {
            *slot = new;
        } else if let Some((parent, key)) = pointer.rsplit_once('/')
            && let Some(Value::Object(map)) = value.pointer_mut(parent)
        {
            map.insert(key.to_owned(), new);
        }
        value
    }

    fn problems(value: &Value) -> Vec<String> {
        match FilterConfig::from_json(&value.to_string()) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems().iter().map(|p| p.path.clone()).collect(),
        }
    }

    #[test]
    fn a_minimal_config_gets_the_documented_defaults() -> Result<(), FilterConfigError> {
        let config = FilterConfig::from_json(&base().to_string())?;
        assert_eq!(
            config.tenant_source,
            TenantSource::Header {
                name: "x-tenant-id".into()
            }
        );
        assert_eq!(config.unknown_tenant, UnknownTenant::Reject);
        assert_eq!(config.staleness.policy, StalePolicy::FailOpen);
        assert_eq!(config.staleness.max_age, chrono::Duration::seconds(300));
        assert_eq!(config.flush_interval, Duration::from_secs(10));
        assert_eq!(config.snapshot_interval, Duration::from_secs(15));
        assert_eq!(config.max_body_bytes, 262_144);
        assert!(config.emit_headers_on_allowed);
        assert_eq!(config.snapshot.authority, "usage_api");
        assert_eq!(config.sqs.authority, "sqs.eu-west-1.amazonaws.com");
        assert_eq!(config.sqs.path, "/123456789012/usage");
        assert_eq!(
            config.meters.requests.as_ref().map(MeterName::as_str),
            Some("requests")
        );
        assert_eq!(config.route_group("/v1/items"), OTHER_ROUTE_GROUP);
        Ok(())
    }

    #[test]
    fn jwt_claims_are_read_from_jwt_authn_metadata() -> Result<(), FilterConfigError> {
        let value = with(
            base(),
            "/identity",
            json!({"source": "jwtClaim", "payloadInMetadata": "jwt_payload", "claim": "org.id"}),
        );
        let config = FilterConfig::from_json(&value.to_string())?;
        assert_eq!(
            config.tenant_source,
            TenantSource::JwtClaim {
                property: vec![
                    "metadata".into(),
                    "filter_metadata".into(),
                    "envoy.filters.http.jwt_authn".into(),
                    "jwt_payload".into()
                ],
                claim: vec!["org".into(), "id".into()],
            }
        );
        Ok(())
    }

    #[test]
    fn route_groups_match_the_longest_prefix() -> Result<(), FilterConfigError> {
        let value = with(
            base(),
            "/routeGroups",
            json!([{"prefix": "/v1", "group": "v1"}, {"prefix": "/v1/search", "group": "search"}]),
        );
        let config = FilterConfig::from_json(&value.to_string())?;
        assert_eq!(config.route_group("/v1/search?q=x"), "search");
        assert_eq!(config.route_group("/v1/items"), "v1");
        assert_eq!(config.route_group("/v2"), "other");
        Ok(())
    }

    #[test]
    fn anonymous_tenants_default_to_anonymous() -> Result<(), FilterConfigError> {
        let value = with(base(), "/unknownTenant", json!({"policy": "anonymous"}));
        let config = FilterConfig::from_json(&value.to_string())?;
        assert_eq!(
            Some(config.unknown_tenant),
            TenantId::new("anonymous")
                .ok()
                .map(UnknownTenant::Anonymous)
        );
        Ok(())
    }

    #[test]
    fn every_problem_is_reported_with_its_field_path() {
        let cases: Vec<(Value, Vec<&str>)> = vec![
            (with(base(), "/gatewayId", json!("gw/1")), vec!["gatewayId"]),
            (
                with(base(), "/identity", json!({"source": "apiKey"})),
                vec!["identity.header"],
            ),
            (
                with(
                    base(),
                    "/identity",
                    json!({"source": "header", "header": "X-Tenant"}),
                ),
                vec!["identity.header"],
            ),
            (
                with(
                    base(),
                    "/identity",
                    json!({"source": "header", "header": "x-t", "claim": "sub"}),
                ),
                vec!["identity.claim"],
            ),
            (
                with(
                    base(),
                    "/identity",
                    json!({"source": "jwtClaim", "header": "x"}),
                ),
                vec![
                    "identity.header",
                    "identity.payloadInMetadata",
                    "identity.claim",
                ],
            ),
            (
                with(
                    base(),
                    "/identity",
                    json!({"source": "jwtClaim", "payloadInMetadata": "p", "claim": "a..b"}),
                ),
                vec!["identity.claim"],
            ),
            (
                with(
                    base(),
                    "/unknownTenant",
                    json!({"policy": "reject", "anonymousTenant": "anon"}),
                ),
                vec!["unknownTenant.anonymousTenant"],
            ),
            (
                with(
                    base(),
                    "/unknownTenant",
                    json!({"policy": "anonymous", "anonymousTenant": "a#b"}),
                ),
                vec!["unknownTenant.anonymousTenant"],
            ),
            (
                with(
                    base(),
                    "/stale",
                    json!({"policy": "failClosed", "maxAgeSeconds": 5}),
                ),
                vec!["stale.maxAgeSeconds"],
            ),
            (
                with(base(), "/flushIntervalSeconds", json!(0)),
                vec!["flushIntervalSeconds"],
            ),
            (
                with(base(), "/maxBodyBytes", json!(2_000_000)),
                vec!["maxBodyBytes"],
            ),
            (
                with(base(), "/maxBufferRows", json!(0)),
                vec!["maxBufferRows"],
            ),
            (
                with(
                    base(),
                    "/snapshot",
                    json!({"cluster": " ", "path": "/s", "intervalSeconds": 0}),
                ),
                vec!["snapshot.intervalSeconds", "snapshot.cluster"],
            ),
            (
                with(
                    base(),
                    "/sqs",
                    json!({"cluster": "sqs", "queueUrl": "ftp://x/q"}),
                ),
                vec!["sqs.queueUrl"],
            ),
            (
                with(
                    base(),
                    "/meters",
                    json!({"requests": "bad name", "latencyMs": null}),
                ),
                vec!["meters.requests"],
            ),
            (
                with(
                    base(),
                    "/routeGroups",
                    json!([
                {"prefix": "/a", "group": "a"}, {"prefix": "b", "group": "b b"}, {"prefix": "/a", "group": "c"}]),
                ),
                vec![
                    "routeGroups[1].prefix",
                    "routeGroups[1].group",
                    "routeGroups[2].prefix",
                ],
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(problems(&value), expected, "{value}");
        }
    }

    #[test]
    fn unknown_fields_and_bad_json_are_one_syntax_problem() {
        for text in [
            with(base(), "/sqs/region", json!("eu-west-1")).to_string(),
            "{".to_owned(),
            "[]".to_owned(),
            with(base(), "/identity/source", json!("cookie")).to_string(),
        ] {
            let Err(error) = FilterConfig::from_json(&text) else {
                panic!("{text} should be refused");
            };
            assert_eq!(error.problems().len(), 1);
            assert!(matches!(
                error.problems()[0].kind,
                ProblemKind::Syntax { .. }
            ));
            assert!(
                error
                    .to_string()
                    .starts_with("invalid tollgate filter configuration (1 problems)")
            );
        }
    }

    fn json_leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,200}") {
            let _ = FilterConfig::from_json(&text);
        }

        #[test]
        fn any_field_replaced_by_any_value_is_accepted_or_reported_with_a_path(
            field in prop_oneof![
                Just("/gatewayId"), Just("/identity/source"), Just("/identity/header"),
                Just("/identity/claim"), Just("/unknownTenant"), Just("/stale/maxAgeSeconds"),
                Just("/maxBodyBytes"), Just("/snapshot/path"), Just("/sqs/queueUrl"),
                Just("/meters/requests"), Just("/routeGroups"),
            ],
            value in json_leaf(),
        ) {
            match FilterConfig::from_json(&with(base(), field, value).to_string()) {
                Ok(config) => prop_assert!(config.max_body_bytes >= MIN_BODY_BYTES),
                Err(error) => {
                    prop_assert!(!error.problems().is_empty());
                    prop_assert!(error.problems().iter().all(|p| !p.path.is_empty()));
                }
            }
        }
    }
}
