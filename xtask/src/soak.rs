//! `cargo xtask soak`: the long run of the reliability suites, with their figures.
//!
//! The same tests `cargo xtask test` runs at a size that fits CI, here at soak size
//! (`TOLLGATE_SOAK=1`): every parser fuzzed with 1,000,000 inputs
//! (`TOLLGATE_FUZZ_INPUTS`), the real filter in the proxy-wasm host under fuzzed
//! requests, the pipeline through the local stack under every fault the suite injects,
//! and the local gateway under minutes of load with limits changing mid-run.
//!
//! Each suite prints its findings as `tollgate-report: {json}` lines
//! ([`tollgate_devstack::report`]); this command keeps them, prints them as one table at
//! the end, writes them to `target/soak/report.json`, and fails when a suite failed or a
//! report shows a panic, a trap, a client error or any difference from the ground truth.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tollgate_devstack::report::{FUZZ_INPUTS_ENV, SOAK_ENV, parse_report};
use tollgate_devstack::{DYNAMODB_ENDPOINT_ENV, DynamoDbLocal, SQS_ENDPOINT_ENV, SqsServer};

use crate::util::{self, Runner, Steps, TestTally, cargo, grouped};

/// The package holding the soak-scale suites.
const PACKAGE: &str = "tollgate-e2e-tests";
/// Overrides the load suite's duration (seconds).
const LOAD_SECONDS_ENV: &str = "TOLLGATE_LOAD_SECONDS";

/// One suite: the name to pick it by, its step title, and its test target.
struct Suite {
    name: &'static str,
    title: &'static str,
    tests: &'static [&'static str],
}

const SUITES: [Suite; 4] = [
    Suite {
        name: "fuzz",
        title: "fuzz: every parser",
        tests: &["parser_fuzz"],
    },
    Suite {
        name: "filter-fuzz",
        title: "fuzz: the filter's .wasm in the host",
        tests: &["edge_filter_fuzz"],
    },
    Suite {
        name: "faults",
        title: "faults: the pipeline through the local stack",
        tests: &["faults"],
    },
    Suite {
        name: "load",
        title: "load: the local gateway, limits changing",
        tests: &["gateway_load"],
    },
];

/// What `cargo xtask soak` was asked to do.
#[derive(Debug, PartialEq, Eq)]
pub struct Options {
    /// Inputs per fuzz target.
    pub fuzz_inputs: u64,
    /// The load suite's duration, when not its own soak default.
    pub load_seconds: Option<u64>,
    /// The suites to run (all when empty).
    pub suites: Vec<String>,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut options = Options {
            fuzz_inputs: 1_000_000,
            load_seconds: None,
            suites: Vec::new(),
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--fuzz-inputs" => options.fuzz_inputs = number(arg, args.next())?,
                "--load-seconds" => options.load_seconds = Some(number(arg, args.next())?),
                name if SUITES.iter().any(|suite| suite.name == name) => {
                    options.suites.push(name.to_owned());
                }
                other => bail!(
                    "`cargo xtask soak` does not know {other:?}: it takes suite names ({}), \
                     --fuzz-inputs N and --load-seconds S",
                    SUITES.map(|suite| suite.name).join(", ")
                ),
            }
        }
        Ok(options)
    }

    fn runs(&self, suite: &Suite) -> bool {
        self.suites.is_empty() || self.suites.iter().any(|name| name == suite.name)
    }
}

fn number(flag: &str, value: Option<&String>) -> Result<u64> {
    let value = value.with_context(|| format!("{flag} needs a number"))?;
    value
        .replace(['_', ','], "")
        .parse()
        .with_context(|| format!("{flag} {value:?} is not a whole number"))
}

pub fn run(options: &Options) -> Result<()> {
    let mut steps = Steps::new();
    let mut reports = Vec::new();
    let result = run_steps(options, &mut steps, &mut reports);
    steps.print_summary();
    let verdict = print_reports(&reports);
    if let Err(err) = write_reports(&reports) {
        eprintln!("warning: {err:#}");
    }
    result.and(verdict)
}

fn run_steps(options: &Options, steps: &mut Steps, reports: &mut Vec<Value>) -> Result<()> {
    let root = util::repo_root()?;
    steps.run("toolchain: clippy, rustfmt, wasm32-wasip1", || {
        crate::test::ensure_toolchain(&root)
    })?;
    let dynamodb = steps.run("DynamoDB Local", || DynamoDbLocal::ensure()?.start())?;
    let sqs = match steps.run("SQS emulator (moto)", || SqsServer::ensure()?.start()) {
        Ok(sqs) => sqs,
        Err(err) => {
            let _ = dynamodb.stop();
            return Err(err);
        }
    };
    let suites = run_suites(
        options,
        steps,
        reports,
        &root,
        dynamodb.endpoint(),
        sqs.endpoint(),
    );
    let stopped = sqs.stop().and(dynamodb.stop());
    suites.and(stopped)
}

