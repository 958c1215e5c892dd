//! One billing-sync run: every tenant's metered usage reported to Stripe, exactly once.
//!
//! For each tenant with a Stripe customer and each meter with a `stripe` mapping, over the
//! closed hours of the lookback (default 9 days: the 7-day late-event horizon with a day
//! of margin either side, and never older than Stripe's 35-day window):
//!
//! 1. Events still `pending` from an earlier run (a crash, or Stripe kept failing) are
//!    resent first, with their recorded identifier and value: Stripe's identifier and
//!    `Idempotency-Key` make a resend of an event it already took a replay, not a count.
//! 2. Each hour's quantity (hourly counters, all dimensions merged) is compared with what
//!    the ledger holds for it; the difference is recorded as the hour's next event, with
//!    the month's totals, in one versioned transaction, as `pending` — then sent, then
//!    settled `sent` or `rejected`. Whole Stripe units; the fraction carries to the next
//!    event ([`tollgate_core::billing::MonthLedger`]).
//! 3. A pending event whose hour left Stripe's window is settled `expired` and shows in
//!    the reconciliation.
//!
//! Stripe allows one concurrent call per customer and meter: a tenant's meters are synced
//! one after another and their events in order; tenants run a few at a time, all calls
//! paced by one [`RateLimiter`]. A (tenant, meter) whose events keep failing stops for
//! this run (its pending event stays for the next); a lost race with a concurrent run
//! stops it too, with nothing written twice.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tollgate_core::billing::{
    EventStatus, LedgerEvent, MeterLedger, StripeMeter, event_identifier, event_timestamp,
    oldest_reportable,
};
use tollgate_core::ids::{MeterName, TenantId};
use tollgate_core::meter::MeterCatalog;
use tollgate_core::tenant::TenantProfile;
use tollgate_core::usage::{UsageRow, quantities_by_meter};
use tollgate_core::window::{Granularity, Window};
use tollgate_store::{DynamoDbStore, StoreError};

use crate::close::{close_month, month_to_close};
use crate::pacing::RateLimiter;
use crate::ports::{MeterEventFailure, MeterEventRequest, MeterEvents};
use crate::retry::{RetryPolicy, send_with_retries};

/// Days of closed hours each run looks at, by default.
pub const DEFAULT_LOOKBACK_DAYS: u32 = 9;

/// Tenants read per page of the tenant listing.
const PAGE: usize = 100;

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncReport {
    pub tenants: usize,
    /// Tenants without a Stripe customer: nothing to report for them.
    pub tenants_without_customer: usize,
    /// Events recorded this run (new hours and corrections), sent or not.
    pub events_recorded: usize,
    /// Events recorded with 0 whole units (their fraction carried), never sent.
    pub events_carried: usize,
    /// Events Stripe accepted this run, resends of pending ones included.
    pub events_sent: usize,
    /// Whole Stripe units in those.
    pub units_sent: u64,
    /// Pending events from earlier runs resent.
    pub events_resent: usize,
    pub events_rejected: usize,
    pub events_expired: usize,
    /// Month statements frozen this run.
    pub statements_closed: usize,
    /// (tenant, meter) pairs stopped for this run, with the reason; their pending events
    /// are resent next run.
    pub stopped: Vec<String>,
    /// False when the run stopped early for the deadline.
    pub complete: bool,
}

impl SyncReport {
    fn add(&mut self, other: SyncReport) {
        self.tenants_without_customer += other.tenants_without_customer;
        self.statements_closed += other.statements_closed;
        self.events_recorded += other.events_recorded;
        self.events_carried += other.events_carried;
        self.events_sent += other.events_sent;
        self.units_sent += other.units_sent;
        self.events_resent += other.events_resent;
        self.events_rejected += other.events_rejected;
        self.events_expired += other.events_expired;
        self.stopped.extend(other.stopped);
    }
}

/// Why a run could not go on at all.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("lookbackDays must be between 1 and 34, got {0}")]
    BadLookback(u32),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why one (tenant, meter) stopped for this run.
