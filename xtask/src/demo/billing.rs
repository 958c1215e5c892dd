//! Budgets, alerts and Stripe: a budget acme's month exceeds (hard limit, webhook) and
//! one globex stays under, the alerts and their verified deliveries, the block at the
//! edge, then billing-sync's meter events checked against the closed hours' usage.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tollgate_core::meter::MeterCatalog;
use tollgate_core::webhook::WebhookSecret;
use tollgate_core::window::{Granularity, Window};
use tollgate_devstack::webhook::WebhookReceiver;
use tollgate_local::LocalStack;

use super::gateway::DemoGateway;
use super::{Api, METERS, SCHEDULE_EVERY, Tenant, decimal, seconds, shown, tenant, text_of};

/// The tenant whose budget is used up (hard limit, webhook) and the one that stays under.
pub(super) const OVER_BUDGET: &str = "acme";
pub(super) const UNDER_BUDGET: &str = "globex";
/// How long webhook deliveries and the edge's 402 may take to show.
const BUDGET_DEADLINE: Duration = Duration::from_secs(45);
/// Billing-sync runs (explicit) before the check gives up: one more when an hour closed
/// while it was checked.
const BILLING_ATTEMPTS: usize = 3;

/// Budgets with a webhook for one tenant, one explicit budget run, the alerts, the
/// verified deliveries and the edge block; then one explicit billing-sync run, the Stripe
/// requests it made and the reconciliation. Fails when any of them disagree.
pub(super) async fn budgets_and_stripe(
    stack: &LocalStack,
    root: &Path,
    api: &Api,
    admin_key: &str,
    tenants: &[Tenant],
    gateway: &DemoGateway,
    receiver: &WebhookReceiver,
) -> Result<BillingSummary> {
    println!();
    println!("==> budgets, alerts and Stripe");
    let over = tenant(tenants, OVER_BUDGET)?;
    let under = tenant(tenants, UNDER_BUDGET)?;
    let webhook = api
        .put(
            admin_key,
            &format!("/v1/admin/tenants/{OVER_BUDGET}/webhook"),
            &json!({"url": receiver.url(&format!("/hooks/{OVER_BUDGET}"))}),
        )
        .await?;
    let secret = WebhookSecret::parse(&text_of(&webhook["secret"]))
        .map_err(|e| anyhow::anyhow!("the webhook reply's secret does not parse: {e}"))?;
    receiver.set_secret(secret);
    println!(
        "    webhook receiver on {} (verifies Tollgate-Signature); PUT /v1/admin/tenants/{OVER_BUDGET}/webhook → {} (secret shown once: {}…)",
        receiver.url("/"),
        text_of(&webhook["url"]),
        text_of(&webhook["secret"]).get(..10).unwrap_or("")
    );

    let month = Window::containing(Granularity::Month, Utc::now()).key();
    let preview = api
        .get(&over.key, &format!("/v1/invoice/preview?month={month}"))
        .await?;
    let spent = decimal(&preview["total"]).context("the invoice preview has no total")?;
    let currency = text_of(&preview["currency"]);
    // Low enough that the month so far is over it: 50, 80 and 100 % are all crossed.
    let low = (spent * Decimal::new(8, 1)).floor().max(Decimal::ONE);
    ensure!(
        spent >= low,
        "{OVER_BUDGET}'s month so far ({spent} {currency}) is too small for the demo's budget"
    );
    let budget = json!({"monthlyAmount": low.to_string(), "currency": currency, "thresholds": [50, 80, 100], "hardLimit": true});
    api.put(&over.key, "/v1/budget", &budget).await?;
    println!(
        "    PUT /v1/budget ({OVER_BUDGET}'s own key): {low} {currency} a month, hard limit (invoice preview so far: {spent} {currency})"
    );
    let forecast = api.get(&under.key, "/v1/forecast").await?;
    let projected = decimal(&forecast["cost"]["projected"]).unwrap_or_default();
    let under_spent = decimal(&forecast["cost"]["soFar"]).unwrap_or_default();
    // Twice the projection, in hundreds: neither a threshold nor the forecast is reached.
    let high = ((projected.max(under_spent) * Decimal::TWO) / Decimal::ONE_HUNDRED).ceil()
        * Decimal::ONE_HUNDRED;
    let high = high.max(Decimal::ONE_HUNDRED);
    let budget = json!({"monthlyAmount": high.to_string(), "currency": currency, "thresholds": [50, 80, 100], "hardLimit": false});
    api.put(
        admin_key,
        &format!("/v1/budget?tenant={UNDER_BUDGET}"),
        &budget,
    )
    .await?;
    println!(
        "    PUT /v1/budget?tenant={UNDER_BUDGET} (admin key): {high} {currency} a month, no hard limit (so far {under_spent}, projected {projected})"
    );

    let step = Instant::now();
    let report = stack
        .run_budget(Utc::now())
        .await
        .context("running the budget function")?;
    println!(
        "    budget run (also every {}s): {} tenants, {} with a budget, {} alerts raised, {} delivered, newly blocked {} (a PUT /v1/budget below the spend with a hard limit blocks at once), in {}",
        SCHEDULE_EVERY.as_secs(),
        report["tenants"],
        report["evaluated"],
        report["alertsRaised"],
        report["deliveriesSucceeded"],
        report["blocked"],
        seconds(step.elapsed())
    );
    ensure!(
        report["skipped"].as_object().is_none_or(|s| s.is_empty()),
        "the budget run skipped tenants: {}",
        report["skipped"]
    );
    let alerts = wait_for_deliveries(api, over).await?;
    show_alerts(&alerts, receiver)?;
    let quiet = api.get(&under.key, "/v1/alerts").await?;
    let quiet = quiet["alerts"].as_array().map_or(0, Vec::len);
    ensure!(
        quiet == 0,
        "{UNDER_BUDGET} stays under its budget but has {quiet} alerts"
    );
    println!("    GET /v1/alerts ({UNDER_BUDGET}): none — it stays under its budget");
    show_block(api, admin_key, over, under, gateway).await?;

    let catalog = demo_catalog(root)?;
    let mut attempt = 1;
    loop {
        match billing_sync(stack, api, admin_key, tenants, &catalog).await? {
            Checked::Agrees(stripe_units) => {
                return Ok(BillingSummary {
                    alerts: alerts.len(),
                    stripe_requests: stack.stripe.requests().len(),
                    stripe_units,
                });
            }
            Checked::HourClosed(why) if attempt < BILLING_ATTEMPTS => {
                println!("    an hour closed while checking ({why}); running billing-sync again");
                attempt += 1;
            }
            Checked::HourClosed(why) => bail!("billing-sync: {why}"),
        }
    }
}

