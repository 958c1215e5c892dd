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
//! - [`message`]: queue message contracts (CloudEvents, edge batches) → exactly-once batches.
//! - [`tenant`]: tenant profiles and API keys, stored only as SHA-256 digests.
//! - [`usage`]: aggregated usage rows and batches, the unit of exactly-once accounting.
//! - [`config`]: configuration problems, reported all at once with their field paths.
//! - [`money`]: currencies and the one rounding rule (half-even, once per invoice line).
//! - [`plan`]: plan versions, prices, allowances and limits, compiled from validated config.
//! - [`pricing`]: exact pricing arithmetic: allowances, packages, tiers and proration.
//! - [`invoice`]: invoice previews: a month of usage priced into rounded lines.
//! - [`alert`]: budget alerts, one per tenant, month and trigger, and their delivery state.
//! - [`budget`]: monthly budgets: threshold alerts, forecasts and the hard-limit verdict.
//! - [`billing`]: how metered usage becomes Stripe meter events: whole units, remainder
//!   carried, deterministic identifiers, the 35-day window, reconciliation.
//! - [`spend`]: a month's spend priced by the invoice preview and held against the budget.
//! - [`quota`]: remaining daily and monthly quota of a meter.
//! - [`run_rate`]: run-rate projections of usage to the end of a period.
//! - [`edge_snapshot`]: the edge snapshot: plans' limits, quota usage, blocks and key
//!   digests a gateway pulls to enforce limits locally.
//! - [`webhook`]: webhook secrets, the `Tollgate-Signature` scheme and the retry schedule.

pub mod aggregate;
pub mod alert;
pub mod billing;
pub mod budget;
pub mod config;
pub mod edge_snapshot;
pub mod event;
pub mod ids;
pub mod invoice;
pub mod message;
pub mod meter;
pub mod money;
pub mod plan;
pub mod pricing;
pub mod quota;
pub mod run_rate;
pub mod spend;
pub mod tenant;
pub mod usage;
pub mod webhook;
pub mod window;
