//! A Lambda function run locally: real processes of the real binary, invoked through the
//! Runtime API the way Lambda invokes them.
//!
//! Why processes and not a handler call: the function binaries are what we deploy, so the
//! local stack runs *them* (their `main`, their env-var configuration, their
//! `lambda_runtime` loop), and a panic, a crash or a hang behaves as on AWS.
//!
//! The model follows Lambda's execution environments:
//! - an *instance* is one process with its own [Runtime API emulator](crate::runtime_api);
//!   it handles one invocation at a time;
//! - instances are started on demand (a cold start: spawn, then wait until the runtime
//!   polls for work, at most [`INIT_TIMEOUT`], Lambda's init limit), kept warm and reused,
//!   up to [`FunctionSpec::max_instances`] at once (default 1, so invocations of a
//!   function are serialised);
//! - an invocation that outlives the function's timeout is answered
//!   [`InvokeError::Timeout`] and its instance is killed, like Lambda's reset of the
//!   environment; a process that dies is reported ([`InvokeError::ProcessDied`], or a
//!   warning when it died idle) and replaced by a new one on the next invocation.
//!
//! Processes run under devstack's watchdog ([`tollgate_devstack::Supervised`]): they are
//! killed when the [`LocalFunction`] is dropped, and also when this process dies, even by
//! `SIGKILL`. Their environment is what Lambda would give them and nothing else (see
//! [`FunctionSpec`]); their output is echoed to stderr as `[function-name] line`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use hyper::body::Bytes;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::time::{Instant, MissedTickBehavior};
use tollgate_devstack::{SpawnOptions, Supervised};

use crate::runtime_api::{MAX_PAYLOAD_BYTES, Outcome, RuntimeApi};

/// The region every local function believes it runs in (and the local SQS client uses).
pub const LOCAL_REGION: &str = "us-east-1";
/// The account id in local ARNs (moto's default account).
pub const LOCAL_ACCOUNT_ID: &str = "123456789012";
/// How long a new instance may take to poll for its first invocation: Lambda's limit on
/// the init phase.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Lambda's default function timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// Variables passed through from our own environment when set: `PATH` (so a function
/// can run helpers) and Rust's logging and backtrace switches, which help debugging.
pub const PASSED_THROUGH_ENV: [&str; 3] = ["PATH", "RUST_LOG", "RUST_BACKTRACE"];

/// How often a waiting invocation checks that its process is still alive.
const LIVENESS_CHECK: Duration = Duration::from_millis(20);

/// How to run a function. Build it with [`FunctionSpec::new`] and the `with_*` methods.
///
/// The process's environment is exactly: [`env`](Self::env), then what Lambda sets
/// (which wins, as Lambda's reserved variables do): `AWS_LAMBDA_RUNTIME_API`,
/// `AWS_LAMBDA_FUNCTION_NAME`, `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`,
/// `AWS_LAMBDA_FUNCTION_VERSION` (`$LATEST`), `AWS_LAMBDA_LOG_GROUP_NAME`,
/// `AWS_LAMBDA_LOG_STREAM_NAME`, `AWS_LAMBDA_INITIALIZATION_TYPE` (`on-demand`),
/// `AWS_REGION` and `AWS_DEFAULT_REGION` ([`LOCAL_REGION`]), dummy `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` (emulators accept any), `LAMBDA_TASK_ROOT`
/// (the binary's directory, also its working directory), `TZ=:UTC`; plus
/// [`PASSED_THROUGH_ENV`] from ours. Nothing else is inherited, so a function cannot come to
/// depend on a developer's `AWS_PROFILE` or endpoint variables by accident.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FunctionSpec {
    /// The function name (Lambda's rule: 1–64 of `A–Z a–z 0–9 - _`).
    pub name: String,
    /// The function binary (what would be `bootstrap` in the deployment zip).
    pub binary: PathBuf,
    /// The function's configured environment variables.
    pub env: Vec<(String, String)>,
    /// The function timeout.
    pub timeout: Duration,
    /// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, in MB (not enforced locally).
    pub memory_mb: u32,
    /// How many instances may run at once (Lambda's concurrency for this function).
    pub max_instances: usize,
    /// Whether the processes' output is echoed to stderr (it is always kept for errors).
    pub echo_output: bool,
}

