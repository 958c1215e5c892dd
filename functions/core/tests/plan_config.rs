//! Plan and budget configuration: bad configs report every problem at once, with paths.

use std::error::Error;

use serde_json::{Value, json};
use tollgate_core::budget::{BudgetConfig, Threshold};
use tollgate_core::plan::{ConfigError, PlanConfig, ProblemKind};

type TestResult = Result<(), Box<dyn Error>>;

fn problems_of_plan(config: Value) -> Result<ConfigError, Box<dyn Error>> {
    match serde_json::from_value::<PlanConfig>(config)?.compile() {
        Ok(_) => Err("the plan compiled".into()),
        Err(error) => Ok(error),
    }
}

fn paths(error: &ConfigError) -> Vec<&str> {
    error.problems().iter().map(|p| p.path.as_str()).collect()
}

#[test]
fn a_bad_plan_reports_every_problem_with_its_path() -> TestResult {
    // GIVEN a plan with mistakes in almost every section
    let error = problems_of_plan(json!({
        "name": "bad plan",
        "effectiveFrom": "2026-01-01T00:00:00Z",
        "currency": "XYZ",
        "baseFee": "-5",
        "meters": [
            { "meter": "api_requests", "price": { "type": "tiered", "mode": "graduated", "tiers": [
                { "upTo": "1000", "unitPrice": "0.01" },
                { "upTo": "500", "unitPrice": "-0.02" },
                { "upTo": null, "unitPrice": "0.005", "packageSize": "10", "packagePrice": "1" }
            ] } },
            { "meter": "api_requests", "price": { "type": "perUnit", "unitPrice": "1" } },
            { "meter": "storage", "price": { "type": "perPackage", "packageSize": "0", "packagePrice": "1" } },
            { "meter": "seats", "overage": "hardLimit", "price": { "type": "perUnit", "unitPrice": "1" } },
            { "meter": "exports" }
        ],
        "sharedAllowances": [
            { "name": "traffic", "included": "10", "meters": ["seats", "missing", "storage"] }
        ],
        "limits": {
            "rate": { "perSecond": 0 },
            "quotas": [
                { "meter": "storage", "perDay": "-1" },
                { "meter": "exports", "perMonth": "10" },
                { "meter": "exports", "perMonth": "20" }
            ]
        }
    }))?;
    // WHEN it is compiled, THEN every problem is reported at once, in document order
    assert_eq!(
        paths(&error),
        vec![
            "name",
            "currency",
            "baseFee",
            "meters[0].price.tiers[1].upTo",
            "meters[0].price.tiers[1].unitPrice",
            "meters[0].price.tiers[2]",
            "meters[1].meter",
            "meters[2].price.packageSize",
            "meters[3].price",
            "meters[4].price",
            "sharedAllowances[0].meters[0]",
            "sharedAllowances[0].meters[1]",
            "limits.rate.perSecond",
            "limits.quotas[0].perDay",
            "limits.quotas[2].meter",
        ]
    );
    let kinds: Vec<&ProblemKind> = error.problems().iter().map(|p| &p.kind).collect();
    assert!(matches!(kinds[0], ProblemKind::InvalidId(_)));
    assert!(matches!(kinds[1], ProblemKind::UnknownCurrency(_)));
    assert!(matches!(kinds[2], ProblemKind::Negative { .. }));
    assert!(matches!(kinds[3], ProblemKind::TiersNotAscending { .. }));
    assert!(matches!(kinds[4], ProblemKind::Negative { .. }));
    assert!(matches!(kinds[5], ProblemKind::TierRate));
    assert!(
        matches!(kinds[6], ProblemKind::Duplicate { first_at, .. } if first_at == "meters[0].meter")
    );
    assert!(matches!(kinds[7], ProblemKind::NotPositive { .. }));
    assert!(matches!(kinds[8], ProblemKind::PriceWithHardLimit));
    assert!(matches!(kinds[9], ProblemKind::PriceMissing));
    assert!(matches!(kinds[10], ProblemKind::SharedWithHardLimit { .. }));
    assert!(matches!(kinds[11], ProblemKind::UnknownMeter { .. }));
    assert!(matches!(kinds[12], ProblemKind::ZeroRateLimit));
    assert!(matches!(kinds[13], ProblemKind::Negative { .. }));
    assert!(matches!(kinds[14], ProblemKind::Duplicate { .. }));
    // AND the message names every path
    let message = error.to_string();
    assert!(message.starts_with("invalid configuration (15 problems)"));
    assert!(message.contains("meters[0].price.tiers[1].upTo: tier bounds must ascend"));
    Ok(())
}

