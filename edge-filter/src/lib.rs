//! # tollgate-edge-filter
//!
//! The proxy-wasm filter that runs inside Envoy in front of tenants' traffic. Built for
//! `wasm32-wasip1` it is a cdylib (`tollgate_edge_filter.wasm`); natively it is the same
//! decision logic without the host glue, tested with unit and property tests.
//!
//! Every module but `proxy` is a pure function of its inputs (stored state, clock
//! reading, snapshot); the `proxy` module (wasm32 only) reads host data in, calls them,
//! and writes the results back, without unwrapping anything the host hands it.
//!
//! - [`admission`]: one request of a known tenant checked against all its rate limits
//!   and quotas and charged, in one shared-data entry per tenant (one CAS).
//! - [`rate`]: request rate limits (GCRA) and their burst behaviour.
//! - [`quota`]: day and month quotas from a global usage snapshot plus local deltas,
//!   with the worst-case overshoot stated and the stale-snapshot policy.
//! - [`headers`]: `RateLimit`/`RateLimit-Policy`/`X-RateLimit-*`/`Retry-After` headers
//!   for the most restrictive limit, and the JSON bodies of 401, 402, 429 and 503 replies.
//! - [`decision`]: the verdict on a request, forward or reply, in a documented precedence.
//! - [`snapshot`]: the usage API's edge snapshot indexed for lookups (key digests,
//!   tenants' limits, block list).
//! - [`usage`]: per-request usage aggregated into core's mergeable states per
//!   (tenant, meter, minute, route group, status class), cut into size-bounded
//!   [`EdgeBatch`](tollgate_core::message::EdgeBatch) messages.
//! - [`sqs`]: the bounded outbox of batches and the `SendMessageBatch` calls, retried with
//!   backoff; what it must drop is counted.
//! - [`config`]: the plugin configuration, parsed then compiled with every problem
//!   reported at once by field path.
//!
//! How it is deployed (Envoy configuration, the singleton service VM, signing) is in
//! `infra/envoy/README.md`.
#[cfg(target_arch = "wasm32")]
mod proxy;

pub mod admission;
pub mod config;
pub mod decision;
pub mod headers;
pub mod quota;
pub mod rate;
pub mod snapshot;
pub mod sqs;
pub mod usage;
