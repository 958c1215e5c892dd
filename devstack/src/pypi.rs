//! Python tools from PyPI, each pinned to one version in its own cached virtualenv.
//!
//! The virtualenv is built in a staging directory and renamed into place once the tool
//! imports and reports the pinned version (see [`install_atomically`]), so a second
//! [`PypiTool::ensure_in`] only checks. A moved virtualenv's scripts keep their old `#!`
//! paths, so tools are run through the virtualenv's `bin/python`, never its scripts.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::install::{InstallOutcome, install_atomically, run_captured};

/// Written last into a finished install; holds the requirement and the version.
const MARKER: &str = "tollgate-install.txt";
const PYTHON_HINT: &str = "install Python 3.9+ with venv (Debian/Ubuntu: \
     `apt-get install python3 python3-venv`)";

/// A pinned tool from PyPI.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PypiTool {
    /// The distribution's name: the cache folder, the progress lines and the marker's
    /// `<name>-version=` key.
    pub name: &'static str,
    /// What pip installs, e.g. `moto[server]==5.2.5`.
    pub requirement: &'static str,
    /// The version `requirement` pins.
    pub version: &'static str,
    /// Python code that imports the tool and prints its version.
    pub version_check: &'static str,
    /// What the one-time install costs, for the progress line (`~300 MB, ~30 s`).
    pub cost: &'static str,
}

/// A tool's virtualenv, complete.
#[derive(Debug, Clone)]
pub(crate) struct Installed {
    pub venv: PathBuf,
    pub version: String,
    pub outcome: InstallOutcome,
}

impl PypiTool {
    /// Ensures the tool is installed in `<cache_dir>/<name>/<name>-<version>/`, with
    /// `[devstack]` progress lines on stderr.
    ///
    /// # Errors
    ///
    /// When Python 3 with `venv` is missing, or the install fails (no network to PyPI, an
    /// unwritable cache, pip installing another version).
    pub(crate) fn ensure_in(&self, cache_dir: &Path) -> Result<Installed> {
        let venv = cache_dir
            .join(self.name)
            .join(format!("{}-{}", self.name, self.version));
        let started = Instant::now();
        let outcome = install_atomically(&venv, is_complete, |staging| {
            eprintln!(
                "[devstack] installing {} from PyPI into {} (one time, {})",
                self.requirement,
                venv.display(),
                self.cost
            );
            self.populate(staging)
        })?;
        let version = self.read_marker(&venv)?;
        match outcome {
            InstallOutcome::AlreadyCached => {
                eprintln!(
                    "[devstack] {} {version}: cached at {}",
                    self.name,
                    venv.display()
                )
            }
            InstallOutcome::Installed => eprintln!(
                "[devstack] {} {version}: installed at {} in {:.1}s",
                self.name,
                venv.display(),
                started.elapsed().as_secs_f64()
            ),
        }
        Ok(Installed {
            venv,
            version,
            outcome,
        })
    }

    fn marker_key(&self) -> String {
        format!("{}-version=", self.name)
    }

    fn read_marker(&self, venv: &Path) -> Result<String> {
        let marker = venv.join(MARKER);
        let text =
            fs::read_to_string(&marker).with_context(|| format!("reading {}", marker.display()))?;
        let key = self.marker_key();
        text.lines()
            .find_map(|line| line.strip_prefix(key.as_str()))
            .map(str::to_owned)
            .with_context(|| format!("{} names no {key}", marker.display()))
    }

    /// Creates the virtualenv in `staging`, installs the tool into it and checks it
    /// imports with the pinned version; returns the virtualenv to move into place.
    fn populate(&self, staging: &Path) -> Result<PathBuf> {
        let venv = staging.join("venv");
        run_captured(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            PYTHON_HINT,
        )
        .with_context(|| format!("creating a virtualenv for {}", self.name))?;
        let python = python_in(&venv);
        run_captured(
            Command::new(&python).args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-input",
                self.requirement,
            ]),
            PYTHON_HINT,
        )
        .with_context(|| format!("installing {} from PyPI", self.requirement))?;
        let output = run_captured(
            Command::new(&python).args(["-c", self.version_check]),
            PYTHON_HINT,
        )
        .with_context(|| format!("importing the installed {}", self.name))?;
        let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if version != self.version {
            bail!(
                "asked pip for {} {}, got {version:?}",
                self.name,
                self.version
            );
        }
        let marker = venv.join(MARKER);
        fs::write(
            &marker,
            format!(
                "pypi-package={}\n{}{version}\n",
                self.requirement,
                self.marker_key()
            ),
        )
        .with_context(|| format!("writing {}", marker.display()))?;
        Ok(venv)
    }
}

/// The virtualenv's interpreter.
pub(crate) fn python_in(venv: &Path) -> PathBuf {
    venv.join("bin").join("python")
}

fn is_complete(venv: &Path) -> bool {
    python_in(venv).exists() && venv.join(MARKER).is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOOL: PypiTool = PypiTool {
        name: "tool",
        requirement: "tool[extra]==1.2.3",
        version: "1.2.3",
        version_check: "print('1.2.3')",
        cost: "nothing",
    };

    #[test]
    fn the_marker_names_the_version_under_the_tools_own_key() {
        let venv =
            std::env::temp_dir().join(format!("tollgate-pypi-marker-{}", std::process::id()));
        fs::create_dir_all(&venv).unwrap();
        fs::write(
            venv.join(MARKER),
            "pypi-package=tool[extra]==1.2.3\ntool-version=1.2.3\n",
        )
        .unwrap();
        assert_eq!(TOOL.read_marker(&venv).unwrap(), "1.2.3");
        let other = PypiTool {
            name: "other",
            ..TOOL
        };
        assert!(other.read_marker(&venv).is_err());
        fs::remove_dir_all(venv).unwrap();
    }
}