#[test]
fn tier_lists_need_ascending_bounds_and_exactly_one_unbounded_last_tier() -> TestResult {
    let tiered = |tiers: Value| {
        json!({
            "name": "p", "effectiveFrom": "2026-01-01T00:00:00Z", "currency": "USD", "baseFee": "0",
            "meters": [ { "meter": "m", "price": { "type": "tiered", "mode": "volume", "tiers": tiers } } ]
        })
    };
    let cases = [
        (json!([]), "meters[0].price.tiers"),
        (
            json!([{ "upTo": "10", "unitPrice": "1" }]),
            "meters[0].price.tiers[0].upTo",
        ),
        (
            json!([{ "unitPrice": "1" }, { "unitPrice": "2" }]),
            "meters[0].price.tiers[0].upTo",
        ),
        (
            json!([{ "upTo": "0", "unitPrice": "1" }, { "unitPrice": "2" }]),
            "meters[0].price.tiers[0].upTo",
        ),
        (
            json!([{ "upTo": "10", "unitPrice": "1" }, { "upTo": "10", "unitPrice": "1" }, { "unitPrice": "2" }]),
            "meters[0].price.tiers[1].upTo",
        ),
        (
            json!([{ "upTo": "10", "flatFee": "-1", "unitPrice": "1" }, { "unitPrice": "2" }]),
            "meters[0].price.tiers[0].flatFee",
        ),
        (json!([{ "packageSize": "10" }]), "meters[0].price.tiers[0]"),
    ];
    for (tiers, path) in cases {
        let error = problems_of_plan(tiered(tiers.clone()))?;
        assert_eq!(paths(&error), vec![path], "tiers {tiers}");
    }
    Ok(())
}

#[test]
fn plans_refuse_unknown_fields_float_money_and_negative_limits_while_parsing() {
    let base = || json!({ "name": "p", "effectiveFrom": "2026-01-01T00:00:00Z", "currency": "USD", "baseFee": "0" });
    let mut typo = base();
    typo["baseFees"] = json!("1");
    assert!(serde_json::from_value::<PlanConfig>(typo).is_err());

    let mut float = base();
    float["baseFee"] = json!(29.99);
    assert!(serde_json::from_value::<PlanConfig>(float).is_err());

    let mut minus_one = base();
    minus_one["limits"] = json!({ "rate": { "perMinute": -1 } });
    assert!(serde_json::from_value::<PlanConfig>(minus_one).is_err());

    let mut unknown_price_field = base();
    unknown_price_field["meters"] =
        json!([{ "meter": "m", "price": { "type": "perUnit", "unitPrice": "1", "per": "1000" } }]);
    assert!(serde_json::from_value::<PlanConfig>(unknown_price_field).is_err());
}

#[test]
fn absent_limits_are_unlimited() -> TestResult {
    let plan = serde_json::from_value::<PlanConfig>(json!({
        "name": "p", "effectiveFrom": "2026-01-01T00:00:00Z", "currency": "USD", "baseFee": "0",
        "limits": { "rate": { "perMinute": 600 } }
    }))?
    .compile()?;
    let limits: Vec<_> = plan
        .rate_limits()
        .limits()
        .map(|(period, n)| (period.seconds(), n.get()))
        .collect();
    assert_eq!(limits, vec![(60, 600)]);
    assert!(plan.rate_limits().per_second.is_none());
    assert!(plan.quota(&"api_requests".parse()?).is_unlimited());
    Ok(())
}

#[test]
fn a_bad_budget_reports_every_problem_with_its_path() -> TestResult {
    let config: BudgetConfig = serde_json::from_value(json!({
        "monthlyAmount": "0",
        "currency": "usd",
        "thresholds": [50, 0, 50, 1200],
        "severities": { "warningAt": 96, "criticalAt": 95 }
    }))?;
    let Err(error) = config.compile() else {
        return Err("the budget compiled".into());
    };
    assert_eq!(
        paths(&error),
        vec![
            "monthlyAmount",
            "currency",
            "thresholds[1]",
            "thresholds[2]",
            "thresholds[3]",
            "severities"
        ]
    );
    assert!(matches!(
        &error.problems()[3].kind,
        ProblemKind::Duplicate { first_at, .. } if first_at == "thresholds[0]"
    ));
    assert!(matches!(
        error.problems()[5].kind,
        ProblemKind::SeverityOrder {
            warning: 96,
            critical: 95
        }
    ));
    Ok(())
}

#[test]
fn a_budget_defaults_to_50_80_100_without_a_hard_limit() -> TestResult {
    let budget = serde_json::from_value::<BudgetConfig>(
        json!({ "monthlyAmount": "250", "currency": "EUR" }),
    )?
    .compile()?;
    let thresholds: Vec<u16> = budget.thresholds().iter().map(|t| t.percent()).collect();
    assert_eq!(thresholds, vec![50, 80, 100]);
    assert!(!budget.hard_limit());
    assert_eq!(
        budget.severities().warning_at,
        Threshold::new(80).ok_or("80")?
    );
    let json = serde_json::to_value(&budget)?;
    assert_eq!(json["monthlyAmount"], "250");
    assert_eq!(json["severities"]["criticalAt"], 95);
    Ok(())
}
