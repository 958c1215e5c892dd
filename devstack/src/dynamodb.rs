//! Amazon DynamoDB Local: install from npm, start on a loopback port, stop on drop.
//!
//! DynamoDB Local 1.25 has no option to choose the address it listens on (its `-help`
//! lists `-port`, `-inMemory`, `-dbPath`, `-sharedDb`, `-cors`, `-delayTransientStatuses`,
//! `-optimizeDbBeforeStartup`, `-disableTelemetry`, `-version`; its Jetty server is built
//! from a port alone), so it listens on all interfaces. We only ever talk to it through
//! `127.0.0.1`, on a random port, in memory, and it lives only as long as its owner.

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
use crate::java::require_java;
use crate::process::{Supervised, start_on_free_port};
use crate::running::{RunningDynamoDbLocal, RunningEmulator};

/// The npm package DynamoDB Local is taken from: it ships `emulator/DynamoDBLocal.jar`
/// and `emulator/DynamoDBLocal_lib/`.
pub const DYNAMODB_LOCAL_NPM_PACKAGE: &str = "amplify-dynamodb-simulator";
/// The pinned version of [`DYNAMODB_LOCAL_NPM_PACKAGE`] (it carries DynamoDB Local 1.25.1).
pub const DYNAMODB_LOCAL_NPM_VERSION: &str = "2.9.30";

const JAR: &str = "DynamoDBLocal.jar";
const LIB_DIR: &str = "DynamoDBLocal_lib";
/// Written last into a finished install; holds the DynamoDB Local version.
const MARKER: &str = "tollgate-install.txt";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const NPM_HINT: &str = "install Node.js with npm (Debian/Ubuntu: `apt-get install npm`)";
const TAR_HINT: &str = "install tar (Debian/Ubuntu: `apt-get install tar`)";

/// An installed DynamoDB Local, ready to [`start`](Self::start).
#[derive(Debug, Clone)]
pub struct DynamoDbLocal {
    dir: PathBuf,
    version: String,
    java: PathBuf,
    outcome: InstallOutcome,
}

impl DynamoDbLocal {
    /// Ensures DynamoDB Local is installed in the default [`cache_dir`](crate::cache_dir)
    /// and that Java 17+ is available.
    ///
    /// # Errors
    ///
    /// When Java is missing or too old, or the install fails (no `npm`, no network to the
    /// npm registry, no `tar`, an incomplete package, an unwritable cache).
    pub fn ensure() -> Result<Self> {
        Self::ensure_in(&cache_dir()?)
    }

    /// Like [`ensure`](Self::ensure), with an explicit cache directory. The install lives
    /// in `<cache_dir>/dynamodb-local/<package>-<version>/`.
    ///
    /// Idempotent: a complete install is used as it is. Installs are atomic (built in a
    /// staging directory, then renamed into place), so an interrupted install is never
    /// taken for a good one, and concurrent callers end up sharing one install.
    ///
    /// # Errors
    ///
    /// As for [`ensure`](Self::ensure).
    pub fn ensure_in(cache_dir: &Path) -> Result<Self> {
        let java = require_java()?;
        let dir = cache_dir.join("dynamodb-local").join(format!(
            "{DYNAMODB_LOCAL_NPM_PACKAGE}-{DYNAMODB_LOCAL_NPM_VERSION}"
        ));
        let started = Instant::now();
        let outcome = install_atomically(&dir, is_complete, |staging| {
            eprintln!(
                "[devstack] installing DynamoDB Local from npm {DYNAMODB_LOCAL_NPM_PACKAGE}@{DYNAMODB_LOCAL_NPM_VERSION} (one time, ~57 MB) into {}",
                dir.display()
            );
            populate(staging, &java)
        })?;
        let version = read_marker(&dir)?;
        match outcome {
            InstallOutcome::AlreadyCached => eprintln!(
                "[devstack] DynamoDB Local {version}: cached at {}",
                dir.display()
            ),
            InstallOutcome::Installed => eprintln!(
                "[devstack] DynamoDB Local {version}: installed at {} in {:.1}s",
                dir.display(),
                started.elapsed().as_secs_f64()
            ),
        }
        Ok(Self {
            dir,
            version,
            java,
            outcome,
        })
    }

    /// The install directory (holds `DynamoDBLocal.jar` and `DynamoDBLocal_lib/`).
    pub fn install_dir(&self) -> &Path {
        &self.dir
    }

    /// The DynamoDB Local version, as its `-version` printed it at install time.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Whether [`ensure`](Self::ensure) found the install cached or made it.
    pub fn install_outcome(&self) -> InstallOutcome {
        self.outcome
    }

