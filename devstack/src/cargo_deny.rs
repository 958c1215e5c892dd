//! cargo-deny, the dependency checker, built from crates.io into the cache directory, for
//! `cargo xtask test` to check the workspace's dependency graph against `deny.toml`:
//! licenses, banned or duplicated crates, and where crates come from.
//!
//! Installed like the other tools (see [`crate::CfnLint`]): pinned, once, atomically, with
//! `cargo install --locked`, so the same sources build the same binary on every machine.
//!
//! **Advisories** need the RustSec advisory database, a git repository on GitHub. Where
//! that cannot be fetched (a machine that reaches only package registries), [`check`]
//! says so and checks everything else rather than failing or pretending: the report's
//! [`Advisories::Skipped`] carries the reason. A database fetched earlier is not trusted
//! as is, because nothing here says how old it is.
//!
//! [`check`]: CargoDeny::check

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cache::cache_dir;
use crate::install::{InstallOutcome, install_atomically, run_captured};

/// The pinned version of the crate `cargo-deny`.
pub const CARGO_DENY_VERSION: &str = "0.20.2";

/// The checks that need nothing but the workspace and the registry index.
pub const OFFLINE_CHECKS: [&str; 3] = ["bans", "licenses", "sources"];

/// How long fetching the advisory database may take before it counts as unreachable.
const ADVISORY_FETCH_LIMIT: Duration = Duration::from_secs(90);

/// Written last into a finished install; names the version.
const MARKER: &str = "tollgate-install.txt";
const CARGO_HINT: &str = "install the Rust toolchain (rustup) so that `cargo` is on PATH";

/// An installed cargo-deny.
#[derive(Debug, Clone)]
pub struct CargoDeny {
    root: PathBuf,
    outcome: InstallOutcome,
}

/// Whether the advisories check ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Advisories {
    /// The database was fetched and the check passed.
    Checked,
    /// The database could not be fetched: why (the first line of cargo-deny's error).
    Skipped { reason: String },
}

/// What [`CargoDeny::check`] checked; any failure is its `Err`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyReport {
    /// The checks that ran and passed: [`OFFLINE_CHECKS`], plus `advisories` when it ran.
    pub passed: Vec<&'static str>,
    pub advisories: Advisories,
}

impl CargoDeny {
    /// Ensures cargo-deny [`CARGO_DENY_VERSION`] is installed in the default
    /// [`cache_dir`](crate::cache_dir), building it with `cargo install --locked` the
    /// first time (a few minutes; progress lines on stderr).
    ///
    /// # Errors
    ///
    /// When `cargo` is missing, crates.io cannot be reached on the first install, or the
    /// build fails.
    pub fn ensure() -> Result<Self> {
        Self::ensure_in(&cache_dir()?)
    }

    /// Like [`ensure`](Self::ensure), with an explicit cache directory. The install lives
    /// in `<cache_dir>/cargo-deny/cargo-deny-<version>/` (`bin/cargo-deny`).
    ///
    /// # Errors
    ///
    /// As for [`ensure`](Self::ensure).
    pub fn ensure_in(cache_dir: &Path) -> Result<Self> {
        let root = cache_dir
            .join("cargo-deny")
            .join(format!("cargo-deny-{CARGO_DENY_VERSION}"));
        let started = Instant::now();
        let outcome = install_atomically(&root, is_complete, |staging| {
            eprintln!(
                "[devstack] building cargo-deny {CARGO_DENY_VERSION} from crates.io into {} \
                 (one time: ~140 s on 2 cores, 9 MB installed)",
                root.display()
            );
            populate(staging)
        })?;
        match outcome {
            InstallOutcome::AlreadyCached => eprintln!(
                "[devstack] cargo-deny {CARGO_DENY_VERSION}: cached at {}",
                root.display()
            ),
            InstallOutcome::Installed => eprintln!(
                "[devstack] cargo-deny {CARGO_DENY_VERSION}: installed at {} in {:.1}s",
                root.display(),
                started.elapsed().as_secs_f64()
            ),
        }
        Ok(Self { root, outcome })
    }

