//! Emulator processes: spawned under a watchdog, output captured, stopped on drop.
//!
//! # The watchdog
//!
//! An emulator is started as `sh -c WATCHDOG devstack-watchdog <program> <args>…` with its
//! stdin a pipe whose only writer is this process (Rust opens pipes close-on-exec, so no
//! other child inherits the write end). The shell
//!
//! 1. forks a watchdog subshell that blocks reading one line from that pipe, then
//! 2. `exec`s the emulator with stdin from `/dev/null`, so the emulator *is* the spawned
//!    child: same pid, killed and reaped directly by [`Supervised`].
//!
//! On a normal stop this process writes `stop` to the pipe (the watchdog exits quietly),
//! then kills and reaps the emulator. If this process dies instead, even by `SIGKILL`, the
//! kernel closes the write end, the watchdog's `read` hits end-of-file and it sends
//! `SIGKILL` to the emulator (`$$`: the shell's pid, which the emulator inherited through
//! `exec`). No unsafe code, no polling, nothing left running.
//!
//! [`Supervised`] is public so that other local tooling (`tollgate-local`, which runs
//! Lambda binaries) starts its processes under the same watchdog instead of a copy of it.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The watchdog script; `$0` is a label, `"$@"` the emulator's command line.
const WATCHDOG: &str = r#"exec 3<&0
( if IFS= read -r word <&3 && [ "$word" = stop ]; then exit 0; fi
  kill -KILL $$ 2>/dev/null ) </dev/null >/dev/null 2>&1 &
exec 3<&- </dev/null
exec "$@""#;

/// How many lines of an emulator's output are kept for error messages.
const OUTPUT_LINES_KEPT: usize = 200;

/// Picks a free TCP port on 127.0.0.1 by binding port 0 and releasing it.
///
/// Another process may take the port before the emulator binds it, hence the retries in
/// [`start_on_free_port`].
fn free_loopback_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .context("binding 127.0.0.1:0 to find a free port")?;
    Ok(listener
        .local_addr()
        .context("reading the free port's address")?
        .port())
}

/// How many ports [`start_on_free_port`] tries when the chosen one is taken meanwhile.
const START_ATTEMPTS: usize = 3;

/// Starts a server on a free loopback port and waits until `probe` says it answers.
///
/// `spawn` starts the server on the port it is given; `probe` is polled (every 100 ms, up
/// to `timeout`) with that port. When the server exits early because the port was taken
/// between choosing and binding it, another port is tried. Returns the port and the
/// process.
pub(crate) fn start_on_free_port(
    name: &str,
    timeout: Duration,
    spawn: impl Fn(u16) -> Result<Supervised>,
    probe: impl Fn(u16) -> Result<(), String>,
) -> Result<(u16, Supervised)> {
    let mut attempt = 1;
    loop {
        let started = Instant::now();
        let port = free_loopback_port()?;
        let mut process = spawn(port)?;
        match process.wait_until_ready(timeout, || probe(port)) {
            Ok(()) => {
                eprintln!(
                    "[devstack] {name} listening on http://127.0.0.1:{port} (pid {}, ready in {:.1}s)",
                    process.pid(),
                    started.elapsed().as_secs_f64()
                );
                return Ok((port, process));
            }
            Err(err) => {
                let output = process.output();
                let port_taken =
                    output.contains("BindException") || output.contains("Address already in use");
                let err = err.context(format!("starting {name} on 127.0.0.1:{port}"));
                if port_taken && attempt < START_ATTEMPTS {
                    eprintln!("[devstack] port {port} was taken meanwhile; retrying on another");
                    attempt += 1;
                } else {
                    return Err(err);
                }
            }
        }
    }
}

/// A process under the watchdog (see the module docs): it dies with its owner, and is
/// killed and reaped on drop.
pub struct Supervised {
    name: String,
    child: Child,
    lifeline: Option<ChildStdin>,
    output: OutputLog,
    stopped: bool,
}

/// How [`Supervised::spawn_with`] sets up a process beyond its command line.
#[derive(Debug, Clone, Default)]
pub struct SpawnOptions {
    /// `Some`: the process gets exactly these variables (plus nothing inherited), the way
    /// a Lambda function gets only its configuration. `None`: it inherits ours.
    pub env: Option<Vec<(String, String)>>,
    /// `Some(prefix)`: every line the process prints is also written to our stderr as
    /// `[prefix] line`, besides being kept for [`Supervised::output`]; CloudWatch metric
    /// documents (Embedded Metric Format lines) are kept but not echoed.
    pub echo_prefix: Option<String>,
}

