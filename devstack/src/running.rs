//! The guard every started emulator is handed back as.

use std::process::ExitStatus;

use anyhow::Result;

use crate::process::Supervised;

/// A running emulator on 127.0.0.1. Dropping it kills the emulator (and waits for it).
#[derive(Debug)]
pub struct RunningEmulator {
    name: &'static str,
    endpoint: String,
    port: u16,
    process: Supervised,
}

/// A running DynamoDB Local.
pub type RunningDynamoDbLocal = RunningEmulator;
/// A running SQS emulator (moto).
pub type RunningSqsServer = RunningEmulator;

impl RunningEmulator {
    pub(crate) fn new(name: &'static str, port: u16, process: Supervised) -> Self {
        RunningEmulator {
            name,
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            process,
        }
    }

    /// The endpoint URL to give an SDK client, e.g. `http://127.0.0.1:41234`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The TCP port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The emulator's own process id (the JVM or the Python interpreter).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Blocks until the emulator exits by itself or is killed from outside, e.g. by Ctrl-C
    /// in the terminal; returns its exit status.
    ///
    /// # Errors
    ///
    /// When waiting on the process fails.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        self.process.wait()
    }

    /// The last lines the emulator printed, for diagnostics.
    pub fn output(&self) -> String {
        self.process.output()
    }

    /// Stops the emulator and waits for it to exit, reporting failures (dropping does the
    /// same but can only print them).
    ///
    /// # Errors
    ///
    /// When the process cannot be killed or reaped.
    pub fn stop(mut self) -> Result<()> {
        self.process.shutdown()?;
        eprintln!("[devstack] {} on {} stopped", self.name, self.endpoint);
        Ok(())
    }
}
