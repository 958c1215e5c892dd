//! [`StripeMeterEvents`]: the [`MeterEvents`] port over async-stripe's
//! `POST /v1/billing/meter_events`.
//!
//! One attempt per [`MeterEvents::send`], with the event's identifier as the
//! `Idempotency-Key`: the caller paces and retries ([`crate::retry::send_with_retries`]),
//! and a resend of an event Stripe already took is then replayed by Stripe's idempotency
//! layer instead of counted twice (or refused as a duplicate identifier).

use std::collections::HashMap;
use std::time::Duration;

use stripe::{ClientBuilder, IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_billing::billing_meter_event::CreateBillingMeterEvent;

use crate::ports::{MeterEventFailure, MeterEventRequest, MeterEvents};

/// Stripe's API, where [`StripeConfig::base_url`] points by default.
pub const STRIPE_API_BASE: &str = "https://api.stripe.com/";
/// How long one attempt (connect, send, read the answer) may take by default.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// A Stripe secret key. Its `Debug` shows no part of it, and it has no `Display`, so it
/// cannot reach a log by accident.
#[derive(Clone)]
pub struct SecretKey(String);

impl SecretKey {
    pub fn new(key: impl Into<String>) -> SecretKey {
        SecretKey(key.into())
    }

    /// Whether the key is a test-mode key (`sk_test_…`/`rk_test_…`), whose rate limit is
    /// Stripe's basic one (see [`crate::pacing`]).
    pub fn is_test_mode(&self) -> bool {
        self.0.starts_with("sk_test_") || self.0.starts_with("rk_test_")
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// How to reach Stripe.
#[derive(Debug, Clone)]
pub struct StripeConfig {
    pub secret_key: SecretKey,
    /// The API base, ending with `/` (the client appends `v1/...`); a local stand-in's
    /// URL in tests.
    pub base_url: String,
    /// The limit on one attempt; a timed-out attempt is a retryable failure.
    pub attempt_timeout: Duration,
}

impl StripeConfig {
    /// Stripe's API with the default timeout.
    pub fn new(secret_key: SecretKey) -> StripeConfig {
        StripeConfig {
            secret_key,
            base_url: STRIPE_API_BASE.to_owned(),
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
        }
    }

    /// The same, against another base URL.
    pub fn with_base_url(mut self, base_url: impl Into<String>) -> StripeConfig {
        self.base_url = base_url.into();
        self
    }
}

/// Why the Stripe client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StripeConfigError {
    /// The key or base URL is not usable (the message never contains the key).
    #[error("invalid Stripe client configuration: {0}")]
    Invalid(#[source] StripeError),
}

/// The [`MeterEvents`] adapter over async-stripe.
#[derive(Clone)]
pub struct StripeMeterEvents {
    client: stripe::Client,
}

impl std::fmt::Debug for StripeMeterEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeMeterEvents").finish_non_exhaustive()
    }
}

impl StripeMeterEvents {
    /// Builds the client: one attempt per request unless a request says otherwise.
    pub fn new(config: &StripeConfig) -> Result<StripeMeterEvents, StripeConfigError> {
        let client = ClientBuilder::new(config.secret_key.expose())
            .url(config.base_url.clone())
            .timeout(config.attempt_timeout)
            .request_strategy(RequestStrategy::Once)
            .build()
            .map_err(StripeConfigError::Invalid)?;
        Ok(StripeMeterEvents { client })
    }
}

impl MeterEvents for StripeMeterEvents {
    async fn send(&self, event: &MeterEventRequest) -> Result<(), MeterEventFailure> {
        // Stripe takes identifiers of at most 100 characters, keys of at most 255: an
        // identifier that is no valid key is refused here, as Stripe would refuse it.
        let key = IdempotencyKey::new(&event.identifier).map_err(|error| {
            MeterEventFailure::Rejected {
                status: 400,
                code: None,
                message: format!("not sent: the identifier is no valid idempotency key ({error})"),
            }
        })?;
        let payload = HashMap::from([
            ("stripe_customer_id".to_owned(), event.customer.clone()),
            ("value".to_owned(), event.value.to_string()),
        ]);
        CreateBillingMeterEvent::new(event.event_name.clone(), payload)
            .identifier(event.identifier.clone())
            .timestamp(event.timestamp.timestamp())
            .customize()
            .request_strategy(RequestStrategy::Idempotent(key))
            .send(&self.client)
            .await
            .map(|_| ())
            .map_err(failure)
    }
}

/// Whether Stripe refused an event because it already has one with this identifier.
///
/// Within 24 hours a resend is an idempotent replay (same key, same parameters) and
/// succeeds; after that Stripe still keeps the identifier and answers 400 "An event
/// already exists with identifier …" (no error code: matched on the message). The ledger
/// fixes an identifier's value when it is recorded, so that answer means "already
/// counted", never "refused".
pub fn is_duplicate_identifier(failure: &MeterEventFailure) -> bool {
    matches!(
        failure,
        MeterEventFailure::Rejected { status: 400, message, .. }
            if message.contains("already exists with identifier")
    )
}

/// Sorts a client error into retry or give up.
///
/// async-stripe does not hand back response headers, so `retry_after` is always `None`:
/// the retry wrapper's backoff applies instead. A body that could not be parsed (status
/// unknown, possibly an accepted event whose answer was garbled) is retryable: the resend
/// carries the same idempotency key.
pub fn failure(error: StripeError) -> MeterEventFailure {
    match error {
        StripeError::Stripe(api, status) => {
            let message = api
                .message
                .clone()
                .unwrap_or_else(|| api.type_.as_str().to_owned());
            if status == 409 || status == 429 || status >= 500 {
                MeterEventFailure::Retryable {
                    status: Some(status),
                    retry_after: None,
                    message,
                }
            } else {
                MeterEventFailure::Rejected {
                    status,
                    code: api.code.as_ref().map(|code| code.as_str().to_owned()),
                    message,
                }
            }
        }
        StripeError::Timeout => MeterEventFailure::Retryable {
            status: None,
            retry_after: None,
            message: "the attempt timed out".to_owned(),
        },
        StripeError::ClientError(message) | StripeError::JSONDeserialize(message) => {
            MeterEventFailure::Retryable {
                status: None,
                retry_after: None,
                message,
            }
        }
        StripeError::ConfigError(message) => MeterEventFailure::Rejected {
            status: 400,
            code: None,
            message: format!("not sent: {message}"),
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn the_secret_key_never_shows_in_debug_output() {
        let config = StripeConfig::new(SecretKey::new("sk_live_very_secret"));
        assert!(!format!("{config:?}").contains("very_secret"));
        let events = StripeMeterEvents::new(&config).unwrap();
        assert!(!format!("{events:?}").contains("very_secret"));
    }

    #[test]
    fn test_mode_keys_are_recognised() {
        assert!(SecretKey::new("sk_test_x").is_test_mode());
        assert!(!SecretKey::new("sk_live_x").is_test_mode());
    }

    #[test]
    fn network_failures_and_timeouts_are_retryable() {
        for error in [
            StripeError::Timeout,
            StripeError::ClientError("connection reset".to_owned()),
        ] {
            assert!(matches!(
                failure(error),
                MeterEventFailure::Retryable { status: None, .. }
            ));
        }
    }
}