impl Supervised {
    /// Spawns `program args…` in `cwd` under the watchdog, inheriting our environment and
    /// capturing stdout and stderr.
    ///
    /// # Errors
    ///
    /// When `sh` cannot be spawned. A `program` that cannot be executed makes the process
    /// exit at once, with the shell's message in its [`output`](Self::output).
    pub fn spawn(name: &str, program: &Path, args: &[OsString], cwd: &Path) -> Result<Self> {
        Self::spawn_with(name, program, args, cwd, &SpawnOptions::default())
    }

    /// Like [`spawn`](Self::spawn), with a chosen environment and optional echo of the
    /// process's output.
    ///
    /// # Errors
    ///
    /// As for [`spawn`](Self::spawn).
    pub fn spawn_with(
        name: &str,
        program: &Path,
        args: &[OsString],
        cwd: &Path,
        options: &SpawnOptions,
    ) -> Result<Self> {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(WATCHDOG)
            .arg("devstack-watchdog")
            .arg(program)
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(env) = &options.env {
            command.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("spawning {name} ({}) under sh", program.display()))?;
        let mut output = OutputLog {
            echo_prefix: options.echo_prefix.clone(),
            ..OutputLog::default()
        };
        if let Some(stdout) = child.stdout.take() {
            output.capture(stdout);
        }
        if let Some(stderr) = child.stderr.take() {
            output.capture(stderr);
        }
        let lifeline = child.stdin.take();
        Ok(Self {
            name: name.to_owned(),
            child,
            lifeline,
            output,
            stopped: false,
        })
    }

    /// The process id (the program's own, thanks to `exec`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines the process printed (stdout and stderr interleaved).
    pub fn output(&self) -> String {
        self.output.text()
    }

    /// The exit status if the process has exited, without blocking. After an exit, waits
    /// briefly for its last output to be collected, so [`output`](Self::output) is complete.
    ///
    /// # Errors
    ///
    /// When the process's state cannot be read.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        let status = self
            .child
            .try_wait()
            .with_context(|| format!("checking whether {} is running", self.name))?;
        if status.is_some() {
            self.output.settle(Duration::from_secs(1));
        }
        Ok(status)
    }

    /// Polls `probe` every 100 ms until it succeeds, the process exits, or `timeout`
    /// passes. Errors carry the process's output and the last probe failure.
    ///
    /// # Errors
    ///
    /// When the process exits first or `timeout` passes.
    pub fn wait_until_ready(
        &mut self,
        timeout: Duration,
        mut probe: impl FnMut() -> Result<(), String>,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .with_context(|| format!("checking whether {} is running", self.name))?
            {
                // Let the reader threads drain what the process wrote before it exited.
                self.output.settle(Duration::from_secs(1));
                bail!(
                    "{} exited ({status}) before it answered; its output:\n{}",
                    self.name,
                    indent(&self.output())
                );
            }
            let last_failure = match probe() {
                Ok(()) => return Ok(()),
                Err(failure) => failure,
            };
            if Instant::now() >= deadline {
                bail!(
                    "{} did not answer within {}s (last probe: {last_failure}); its output:\n{}",
                    self.name,
                    timeout.as_secs(),
                    indent(&self.output())
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Blocks until the process exits by itself (or is killed from outside).
    ///
    /// # Errors
    ///
    /// When waiting on the process fails.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        self.child
            .wait()
            .with_context(|| format!("waiting for {}", self.name))
    }

    /// Stops the process: dismisses the watchdog, kills the process and reaps it.
    /// Idempotent.
    ///
    /// # Errors
    ///
    /// When the process cannot be killed or reaped.
    pub fn shutdown(&mut self) -> Result<()> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        if let Some(mut lifeline) = self.lifeline.take() {
            // The watchdog may already be gone (e.g. killed from outside): nothing to do.
            let _ = lifeline.write_all(b"stop\n");
        }
        let exited = self
            .child
            .try_wait()
            .with_context(|| format!("checking whether {} is running", self.name))?;
        if exited.is_none() {
            self.child
                .kill()
                .with_context(|| format!("killing {} (pid {})", self.name, self.pid()))?;
        }
        self.child
            .wait()
            .with_context(|| format!("reaping {} (pid {})", self.name, self.pid()))?;
        Ok(())
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if let Err(err) = self.shutdown() {
            eprintln!("[devstack] could not stop {}: {err:#}", self.name);
        }
    }
}

impl fmt::Debug for Supervised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervised")
            .field("name", &self.name)
            .field("pid", &self.child.id())
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}

/// The tail of a process's output, filled by one reader thread per stream.
/// A CloudWatch Embedded Metric Format document: a JSON object with an `_aws` member.
/// Lambda turns these into metrics; locally they are data, not messages for people.
fn is_metric_document(line: &str) -> bool {
    line.starts_with('{')
        && serde_json::from_str::<serde_json::Value>(line)
            .is_ok_and(|doc| doc.get("_aws").is_some())
}

