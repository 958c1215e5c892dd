//! Running commands and timing steps, with `==> step` progress lines on stderr.

use std::env;
use std::ffi::OsStr;
use std::fmt;
use std::io::{BufRead, BufReader, ErrorKind};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The repository root: the parent of this crate's directory.
pub fn repo_root() -> Result<PathBuf> {
    // `cargo run` sets CARGO_MANIFEST_DIR at run time too; fall back to the build-time one.
    let manifest_dir = env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let root = manifest_dir
        .parent()
        .with_context(|| format!("{} has no parent", manifest_dir.display()))?;
    if !root.join("Cargo.toml").is_file() {
        bail!("{} does not look like the repository root", root.display());
    }
    Ok(root.to_owned())
}

/// The proxy-wasm filters, built for wasm32-wasip1 (release) before tests, benches and
/// the demo, which load them from `target/wasm32-wasip1/release/`.
pub const WASM_PACKAGES: [&str; 2] = ["tollgate-test-filter", "tollgate-edge-filter"];

/// `cargo build --release --target wasm32-wasip1 -p <each of WASM_PACKAGES>`.
pub fn wasm_build_args() -> Vec<&'static str> {
    let mut args = vec!["build", "--release", "--target", "wasm32-wasip1"];
    for package in WASM_PACKAGES {
        args.extend(["-p", package]);
    }
    args
}

/// `cargo`, the same one that runs xtask (`$CARGO`), in `root`.
pub fn cargo(root: &Path) -> Command {
    let mut command = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(root);
    command
}

/// A command that exited unsuccessfully; its exit code becomes xtask's.
#[derive(Debug)]
pub struct CommandFailed {
    command: String,
    status: ExitStatus,
}

