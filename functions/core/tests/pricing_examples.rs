//! Worked pricing examples from the product spec, each with its answer computed by hand.
//!
//! Every case is GIVEN a plan and a month of usage, WHEN the month is priced into an
//! invoice preview, THEN the lines and the total come out to the exact decimal amounts.

use std::collections::BTreeMap;
use std::error::Error;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::{Value, json};
use tollgate_core::ids::{MeterName, TenantId};
use tollgate_core::invoice::{InvoiceError, InvoicePreview, LineItem, preview_invoice};
use tollgate_core::money::Currency;
use tollgate_core::plan::{Plan, PlanChange, PlanConfig, PlanTimeline, PriceConfig};
use tollgate_core::pricing::price_quantity;
use tollgate_core::window::{Granularity, Window};

type TestResult = Result<(), Box<dyn Error>>;

fn plan(config: Value) -> Result<Plan, Box<dyn Error>> {
    Ok(serde_json::from_value::<PlanConfig>(config)?.compile()?)
}

fn usage(quantities: &[(&str, Decimal)]) -> Result<BTreeMap<MeterName, Decimal>, Box<dyn Error>> {
    quantities
        .iter()
        .map(|(meter, quantity)| Ok((MeterName::new(*meter)?, *quantity)))
        .collect()
}

fn month(key: &str) -> Result<Window, Box<dyn Error>> {
    Ok(Window::parse_key(Granularity::Month, key)?)
}

fn at(rfc3339: &str) -> Result<DateTime<Utc>, Box<dyn Error>> {
    Ok(DateTime::parse_from_rfc3339(rfc3339)?.with_timezone(&Utc))
}

fn tenant() -> Result<TenantId, Box<dyn Error>> {
    Ok(TenantId::new("acme")?)
}

/// Prices `quantities` for November 2026 under `plan` alone.
fn invoice(plan: &Plan, quantities: &[(&str, Decimal)]) -> Result<InvoicePreview, Box<dyn Error>> {
    Ok(preview_invoice(
        &tenant()?,
        month("2026-11")?,
        &PlanTimeline::single(plan),
        &usage(quantities)?,
    )?)
}

/// The rounded amount of the usage line of `meter`.
fn line(invoice: &InvoicePreview, meter: &str) -> Option<Decimal> {
    invoice.lines.iter().find_map(|line| match &line.item {
        LineItem::Usage(charge) if charge.meter.as_str() == meter => Some(line.amount),
        LineItem::Unpriced(usage) if usage.meter.as_str() == meter => Some(line.amount),
        _ => None,
    })
}

fn per_unit(price: &str) -> Value {
    json!({ "type": "perUnit", "unitPrice": price })
}

fn per_package(size: &str, price: &str) -> Value {
    json!({ "type": "perPackage", "packageSize": size, "packagePrice": price })
}

// ---------------------------------------------------------------------------------------
// A pod billed per hour
// ---------------------------------------------------------------------------------------

fn pod_plan() -> Result<Plan, Box<dyn Error>> {
    plan(json!({
        "name": "pod", "effectiveFrom": "2026-01-01T00:00:00Z", "currency": "USD",
        "baseFee": "0",
        "meters": [
            { "meter": "vcpu_hours", "price": per_unit("0.01") },
            { "meter": "memory_gb_hours", "price": per_unit("0.005") },
            { "meter": "disk_gb_months", "price": per_unit("0.10") },
            { "meter": "network_out_gb", "price": per_unit("0.05") },
            { "meter": "network_in_gb", "price": per_unit("0") }
        ]
    }))
}

