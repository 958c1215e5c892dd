//! A run's counts as CloudWatch metrics, without a CloudWatch API call.
//!
//! [`SyncReport::emf_line`] renders a report in the Embedded Metric Format: Lambda sends
//! the function's stdout to CloudWatch Logs, which turns a JSON line with an `_aws` member
//! into metrics. The SAM template's Stripe alarms watch `EventsRejected`,
//! `EventsExpired` and `MetersStopped` in the `tollgate` namespace with the dimension
//! `Function = billing-sync`. No tenant dimension: a handful of metrics, not one per tenant.

use chrono::{DateTime, Utc};

use crate::SyncReport;

/// The metrics' namespace (shared with ingest's).
pub const NAMESPACE: &str = "tollgate";
/// The value of the `Function` dimension.
pub const FUNCTION: &str = "billing-sync";

impl SyncReport {
    /// This report as one CloudWatch Embedded Metric Format line, timestamped `now`.
    ///
    /// `MetersStopped` counts (tenant, meter) pairs stopped because Stripe kept failing
    /// (their pending events wait for the next run); `RunsIncomplete` is 1 when the run
    /// stopped early for its deadline.
    pub fn emf_line(&self, now: DateTime<Utc>) -> String {
        serde_json::json!({
            "_aws": {
                "Timestamp": now.timestamp_millis(),
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [["Function"]],
                    "Metrics": [
                        {"Name": "EventsSent", "Unit": "Count"},
                        {"Name": "UnitsSent", "Unit": "Count"},
                        {"Name": "EventsRejected", "Unit": "Count"},
                        {"Name": "EventsExpired", "Unit": "Count"},
                        {"Name": "MetersStopped", "Unit": "Count"},
                        {"Name": "RunsIncomplete", "Unit": "Count"}
                    ]
                }]
            },
            "Function": FUNCTION,
            "EventsSent": self.events_sent,
            "UnitsSent": self.units_sent,
            "EventsRejected": self.events_rejected,
            "EventsExpired": self.events_expired,
            "MetersStopped": self.stopped.len(),
            "RunsIncomplete": u8::from(!self.complete),
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use chrono::TimeZone;
    use serde_json::Value;

    use super::*;

    #[test]
    fn a_report_becomes_one_emf_document_whose_every_declared_metric_has_its_value() {
        let report = SyncReport {
            events_sent: 7,
            units_sent: 1_234,
            events_rejected: 2,
            events_expired: 1,
            stopped: vec!["acme/api_requests: Stripe kept failing".to_owned()],
            complete: false,
            ..SyncReport::default()
        };
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 14, 5, 0).unwrap();

        let line = report.emf_line(now);

        assert!(!line.contains('\n'), "one log line");
        let doc: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(doc["_aws"]["Timestamp"], now.timestamp_millis());
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        assert_eq!(directive["Dimensions"], serde_json::json!([["Function"]]));
        assert_eq!(doc["Function"], FUNCTION);
        let values: Vec<(String, u64)> = directive["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let name = m["Name"].as_str().unwrap().to_owned();
                let value = doc[&name].as_u64().unwrap();
                (name, value)
            })
            .collect();
        let expected = [
            ("EventsSent", 7),
            ("UnitsSent", 1_234),
            ("EventsRejected", 2),
            ("EventsExpired", 1),
            ("MetersStopped", 1),
            ("RunsIncomplete", 1),
        ];
        assert_eq!(
            values,
            expected.map(|(name, value)| (name.to_owned(), value))
        );
    }

    #[test]
    fn a_complete_run_reports_no_incomplete_run() {
        let report = SyncReport {
            complete: true,
            ..SyncReport::default()
        };
        let doc: Value = serde_json::from_str(&report.emf_line(Utc::now())).unwrap();
        assert_eq!(doc["RunsIncomplete"], 0);
        assert_eq!(doc["MetersStopped"], 0);
    }
}