impl fmt::Display for CommandFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` failed ({})", self.command, self.status)
    }
}

impl std::error::Error for CommandFailed {}

/// The exit code for an error: a failed command's own code, else 1.
pub fn exit_code_for(err: &anyhow::Error) -> ExitCode {
    let code = err
        .chain()
        .find_map(|cause| cause.downcast_ref::<CommandFailed>())
        .and_then(|failed| failed.status.code())
        .and_then(|code| u8::try_from(code).ok())
        .filter(|&code| code != 0)
        .unwrap_or(1);
    ExitCode::from(code)
}

/// Runs a command with inherited stdio, echoing it first; fails on a non-zero exit.
pub fn run(command: &mut Command) -> Result<()> {
    let shown = show(command);
    eprintln!("    $ {shown}");
    let status = command.status().map_err(|err| spawn_error(err, &shown))?;
    succeeded(shown, status)
}

/// The test runner whose output a [`TestTally`] reads; each closes its run differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runner {
    /// `cargo nextest run`: one `Summary [   1.234s] N tests run: …` line (stderr) for
    /// the whole run.
    Nextest,
    /// `cargo test`: one `test result: ok. N passed; …` line (stdout) per test binary.
    Libtest,
}

/// Test counts read from test runners' closing lines, summed over runs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TestTally {
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
}

impl TestTally {
    /// Adds the counts of `runner`'s closing line; any other line changes nothing.
    ///
    /// Only that one line counts, because nextest replays each failing test's captured
    /// libtest output, `test result: FAILED. 0 passed; 1 failed; …` included (indented),
    /// and lists the failures again after its summary. Nextest's line says `1 test run:`
    /// for a single test, and its words are coloured when `CARGO_TERM_COLOR=always`.
    pub fn absorb_line(&mut self, runner: Runner, line: &str) {
        let line = without_colours(line);
        let counts = match runner {
            // `     Summary [   0.150s] 2/3 tests run: 1 passed (1 flaky), 1 failed, …`
            Runner::Nextest => line
                .trim_start()
                .strip_prefix("Summary [")
                .and_then(|rest| rest.split_once(" run: "))
                .filter(|(run, _)| run.ends_with(" test") || run.ends_with(" tests"))
                .map(|(_, counts)| counts),
            // `test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; …`, unindented.
            Runner::Libtest => line
                .strip_prefix("test result: ")
                .and_then(|rest| rest.split_once(". "))
                .map(|(_, counts)| counts),
        };
        let Some(counts) = counts else {
            return;
        };
        for count in counts.split([',', ';']) {
            // `5 passed (1 slow, 1 flaky)`: the parenthesised details are not extra tests.
            let count = count.split_once('(').map_or(count, |(count, _)| count);
            let Some((number, label)) = count.trim().split_once(' ') else {
                continue;
            };
            let Ok(number) = number.parse::<u64>() else {
                continue;
            };
            match label {
                "passed" => self.passed += number,
                "failed" | "exec failed" | "timed out" => self.failed += number,
                "skipped" | "ignored" => self.skipped += number,
                _ => {}
            }
        }
    }
}

/// `line` without the ANSI colour sequences (`ESC [ … m`) around its words.
fn without_colours(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut rest = line;
    while let Some((text, sequence)) = rest.split_once("\x1b[") {
        plain.push_str(text);
        rest = sequence.split_once('m').map_or("", |(_, after)| after);
    }
    plain.push_str(rest);
    plain
}

/// Like [`run`], but reads `runner`'s test counts from the output while echoing it.
pub fn run_tallied(command: &mut Command, runner: Runner, tally: &mut TestTally) -> Result<()> {
    run_observed(command, runner, tally, |_| {})
}

/// Like [`run_tallied`], and also hands every stdout line to `observe`.
pub fn run_observed(
    command: &mut Command,
    runner: Runner,
    tally: &mut TestTally,
    mut observe: impl FnMut(&str),
) -> Result<()> {
    let shown = show(command);
    eprintln!("    $ {shown}");
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| spawn_error(err, &shown))?;
    let stdout = child.stdout.take().context("child stdout")?;
    let stderr = child.stderr.take().context("child stderr")?;
    let echo_err = std::thread::spawn(move || {
        let mut tally = TestTally::default();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            tally.absorb_line(runner, &line);
        }
        tally
    });
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        println!("{line}");
        tally.absorb_line(runner, &line);
        observe(&line);
    }
    if let Ok(from_stderr) = echo_err.join() {
        tally.passed += from_stderr.passed;
        tally.failed += from_stderr.failed;
        tally.skipped += from_stderr.skipped;
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for `{shown}`"))?;
    succeeded(shown, status)
}

fn succeeded(command: String, status: ExitStatus) -> Result<()> {
    if status.success() {
        Ok(())
    } else {
        Err(CommandFailed { command, status }.into())
    }
}

/// Runs a command and returns its stdout; fails (with its stderr) on a non-zero exit.
pub fn stdout_of(command: &mut Command) -> Result<String> {
    let shown = show(command);
    let output = command
        .stderr(Stdio::piped())
        .output()
        .map_err(|err| spawn_error(err, &shown))?;
    if !output.status.success() {
        bail!(
            "`{shown}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    String::from_utf8(output.stdout).with_context(|| format!("`{shown}` printed non-UTF-8"))
}

