//! # tollgate-edge-filter
//!
//! The proxy-wasm filter that runs inside Envoy. Its decision logic and the proxy-wasm glue
//! arrive with the edge-filter issue; the crate exists now so the workspace has its final
//! shape.
