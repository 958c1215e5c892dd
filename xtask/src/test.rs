//! `cargo xtask test`: everything CI checks, against a DynamoDB Local started for the run.
//!
//! Steps: toolchain (clippy, rustfmt, wasm32-wasip1) → DynamoDB Local (its endpoint goes
//! to every later command as `TOLLGATE_DYNAMODB_ENDPOINT`) → `cfn-lint
//! infra/template.yaml` (pinned, installed into the cache on first use) → `cargo fmt
//! --check` → `cargo clippy -D warnings` → `cargo deny check` (bans, licenses, sources;
//! advisories when its database can be fetched; installed into the cache on first use) →
//! the proxy-wasm filters for wasm32-wasip1
//! (release; the wasm host's tests load them) → headless Chromium and ChromeDriver
//! (Debian packages, installed once; the dashboard's browser test drives them) → tests (`cargo nextest run` when
//! available, else `cargo test`) → doctests (`cargo test --doc`; nextest does not run
//! them). The first failure stops the run; DynamoDB Local is stopped either way, and a
//! failed command's exit code becomes xtask's.

use std::env;
use std::path::Path;
use std::process::Command;

use anyhow::{Result, bail};
use tollgate_devstack::{
    Advisories, CargoDeny, CfnLint, Chromium, DYNAMODB_ENDPOINT_ENV, DynamoDbLocal,
    SQS_ENDPOINT_ENV, SqsServer,
};

use crate::util::{self, Runner, Steps, TestTally, cargo};

const COMPONENTS: [&str; 2] = ["clippy", "rustfmt"];
const TARGETS: [&str; 1] = ["wasm32-wasip1"];
/// The AWS SAM template, relative to the repository root.
const SAM_TEMPLATE: &str = "infra/template.yaml";

/// What `cargo xtask test` was asked to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Run `cargo fmt --check` and clippy (off with `--no-lint`).
    pub lint: bool,
    /// Arguments after `--`, for the test runner.
    pub runner_args: Vec<String>,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut options = Self {
            lint: true,
            runner_args: Vec::new(),
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--no-lint" => options.lint = false,
                "--" => {
                    options.runner_args = args.cloned().collect();
                    break;
                }
                other => bail!(
                    "`cargo xtask test` does not know {other:?}; \
                     test runner arguments go after `--` (see `cargo xtask help`)"
                ),
            }
        }
        Ok(options)
    }
}

pub fn run(options: &Options) -> Result<()> {
    let mut steps = Steps::new();
    let mut tally = TestTally::default();
    let result = run_steps(options, &mut steps, &mut tally);
    steps.print_summary();
    // The last line is the plain total, so whoever reads only the closing line (CI) sees
    // every test counted, not the last runner's count alone.
    println!(
        "summary: {} passed, {} failed, {} skipped",
        tally.passed, tally.failed, tally.skipped
    );
    result
}

/// The emulators the tests share, handed to them through the environment.
struct Endpoints {
    dynamodb: String,
    sqs: String,
}

fn run_steps(options: &Options, steps: &mut Steps, tally: &mut TestTally) -> Result<()> {
    let root = util::repo_root()?;
    steps.run("toolchain: clippy, rustfmt, wasm32-wasip1", || {
        ensure_toolchain(&root)
    })?;
    let dynamodb = steps.run("DynamoDB Local", || DynamoDbLocal::ensure()?.start())?;
    let sqs = match steps.run("SQS emulator (moto)", || SqsServer::ensure()?.start()) {
        Ok(sqs) => sqs,
        Err(err) => {
            let _ = dynamodb.stop();
            return Err(err);
        }
    };
    let endpoints = Endpoints {
        dynamodb: dynamodb.endpoint().to_owned(),
        sqs: sqs.endpoint().to_owned(),
    };
    let checks = run_checks(options, steps, tally, &root, &endpoints);
    // Stop the emulators whatever happened; a check's failure is the one to report.
    let stopped = sqs.stop().and(dynamodb.stop());
    checks.and(stopped)
}

