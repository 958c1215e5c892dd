//! The budget Lambda: configuration from the environment, then the handler loop.
//!
//! Environment:
//! - `TOLLGATE_TABLE`: the DynamoDB table.
//! - `TOLLGATE_METERS_FILE`: the meter catalog (JSON), the same file the other functions read.
//! - `TOLLGATE_WEBHOOK_TIMEOUT_SECONDS` (optional, default 10): per delivery attempt.
//! - `AWS_ENDPOINT_URL_DYNAMODB` (optional) points the SDK at DynamoDB Local.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use tollgate_budget::webhook::WebhookClient;
use tollgate_budget::{BudgetReport, BudgetRequest, BudgetRun};
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
    let job = configure().await?;
    let job = &job;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let request = BudgetRequest::from_trigger(event.payload).map_err(|e| {
            anyhow::anyhow!(
                "the payload is neither a schedule's {{\"scheduledTime\"}} nor a rollup's destination record: {e}"
            )
        })?;
        let remaining = event
            .context
            .deadline()
            .duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO);
        let reply: BudgetReport = job
            .run(request.scheduled_time, Instant::now() + remaining)
            .await?;
        tracing::info!(?reply, "budget run finished");
        Ok::<BudgetReport, lambda_runtime::Error>(reply)
    }))
    .await
}

async fn configure() -> Result<BudgetRun> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let table = var("TOLLGATE_TABLE").context("TOLLGATE_TABLE is not set")?;
    let meters_file = var("TOLLGATE_METERS_FILE").context("TOLLGATE_METERS_FILE is not set")?;
    let meters =
        std::fs::read_to_string(&meters_file).with_context(|| format!("reading {meters_file}"))?;
    let catalog =
        MeterCatalog::from_json(&meters).with_context(|| format!("meter catalog {meters_file}"))?;
    let mut webhooks = WebhookClient::new().context("building the webhook client")?;
    if let Some(seconds) = var("TOLLGATE_WEBHOOK_TIMEOUT_SECONDS") {
        let seconds: u64 = seconds
            .trim()
            .parse()
            .context("TOLLGATE_WEBHOOK_TIMEOUT_SECONDS must be a whole number")?;
        webhooks = webhooks.with_timeout(Duration::from_secs(seconds));
    }
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    Ok(BudgetRun {
        store: DynamoDbStore::new(aws_sdk_dynamodb::Client::new(&config), table),
        catalog,
        webhooks,
        safety_margin: Duration::from_secs(20),
    })
}
