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
//! It runs on its own schedule and after each rollup. The schedule's payload is
//! EventBridge Scheduler's `{"scheduledTime": "…"}`; after a rollup it is the Lambda
//! destination record of the rollup's invocation (`{"requestPayload": {"scheduledTime":
//! …}, "responsePayload": …, …}`), whose request carries the same field. The run evaluates
//! at that time, so a delayed invocation judges the month as of when it was meant to run.

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

/// A Lambda destination record of a finished rollup: only its request is read.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AfterRollup {
    request_payload: BudgetRequestTime,
}

/// The rollup's request: its scheduled time (and a lookback the budget does not need).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BudgetRequestTime {
    scheduled_time: DateTime<Utc>,
}

impl BudgetRequest {
    /// Reads a schedule payload or a rollup's destination record.
    pub fn from_trigger(payload: serde_json::Value) -> Result<BudgetRequest, serde_json::Error> {
        if payload.get("requestPayload").is_some() {
            let record: AfterRollup = serde_json::from_value(payload)?;
            return Ok(BudgetRequest {
                scheduled_time: record.request_payload.scheduled_time,
            });
        }
        serde_json::from_value(payload)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn schedules_and_rollup_destination_records_are_both_triggers() {
        let scheduled = BudgetRequest::from_trigger(serde_json::json!(
            {"scheduledTime": "2026-11-23T14:05:00Z"}
        ))
        .unwrap();
        let after_rollup = BudgetRequest::from_trigger(serde_json::json!({
            "version": "1.0",
            "timestamp": "2026-11-23T14:05:09.000Z",
            "requestContext": {"condition": "Success", "approximateInvokeCount": 1},
            "requestPayload": {"scheduledTime": "2026-11-23T14:05:00Z", "lookbackDays": 9},
            "responseContext": {"statusCode": 200},
            "responsePayload": {"tenants": 3, "complete": true}
        }))
        .unwrap();
        assert_eq!(scheduled, after_rollup);
        assert!(BudgetRequest::from_trigger(serde_json::json!({"scheduled": "x"})).is_err());
    }
}
