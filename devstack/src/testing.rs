//! Endpoints for tests: the one xtask started, or one per test process.

use std::env;
use std::sync::OnceLock;

use crate::dynamodb::DynamoDbLocal;
use crate::running::{RunningDynamoDbLocal, RunningSqsServer};
use crate::sqs::SqsServer;

/// Environment variable carrying a running DynamoDB endpoint (set by `cargo xtask test`).
pub const DYNAMODB_ENDPOINT_ENV: &str = "TOLLGATE_DYNAMODB_ENDPOINT";
/// Environment variable carrying a running SQS endpoint.
pub const SQS_ENDPOINT_ENV: &str = "TOLLGATE_SQS_ENDPOINT";

// The emulators started for this test process, or why they could not be. Statics are
// never dropped: the emulators are killed by their watchdogs when the process exits.
static TEST_DYNAMODB: OnceLock<Result<RunningDynamoDbLocal, String>> = OnceLock::new();
static TEST_SQS: OnceLock<Result<RunningSqsServer, String>> = OnceLock::new();

/// A DynamoDB endpoint for tests.
///
/// Returns `$TOLLGATE_DYNAMODB_ENDPOINT` when it is set and not empty (`cargo xtask test`
/// sets it). Otherwise starts one DynamoDB Local for the whole test process on first use
/// (installing it if needed) and returns its endpoint; later calls, from any thread, share
/// it. Under `cargo nextest`, where every test is its own process, each test that calls
/// this starts its own emulator (≈ 2–3 s): run the suite through `cargo xtask test` to
/// share one.
///
/// # Panics
///
/// When no emulator can be started (no Java 17+, no npm, no network for the first install,
/// …), with the reason. A test that needs DynamoDB fails rather than silently skipping.
pub fn dynamodb_endpoint_for_tests() -> String {
    endpoint_for_tests(
        DYNAMODB_ENDPOINT_ENV,
        "DynamoDB",
        &TEST_DYNAMODB,
        || DynamoDbLocal::ensure()?.start(),
        RunningDynamoDbLocal::endpoint,
    )
}

/// An SQS endpoint for tests: `$TOLLGATE_SQS_ENDPOINT` when set, else one moto server
/// per test process, as [`dynamodb_endpoint_for_tests`] does for DynamoDB (moto starts in
/// well under a second once installed).
///
/// # Panics
///
/// When no emulator can be started (no Python 3 with venv, no network for the first
/// install, …), with the reason.
pub fn sqs_endpoint_for_tests() -> String {
    endpoint_for_tests(
        SQS_ENDPOINT_ENV,
        "SQS",
        &TEST_SQS,
        || SqsServer::ensure()?.start(),
        RunningSqsServer::endpoint,
    )
}

#[allow(
    clippy::panic,
    reason = "a test helper: failing the calling test is the point"
)]
fn endpoint_for_tests<S>(
    env_var: &str,
    service: &str,
    shared: &OnceLock<Result<S, String>>,
    start: impl FnOnce() -> anyhow::Result<S>,
    endpoint: impl FnOnce(&S) -> &str,
) -> String {
    if let Some(value) = env::var_os(env_var).filter(|value| !value.is_empty()) {
        return value.to_string_lossy().into_owned();
    }
    match shared.get_or_init(|| start().map_err(|err| format!("{err:#}"))) {
        Ok(server) => endpoint(server).to_owned(),
        Err(reason) => panic!(
            "no {service} for this test: {reason}\n\
             (set {env_var} to use a running one, or run `cargo xtask test`)"
        ),
    }
}
