//! The port billing-sync reports through: Stripe's meter events, one call per event.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// One meter event as `POST /v1/billing/meter_events` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterEventRequest {
    /// The Stripe meter's `event_name`.
    pub event_name: String,
    /// `payload[stripe_customer_id]`: the tenant's Stripe customer (`cus_…`).
    pub customer: String,
    /// `payload[value]`: whole Stripe units.
    pub value: u64,
    /// `identifier`: deterministic, ≤ 100 characters; Stripe keeps it unique for ≥ 24 h.
    /// Also sent as the `Idempotency-Key`, so a resend after a crash is a replay.
    pub identifier: String,
    /// `timestamp`: within the past 35 days, at most 5 minutes ahead.
    pub timestamp: DateTime<Utc>,
}

/// Why Stripe did not take an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeterEventFailure {
    /// Worth retrying with the same identifier: 429, 5xx, 409 idempotency races or a
    /// network failure (no status).
    #[error("stripe answered {status:?}, retryable: {message}")]
    Retryable {
        status: Option<u16>,
        /// Stripe's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
        message: String,
    },
    /// Stripe refused the event (4xx validation): retrying the same request cannot help.
    #[error("stripe rejected the event ({status}, {code:?}): {message}")]
    Rejected {
        status: u16,
        code: Option<String>,
        message: String,
    },
}

/// Sends meter events to Stripe. One call per event, no retries inside: the caller
/// paces calls and retries with the same identifier.
pub trait MeterEvents: Send + Sync {
    fn send(
        &self,
        event: &MeterEventRequest,
    ) -> impl Future<Output = Result<(), MeterEventFailure>> + Send;
}