/// Whether a command runs and exits successfully (its output discarded).
pub fn succeeds_quietly(command: &mut Command) -> bool {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn spawn_error(err: std::io::Error, shown: &str) -> anyhow::Error {
    if err.kind() == ErrorKind::NotFound {
        anyhow::anyhow!("cannot run `{shown}`: program not found on PATH")
    } else {
        anyhow::Error::new(err).context(format!("running `{shown}`"))
    }
}

/// A command line for display: the program's file name, then the arguments.
fn show(command: &Command) -> String {
    let program = Path::new(command.get_program())
        .file_name()
        .unwrap_or_else(|| command.get_program());
    std::iter::once(program)
        .chain(command.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `1234567.5` → `1,234,567.5`.
pub fn grouped(number: &str) -> String {
    let (sign, rest) = number
        .strip_prefix('-')
        .map_or(("", number), |rest| ("-", rest));
    let (whole, fraction) = rest.split_once('.').map_or((rest, ""), |(w, f)| (w, f));
    let mut out = String::new();
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    if fraction.is_empty() {
        format!("{sign}{out}")
    } else {
        format!("{sign}{out}.{fraction}")
    }
}

/// Named steps with timings, summarised at the end.
#[derive(Debug)]
pub struct Steps {
    started: Instant,
    records: Vec<Record>,
}

#[derive(Debug)]
struct Record {
    name: String,
    outcome: Outcome,
    elapsed: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Passed,
    Failed,
    Skipped,
}

impl Steps {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            records: Vec::new(),
        }
    }

    /// Runs one step, printing `==> name` before and its outcome and time after.
    pub fn run<T>(&mut self, name: &str, step: impl FnOnce() -> Result<T>) -> Result<T> {
        eprintln!("==> {name}");
        let started = Instant::now();
        let result = step();
        let elapsed = started.elapsed();
        let outcome = if result.is_ok() {
            Outcome::Passed
        } else {
            Outcome::Failed
        };
        eprintln!(
            "==> {name}: {} in {}",
            if outcome == Outcome::Passed {
                "ok"
            } else {
                "FAILED"
            },
            seconds(elapsed)
        );
        self.records.push(Record {
            name: name.to_owned(),
            outcome,
            elapsed,
        });
        result
    }

    /// Records a step that was not run.
    pub fn skip(&mut self, name: &str, reason: &str) {
        eprintln!("==> {name}: skipped ({reason})");
        self.records.push(Record {
            name: name.to_owned(),
            outcome: Outcome::Skipped,
            elapsed: Duration::ZERO,
        });
    }

    /// Prints every step's outcome and time, and the total.
    pub fn print_summary(&self) {
        let width = self
            .records
            .iter()
            .map(|record| record.name.len())
            .max()
            .unwrap_or(0);
        eprintln!();
        eprintln!("==> summary");
        for record in &self.records {
            let (label, time) = match record.outcome {
                Outcome::Passed => ("ok", seconds(record.elapsed)),
                Outcome::Failed => ("FAILED", seconds(record.elapsed)),
                Outcome::Skipped => ("skipped", String::new()),
            };
            eprintln!("    {:<width$}  {label:<7} {time:>8}", record.name);
        }
        eprintln!(
            "    {:<width$}  {:<7} {:>8}",
            "total",
            "",
            seconds(self.started.elapsed())
        );
    }
}

fn seconds(elapsed: Duration) -> String {
    format!("{:.1}s", elapsed.as_secs_f64())
}

/// A new API key: `tg_` and 32 random bytes in hex, the shape the usage API issues.
pub fn new_api_key() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("the operating system's random source failed: {e}"))?;
    Ok(format!("tg_{}", hex::encode(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_command_passes_its_exit_code_on() {
        let err = run(Command::new("sh").args(["-c", "exit 7"])).unwrap_err();
        assert_eq!(exit_code_for(&err), ExitCode::from(7));
    }

    #[test]
    fn other_errors_exit_with_1() {
        let err = anyhow::anyhow!("something else");
        assert_eq!(exit_code_for(&err), ExitCode::from(1));
    }

    fn tally_of(runner: Runner, output: &str) -> TestTally {
        let mut tally = TestTally::default();
        for line in output.lines() {
            tally.absorb_line(runner, line);
        }
        tally
    }

    fn counts(passed: u64, failed: u64, skipped: u64) -> TestTally {
        TestTally {
            passed,
            failed,
            skipped,
        }
    }

    /// A failing `cargo nextest run` as printed by nextest 0.9.143 (stderr): the failing
    /// test's captured libtest output is replayed, indented, and listed again at the end.
    const NEXTEST_ONE_FAILURE: &str = "\
────────────
 Nextest run ID 035192f1-b356-4eb6-a1d9-e08fba376b93 with nextest profile: default
    Starting 3 tests across 2 binaries (1 test skipped)
        PASS [   0.005s] (1/3) tollgate-core alert::tests::ids_round_trip_and_reject_lookalikes
        FAIL [   0.149s] (2/3) tollgate-core billing::tests::values_are_whole_units_with_the_remainder_carried
  stdout ───

    running 1 test
    test billing::tests::values_are_whole_units_with_the_remainder_carried ... FAILED

    failures:

    failures:
        billing::tests::values_are_whole_units_with_the_remainder_carried

    test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 3 filtered out; finished in 0.13s

  stderr ───

    thread 'billing::tests::values_are_whole_units_with_the_remainder_carried' (24924) panicked at functions/core/src/billing.rs:420:9:
    assertion `left == right` failed
      left: 1
     right: 2

        PASS [   0.006s] (3/3) tollgate-store table::tests::keys_are_shaped
────────────
     Summary [   0.150s] 3 tests run: 2 passed, 1 failed, 1 skipped
        FAIL [   0.149s] (2/3) tollgate-core billing::tests::values_are_whole_units_with_the_remainder_carried
error: test run failed
";

    #[test]
    fn a_nextest_failure_counts_once_though_its_libtest_output_is_replayed() {
        assert_eq!(
            tally_of(Runner::Nextest, NEXTEST_ONE_FAILURE),
            counts(2, 1, 1)
        );
    }

    #[test]
    fn a_single_nextest_test_counts_from_the_singular_summary() {
        let output = "\
    Starting 1 test across 59 binaries (589 tests skipped)
        PASS [   0.005s] (1/1) tollgate-core alert::tests::ids_round_trip_and_reject_lookalikes
────────────
     Summary [   0.007s] 1 test run: 1 passed, 589 skipped
";
        assert_eq!(tally_of(Runner::Nextest, output), counts(1, 0, 589));
    }

    #[test]
    fn retries_count_once_and_flaky_tests_as_passed() {
        let output = "\
    Starting 2 tests across 1 binary (2 tests skipped)
  TRY 1 FAIL [   0.090s] (───) tollgate-store apply::tests::fails
  TRY 1 FAIL [   0.229s] (───) tollgate-store apply::tests::flaky
  TRY 2 FAIL [   0.156s] (───) tollgate-store apply::tests::fails
  TRY 2 PASS [   0.008s] (1/2) tollgate-store apply::tests::flaky
  TRY 3 FAIL [   0.078s] (2/2) tollgate-store apply::tests::fails
────────────
     Summary [   0.327s] 2 tests run: 1 passed (1 flaky), 1 failed, 2 skipped
   FLAKY 2/3 [   0.008s] (1/2) tollgate-store apply::tests::flaky
  TRY 3 FAIL [   0.078s] (2/2) tollgate-store apply::tests::fails
error: test run failed
";
        assert_eq!(tally_of(Runner::Nextest, output), counts(1, 1, 2));
    }

    #[test]
    fn exec_failures_and_timeouts_count_as_failed_in_a_cancelled_run() {
        // nextest's own snapshot of its summary line with every kind of outcome.
        let output = "     Summary [  15.750s] 8/10 tests run: 5 passed (1 slow, 1 flaky, 1 leaky), \
                      2 failed, 1 exec failed, 1 timed out, 2 skipped\n\
                      warning: 2/10 tests were not run due to signal\n";
        assert_eq!(tally_of(Runner::Nextest, output), counts(5, 4, 2));
    }

    #[test]
    fn a_coloured_nextest_summary_counts_like_a_plain_one() {
        // `CARGO_TERM_COLOR=always cargo nextest run`, as nextest 0.9.143 writes it.
        let output = "\x1b[31;1m     Summary\x1b[0m [   0.266s] \x1b[1m3\x1b[0m tests run: \
                      \x1b[1m1\x1b[0m \x1b[32;1mpassed\x1b[0m, \x1b[1m2\x1b[0m \
                      \x1b[31;1mfailed\x1b[0m, \x1b[1m1\x1b[0m \x1b[33;1mskipped\x1b[0m";
        assert_eq!(tally_of(Runner::Nextest, output), counts(1, 2, 1));
    }

    #[test]
    fn libtest_counts_add_up_over_every_binary() {
        // `cargo test --doc` (stdout): one closing line per crate.
        let output = "\
   Doc-tests tollgate_core

running 7 tests
test functions/core/src/lib.rs - (line 12) ... ok

test result: ok. 7 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s

all doctests ran in 0.47s; merged doctests compilation took 0.47s

running 2 tests
test functions/store/src/lib.rs - (line 9) ... FAILED

test result: FAILED. 1 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s

running 0 tests

test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s
";
        assert_eq!(tally_of(Runner::Libtest, output), counts(8, 1, 1));
    }

    #[test]
    fn each_runner_reads_only_its_own_closing_line() {
        assert_eq!(
            tally_of(Runner::Libtest, NEXTEST_ONE_FAILURE),
            counts(0, 0, 0)
        );
        let libtest = "test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out";
        assert_eq!(tally_of(Runner::Nextest, libtest), counts(0, 0, 0));
    }

    #[test]
    fn commands_are_shown_by_program_name() {
        let mut command = Command::new("/usr/local/bin/cargo");
        command.args(["fmt", "--all"]);
        assert_eq!(show(&command), "cargo fmt --all");
    }
}
