//! One budget run: evaluate every tenant's budget, raise the alerts due, keep the block
//! list, deliver what is due.
//!
//! For each tenant with a budget:
//! 1. the month's spend is the invoice preview of its usage so far (rollups, then hourly
//!    counters not yet rolled up), and the forecast prices the projected usage with the
//!    same plan ([`tollgate_core::spend`]);
//! 2. every threshold newly crossed, and the forecast when it says the budget will be
//!    exceeded, becomes an alert written with "only if absent", so concurrent or repeated
//!    runs raise each alert once;
//! 3. a budget with a hard limit that is used up puts the tenant on the block list the
//!    edge snapshot serves (402 at the edge); a budget raised above the spend, or a new
//!    month, takes it off;
//! 4. alerts whose webhook delivery is due (this month's and last month's) are delivered:
//!    an attempt is claimed on the alert before it is made, so two runs never deliver the
//!    same attempt; failures are retried on later runs with backoff
//!    ([`tollgate_core::webhook::retry_delay`]) up to [`MAX_ATTEMPTS`].
//!
//! A tenant whose evaluation fails is reported and skipped; the others go on.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use tollgate_core::alert::{Alert, AlertTrigger, Delivery, DeliveryStatus, alerts_due};
use tollgate_core::budget::{Budget, BudgetVerdict};
use tollgate_core::ids::TenantId;
use tollgate_core::meter::MeterCatalog;
use tollgate_core::plan::PlanTimeline;
use tollgate_core::spend::month_spend;
use tollgate_core::tenant::TenantProfile;
use tollgate_core::usage::quantities_by_meter;
use tollgate_core::webhook::{MAX_ATTEMPTS, WebhookSecret, retry_delay};
use tollgate_core::window::{Granularity, Window};
use tollgate_store::{BudgetBlock, DynamoDbStore, StoreError, WebhookEndpoint};

use crate::webhook::WebhookClient;

/// Tenants read per page of the tenant listing.
const PAGE: usize = 100;

/// How long a claimed delivery attempt keeps other runs off it.
const CLAIM: Duration = Duration::minutes(2);

/// The body of a webhook delivery: the alert, as `GET /v1/alerts` shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertNotification<'a> {
    /// `budget.threshold_crossed` or `budget.forecast_exceeds`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub alert: &'a Alert,
}

