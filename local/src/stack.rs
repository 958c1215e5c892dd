//! The whole pipeline on one machine: DynamoDB Local, the SQS emulator with the usage
//! queue and its DLQ, and the real `ingest`, `rollup` and `usage-api` binaries behind an
//! SQS event source mapping, a schedule and a Function URL.
//!
//! `cargo xtask demo` and the end-to-end tests start it through [`LocalStack::start`], so
//! both exercise exactly what a deployment runs, minus AWS.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use thiserror::Error;
use tollgate_devstack::{DynamoDbLocal, RunningDynamoDbLocal, RunningSqsServer, SqsServer};
use tollgate_store::DynamoDbStore;

use crate::{
    FunctionSpec, FunctionUrl, InvokeError, LocalFunction, MappingMetrics, RunningSchedule,
    Scheduler, SqsMapping, SqsMappingConfig, create_queue_with_dlq, local_sqs_client,
};

/// The function binaries the stack runs.
pub const FUNCTION_BINARIES: [&str; 3] = ["ingest", "rollup", "usage-api"];

/// A step of starting the stack failed.
#[derive(Debug, Error)]
#[error("local stack: {step}: {source}")]
pub struct StackError {
    pub step: &'static str,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

fn step<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    step: &'static str,
) -> impl FnOnce(E) -> StackError {
    move |e| StackError {
        step,
        source: e.into(),
    }
}

/// How the stack is laid out; the defaults mirror the SAM template.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// Where the function binaries are (`target/debug`): see [`build_functions`].
    pub binaries: PathBuf,
    pub meters_file: PathBuf,
    pub table: String,
    pub queue: String,
    pub batch_size: usize,
    pub batching_window: Duration,
    pub max_concurrency: usize,
    pub max_receive_count: u32,
    pub visibility_timeout: Duration,
    pub function_timeout: Duration,
    /// Run the rollup on this interval; `None` to run it only on demand.
    pub rollup_every: Option<Duration>,
    /// Late-event horizon given to ingest (hours).
    pub late_horizon_hours: Option<u32>,
    /// `RUST_LOG` for the function processes (otherwise they inherit ours).
    pub function_log: Option<String>,
}

impl StackConfig {
    pub fn new(binaries: impl Into<PathBuf>, meters_file: impl Into<PathBuf>) -> Self {
        StackConfig {
            binaries: binaries.into(),
            meters_file: meters_file.into(),
            table: "tollgate".to_owned(),
            queue: "tollgate-usage".to_owned(),
            // Messages are CloudEvents batches of up to 1,000 events (usually ~100), so ten
            // messages already make an invocation of about a thousand events.
            batch_size: 10,
            batching_window: Duration::from_secs(1),
            max_concurrency: 2,
            max_receive_count: 5,
            visibility_timeout: Duration::from_secs(60),
            function_timeout: Duration::from_secs(30),
            rollup_every: None,
            late_horizon_hours: None,
            function_log: None,
        }
    }
}

/// A running local stack. Dropping it stops everything.
#[derive(Debug)]
pub struct LocalStack {
    pub store: DynamoDbStore,
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub dlq_url: String,
    pub dynamodb_endpoint: String,
    pub sqs_endpoint: String,
    pub ingest: Arc<LocalFunction>,
    pub rollup: Arc<LocalFunction>,
    pub usage_api: Arc<LocalFunction>,
    url: FunctionUrl,
    mapping: Option<SqsMapping>,
    schedule: Option<RunningSchedule>,
    _sqs_server: RunningSqsServer,
    _dynamodb: RunningDynamoDbLocal,
}