#[derive(Debug, thiserror::Error)]
enum MeterStop {
    #[error("Stripe kept failing: {0}")]
    Stripe(MeterEventFailure),
    #[error("another run wrote the ledger first")]
    LostRace,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Usage(String),
}

/// The billing-sync job.
#[derive(Debug)]
pub struct BillingSync<E> {
    pub store: DynamoDbStore,
    pub catalog: MeterCatalog,
    pub stripe: E,
    pub limiter: RateLimiter,
    pub retry: RetryPolicy,
    pub lookback_days: u32,
    /// Tenants synced at once.
    pub concurrency: usize,
    /// How long after a month's end its statement is frozen.
    pub close_after: Duration,
    /// Stop taking tenants when less than this remains before the deadline.
    pub safety_margin: std::time::Duration,
}

impl<E: MeterEvents + 'static> BillingSync<E> {
    /// Reports every tenant's closed hours at `now`, stopping between tenants near
    /// `deadline`.
    pub async fn run(
        self: &std::sync::Arc<Self>,
        now: DateTime<Utc>,
        deadline: Instant,
    ) -> Result<SyncReport, SyncError> {
        if !(1..=34).contains(&self.lookback_days) {
            return Err(SyncError::BadLookback(self.lookback_days));
        }
        let mut report = SyncReport {
            complete: true,
            ..SyncReport::default()
        };
        let mut after: Option<TenantId> = None;
        let mut running = JoinSet::new();
        loop {
            let page = self.store.tenants(after.as_ref(), PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.tenant.clone());
            let full_page = page.len() == PAGE;
            for profile in page {
                if Instant::now() + self.safety_margin >= deadline {
                    report.complete = false;
                    break;
                }
                report.tenants += 1;
                while running.len() >= self.concurrency.max(1) {
                    if let Some(done) = running.join_next().await {
                        report.add(done.unwrap_or_default());
                    }
                }
                let job = std::sync::Arc::clone(self);
                running.spawn(async move { job.tenant(&profile, now).await });
            }
            if !full_page || !report.complete {
                break;
            }
        }
        while let Some(done) = running.join_next().await {
            report.add(done.unwrap_or_default());
        }
        Ok(report)
    }

    /// Closes the tenant's last month when due, then syncs every Stripe meter of the
    /// tenant, one meter after another.
    pub async fn tenant(&self, profile: &TenantProfile, now: DateTime<Utc>) -> SyncReport {
        let mut report = SyncReport::default();
        if let Some(month) = month_to_close(now, self.close_after) {
            match close_month(&self.store, &self.catalog, profile, month, now).await {
                Ok(Some(_)) => report.statements_closed += 1,
                Ok(None) => {}
                Err(e) => report
                    .stopped
                    .push(format!("{}: statement of {month}: {e}", profile.tenant)),
            }
        }
        let Some(customer) = profile.stripe_customer_id.as_deref() else {
            report.tenants_without_customer += 1;
            return report;
        };
        for meter in self.catalog.meters() {
            let Some(stripe) = &meter.stripe else {
                continue;
            };
            if let Err(stop) = self
                .meter(
                    &profile.tenant,
                    customer,
                    &meter.name,
                    stripe,
                    now,
                    &mut report,
                )
                .await
            {
                tracing::warn!(tenant = %profile.tenant, meter = %meter.name, %stop, "billing sync stopped");
                report
                    .stopped
                    .push(format!("{}/{}: {stop}", profile.tenant, meter.name));
            }
        }
        report
    }

    async fn meter(
        &self,
        tenant: &TenantId,
        customer: &str,
        meter: &MeterName,
        stripe: &StripeMeter,
        now: DateTime<Utc>,
        report: &mut SyncReport,
    ) -> Result<(), MeterStop> {
        let last = Window::containing(Granularity::Hour, now).previous();
        let earliest =
            (now - Duration::days(i64::from(self.lookback_days))).max(oldest_reportable(now));
        let first = Window::containing(Granularity::Hour, earliest);
        let first = if first.start() < earliest {
            first.next()
        } else {
            first
        };
        if first.start() > last.start() {
            return Ok(());
        }
        // Pending events of hours that just left the window are older than `first`: one
        // read reaches a little further back for them.
        let stale_from = Window::containing(Granularity::Hour, first.start() - Duration::days(2));
        let (stale, events): (Vec<LedgerEvent>, Vec<LedgerEvent>) = self
            .store
            .ledger_events(tenant, meter, stale_from, last)
            .await?
            .into_iter()
            .partition(|e| e.hour.start() < first.start());
        let mut ledgers = Ledgers::new(self, tenant, meter);

        let is_pending = |e: &&LedgerEvent| e.status == EventStatus::Pending;
        let pending: Vec<LedgerEvent> = stale
            .iter()
            .chain(&events)
            .filter(is_pending)
            .cloned()
            .collect();
        for event in pending {
            report.events_resent += 1;
            self.send_and_settle(&mut ledgers, event, now, report)
                .await?;
        }

        let rows = self
            .store
            .usage_at(tenant, Granularity::Hour, first.start(), last.end(), now)
            .await?;
        let mut by_hour: BTreeMap<Window, Vec<UsageRow>> = BTreeMap::new();
        for row in rows.into_iter().filter(|r| &r.key.meter == meter) {
            by_hour.entry(row.key.window).or_default().push(row);
        }
        let mut covered: BTreeMap<Window, (Decimal, u32)> = BTreeMap::new();
        for event in &events {
            let entry = covered.entry(event.hour).or_default();
            entry.0 += event.quantity;
            entry.1 = entry.1.max(event.sequence + 1);
        }
        let hours: std::collections::BTreeSet<Window> =
            by_hour.keys().chain(covered.keys()).copied().collect();
        for hour in hours {
            let quantity = match by_hour.get(&hour) {
                Some(rows) => quantities_by_meter(rows, &self.catalog)
                    .map_err(|e| MeterStop::Usage(e.to_string()))?
                    .get(meter)
                    .copied()
                    .unwrap_or_default(),
                None => Decimal::ZERO,
            };
            let (already, sequence) = covered.get(&hour).copied().unwrap_or_default();
            let delta = quantity - already;
            if delta.is_zero() {
                continue;
            }
            let Ok(timestamp) = event_timestamp(hour, now) else {
                continue;
            };
            let ledger = ledgers.get(hour).await?;
            let (recorded, value) = ledger
                .recorded
                .report(delta, stripe.units_per_quantity)
                .map_err(|e| MeterStop::Usage(e.to_string()))?;
            let event = LedgerEvent {
                tenant: tenant.clone(),
                meter: meter.clone(),
                hour,
                sequence,
                identifier: event_identifier(tenant, meter, hour, sequence),
                event_name: stripe.event_name.clone(),
                customer: customer.to_owned(),
                value,
                quantity: delta,
                timestamp,
                status: if value == 0 {
                    EventStatus::Carried
                } else {
                    EventStatus::Pending
                },
                recorded_at: now,
                settled_at: None,
                error: None,
            };
            let after = MeterLedger {
                recorded,
                version: ledger.version + 1,
                ..ledger
            };
            let expected = ledgers.expected(hour);
            if !self
                .store
                .record_ledger_event(&event, expected, &after)
                .await?
            {
                return Err(MeterStop::LostRace);
            }
            ledgers.set(hour, after);
            report.events_recorded += 1;
            if value == 0 {
                report.events_carried += 1;
                continue;
            }
            self.send_and_settle(&mut ledgers, event, now, report)
                .await?;
        }
        Ok(())
    }

    /// Sends a pending event and settles it; expired when its hour left Stripe's window.
    async fn send_and_settle(
        &self,
        ledgers: &mut Ledgers<'_, E>,
        mut event: LedgerEvent,
        now: DateTime<Utc>,
        report: &mut SyncReport,
    ) -> Result<(), MeterStop> {
        let outcome = if event.hour.start() < oldest_reportable(now) {
            Outcome::Expired
        } else {
            let request = MeterEventRequest {
                event_name: event.event_name.clone(),
                customer: event.customer.clone(),
                value: event.value,
                identifier: event.identifier.clone(),
                timestamp: event.timestamp,
            };
            match send_with_retries(&self.stripe, &self.limiter, &request, &self.retry).await {
                Ok(()) => Outcome::Sent,
                Err(failure) if crate::stripe::is_duplicate_identifier(&failure) => Outcome::Sent,
                Err(MeterEventFailure::Rejected {
                    status,
                    code,
                    message,
                }) => {
                    Outcome::Rejected(format!("{status} {}: {message}", code.unwrap_or_default()))
                }
                Err(failure) => {
                    event.error = Some(failure.to_string());
                    self.store.note_pending_event(&event).await?;
                    return Err(MeterStop::Stripe(failure));
                }
            }
        };
        for _ in 0..3 {
            let ledger = ledgers.get(event.hour).await?;
            let mut after = MeterLedger {
                version: ledger.version + 1,
                ..ledger
            };
            let mut settled = event.clone();
            settled.settled_at = Some(now);
            match &outcome {
                Outcome::Sent => {
                    settled.status = EventStatus::Sent;
                    settled.error = None;
                    after.units_accepted += event.value;
                }
                Outcome::Rejected(reason) => {
                    settled.status = EventStatus::Rejected;
                    settled.error = Some(reason.clone());
                    after.units_rejected += event.value;
                    after.rejected_quantity += event.quantity;
                }
                Outcome::Expired => {
                    settled.status = EventStatus::Expired;
                    settled.error =
                        Some("its hour left Stripe's 35-day window before it was sent".to_owned());
                    after.units_expired += event.value;
                    after.expired_quantity += event.quantity;
                }
            }
            if self
                .store
                .settle_ledger_event(&settled, ledger.version, &after)
                .await?
            {
                ledgers.set(event.hour, after);
                match outcome {
                    Outcome::Sent => {
                        report.events_sent += 1;
                        report.units_sent += event.value;
                    }
                    Outcome::Rejected(_) => report.events_rejected += 1,
                    Outcome::Expired => report.events_expired += 1,
                }
                return Ok(());
            }
            // Another run moved the totals (or settled this event): read them again.
            ledgers.forget(event.hour);
        }
        Err(MeterStop::LostRace)
    }
}