impl FunctionSpec {
    /// A function with Lambda's defaults: 3 s timeout, 128 MB, no variables; one instance.
    pub fn new(name: impl Into<String>, binary: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            binary: binary.into(),
            env: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            memory_mb: 128,
            max_instances: 1,
            echo_output: true,
        }
    }

    /// Sets the function's environment variables.
    pub fn with_env(mut self, env: Vec<(String, String)>) -> Self {
        self.env = env;
        self
    }

    /// Sets the function timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets how many instances may run at once.
    pub fn with_max_instances(mut self, max_instances: usize) -> Self {
        self.max_instances = max_instances;
        self
    }

    /// Turns the echo of the processes' output to stderr on or off.
    pub fn with_echo_output(mut self, echo_output: bool) -> Self {
        self.echo_output = echo_output;
        self
    }

    /// The function's ARN, as passed in `Lambda-Runtime-Invoked-Function-Arn`.
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:lambda:{LOCAL_REGION}:{LOCAL_ACCOUNT_ID}:function:{}",
            self.name
        )
    }
}

/// Why a function (or a new instance of it) could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The spec breaks a rule.
    #[error("invalid function spec for {function:?}: {reason}")]
    InvalidSpec {
        /// The function name.
        function: String,
        /// The rule broken.
        reason: String,
    },
    /// The Runtime API emulator could not listen.
    #[error("{function}: starting the Runtime API emulator on 127.0.0.1")]
    Listen {
        /// The function name.
        function: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The process could not be spawned or watched.
    #[error("{function}: running {binary}")]
    Process {
        /// The function name.
        function: String,
        /// The binary.
        binary: PathBuf,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The process exited before it polled for an invocation.
    #[error("{function} exited during init ({status}); its output:\n{output}")]
    ExitedDuringInit {
        /// The function name.
        function: String,
        /// The exit status.
        status: String,
        /// Its last output lines.
        output: String,
    },
    /// The runtime reported an init error (`/runtime/init/error`).
    #[error("{function} reported an init error: {body}")]
    InitError {
        /// The function name.
        function: String,
        /// What it posted.
        body: Value,
    },
    /// The process did not poll for an invocation within [`INIT_TIMEOUT`].
    #[error(
        "{function} did not ask for an invocation within {:?}; its output:\n{output}",
        INIT_TIMEOUT
    )]
    InitTimeout {
        /// The function name.
        function: String,
        /// Its last output lines.
        output: String,
    },
}

/// Why an invocation produced no result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InvokeError {
    /// The function returned an error (its handler failed or panicked, or its response
    /// exceeded 6 MB). `body` is what it reported, `{"errorType", "errorMessage"}` from
    /// `lambda_runtime`.
    #[error("{function} returned an error: {body}")]
    Function {
        /// The function name.
        function: String,
        /// The `Lambda-Runtime-Function-Error-Type` it sent, if any.
        error_type: Option<String>,
        /// The error body.
        body: Value,
    },
    /// The function did not answer within its timeout; its instance was killed.
    #[error("{function} timed out after {timeout:?}")]
    Timeout {
        /// The function name.
        function: String,
        /// The function timeout.
        timeout: Duration,
    },
    /// The function's process died during the invocation; the next invocation starts a
    /// new one.
    #[error("{function} died during the invocation ({status}); its output:\n{output}")]
    ProcessDied {
        /// The function name.
        function: String,
        /// The exit status.
        status: String,
        /// Its last output lines.
        output: String,
    },
    /// A new instance was needed and could not be started.
    #[error("{function}: no instance to run the invocation")]
    ColdStart {
        /// The function name.
        function: String,
        /// Why.
        #[source]
        source: StartError,
    },
    /// The event is larger than Lambda accepts ([`MAX_PAYLOAD_BYTES`]).
    #[error("{function}: the event is {size} bytes, more than {MAX_PAYLOAD_BYTES}")]
    RequestTooLarge {
        /// The function name.
        function: String,
        /// The serialised event's size.
        size: usize,
    },
    /// The function answered with something that is not JSON.
    #[error("{function} returned a response that is not JSON: {text}")]
    InvalidResponse {
        /// The function name.
        function: String,
        /// The response, lossily as text.
        text: String,
    },
}

/// Counters of a [`LocalFunction`], as a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FunctionStats {
    /// Invocations started.
    pub invocations: u64,
    /// Invocations that returned a result.
    pub succeeded: u64,
    /// Invocations that returned [`InvokeError::Function`].
    pub function_errors: u64,
    /// Invocations that timed out.
    pub timeouts: u64,
    /// Processes that died, during an invocation or idle.
    pub crashes: u64,
    /// Instances started.
    pub cold_starts: u64,
}

