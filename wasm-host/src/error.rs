//! Everything that can go wrong loading or running a plugin.

use std::path::PathBuf;

use crate::env::LogRecord;

/// An error with its cause kept (wasmtime's errors are boxed to keep their chain).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why the host could not load, start or run a plugin.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The `.wasm` file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The `.wasm` file is not a valid module for this engine.
    #[error("compiling the wasm module: {source}")]
    Compile {
        #[source]
        source: BoxError,
    },
    /// The module exports none of the proxy-wasm ABI version markers this host speaks
    /// (`proxy_abi_version_0_2_1`, `proxy_abi_version_0_2_0`).
    #[error(
        "the module exports no supported proxy-wasm ABI version \
         (expected proxy_abi_version_0_2_1 or proxy_abi_version_0_2_0)"
    )]
    UnsupportedAbi,
    /// The module's imports could not be linked (e.g. an import with an unexpected type).
    #[error("linking the module's imports: {source}")]
    Link {
        #[source]
        source: BoxError,
    },
    /// Instantiation failed (memory limits, start function trap, ...).
    #[error("instantiating the module: {source}")]
    Instantiate {
        #[source]
        source: BoxError,
    },
    /// A required export is missing or has the wrong type.
    #[error("the module does not export `{name}` with the expected type")]
    MissingExport { name: String },
    /// `proxy_on_vm_start` returned false: Envoy fails the plugin. `logs` are the VM's log
    /// records up to that point.
    #[error("proxy_on_vm_start returned false{}", render(logs))]
    VmStartRejected { logs: Vec<LogRecord> },
    /// `proxy_on_configure` returned false: Envoy rejects the plugin configuration.
    #[error("proxy_on_configure returned false{}", render(logs))]
    ConfigureRejected { logs: Vec<LogRecord> },
    /// The guest trapped (panic, `unreachable`, out-of-bounds access, `proc_exit`, memory
    /// cap) in `callback`. The VM is failed from then on.
    #[error("the plugin trapped in {callback}: {message}")]
    Trap { callback: String, message: String },
    /// The VM trapped earlier; like Envoy, a failed VM is not called again.
    #[error("the VM failed earlier (a trap) and takes no more calls")]
    Failed,
    /// `deliver_http_response` got a token this VM never handed out (or already answered).
    #[error("no pending HTTP call with token {token}")]
    UnknownCallToken { token: u32 },
    /// The `.wasm` file a test or benchmark needs has not been built.
    #[error("{} not found; build it with: {command}", path.display())]
    WasmNotBuilt { path: PathBuf, command: String },
}

fn render(logs: &[LogRecord]) -> String {
    if logs.is_empty() {
        return String::from(" (the VM logged nothing)");
    }
    let lines: Vec<String> = logs
        .iter()
        .map(|record| format!("[{:?}] {}", record.level, record.message))
        .collect();
    format!("; VM logs: {}", lines.join(" | "))
}