    /// The `cargo-deny` binary.
    pub fn binary(&self) -> PathBuf {
        binary_in(&self.root)
    }

    /// Whether [`ensure`](Self::ensure) found the install cached or made it.
    pub fn install_outcome(&self) -> InstallOutcome {
        self.outcome
    }

    /// `cargo-deny deny` with no arguments yet, as `cargo deny` would run it.
    pub fn command(&self) -> Command {
        let mut command = Command::new(self.binary());
        command.arg("deny");
        command
    }

    /// Checks the workspace whose root `Cargo.toml` is in `workspace` against its
    /// `deny.toml`: [`OFFLINE_CHECKS`] always, `advisories` only when the advisory
    /// database can be fetched (otherwise skipped, with the reason printed and returned).
    /// cargo-deny's findings go to stderr as it prints them.
    ///
    /// # Errors
    ///
    /// When a check finds an error (warnings pass), or cargo-deny cannot run.
    pub fn check(&self, workspace: &Path) -> Result<DenyReport> {
        let status = self
            .in_workspace(workspace)
            .args(["check", "--hide-inclusion-graph"])
            .args(OFFLINE_CHECKS)
            .status()
            .with_context(|| format!("running {}", self.binary().display()))?;
        if !status.success() {
            bail!(
                "cargo deny check {} failed ({status}); see its diagnostics above",
                OFFLINE_CHECKS.join(" ")
            );
        }
        let mut passed = OFFLINE_CHECKS.to_vec();
        let advisories = match self.fetch_advisory_db(workspace) {
            Err(reason) => {
                eprintln!("[devstack] cargo deny: advisories skipped: {reason}");
                Advisories::Skipped { reason }
            }
            Ok(()) => {
                // Just fetched: `--offline` keeps the check from fetching it again (the
                // crates themselves were downloaded by the check above).
                let status = self
                    .in_workspace(workspace)
                    .args(["--offline", "check", "--hide-inclusion-graph", "advisories"])
                    .status()
                    .with_context(|| format!("running {}", self.binary().display()))?;
                if !status.success() {
                    bail!("cargo deny check advisories failed ({status}); see above");
                }
                passed.push("advisories");
                Advisories::Checked
            }
        };
        Ok(DenyReport { passed, advisories })
    }

    /// `cargo deny` on `workspace`: its manifest, its `deny.toml` (cargo-deny otherwise
    /// reads the one in the current directory) and its `Cargo.lock` as it is.
    fn in_workspace(&self, workspace: &Path) -> Command {
        let mut command = self.command();
        command
            .current_dir(workspace)
            .arg("--manifest-path")
            .arg(workspace.join("Cargo.toml"))
            .arg("--config")
            .arg(workspace.join("deny.toml"))
            .arg("--locked");
        command
    }

    /// `cargo deny fetch db`, bounded in time: `Err` holds why it failed.
    fn fetch_advisory_db(&self, workspace: &Path) -> Result<(), String> {
        let mut child = self
            .in_workspace(workspace)
            .args(["fetch", "db"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run cargo-deny: {e}"))?;
        let deadline = Instant::now() + ADVISORY_FETCH_LIMIT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "fetching the advisory database took more than {}s",
                        ADVISORY_FETCH_LIMIT.as_secs()
                    ));
                }
                Err(e) => return Err(format!("waiting for cargo-deny: {e}")),
            }
        };
        if status.success() {
            return Ok(());
        }
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        Err(first_error_line(&stderr)
            .unwrap_or_else(|| format!("fetching the advisory database failed ({status})")))
    }
}

/// Why cargo-deny failed, in one line: its first error (without the log prefix), and the
/// `fatal:` line of the git it ran, which names the cause (`Could not resolve host: …`).
fn first_error_line(stderr: &str) -> Option<String> {
    let lines = || stderr.lines().map(str::trim).filter(|l| !l.is_empty());
    let error = lines()
        .find(|line| line.contains("[ERROR]") || line.starts_with("error"))
        .or_else(|| lines().next())
        .map(|line| match line.split_once("[ERROR] ") {
            Some((_, message)) => message,
            None => line,
        })?;
    let error = match error.char_indices().nth(160) {
        Some((cut, _)) => format!("{}…", &error[..cut]),
        None => error.to_owned(),
    };
    Some(match lines().find(|line| line.starts_with("fatal:")) {
        Some(fatal) if !error.contains(fatal) => format!("{error} ({fatal})"),
        _ => error,
    })
}

