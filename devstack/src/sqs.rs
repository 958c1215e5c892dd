//! An SQS emulator: moto's server mode, from PyPI, in a cached virtualenv.
//!
//! Unlike DynamoDB Local, moto can bind loopback only (`-H 127.0.0.1`), and does. It
//! emulates every AWS service moto knows on one port; tollgate uses it for SQS.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use crate::cache::cache_dir;
use crate::http;
use crate::install::InstallOutcome;
use crate::process::{Supervised, start_on_free_port};
use crate::pypi::{Installed, PypiTool, python_in};
use crate::running::{RunningEmulator, RunningSqsServer};

/// The pinned version of the PyPI package `moto` (installed with its `server` extra).
pub const MOTO_PYPI_VERSION: &str = "5.2.5";

const MOTO: PypiTool = PypiTool {
    name: "moto",
    requirement: "moto[server]==5.2.5",
    version: MOTO_PYPI_VERSION,
    version_check: "import moto, moto.server; print(moto.__version__)",
    cost: "~300 MB, ~30 s",
};
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// An installed moto server (the SQS emulator), ready to [`start`](Self::start).
#[derive(Debug, Clone)]
pub struct SqsServer {
    installed: Installed,
}

impl SqsServer {
    /// Ensures `moto[server]` ([`MOTO_PYPI_VERSION`]) is installed in a virtualenv in the
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
    /// lives in `<cache_dir>/moto/moto-<version>/`.
    ///
    /// Idempotent and atomic like [`DynamoDbLocal::ensure_in`](crate::DynamoDbLocal::ensure_in):
    /// the virtualenv is built in a staging directory and renamed into place. (A moved
    /// virtualenv's scripts keep their old `#!` paths, so the server is run as
    /// `<venv>/bin/python -m moto.server`, never through `bin/moto_server`.)
    ///
    /// # Errors
    ///
    /// As for [`ensure`](Self::ensure).
    pub fn ensure_in(cache_dir: &Path) -> Result<Self> {
        Ok(Self {
            installed: MOTO.ensure_in(cache_dir)?,
        })
    }

    /// The virtualenv directory.
    pub fn install_dir(&self) -> &Path {
        &self.installed.venv
    }

    /// The installed moto version.
    pub fn version(&self) -> &str {
        &self.installed.version
    }

    /// Whether [`ensure`](Self::ensure) found the install cached or made it.
    pub fn install_outcome(&self) -> InstallOutcome {
        self.installed.outcome
    }

    /// Starts `python -m moto.server -H 127.0.0.1 -p <free port>` and waits (up to 60 s)
    /// until it answers an SQS `ListQueues`. State is in memory only. The server is killed
    /// when the returned guard is dropped, or when this process dies (see the crate docs
    /// on the watchdog).
    ///
    /// # Errors
    ///
    /// When the server cannot be spawned, exits early, or does not answer in time; the
    /// error includes its output.
    pub fn start(&self) -> Result<RunningSqsServer> {
        let name = format!("moto {} (SQS)", self.installed.version);
        let python = python_in(&self.installed.venv);
        let (port, process) = start_on_free_port(
            &name,
            READY_TIMEOUT,
            |port| {
                let args: Vec<OsString> = vec![
                    "-m".into(),
                    "moto.server".into(),
                    "-H".into(),
                    "127.0.0.1".into(),
                    "-p".into(),
                    port.to_string().into(),
                ];
                Supervised::spawn(&name, &python, &args, &self.installed.venv)
            },
            probe,
        )?;
        Ok(RunningEmulator::new("SQS emulator", port, process))
    }
}

/// One SQS `ListQueues` (query protocol); moto picks the service from the credential scope.
fn probe(port: u16) -> Result<(), String> {
    let response = http::request(
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        "POST",
        "/",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=x/20260101/us-east-1/sqs/aws4_request, \
                 SignedHeaders=host, Signature=x",
            ),
        ],
        "Action=ListQueues&Version=2012-11-05",
        PROBE_TIMEOUT,
    )
    .map_err(|err| err.to_string())?;
    if response.status == 200 && response.body.contains("ListQueuesResponse") {
        Ok(())
    } else {
        Err(format!(
            "ListQueues answered {}: {}",
            response.status, response.body
        ))
    }
}