enum Outcome {
    Sent,
    Rejected(String),
    Expired,
}

/// The month totals of one (tenant, meter), read once per month and kept current.
struct Ledgers<'a, E> {
    job: &'a BillingSync<E>,
    tenant: &'a TenantId,
    meter: &'a MeterName,
    /// The totals per month, and whether they are stored yet.
    months: BTreeMap<Window, (MeterLedger, bool)>,
}

impl<'a, E> Ledgers<'a, E> {
    fn new(job: &'a BillingSync<E>, tenant: &'a TenantId, meter: &'a MeterName) -> Self {
        Ledgers {
            job,
            tenant,
            meter,
            months: BTreeMap::new(),
        }
    }

    fn month(hour: Window) -> Window {
        Window::containing(Granularity::Month, hour.start())
    }

    async fn get(&mut self, hour: Window) -> Result<MeterLedger, StoreError> {
        let month = Self::month(hour);
        if let Some((ledger, _)) = self.months.get(&month) {
            return Ok(*ledger);
        }
        let stored = self
            .job
            .store
            .meter_ledger(self.tenant, self.meter, month)
            .await?;
        let entry = (stored.unwrap_or_default(), stored.is_some());
        self.months.insert(month, entry);
        Ok(entry.0)
    }

    /// The version the stored totals must have for the next write; `None` before the
    /// month's first event.
    fn expected(&self, hour: Window) -> Option<u64> {
        self.months
            .get(&Self::month(hour))
            .filter(|(_, stored)| *stored)
            .map(|(ledger, _)| ledger.version)
    }

    fn set(&mut self, hour: Window, ledger: MeterLedger) {
        self.months.insert(Self::month(hour), (ledger, true));
    }

    fn forget(&mut self, hour: Window) {
        self.months.remove(&Self::month(hour));
    }
}
