//! The whole pipeline on one machine: DynamoDB Local, the SQS emulator with the usage
//! queue and its DLQ, a Stripe stand-in, and the real `ingest`, `rollup`, `usage-api`,
//! `budget` and `billing-sync` binaries behind an SQS event source mapping, schedules and
//! a Function URL.
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
use tollgate_devstack::fault_proxy::FaultProxy;
use tollgate_devstack::stripe::{StandInConfig, StripeStandIn};
use tollgate_devstack::{DynamoDbLocal, RunningDynamoDbLocal, RunningSqsServer, SqsServer};
use tollgate_store::DynamoDbStore;

use crate::{
    FunctionSpec, FunctionUrl, InvokeError, LocalFunction, MappingMetrics, RunningSchedule,
    Scheduler, SqsMapping, SqsMappingConfig, create_queue_with_dlq, local_sqs_client,
};

/// The function binaries the stack runs.
pub const FUNCTION_BINARIES: [&str; 5] =
    ["ingest", "rollup", "usage-api", "budget", "billing-sync"];

/// The packages holding [`FUNCTION_BINARIES`], in the same order.
const FUNCTION_PACKAGES: [&str; 5] = [
    "tollgate-ingest",
    "tollgate-rollup",
    "tollgate-usage-api",
    "tollgate-budget",
    "tollgate-billing-sync",
];

/// The Stripe stand-in's secret key: a test-mode key, so billing-sync paces itself at
/// Stripe's test-mode rate.
pub const LOCAL_STRIPE_KEY: &str = "sk_test_tollgate_local";

/// Timeout of the scheduled jobs: each stops taking tenants when less than its safety
/// margin (20 s for budget, 30 s for billing-sync) is left, so they need more than that.
const SCHEDULED_JOB_TIMEOUT: Duration = Duration::from_secs(120);

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

/// How the stack is laid out; the defaults mirror the SAM template, except the batching
/// window (1 s here, a parameter of 90 s by default there).
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
    /// Run the budget job on this interval; `None` to run it only on demand.
    pub budget_every: Option<Duration>,
    /// Run billing-sync on this interval; `None` to run it only on demand.
    pub billing_sync_every: Option<Duration>,
    /// Late-event horizon given to ingest (hours).
    pub late_horizon_hours: Option<u32>,
    /// `RUST_LOG` for the function processes (otherwise they inherit ours).
    pub function_log: Option<String>,
    /// Put fault proxies between the functions and the emulators ([`StackFaults`]).
    pub fault_proxies: bool,
}

impl StackConfig {
    pub fn new(binaries: impl Into<PathBuf>, meters_file: impl Into<PathBuf>) -> Self {
        StackConfig {
            binaries: binaries.into(),
            meters_file: meters_file.into(),
            table: "tollgate".to_owned(),
            queue: "tollgate-usage".to_owned(),
            // The template's batch size; its window (90 s by default, a parameter) is
            // cut to 1 s here so the local stack answers promptly.
            batch_size: 100,
            batching_window: Duration::from_secs(1),
            max_concurrency: 2,
            max_receive_count: 5,
            visibility_timeout: Duration::from_secs(60),
            function_timeout: Duration::from_secs(30),
            rollup_every: None,
            budget_every: None,
            billing_sync_every: None,
            late_horizon_hours: None,
            function_log: None,
            fault_proxies: false,
        }
    }
}

