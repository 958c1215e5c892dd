//! # tollgate-edge-filter
//!
//! The decision core of the proxy-wasm filter that runs inside Envoy: plain Rust with no
//! host calls, compiled and tested natively and built for `wasm32-wasip1`. Every module
//! is a pure function of its inputs (the stored state, the clock reading, the snapshot),
//! so the proxy-wasm glue only reads host data in, calls these, and writes the results
//! back; that glue and the wasmtime host that runs the real `.wasm` in tests are built
//! in a later step and are not part of this crate yet.
//!
//! - [`rate`]: per-tenant request rate limits (GCRA), one 8-byte state per
//!   (tenant, period), shared by all workers through shared data with CAS.
//! - [`headers`]: `RateLimit`/`RateLimit-Policy`/`X-RateLimit-*`/`Retry-After` headers
//!   for the most restrictive limit, and the JSON bodies of 401, 402, 429 and 503 replies.
//! - [`quota`]: day and month quotas from a global usage snapshot plus local deltas,
//!   with the worst-case overshoot stated and the stale-snapshot policy.
//! - [`usage`]: per-request usage aggregated into core's mergeable states per
//!   (tenant, meter, minute, route group, status class), cut into size-bounded
//!   [`EdgeBatch`](tollgate_core::message::EdgeBatch) messages.
//! - [`decision`]: the verdict on a request from those checks: forward (with headers)
//!   or a 401/402/429/503 reply, in a documented precedence.
//! - [`config`]: the plugin configuration, parsed then compiled with every problem
//!   reported at once by field path.
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
