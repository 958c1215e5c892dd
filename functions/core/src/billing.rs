//! Billing sync: the rules by which metered usage becomes Stripe Billing Meter events,
//! exactly once and in whole units.
//!
//! Stripe's meter events carry whole numbers, are deduplicated by an `identifier` for at
//! least 24 hours, and must be stamped within the past 35 days. tollgate's quantities are
//! exact decimals that keep growing while late events arrive. The rules that bridge the
//! two:
//!
//! - A meter is reported to Stripe when its configuration has a `stripe` section:
//!   `eventName` (the Stripe meter's event name) and `unitsPerQuantity` (how many Stripe
//!   units one unit of the meter's quantity is; `0.000001` turns bytes into MB, `1000`
//!   turns GB-hours into milli-GB-hours). Only additive meters (`count`, `sum`,
//!   `gauge_integral`) can be reported: Stripe sums the events, so each event must carry
//!   a part of a sum.
//! - One event per (tenant, meter, closed hour). Usage that arrives later for an hour
//!   already reported is sent as a correction for that hour: a new event with its own
//!   identifier carrying the difference. Nothing billed is ever cancelled.
//! - Whole units with the remainder carried: per tenant, meter and month a [`MonthLedger`]
//!   keeps `exact`, the exact Stripe units of everything reported, and `sent`, the whole
//!   units sent. The next event carries `⌊exact'⌋ − sent`, so `sent = ⌊exact⌋` at all times
//!   and the fraction below one unit rides on the next event instead of being lost.
//!   A part too small to make a whole unit is still recorded (an event of value 0 that is
//!   never sent), so every quantity reported is accounted for in the ledger.
//! - Identifiers are a deterministic function of (tenant, meter, hour, sequence), so a
//!   crash between recording an event and Stripe's answer is resolved by resending the
//!   same identifier with the same value, never by computing a new one.
//! - The event's timestamp is the start of its hour; an hour older than Stripe's 35-day
//!   window (less a safety margin) can no longer be reported, and says so.
//!
//! ```
//! use rust_decimal::Decimal;
//! use tollgate_core::billing::MonthLedger;
//!
//! // 1 Stripe unit per 1,000 requests (priced per thousand).
//! let per_thousand = Decimal::new(1, 3);
//! let ledger = MonthLedger::default();
//! let (ledger, first) = ledger.report(Decimal::from(1_500), per_thousand)?;
//! let (ledger, second) = ledger.report(Decimal::from(700), per_thousand)?;
//! assert_eq!((first, second), (1, 1)); // 1.5 → 1, then 2.2 → 2: the 0.5 carried
//! assert_eq!(ledger.sent, 2);
//! assert_eq!(ledger.remainder(), Decimal::new(2, 1));
//! # Ok::<(), tollgate_core::billing::BillingError>(())
//! ```

use std::fmt::Write as _;

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::aggregate::Aggregation;
use crate::config::{ProblemKind, Problems, field};
use crate::ids::{MeterName, TenantId};
use crate::run_rate::is_cumulative;
use crate::window::{Granularity, Window};

/// Stripe's longest `identifier` and `event_name`.
pub const STRIPE_MAX_IDENTIFIER_LEN: usize = 100;

/// How far back Stripe accepts an event's timestamp.
pub const STRIPE_MAX_EVENT_AGE: Duration = Duration::days(35);

/// Kept off Stripe's 35-day edge, so that an event recorded now can still be retried
/// for a while before it expires.
pub const EVENT_AGE_MARGIN: Duration = Duration::hours(6);

/// How a meter is reported to Stripe, as written in the meter's configuration.
///
/// ```json
/// "stripe": { "eventName": "api_requests", "unitsPerQuantity": "0.001" }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StripeMeterConfig {
    pub event_name: String,
    /// Stripe units per unit of the meter's quantity; 1 by default.
    #[serde(default = "one")]
    pub units_per_quantity: Decimal,
}

fn one() -> Decimal {
    Decimal::ONE
}

/// A validated Stripe mapping of one meter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StripeMeter {
    pub event_name: String,
    pub units_per_quantity: Decimal,
}