fn binary_in(root: &Path) -> PathBuf {
    root.join("bin").join("cargo-deny")
}

fn is_complete(root: &Path) -> bool {
    binary_in(root).is_file() && root.join(MARKER).is_file()
}

/// Builds cargo-deny into `staging/root` (its own target directory in staging, so the
/// workspace's `target/` is neither used nor locked) and checks it runs.
fn populate(staging: &Path) -> Result<PathBuf> {
    let root = staging.join("root");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    run_captured(
        Command::new(cargo)
            .args(["install", "--locked", "--quiet", "cargo-deny", "--version"])
            .arg(CARGO_DENY_VERSION)
            .arg("--root")
            .arg(&root)
            .arg("--target-dir")
            .arg(staging.join("target"))
            // A cargo-deny install must not pick up the caller's build settings.
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_BUILD_RUSTFLAGS")
            .env_remove("CARGO_INCREMENTAL"),
        CARGO_HINT,
    )
    .with_context(|| format!("cargo install cargo-deny {CARGO_DENY_VERSION}"))?;
    let output = run_captured(
        Command::new(binary_in(&root)).args(["deny", "--version"]),
        CARGO_HINT,
    )
    .context("running the installed cargo-deny")?;
    let version = String::from_utf8_lossy(&output.stdout);
    if !version
        .split_whitespace()
        .any(|word| word == CARGO_DENY_VERSION)
    {
        bail!("asked cargo for cargo-deny {CARGO_DENY_VERSION}, got {version:?}");
    }
    fs::write(
        root.join(MARKER),
        format!("crate=cargo-deny\ncargo-deny-version={CARGO_DENY_VERSION}\n"),
    )
    .with_context(|| format!("writing {}", root.join(MARKER).display()))?;
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_for_skipping_is_the_first_error_and_the_git_failure() {
        // What cargo-deny 0.20.2 prints where github.com does not resolve.
        let stderr = "2026-11-24 00:07:58 [ERROR] failed to fetch database: failed to fetch \
                      advisory database https://github.com/RustSec/advisory-db with cli: \
                      failed to clone\nCloning into '/root/.cargo/advisory-dbs/x'...\n\
                      fatal: unable to access 'https://github.com/RustSec/advisory-db/': \
                      Could not resolve host: github.com\n";
        let reason = first_error_line(stderr).unwrap();
        assert!(reason.starts_with("failed to fetch database: "), "{reason}");
        assert!(
            reason.ends_with("(fatal: unable to access 'https://github.com/RustSec/advisory-db/': Could not resolve host: github.com)"),
            "{reason}"
        );
        assert_eq!(first_error_line("just this").as_deref(), Some("just this"));
        assert_eq!(first_error_line("\n \n"), None);
    }

    /// Builds cargo-deny (minutes, the first time) and checks this workspace; `cargo xtask
    /// test` runs the same through its own step, so this is for trying it by hand:
    /// `cargo test -p tollgate-devstack --lib cargo_deny -- --ignored --nocapture`.
    #[test]
    #[ignore = "builds cargo-deny from crates.io the first time (minutes)"]
    fn the_workspace_passes_its_deny_toml() {
        let deny = CargoDeny::ensure().unwrap();
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let report = deny.check(&workspace).unwrap();
        assert_eq!(&report.passed[..3], &OFFLINE_CHECKS);
        eprintln!("{report:?}");
    }

    #[test]
    fn an_install_without_its_marker_is_not_complete() {
        let root = std::env::temp_dir().join(format!("tollgate-cargo-deny-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::write(binary_in(&root), "").unwrap();
        assert!(!is_complete(&root));
        fs::write(root.join(MARKER), "cargo-deny-version=0\n").unwrap();
        assert!(is_complete(&root));
        fs::remove_dir_all(root).unwrap();
    }
}
