//! Budget alerts: at most one per tenant, month and trigger, and where its delivery stands.
//!
//! An alert is raised when a budget threshold is crossed for the first time in a month,
//! or when the month-end forecast first says the budget will be exceeded. Its id names the
//! month and the trigger (`2026-11.threshold-80`, `2026-11.forecast`), so storing it with
//! "only if absent" makes concurrent or repeated budget runs raise it exactly once.
//!
//! Delivery to the tenant's webhook is at least once and tracked on the alert: attempts,
//! the next attempt's time, the last error, and the final status. Acknowledging an alert
//! is the tenant saying "seen"; it does not stop delivery.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::budget::{Budget, BudgetEvaluation, Forecast, Outlook, Severity, Threshold};
use crate::ids::TenantId;
use crate::money::Currency;
use crate::window::{Granularity, Window};

/// What raised an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum AlertTrigger {
    /// The spend reached this threshold of the budget.
    Threshold { threshold: Threshold },
    /// The forecast says the budget will be exceeded before the month ends.
    Forecast,
}

impl AlertTrigger {
    /// The trigger's part of an alert id: `threshold-80` or `forecast`.
    pub fn key(&self) -> String {
        match self {
            AlertTrigger::Threshold { threshold } => format!("threshold-{threshold}"),
            AlertTrigger::Forecast => "forecast".to_owned(),
        }
    }
}

/// The id of an alert: `{yyyy-mm}.{trigger}`, unique per tenant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AlertId(String);

/// An alert id that is not `{yyyy-mm}.threshold-{1..1000}` or `{yyyy-mm}.forecast`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an alert id such as 2026-11.threshold-80 or 2026-11.forecast")]
pub struct AlertIdError(String);

impl AlertId {
    /// The id of the alert `trigger` raises in `month`.
    pub fn new(month: Window, trigger: AlertTrigger) -> AlertId {
        AlertId(format!("{}.{}", month.key(), trigger.key()))
    }

    /// The month and the trigger the id names.
    pub fn parse(text: &str) -> Result<(Window, AlertTrigger), AlertIdError> {
        let error = || AlertIdError(text.to_owned());
        let (month, trigger) = text.split_once('.').ok_or_else(error)?;
        let month = Window::parse_key(Granularity::Month, month).map_err(|_| error())?;
        let trigger = match trigger {
            "forecast" => AlertTrigger::Forecast,
            other => {
                let percent = other
                    .strip_prefix("threshold-")
                    .filter(|p| !p.starts_with('0') && !p.starts_with('+'))
                    .and_then(|p| p.parse::<u16>().ok())
                    .and_then(Threshold::new)
                    .ok_or_else(error)?;
                AlertTrigger::Threshold { threshold: percent }
            }
        };
        Ok((month, trigger))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AlertId {
    type Error = AlertIdError;
    fn try_from(text: String) -> Result<Self, AlertIdError> {
        AlertId::parse(&text)?;
        Ok(AlertId(text))
    }
}

impl From<AlertId> for String {
    fn from(id: AlertId) -> String {
        id.0
    }
}

impl fmt::Display for AlertId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where an alert's webhook delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its first or next attempt.
    Pending,
    Delivered,
    /// Given up after the last attempt, or refused for good by the receiver.
    Failed,
    /// The tenant has no webhook: the alert is only listed by the API.
    NoWebhook,
}

/// An alert's webhook delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub status: DeliveryStatus,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<DateTime<Utc>>,
}

impl Delivery {
    /// A delivery not attempted yet, due at `now`; [`DeliveryStatus::NoWebhook`] without
    /// a webhook.
    pub fn new(has_webhook: bool, now: DateTime<Utc>) -> Delivery {
        Delivery {
            status: if has_webhook {
                DeliveryStatus::Pending
            } else {
                DeliveryStatus::NoWebhook
            },
            attempts: 0,
            next_attempt_at: has_webhook.then_some(now),
            last_error: None,
            delivered_at: None,
        }
    }

    /// Whether an attempt is due at `now`.
    pub fn is_due(&self, now: DateTime<Utc>) -> bool {
        self.status == DeliveryStatus::Pending && self.next_attempt_at.is_none_or(|at| at <= now)
    }
}

