//! Helpers shared by the integration tests: the test function binary, recordings of the
//! events it got, and bounded waiting.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tollgate_local::{FunctionSpec, LocalFunction};

/// The test-only Lambda binary (`tests/bin/test_function.rs`).
pub const TEST_FUNCTION: &str = env!("CARGO_BIN_EXE_tollgate-local-test-function");

/// A unique name for a queue, function or file.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// The spec of a test function in `mode` with extra variables.
pub fn spec(name: &str, mode: &str, env: &[(&str, &str)], timeout: Duration) -> FunctionSpec {
    let mut vars = vec![("TEST_FUNCTION_MODE".to_owned(), mode.to_owned())];
    vars.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    FunctionSpec::new(name, TEST_FUNCTION)
        .with_env(vars)
        .with_timeout(timeout)
}

/// Starts the test function in `json` mode.
pub async fn json_function(name: &str, env: &[(&str, &str)], timeout: Duration) -> LocalFunction {
    LocalFunction::start_with(spec(name, "json", env, timeout))
        .await
        .unwrap()
}

/// A file the test function appends every event to (`TEST_FUNCTION_RECORD`).
pub struct Recording {
    pub path: PathBuf,
}

impl Recording {
    pub fn new() -> Self {
        Self {
            path: std::env::temp_dir().join(unique("tollgate-local-events")),
        }
    }

    pub fn env(&self) -> (&'static str, &str) {
        ("TEST_FUNCTION_RECORD", self.path.to_str().unwrap())
    }

    /// The events recorded so far, oldest first.
    pub fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Polls `condition` every 50 ms until it holds; fails the test after `limit` (a
/// generous bound, not a performance claim).
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
