//! The billing-sync Lambda: configuration from the environment, then the handler loop.
//!
//! Environment:
//! - `TOLLGATE_TABLE`: the DynamoDB table.
//! - `TOLLGATE_METERS_FILE`: the meter catalog (JSON); meters with a `stripe` section are
//!   reported.
//! - `TOLLGATE_STRIPE_SECRET_KEY`: the Stripe secret (or restricted) key. In AWS the
//!   template fills it from Secrets Manager with a dynamic reference; it is never logged.
//! - `TOLLGATE_STRIPE_API_BASE` (optional): another API base, such as a local stand-in.
//! - `TOLLGATE_STRIPE_CALLS_PER_SECOND` (optional): the client-side limit; by default
//!   1,000 for live keys and 25 for test keys.
//! - `TOLLGATE_BILLING_LOOKBACK_DAYS` (optional, default 9, at most 34) and
//!   `TOLLGATE_BILLING_CONCURRENCY` (optional, default 4 tenants at once).
//! - `AWS_ENDPOINT_URL_DYNAMODB` (optional) points the SDK at DynamoDB Local.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use tollgate_billing_sync::close::DEFAULT_CLOSE_AFTER;
use tollgate_billing_sync::pacing::RateLimiter;
use tollgate_billing_sync::retry::RetryPolicy;
use tollgate_billing_sync::stripe::{SecretKey, StripeConfig, StripeMeterEvents};
use tollgate_billing_sync::{BillingSync, DEFAULT_LOOKBACK_DAYS, SyncReport, SyncRequest};
use tollgate_core::meter::MeterCatalog;
use tollgate_store::DynamoDbStore;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt()
        // RUST_LOG, with the targets that print payloads (keys, secrets) held back.
        .with_env_filter(tollgate_store::logging::env_filter())
        .without_time()
        .json()
        .init();
    let job = Arc::new(configure().await?);
    let job = &job;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let request: SyncRequest = serde_json::from_value(event.payload).map_err(|e| {
            anyhow::anyhow!("the schedule's payload is not a billing-sync request: {e}")
        })?;
        let remaining = event
            .context
            .deadline()
            .duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO);
        let reply: SyncReport = job
            .run(request.scheduled_time, Instant::now() + remaining)
            .await?;
        tracing::info!(?reply, "billing sync finished");
        // Metrics for the template's alarms, through the log (no CloudWatch call).
        println!("{}", reply.emf_line(chrono::Utc::now()));
        Ok::<SyncReport, lambda_runtime::Error>(reply)
    }))
    .await
}

async fn configure() -> Result<BillingSync<StripeMeterEvents>> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let number = |name: &str, default: u32| -> Result<u32> {
        match var(name) {
            Some(text) => text
                .trim()
                .parse()
                .with_context(|| format!("{name} must be a whole number")),
            None => Ok(default),
        }
    };
    let table = var("TOLLGATE_TABLE").context("TOLLGATE_TABLE is not set")?;
    let meters_file = var("TOLLGATE_METERS_FILE").context("TOLLGATE_METERS_FILE is not set")?;
    let meters =
        std::fs::read_to_string(&meters_file).with_context(|| format!("reading {meters_file}"))?;
    let catalog =
        MeterCatalog::from_json(&meters).with_context(|| format!("meter catalog {meters_file}"))?;
    let key = SecretKey::new(
        var("TOLLGATE_STRIPE_SECRET_KEY").context("TOLLGATE_STRIPE_SECRET_KEY is not set")?,
    );
    let limiter = match var("TOLLGATE_STRIPE_CALLS_PER_SECOND") {
        Some(_) => {
            let rate = NonZeroU32::new(number("TOLLGATE_STRIPE_CALLS_PER_SECOND", 1)?)
                .context("TOLLGATE_STRIPE_CALLS_PER_SECOND must be at least 1")?;
            RateLimiter::new(rate, rate)
        }
        None if key.is_test_mode() => RateLimiter::stripe_test(),
        None => RateLimiter::stripe_live(),
    };
    let mut stripe = StripeConfig::new(key);
    if let Some(base) = var("TOLLGATE_STRIPE_API_BASE") {
        stripe = stripe.with_base_url(base);
    }
    let stripe = StripeMeterEvents::new(&stripe).context("building the Stripe client")?;
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    Ok(BillingSync {
        store: DynamoDbStore::new(aws_sdk_dynamodb::Client::new(&config), table),
        catalog,
        stripe,
        limiter,
        retry: RetryPolicy::default(),
        lookback_days: number("TOLLGATE_BILLING_LOOKBACK_DAYS", DEFAULT_LOOKBACK_DAYS)?,
        concurrency: usize::try_from(number("TOLLGATE_BILLING_CONCURRENCY", 4)?.max(1))
            .unwrap_or(1),
        close_after: DEFAULT_CLOSE_AFTER,
        safety_margin: Duration::from_secs(30),
    })
}
