//! Runs tollgate's Lambda functions locally, as the real binaries, invoked the way AWS
//! invokes them.
//!
//! The function crates (`ingest`, `rollup`, `usage-api`, `budget`, `billing-sync`) are
//! `lambda_runtime` / `lambda_http` binaries. Their logic is unit-tested with handlers called directly; what
//! only a run of the binary shows is everything around the handler: configuration from
//! the environment, the event shapes AWS sends, partial batch failures, retries and the
//! dead-letter queue, timeouts, crashes. This crate provides the AWS side of that, on
//! loopback ports, for the local stack and end-to-end tests:
//!
//! | piece | module | stands in for |
//! |---|---|---|
//! | [`LocalFunction`] | `function`, `runtime_api` | Lambda's execution environments and its Runtime API |
//! | [`SqsMapping`] | `sqs_mapping` | the SQS event source mapping (with `ReportBatchItemFailures`) |
//! | [`Scheduler`] | `scheduler` | an EventBridge Scheduler rate schedule with an input template |
//! | [`FunctionUrl`] | `function_url` | a Lambda Function URL (payload format 2.0) |
//! | [`create_queue_with_dlq`], [`local_sqs_client`] | `queues` | the queue and DLQ of the SAM template |
//! | [`LocalStack`] | `stack` | the whole deployment: emulators, queues, table, a Stripe stand-in and the five functions wired together |
//!
//! SQS itself is moto, from `tollgate-devstack`; DynamoDB is DynamoDB Local.
//!
//! # Pointing a function at the local stack
//!
//! A function gets only the environment Lambda would give it (see [`FunctionSpec`]) plus
//! what it is configured with, so pass its configuration and the emulator endpoints
//! explicitly; the AWS SDK reads `AWS_ENDPOINT_URL_DYNAMODB` and `AWS_ENDPOINT_URL_SQS`
//! by itself:
//!
//! ```no_run
//! # async fn example(dynamodb: &str, sqs: &str, queue_url: &str) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tollgate_local::{LocalFunction, SqsMapping, SqsMappingConfig, local_sqs_client};
//!
//! let env = vec![
//!     ("TOLLGATE_TABLE".to_owned(), "tollgate".to_owned()),
//!     ("TOLLGATE_QUEUE_URL".to_owned(), queue_url.to_owned()),
//!     ("AWS_ENDPOINT_URL_DYNAMODB".to_owned(), dynamodb.to_owned()),
//!     ("AWS_ENDPOINT_URL_SQS".to_owned(), sqs.to_owned()),
//! ];
//! let ingest = Arc::new(
//!     LocalFunction::start("ingest", "target/debug/ingest", env, Duration::from_secs(10)).await?,
//! );
//! let mapping = SqsMapping::start(
//!     local_sqs_client(sqs),
//!     ingest,
//!     SqsMappingConfig::new(queue_url).with_batch_size(10),
//! )
//! .await?;
//! // … send usage to the queue, then:
//! mapping.stop().await;
//! # Ok(())
//! # }
//! ```
//!
//! Everything listens on `127.0.0.1` only, on free ports, and stops when dropped; function
//! processes also die with this process (devstack's watchdog).

mod function;
mod function_url;
mod http_server;
mod queues;
mod runtime_api;
mod scheduler;
mod sqs_mapping;
mod stack;

pub use function::{
    DEFAULT_TIMEOUT, FunctionSpec, FunctionStats, INIT_TIMEOUT, InvokeError, LOCAL_ACCOUNT_ID,
    LOCAL_REGION, LocalFunction, PASSED_THROUGH_ENV, StartError,
};
pub use function_url::FunctionUrl;
pub use queues::{QueueError, create_queue_with_dlq, local_sqs_client};
pub use runtime_api::MAX_PAYLOAD_BYTES;
pub use scheduler::{RunningSchedule, ScheduleError, ScheduleStats, Scheduler, scheduled_payload};
pub use sqs_mapping::{
    DEFAULT_MAX_CONCURRENCY, MAX_BATCH_SIZE, MAX_BATCHING_WINDOW, MappingError, MappingMetrics,
    SqsMapping, SqsMappingConfig,
};
pub use stack::{
    FUNCTION_BINARIES, LOCAL_STRIPE_KEY, LocalStack, StackConfig, StackError, StackFaults,
    build_functions,
};