/// A budget alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub id: AlertId,
    pub tenant: TenantId,
    pub month: Window,
    pub trigger: AlertTrigger,
    pub severity: Severity,
    /// The month's spend when the alert was raised.
    pub spent: Decimal,
    /// The monthly budget then.
    pub budget: Decimal,
    pub currency: Currency,
    pub percent_used: Decimal,
    pub forecast: Forecast,
    /// Whether the budget blocks usage at 100 %.
    pub hard_limit: bool,
    pub created_at: DateTime<Utc>,
    pub delivery: Delivery,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_at: Option<DateTime<Utc>>,
}

/// The alerts `evaluation` calls for that are not among `existing` (triggers already
/// raised this month): every threshold newly crossed, and the forecast alert when the
/// month is on track to exceed the budget (it is left out once the budget is exceeded:
/// the 100 % threshold says that).
pub fn alerts_due(
    tenant: &TenantId,
    month: Window,
    budget: &Budget,
    evaluation: &BudgetEvaluation,
    existing: &BTreeSet<AlertTrigger>,
    has_webhook: bool,
    now: DateTime<Utc>,
) -> Vec<Alert> {
    let mut due: Vec<(AlertTrigger, Severity)> = evaluation
        .crossed
        .iter()
        .map(|crossing| {
            (
                AlertTrigger::Threshold {
                    threshold: crossing.threshold,
                },
                crossing.severity,
            )
        })
        .collect();
    if let Outlook::OnTrackToExceed { .. } = evaluation.forecast.outlook {
        due.push((AlertTrigger::Forecast, Severity::Warning));
    }
    due.into_iter()
        .filter(|(trigger, _)| !existing.contains(trigger))
        .map(|(trigger, severity)| Alert {
            id: AlertId::new(month, trigger),
            tenant: tenant.clone(),
            month,
            trigger,
            severity,
            spent: evaluation.spent,
            budget: budget.monthly_amount(),
            currency: budget.currency(),
            percent_used: evaluation.percent_used,
            forecast: evaluation.forecast,
            hard_limit: budget.hard_limit(),
            created_at: now,
            delivery: Delivery::new(has_webhook, now),
            acknowledged_at: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::budget::evaluate;
    use rust_decimal_macros::dec;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn ids_round_trip_and_reject_lookalikes() {
        let month = Window::parse_key(Granularity::Month, "2026-11").unwrap();
        let threshold = AlertTrigger::Threshold {
            threshold: Threshold::new(80).unwrap(),
        };
        let id = AlertId::new(month, threshold);
        assert_eq!(id.as_str(), "2026-11.threshold-80");
        assert_eq!(AlertId::parse(id.as_str()).unwrap(), (month, threshold));
        assert_eq!(
            AlertId::parse("2026-11.forecast").unwrap(),
            (month, AlertTrigger::Forecast)
        );
        for bad in [
            "2026-11.threshold-080",
            "2026-11.threshold-0",
            "2026-11.threshold-1001",
            "2026-13.forecast",
            "2026-11",
            "2026-11.threshold-+8",
            "x.forecast",
        ] {
            assert!(AlertId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_crossing_and_the_forecast_are_due_once() {
        let budget = Budget::new(dec!(100), Currency::USD).unwrap();
        let now = at("2026-11-10T00:00:00Z");
        let month = Window::containing(Granularity::Month, now);
        let tenant = TenantId::new("acme").unwrap();
        // 85 after 9 days: 50 and 80 crossed, on track to exceed.
        let evaluation = evaluate(&budget, dec!(85), now, month);
        let due = alerts_due(
            &tenant,
            month,
            &budget,
            &evaluation,
            &BTreeSet::new(),
            true,
            now,
        );
        let ids: Vec<&str> = due.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "2026-11.threshold-50",
                "2026-11.threshold-80",
                "2026-11.forecast"
            ]
        );
        assert_eq!(due[1].severity, Severity::Warning);
        assert_eq!(due[0].severity, Severity::Info);
        assert!(due.iter().all(|a| a.delivery.is_due(now)));
        let existing: BTreeSet<AlertTrigger> = due.iter().map(|a| a.trigger).collect();
        assert!(alerts_due(&tenant, month, &budget, &evaluation, &existing, true, now).is_empty());
        let no_webhook = alerts_due(
            &tenant,
            month,
            &budget,
            &evaluation,
            &BTreeSet::new(),
            false,
            now,
        );
        assert!(
            no_webhook
                .iter()
                .all(|a| a.delivery.status == DeliveryStatus::NoWebhook)
        );
    }
}
