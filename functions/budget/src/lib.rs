//! # tollgate-budget
//!
//! The scheduled Lambda that holds every tenant's month against its budget.
//!
//! - [`run`]: one run over all tenants: spend and forecast priced by the invoice preview,
//!   alerts raised once per (tenant, month, trigger), the budget block list the edge
//!   enforces, webhook deliveries with retries.
//! - [`webhook`]: the delivery client: signed `POST`s (`Tollgate-Signature`, see
//!   `docs/webhooks.md`), https only (plain http for loopback receivers), no redirects.
//!
//! The schedule's payload is EventBridge Scheduler's `{"scheduledTime": "…"}`; the run
//! evaluates at the scheduled time, so a delayed invocation judges the month as of when it
//! was meant to run.

pub mod run;
pub mod webhook;

pub use run::{BudgetReport, BudgetRun, BudgetRunError};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The schedule's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BudgetRequest {
    pub scheduled_time: DateTime<Utc>,
}
