//! Why a gateway did not start.

use std::net::SocketAddr;

use tollgate_wasm_host::HostError;

/// Starting a [`Gateway`](crate::Gateway) failed; nothing is left running.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The configuration cannot work (no workers, a bad upstream URL, a duplicate cluster).
    #[error("invalid gateway configuration: {reason}")]
    InvalidConfig { reason: String },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The async runtime or a VM thread could not be created.
    #[error("cannot start the gateway's {what}")]
    Spawn {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A VM refused to start (`on_vm_start` / `on_configure` said no) or trapped.
    #[error("the {root_id} VM did not start")]
    VmStart {
        root_id: String,
        #[source]
        source: HostError,
    },
}
