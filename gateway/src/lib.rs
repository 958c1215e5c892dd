//! # tollgate-gateway
//!
//! The local gateway: what Envoy is to the filter in production, on loopback.
//!
//! - [`cluster`]: the filter's `dispatch_http_call`s, sent to named clusters, SigV4
//!   signed where Envoy's `aws_request_signing` filter would sign them.
pub mod cluster;

pub use cluster::{Cluster, ClusterClient, SigV4};
