//! `cargo xtask demo`: a local tollgate to look at.
//!
//! Starts DynamoDB Local, loads the sample month from `events/samples/` through the core
//! and store code (the path the ingest Lambda takes), then prints each tenant's usage and
//! invoice preview.

use anyhow::{Context, Result};
use tollgate_core::invoice::InvoicePreview;
use tollgate_devstack::DynamoDbLocal;
use tollgate_store::DynamoDbStore;
use xtask::sample_month::{self, SampleData};

const TABLE: &str = "tollgate-demo";

pub fn run() -> Result<()> {
    let dynamodb = DynamoDbLocal::ensure()?.start()?;
    let demo = run_demo(dynamodb.endpoint());
    let stopped = dynamodb.stop();
    demo.and(stopped)
}

/// The demo, against the DynamoDB at `endpoint`.
pub fn run_demo(endpoint: &str) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(demo(endpoint))
}

async fn demo(endpoint: &str) -> Result<()> {
    let data = SampleData::read(&sample_month::samples_dir())?;
    let store = DynamoDbStore::new(tollgate_store::local_client(endpoint), TABLE);
    println!(
        "==> loading the sample month {} into DynamoDB Local ({endpoint}, table {TABLE})",
        sample_month::SAMPLE_MONTH
    );
    let report = sample_month::load(&store, &data).await?;
    println!(
        "    {} events accepted, {} rejected; {} batches → {} hourly counters in {} transactions ({} items written)",
        report.events_accepted,
        report.rejected.len(),
        report.batches,
        report.applied.rows_written,
        report.applied.transactions,
        report.applied.items_written,
    );
    for rejected in &report.rejected {
        println!(
            "    rejected line {}: [{}] {}",
            rejected.line, rejected.code, rejected.reason
        );
    }
    println!(
        "    redelivering the first batch: {} chunks already applied, {} applied again (counted once)",
        report.redelivery.chunks_already_applied, report.redelivery.chunks_applied
    );
    for tenant in &data.tenants {
        println!();
        println!(
            "==> usage of {} in {}",
            tenant.display_name,
            sample_month::SAMPLE_MONTH
        );
        let usage = sample_month::month_usage(&store, &data.catalog, &tenant.tenant).await?;
        for (meter, quantity) in &usage {
            let unit = data.catalog.get(meter).map_or("", |m| m.unit.as_str());
            println!(
                "    {meter:<20} {:>16} {unit}",
                quantity.round_dp(6).normalize()
            );
        }
        let preview = sample_month::invoice(&store, &data.catalog, &tenant.tenant).await?;
        print_preview(&tenant.display_name, &preview);
    }
    Ok(())
}

fn print_preview(name: &str, preview: &InvoicePreview) {
    println!(
        "==> invoice preview: {name} — tenant {}, plan {}, {}",
        preview.tenant, preview.plan, preview.period
    );
    for line in &preview.lines {
        println!(
            "    {:<100} {:>10} {}",
            line.description, line.amount, preview.currency
        );
    }
    println!(
        "    {:<100} {:>10} {}",
        "total", preview.total, preview.currency
    );
}
