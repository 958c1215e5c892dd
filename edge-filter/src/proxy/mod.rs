//! The proxy-wasm glue: reads host data in, calls the plain-Rust modules, writes results
//! back. Compiled only for `wasm32`; everything it decides is decided (and tested) in
//! the host-free modules, and the glue itself is tested as the real `.wasm` in
//! `tollgate-wasm-host`.
//!
//! One module, two roles, told apart by the plugin's root id (`plugin_root_id`):
//!
//! - [`ROOT_ID_FILTER`] (`tollgate`): the HTTP filter, one VM per Envoy worker thread
//!   ([`worker`]). Identifies the tenant, admits or refuses the request against the
//!   tenant's shared-data entry, meters forwarded requests, and every second hands its
//!   usage rows to the singleton over the shared queue [`USAGE_QUEUE`].
//! - [`ROOT_ID_SERVICE`] (`tollgate_flush`): the singleton service VM of Envoy's
//!   bootstrap `wasm` extension ([`service`]). Merges the workers' rows, flushes them to
//!   SQS every flush interval, and fetches the edge snapshot every snapshot interval,
//!   publishing it in shared data for the workers.
//!
//! Both roles read the same plugin configuration; a configuration with problems fails
//! the plugin start with every problem logged, never a request.

mod host;
mod service;
mod worker;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

use crate::config::FilterConfig;

/// Root id of the HTTP filter.
pub const ROOT_ID_FILTER: &str = "tollgate";
/// Root id of the singleton service (flush and snapshot).
pub const ROOT_ID_SERVICE: &str = "tollgate_flush";
/// The shared queue from workers to the singleton: JSON arrays of usage rows.
pub const USAGE_QUEUE: &str = "tollgate/usage";
/// Shared data: the raw JSON of the last good edge snapshot.
pub const SNAPSHOT_KEY: &str = "tollgate/snapshot";
/// Shared data: a counter the singleton bumps after each new snapshot, so workers copy
/// the (large) snapshot only when it changed.
pub const SNAPSHOT_GENERATION_KEY: &str = "tollgate/snapshot/generation";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(Root::Unconfigured));
}}

/// The root context, whose role is known once the host configures it.
enum Root {
    Unconfigured,
    Worker(worker::WorkerRoot),
    Service(Box<service::ServiceRoot>),
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        num_trailers: usize,
    ) {
        if let Root::Service(service) = self {
            service.on_http_call_response(token_id, num_headers, body_size, num_trailers);
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let raw = host::plugin_configuration();
        let config = match FilterConfig::from_json(&raw) {
            Ok(config) => config,
            Err(error) => {
                for problem in error.problems() {
                    host::log(
                        LogLevel::Error,
                        &format!("tollgate configuration: {problem}"),
                    );
                }
                host::log(LogLevel::Error, &error.to_string());
                return false;
            }
        };
        let root_id = host::property_string(&["plugin_root_id"]).unwrap_or_default();
        *self = match root_id.as_str() {
            ROOT_ID_SERVICE => match service::ServiceRoot::start(config) {
                Some(service) => Root::Service(Box::new(service)),
                None => return false,
            },
            ROOT_ID_FILTER | "" => Root::Worker(worker::WorkerRoot::start(config)),
            other => {
                host::log(
                    LogLevel::Error,
                    &format!(
                        "tollgate: unknown root_id `{other}`: use `{ROOT_ID_FILTER}` for the \
                         HTTP filter and `{ROOT_ID_SERVICE}` for the singleton service"
                    ),
                );
                return false;
            }
        };
        true
    }

    fn on_tick(&mut self) {
        match self {
            Root::Unconfigured => {}
            Root::Worker(worker) => worker.on_tick(),
            Root::Service(service) => service.on_tick(),
        }
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        if let Root::Service(service) = self {
            service.on_queue_ready(queue_id);
        }
    }

    /// Streams reach only the filter role in a correct Envoy configuration; any other
    /// root answers with a pass-through context rather than the SDK's panic on `None`.
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        match self {
            Root::Worker(worker) => Some(Box::new(worker.new_request())),
            Root::Unconfigured | Root::Service(_) => Some(Box::new(PassThrough)),
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// A stream on a root that does not filter: every callback continues.
struct PassThrough;

impl Context for PassThrough {}
impl HttpContext for PassThrough {}