fn run_checks(
    options: &Options,
    steps: &mut Steps,
    tally: &mut TestTally,
    root: &Path,
    endpoints: &Endpoints,
) -> Result<()> {
    let cargo = || {
        let mut command = cargo(root);
        command.env(DYNAMODB_ENDPOINT_ENV, &endpoints.dynamodb);
        command.env(SQS_ENDPOINT_ENV, &endpoints.sqs);
        if env::var_os("CI").is_some() && env::var_os("CARGO_INCREMENTAL").is_none() {
            // A clean CI build gains nothing from incremental state and it doubles
            // `target/debug` (≈ 30 GB on a warm developer tree; a full disk failed CI once).
            command.env("CARGO_INCREMENTAL", "0");
        }
        command
    };
    if options.lint {
        // First: it takes a second or two, and needs no build.
        steps.run("cfn-lint infra/template.yaml", || lint_template(root))?;
        steps.run("cargo fmt --check", || {
            util::run(cargo().args(["fmt", "--all", "--", "--check"]))
        })?;
        steps.run("cargo clippy", || {
            util::run(cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))
        })?;
        steps.run("cargo deny: bans, licenses, sources, advisories", || {
            let report = CargoDeny::ensure()?.check(root)?;
            eprintln!("    passed: {}", report.passed.join(", "));
            if let Advisories::Skipped { reason } = report.advisories {
                eprintln!("    advisories not checked: {reason}");
            }
            Ok(())
        })?;
    } else {
        steps.skip("cfn-lint infra/template.yaml", "--no-lint");
        steps.skip("cargo fmt --check", "--no-lint");
        steps.skip("cargo clippy", "--no-lint");
        steps.skip(
            "cargo deny: bans, licenses, sources, advisories",
            "--no-lint",
        );
    }

    steps.run("wasm filters (wasm32-wasip1, release)", || {
        util::run(cargo().args(util::wasm_build_args()))
    })?;
    steps.run("Chromium + ChromeDriver (Debian packages)", || {
        let chromium = Chromium::ensure()?;
        eprintln!("    {}", chromium.version()?);
        Ok(())
    })?;

    let scope = scope_args(&options.runner_args);
    if util::succeeds_quietly(cargo().args(["nextest", "--version"])) {
        steps.run("tests (cargo nextest)", || {
            util::run_tallied(
                cargo()
                    .args(["nextest", "run"])
                    .args(&scope)
                    .args(&options.runner_args),
                Runner::Nextest,
                tally,
            )
        })?;
    } else {
        steps.run("tests (cargo test; cargo-nextest not found)", || {
            util::run_tallied(
                cargo().arg("test").args(&scope).args(&options.runner_args),
                Runner::Libtest,
                tally,
            )
        })?;
    }
    let doc_args = package_selection(&options.runner_args);
    steps.run("doctests (cargo test --doc)", || {
        util::run_tallied(
            cargo().args(["test", "--doc"]).args(&scope).args(&doc_args),
            Runner::Libtest,
            tally,
        )
    })?;
    Ok(())
}

/// Lints the SAM template with the pinned cfn-lint (installed on first use, then only
/// checked). Any finding fails the step: cfn-lint's exit code is non-zero for errors,
/// warnings and informational findings alike, and each is printed with its rule id.
fn lint_template(root: &Path) -> Result<()> {
    let cfn_lint = CfnLint::ensure()?;
    eprintln!(
        "    $ cfn-lint {SAM_TEMPLATE}    (cfn-lint {})",
        cfn_lint.version()
    );
    let status = cfn_lint
        .command()
        .current_dir(root)
        .arg("--")
        .arg(SAM_TEMPLATE)
        .status()?;
    if !status.success() {
        bail!(
            "cfn-lint {} found problems in {SAM_TEMPLATE} ({status}); see its findings above",
            cfn_lint.version()
        );
    }
    eprintln!("    {SAM_TEMPLATE}: no findings");
    Ok(())
}

/// `--workspace` unless the runner arguments pick packages themselves.
fn scope_args(runner_args: &[String]) -> Vec<&'static str> {
    let picks_packages = runner_args.iter().any(|arg| {
        arg == "-p"
            || arg == "--package"
            || arg.starts_with("--package=")
            || (arg.starts_with("-p") && !arg.starts_with("--"))
    });
    if picks_packages {
        Vec::new()
    } else {
        vec!["--workspace"]
    }
}

/// The package-selection arguments (`-p`, `--package`, `--exclude`) among the runner
/// arguments: the only ones that also make sense for the doctest run.
fn package_selection(runner_args: &[String]) -> Vec<String> {
    let mut selected = Vec::new();
    let mut args = runner_args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-p" | "--package" | "--exclude" => {
                selected.push(arg.clone());
                selected.extend(args.next().cloned());
            }
            _ if arg.starts_with("--package=")
                || arg.starts_with("--exclude=")
                || (arg.starts_with("-p") && !arg.starts_with("--")) =>
            {
                selected.push(arg.clone());
            }
            _ => {}
        }
    }
    selected
}

