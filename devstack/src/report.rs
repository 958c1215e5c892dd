//! Figures a long-running test hands to `cargo xtask soak`.
//!
//! A soak-scale test (fuzzing, faults, load) prints one line per finding on stdout:
//! `tollgate-report: {"kind": …, …}`. `cargo xtask soak` runs those tests with their
//! output shown, keeps these lines and prints them as its summary, so the figures quoted
//! in docs and closing notes come from the run itself, not from a person's reading of it.
//! Under `cargo xtask test` the lines are captured with the test's output and ignored.

use std::env;

use serde_json::Value;

/// The prefix `cargo xtask soak` looks for.
pub const REPORT_PREFIX: &str = "tollgate-report: ";

/// How many inputs a fuzz target runs: `$TOLLGATE_FUZZ_INPUTS` (the soak sets
/// 1,000,000), else `default` (what `cargo xtask test` runs).
pub const FUZZ_INPUTS_ENV: &str = "TOLLGATE_FUZZ_INPUTS";

/// Set (to anything but `0` or empty) by `cargo xtask soak`: tests scale up to soak size.
pub const SOAK_ENV: &str = "TOLLGATE_SOAK";

/// Prints `report` (a JSON object with at least a `kind`) as one report line.
pub fn report(report: &Value) {
    println!("{REPORT_PREFIX}{report}");
}

/// The report in `line`, when it is one.
pub fn parse_report(line: &str) -> Option<Value> {
    let start = line.find(REPORT_PREFIX)?;
    serde_json::from_str(line[start + REPORT_PREFIX.len()..].trim()).ok()
}

/// The number of fuzz inputs to run: `$TOLLGATE_FUZZ_INPUTS` when set, else `default`.
pub fn fuzz_inputs(default: u64) -> u64 {
    env::var(FUZZ_INPUTS_ENV)
        .ok()
        .and_then(|value| value.trim().replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// Whether this run is a soak (`$TOLLGATE_SOAK`).
pub fn soak() -> bool {
    env::var(SOAK_ENV).is_ok_and(|value| !value.is_empty() && value != "0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_report_line_parses_back() {
        let value = json!({"kind": "fuzz", "target": "cloudevents", "inputs": 10});
        let line = format!("     {REPORT_PREFIX}{value}\n");
        assert_eq!(parse_report(&line), Some(value));
        assert_eq!(parse_report("test foo ... ok"), None);
    }
}