/// What the budget and Stripe step saw, for the closing summary.
#[derive(Debug)]
pub(super) struct BillingSummary {
    pub(super) alerts: usize,
    pub(super) stripe_requests: usize,
    pub(super) stripe_units: u64,
}

/// A secret for the receiver until the API issues the tenant's.
pub(super) fn placeholder_secret() -> Result<WebhookSecret> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("the operating system's random source failed: {e}"))?;
    Ok(WebhookSecret::from_random_bytes(bytes))
}

/// The tenant's alerts once none is waiting for a delivery attempt (the budget schedule
/// retries failed ones), at most [`BUDGET_DEADLINE`].
async fn wait_for_deliveries(api: &Api, tenant: &Tenant) -> Result<Vec<Value>> {
    let started = Instant::now();
    loop {
        let reply = api.get(&tenant.key, "/v1/alerts").await?;
        let alerts = reply["alerts"].as_array().cloned().unwrap_or_default();
        let pending = alerts
            .iter()
            .filter(|a| a["delivery"]["status"] == json!("pending"))
            .count();
        if pending == 0 || started.elapsed() > BUDGET_DEADLINE {
            return Ok(alerts);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Prints the alerts and the deliveries the receiver verified; every threshold must have
/// an alert, delivered and verified.
fn show_alerts(alerts: &[Value], receiver: &WebhookReceiver) -> Result<()> {
    println!("    GET /v1/alerts ({OVER_BUDGET}):");
    println!(
        "      {:<24} {:<9} {:>8} {:>10} {:>8}  delivery",
        "id", "severity", "used %", "spent", "budget"
    );
    for alert in alerts {
        println!(
            "      {:<24} {:<9} {:>8} {:>10} {:>8}  {} after {} attempt(s)",
            text_of(&alert["id"]),
            text_of(&alert["severity"]),
            text_of(&alert["percentUsed"]),
            text_of(&alert["spent"]),
            text_of(&alert["budget"]),
            text_of(&alert["delivery"]["status"]),
            alert["delivery"]["attempts"],
        );
    }
    let month = Window::containing(Granularity::Month, Utc::now()).key();
    let received = receiver.received();
    println!(
        "    the webhook receiver got {} deliveries:",
        received.len()
    );
    let mut verified_alerts = BTreeMap::new();
    for delivery in &received {
        let body: Value = serde_json::from_slice(&delivery.body).unwrap_or(Value::Null);
        let ok = delivery.verified.is_ok();
        println!(
            "      {} {:<24} {:<26} signature {} → HTTP {}",
            delivery.path,
            text_of(&body["alert"]["id"]),
            text_of(&body["type"]),
            if ok { "ok" } else { "NOT VERIFIED" },
            delivery.status.as_u16()
        );
        ensure!(
            ok,
            "a webhook delivery did not verify: {:?}",
            delivery.verified
        );
        if delivery.status.is_success() {
            verified_alerts.insert(text_of(&body["alert"]["id"]), ());
        }
    }
    for threshold in [50, 80, 100] {
        let id = format!("{month}.threshold-{threshold}");
        let alert = alerts
            .iter()
            .find(|a| text_of(&a["id"]) == id)
            .with_context(|| format!("no alert {id} for {OVER_BUDGET}"))?;
        ensure!(
            alert["delivery"]["status"] == json!("delivered"),
            "alert {id} is not delivered: {}",
            alert["delivery"]
        );
    }
    for alert in alerts {
        let id = text_of(&alert["id"]);
        ensure!(
            verified_alerts.contains_key(&id),
            "alert {id} has no verified delivery at the receiver"
        );
    }
    println!(
        "    ✓ {} alerts (50, 80 and 100 %), each delivered once at least and verified",
        alerts.len()
    );
    Ok(())
}

/// The over-budget tenant must be on the edge snapshot's block list, and the gateway must
/// answer its key 402 once it has the new snapshot.
async fn show_block(
    api: &Api,
    admin_key: &str,
    over: &Tenant,
    under: &Tenant,
    gateway: &DemoGateway,
) -> Result<()> {
    let snapshot = api.get(admin_key, "/v1/edge/snapshot").await?;
    let blocked_of = |id: &str| {
        snapshot["tenants"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["tenant"] == json!(id))
            .map(|t| t["blocked"].clone())
    };
    let over_blocked = blocked_of(OVER_BUDGET).unwrap_or(Value::Null);
    let under_blocked = blocked_of(UNDER_BUDGET).unwrap_or(Value::Null);
    println!(
        "    GET /v1/edge/snapshot: {OVER_BUDGET} blocked: {}, {UNDER_BUDGET} blocked: {}",
        text_of(&over_blocked),
        text_of(&under_blocked)
    );
    ensure!(
        over_blocked == json!("budget_hard_limit"),
        "{OVER_BUDGET} is not on the snapshot's block list as budget_hard_limit: {over_blocked}"
    );
    ensure!(
        under_blocked.is_null(),
        "{UNDER_BUDGET} is blocked: {under_blocked}"
    );
    // The gateway refreshes its snapshot every second.
    let started = Instant::now();
    let (status, body) = loop {
        let (status, body) = gateway.get(over, "/v1/items/1").await?;
        if status == 402 || started.elapsed() > BUDGET_DEADLINE {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let code: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    println!(
        "    through the gateway: {OVER_BUDGET}'s key → HTTP {status} {} (after {})",
        text_of(&code["code"]),
        seconds(started.elapsed())
    );
    ensure!(
        status == 402,
        "the gateway answers {OVER_BUDGET}'s key {status}, not 402, {}s after the block",
        BUDGET_DEADLINE.as_secs()
    );
    let (status, _) = gateway.get(under, "/v1/items/1").await?;
    println!("    through the gateway: {UNDER_BUDGET}'s key → HTTP {status}");
    ensure!(status != 402, "the gateway blocks {UNDER_BUDGET} too");
    println!("    ✓ the hard limit blocks {OVER_BUDGET} at the edge (402), and only it");
    Ok(())
}

/// The demo catalog's meters reported to Stripe: meter, event name, units per quantity.
pub(super) fn demo_catalog(root: &Path) -> Result<Vec<(String, String, Decimal)>> {
    let path = root.join(METERS);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let catalog =
        MeterCatalog::from_json(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(catalog
        .meters()
        .filter_map(|m| {
            m.stripe.as_ref().map(|s| {
                (
                    m.name.to_string(),
                    s.event_name.clone(),
                    s.units_per_quantity,
                )
            })
        })
        .collect())
}

/// How a billing-sync check ended.
enum Checked {
    /// With the units Stripe accepted in all.
    Agrees(u64),
    /// The numbers moved because an hour closed during the check: run again.
    HourClosed(String),
}

/// One explicit billing-sync run, the requests Stripe got, and the check that Stripe's
/// accepted units are exactly the usage of the closed hours, as the reconciliation says.
async fn billing_sync(
    stack: &LocalStack,
    api: &Api,
    admin_key: &str,
    tenants: &[Tenant],
    catalog: &[(String, String, Decimal)],
) -> Result<Checked> {
    let at = Utc::now();
    let hour = Window::containing(Granularity::Hour, at);
    let month = Window::containing(Granularity::Month, at);
    let step = Instant::now();
    let report = stack
        .run_billing_sync(at)
        .await
        .context("running billing-sync")?;
    println!(
        "    billing-sync run at {} (also every {}s; reports closed hours, so up to {}): {} events recorded, {} sent with {} units, {} carried (under one unit), {} resent, {} rejected, in {}",
        at.to_rfc3339_opts(SecondsFormat::Secs, true),
        SCHEDULE_EVERY.as_secs(),
        hour.start().to_rfc3339_opts(SecondsFormat::Secs, true),
        report["eventsRecorded"],
        report["eventsSent"],
        report["unitsSent"],
        report["eventsCarried"],
        report["eventsResent"],
        report["eventsRejected"],
        seconds(step.elapsed())
    );
    ensure!(
        report["complete"] == json!(true) && report["stopped"].as_array().is_none_or(Vec::is_empty),
        "billing-sync did not finish cleanly: {report}"
    );
    if report["eventsRecorded"] == json!(0) {
        println!(
            "    (nothing new for this run: the schedule's runs had already reported every closed hour, and a closed hour is reported once)"
        );
    }

    let requests = stack.stripe.requests();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for request in &requests {
        *statuses.entry(request.status).or_default() += 1;
    }
    println!(
        "    the Stripe requests that would be sent ({} so far to the stand-in, by status {:?}); a few:",
        requests.len(),
        statuses
    );
    let mut shown_customers = Vec::new();
    for request in &requests {
        let customer = request
            .field("payload[stripe_customer_id]")
            .unwrap_or_default()
            .to_owned();
        if shown_customers.contains(&customer) {
            continue;
        }
        println!("      {} {}", request.method, request.path);
        println!(
            "        Idempotency-Key: {}",
            request.idempotency_key.as_deref().unwrap_or("–")
        );
        for field in [
            "event_name",
            "payload[stripe_customer_id]",
            "payload[value]",
            "identifier",
        ] {
            println!("        {field}={}", request.field(field).unwrap_or("–"));
        }
        let timestamp = request.field("timestamp").unwrap_or("–");
        let when = timestamp
            .parse::<i64>()
            .ok()
            .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0))
            .map(|t| {
                format!(
                    " ({}, the hour's start)",
                    t.to_rfc3339_opts(SecondsFormat::Secs, true)
                )
            })
            .unwrap_or_default();
        println!("        timestamp={timestamp}{when}");
        shown_customers.push(customer);
    }
    let duplicates = stack.stripe.duplicate_identifiers();
    ensure!(
        duplicates.is_empty(),
        "Stripe accepted identifiers more than once: {duplicates:?}"
    );

    let totals = stack.stripe.totals();
    let reconciliation = api
        .get(
            admin_key,
            &format!("/v1/admin/billing/reconciliation?month={}", month.key()),
        )
        .await?;
    let lines = reconciliation["lines"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    println!(
        "    Stripe's accepted units against the usage of the closed hours, and GET /v1/admin/billing/reconciliation?month={}:",
        month.key()
    );
    println!(
        "      {:<7} {:<20} {:>16} {:>10} {:>10} {:>16} {:>16}",
        "tenant", "meter", "closed hours", "units due", "Stripe", "reported", "open hour"
    );
    let mut problems = Vec::new();
    let mut open = 0;
    for tenant in tenants {
        for (meter, event_name, units_per_quantity) in catalog {
            let closed = closed_hours_usage(api, tenant, meter, month, hour).await?;
            let due = (closed * units_per_quantity).floor();
            let accepted = totals
                .get(&(tenant.spec.stripe_customer.to_owned(), event_name.clone()))
                .copied()
                .unwrap_or(0);
            let line = lines
                .iter()
                .find(|l| l["tenant"] == json!(tenant.spec.id) && l["meter"] == json!(meter));
            let reported = line
                .and_then(|l| decimal(&l["reported"]))
                .unwrap_or_default();
            let difference = line
                .and_then(|l| decimal(&l["difference"]))
                .unwrap_or_default();
            let nothing = closed.is_zero() && accepted == 0 && reported.is_zero();
            if nothing && difference.is_zero() {
                continue;
            }
            println!(
                "      {:<7} {:<20} {:>16} {:>10} {:>10} {:>16} {:>16}",
                tenant.spec.id,
                meter,
                shown(&json!(closed.to_string())),
                due,
                accepted,
                shown(&json!(reported.to_string())),
                shown(&json!(difference.to_string())),
            );
            let what = format!("{}/{meter}", tenant.spec.id);
            if Decimal::from(accepted) != due {
                problems.push(format!(
                    "{what}: Stripe accepted {accepted} units, the closed hours make {due}"
                ));
            }
            if reported != closed {
                problems.push(format!(
                    "{what}: the ledger reports {reported}, the closed hours hold {closed}"
                ));
            }
            if let Some(line) = line {
                let accepted_line = line["unitsAccepted"].as_u64().unwrap_or(u64::MAX);
                let pending = line["unitsPending"].as_u64().unwrap_or(u64::MAX);
                let rejected = decimal(&line["rejected"]).unwrap_or(Decimal::ONE);
                if accepted_line != accepted || pending != 0 || !rejected.is_zero() {
                    problems.push(format!(
                        "{what}: reconciliation says {accepted_line} units accepted, {pending} pending, {rejected} rejected; Stripe has {accepted}"
                    ));
                }
                // What is not reported yet is the open hour's usage: never negative.
                if difference.is_zero() {
                    continue;
                }
                if difference.is_sign_negative() {
                    problems.push(format!("{what}: reported more than used ({difference})"));
                } else {
                    open += 1;
                }
            }
        }
    }
    println!(
        "    reconciliation: {} lines, {} differences, settled {}: {open} of them usage of the open hour {} (reported once it closes)",
        lines.len(),
        reconciliation["differences"],
        reconciliation["settled"],
        hour.key()
    );
    if !problems.is_empty() && Window::containing(Granularity::Hour, Utc::now()) != hour {
        return Ok(Checked::HourClosed(problems.join("; ")));
    }
    ensure!(
        problems.is_empty(),
        "Stripe and the usage disagree:\n  {}",
        problems.join("\n  ")
    );
    println!(
        "    ✓ Stripe's accepted units = the usage of every closed hour, in whole units; no identifier accepted twice; nothing pending or rejected"
    );
    Ok(Checked::Agrees(totals.values().sum()))
}

/// A meter's usage of the month's hours that closed before `open` (the hour in progress),
/// from `GET /v1/usage/history` with the tenant's key.
pub(super) async fn closed_hours_usage(
    api: &Api,
    tenant: &Tenant,
    meter: &str,
    month: Window,
    open: Window,
) -> Result<Decimal> {
    if open.start() <= month.start() {
        return Ok(Decimal::ZERO);
    }
    let path = format!(
        "/v1/usage/history?granularity=hour&meter={meter}&from={}&to={}",
        month.start().to_rfc3339_opts(SecondsFormat::Secs, true),
        open.start().to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    let history = api.get(&tenant.key, &path).await?;
    let open_key = open.key();
    let mut total = Decimal::ZERO;
    for row in history["rows"].as_array().into_iter().flatten() {
        // Keys of one granularity sort by time.
        if text_of(&row["window"]["key"]) >= open_key {
            continue;
        }
        total += decimal(&row["quantity"]).unwrap_or_default();
    }
    Ok(total)
}