/// Adds the rustup components and targets that are missing (checks first: offline-safe
/// when everything is there).
pub(crate) fn ensure_toolchain(root: &Path) -> Result<()> {
    let rustup = || {
        let mut command = Command::new("rustup");
        command.current_dir(root);
        command
    };
    if !util::succeeds_quietly(rustup().arg("--version")) {
        eprintln!(
            "    rustup not found: assuming {} and {} come with this toolchain",
            COMPONENTS.join(", "),
            TARGETS.join(", ")
        );
        return Ok(());
    }

    let installed = util::stdout_of(rustup().args(["component", "list", "--installed"]))?;
    let missing = not_installed(&COMPONENTS, &installed);
    if missing.is_empty() {
        eprintln!("    components {} installed", COMPONENTS.join(", "));
    } else {
        util::run(rustup().args(["component", "add"]).args(&missing))?;
    }

    let installed = util::stdout_of(rustup().args(["target", "list", "--installed"]))?;
    let missing = not_installed(&TARGETS, &installed);
    if missing.is_empty() {
        eprintln!("    target {} installed", TARGETS.join(", "));
    } else {
        util::run(rustup().args(["target", "add"]).args(&missing))?;
    }
    Ok(())
}

/// Which of `wanted` are not in rustup's `--installed` listing, where components carry
/// the host triple (`clippy-x86_64-unknown-linux-gnu`) and targets do not.
fn not_installed<'a>(wanted: &[&'a str], listing: &str) -> Vec<&'a str> {
    wanted
        .iter()
        .copied()
        .filter(|name| {
            !listing.lines().map(str::trim).any(|line| {
                line == *name
                    || line
                        .strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with('-'))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|arg| (*arg).to_owned()).collect()
    }

    #[test]
    fn no_arguments_lint_and_run_everything() {
        let options = Options::parse(&[]).unwrap();
        assert_eq!(
            options,
            Options {
                lint: true,
                runner_args: vec![]
            }
        );
    }

    #[test]
    fn arguments_after_the_separator_go_to_the_runner_verbatim() {
        let options = Options::parse(&strings(&["--no-lint", "--", "store", "--no-lint"])).unwrap();
        assert!(!options.lint);
        assert_eq!(options.runner_args, strings(&["store", "--no-lint"]));
    }

    #[test]
    fn unknown_flags_before_the_separator_are_rejected() {
        assert!(Options::parse(&strings(&["store"])).is_err());
        assert!(Options::parse(&strings(&["--lint"])).is_err());
    }

    #[test]
    fn picking_packages_drops_workspace_and_carries_over_to_doctests() {
        let args = strings(&["-p", "tollgate-store", "--no-capture", "apply"]);
        assert!(scope_args(&args).is_empty());
        assert_eq!(package_selection(&args), strings(&["-p", "tollgate-store"]));

        let args = strings(&[
            "--package=tollgate-core",
            "--exclude",
            "xtask",
            "-ptollgate-x",
        ]);
        assert!(scope_args(&args).is_empty());
        assert_eq!(package_selection(&args), args);
    }

    #[test]
    fn the_wasm_filters_build_in_one_release_command() {
        assert_eq!(
            util::wasm_build_args().join(" "),
            "build --release --target wasm32-wasip1 -p tollgate-test-filter -p tollgate-edge-filter"
        );
    }

    #[test]
    fn a_filter_alone_keeps_the_whole_workspace() {
        let args = strings(&["store"]);
        assert_eq!(scope_args(&args), vec!["--workspace"]);
        assert!(package_selection(&args).is_empty());
    }

    #[test]
    fn components_are_matched_with_or_without_a_host_triple() {
        let listing = "cargo-x86_64-unknown-linux-gnu\nclippy-x86_64-unknown-linux-gnu\nrustfmt\n";
        assert!(not_installed(&["clippy", "rustfmt"], listing).is_empty());
        assert_eq!(
            not_installed(&["clippy", "rust-src"], listing),
            vec!["rust-src"]
        );
        let targets = "wasm32-wasip1\nx86_64-unknown-linux-gnu\n";
        assert!(not_installed(&["wasm32-wasip1"], targets).is_empty());
        assert_eq!(
            not_installed(&["wasm32-wasip2"], targets),
            vec!["wasm32-wasip2"]
        );
    }
}
