//! An SQS emulator: moto's server mode, from PyPI, in a cached virtualenv.
//!
//! Unlike DynamoDB Local, moto can bind loopback only (`-H 127.0.0.1`), and does. It
//! emulates every AWS service moto knows on one port; tollgate uses it for SQS.

use std::ffi::OsString;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cache::cache_dir;
use crate::http;
use crate::install::{InstallOutcome, install_atomically, run_captured};
use crate::process::{Supervised, start_on_free_port};
use crate::running::{RunningEmulator, RunningSqsServer};

/// The pinned version of the PyPI package `moto` (installed with its `server` extra).
pub const MOTO_PYPI_VERSION: &str = "5.2.5";

/// Written last into a finished install; holds the moto version.
const MARKER: &str = "tollgate-install.txt";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const PYTHON_HINT: &str = "install Python 3.9+ with venv (Debian/Ubuntu: \
     `apt-get install python3 python3-venv`)";

/// An installed moto server (the SQS emulator), ready to [`start`](Self::start).
#[derive(Debug, Clone)]
pub struct SqsServer {
    venv: PathBuf,
    version: String,
    outcome: InstallOutcome,
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
        let venv = cache_dir
            .join("moto")
            .join(format!("moto-{MOTO_PYPI_VERSION}"));
        let started = Instant::now();
        let outcome = install_atomically(&venv, is_complete, |staging| {
            eprintln!(
                "[devstack] installing moto[server]=={MOTO_PYPI_VERSION} from PyPI into {} (one time, ~300 MB, ~30 s)",
                venv.display()
            );
            populate(staging)
        })?;
        let version = read_marker(&venv)?;
        match outcome {
            InstallOutcome::AlreadyCached => {
                eprintln!("[devstack] moto {version}: cached at {}", venv.display())
            }
            InstallOutcome::Installed => eprintln!(
                "[devstack] moto {version}: installed at {} in {:.1}s",
                venv.display(),
                started.elapsed().as_secs_f64()
            ),
        }
        Ok(Self {
            venv,
            version,
            outcome,
        })
    }

    /// The virtualenv directory.
    pub fn install_dir(&self) -> &Path {
        &self.venv
    }

    /// The installed moto version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Whether [`ensure`](Self::ensure) found the install cached or made it.
    pub fn install_outcome(&self) -> InstallOutcome {
        self.outcome
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
        let name = format!("moto {} (SQS)", self.version);
        let python = python_in(&self.venv);
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
                Supervised::spawn(&name, &python, &args, &self.venv)
            },
            probe,
        )?;
        Ok(RunningEmulator::new("SQS emulator", port, process))
    }
}

fn python_in(venv: &Path) -> PathBuf {
    venv.join("bin").join("python")
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

fn is_complete(venv: &Path) -> bool {
    python_in(venv).exists() && venv.join(MARKER).is_file()
}

fn read_marker(venv: &Path) -> Result<String> {
    let marker = venv.join(MARKER);
    let text =
        fs::read_to_string(&marker).with_context(|| format!("reading {}", marker.display()))?;
    text.lines()
        .find_map(|line| line.strip_prefix("moto-version="))
        .map(str::to_owned)
        .with_context(|| format!("{} names no moto-version", marker.display()))
}

/// Creates the virtualenv in `staging`, installs moto into it and checks it imports;
/// returns the virtualenv to move into place.
fn populate(staging: &Path) -> Result<PathBuf> {
    let venv = staging.join("venv");
    run_captured(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        PYTHON_HINT,
    )
    .context("creating a virtualenv for moto")?;
    let python = python_in(&venv);
    let spec = format!("moto[server]=={MOTO_PYPI_VERSION}");
    run_captured(
        Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            &spec,
        ]),
        PYTHON_HINT,
    )
    .with_context(|| format!("installing {spec} from PyPI"))?;
    let output = run_captured(
        Command::new(&python).args(["-c", "import moto, moto.server; print(moto.__version__)"]),
        PYTHON_HINT,
    )
    .context("importing the installed moto")?;
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if version != MOTO_PYPI_VERSION {
        bail!("asked pip for moto {MOTO_PYPI_VERSION}, got {version:?}");
    }
    let marker = venv.join(MARKER);
    fs::write(
        &marker,
        format!("pypi-package={spec}\nmoto-version={version}\n"),
    )
    .with_context(|| format!("writing {}", marker.display()))?;
    Ok(venv)
}
