//! Properties of the pricing maths that must hold for every input, not just the examples.

use std::collections::BTreeMap;
use std::error::Error;

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tollgate_core::ids::{MeterName, TenantId};
use tollgate_core::invoice::preview_invoice;
use tollgate_core::plan::{Plan, PlanChange, PlanConfig, PlanTimeline, Price, PriceConfig};
use tollgate_core::pricing::{price_quantity, prorate_base_fees, proration};
use tollgate_core::window::{Granularity, Window};

/// A non-negative decimal with up to `max_scale` decimal places.
fn decimal(max_mantissa: i64, max_scale: u32) -> impl Strategy<Value = Decimal> {
    (0..=max_mantissa, 0..=max_scale).prop_map(|(m, s)| Decimal::new(m, s))
}

/// A tier list: widths become ascending bounds, the last tier is unbounded.
#[derive(Debug, Clone)]
struct Tiers {
    bounds: Vec<Decimal>,
    unit_prices: Vec<Decimal>,
    flat_fees: Vec<Decimal>,
}

fn tiers() -> impl Strategy<Value = Tiers> {
    (1usize..6).prop_flat_map(|n| {
        (
            prop::collection::vec(decimal(100_000, 2), n - 1),
            prop::collection::vec(decimal(10_000, 4), n),
            prop::collection::vec(decimal(1_000, 2), n),
        )
            .prop_map(|(widths, unit_prices, flat_fees)| {
                let bounds = widths
                    .iter()
                    .scan(Decimal::ZERO, |bound, width| {
                        *bound += *width + Decimal::ONE;
                        Some(*bound)
                    })
                    .collect();
                Tiers {
                    bounds,
                    unit_prices,
                    flat_fees,
                }
            })
    })
}

impl Tiers {
    fn price(&self, mode: &str) -> Result<Price, Box<dyn Error>> {
        let tiers: Vec<Value> = self
            .unit_prices
            .iter()
            .zip(&self.flat_fees)
            .enumerate()
            .map(|(i, (unit_price, flat_fee))| {
                json!({
                    "upTo": self.bounds.get(i).map(Decimal::to_string),
                    "unitPrice": unit_price.to_string(),
                    "flatFee": flat_fee.to_string(),
                })
            })
            .collect();
        let config: PriceConfig =
            serde_json::from_value(json!({ "type": "tiered", "mode": mode, "tiers": tiers }))?;
        Ok(config.compile()?)
    }
}

fn month(year: i32, month: u32) -> Option<Window> {
    let start = Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0).single()?;
    Some(Window::containing(Granularity::Month, start))
}

fn plan(name: &str, base_fee: Decimal, meters: Value) -> Result<Plan, Box<dyn Error>> {
    let config: PlanConfig = serde_json::from_value(json!({
        "name": name, "effectiveFrom": "2000-01-01T00:00:00Z", "currency": "USD",
        "baseFee": base_fee.to_string(), "meters": meters
    }))?;
    Ok(config.compile()?)
}