impl StripeMeterConfig {
    /// Checks the mapping of a meter aggregated by `aggregation`; problems are reported
    /// under `path`.
    pub(crate) fn compile(
        &self,
        path: &str,
        aggregation: &Aggregation,
        problems: &mut Problems,
    ) -> Option<StripeMeter> {
        let mut valid = true;
        let name_len = self.event_name.chars().count();
        if self.event_name.trim().is_empty() {
            problems.report(field(path, "eventName"), ProblemKind::Empty);
            valid = false;
        } else if name_len > STRIPE_MAX_IDENTIFIER_LEN {
            problems.report(
                field(path, "eventName"),
                ProblemKind::TooLong {
                    len: name_len,
                    max: STRIPE_MAX_IDENTIFIER_LEN,
                },
            );
            valid = false;
        }
        valid &= problems
            .positive(field(path, "unitsPerQuantity"), self.units_per_quantity)
            .is_some();
        // Stripe sums the events, so only quantities whose hours add up to the month can
        // be reported: the cumulative ones.
        if !is_cumulative(aggregation) {
            problems.report(
                path.to_owned(),
                ProblemKind::NotAdditive {
                    aggregation: aggregation.kind(),
                },
            );
            valid = false;
        }
        valid.then(|| StripeMeter {
            event_name: self.event_name.clone(),
            units_per_quantity: self.units_per_quantity,
        })
    }
}

/// Why an amount could not be reported.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BillingError {
    #[error("the amount in Stripe units exceeds the range of a decimal")]
    Overflow,
    #[error("a meter event value of {value} Stripe units does not fit in 64 bits")]
    ValueTooLarge { value: Decimal },
    #[error(
        "the hour {hour} is more than 35 days old: Stripe no longer accepts events for it \
         (oldest reportable hour at this time: {oldest})"
    )]
    HourTooOld { hour: Window, oldest: DateTime<Utc> },
    #[error("the hour {hour} has not closed yet")]
    HourNotClosed { hour: Window },
    #[error("{window} is not an hour")]
    NotAnHour { window: Window },
}

/// What has been reported of one (tenant, meter, month).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MonthLedger {
    /// The meter's quantity reported so far, in the meter's unit.
    pub covered: Decimal,
    /// `covered` in exact Stripe units, plus any remainder carried in.
    pub exact: Decimal,
    /// Whole Stripe units in the events recorded so far: `⌊exact⌋` unless usage went down.
    pub sent: u64,
    /// Events recorded so far, sent or not (the next event's number).
    pub events: u32,
}

impl MonthLedger {
    /// Reports `delta` more of the meter's quantity at `units_per_quantity` Stripe units
    /// each: the ledger after it, and the whole units the event carries. A delta that
    /// does not complete a unit carries 0 (its fraction waits in `exact`); a negative
    /// delta (usage corrected downwards) carries 0 too, since billed usage is never
    /// cancelled.
    pub fn report(
        &self,
        delta: Decimal,
        units_per_quantity: Decimal,
    ) -> Result<(MonthLedger, u64), BillingError> {
        let exact = delta
            .checked_mul(units_per_quantity)
            .and_then(|units| self.exact.checked_add(units))
            .ok_or(BillingError::Overflow)?;
        let covered = self
            .covered
            .checked_add(delta)
            .ok_or(BillingError::Overflow)?;
        let whole = exact.floor();
        let value = if whole > Decimal::from(self.sent) {
            let value = whole - Decimal::from(self.sent);
            value
                .to_u64()
                .ok_or(BillingError::ValueTooLarge { value })?
        } else {
            0
        };
        let sent = self
            .sent
            .checked_add(value)
            .ok_or(BillingError::ValueTooLarge { value: whole })?;
        Ok((
            MonthLedger {
                covered,
                exact,
                sent,
                events: self.events.saturating_add(1),
            },
            value,
        ))
    }

    /// The fraction of a Stripe unit recorded but not yet sent.
    pub fn remainder(&self) -> Decimal {
        self.exact - Decimal::from(self.sent)
    }
}

/// The identifier of event `sequence` (0 for the hour's first report, then 1, 2… for its
/// corrections) of `tenant`'s `meter` for `hour`: `{tenant}/{meter}/{hour}/{sequence}`,
/// or, when that would exceed Stripe's 100 characters, the tenant and meter replaced by
/// the first 32 hex digits of their SHA-256. Deterministic, so a resend after a crash
/// carries the same identifier and Stripe deduplicates it.
pub fn event_identifier(
    tenant: &TenantId,
    meter: &MeterName,
    hour: Window,
    sequence: u32,
) -> String {
    let readable = format!("{tenant}/{meter}/{}/{sequence}", hour.key());
    if readable.len() <= STRIPE_MAX_IDENTIFIER_LEN {
        return readable;
    }
    let digest = Sha256::digest(format!("{tenant}/{meter}").as_bytes());
    let mut hex = String::with_capacity(32);
    for byte in digest.iter().take(16) {
        let _ = write!(hex, "{byte:02x}");
    }
    format!("h.{hex}/{}/{sequence}", hour.key())
}