#[derive(Debug, Default)]
struct Counters {
    invocations: AtomicU64,
    succeeded: AtomicU64,
    function_errors: AtomicU64,
    timeouts: AtomicU64,
    crashes: AtomicU64,
    cold_starts: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A function run locally. Dropping it kills its processes.
#[derive(Debug)]
pub struct LocalFunction {
    spec: FunctionSpec,
    /// Warm instances waiting for work.
    idle: Mutex<Vec<Instance>>,
    /// One permit per instance that may run.
    permits: Semaphore,
    counters: Counters,
    next_instance: AtomicU64,
    /// Process ids of the instances running an invocation right now.
    running: Mutex<Vec<u32>>,
}

impl LocalFunction {
    /// Starts `binary` as the function `name` with the given environment variables and
    /// timeout (one instance at a time; see [`FunctionSpec`] for the environment it gets),
    /// and waits until it is ready for its first invocation.
    ///
    /// # Errors
    ///
    /// As for [`start_with`](Self::start_with).
    pub async fn start(
        name: impl Into<String>,
        binary: impl Into<PathBuf>,
        env: Vec<(String, String)>,
        timeout: Duration,
    ) -> Result<Self, StartError> {
        Self::start_with(
            FunctionSpec::new(name, binary)
                .with_env(env)
                .with_timeout(timeout),
        )
        .await
    }

    /// Starts a function from a full [`FunctionSpec`]: checks it, then cold-starts one
    /// instance so that configuration errors show up here rather than on first use.
    ///
    /// # Errors
    ///
    /// When the spec is invalid (name, zero timeout or instances, missing binary), or the
    /// first instance does not start (see [`StartError`]).
    pub async fn start_with(spec: FunctionSpec) -> Result<Self, StartError> {
        validate(&spec)?;
        let function = Self {
            permits: Semaphore::new(spec.max_instances),
            spec,
            idle: Mutex::new(Vec::new()),
            counters: Counters::default(),
            next_instance: AtomicU64::new(1),
            running: Mutex::new(Vec::new()),
        };
        let first = function.cold_start().await?;
        function.check_in(first);
        Ok(function)
    }

    /// The function name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// How it runs.
    pub fn spec(&self) -> &FunctionSpec {
        &self.spec
    }

    /// Its counters so far.
    pub fn stats(&self) -> FunctionStats {
        let c = &self.counters;
        FunctionStats {
            invocations: c.invocations.load(Ordering::Relaxed),
            succeeded: c.succeeded.load(Ordering::Relaxed),
            function_errors: c.function_errors.load(Ordering::Relaxed),
            timeouts: c.timeouts.load(Ordering::Relaxed),
            crashes: c.crashes.load(Ordering::Relaxed),
            cold_starts: c.cold_starts.load(Ordering::Relaxed),
        }
    }

    /// Invokes the function synchronously (`RequestResponse`) with `payload` as the event
    /// and returns its response.
    ///
    /// Waits for a free instance when all [`max_instances`](FunctionSpec::max_instances)
    /// are busy, and starts one when none is warm. Dropping the returned future mid-way
    /// kills the instance it was using.
    ///
    /// # Errors
    ///
    /// See [`InvokeError`]: a function error carries the function's error body; a timeout
    /// or a dead process is reported as such (and the instance replaced next time).
    pub async fn invoke(&self, payload: Value) -> Result<Value, InvokeError> {
        let event = Bytes::from(payload.to_string());
        if event.len() > MAX_PAYLOAD_BYTES {
            return Err(InvokeError::RequestTooLarge {
                function: self.spec.name.clone(),
                size: event.len(),
            });
        }
        // The semaphore is never closed, so this only waits.
        let Ok(_permit) = self.permits.acquire().await else {
            return Err(self.no_instance(StartError::InvalidSpec {
                function: self.spec.name.clone(),
                reason: "the function is shutting down".into(),
            }));
        };
        bump(&self.counters.invocations);
        let mut instance = self.check_out().await?;
        let pid = instance.process.pid();
        lock(&self.running).push(pid);
        let result = instance.invoke(&self.spec, event).await;
        lock(&self.running).retain(|running| *running != pid);
        match &result {
            Ok(_) => bump(&self.counters.succeeded),
            Err(InvokeError::Function { .. }) => bump(&self.counters.function_errors),
            Err(InvokeError::Timeout { .. }) => bump(&self.counters.timeouts),
            Err(InvokeError::ProcessDied { .. }) => bump(&self.counters.crashes),
            Err(_) => {}
        }
        match &result {
            // The instance is healthy: keep it warm.
            Ok(_) | Err(InvokeError::Function { .. } | InvokeError::InvalidResponse { .. }) => {
                self.check_in(instance);
            }
            // Timed out (Lambda resets the environment) or dead: dropping it kills it.
            Err(_) => drop(instance),
        }
        result
    }

