//! cfn-lint, the CloudFormation linter (it understands SAM templates), from PyPI in a
//! cached virtualenv, for `cargo xtask test` to check `infra/template.yaml`.
//!
//! Installed like moto (see [`crate::SqsServer`]): pinned, once, atomically. Linting
//! needs no network and no AWS credentials: the resource specifications ship with the
//! package.

use std::path::Path;
use std::process::Command;

use anyhow::Result;

use crate::cache::cache_dir;
use crate::install::InstallOutcome;
use crate::pypi::{Installed, PypiTool, python_in};

/// The pinned version of the PyPI package `cfn-lint`.
pub const CFN_LINT_PYPI_VERSION: &str = "1.58.0";

const CFN_LINT: PypiTool = PypiTool {
    name: "cfn-lint",
    requirement: "cfn-lint==1.58.0",
    version: CFN_LINT_PYPI_VERSION,
    version_check: "import cfnlint.version; print(cfnlint.version.__version__)",
    cost: "~180 MB, ~10 s",
};

/// The package's console script, run through the virtualenv's interpreter (`cfnlint` has
/// no `__main__`, and a moved virtualenv's scripts point at the staging directory).
const RUN_CFN_LINT: &str =
    "import sys; from cfnlint.runner import main; sys.argv[0] = 'cfn-lint'; sys.exit(main())";

/// An installed cfn-lint.
#[derive(Debug, Clone)]
pub struct CfnLint {
    installed: Installed,
}

impl CfnLint {
    /// Ensures `cfn-lint` ([`CFN_LINT_PYPI_VERSION`]) is installed in a virtualenv in the
    /// default [`cache_dir`](crate::cache_dir).
    ///
    /// # Errors
    ///
    /// When Python 3 with `venv` is missing, or the install fails (no network to PyPI, an
    /// unwritable cache).
    pub fn ensure() -> Result<Self> {
        Self::ensure_in(&cache_dir()?)
    }

    /// Like [`ensure`](Self::ensure), with an explicit cache directory. The virtualenv
    /// lives in `<cache_dir>/cfn-lint/cfn-lint-<version>/`; a complete one is only checked.
    ///
    /// # Errors
    ///
    /// As for [`ensure`](Self::ensure).
    pub fn ensure_in(cache_dir: &Path) -> Result<Self> {
        Ok(Self {
            installed: CFN_LINT.ensure_in(cache_dir)?,
        })
    }

    /// The virtualenv directory.
    pub fn install_dir(&self) -> &Path {
        &self.installed.venv
    }

    /// The installed cfn-lint version.
    pub fn version(&self) -> &str {
        &self.installed.version
    }

    /// Whether [`ensure`](Self::ensure) found the install cached or made it.
    pub fn install_outcome(&self) -> InstallOutcome {
        self.installed.outcome
    }

    /// `cfn-lint` with no arguments yet: add options and templates, then run it. It exits
    /// non-zero for any finding (errors, warnings and informational ones are bits of the
    /// exit code).
    pub fn command(&self) -> Command {
        let mut command = Command::new(python_in(&self.installed.venv));
        command.args(["-c", RUN_CFN_LINT]);
        command
    }
}
