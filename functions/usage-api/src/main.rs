//! The usage API Lambda: reads its configuration, builds the DynamoDB store, the SQS
//! queue and the meter catalog once per cold start, then serves Function URL requests.
//!
//! Environment:
//! - `TOLLGATE_TABLE`: the DynamoDB table.
//! - `TOLLGATE_QUEUE_URL`: the usage queue.
//! - `TOLLGATE_METERS_FILE`: the meter catalog (JSON, as `events/samples/meters.json`).
//! - `TOLLGATE_LATE_HORIZON_HOURS` (optional, default 168): how late an event may be;
//!   the ingest reads the same variable, so both judge event times alike.
//! - `TOLLGATE_SNAPSHOT_MAX_AGE_SECONDS` (optional, whole seconds, at most 300): how long
//!   this instance serves a built edge snapshot again instead of rebuilding it for every
//!   gateway; `0` rebuilds on every request. The SAM template sets 15, and why 15 is at
//!   `RECOMMENDED_SNAPSHOT_MAX_AGE` in `snapshot_cache.rs`. Unset means `0`: the deployment
//!   always sets it, so unset is a local runner (the local stack, the demo), where a
//!   snapshot read right after a write (a budget block, a suspension) must show it.
//! - `AWS_ENDPOINT_URL_DYNAMODB` / `AWS_ENDPOINT_URL_SQS` (optional) point the SDK at
//!   local emulators; `aws-config` reads them itself.
//! - `RUST_LOG` (optional) sets the log filter; `info` by default. Targets that print
//!   request payloads (keys, secrets) are held back whatever it says
//!   (`tollgate_store::logging`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use tollgate_core::meter::MeterCatalog;
use tollgate_core::window::EventTimePolicy;
use tollgate_store::DynamoDbStore;
use tollgate_usage_api::App;
use tollgate_usage_api::snapshot_cache::MAX_SNAPSHOT_MAX_AGE;
use tollgate_usage_api::sqs::SqsEventQueue;

/// The configuration, read from the environment.
#[derive(Debug)]
struct Config {
    table: String,
    queue_url: String,
    meters_file: PathBuf,
    policy: EventTimePolicy,
    snapshot_max_age: Duration,
}

impl Config {
    /// Reads every variable and reports all missing ones at once.
    fn from_env() -> anyhow::Result<Config> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let (table, queue_url, meters_file) = (
            var("TOLLGATE_TABLE"),
            var("TOLLGATE_QUEUE_URL"),
            var("TOLLGATE_METERS_FILE"),
        );
        let missing: Vec<&str> = [
            ("TOLLGATE_TABLE", table.is_none()),
            ("TOLLGATE_QUEUE_URL", queue_url.is_none()),
            ("TOLLGATE_METERS_FILE", meters_file.is_none()),
        ]
        .into_iter()
        .filter_map(|(name, missing)| missing.then_some(name))
        .collect();
        let mut policy = EventTimePolicy::default();
        if let Some(hours) = var("TOLLGATE_LATE_HORIZON_HOURS") {
            let hours: u32 = hours
                .trim()
                .parse()
                .context("TOLLGATE_LATE_HORIZON_HOURS must be a whole number of hours")?;
            policy.late_horizon = chrono::Duration::hours(i64::from(hours));
        }
        let mut snapshot_max_age = Duration::ZERO;
        if let Some(seconds) = var("TOLLGATE_SNAPSHOT_MAX_AGE_SECONDS") {
            let seconds: u64 = seconds
                .trim()
                .parse()
                .context("TOLLGATE_SNAPSHOT_MAX_AGE_SECONDS must be a whole number of seconds")?;
            snapshot_max_age = Duration::from_secs(seconds);
            if snapshot_max_age > MAX_SNAPSHOT_MAX_AGE {
                bail!(
                    "TOLLGATE_SNAPSHOT_MAX_AGE_SECONDS is {seconds}; at most {} (the gateways' \
                     default stale.maxAgeSeconds) is accepted",
                    MAX_SNAPSHOT_MAX_AGE.as_secs()
                );
            }
        }
        match (table, queue_url, meters_file) {
            (Some(table), Some(queue_url), Some(meters_file)) => Ok(Config {
                table,
                queue_url,
                meters_file: PathBuf::from(meters_file),
                policy,
                snapshot_max_age,
            }),
            _ => bail!("missing environment variables: {}", missing.join(", ")),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        // RUST_LOG, with the targets that print payloads (keys, secrets) held back.
        .with_env_filter(tollgate_store::logging::env_filter())
        .with_ansi(false)
        .without_time()
        .init();

    let config = Config::from_env()?;
    let meters = std::fs::read_to_string(&config.meters_file)
        .with_context(|| format!("reading {}", config.meters_file.display()))?;
    let catalog = MeterCatalog::from_json(&meters)
        .with_context(|| format!("meter catalog {}", config.meters_file.display()))?;

    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let store = DynamoDbStore::new(aws_sdk_dynamodb::Client::new(&aws), config.table);
    let queue = SqsEventQueue::new(aws_sdk_sqs::Client::new(&aws), config.queue_url);
    let app = App::new(store, queue, catalog)
        .with_policy(config.policy)
        .with_snapshot_max_age(config.snapshot_max_age);
    let app = &app;

    lambda_http::run(lambda_http::service_fn(move |request| async move {
        Ok::<_, lambda_http::Error>(app.handle(request).await)
    }))
    .await
    .map_err(|e| anyhow::anyhow!(e))
}
