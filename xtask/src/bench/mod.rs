//! `cargo xtask bench [part…]`: measurements quoted in the docs, each with the command
//! that made it. Figures depend on the machine; DynamoDB Local stands in for DynamoDB, so
//! request and item counts transfer to AWS while timings only compare runs on one machine.
//!
//! - `filter`: the edge filter's per-request cost as the real `.wasm` in the proxy-wasm
//!   host against the no-op filter in the same host, and the native cost of its decision
//!   (`wasm-host/benches/filter.rs`, built in release: timings of a debug build would
//!   measure the debug build).
//! - `ingest`: rows/s per invocation and DynamoDB writes per 1,000 events ([`ingest`]).
//! - `api`: the usage API's month views for a tenant with 50 meters, served over HTTP on
//!   loopback: p50/p99 latency, requests/s, reply size, DynamoDB calls per request ([`api`]).
//! - `sizes`: each Lambda's release binary, stripped and zipped as a deployment package
//!   ([`sizes`]).
//! - `cost`: the AWS cost per 1,000,000 metered requests: the real filter in 10 gateways,
//!   its SQS messages through the real ingest on DynamoDB Local, every request, item and
//!   write unit counted, then the cost model it calibrates ([`cost`], [`cost_model`]).

mod api;
mod calls;
mod cost;
mod cost_model;
mod ingest;
mod sizes;

use anyhow::{Context, Result, bail};
use tollgate_devstack::DynamoDbLocal;

/// The parts of the bench, in the order a full run takes them.
pub const PARTS: [&str; 5] = ["filter", "sizes", "ingest", "api", "cost"];

/// Runs the named parts (all of them when `parts` is empty).
pub fn run(parts: &[String]) -> Result<()> {
    for part in parts {
        if !PARTS.contains(&part.as_str()) {
            bail!(
                "unknown bench part {part:?}; the parts are {}",
                PARTS.join(", ")
            );
        }
    }
    let wanted = |part: &str| parts.is_empty() || parts.iter().any(|p| p == part);
    if wanted("filter") {
        filter()?;
    }
    if wanted("sizes") {
        sizes::run()?;
    }
    if wanted("cost") && !wanted("filter") {
        build_wasm()?;
    }
    let needs_dynamodb = ["ingest", "api", "cost"].iter().any(|p| wanted(p));
    if !needs_dynamodb {
        return Ok(());
    }
    let dynamodb = DynamoDbLocal::ensure()?.start()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(async {
        if wanted("ingest") {
            ingest::run(dynamodb.endpoint()).await?;
        }
        if wanted("api") {
            api::run(dynamodb.endpoint()).await?;
        }
        if wanted("cost") {
            cost::run(dynamodb.endpoint()).await?;
        }
        anyhow::Ok(())
    });
    let stopped = dynamodb.stop();
    result.and(stopped)
}

/// The filter benchmark: the wasm modules in release, then the bench binary.
fn filter() -> Result<()> {
    let root = crate::util::repo_root()?;
    build_wasm()?;
    eprintln!("[bench] filter per-request cost (cargo bench -p tollgate-wasm-host --bench filter)");
    crate::util::run(crate::util::cargo(&root).args([
        "bench",
        "-p",
        "tollgate-wasm-host",
        "--bench",
        "filter",
    ]))
}

/// The filters for wasm32-wasip1 (release), which the `filter` and `cost` parts load.
fn build_wasm() -> Result<()> {
    let root = crate::util::repo_root()?;
    eprintln!("[bench] building the filters for wasm32-wasip1 (release)");
    crate::util::run(crate::util::cargo(&root).args(crate::util::wasm_build_args()))
}