proptest! {
    #[test]
    fn graduated_price_never_falls_as_quantity_grows(
        tiers in tiers(),
        a in decimal(50_000_000, 3),
        b in decimal(50_000_000, 3),
    ) {
        let price = tiers.price("graduated").unwrap();
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        let low_amount = price_quantity(&price, low).unwrap().amount;
        let high_amount = price_quantity(&price, high).unwrap().amount;
        prop_assert!(low_amount <= high_amount, "{low} → {low_amount}, {high} → {high_amount}");
    }

    #[test]
    fn graduated_price_is_the_sum_of_its_tier_pieces(
        tiers in tiers(),
        quantity in decimal(50_000_000, 3),
    ) {
        let priced = price_quantity(&tiers.price("graduated").unwrap(), quantity).unwrap();
        let pieces: Decimal = priced.tiers.iter().map(|t| t.amount).sum();
        let units: Decimal = priced.tiers.iter().map(|t| t.quantity).sum();
        prop_assert_eq!(priced.amount, pieces);
        prop_assert_eq!(units, quantity);
        // Each piece is its quantity at its tier's rate plus its flat fee.
        for piece in &priced.tiers {
            let i = piece.tier - 1;
            prop_assert_eq!(
                piece.amount,
                piece.quantity * tiers.unit_prices[i] + tiers.flat_fees[i]
            );
        }
    }

    #[test]
    fn volume_price_at_a_tier_bound_uses_the_tier_that_bound_closes(
        tiers in tiers(),
        pick in any::<prop::sample::Index>(),
    ) {
        prop_assume!(!tiers.bounds.is_empty());
        let i = pick.index(tiers.bounds.len());
        let bound = tiers.bounds[i];
        let price = tiers.price("volume").unwrap();
        let at_bound = price_quantity(&price, bound).unwrap();
        prop_assert_eq!(at_bound.tiers.len(), 1);
        prop_assert_eq!(at_bound.tiers[0].tier, i + 1);
        prop_assert_eq!(at_bound.amount, bound * tiers.unit_prices[i] + tiers.flat_fees[i]);
        // One more unit moves the whole quantity into the next tier.
        let above = bound + Decimal::ONE;
        let next = price_quantity(&price, above).unwrap();
        prop_assert_eq!(next.tiers[0].tier, i + 2);
        prop_assert_eq!(next.amount, above * tiers.unit_prices[i + 1] + tiers.flat_fees[i + 1]);
    }

    #[test]
    fn per_package_amount_is_started_packages_times_price(
        quantity in 0u64..10_000_000_000,
        size in 1u64..100_000,
        package_price in decimal(100_000, 4),
    ) {
        let config: PriceConfig = serde_json::from_value(json!({
            "type": "perPackage",
            "packageSize": size.to_string(),
            "packagePrice": package_price.to_string(),
        })).unwrap();
        let amount = price_quantity(&config.compile().unwrap(), Decimal::from(quantity)).unwrap().amount;
        prop_assert_eq!(amount, Decimal::from(quantity.div_ceil(size)) * package_price);
    }

    #[test]
    fn proration_shares_of_a_month_add_up_to_exactly_one(
        year in 1970i32..2200,
        month_number in 1u32..=12,
        splits in prop::collection::vec(0i64..=1_000_000, 1..5),
        base_fee in decimal(1_000_000, 2),
    ) {
        let period = month(year, month_number).unwrap();
        let seconds = period.duration().num_seconds();
        let mut offsets: Vec<i64> = splits.iter().map(|s| s * seconds / 1_000_000).collect();
        offsets.sort_unstable();
        offsets.dedup();
        let instants: Vec<DateTime<Utc>> =
            offsets.iter().map(|o| period.start() + Duration::seconds(*o)).collect();

        // The raw shares of the stretches between split points telescope to the month.
        let mut edges = vec![period.start()];
        edges.extend(instants.iter().copied());
        edges.push(period.end());
        let shares: Vec<_> = edges.windows(2).map(|w| proration(w[0], w[1], period)).collect();
        prop_assert_eq!(shares.iter().map(|s| s.active_seconds).sum::<i64>(), seconds);
        let fractions: Decimal = shares.iter().map(|s| s.fraction()).sum();
        prop_assert_eq!(fractions.round_dp(20), Decimal::ONE);

        // The same fee split over consecutive plans prorates back to the whole fee.
        let same_fee = plan("p", base_fee, json!([])).unwrap();
        let mut changes = vec![PlanChange { from: period.start() - Duration::days(1), plan: &same_fee }];
        changes.extend(instants.iter().filter(|t| **t > period.start()).map(|t| PlanChange { from: *t, plan: &same_fee }));
        let timeline = PlanTimeline::new(changes).unwrap();
        let fees = prorate_base_fees(&timeline, period).unwrap();
        prop_assert_eq!(fees.iter().map(|f| f.proration.active_seconds).sum::<i64>(), seconds);
        let total: Decimal = fees.iter().map(|f| f.amount).sum();
        prop_assert_eq!(total.round_dp(20), base_fee);
    }

    #[test]
    fn an_invoice_total_is_the_sum_of_its_rounded_lines(
        quantities in prop::collection::vec(decimal(10_000_000, 3), 4),
        base_fee in decimal(100_000, 2),
        switch_second in 1i64..2_592_000,
    ) {
        let meters = json!([
            { "meter": "a", "included": "100", "price": { "type": "perUnit", "unitPrice": "0.0037" } },
            { "meter": "b", "price": { "type": "perPackage", "packageSize": "1000", "packagePrice": "0.33" } },
            { "meter": "c", "price": { "type": "tiered", "mode": "graduated", "tiers": [
                { "upTo": "10", "unitPrice": "0.125", "flatFee": "0.005" }, { "unitPrice": "0.0625" } ] } }
        ]);
        let before = plan("before", base_fee, meters.clone()).unwrap();
        let after = plan("after", base_fee + Decimal::new(1999, 2), meters).unwrap();
        let november = month(2026, 11).unwrap();
        let timeline = PlanTimeline::new(vec![
            PlanChange { from: november.start() - Duration::days(3), plan: &before },
            PlanChange { from: november.start() + Duration::seconds(switch_second), plan: &after },
        ]).unwrap();
        let usage: BTreeMap<MeterName, Decimal> = ["a", "b", "c", "unpriced"]
            .iter()
            .zip(&quantities)
            .map(|(meter, q)| (MeterName::new(*meter).unwrap(), *q))
            .collect();
        let invoice = preview_invoice(&TenantId::new("t").unwrap(), november, &timeline, &usage).unwrap();
        let sum: Decimal = invoice.lines.iter().map(|line| line.amount).sum();
        prop_assert_eq!(invoice.total, sum);
        prop_assert_eq!(invoice.subtotal, sum);
        for line in &invoice.lines {
            prop_assert_eq!(line.amount.scale(), 2);
        }
        prop_assert_eq!(invoice.lines.len(), 6);
    }
}
