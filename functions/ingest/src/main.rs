//! The ingest Lambda: configuration from the environment, then the handler loop.
//!
//! Environment: `TOLLGATE_TABLE` (DynamoDB table), `TOLLGATE_METERS_FILE` (meter catalog
//! JSON), optional `TOLLGATE_LATE_HORIZON_HOURS` (default 168) and the usual AWS variables
//! (`AWS_ENDPOINT_URL_DYNAMODB` points it at DynamoDB Local).

use anyhow::{Context, Result};
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use chrono::Utc;
use lambda_runtime::{LambdaEvent, service_fn};
use tollgate_core::meter::MeterCatalog;
use tollgate_core::window::EventTimePolicy;
use tollgate_ingest::Ingest;
use tollgate_store::DynamoDbStore;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt()
        // RUST_LOG, with the targets that print payloads (keys, secrets) held back.
        .with_env_filter(tollgate_store::logging::env_filter())
        .without_time()
        .json()
        .init();
    let ingest = configure().await?;
    let ingest = &ingest;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let now = Utc::now();
        let (response, stats) = ingest.handle(&event.payload, now).await;
        println!("{}", stats.emf_line(now));
        Ok::<SqsBatchResponse, lambda_runtime::Error>(response)
    }))
    .await
}

async fn configure() -> Result<Ingest<DynamoDbStore>> {
    let table = std::env::var("TOLLGATE_TABLE").context("TOLLGATE_TABLE is not set")?;
    let meters_file =
        std::env::var("TOLLGATE_METERS_FILE").context("TOLLGATE_METERS_FILE is not set")?;
    let meters = std::fs::read_to_string(&meters_file)
        .with_context(|| format!("reading the meter catalog {meters_file}"))?;
    let catalog = MeterCatalog::from_json(&meters).context("the meter catalog is invalid")?;
    let mut policy = EventTimePolicy::default();
    if let Ok(hours) = std::env::var("TOLLGATE_LATE_HORIZON_HOURS") {
        let hours: i64 = hours
            .parse()
            .context("TOLLGATE_LATE_HORIZON_HOURS must be a whole number of hours")?;
        policy.late_horizon = chrono::Duration::hours(hours);
    }
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let store = DynamoDbStore::new(aws_sdk_dynamodb::Client::new(&config), table);
    Ok(Ingest::new(store, catalog, policy))
}
