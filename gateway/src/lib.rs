//! # tollgate-gateway
//!
//! The local gateway: what Envoy is to the filter in production, on loopback.
//!
//! One [`Gateway`] is one Envoy process: one [`HostEnv`](tollgate_wasm_host::HostEnv)
//! (system clock, the configured clusters), the singleton service VM (root id
//! `tollgate_flush`: snapshot fetch, usage flush) and `workers` worker VMs (root id
//! `tollgate`: the HTTP filter), each VM on its own OS thread. The HTTP/1 server hands
//! each request to a worker, round-robin: request headers and body through the filter;
//! the filter's local reply (401/402/429) if it sent one; else the request forwarded to
//! the upstream (bodies buffered, requests up to [`MAX_REQUEST_BODY_BYTES`], else 413),
//! and the upstream's response through the same stream on its way back. Streams are
//! detached from their VM while the request is upstream, so a worker keeps serving.
//!
//! A VM that trapped stays failed, as in Envoy: its requests get a 503 with a JSON body,
//! or pass through unfiltered with [`GatewayConfig::fail_open`]. An upstream that does
//! not answer is a 502 (504 after [`UPSTREAM_TIMEOUT`]), run through the filter like
//! Envoy's router replies. The gateway never panics on a request.
//!
//! Limitations: bodies are buffered, not streamed; the filter's response callbacks
//! cannot pause; HTTP/1 only; no TLS.
//!
//! - [`cluster`]: the filter's `dispatch_http_call`s, sent to named clusters, SigV4
//!   signed where Envoy's `aws_request_signing` filter would sign them.
//!
//! ```no_run
//! use tollgate_gateway::{Cluster, Gateway, GatewayConfig};
//! use tollgate_wasm_host::testing;
//!
//! let module = testing::module("tollgate_edge_filter")?;
//! let config = GatewayConfig::new("http://127.0.0.1:8080", module, br#"{}"#.to_vec())
//!     .with_cluster(Cluster::new("usage_api", "http://127.0.0.1:9000"));
//! let gateway = Gateway::start(config)?;
//! println!("listening on {}", gateway.url());
//! gateway.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
pub mod cluster;
mod error;
mod server;
mod vm_thread;

pub use cluster::{Cluster, ClusterClient, SigV4};
pub use error::GatewayError;
pub use server::{
    FILTER_TIMEOUT, Gateway, GatewayConfig, MAX_REQUEST_BODY_BYTES, MAX_RESPONSE_BODY_BYTES,
    ROOT_ID_FILTER, ROOT_ID_SERVICE, RunningGateway, UPSTREAM_TIMEOUT, VmStats,
};
