//! # tollgate-core
//!
//! The domain of tollgate, pure and synchronous: no I/O, no async, no AWS types. Every
//! decision about what usage counts, how it aggregates, what it costs and when a budget
//! is exceeded is made here, so the Lambda functions, the store and the edge filter only
//! move data in and out.
//!
//! - [`aggregate`]: mergeable aggregate states (commutative monoids) and their sketches.
//! - [`ids`]: validated identifiers (tenants, meters, plans) safe to embed in storage keys.
//! - [`window`]: UTC minute/hour/day/month buckets and the late-event horizon.
//! - [`event`]: CloudEvents usage events and their validation rules.
//! - [`meter`]: which events a meter takes, the value it reads, and how it aggregates.
//! - [`usage`]: aggregated usage rows and batches, the unit of exactly-once accounting.

pub mod aggregate;
pub mod event;
pub mod ids;
pub mod meter;
pub mod usage;
pub mod window;