#[test]
fn a_pod_running_all_month_costs_its_hourly_resources() -> TestResult {
    // GIVEN a pod of 2 vCPU, 4 GB memory and a 50 GB disk running 730 hours
    let pod = pod_plan()?;
    let cases = [
        // network out, expected total
        (dec!(0), dec!(34.20)),
        // 12 GB × 0.05 = 0.60 more
        (dec!(12), dec!(34.80)),
    ];
    for (network_out, total) in cases {
        // WHEN the month is priced
        let invoice = invoice(
            &pod,
            &[
                ("vcpu_hours", dec!(1460)),      // 2 vCPU × 730 h
                ("memory_gb_hours", dec!(2920)), // 4 GB × 730 h
                ("disk_gb_months", dec!(50)),
                ("network_out_gb", network_out),
                ("network_in_gb", dec!(250)),
            ],
        )?;
        // THEN each resource costs its rate × quantity and inbound traffic is free
        assert_eq!(line(&invoice, "vcpu_hours"), Some(dec!(14.60))); // 1460 × 0.01
        assert_eq!(line(&invoice, "memory_gb_hours"), Some(dec!(14.60))); // 2920 × 0.005
        assert_eq!(line(&invoice, "disk_gb_months"), Some(dec!(5.00))); // 50 × 0.10
        assert_eq!(line(&invoice, "network_in_gb"), Some(dec!(0.00)));
        assert_eq!(invoice.total, total, "network out {network_out} GB");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Request plans: monthly fee, included requests, overage per started 1,000
// ---------------------------------------------------------------------------------------

fn request_plan(
    name: &str,
    fee: &str,
    included: &str,
    per_1k: Option<&str>,
) -> Result<Plan, Box<dyn Error>> {
    let meter = match per_1k {
        Some(price) => json!({ "meter": "api_requests", "included": included,
                               "price": per_package("1000", price) }),
        None => json!({ "meter": "api_requests", "included": included, "overage": "hardLimit" }),
    };
    plan(json!({
        "name": name, "effectiveFrom": "2026-01-01T00:00:00Z", "currency": "USD",
        "baseFee": fee, "meters": [meter]
    }))
}

fn free() -> Result<Plan, Box<dyn Error>> {
    request_plan("free", "0", "10000", None)
}

fn starter() -> Result<Plan, Box<dyn Error>> {
    request_plan("starter", "29", "100000", Some("0.50"))
}

fn professional() -> Result<Plan, Box<dyn Error>> {
    request_plan("professional", "99", "500000", Some("0.30"))
}

fn enterprise() -> Result<Plan, Box<dyn Error>> {
    request_plan("enterprise", "499", "5000000", Some("0.10"))
}

#[test]
fn request_plans_charge_each_started_thousand_beyond_the_allowance() -> TestResult {
    let cases = [
        // plan, requests, total
        (starter()?, dec!(0), dec!(29.00)),
        (starter()?, dec!(100000), dec!(29.00)),
        (starter()?, dec!(100001), dec!(29.50)), // 1 started thousand
        (starter()?, dec!(101000), dec!(29.50)), // exactly 1 thousand
        (starter()?, dec!(101001), dec!(30.00)), // 2 started thousands
        (professional()?, dec!(500000), dec!(99.00)),
        (professional()?, dec!(500001), dec!(99.30)),
        (professional()?, dec!(750000), dec!(174.00)), // 250 × 0.30 = 75
        (enterprise()?, dec!(5000000), dec!(499.00)),
        (enterprise()?, dec!(5000500), dec!(499.10)),
        (enterprise()?, dec!(6234567), dec!(622.50)), // ceil(1234.567) = 1235 × 0.10 = 123.50
    ];
    for (plan, requests, total) in cases {
        let invoice = invoice(&plan, &[("api_requests", requests)])?;
        assert_eq!(invoice.total, total, "{} at {requests}", plan.name());
    }
    Ok(())
}

#[test]
fn the_free_plan_never_charges_and_reports_usage_beyond_its_hard_limit() -> TestResult {
    // GIVEN the free plan's hard limit of 10,000 requests and a 2,500-request overshoot
    let invoice = invoice(&free()?, &[("api_requests", dec!(12500))])?;
    // THEN nothing is billed and the overshoot is visible on the line
    assert_eq!(invoice.total, dec!(0.00));
    let Some(LineItem::Usage(charge)) = invoice
        .lines
        .iter()
        .map(|l| &l.item)
        .find(|item| matches!(item, LineItem::Usage(c) if c.meter.as_str() == "api_requests"))
    else {
        return Err("no api_requests line".into());
    };
    assert_eq!(charge.billable, dec!(0));
    assert_eq!(charge.over_limit, dec!(2500));
    assert!(charge.price.is_none());
    // AND the monthly quota the edge enforces is the allowance
    let free = free()?;
    assert_eq!(
        free.quota(&MeterName::new("api_requests")?).per_month(),
        Some(dec!(10000))
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// A media plan
// ---------------------------------------------------------------------------------------

#[test]
fn the_pro_media_plan_adds_every_meter_to_its_base_fee() -> TestResult {
    let pro_media = plan(json!({
        "name": "pro-media", "effectiveFrom": "2026-01-01T00:00:00Z", "currency": "USD",
        "baseFee": "49",
        "meters": [
            { "meter": "participant_minutes", "price": per_unit("0.004") },
            { "meter": "egress_minutes", "price": per_unit("0.012") },
            { "meter": "storage_gb", "price": per_unit("0.10") },
            { "meter": "bandwidth_gb", "price": per_unit("0.05") },
            { "meter": "api_requests", "price": per_package("1000", "0.001") }
        ]
    }))?;
    let invoice = invoice(
        &pro_media,
        &[
            ("participant_minutes", dec!(50000)),
            ("egress_minutes", dec!(5000)),
            ("storage_gb", dec!(50)),
            ("bandwidth_gb", dec!(500)),
            ("api_requests", dec!(500000)),
        ],
    )?;
    assert_eq!(line(&invoice, "participant_minutes"), Some(dec!(200.00))); // 50,000 × 0.004
    assert_eq!(line(&invoice, "egress_minutes"), Some(dec!(60.00))); // 5,000 × 0.012
    assert_eq!(line(&invoice, "storage_gb"), Some(dec!(5.00))); // 50 × 0.10
    assert_eq!(line(&invoice, "bandwidth_gb"), Some(dec!(25.00))); // 500 × 0.05
    assert_eq!(line(&invoice, "api_requests"), Some(dec!(0.50))); // 500 × 0.001
    assert_eq!(invoice.total, dec!(339.50)); // 49 + 200 + 60 + 5 + 25 + 0.50
    Ok(())
}

// ---------------------------------------------------------------------------------------
// IoT starter: "10 GB traffic" is one allowance shared by MQTT and HTTP
// ---------------------------------------------------------------------------------------

/// The IoT starter plan. Its "10 GB traffic" is a shared allowance over both transports,
/// drawn by HTTP first (the dearer one, which favours the customer), then by MQTT.
fn iot_starter() -> Result<Plan, Box<dyn Error>> {
    plan(json!({
        "name": "iot-starter", "effectiveFrom": "2026-01-01T00:00:00Z", "currency": "USD",
        "baseFee": "29",
        "meters": [
            { "meter": "devices", "included": "10", "price": per_unit("2") },
            { "meter": "mqtt_gb", "price": per_unit("0.10") },
            { "meter": "http_gb", "price": per_unit("0.15") },
            { "meter": "storage_gb_months", "included": "5", "price": per_unit("0.20") },
            { "meter": "api_requests", "price": per_package("1000", "0.50") }
        ],
        "sharedAllowances": [
            { "name": "traffic", "included": "10", "meters": ["http_gb", "mqtt_gb"] }
        ]
    }))
}

#[test]
fn iot_traffic_draws_on_one_shared_allowance_dearest_transport_first() -> TestResult {
    // GIVEN 14 devices, 12 GB MQTT, 3 GB HTTP, 7.5 GB storage and 2,500 API requests
    let invoice = invoice(
        &iot_starter()?,
        &[
            ("devices", dec!(14)),
            ("mqtt_gb", dec!(12)),
            ("http_gb", dec!(3)),
            ("storage_gb_months", dec!(7.5)),
            ("api_requests", dec!(2500)),
        ],
    )?;
    assert_eq!(line(&invoice, "devices"), Some(dec!(8.00))); // (14 - 10) × 2
    assert_eq!(line(&invoice, "http_gb"), Some(dec!(0.00))); // 3 GB drawn from the 10 shared
    assert_eq!(line(&invoice, "mqtt_gb"), Some(dec!(0.50))); // 12 - 7 remaining shared = 5 × 0.10
    assert_eq!(line(&invoice, "storage_gb_months"), Some(dec!(0.50))); // (7.5 - 5) × 0.20
    assert_eq!(line(&invoice, "api_requests"), Some(dec!(1.50))); // ceil(2.5) = 3 × 0.50
    assert_eq!(invoice.total, dec!(39.50)); // 29 + 8 + 0.50 + 0.50 + 1.50

    // GIVEN more HTTP than MQTT: HTTP draws 6, MQTT the remaining 4 of 8
    let invoice = invoice_iot(&[("mqtt_gb", dec!(8)), ("http_gb", dec!(6))])?;
    assert_eq!(line(&invoice, "mqtt_gb"), Some(dec!(0.40))); // (8 - 4) × 0.10
    assert_eq!(invoice.total, dec!(29.40));
    Ok(())
}

fn invoice_iot(quantities: &[(&str, Decimal)]) -> Result<InvoicePreview, Box<dyn Error>> {
    invoice(&iot_starter()?, quantities)
}

// ---------------------------------------------------------------------------------------
// Tiers
// ---------------------------------------------------------------------------------------

/// 0–1,000 free; 1,000–10,000 at 0.01; 10,000–100,000 at 0.008 plus 5 flat; above at 0.005.
fn tiers(mode: &str) -> Value {
    json!({ "type": "tiered", "mode": mode, "tiers": [
        { "upTo": "1000", "unitPrice": "0" },
        { "upTo": "10000", "unitPrice": "0.01" },
        { "upTo": "100000", "unitPrice": "0.008", "flatFee": "5" },
        { "upTo": null, "unitPrice": "0.005" }
    ] })
}

fn price_of(price: Value, quantity: Decimal) -> Result<Decimal, Box<dyn Error>> {
    let price = serde_json::from_value::<PriceConfig>(price)?.compile()?;
    Ok(price_quantity(&price, quantity)?.amount)
}

#[test]
fn graduated_tiers_price_each_tier_at_its_own_rate() -> TestResult {
    let cases = [
        (dec!(0), dec!(0)),
        (dec!(1000), dec!(0)),    // all inside the free tier
        (dec!(1001), dec!(0.01)), // 1 unit in tier 2
        (dec!(10000), dec!(90)),  // 9,000 × 0.01
        // 90 + (1 × 0.008 + 5 flat) = 95.008
        (dec!(10001), dec!(95.008)),
        // 0 + 9,000 × 0.01 + (90,000 × 0.008 + 5) + 50,000 × 0.005 = 90 + 725 + 250
        (dec!(150000), dec!(1065)),
    ];
    for (quantity, amount) in cases {
        assert_eq!(
            price_of(tiers("graduated"), quantity)?,
            amount,
            "{quantity}"
        );
    }
    Ok(())
}

#[test]
fn volume_tiers_price_every_unit_at_the_tier_that_holds_the_quantity() -> TestResult {
    let cases = [
        (dec!(0), dec!(0)),
        (dec!(1000), dec!(0)),       // tier 1
        (dec!(1001), dec!(10.01)),   // tier 2: 1,001 × 0.01
        (dec!(10000), dec!(100)),    // the bound belongs to tier 2: 10,000 × 0.01
        (dec!(10001), dec!(85.008)), // tier 3: 10,001 × 0.008 + 5
        (dec!(150000), dec!(750)),   // tier 4: 150,000 × 0.005
    ];
    for (quantity, amount) in cases {
        assert_eq!(price_of(tiers("volume"), quantity)?, amount, "{quantity}");
    }
    Ok(())
}

#[test]
fn package_tiers_charge_started_packages_per_tier() -> TestResult {
    // Up to 100 units in packages of 10 at 1; beyond, packages of 50 at 3.
    let packaged = || {
        json!({ "type": "tiered", "mode": "graduated", "tiers": [
            { "upTo": "100", "packageSize": "10", "packagePrice": "1" },
            { "packageSize": "50", "packagePrice": "3" }
        ] })
    };
    let cases = [
        (dec!(1), dec!(1)),    // 1 started package of 10
        (dec!(100), dec!(10)), // 10 packages
        (dec!(101), dec!(13)), // 10 + 1 started package of 50 at 3
        (dec!(137), dec!(13)), // 10 + ceil(37 / 50) = 1 × 3
        (dec!(151), dec!(16)), // 10 + ceil(51 / 50) = 2 × 3
    ];
    for (quantity, amount) in cases {
        assert_eq!(price_of(packaged(), quantity)?, amount, "{quantity}");
    }
    // In volume mode the whole quantity uses one tier's packages: 137 → ceil(137/50) × 3 = 9
    let volume = json!({ "type": "tiered", "mode": "volume", "tiers": [
        { "upTo": "100", "packageSize": "10", "packagePrice": "1" },
        { "packageSize": "50", "packagePrice": "3" }
    ] });
    assert_eq!(price_of(volume, dec!(137))?, dec!(9));
    Ok(())
}

#[test]
fn tiers_count_from_the_first_billable_unit_after_the_allowance() -> TestResult {
    // GIVEN 5,000 included and the graduated tiers: 16,000 used is 11,000 billable
    let tiered = plan(json!({
        "name": "tiered", "effectiveFrom": "2026-01-01T00:00:00Z", "currency": "USD",
        "baseFee": "10",
        "meters": [ { "meter": "api_requests", "included": "5000", "price": tiers("graduated") } ]
    }))?;
    let invoice = invoice(&tiered, &[("api_requests", dec!(16000))])?;
    // 9,000 × 0.01 + (1,000 × 0.008 + 5) = 90 + 13 = 103; plus the 10 base fee
    assert_eq!(line(&invoice, "api_requests"), Some(dec!(103.00)));
    assert_eq!(invoice.total, dec!(113.00));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Rounding
// ---------------------------------------------------------------------------------------

#[test]
fn each_line_is_rounded_half_even_once() -> TestResult {
    let tiny = plan(json!({
        "name": "tiny", "effectiveFrom": "2026-01-01T00:00:00Z", "currency": "USD",
        "baseFee": "0",
        "meters": [
            { "meter": "a", "price": per_unit("0.0025") },
            { "meter": "b", "price": per_unit("0.0025") },
            { "meter": "c", "price": per_unit("0.0027") }
        ]
    }))?;
    let invoice = invoice(&tiny, &[("a", dec!(50)), ("b", dec!(50)), ("c", dec!(50))])?;
    assert_eq!(line(&invoice, "a"), Some(dec!(0.12))); // 0.125 → 0.12 (to even)
    assert_eq!(line(&invoice, "b"), Some(dec!(0.12)));
    assert_eq!(line(&invoice, "c"), Some(dec!(0.14))); // 0.135 → 0.14 (to even)
    // The total adds rounded lines: 0.12 + 0.12 + 0.14, not round(0.125 + 0.125 + 0.135)
    assert_eq!(invoice.total, dec!(0.38));
    Ok(())
}

#[test]
fn yen_invoices_have_no_decimals() -> TestResult {
    let yen = plan(json!({
        "name": "yen", "effectiveFrom": "2026-01-01T00:00:00Z", "currency": "JPY",
        "baseFee": "1500",
        "meters": [
            { "meter": "a", "price": per_unit("0.5") },
            { "meter": "b", "price": per_unit("0.5") }
        ]
    }))?;
    let invoice = invoice(&yen, &[("a", dec!(5)), ("b", dec!(7))])?;
    assert_eq!(invoice.currency, Currency::JPY);
    assert_eq!(line(&invoice, "a"), Some(dec!(2))); // 2.5 → 2
    assert_eq!(line(&invoice, "b"), Some(dec!(4))); // 3.5 → 4
    assert_eq!(invoice.total.to_string(), "1506");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Proration
// ---------------------------------------------------------------------------------------

fn base_fees(invoice: &InvoicePreview) -> Vec<(String, Decimal)> {
    invoice
        .lines
        .iter()
        .filter_map(|line| match &line.item {
            LineItem::BaseFee(fee) => Some((fee.plan.to_string(), line.amount)),
            _ => None,
        })
        .collect()
}

#[test]
fn an_upgrade_mid_november_prorates_both_base_fees_by_the_second() -> TestResult {
    // GIVEN starter from before November and professional from 11 November 00:00 (30-day month)
    let (starter, professional) = (starter()?, professional()?);
    let timeline = PlanTimeline::new(vec![
        PlanChange {
            from: at("2026-10-01T00:00:00Z")?,
            plan: &starter,
        },
        PlanChange {
            from: at("2026-11-11T00:00:00Z")?,
            plan: &professional,
        },
    ])?;
    // WHEN 600,000 requests are priced
    let invoice = preview_invoice(
        &tenant()?,
        month("2026-11")?,
        &timeline,
        &usage(&[("api_requests", dec!(600000))])?,
    )?;
    // THEN starter pays 10/30 and professional 20/30 of their fees
    assert_eq!(
        base_fees(&invoice),
        vec![
            ("starter".to_owned(), dec!(9.67)),       // 29 × 10/30 = 9.666…
            ("professional".to_owned(), dec!(66.00)), // 99 × 20/30
        ]
    );
    // AND the usage is priced by the plan in force at month end: 100 started thousands × 0.30
    assert_eq!(invoice.plan.as_str(), "professional");
    assert_eq!(line(&invoice, "api_requests"), Some(dec!(30.00)));
    assert_eq!(invoice.total, dec!(105.67));
    Ok(())
}

#[test]
fn an_upgrade_in_a_leap_february_uses_its_29_days() -> TestResult {
    let (starter, professional) = (starter()?, professional()?);
    let cases = [
        // switch instant, starter fee, professional fee
        // 29 × 14/29 = 14; 99 × 15/29 = 51.2068…
        ("2024-02-15T00:00:00Z", dec!(14.00), dec!(51.21)),
        // 29 × 9.5/29 = 9.5; 99 × 19.5/29 = 66.5689…
        ("2024-02-10T12:00:00Z", dec!(9.50), dec!(66.57)),
    ];
    for (switch, starter_fee, professional_fee) in cases {
        let timeline = PlanTimeline::new(vec![
            PlanChange {
                from: at("2024-01-01T00:00:00Z")?,
                plan: &starter,
            },
            PlanChange {
                from: at(switch)?,
                plan: &professional,
            },
        ])?;
        let invoice = preview_invoice(&tenant()?, month("2024-02")?, &timeline, &BTreeMap::new())?;
        assert_eq!(
            base_fees(&invoice),
            vec![
                ("starter".to_owned(), starter_fee),
                ("professional".to_owned(), professional_fee)
            ],
            "switch at {switch}"
        );
        assert_eq!(invoice.total, starter_fee + professional_fee);
    }
    Ok(())
}

#[test]
fn a_new_price_version_takes_effect_on_its_effective_date() -> TestResult {
    // GIVEN starter at 29, then a new version at 35 from 16 November 00:00
    let versions = vec![
        starter()?,
        plan(json!({
            "name": "starter", "effectiveFrom": "2026-11-16T00:00:00Z", "currency": "USD",
            "baseFee": "35",
            "meters": [ { "meter": "api_requests", "included": "100000",
                          "price": per_package("1000", "0.50") } ]
        }))?,
    ];
    let timeline = PlanTimeline::from_versions(&versions)?;
    let invoice = preview_invoice(&tenant()?, month("2026-11")?, &timeline, &BTreeMap::new())?;
    // 29 × 15/30 + 35 × 15/30 = 14.50 + 17.50
    assert_eq!(invoice.total, dec!(32.00));
    Ok(())
}

#[test]
fn a_tenant_that_joins_mid_month_pays_only_from_then() -> TestResult {
    let starter = starter()?;
    let timeline = PlanTimeline::new(vec![PlanChange {
        from: at("2026-11-21T00:00:00Z")?,
        plan: &starter,
    }])?;
    let invoice = preview_invoice(&tenant()?, month("2026-11")?, &timeline, &BTreeMap::new())?;
    assert_eq!(invoice.total, dec!(9.67)); // 29 × 10/30
    // AND a month before the tenant joined has no plan to price it
    assert!(matches!(
        preview_invoice(&tenant()?, month("2026-10")?, &timeline, &BTreeMap::new()),
        Err(InvoiceError::NoPlanInPeriod { .. })
    ));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Unpriced usage and the JSON shape
// ---------------------------------------------------------------------------------------

#[test]
fn usage_the_plan_does_not_price_gets_a_zero_line_instead_of_vanishing() -> TestResult {
    let invoice = invoice(
        &starter()?,
        &[("api_requests", dec!(100001)), ("gpu_hours", dec!(3))],
    )?;
    let unpriced: Vec<_> = invoice
        .lines
        .iter()
        .filter(|line| line.is_unpriced())
        .collect();
    assert_eq!(unpriced.len(), 1);
    assert_eq!(unpriced[0].amount, dec!(0.00));
    assert_eq!(invoice.total, dec!(29.50));
    Ok(())
}

#[test]
fn an_invoice_preview_serialises_amounts_as_decimal_strings() -> TestResult {
    let invoice = invoice(
        &starter()?,
        &[("api_requests", dec!(100001)), ("gpu_hours", dec!(3))],
    )?;
    let json = serde_json::to_value(&invoice)?;
    assert_eq!(json["tenant"], "acme");
    assert_eq!(json["currency"], "USD");
    assert_eq!(json["total"], "29.50");
    assert_eq!(json["lines"][0]["kind"], "baseFee");
    assert_eq!(json["lines"][0]["amount"], "29.00");
    assert_eq!(json["lines"][1]["kind"], "usage");
    assert_eq!(json["lines"][1]["billable"], "1");
    assert_eq!(json["lines"][1]["price"]["type"], "perPackage");
    assert_eq!(json["lines"][2]["kind"], "unpriced");
    assert_eq!(json["lines"][2]["meter"], "gpu_hours");
    let back: InvoicePreview = serde_json::from_value(json)?;
    assert_eq!(back, invoice);
    Ok(())
}

#[test]
fn negative_usage_and_periods_other_than_months_are_refused() -> TestResult {
    let starter = starter()?;
    let timeline = PlanTimeline::single(&starter);
    let negative = preview_invoice(
        &tenant()?,
        month("2026-11")?,
        &timeline,
        &usage(&[("api_requests", dec!(-1))])?,
    );
    assert!(matches!(negative, Err(InvoiceError::NegativeUsage { .. })));
    let day = Window::parse_key(Granularity::Day, "2026-11-03")?;
    let not_a_month = preview_invoice(&tenant()?, day, &timeline, &BTreeMap::new());
    assert!(matches!(not_a_month, Err(InvoiceError::NotAMonth { .. })));
    Ok(())
}