#[derive(Default)]
struct OutputLog {
    lines: Arc<Mutex<VecDeque<String>>>,
    readers: Vec<thread::JoinHandle<()>>,
    echo_prefix: Option<String>,
}

impl OutputLog {
    fn capture(&mut self, stream: impl Read + Send + 'static) {
        let lines = Arc::clone(&self.lines);
        let echo_prefix = self.echo_prefix.clone();
        // The thread ends at end-of-file, i.e. when the process exits.
        let reader = thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                        if let Some(prefix) =
                            echo_prefix.as_ref().filter(|_| !is_metric_document(&line))
                        {
                            eprintln!("[{prefix}] {line}");
                        }
                        let mut lines = lines.lock().unwrap_or_else(PoisonError::into_inner);
                        if lines.len() == OUTPUT_LINES_KEPT {
                            lines.pop_front();
                        }
                        lines.push_back(line);
                    }
                }
            }
        });
        self.readers.push(reader);
    }

    /// Waits (up to `limit`) for the reader threads to reach end-of-file, i.e. until
    /// everything an exited process wrote has been collected.
    fn settle(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline && !self.readers.iter().all(|r| r.is_finished()) {
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn text(&self) -> String {
        let lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.is_empty() {
            return String::from("(no output)");
        }
        lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("    {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_running(pid: u32) -> bool {
        // A zombie (state Z) has exited; it only waits to be reaped.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| {
                stat.rsplit_once(')')
                    .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(false)
    }

    #[test]
    fn metric_documents_are_told_from_log_lines() {
        assert!(is_metric_document(
            r#"{"Function":"ingest","MessagesApplied":1,"_aws":{"Timestamp":1,"CloudWatchMetrics":[]}}"#
        ));
        assert!(!is_metric_document(
            r#"{"level":"WARN","message":"retrying"}"#
        ));
        assert!(!is_metric_document("WARN ingest: a message mentions _aws"));
        assert!(!is_metric_document("{not json"));
    }

    #[test]
    fn the_supervised_process_is_the_program_itself_and_dies_on_drop() {
        let mut process = Supervised::spawn(
            "sleeper",
            Path::new("sleep"),
            &["300".into()],
            Path::new("/"),
        )
        .unwrap();
        let pid = process.pid();
        process
            .wait_until_ready(Duration::from_secs(5), || {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if cmdline.starts_with(b"sleep\0") {
                    Ok(())
                } else {
                    Err("not exec'd yet".into())
                }
            })
            .unwrap();
        drop(process);
        assert!(!is_running(pid));
    }

    #[test]
    fn a_chosen_environment_replaces_ours() {
        let mut process = Supervised::spawn_with(
            "env-printer",
            Path::new("/bin/sh"),
            &["-c".into(), "echo \"foo=$FOO home=${HOME:-unset}\"".into()],
            Path::new("/"),
            &SpawnOptions {
                env: Some(vec![("FOO".into(), "bar".into())]),
                echo_prefix: Some("env-printer".into()),
            },
        )
        .unwrap();
        process.wait().unwrap();
        assert_eq!(process.try_wait().unwrap().map(|s| s.success()), Some(true));
        assert_eq!(process.output(), "foo=bar home=unset");
    }

    #[test]
    fn a_process_that_exits_early_reports_its_output() {
        let mut process = Supervised::spawn(
            "complainer",
            Path::new("sh"),
            &["-c".into(), "echo 'port is taken' >&2; exit 3".into()],
            Path::new("/"),
        )
        .unwrap();
        let err = process
            .wait_until_ready(Duration::from_secs(5), || Err("no answer".into()))
            .unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("complainer exited"), "{message}");
        assert!(message.contains("port is taken"), "{message}");
    }

    #[test]
    fn a_missing_program_is_reported_with_the_shell_error() {
        let mut process = Supervised::spawn(
            "ghost",
            Path::new("/nonexistent/tollgate-ghost"),
            &[],
            Path::new("/"),
        )
        .unwrap();
        let err = process
            .wait_until_ready(Duration::from_secs(5), || Err("no answer".into()))
            .unwrap_err();
        assert!(format!("{err:#}").contains("tollgate-ghost"), "{err:#}");
    }

    #[test]
    fn readiness_times_out_with_the_last_probe_failure() {
        let mut process =
            Supervised::spawn("mute", Path::new("sleep"), &["30".into()], Path::new("/")).unwrap();
        let err = process
            .wait_until_ready(Duration::from_millis(300), || {
                Err("connection refused".into())
            })
            .unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("did not answer"), "{message}");
        assert!(message.contains("connection refused"), "{message}");
    }
}