    /// Kills (SIGKILL) every instance running an invocation now, as a crash of its
    /// execution environment would: each such invocation fails with
    /// [`InvokeError::ProcessDied`] and the next one cold-starts. Fault-injection tests
    /// call it to kill a function mid-batch. Returns how many were killed.
    pub fn kill_running_instances(&self) -> usize {
        let pids = lock(&self.running).clone();
        pids.iter()
            .filter(|pid| {
                std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|status| status.success())
            })
            .count()
    }

    /// A warm instance that is still alive, or a new one.
    async fn check_out(&self) -> Result<Instance, InvokeError> {
        loop {
            let candidate = lock(&self.idle).pop();
            let Some(mut instance) = candidate else { break };
            match instance.exit_status() {
                Ok(None) => return Ok(instance),
                Ok(Some(status)) => {
                    bump(&self.counters.crashes);
                    tracing::warn!(
                        function = %self.spec.name,
                        %status,
                        output = %instance.process.output(),
                        "an idle instance died; starting a new one"
                    );
                }
                Err(err) => {
                    tracing::warn!(function = %self.spec.name, error = %err, "dropping an instance whose state is unknown");
                }
            }
        }
        self.cold_start().await.map_err(|err| self.no_instance(err))
    }

    fn check_in(&self, instance: Instance) {
        lock(&self.idle).push(instance);
    }

    fn no_instance(&self, source: StartError) -> InvokeError {
        InvokeError::ColdStart {
            function: self.spec.name.clone(),
            source,
        }
    }

    async fn cold_start(&self) -> Result<Instance, StartError> {
        let ordinal = self.next_instance.fetch_add(1, Ordering::Relaxed);
        bump(&self.counters.cold_starts);
        Instance::start(&self.spec, ordinal).await
    }
}