impl<'a> AlertNotification<'a> {
    pub fn of(alert: &'a Alert) -> AlertNotification<'a> {
        let kind = match alert.trigger {
            AlertTrigger::Threshold { .. } => "budget.threshold_crossed",
            AlertTrigger::Forecast => "budget.forecast_exceeds",
        };
        AlertNotification { kind, alert }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BudgetReport {
    pub tenants: usize,
    /// Tenants with a budget that were evaluated.
    pub evaluated: usize,
    pub alerts_raised: usize,
    pub deliveries_succeeded: usize,
    /// Attempts that failed and will be retried.
    pub deliveries_retrying: usize,
    /// Deliveries given up (last attempt failed, or the receiver refused for good).
    pub deliveries_failed: usize,
    pub blocked: Vec<TenantId>,
    pub unblocked: Vec<TenantId>,
    /// Tenants skipped, with the reason (a plan with no version in force, a budget in
    /// another currency than the plan, a failed read).
    pub skipped: BTreeMap<TenantId, String>,
    /// False when the run stopped early for the deadline.
    pub complete: bool,
}

/// Why a run could not go on at all.
#[derive(Debug, thiserror::Error)]
pub enum BudgetRunError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The budget job.
#[derive(Debug)]
pub struct BudgetRun {
    pub store: DynamoDbStore,
    pub catalog: MeterCatalog,
    pub webhooks: WebhookClient,
    /// Stop taking tenants when less than this remains before the deadline.
    pub safety_margin: std::time::Duration,
}

impl BudgetRun {
    /// Evaluates every tenant at `now`, stopping between tenants near `deadline`.
    pub async fn run(
        &self,
        now: DateTime<Utc>,
        deadline: Instant,
    ) -> Result<BudgetReport, BudgetRunError> {
        let mut report = BudgetReport {
            complete: true,
            ..BudgetReport::default()
        };
        let blocks: BTreeMap<TenantId, BudgetBlock> = self
            .store
            .budget_blocks()
            .await?
            .into_iter()
            .map(|block| (block.tenant.clone(), block))
            .collect();
        let mut after: Option<TenantId> = None;
        loop {
            let page = self.store.tenants(after.as_ref(), PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.tenant.clone());
            for profile in &page {
                if Instant::now() + self.safety_margin >= deadline {
                    report.complete = false;
                    return Ok(report);
                }
                report.tenants += 1;
                let block = blocks.get(&profile.tenant);
                if let Err(reason) = self.tenant(profile, block, now, &mut report).await {
                    tracing::warn!(tenant = %profile.tenant, %reason, "budget not evaluated");
                    report.skipped.insert(profile.tenant.clone(), reason);
                }
            }
            if page.len() < PAGE {
                break;
            }
        }
        Ok(report)
    }

    async fn tenant(
        &self,
        profile: &TenantProfile,
        block: Option<&BudgetBlock>,
        now: DateTime<Utc>,
        report: &mut BudgetReport,
    ) -> Result<(), String> {
        let tenant = &profile.tenant;
        let month = Window::containing(Granularity::Month, now);
        let budget = self.store.budget(tenant).await.map_err(|e| e.to_string())?;
        let Some(budget) = budget else {
            if block.is_some()
                && self
                    .store
                    .lift_budget_block(tenant)
                    .await
                    .map_err(|e| e.to_string())?
            {
                report.unblocked.push(tenant.clone());
            }
            return Ok(());
        };
        report.evaluated += 1;
        let webhook = self
            .store
            .webhook(tenant)
            .await
            .map_err(|e| e.to_string())?;
        let mut alerts = self
            .store
            .alerts(tenant, Some(month))
            .await
            .map_err(|e| e.to_string())?;
        let verdict = self
            .evaluate(
                profile,
                &budget,
                now,
                webhook.is_some(),
                &mut alerts,
                report,
            )
            .await?;
        let blocked_now = block.is_some_and(|b| b.month == month);
        match verdict {
            BudgetVerdict::Block if !blocked_now => {
                self.store
                    .block_for_budget(&BudgetBlock {
                        tenant: tenant.clone(),
                        month,
                        since: now,
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                report.blocked.push(tenant.clone());
            }
            BudgetVerdict::Allow if block.is_some() => {
                self.store
                    .lift_budget_block(tenant)
                    .await
                    .map_err(|e| e.to_string())?;
                report.unblocked.push(tenant.clone());
            }
            _ => {}
        }
        self.deliver_due(tenant, month, alerts, webhook.as_ref(), now, report)
            .await
            .map_err(|e| e.to_string())
    }

    /// Raises the alerts due that are not among `alerts` (this month's), adds the ones
    /// this run created to them, and returns the verdict.
    async fn evaluate(
        &self,
        profile: &TenantProfile,
        budget: &Budget,
        now: DateTime<Utc>,
        has_webhook: bool,
        alerts: &mut Vec<Alert>,
        report: &mut BudgetReport,
    ) -> Result<BudgetVerdict, String> {
        let tenant = &profile.tenant;
        let month = Window::containing(Granularity::Month, now);
        let rows = self
            .store
            .usage_view(tenant, Granularity::Month, month.start(), month.end(), now)
            .await
            .map_err(|e| e.to_string())?;
        let usage = quantities_by_meter(&rows, &self.catalog).map_err(|e| e.to_string())?;
        let versions = self
            .store
            .plan_versions(&profile.plan)
            .await
            .map_err(|e| e.to_string())?;
        let timeline = PlanTimeline::from_versions(&versions)
            .map_err(|e| format!("plan {}: {e}", profile.plan))?;
        let spend = month_spend(
            tenant,
            month,
            &timeline,
            &usage,
            &self.catalog,
            Some(budget),
            now,
        )
        .map_err(|e| e.to_string())?;
        let evaluation = spend.budget.ok_or_else(|| {
            format!(
                "the budget is in {} but plan {} bills in {}",
                budget.currency().code(),
                profile.plan,
                timeline.currency().code()
            )
        })?;
        let existing: BTreeSet<AlertTrigger> = alerts.iter().map(|alert| alert.trigger).collect();
        for alert in alerts_due(
            tenant,
            month,
            budget,
            &evaluation,
            &existing,
            has_webhook,
            now,
        ) {
            if self
                .store
                .create_alert(&alert)
                .await
                .map_err(|e| e.to_string())?
            {
                tracing::info!(tenant = %tenant, alert = %alert.id, severity = ?alert.severity, "budget alert raised");
                report.alerts_raised += 1;
                alerts.push(alert);
            }
        }
        Ok(evaluation.verdict)
    }

    /// Delivers the alerts whose delivery is due: of `this_month` (this month's, as the
    /// run knows them) and of last month, still being retried.
    async fn deliver_due(
        &self,
        tenant: &TenantId,
        month: Window,
        this_month: Vec<Alert>,
        webhook: Option<&WebhookEndpoint>,
        now: DateTime<Utc>,
        report: &mut BudgetReport,
    ) -> Result<(), StoreError> {
        let previous = month.previous();
        let due: Vec<Alert> = self
            .store
            .alerts(tenant, Some(previous))
            .await?
            .into_iter()
            .chain(this_month)
            .filter(|alert| alert.delivery.is_due(now))
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        let Some(endpoint) = webhook else {
            for alert in &due {
                let delivery = Delivery {
                    status: DeliveryStatus::NoWebhook,
                    next_attempt_at: None,
                    ..alert.delivery.clone()
                };
                self.store
                    .record_alert_delivery(tenant, &alert.id, alert.delivery.attempts, &delivery)
                    .await?;
            }
            return Ok(());
        };
        for alert in &due {
            self.deliver(endpoint, alert, now, report).await?;
        }
        Ok(())
    }

    async fn deliver(
        &self,
        endpoint: &WebhookEndpoint,
        alert: &Alert,
        now: DateTime<Utc>,
        report: &mut BudgetReport,
    ) -> Result<(), StoreError> {
        let attempt = alert.delivery.attempts + 1;
        let claimed = Delivery {
            attempts: attempt,
            next_attempt_at: Some(now + CLAIM),
            ..alert.delivery.clone()
        };
        if !self
            .store
            .record_alert_delivery(&alert.tenant, &alert.id, alert.delivery.attempts, &claimed)
            .await?
        {
            return Ok(());
        }
        let outcome = match (
            WebhookSecret::parse(&endpoint.secret),
            serde_json::to_vec(&AlertNotification::of(alert)),
        ) {
            (Ok(secret), Ok(body)) => self
                .webhooks
                .deliver(&endpoint.url, &secret, alert.id.as_str(), &body, now)
                .await
                .map(|_| ())
                .map_err(|e| (e.retryable(), e.reason())),
            (Err(e), _) => Err((false, format!("the stored webhook secret is invalid: {e}"))),
            (_, Err(e)) => Err((false, format!("the alert does not serialise: {e}"))),
        };
        let delivery = match outcome {
            Ok(()) => {
                report.deliveries_succeeded += 1;
                Delivery {
                    status: DeliveryStatus::Delivered,
                    attempts: attempt,
                    next_attempt_at: None,
                    last_error: None,
                    delivered_at: Some(now),
                }
            }
            Err((retryable, reason)) if retryable && attempt < MAX_ATTEMPTS => {
                report.deliveries_retrying += 1;
                let delay = retry_delay(attempt, random());
                Delivery {
                    status: DeliveryStatus::Pending,
                    attempts: attempt,
                    next_attempt_at: Some(
                        now + Duration::from_std(delay).unwrap_or(Duration::hours(1)),
                    ),
                    last_error: Some(reason),
                    delivered_at: None,
                }
            }
            Err((_, reason)) => {
                report.deliveries_failed += 1;
                Delivery {
                    status: DeliveryStatus::Failed,
                    attempts: attempt,
                    next_attempt_at: None,
                    last_error: Some(reason),
                    delivered_at: None,
                }
            }
        };
        tracing::info!(tenant = %alert.tenant, alert = %alert.id, status = ?delivery.status, attempt, "webhook delivery");
        self.store
            .record_alert_delivery(&alert.tenant, &alert.id, attempt, &delivery)
            .await?;
        Ok(())
    }
}

/// Jitter for retry delays; a failed read of the OS source only loses the jitter.
fn random() -> u64 {
    let mut bytes = [0u8; 8];
    match getrandom::fill(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => 0,
    }
}