impl LocalStack {
    /// Starts the emulators, creates the table and queues, and starts the functions.
    pub async fn start(config: &StackConfig) -> Result<LocalStack, StackError> {
        let dynamodb = DynamoDbLocal::ensure()
            .and_then(|d| d.start())
            .map_err(|e| step("DynamoDB Local")(e.to_string()))?;
        let sqs_server = SqsServer::ensure()
            .and_then(|s| s.start())
            .map_err(|e| step("SQS emulator")(e.to_string()))?;
        let dynamodb_endpoint = dynamodb.endpoint().to_owned();
        let sqs_endpoint = sqs_server.endpoint().to_owned();
        let store = DynamoDbStore::new(
            tollgate_store::local_client(&dynamodb_endpoint),
            &config.table,
        );
        store.ensure_table().await.map_err(step("table"))?;
        let sqs = local_sqs_client(&sqs_endpoint);
        let (queue_url, dlq_url) = create_queue_with_dlq(
            &sqs,
            &config.queue,
            config.max_receive_count,
            config.visibility_timeout,
        )
        .await
        .map_err(step("queues"))?;
        let meters_file = config
            .meters_file
            .canonicalize()
            .map_err(step("meter catalog"))?;
        let mut env = vec![
            ("TOLLGATE_TABLE".to_owned(), config.table.clone()),
            ("TOLLGATE_QUEUE_URL".to_owned(), queue_url.clone()),
            (
                "TOLLGATE_METERS_FILE".to_owned(),
                meters_file.display().to_string(),
            ),
            (
                "AWS_ENDPOINT_URL_DYNAMODB".to_owned(),
                dynamodb_endpoint.clone(),
            ),
            ("AWS_ENDPOINT_URL_SQS".to_owned(), sqs_endpoint.clone()),
        ];
        if let Some(filter) = &config.function_log {
            env.push(("RUST_LOG".to_owned(), filter.clone()));
        }
        if let Some(hours) = config.late_horizon_hours {
            env.push(("TOLLGATE_LATE_HORIZON_HOURS".to_owned(), hours.to_string()));
        }
        let start = |name: &'static str, instances: usize| {
            let spec = FunctionSpec::new(name, config.binaries.join(name))
                .with_env(env.clone())
                .with_timeout(config.function_timeout)
                .with_max_instances(instances);
            async move {
                LocalFunction::start_with(spec)
                    .await
                    .map(Arc::new)
                    .map_err(step(name))
            }
        };
        let ingest = start("ingest", config.max_concurrency).await?;
        let rollup = start("rollup", 1).await?;
        let usage_api = start("usage-api", 2).await?;
        let mapping = SqsMapping::start(
            sqs.clone(),
            Arc::clone(&ingest),
            SqsMappingConfig::new(queue_url.clone())
                .with_batch_size(config.batch_size)
                .with_batching_window(config.batching_window)
                .with_max_concurrency(config.max_concurrency),
        )
        .await
        .map_err(step("event source mapping"))?;
        let schedule = match config.rollup_every {
            Some(every) => Some(
                Scheduler::new(Arc::clone(&rollup), json!({}))
                    .and_then(|s| s.every(every))
                    .map_err(step("rollup schedule"))?,
            ),
            None => None,
        };
        let url = FunctionUrl::start(Arc::clone(&usage_api))
            .await
            .map_err(step("Function URL"))?;
        Ok(LocalStack {
            store,
            sqs,
            queue_url,
            dlq_url,
            dynamodb_endpoint,
            sqs_endpoint,
            ingest,
            rollup,
            usage_api,
            url,
            mapping: Some(mapping),
            schedule,
            _sqs_server: sqs_server,
            _dynamodb: dynamodb,
        })
    }

    /// The usage API's base URL, e.g. `http://127.0.0.1:41234/`.
    pub fn usage_api_url(&self) -> String {
        self.url.url()
    }

    /// Runs the rollup once, with the payload the schedule would send at `at`.
    pub async fn run_rollup(&self, at: DateTime<Utc>) -> Result<Value, InvokeError> {
        let scheduler = Scheduler::new(Arc::clone(&self.rollup), json!({}));
        match scheduler {
            Ok(scheduler) => scheduler.run_once(at).await,
            Err(e) => Err(InvokeError::InvalidResponse {
                function: "rollup".to_owned(),
                text: e.to_string(),
            }),
        }
    }

    /// The event source mapping's counters.
    pub fn mapping_metrics(&self) -> MappingMetrics {
        self.mapping
            .as_ref()
            .map(SqsMapping::metrics)
            .unwrap_or_default()
    }

    /// Stops polling (letting batches in hand finish), the schedule, and everything else.
    pub async fn stop(mut self) {
        if let Some(schedule) = self.schedule.take() {
            schedule.stop();
        }
        if let Some(mapping) = self.mapping.take() {
            mapping.stop().await;
        }
    }
}

/// Builds the function binaries (debug profile) with the cargo that runs us, and returns
/// the directory they are in.
pub fn build_functions(workspace: &Path) -> Result<PathBuf, StackError> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .current_dir(workspace)
        .args([
            "build",
            "--quiet",
            "-p",
            "tollgate-ingest",
            "-p",
            "tollgate-rollup",
            "-p",
            "tollgate-usage-api",
            "--bins",
        ])
        .status()
        .map_err(step("cargo build"))?;
    if !status.success() {
        return Err(step("cargo build")(format!(
            "building the functions failed ({status})"
        )));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    Ok(target.join("debug"))
}
