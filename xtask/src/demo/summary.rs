//! The closing summary. A last round of traffic (acme now blocked by its budget), the
//! hour in progress billed the way the hourly schedule bills it once it closes, then a
//! table per tenant whose numbers must agree: sent = allowed + limited + blocked,
//! metered = allowed, billed = metered; and for every tenant and meter, Stripe's
//! accepted units = ⌊the month's usage × units per quantity⌋.

use std::time::Instant;

use anyhow::{Context, Result, ensure};
use chrono::{SecondsFormat, TimeDelta, Utc};
use rust_decimal::Decimal;
use serde_json::json;
use tollgate_core::window::{Granularity, Window};
use tollgate_local::LocalStack;

use super::billing::{closed_hours_usage, demo_catalog};
use super::gateway::{
    DemoGateway, EDGE_REQUESTS, Load, edge_requests_metered, print_gateway_metrics,
    wait_for_edge_usage,
};
use super::{Api, Tenant, seconds};
use crate::util::grouped;

/// After the budget block: acme's requests meet 402, the others go on under their plans.
const LAST_ROUND: [Load; 3] = [
    Load {
        tenant: "acme",
        per_second: 10,
        requests: 30,
    },
    Load {
        tenant: "globex",
        per_second: 20,
        requests: 60,
    },
    Load {
        tenant: "podco",
        per_second: 10,
        requests: 30,
    },
];

/// The last round, billing the open hour, and the summary; fails when a number disagrees.
pub(super) async fn close_the_books(
    stack: &LocalStack,
    root: &std::path::Path,
    api: &Api,
    tenants: &[Tenant],
    gateway: &DemoGateway,
) -> Result<()> {
    println!();
    println!("==> a last round of traffic, after the budget block");
    gateway.round(tenants, &LAST_ROUND).await?;
    wait_for_edge_usage(stack, api, tenants, &gateway.traffic).await?;
    print_gateway_metrics(gateway);

    // Billing-sync reports closed hours. The hourly schedule's run right after this hour
    // closes is the one that reports the traffic above: run it now with the payload that
    // schedule will send.
    let hour = Window::containing(Granularity::Hour, Utc::now());
    let at = hour.end() + TimeDelta::seconds(5);
    let step = Instant::now();
    let report = stack
        .run_billing_sync(at)
        .await
        .context("running billing-sync for the hour in progress")?;
    println!(
        "==> billing-sync with the payload of the run due at {} (the first after this hour closes): {} events recorded, {} sent with {} units, {} carried, {} rejected, in {}",
        at.to_rfc3339_opts(SecondsFormat::Secs, true),
        report["eventsRecorded"],
        report["eventsSent"],
        report["unitsSent"],
        report["eventsCarried"],
        report["eventsRejected"],
        seconds(step.elapsed())
    );
    ensure!(
        report["complete"] == json!(true) && report["stopped"].as_array().is_none_or(Vec::is_empty),
        "billing-sync did not finish cleanly: {report}"
    );
    let totals = stack.stripe.totals();
    let duplicates = stack.stripe.duplicate_identifiers();
    ensure!(
        duplicates.is_empty(),
        "Stripe accepted identifiers more than once: {duplicates:?}"
    );

    println!();
    println!("==> summary: the gateway's traffic, metered and billed");
    println!(
        "    {:<8} {:<13} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "tenant", "plan", "sent", "allowed", "limited", "blocked", "metered", "billed"
    );
    let mut problems = Vec::new();
    let mut all = [0u64; 4];
    let (mut all_metered, mut all_billed) = (Decimal::ZERO, 0u64);
    for tenant in tenants {
        let tally = gateway.traffic.tally(tenant.spec.id);
        let metered = edge_requests_metered(api, tenant).await?;
        let billed = totals
            .get(&(
                tenant.spec.stripe_customer.to_owned(),
                EDGE_REQUESTS.to_owned(),
            ))
            .copied()
            .unwrap_or(0);
        let limited = tally.rate_limited + tally.quota_exceeded;
        println!(
            "    {:<8} {:<13} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8}",
            tenant.spec.id,
            tenant.spec.plan,
            tally.sent,
            tally.allowed,
            limited,
            tally.blocked,
            metered,
            billed
        );
        for (sum, n) in all
            .iter_mut()
            .zip([tally.sent, tally.allowed, limited, tally.blocked])
        {
            *sum += n;
        }
        all_metered += metered;
        all_billed += billed;
        let who = tenant.spec.id;
        if !tally.adds_up() || !tally.other.is_empty() {
            problems.push(format!(
                "{who}: answers other than 2xx, 429 and 402: {tally:?}"
            ));
        }
        if metered != Decimal::from(tally.allowed) {
            problems.push(format!(
                "{who}: {metered} metered, {} allowed",
                tally.allowed
            ));
        }
        if Decimal::from(billed) != metered {
            problems.push(format!(
                "{who}: {billed} billed to Stripe, {metered} metered"
            ));
        }
    }
    println!(
        "    {:<8} {:<13} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "all", "", all[0], all[1], all[2], all[3], all_metered, all_billed
    );
    println!(
        "    (limited: 429, a rate limit or a used-up quota; blocked: 402, a budget hard limit; \
         metered: GET /v1/usage {EDGE_REQUESTS}; billed: units of Stripe's {EDGE_REQUESTS} meter \
         accepted by the stand-in)"
    );

    // Every meter reported to Stripe, not only the edge's: all hours up to now closed.
    let month = Window::containing(Granularity::Month, hour.start());
    let next_hour = Window::containing(Granularity::Hour, at);
    let catalog = demo_catalog(root)?;
    let mut lines = 0;
    let mut units = 0u64;
    for tenant in tenants {
        for (meter, event_name, units_per_quantity) in &catalog {
            let usage = closed_hours_usage(api, tenant, meter, month, next_hour).await?;
            let due = (usage * *units_per_quantity).floor();
            let accepted = totals
                .get(&(tenant.spec.stripe_customer.to_owned(), event_name.clone()))
                .copied()
                .unwrap_or(0);
            if usage.is_zero() && accepted == 0 {
                continue;
            }
            lines += 1;
            units += accepted;
            if Decimal::from(accepted) != due {
                problems.push(format!(
                    "{}/{meter}: Stripe accepted {accepted} units, the month's usage makes {due}",
                    tenant.spec.id
                ));
            }
        }
    }
    ensure!(
        problems.is_empty(),
        "the summary does not add up:\n  {}",
        problems.join("\n  ")
    );
    println!(
        "    ✓ sent = allowed + limited + blocked, metered = allowed, billed = metered for every tenant"
    );
    println!(
        "    ✓ all {lines} tenant × meter lines: Stripe's accepted units = ⌊the month's usage × units per quantity⌋ ({} units in {} requests, no identifier accepted twice)",
        grouped(&units.to_string()),
        grouped(&stack.stripe.requests().len().to_string())
    );
    Ok(())
}