    /// Starts an in-memory DynamoDB Local on a free port and waits (up to 60 s) until it
    /// answers `ListTables` on `127.0.0.1`.
    ///
    /// It runs with `-inMemory -sharedDb -disableTelemetry`: nothing touches the disk, every
    /// client sees the same tables whatever its region and credentials, and it makes no
    /// outbound calls. It is killed when the returned guard is dropped, or when this process
    /// dies (see the crate docs on the watchdog).
    ///
    /// # Errors
    ///
    /// When the JVM cannot be spawned, exits early, or does not answer in time; the error
    /// includes the emulator's output.
    pub fn start(&self) -> Result<RunningDynamoDbLocal> {
        let name = format!("DynamoDB Local {}", self.version);
        let (port, process) = start_on_free_port(
            &name,
            READY_TIMEOUT,
            |port| {
                let args: Vec<OsString> = vec![
                    format!("-Djava.library.path={}", self.dir.join(LIB_DIR).display()).into(),
                    "-jar".into(),
                    self.dir.join(JAR).into(),
                    "-inMemory".into(),
                    "-sharedDb".into(),
                    "-disableTelemetry".into(),
                    "-port".into(),
                    port.to_string().into(),
                ];
                Supervised::spawn(&name, &self.java, &args, &self.dir)
            },
            probe,
        )?;
        Ok(RunningEmulator::new("DynamoDB Local", port, process))
    }
}

/// One `ListTables` call, the way an SDK would make it (the signature is not checked).
fn probe(port: u16) -> Result<(), String> {
    let response = http::request(
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        "POST",
        "/",
        &[
            ("X-Amz-Target", "DynamoDB_20120810.ListTables"),
            ("Content-Type", "application/x-amz-json-1.0"),
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=x/20260101/us-east-1/dynamodb/aws4_request, \
                 SignedHeaders=host, Signature=x",
            ),
        ],
        "{}",
        PROBE_TIMEOUT,
    )
    .map_err(|err| err.to_string())?;
    if response.status == 200 {
        Ok(())
    } else {
        Err(format!(
            "ListTables answered {}: {}",
            response.status, response.body
        ))
    }
}

fn is_complete(dir: &Path) -> bool {
    dir.join(JAR).is_file() && dir.join(LIB_DIR).is_dir() && dir.join(MARKER).is_file()
}

fn read_marker(dir: &Path) -> Result<String> {
    let marker = dir.join(MARKER);
    let text =
        fs::read_to_string(&marker).with_context(|| format!("reading {}", marker.display()))?;
    text.lines()
        .find_map(|line| line.strip_prefix("dynamodb-local-version="))
        .map(str::to_owned)
        .with_context(|| format!("{} names no dynamodb-local-version", marker.display()))
}

/// Fetches the npm package into `staging`, extracts the emulator and checks it runs;
/// returns the directory to move into place.
fn populate(staging: &Path, java: &Path) -> Result<PathBuf> {
    let spec = format!("{DYNAMODB_LOCAL_NPM_PACKAGE}@{DYNAMODB_LOCAL_NPM_VERSION}");
    run_captured(
        Command::new("npm")
            .args(["pack", &spec, "--loglevel=error"])
            .current_dir(staging),
        NPM_HINT,
    )
    .with_context(|| format!("fetching {spec} from the npm registry"))?;
    let tarball = staging.join(format!(
        "{DYNAMODB_LOCAL_NPM_PACKAGE}-{DYNAMODB_LOCAL_NPM_VERSION}.tgz"
    ));
    if !tarball.is_file() {
        bail!("`npm pack {spec}` did not produce {}", tarball.display());
    }
    run_captured(
        Command::new("tar")
            .arg("-xzf")
            .arg(&tarball)
            .args(["-C"])
            .arg(staging)
            .arg("package/emulator"),
        TAR_HINT,
    )
    .with_context(|| format!("extracting {}", tarball.display()))?;
    // The tarball is 57 MB and no longer needed; the staging directory goes anyway.
    let _ = fs::remove_file(&tarball);

    let emulator = staging.join("package").join("emulator");
    for required in [JAR, LIB_DIR] {
        if !emulator.join(required).exists() {
            bail!("{spec} has no emulator/{required}: not the package expected");
        }
    }
    let output = run_captured(
        Command::new(java)
            .arg(format!(
                "-Djava.library.path={}",
                emulator.join(LIB_DIR).display()
            ))
            .args(["-jar", JAR, "-version"])
            .current_dir(&emulator),
        "install Java 17+",
    )
    .context("asking the installed DynamoDB Local for its version")?;
    let version = String::from_utf8_lossy(&output.stdout)
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty() && line.chars().all(|c| c.is_ascii_digit() || c == '.'))
        .map(str::to_owned)
        .context("DynamoDB Local -version printed no version number")?;
    let marker = emulator.join(MARKER);
    fs::write(
        &marker,
        format!("npm-package={spec}\ndynamodb-local-version={version}\n"),
    )
    .with_context(|| format!("writing {}", marker.display()))?;
    Ok(emulator)
}