/// The oldest hour start Stripe still takes at `now`, with [`EVENT_AGE_MARGIN`].
pub fn oldest_reportable(now: DateTime<Utc>) -> DateTime<Utc> {
    now - STRIPE_MAX_EVENT_AGE + EVENT_AGE_MARGIN
}

/// The timestamp of an event for `hour`: its start, if the hour has closed by `now` and
/// is recent enough for Stripe.
pub fn event_timestamp(hour: Window, now: DateTime<Utc>) -> Result<DateTime<Utc>, BillingError> {
    if hour.granularity() != Granularity::Hour {
        return Err(BillingError::NotAnHour { window: hour });
    }
    if hour.end() > now {
        return Err(BillingError::HourNotClosed { hour });
    }
    let oldest = oldest_reportable(now);
    if hour.start() < oldest {
        return Err(BillingError::HourTooOld { hour, oldest });
    }
    Ok(hour.start())
}

/// Where one recorded meter event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    /// Recorded; Stripe has not confirmed it yet (or a crash came between). Resent with
    /// the same identifier and value until Stripe answers.
    Pending,
    /// Stripe accepted it.
    Sent,
    /// Stripe refused it (a validation error); the reason is kept on the event.
    Rejected,
    /// Its quantity made no whole unit: recorded so the ledger covers it, never sent.
    Carried,
    /// Still pending when its hour left Stripe's 35-day window: it can no longer be sent.
    Expired,
}

/// One entry of the billing ledger: a meter event recorded before it is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEvent {
    pub tenant: TenantId,
    pub meter: MeterName,
    pub hour: Window,
    /// 0 for the hour's first report, then 1, 2… for its corrections.
    pub sequence: u32,
    pub identifier: String,
    pub event_name: String,
    pub customer: String,
    /// Whole Stripe units.
    pub value: u64,
    /// The meter's quantity this event reports (the hour's growth since its last event).
    pub quantity: Decimal,
    pub timestamp: DateTime<Utc>,
    pub status: EventStatus,
    pub recorded_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled_at: Option<DateTime<Utc>>,
    /// Stripe's reason for a rejection, or the last retryable failure while pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The ledger totals of one (tenant, meter, month).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeterLedger {
    #[serde(flatten)]
    pub recorded: MonthLedger,
    /// Whole units Stripe accepted.
    pub units_accepted: u64,
    /// Quantity and whole units of the events Stripe refused.
    pub rejected_quantity: Decimal,
    pub units_rejected: u64,
    /// Whole units of events that expired unsent.
    pub units_expired: u64,
    pub expired_quantity: Decimal,
    /// Bumped by every recorded event: the optimistic-concurrency check of the ledger.
    pub version: u64,
}

impl MeterLedger {
    /// Units recorded but not settled by Stripe yet.
    pub fn units_pending(&self) -> u64 {
        self.recorded
            .sent
            .saturating_sub(self.units_accepted)
            .saturating_sub(self.units_rejected)
            .saturating_sub(self.units_expired)
    }

    /// This ledger held against `usage`, the month's quantity in the rollups.
    pub fn reconcile(
        &self,
        tenant: &TenantId,
        meter: &MeterName,
        month: Window,
        usage: Decimal,
    ) -> Reconciliation {
        let not_billed = self.rejected_quantity + self.expired_quantity;
        let reported = self.recorded.covered - not_billed;
        Reconciliation {
            tenant: tenant.clone(),
            meter: meter.clone(),
            month,
            usage,
            reported,
            difference: (usage - reported).round_dp(RECONCILIATION_DECIMALS),
            units_accepted: self.units_accepted,
            units_pending: self.units_pending(),
            rejected: not_billed,
        }
    }
}

/// Decimal places a reconciliation difference is compared at. A gauge integral's
/// quantity is a division (`value-seconds / 3600 / 730`), so the month's quantity and the
/// sum of its hours' can differ in the 28th digit; that is arithmetic, not usage.
pub const RECONCILIATION_DECIMALS: u32 = 20;

/// The ledger of one (tenant, meter, month) held against the rollups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reconciliation {
    pub tenant: TenantId,
    pub meter: MeterName,
    pub month: Window,
    /// The month's quantity in the rollups (hourly counters not yet rolled up included).
    pub usage: Decimal,
    /// The quantity recorded in the ledger, in events Stripe accepted or still pending.
    pub reported: Decimal,
    /// `usage − reported` at [`RECONCILIATION_DECIMALS`] places: not yet reported
    /// (positive) or reported too much (negative).
    pub difference: Decimal,
    /// Whole Stripe units Stripe accepted.
    pub units_accepted: u64,
    /// Whole Stripe units recorded but not yet confirmed by Stripe.
    pub units_pending: u64,
    /// Quantity in events Stripe refused or that expired unsent, with the reasons kept
    /// on the events.
    pub rejected: Decimal,
}

