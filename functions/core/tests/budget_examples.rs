//! Budgets: threshold crossings, severities, the hard-limit verdict and the month-end forecast.

use std::collections::BTreeSet;
use std::error::Error;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::json;
use tollgate_core::budget::{
    Budget, BudgetVerdict, Outlook, Severity, Threshold, ThresholdCrossing, crossed, evaluate,
    forecast, newly_crossed, percent_used, verdict,
};
use tollgate_core::money::Currency;
use tollgate_core::window::{Granularity, Window};

type TestResult = Result<(), Box<dyn Error>>;

fn at(rfc3339: &str) -> Result<DateTime<Utc>, Box<dyn Error>> {
    Ok(DateTime::parse_from_rfc3339(rfc3339)?.with_timezone(&Utc))
}

fn month_of(t: DateTime<Utc>) -> Window {
    Window::containing(Granularity::Month, t)
}

fn threshold(percent: u16) -> Result<Threshold, Box<dyn Error>> {
    Ok(Threshold::new(percent).ok_or("threshold out of range")?)
}

fn crossing(percent: u16, severity: Severity) -> Result<ThresholdCrossing, Box<dyn Error>> {
    Ok(ThresholdCrossing {
        threshold: threshold(percent)?,
        severity,
    })
}

fn hundred_dollars() -> Result<Budget, Box<dyn Error>> {
    Ok(Budget::new(dec!(100), Currency::USD)?)
}

#[test]
fn default_thresholds_cross_at_50_80_and_100_percent() -> TestResult {
    let budget = hundred_dollars()?;
    let cases = [
        (dec!(0), vec![]),
        (dec!(49.99), vec![]),
        (dec!(50), vec![crossing(50, Severity::Info)?]),
        (
            dec!(80),
            vec![
                crossing(50, Severity::Info)?,
                crossing(80, Severity::Warning)?,
            ],
        ),
        (
            dec!(100),
            vec![
                crossing(50, Severity::Info)?,
                crossing(80, Severity::Warning)?,
                crossing(100, Severity::Critical)?,
            ],
        ),
    ];
    for (spent, expected) in cases {
        assert_eq!(crossed(&budget, spent), expected, "spent {spent}");
        assert_eq!(
            newly_crossed(&budget, spent, &BTreeSet::new()),
            expected,
            "spent {spent}"
        );
    }
    Ok(())
}

#[test]
fn thresholds_already_alerted_are_not_crossed_again() -> TestResult {
    // GIVEN 50 % was alerted earlier this month, WHEN spend reaches 85 %
    let budget = hundred_dollars()?;
    let alerted = BTreeSet::from([threshold(50)?]);
    // THEN only 80 % is newly crossed
    assert_eq!(
        newly_crossed(&budget, dec!(85), &alerted),
        vec![crossing(80, Severity::Warning)?]
    );
    // AND with 50 and 80 alerted, nothing is new until 100 %
    let alerted = BTreeSet::from([threshold(50)?, threshold(80)?]);
    assert!(newly_crossed(&budget, dec!(99.99), &alerted).is_empty());
    assert_eq!(
        newly_crossed(&budget, dec!(250), &alerted),
        vec![crossing(100, Severity::Critical)?]
    );
    Ok(())
}

#[test]
fn severities_follow_the_configured_levels() -> TestResult {
    // Defaults: info below 80, warning from 80, critical from 95.
    let defaults = hundred_dollars()?;
    for (percent, severity) in [
        (1, Severity::Info),
        (79, Severity::Info),
        (80, Severity::Warning),
        (94, Severity::Warning),
        (95, Severity::Critical),
        (150, Severity::Critical),
    ] {
        assert_eq!(
            defaults.severities().severity_of(threshold(percent)?),
            severity,
            "{percent} %"
        );
    }
    // Configured: warning from 60, critical from 90, with a 120 % threshold.
    let budget: Budget = serde_json::from_value(json!({
        "monthlyAmount": "1000", "currency": "USD",
        "thresholds": [120, 25, 60, 75, 90],
        "severities": { "warningAt": 60, "criticalAt": 90 }
    }))?;
    assert_eq!(
        crossed(&budget, dec!(1300)),
        vec![
            crossing(25, Severity::Info)?,
            crossing(60, Severity::Warning)?,
            crossing(75, Severity::Warning)?,
            crossing(90, Severity::Critical)?,
            crossing(120, Severity::Critical)?,
        ]
    );
    Ok(())
}

