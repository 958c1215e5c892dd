//! # tollgate-billing-sync
//!
//! The scheduled Lambda that reports metered usage to Stripe Billing Meters, exactly once.
//!
//! - [`sync`]: one run: per tenant and Stripe meter, each closed hour's growth recorded in
//!   the ledger as a pending event (with the month's totals, in one transaction), sent,
//!   then settled; pending events of earlier runs resent first with the same identifier.
//! - [`close`]: month close: each tenant's final statement, frozen with its plan versions.
//! - [`ports`]: the [`ports::MeterEvents`] port the run reports through.
//! - [`stripe`]: that port over `async-stripe` (one attempt per call, the identifier as
//!   the `Idempotency-Key`, errors sorted into retryable and rejected).
//! - [`metrics`]: a run's counts as a CloudWatch Embedded Metric Format line (the
//!   template's Stripe alarms watch it).
//! - [`pacing`] and [`retry`]: the client-side rate limiter (Stripe: 1,000 calls/s live,
//!   25 writes/s in test mode) and exponential backoff with full jitter.
//!
//! The rules for turning quantities into Stripe events (whole units, carried remainder,
//! identifiers, the 35-day window) live in `tollgate_core::billing`.

pub mod close;
pub mod metrics;
pub mod pacing;
pub mod ports;
pub mod retry;
pub mod stripe;
pub mod sync;

pub use sync::{BillingSync, DEFAULT_LOOKBACK_DAYS, SyncError, SyncReport};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The schedule's payload: EventBridge Scheduler's `{"scheduledTime": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncRequest {
    pub scheduled_time: DateTime<Utc>,
}