impl Reconciliation {
    /// Whether the ledger accounts for exactly the usage, with nothing pending.
    pub fn is_settled(&self) -> bool {
        self.difference.is_zero() && self.units_pending == 0 && self.rejected.is_zero()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    fn hour(text: &str) -> Window {
        Window::parse_key(Granularity::Hour, text).unwrap()
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn values_are_whole_units_with_the_remainder_carried() {
        let cases = [
            // (deltas, units per quantity, expected values)
            (vec![dec!(3), dec!(4)], dec!(1), vec![3, 4]),
            (
                vec![dec!(1500), dec!(700), dec!(800)],
                dec!(0.001),
                vec![1, 1, 1],
            ),
            (
                vec![dec!(0.4), dec!(0.4), dec!(0.4)],
                dec!(1),
                vec![0, 0, 1],
            ),
            (vec![dec!(2.5), dec!(-1), dec!(2)], dec!(1), vec![2, 0, 1]),
            (vec![dec!(1.25)], dec!(1000), vec![1250]),
        ];
        for (deltas, scale, expected) in cases {
            let mut ledger = MonthLedger::default();
            let mut values = Vec::new();
            for delta in &deltas {
                let (next, value) = ledger.report(*delta, scale).unwrap();
                ledger = next;
                values.push(value);
            }
            assert_eq!(values, expected, "deltas {deltas:?} at {scale}");
            assert_eq!(ledger.events as usize, deltas.len());
        }
    }

    #[test]
    fn identifiers_are_deterministic_and_fit_stripe() {
        let tenant = TenantId::new("acme").unwrap();
        let meter = MeterName::new("api_requests").unwrap();
        let h = hour("2026-11-23T14");
        assert_eq!(
            event_identifier(&tenant, &meter, h, 0),
            "acme/api_requests/2026-11-23T14/0"
        );
        let long_tenant = TenantId::new("t".repeat(64)).unwrap();
        let long_meter = MeterName::new("m".repeat(64)).unwrap();
        let id = event_identifier(&long_tenant, &long_meter, h, 12);
        assert!(id.len() <= STRIPE_MAX_IDENTIFIER_LEN, "{id}");
        assert_eq!(id, event_identifier(&long_tenant, &long_meter, h, 12));
        assert_ne!(id, event_identifier(&long_tenant, &long_meter, h, 13));
        assert!(id.ends_with("/2026-11-23T14/12"));
    }

    #[test]
    fn timestamps_are_hour_starts_within_stripes_window() {
        let now = at("2026-11-23T14:05:00Z");
        assert_eq!(
            event_timestamp(hour("2026-11-23T13"), now).unwrap(),
            at("2026-11-23T13:00:00Z")
        );
        assert!(matches!(
            event_timestamp(hour("2026-11-23T14"), now),
            Err(BillingError::HourNotClosed { .. })
        ));
        assert!(event_timestamp(hour("2026-10-20T00"), now).is_ok());
        assert!(matches!(
            event_timestamp(hour("2026-10-19T10"), now),
            Err(BillingError::HourTooOld { .. })
        ));
    }

    fn quantity() -> impl Strategy<Value = Decimal> {
        (0u64..5_000_000, 0u32..4).prop_map(|(m, scale)| Decimal::new(m as i64, scale))
    }

    fn units_per_quantity() -> impl Strategy<Value = Decimal> {
        prop_oneof![
            Just(dec!(1)),
            Just(dec!(0.001)),
            Just(dec!(0.000001)),
            Just(dec!(1000)),
            Just(dec!(3)),
        ]
    }

    proptest! {
        /// However the usage is split into hours and corrections, the units sent are
        /// the whole part of the exact total: nothing lost, nothing billed twice.
        #[test]
        fn sent_units_are_the_floor_of_the_exact_total(
            deltas in proptest::collection::vec(quantity(), 0..60),
            scale in units_per_quantity(),
        ) {
            let mut ledger = MonthLedger::default();
            let mut sum_values: u64 = 0;
            for delta in &deltas {
                let (next, value) = ledger.report(*delta, scale).unwrap();
                ledger = next;
                sum_values += value;
            }
            let total: Decimal = deltas.iter().sum();
            prop_assert_eq!(ledger.covered, total);
            prop_assert_eq!(Decimal::from(sum_values), (total * scale).floor());
            prop_assert_eq!(ledger.sent, sum_values);
            prop_assert!(ledger.remainder() >= Decimal::ZERO && ledger.remainder() < Decimal::ONE);
        }
    }
}