fn validate(spec: &FunctionSpec) -> Result<(), StartError> {
    let invalid = |reason: &str| StartError::InvalidSpec {
        function: spec.name.clone(),
        reason: reason.to_owned(),
    };
    let name_ok = (1..=64).contains(&spec.name.len())
        && spec
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !name_ok {
        return Err(invalid("a name is 1-64 of A-Z a-z 0-9 - _"));
    }
    if spec.timeout.is_zero() {
        return Err(invalid("the timeout must be positive"));
    }
    if spec.max_instances == 0 {
        return Err(invalid("max_instances must be at least 1"));
    }
    if !spec.binary.is_file() {
        return Err(invalid(&format!(
            "the binary {} does not exist (build it first)",
            spec.binary.display()
        )));
    }
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One execution environment: a process and its Runtime API emulator.
#[derive(Debug)]
struct Instance {
    // Field order is drop order: the process dies before its API goes away.
    process: Supervised,
    api: RuntimeApi,
}

impl Instance {
    /// Spawns the binary against a fresh emulator and waits until it polls for work.
    async fn start(spec: &FunctionSpec, ordinal: u64) -> Result<Self, StartError> {
        let function = || spec.name.clone();
        let api = RuntimeApi::start(spec.arn())
            .await
            .map_err(|source| StartError::Listen {
                function: function(),
                source,
            })?;
        let task_root = spec
            .binary
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let options = SpawnOptions {
            env: Some(lambda_env(spec, &api, task_root, ordinal)),
            echo_prefix: spec.echo_output.then(|| spec.name.clone()),
        };
        let no_args: [OsString; 0] = [];
        let mut process = Supervised::spawn_with(
            &format!("{} (instance {ordinal})", spec.name),
            &spec.binary,
            &no_args,
            task_root,
            &options,
        )
        .map_err(|err| StartError::Process {
            function: function(),
            binary: spec.binary.clone(),
            source: err.into(),
        })?;

        let deadline = Instant::now() + INIT_TIMEOUT;
        loop {
            if let Some(body) = api.init_error() {
                return Err(StartError::InitError {
                    function: function(),
                    body,
                });
            }
            if api.has_polled() {
                tracing::debug!(function = %spec.name, ordinal, pid = process.pid(), "instance ready");
                return Ok(Self { process, api });
            }
            let exited = process.try_wait().map_err(|err| StartError::Process {
                function: function(),
                binary: spec.binary.clone(),
                source: err.into(),
            })?;
            if let Some(status) = exited {
                return Err(StartError::ExitedDuringInit {
                    function: function(),
                    status: status.to_string(),
                    output: process.output(),
                });
            }
            if Instant::now() >= deadline {
                return Err(StartError::InitTimeout {
                    function: function(),
                    output: process.output(),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn exit_status(&mut self) -> Result<Option<std::process::ExitStatus>, String> {
        self.process.try_wait().map_err(|err| format!("{err:#}"))
    }

    /// Runs one invocation: queue it, then wait for the answer, the deadline or the
    /// process's death, whichever comes first.
    async fn invoke(&mut self, spec: &FunctionSpec, event: Bytes) -> Result<Value, InvokeError> {
        let function = || spec.name.clone();
        let deadline = Instant::now() + spec.timeout;
        let submitted = self
            .api
            .submit(event, SystemTime::now() + spec.timeout)
            .map_err(|busy| InvokeError::ProcessDied {
                function: function(),
                status: busy.to_string(),
                output: self.process.output(),
            })?;
        let mut outcome = submitted.outcome;
        let mut liveness = tokio::time::interval(LIVENESS_CHECK);
        liveness.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                answered = &mut outcome => {
                    return match answered {
                        Ok(Outcome::Response(body)) => serde_json::from_slice(&body).map_err(|_| {
                            InvokeError::InvalidResponse {
                                function: function(),
                                text: String::from_utf8_lossy(&body).into_owned(),
                            }
                        }),
                        Ok(Outcome::Error { error_type, body }) => Err(InvokeError::Function {
                            function: function(),
                            error_type,
                            body,
                        }),
                        // The emulator dropped the invocation: it is going away.
                        Err(_) => Err(InvokeError::ProcessDied {
                            function: function(),
                            status: "the Runtime API emulator stopped".into(),
                            output: self.process.output(),
                        }),
                    };
                }
                () = tokio::time::sleep_until(deadline) => {
                    self.api.abandon(&submitted.request_id);
                    return Err(InvokeError::Timeout { function: function(), timeout: spec.timeout });
                }
                _ = liveness.tick() => {
                    let exited = self.process.try_wait().map_err(|err| InvokeError::ProcessDied {
                        function: function(),
                        status: format!("unknown: {err:#}"),
                        output: self.process.output(),
                    })?;
                    if let Some(status) = exited {
                        return Err(InvokeError::ProcessDied {
                            function: function(),
                            status: status.to_string(),
                            output: self.process.output(),
                        });
                    }
                }
            }
        }
    }
}

/// The environment Lambda gives a function, as documented on [`FunctionSpec`].
fn lambda_env(
    spec: &FunctionSpec,
    api: &RuntimeApi,
    task_root: &Path,
    ordinal: u64,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = PASSED_THROUGH_ENV
        .iter()
        .filter_map(|name| {
            std::env::var(name)
                .ok()
                .map(|value| ((*name).into(), value))
        })
        .collect();
    env.extend(spec.env.iter().cloned());
    let reserved = [
        ("AWS_LAMBDA_RUNTIME_API", api.addr().to_string()),
        ("AWS_LAMBDA_FUNCTION_NAME", spec.name.clone()),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            spec.memory_mb.to_string(),
        ),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{}", spec.name),
        ),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            format!("local/[$LATEST]instance-{ordinal}"),
        ),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".into()),
        ("AWS_REGION", LOCAL_REGION.into()),
        ("AWS_DEFAULT_REGION", LOCAL_REGION.into()),
        ("AWS_ACCESS_KEY_ID", "local".into()),
        ("AWS_SECRET_ACCESS_KEY", "local".into()),
        ("AWS_SESSION_TOKEN", "local".into()),
        ("LAMBDA_TASK_ROOT", task_root.display().to_string()),
        ("TZ", ":UTC".into()),
    ];
    // Later entries win when the child's environment is built, as Lambda's reserved
    // variables win over a function's configuration.
    env.retain(|(name, _)| !reserved.iter().any(|(reserved, _)| reserved == name));
    env.extend(
        reserved
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value)),
    );
    env
}
