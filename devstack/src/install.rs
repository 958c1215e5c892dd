//! Atomic, idempotent installs into the cache directory.
//!
//! An install is built in a staging directory next to its final place and renamed into
//! place only once it is complete, so an interrupted install (Ctrl-C, a killed CI job, a
//! full disk) leaves at most a stale staging directory behind, never a final directory that
//! looks installed but is not. Staging directories left by dead processes (or older than
//! an hour) are swept on later installs.

use std::ffi::OsStr;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

/// What [`crate::DynamoDbLocal::ensure`] (and later installers) had to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallOutcome {
    /// A complete install was already in the cache; nothing was fetched.
    AlreadyCached,
    /// The emulator was fetched and installed by this call.
    Installed,
}

const STAGING_PREFIX: &str = ".staging-";
/// Staging directories older than this are leftovers of interrupted installs.
const STALE_STAGING_AGE: Duration = Duration::from_secs(60 * 60);

/// Makes `final_dir` a complete install.
///
/// Returns [`InstallOutcome::AlreadyCached`] without touching anything when
/// `is_complete(final_dir)` holds. Otherwise calls `populate` with a fresh, empty staging
/// directory; `populate` returns the directory (inside staging) that becomes `final_dir`.
/// That directory must satisfy `is_complete` before it is renamed into place. When another
/// process finishes the same install first, its result is kept and counts as cached.
pub(crate) fn install_atomically(
    final_dir: &Path,
    is_complete: impl Fn(&Path) -> bool,
    populate: impl FnOnce(&Path) -> Result<PathBuf>,
) -> Result<InstallOutcome> {
    let parent = final_dir
        .parent()
        .with_context(|| format!("{} has no parent directory", final_dir.display()))?;
    sweep_stale_staging(parent);
    if is_complete(final_dir) {
        return Ok(InstallOutcome::AlreadyCached);
    }
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    if final_dir.exists() {
        eprintln!(
            "[devstack] {} is incomplete (not made by an atomic install): removing it",
            final_dir.display()
        );
        fs::remove_dir_all(final_dir)
            .with_context(|| format!("removing incomplete install {}", final_dir.display()))?;
    }

    let staging = Staging::create(parent, final_dir)?;
    let ready = populate(&staging.path)?;
    if !is_complete(&ready) {
        bail!(
            "the install in {} is incomplete after populating it",
            ready.display()
        );
    }
    match fs::rename(&ready, final_dir) {
        Ok(()) => Ok(InstallOutcome::Installed),
        Err(_) if is_complete(final_dir) => Ok(InstallOutcome::AlreadyCached),
        Err(err) => Err(err).with_context(|| {
            format!(
                "moving {} into place at {}",
                ready.display(),
                final_dir.display()
            )
        }),
    }
}

/// Runs a command to completion with its output captured; a failure reports the output.
/// `hint` says how to get the program when it is missing.
pub(crate) fn run_captured(command: &mut Command, hint: &str) -> Result<Output> {
    let shown = show(command);
    let output = match command.output() {
        Ok(output) => output,
        Err(err) if err.kind() == ErrorKind::NotFound => {
            bail!(
                "`{}` is not installed or not on PATH (needed for `{shown}`): {hint}",
                command.get_program().to_string_lossy()
            )
        }
        Err(err) => return Err(err).with_context(|| format!("running `{shown}`")),
    };
    if !output.status.success() {
        bail!(
            "`{shown}` failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output)
}

fn show(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A staging directory, removed (with whatever is left in it) when dropped.
struct Staging {
    path: PathBuf,
}

impl Staging {
    fn create(parent: &Path, final_dir: &Path) -> Result<Self> {
        let name = final_dir
            .file_name()
            .map(OsStr::to_string_lossy)
            .unwrap_or_default();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.subsec_nanos())
            .unwrap_or_default();
        let path = parent.join(format!(
            "{STAGING_PREFIX}{name}-{}-{nanos}",
            std::process::id()
        ));
        fs::create_dir(&path)
            .with_context(|| format!("creating staging directory {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // Best effort: a leftover is swept by a later install.
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Removes staging directories left by interrupted installs (best effort).
fn sweep_stale_staging(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(STAGING_PREFIX) {
            continue;
        }
        let is_old = entry
            .metadata()
            .and_then(|meta| meta.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok())
            .is_some_and(|age| age > STALE_STAGING_AGE);
        if is_old || !owner_is_alive(&name) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether the process named in a staging directory (`.staging-<name>-<pid>-<nanos>`)
/// still runs; unknown counts as alive.
fn owner_is_alive(staging_name: &str) -> bool {
    staging_name
        .rsplit('-')
        .nth(1)
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_none_or(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tollgate-devstack-install-{name}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn has_marker(dir: &Path) -> bool {
        dir.join("marker").is_file()
    }

    #[test]
    fn a_complete_install_is_not_repeated() {
        let root = scratch("repeat");
        let target = root.join("tool-1.0");
        let populate = |staging: &Path| {
            let dir = staging.join("out");
            fs::create_dir(&dir)?;
            fs::write(dir.join("marker"), "ok")?;
            Ok(dir)
        };
        let first = install_atomically(&target, has_marker, populate).unwrap();
        let second = install_atomically(&target, has_marker, |_: &Path| -> Result<PathBuf> {
            bail!("must not populate again")
        })
        .unwrap();
        assert_eq!(first, InstallOutcome::Installed);
        assert_eq!(second, InstallOutcome::AlreadyCached);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_failed_install_leaves_neither_the_target_nor_staging_behind() {
        let root = scratch("fail");
        let target = root.join("tool-1.0");
        let result = install_atomically(&target, has_marker, |staging: &Path| {
            let dir = staging.join("out");
            fs::create_dir(&dir)?;
            fs::write(dir.join("half-written"), "…")?;
            bail!("network went away")
        });
        assert!(result.is_err());
        assert!(!target.exists());
        assert_eq!(fs::read_dir(&root).unwrap().count(), 0);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn staging_left_by_a_dead_process_is_swept_and_a_live_one_is_kept() {
        let root = scratch("sweep");
        let dead = root.join(format!("{STAGING_PREFIX}tool-1.0-{}-1", u32::MAX));
        let live = root.join(format!("{STAGING_PREFIX}tool-1.0-{}-2", std::process::id()));
        fs::create_dir(&dead).unwrap();
        fs::create_dir(&live).unwrap();
        sweep_stale_staging(&root);
        assert!(!dead.exists());
        assert!(live.exists());
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn an_incomplete_population_is_not_moved_into_place() {
        let root = scratch("incomplete");
        let target = root.join("tool-1.0");
        let result = install_atomically(&target, has_marker, |staging: &Path| {
            let dir = staging.join("out");
            fs::create_dir(&dir)?;
            Ok(dir)
        });
        assert!(result.is_err());
        assert!(!target.exists());
        fs::remove_dir_all(root).unwrap();
    }
}
