//! `cargo xtask demo`: a local tollgate to look at.
//!
//! Starts DynamoDB Local and hands its endpoint to [`run_demo`]. Loading the demo's data
//! (the table, tenants, plans and usage) arrives with the store crate
//! (`functions/store`); until then the demo only brings up the emulator.

use anyhow::Result;
use tollgate_devstack::DynamoDbLocal;

pub fn run() -> Result<()> {
    let dynamodb = DynamoDbLocal::ensure()?.start()?;
    let demo = run_demo(dynamodb.endpoint());
    let stopped = dynamodb.stop();
    demo.and(stopped)
}

/// The demo, against the DynamoDB at `endpoint`.
pub fn run_demo(endpoint: &str) -> Result<()> {
    println!("DynamoDB Local is running at {endpoint}");
    println!(
        "The demo's data loading (table, tenants, plans, usage) arrives with the store crate \
         (functions/store): nothing is loaded yet, so there is nothing more to show."
    );
    Ok(())
}
