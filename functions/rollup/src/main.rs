//! The rollup Lambda: configuration from the environment, then the handler loop.
//!
//! Environment: `TOLLGATE_TABLE`, optional `TOLLGATE_ROLLUP_CONCURRENCY` (default 8) and
//! the usual AWS variables (`AWS_ENDPOINT_URL_DYNAMODB` points it at DynamoDB Local).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use tollgate_rollup::{Rollup, RollupReply, RollupRequest};
use tollgate_store::DynamoDbStore;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt()
        // RUST_LOG, with the targets that print payloads (keys, secrets) held back.
        .with_env_filter(tollgate_store::logging::env_filter())
        .without_time()
        .json()
        .init();
    let rollup = configure().await?;
    let rollup = &rollup;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let request: RollupRequest = serde_json::from_value(event.payload)
            .map_err(|e| anyhow::anyhow!("the schedule's payload is not a rollup request: {e}"))?;
        let remaining = event
            .context
            .deadline()
            .duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO);
        let reply: RollupReply = rollup.run(&request, Instant::now() + remaining).await?;
        tracing::info!(?reply, "rollup finished");
        Ok::<RollupReply, lambda_runtime::Error>(reply)
    }))
    .await
}

async fn configure() -> Result<Rollup> {
    let table = std::env::var("TOLLGATE_TABLE").context("TOLLGATE_TABLE is not set")?;
    let concurrency = match std::env::var("TOLLGATE_ROLLUP_CONCURRENCY") {
        Ok(text) => text
            .parse()
            .context("TOLLGATE_ROLLUP_CONCURRENCY must be a whole number")?,
        Err(_) => 8,
    };
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    Ok(Rollup {
        store: DynamoDbStore::new(aws_sdk_dynamodb::Client::new(&config), table),
        concurrency,
        page_size: 100,
        safety_margin: Duration::from_secs(20),
    })
}
