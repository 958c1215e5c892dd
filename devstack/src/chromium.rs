//! Headless Chromium for browser tests: Debian's `chromium` and `chromium-driver`
//! packages, installed with `apt-get` once per machine, and ChromeDriver started on a free
//! loopback port under the watchdog.
//!
//! The install runs under a lock file in the cache directory, so test processes that
//! start at once do not race each other into apt's own lock; the second one finds the
//! packages installed. `TOLLGATE_CHROMIUM` and `TOLLGATE_CHROMEDRIVER` point at other
//! binaries (a machine without apt, a newer build) and skip the install.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cache::cache_dir;
use crate::http;
use crate::install::{InstallOutcome, run_captured};
use crate::process::{Supervised, start_on_free_port};
use crate::webdriver::ChromeDriver;

/// Overrides the browser binary (and skips the install).
pub const CHROMIUM_ENV: &str = "TOLLGATE_CHROMIUM";
/// Overrides the ChromeDriver binary (and skips the install).
pub const CHROMEDRIVER_ENV: &str = "TOLLGATE_CHROMEDRIVER";
/// The Debian packages, and where they put their binaries.
const PACKAGES: [&str; 2] = ["chromium", "chromium-driver"];
const DEBIAN_CHROMIUM: &str = "/usr/bin/chromium";
const DEBIAN_CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// An installed Chromium and ChromeDriver.
#[derive(Debug, Clone)]
pub struct Chromium {
    browser: PathBuf,
    driver: PathBuf,
    outcome: InstallOutcome,
}

impl Chromium {
    /// Finds Chromium and ChromeDriver, installing Debian's packages with `apt-get` when
    /// they are missing (as root; anyone else gets the command to run).
    ///
    /// # Errors
    ///
    /// When the binaries are missing and cannot be installed.
    pub fn ensure() -> Result<Self> {
        if let (Some(browser), Some(driver)) = (
            std::env::var_os(CHROMIUM_ENV),
            std::env::var_os(CHROMEDRIVER_ENV),
        ) {
            return Ok(Self::at(
                browser.into(),
                driver.into(),
                InstallOutcome::AlreadyCached,
            ));
        }
        let installed =
            || Path::new(DEBIAN_CHROMIUM).exists() && Path::new(DEBIAN_CHROMEDRIVER).exists();
        let at = |outcome| Self::at(DEBIAN_CHROMIUM.into(), DEBIAN_CHROMEDRIVER.into(), outcome);
        if installed() {
            return Ok(at(InstallOutcome::AlreadyCached));
        }
        let dir = cache_dir()?;
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let lock_path = dir.join("chromium-install.lock");
        let lock = File::create(&lock_path)
            .with_context(|| format!("creating {}", lock_path.display()))?;
        lock.lock()
            .with_context(|| format!("locking {}", lock_path.display()))?;
        if installed() {
            return Ok(at(InstallOutcome::AlreadyCached));
        }
        eprintln!(
            "[devstack] Chromium: installing the Debian packages {} with apt-get (once per machine, ~1 min)",
            PACKAGES.join(" ")
        );
        install_packages()?;
        if !installed() {
            bail!(
                "apt-get installed {} but {DEBIAN_CHROMIUM} or {DEBIAN_CHROMEDRIVER} is missing",
                PACKAGES.join(" ")
            );
        }
        Ok(at(InstallOutcome::Installed))
    }

    fn at(browser: PathBuf, driver: PathBuf, outcome: InstallOutcome) -> Self {
        Self {
            browser,
            driver,
            outcome,
        }
    }

    /// The browser binary.
    pub fn browser(&self) -> &Path {
        &self.browser
    }

    /// Whether [`ensure`](Self::ensure) installed the packages.
    pub fn install_outcome(&self) -> InstallOutcome {
        self.outcome
    }

    /// What `chromium --version` prints.
    ///
    /// # Errors
    ///
    /// When the browser cannot be run.
    pub fn version(&self) -> Result<String> {
        let output = run_captured(
            Command::new(&self.browser).arg("--version"),
            "install the Debian package chromium",
        )?;
        let text = String::from_utf8_lossy(&output.stdout);
        Ok(text.lines().next().unwrap_or_default().trim().to_owned())
    }

    /// Starts ChromeDriver on a free loopback port (it only accepts local connections)
    /// and waits until it is ready for sessions.
    ///
    /// # Errors
    ///
    /// When it does not start or answer within 30 s.
    pub fn start_driver(&self) -> Result<ChromeDriver> {
        let cwd = std::env::temp_dir();
        let (port, process) = start_on_free_port(
            "ChromeDriver",
            READY_TIMEOUT,
            |port| {
                let args: Vec<OsString> = vec![
                    format!("--port={port}").into(),
                    "--log-level=WARNING".into(),
                ];
                Supervised::spawn("ChromeDriver", &self.driver, &args, &cwd)
            },
            |port| {
                let addr = ([127, 0, 0, 1], port).into();
                match http::request(addr, "GET", "/status", &[], "", PROBE_TIMEOUT) {
                    Ok(reply) if reply.status == 200 && reply.body.contains("\"ready\":true") => {
                        Ok(())
                    }
                    Ok(reply) => Err(format!("status {}: {}", reply.status, reply.body)),
                    Err(err) => Err(err.to_string()),
                }
            },
        )?;
        Ok(ChromeDriver::new(port, process, self.browser.clone()))
    }
}

/// `apt-get install`, after `apt-get update` when the package lists are missing or stale.
fn install_packages() -> Result<()> {
    let hint = "this needs Debian's apt-get as root; otherwise run \
                `sudo apt-get install chromium chromium-driver`, or set TOLLGATE_CHROMIUM and \
                TOLLGATE_CHROMEDRIVER";
    let install = || {
        let mut command = Command::new("apt-get");
        command
            .args(["install", "-y", "--no-install-recommends"])
            .args(PACKAGES)
            .env("DEBIAN_FRONTEND", "noninteractive");
        run_captured(&mut command, hint)
    };
    if install().is_ok() {
        return Ok(());
    }
    eprintln!("[devstack] Chromium: apt-get install failed; updating the package lists first");
    run_captured(
        Command::new("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        hint,
    )?;
    install().map(|_| ())
}