fn run_suites(
    options: &Options,
    steps: &mut Steps,
    reports: &mut Vec<Value>,
    root: &Path,
    dynamodb: &str,
    sqs: &str,
) -> Result<()> {
    let cargo = || {
        let mut command = cargo(root);
        command.env(DYNAMODB_ENDPOINT_ENV, dynamodb);
        command.env(SQS_ENDPOINT_ENV, sqs);
        command.env(SOAK_ENV, "1");
        command.env(FUZZ_INPUTS_ENV, options.fuzz_inputs.to_string());
        if let Some(seconds) = options.load_seconds {
            command.env(LOAD_SECONDS_ENV, seconds.to_string());
        }
        command
    };
    steps.run("wasm filters (wasm32-wasip1, release)", || {
        util::run(cargo().args(util::wasm_build_args()))
    })?;
    let nextest = util::succeeds_quietly(cargo().args(["nextest", "--version"]));
    let chosen: Vec<&Suite> = SUITES.iter().filter(|suite| options.runs(suite)).collect();
    steps.run("build the suites", || {
        let mut command = cargo();
        command.args(["test", "--no-run", "-p", PACKAGE]);
        for suite in &chosen {
            for test in suite.tests {
                command.args(["--test", test]);
            }
        }
        util::run(&mut command)
    })?;
    // Every suite runs, even after one failed: a soak's value is the whole picture.
    let mut failed = Vec::new();
    for suite in chosen {
        let mut command = cargo();
        if nextest {
            // `--no-capture` runs the tests one at a time, each with the machine to itself.
            command.args(["nextest", "run", "-p", PACKAGE, "--no-capture"]);
        } else {
            command.args(["test", "-p", PACKAGE]);
        }
        for test in suite.tests {
            command.args(["--test", test]);
        }
        if !nextest {
            command.args(["--", "--nocapture", "--test-threads=1"]);
        }
        let runner = if nextest {
            Runner::Nextest
        } else {
            Runner::Libtest
        };
        let mut tally = TestTally::default();
        let outcome = steps.run(suite.title, || {
            util::run_observed(&mut command, runner, &mut tally, |line| {
                reports.extend(parse_report(line));
            })
        });
        if outcome.is_err() {
            failed.push(suite.title);
        }
    }
    if !failed.is_empty() {
        bail!("failed: {}", failed.join("; "));
    }
    Ok(())
}

/// Prints every report as a line of the closing table; fails when one shows a problem.
fn print_reports(reports: &[Value]) -> Result<()> {
    eprintln!();
    eprintln!("==> soak report");
    if reports.is_empty() {
        eprintln!("    (no suite reported)");
    }
    let mut problems = Vec::new();
    for report in reports {
        eprintln!("    {}", describe(report));
        problems.extend(problem(report));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("the soak found problems: {}", problems.join("; "))
    }
}

/// One line for a report, by its kind; unknown kinds are shown as JSON.
fn describe(report: &Value) -> String {
    let n = |key: &str| count(report, key);
    match report["kind"].as_str() {
        Some("fuzz") => {
            let mut line = format!(
                "fuzz    {:<28} {:>11} inputs, {} accepted, {} rejected, {} panics",
                text(report, "target"),
                n("inputs"),
                n("accepted"),
                n("rejected"),
                n("panics"),
            );
            if report.get("traps").is_some() {
                let _ = write!(line, ", {} traps", n("traps"));
            }
            line
        }
        Some("faults") => {
            let faults = report["faults"]
                .as_object()
                .map_or_else(String::new, |all| {
                    all.iter()
                        .map(|(kind, value)| format!("{kind} {}", shown(value)))
                        .collect::<Vec<_>>()
                        .join(", ")
                });
            format!(
                "faults  {} messages generated, {} delivered ({} duplicates), {} events, \
                 {} rejected with a reason; faults injected: {faults}; \
                 difference from ground truth: {}",
                n("messages_generated"),
                n("messages_delivered"),
                n("duplicates"),
                n("events"),
                n("rejected"),
                n("difference_from_ground_truth"),
            )
        }
        Some("load") => format!(
            "load    {} s, {} requests ({} allowed, {} limited, {} blocked), {} limit changes, \
             {} flush faults, {} client errors, {} traps; wasm memory {} → {} bytes (max {}), \
             RSS {} → {} bytes (max {}); metered {}, difference from ground truth: {}",
            n("seconds"),
            n("requests"),
            n("allowed"),
            n("limited"),
            n("blocked"),
            n("limit_changes"),
            n("flush_faults"),
            n("client_errors"),
            n("traps"),
            shown(&report["wasm_memory_bytes"]["first"]),
            shown(&report["wasm_memory_bytes"]["last"]),
            shown(&report["wasm_memory_bytes"]["max"]),
            shown(&report["rss_bytes"]["first"]),
            shown(&report["rss_bytes"]["last"]),
            shown(&report["rss_bytes"]["max"]),
            n("metered"),
            n("difference_from_ground_truth"),
        ),
        _ => report.to_string(),
    }
}