#[test]
fn a_hard_limit_blocks_from_100_percent() -> TestResult {
    let soft = hundred_dollars()?;
    let hard = hundred_dollars()?.with_hard_limit(true);
    let cases = [
        (dec!(99.99), BudgetVerdict::Allow, BudgetVerdict::Allow),
        (dec!(100), BudgetVerdict::Allow, BudgetVerdict::Block),
        (dec!(150), BudgetVerdict::Allow, BudgetVerdict::Block),
    ];
    for (spent, without_limit, with_limit) in cases {
        assert_eq!(verdict(&soft, spent), without_limit, "soft at {spent}");
        assert_eq!(verdict(&hard, spent), with_limit, "hard at {spent}");
    }
    Ok(())
}

#[test]
fn percent_used_is_truncated_so_it_never_shows_100_too_early() -> TestResult {
    let budget = hundred_dollars()?;
    assert_eq!(percent_used(&budget, dec!(99.999)), dec!(99.99));
    assert_eq!(percent_used(&budget, dec!(100)), dec!(100));
    let odd = Budget::new(dec!(30), Currency::USD)?;
    assert_eq!(percent_used(&odd, dec!(10)), dec!(33.33)); // 33.333…
    Ok(())
}

#[test]
fn the_forecast_extrapolates_the_run_rate_to_month_end() -> TestResult {
    // GIVEN a 100 USD budget, nine days into November (30 days)
    let budget = hundred_dollars()?;
    let now = at("2026-11-10T00:00:00Z")?;
    let november = month_of(now);
    let cases = [
        // spent, projected spend, projected percent, outlook
        // 40 / 9 days × 30 = 133.33…; 100 is reached after 100 × 9 / 40 = 22.5 days → day 23
        (
            dec!(40),
            dec!(133.33),
            dec!(133.33),
            Outlook::OnTrackToExceed { day: 23 },
        ),
        // 20 / 9 × 30 = 66.66…
        (dec!(20), dec!(66.67), dec!(66.66), Outlook::WithinBudget),
        (dec!(0), dec!(0), dec!(0), Outlook::WithinBudget),
        (dec!(100), dec!(333.33), dec!(333.33), Outlook::Exceeded),
    ];
    for (spent, projected, percent, outlook) in cases {
        let f = forecast(&budget, spent, now, november);
        assert_eq!(f.projected_spend, projected, "spent {spent}");
        assert_eq!(f.projected_percent, percent, "spent {spent}");
        assert_eq!(f.outlook, outlook, "spent {spent}");
    }
    Ok(())
}

#[test]
fn the_forecast_counts_the_days_of_a_leap_february() -> TestResult {
    // GIVEN 290 USD, ten days into February 2024 (29 days)
    let budget = Budget::new(dec!(290), Currency::USD)?;
    let now = at("2024-02-11T00:00:00Z")?;
    let february = month_of(now);
    // 100 in 10 days is 10 a day: exactly 290 at the month's end, which is not exceeding it
    let on_budget = forecast(&budget, dec!(100), now, february);
    assert_eq!(on_budget.projected_spend, dec!(290.00));
    assert_eq!(on_budget.outlook, Outlook::WithinBudget);
    // 101 in 10 days reaches 290 after 290 × 10 / 101 = 28.71 days: on day 29
    let over = forecast(&budget, dec!(101), now, february);
    assert_eq!(over.outlook, Outlook::OnTrackToExceed { day: 29 });
    // 145 in 10 days reaches it after exactly 20 days: at the start of day 21
    let fast = forecast(&budget, dec!(145), now, february);
    assert_eq!(fast.outlook, Outlook::OnTrackToExceed { day: 21 });
    Ok(())
}

#[test]
fn evaluate_bundles_usage_verdict_forecast_and_crossings() -> TestResult {
    let budget = hundred_dollars()?.with_hard_limit(true);
    let now = at("2026-11-10T00:00:00Z")?;
    let evaluation = evaluate(&budget, dec!(85), now, month_of(now));
    assert_eq!(evaluation.percent_used, dec!(85));
    assert_eq!(evaluation.verdict, BudgetVerdict::Allow);
    // 100 × 9 / 85 = 10.588 days → day 11
    assert_eq!(
        evaluation.forecast.outlook,
        Outlook::OnTrackToExceed { day: 11 }
    );
    assert_eq!(
        evaluation.crossed,
        vec![
            crossing(50, Severity::Info)?,
            crossing(80, Severity::Warning)?
        ]
    );
    let json = serde_json::to_value(&evaluation)?;
    assert_eq!(json["verdict"], "allow");
    assert_eq!(json["percentUsed"], "85");
    assert_eq!(
        json["forecast"]["outlook"],
        json!({ "status": "onTrackToExceed", "day": 11 })
    );
    assert_eq!(
        json["crossed"][1],
        json!({ "threshold": 80, "severity": "warning" })
    );

    let blocked = evaluate(&budget, Decimal::ONE_HUNDRED, now, month_of(now));
    assert_eq!(blocked.verdict, BudgetVerdict::Block);
    assert_eq!(blocked.forecast.outlook, Outlook::Exceeded);
    Ok(())
}
