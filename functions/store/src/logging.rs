//! The log filter every Lambda binary installs: `RUST_LOG` (default `info`), except for
//! the few targets that print whole payloads, which are held below the level where they
//! do, whatever `RUST_LOG` asks.
//!
//! At `trace`, `lambda_runtime` prints every raw invocation event, which for the usage
//! API is the HTTP request: its `Authorization` and `x-api-key` headers, its query string
//! and its body (a webhook secret an admin sends). The AWS SDK's orchestrator prints
//! every request and response body and every deserialised output, which hold what
//! DynamoDB stores (webhook secrets among it). Turning up the log level to debug
//! something must not write those to CloudWatch; `tests/tests/no_secrets_in_logs.rs`
//! runs the real binaries at `RUST_LOG=trace` and searches their output for every secret.

use tracing_subscriber::EnvFilter;

/// Targets that log payloads, and the most verbose level each may log at.
pub const PAYLOAD_TARGET_CAPS: [(&str, &str); 2] = [
    // `raw JSON event received from Lambda` is logged at trace.
    ("lambda_runtime::layers::api_response", "debug"),
    // Requests and responses with bodies and outputs at trace; errors with their raw
    // response at debug.
    ("aws_smithy_runtime::client::orchestrator", "info"),
];

/// `RUST_LOG`'s filter (or `info` when unset or invalid), with [`PAYLOAD_TARGET_CAPS`].
pub fn env_filter() -> EnvFilter {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    with_caps(filter)
}

/// The filter `spec` (as `RUST_LOG` would give it), with [`PAYLOAD_TARGET_CAPS`].
pub fn env_filter_from(spec: &str) -> EnvFilter {
    with_caps(EnvFilter::new(spec))
}

/// Adds the caps last: a directive for the same target replaces an earlier one, and a
/// directive for a target is more specific than one for its parent module, so neither
/// `trace` nor `lambda_runtime=trace` nor the target itself at `trace` lifts a cap.
fn with_caps(mut filter: EnvFilter) -> EnvFilter {
    for (target, level) in PAYLOAD_TARGET_CAPS {
        if let Ok(directive) = format!("{target}={level}").parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    /// What is printed under `spec` when each target logs at every level.
    fn printed(spec: &str) -> String {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(env_filter_from(spec))
            .with_writer(captured.clone())
            .without_time()
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::trace!(target: "lambda_runtime::layers::api_response", "runtime-trace");
            tracing::debug!(target: "lambda_runtime::layers::api_response", "runtime-debug");
            tracing::trace!(target: "aws_smithy_runtime::client::orchestrator", "sdk-trace");
            tracing::trace!(target: "aws_smithy_runtime::client::orchestrator::http", "sdk-http-trace");
            tracing::debug!(target: "aws_smithy_runtime::client::orchestrator", "sdk-debug");
            tracing::info!(target: "aws_smithy_runtime::client::orchestrator", "sdk-info");
            tracing::trace!(target: "aws_smithy_runtime::client::retries", "retries-trace");
            tracing::trace!(target: "tollgate_usage_api", "ours-trace");
        });
        let bytes = captured.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn payload_targets_stay_below_their_caps_at_any_rust_log() {
        for spec in [
            "trace",
            "lambda_runtime=trace,aws_smithy_runtime=trace",
            "lambda_runtime::layers::api_response=trace,aws_smithy_runtime::client::orchestrator=trace",
            "info,lambda_runtime::layers::api_response=trace",
        ] {
            let text = printed(spec);
            for hidden in ["runtime-trace", "sdk-trace", "sdk-http-trace", "sdk-debug"] {
                assert!(!text.contains(hidden), "{spec}: {hidden} printed:\n{text}");
            }
        }
        let everything = printed("trace");
        for shown in ["runtime-debug", "sdk-info", "retries-trace", "ours-trace"] {
            assert!(everything.contains(shown), "{shown} hidden:\n{everything}");
        }
        let default = printed("info");
        assert!(default.contains("sdk-info") && !default.contains("ours-trace"));
    }
}