/// What is wrong in a report, if anything: a nonzero panic, trap, client error or
/// difference count.
fn problem(report: &Value) -> Option<String> {
    let bad: Vec<String> = [
        "panics",
        "traps",
        "client_errors",
        "difference_from_ground_truth",
    ]
    .into_iter()
    .filter(|key| report.get(*key).is_some_and(|value| value != &json!(0)))
    .map(|key| format!("{key} = {}", report[key]))
    .collect();
    (!bad.is_empty()).then(|| {
        format!(
            "{} {}: {}",
            text(report, "kind"),
            report.get("target").and_then(Value::as_str).unwrap_or(""),
            bad.join(", ")
        )
    })
}

fn count(report: &Value, key: &str) -> String {
    shown(&report[key])
}

fn shown(value: &Value) -> String {
    match value {
        Value::Number(number) => grouped(&number.to_string()),
        Value::Null => "?".to_owned(),
        other => other.to_string(),
    }
}

fn text<'a>(report: &'a Value, key: &str) -> &'a str {
    report[key].as_str().unwrap_or("?")
}

fn write_reports(reports: &[Value]) -> Result<()> {
    let dir = util::repo_root()?.join("target/soak");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("report.json");
    let body = serde_json::to_string_pretty(&json!({ "reports": reports }))?;
    fs::write(&path, body).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("    written to {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|arg| (*arg).to_owned()).collect()
    }

    #[test]
    fn defaults_run_every_suite_with_a_million_inputs() {
        let options = Options::parse(&[]).unwrap();
        assert_eq!(options.fuzz_inputs, 1_000_000);
        assert!(SUITES.iter().all(|suite| options.runs(suite)));
    }

    #[test]
    fn suites_and_sizes_are_picked_by_name() {
        let options = Options::parse(&strings(&[
            "faults",
            "--fuzz-inputs",
            "2_000",
            "--load-seconds",
            "60",
        ]))
        .unwrap();
        assert_eq!(options.fuzz_inputs, 2_000);
        assert_eq!(options.load_seconds, Some(60));
        let picked: Vec<_> = SUITES
            .iter()
            .filter(|s| options.runs(s))
            .map(|s| s.name)
            .collect();
        assert_eq!(picked, ["faults"]);
        assert!(Options::parse(&strings(&["everything"])).is_err());
        assert!(Options::parse(&strings(&["--fuzz-inputs"])).is_err());
        assert!(Options::parse(&strings(&["--fuzz-inputs", "many"])).is_err());
    }

    #[test]
    fn a_report_with_a_panic_or_a_difference_is_a_problem() {
        let clean = json!({"kind": "fuzz", "target": "cloudevents", "inputs": 10, "panics": 0});
        assert_eq!(problem(&clean), None);
        let panicked = json!({"kind": "fuzz", "target": "cloudevents", "panics": 2});
        assert_eq!(
            problem(&panicked).as_deref(),
            Some("fuzz cloudevents: panics = 2")
        );
        let off = json!({"kind": "faults", "difference_from_ground_truth": 3});
        assert!(problem(&off).is_some_and(|p| p.contains("difference_from_ground_truth = 3")));
    }

    #[test]
    fn reports_read_as_one_line_each() {
        let fuzz = json!({"kind": "fuzz", "target": "edge-batch", "inputs": 1_000_000,
            "accepted": 5, "rejected": 999_995, "panics": 0});
        assert_eq!(
            describe(&fuzz),
            "fuzz    edge-batch                     1,000,000 inputs, 5 accepted, \
             999,995 rejected, 0 panics"
        );
        let faults = json!({"kind": "faults", "messages_generated": 10, "messages_delivered": 55,
            "duplicates": 45, "events": 1000, "rejected": 3,
            "faults": {"sqs_restarts": 2}, "difference_from_ground_truth": 0});
        assert!(describe(&faults).contains("55 delivered (45 duplicates)"));
        assert!(describe(&faults).contains("sqs_restarts 2"));
    }
}
