//! A proxy-wasm host on wasmtime: runs a real proxy-wasm filter (`.wasm`, ABI v0.2.1, as
//! built with the Rust `proxy-wasm` SDK for `wasm32-wasip1`) the way Envoy would, for
//! tests and the local gateway.
//!
//! - [`WasmModule`]: compiled once, shared by every VM.
//! - [`HostEnv`]: one Envoy process: shared data with CAS, shared queues, metrics, logs,
//!   the [`Clock`] and the known upstream clusters. Clone it into every VM.
//! - [`Vm`]: one instance of the plugin (an Envoy worker's copy or the singleton
//!   service VM); [`Vm::poll`] fires ticks and queue deliveries, HTTP calls the plugin
//!   dispatches are taken with [`Vm::take_http_calls`] and answered with
//!   [`Vm::deliver_http_response`].
//! - [`Stream`]: one HTTP stream through a VM.
//!
//! The guest is sandboxed: every pointer it passes is bounds-checked, a trap fails its
//! VM (never the host), and its memory is capped at [`MEMORY_LIMIT_BYTES`].
//!
//! ```no_run
//! use std::sync::Arc;
//! use tollgate_wasm_host::{FilterAction, HostEnv, PluginConfig, SystemClock, Vm, WasmModule};
//!
//! let module = WasmModule::from_file("filter.wasm".as_ref())?;
//! let env = HostEnv::new(Arc::new(SystemClock)).with_clusters(["usage_api"]);
//! let config = PluginConfig {
//!     vm_id: "tollgate".into(),
//!     root_id: "edge".into(),
//!     plugin_name: "edge".into(),
//!     vm_configuration: Vec::new(),
//!     plugin_configuration: br#"{"limits":[]}"#.to_vec(),
//! };
//! let mut vm = Vm::start(&module, &env, config)?;
//! let mut stream = vm.new_stream()?;
//! let headers = vec![(":method".into(), "GET".into()), (":path".into(), "/".into())];
//! if stream.on_request_headers(headers, true)? == FilterAction::Continue {
//!     // forward upstream, then stream.on_response_headers(...)
//! }
//! stream.finish()?;
//! # Ok::<(), tollgate_wasm_host::HostError>(())
//! ```

mod abi;
mod clock;
mod env;
mod error;
mod module;
mod state;
pub mod testing;
mod vm;
mod wasi;

pub use clock::{Clock, ManualClock, SystemClock};
pub use env::{HistogramStats, HostEnv, LogLevel, LogRecord, MAX_LOG_RECORDS, SharedDataStats};
pub use error::{BoxError, HostError};
pub use module::WasmModule;
pub use vm::{
    FilterAction, HttpCall, HttpCallResult, LocalReply, MEMORY_LIMIT_BYTES, PluginConfig, Stream,
    Vm,
};