/// Fault proxies ([`FaultProxy`]) in front of the emulators, one per function that
/// writes to DynamoDB so a test can cue faults (or a kill) in one function alone, and one
/// in front of the SQS emulator for the event source mapping and the functions (the
/// test's own [`LocalStack::sqs`] client goes direct). An SQS "restart" is an outage of
/// [`StackFaults::sqs`]: see the proxy's module docs for why moto itself is not restarted.
#[derive(Debug)]
pub struct StackFaults {
    pub ingest_dynamodb: FaultProxy,
    pub rollup_dynamodb: FaultProxy,
    pub billing_sync_dynamodb: FaultProxy,
    pub sqs: FaultProxy,
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
    pub budget: Arc<LocalFunction>,
    pub billing_sync: Arc<LocalFunction>,
    /// The Stripe that billing-sync reports to (`TOLLGATE_STRIPE_API_BASE`), with
    /// everything it was sent.
    pub stripe: StripeStandIn,
    /// The fault proxies, when [`StackConfig::fault_proxies`] asked for them.
    pub faults: Option<StackFaults>,
    url: FunctionUrl,
    mapping: Option<SqsMapping>,
    schedules: Vec<RunningSchedule>,
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
        let stripe =
            StripeStandIn::start(StandInConfig::new(LOCAL_STRIPE_KEY).requiring_identifier())
                .await
                .map_err(step("Stripe stand-in"))?;
        let faults = if config.fault_proxies {
            let proxy = |upstream: String| async move {
                FaultProxy::start(&upstream)
                    .await
                    .map_err(step("fault proxies"))
            };
            Some(StackFaults {
                ingest_dynamodb: proxy(dynamodb_endpoint.clone()).await?,
                rollup_dynamodb: proxy(dynamodb_endpoint.clone()).await?,
                billing_sync_dynamodb: proxy(dynamodb_endpoint.clone()).await?,
                sqs: proxy(sqs_endpoint.clone()).await?,
            })
        } else {
            None
        };
        // The environment of a function whose DynamoDB (and SQS) go through `proxy`.
        let through = |env: &[(String, String)], proxy: Option<&FaultProxy>| {
            let mut env = env.to_vec();
            if let Some(proxy) = proxy {
                env.retain(|(name, _)| name != "AWS_ENDPOINT_URL_DYNAMODB");
                env.push(("AWS_ENDPOINT_URL_DYNAMODB".to_owned(), proxy.endpoint()));
            }
            if let Some(faults) = &faults {
                env.retain(|(name, _)| name != "AWS_ENDPOINT_URL_SQS");
                env.push(("AWS_ENDPOINT_URL_SQS".to_owned(), faults.sqs.endpoint()));
            }
            env
        };
        let mut billing_env = through(&env, faults.as_ref().map(|f| &f.billing_sync_dynamodb));
        billing_env.push((
            "TOLLGATE_STRIPE_SECRET_KEY".to_owned(),
            LOCAL_STRIPE_KEY.to_owned(),
        ));
        billing_env.push(("TOLLGATE_STRIPE_API_BASE".to_owned(), stripe.url()));
        let start = |name: &'static str,
                     instances: usize,
                     env: Vec<(String, String)>,
                     timeout: Duration| {
            let spec = FunctionSpec::new(name, config.binaries.join(name))
                .with_env(env)
                .with_timeout(timeout)
                .with_max_instances(instances);
            async move {
                LocalFunction::start_with(spec)
                    .await
                    .map(Arc::new)
                    .map_err(step(name))
            }
        };
        let timeout = config.function_timeout;
        let ingest_env = through(&env, faults.as_ref().map(|f| &f.ingest_dynamodb));
        let rollup_env = through(&env, faults.as_ref().map(|f| &f.rollup_dynamodb));
        let ingest = start("ingest", config.max_concurrency, ingest_env, timeout).await?;
        let rollup = start("rollup", 1, rollup_env, timeout).await?;
        let usage_api = start("usage-api", 2, env.clone(), timeout).await?;
        // One instance each, so an explicit run waits for a scheduled one in progress.
        let budget = start("budget", 1, env, SCHEDULED_JOB_TIMEOUT).await?;
        let billing_sync = start("billing-sync", 1, billing_env, SCHEDULED_JOB_TIMEOUT).await?;
        let mapping_sqs = match &faults {
            Some(faults) => local_sqs_client(&faults.sqs.endpoint()),
            None => sqs.clone(),
        };
        let mapping = SqsMapping::start(
            mapping_sqs,
            Arc::clone(&ingest),
            SqsMappingConfig::new(queue_url.clone())
                .with_batch_size(config.batch_size)
                .with_batching_window(config.batching_window)
                .with_max_concurrency(config.max_concurrency),
        )
        .await
        .map_err(step("event source mapping"))?;
        let mut schedules = Vec::new();
        for (function, every) in [
            (&rollup, config.rollup_every),
            (&budget, config.budget_every),
            (&billing_sync, config.billing_sync_every),
        ] {
            if let Some(every) = every {
                schedules.push(
                    Scheduler::new(Arc::clone(function), json!({}))
                        .and_then(|s| s.every(every))
                        .map_err(step("schedules"))?,
                );
            }
        }
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
            budget,
            billing_sync,
            stripe,
            faults,
            url,
            mapping: Some(mapping),
            schedules,
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
        run_scheduled(&self.rollup, at).await
    }

    /// Runs the budget job once, as its schedule would at `at`; the reply is its report.
    pub async fn run_budget(&self, at: DateTime<Utc>) -> Result<Value, InvokeError> {
        run_scheduled(&self.budget, at).await
    }

    /// Runs billing-sync once, as its schedule would at `at`; the reply is its
    /// `SyncReport`.
    pub async fn run_billing_sync(&self, at: DateTime<Utc>) -> Result<Value, InvokeError> {
        run_scheduled(&self.billing_sync, at).await
    }

    /// The event source mapping's counters.
    pub fn mapping_metrics(&self) -> MappingMetrics {
        self.mapping
            .as_ref()
            .map(SqsMapping::metrics)
            .unwrap_or_default()
    }

    /// Stops polling (letting batches in hand finish), the schedules, and everything else.
    pub async fn stop(mut self) {
        for schedule in self.schedules.drain(..) {
            schedule.stop();
        }
        if let Some(mapping) = self.mapping.take() {
            mapping.stop().await;
        }
    }
}

/// Invokes `function` with the payload its schedule would send at `at`.
async fn run_scheduled(
    function: &Arc<LocalFunction>,
    at: DateTime<Utc>,
) -> Result<Value, InvokeError> {
    match Scheduler::new(Arc::clone(function), json!({})) {
        Ok(scheduler) => scheduler.run_once(at).await,
        Err(e) => Err(InvokeError::InvalidResponse {
            function: function.name().to_owned(),
            text: e.to_string(),
        }),
    }
}

/// Builds the function binaries (debug profile) with the cargo that runs us, and returns
/// the directory they are in.
pub fn build_functions(workspace: &Path) -> Result<PathBuf, StackError> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command.current_dir(workspace).args(["build", "--quiet"]);
    for package in FUNCTION_PACKAGES {
        command.args(["-p", package]);
    }
    let status = command
        .arg("--bins")
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
