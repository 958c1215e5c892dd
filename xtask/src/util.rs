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

/// Test counts read from test runners' closing lines, summed over runs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TestTally {
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
}

impl TestTally {
    /// Reads counts from a nextest `Summary … N tests run: N passed, N failed, N skipped`
    /// line or a libtest `test result: ok. N passed; N failed; N ignored; …` line.
    pub fn absorb_line(&mut self, line: &str) {
        let counts = if let Some((_, rest)) = line.split_once("tests run:") {
            rest
        } else if let Some((_, rest)) = line.split_once("test result:") {
            rest
        } else {
            return;
        };
        for part in counts.split([',', ';', '.']) {
            let mut words = part.split_whitespace();
            let (Some(number), Some(label)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(number) = number.parse::<u64>() else {
                continue;
            };
            match label {
                "passed" => self.passed += number,
                "failed" | "timed" => self.failed += number,
                "skipped" | "ignored" => self.skipped += number,
                _ => {}
            }
        }
    }
}

/// Like [`run`], but reads the test counts from the output while echoing it.
pub fn run_tallied(command: &mut Command, tally: &mut TestTally) -> Result<()> {
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
            tally.absorb_line(&line);
        }
        tally
    });
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        println!("{line}");
        tally.absorb_line(&line);
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

    #[test]
    fn commands_are_shown_by_program_name() {
        let mut command = Command::new("/usr/local/bin/cargo");
        command.args(["fmt", "--all"]);
        assert_eq!(show(&command), "cargo fmt --all");
    }
}
