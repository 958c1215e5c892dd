//! Monoid laws for every aggregation, partition independence, serde, and edge cases.

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

use super::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap()
}

/// An observation that owns its strings, so strategies can generate it.
#[derive(Debug, Clone)]
struct Obs {
    time: DateTime<Utc>,
    event_id: String,
    value: Value,
}

#[derive(Debug, Clone)]
enum Value {
    None,
    Number(Decimal),
    Text(String),
}

impl Obs {
    fn borrow(&self) -> Observation<'_> {
        Observation {
            time: self.time,
            event_id: &self.event_id,
            value: match &self.value {
                Value::None => ObservedValue::None,
                Value::Number(n) => ObservedValue::Number(*n),
                Value::Text(t) => ObservedValue::Text(t),
            },
        }
    }
}

fn number(v: Decimal) -> Obs {
    Obs {
        time: t0(),
        event_id: "e".into(),
        value: Value::Number(v),
    }
}

fn aggregate(aggregation: &Aggregation, stream: &[Obs]) -> AggregateState {
    let mut state = AggregateState::identity(aggregation);
    for obs in stream {
        state.observe(aggregation, &obs.borrow()).unwrap();
    }
    state
}

fn all_aggregations() -> Vec<Aggregation> {
    vec![
        Aggregation::Count,
        Aggregation::Sum,
        Aggregation::Min,
        Aggregation::Max,
        Aggregation::Latest,
        Aggregation::Avg,
        Aggregation::UniqueCount,
        Aggregation::Percentiles,
        Aggregation::GaugeIntegral {
            sample_seconds: 60,
            per: IntegralPer::Hour,
        },
    ]
}

fn aggregation() -> impl Strategy<Value = Aggregation> {
    prop_oneof![
        Just(Aggregation::Count),
        Just(Aggregation::Sum),
        Just(Aggregation::Min),
        Just(Aggregation::Max),
        Just(Aggregation::Latest),
        Just(Aggregation::Avg),
        Just(Aggregation::UniqueCount),
        Just(Aggregation::Percentiles),
        (
            1u32..=3_600,
            prop_oneof![Just(IntegralPer::Hour), Just(IntegralPer::Month)]
        )
            .prop_map(|(sample_seconds, per)| Aggregation::GaugeIntegral {
                sample_seconds,
                per
            }),
    ]
}

fn decimal() -> impl Strategy<Value = Decimal> {
    prop_oneof![
        (-1_000_000i64..=1_000_000, 0u32..=4).prop_map(|(m, s)| Decimal::new(m, s)),
        (-5i64..=5).prop_map(Decimal::from),
    ]
}

/// Observations valid for `aggregation`, with few distinct times and event ids so that
/// `latest` ties and `unique_count` repeats happen often.
fn observation(aggregation: &Aggregation) -> impl Strategy<Value = Obs> + use<> {
    let value = match aggregation {
        Aggregation::Count => prop_oneof![
            Just(Value::None),
            decimal().prop_map(Value::Number),
            "[a-c]{0,2}".prop_map(Value::Text),
        ]
        .boxed(),
        Aggregation::UniqueCount => prop_oneof![
            decimal().prop_map(Value::Number),
            (-20i64..20, 0u32..3).prop_map(|(m, s)| Value::Number(Decimal::new(m, s))),
            "[a-e]{0,3}".prop_map(Value::Text),
        ]
        .boxed(),
        _ => decimal().prop_map(Value::Number).boxed(),
    };
    (
        0i64..20,
        prop::sample::select(vec!["a", "b", "c", "d"]),
        value,
    )
        .prop_map(|(seconds, id, value)| Obs {
            time: t0() + Duration::seconds(seconds),
            event_id: id.to_owned(),
            value,
        })
}

fn stream(aggregation: &Aggregation) -> impl Strategy<Value = Vec<Obs>> + use<> {
    prop::collection::vec(observation(aggregation), 0..40)
}

proptest! {
    #[test]
    fn merge_is_associative(
        (agg, a, b, c) in aggregation()
            .prop_flat_map(|agg| (Just(agg.clone()), stream(&agg), stream(&agg), stream(&agg)))
    ) {
        let (a, b, c) = (aggregate(&agg, &a), aggregate(&agg, &b), aggregate(&agg, &c));
        let left = a.clone().merged(&b).unwrap().merged(&c).unwrap();
        let right = a.merged(&b.merged(&c).unwrap()).unwrap();
        prop_assert_eq!(left, right);
    }

    #[test]
    fn merge_is_commutative(
        (agg, a, b) in aggregation().prop_flat_map(|agg| (Just(agg.clone()), stream(&agg), stream(&agg)))
    ) {
        let (a, b) = (aggregate(&agg, &a), aggregate(&agg, &b));
        prop_assert_eq!(a.clone().merged(&b).unwrap(), b.merged(&a).unwrap());
    }

    #[test]
    fn identity_is_neutral_on_both_sides(
        (agg, a) in aggregation().prop_flat_map(|agg| (Just(agg.clone()), stream(&agg)))
    ) {
        let a = aggregate(&agg, &a);
        let identity = AggregateState::identity(&agg);
        prop_assert!(identity.is_identity());
        prop_assert_eq!(&a.clone().merged(&identity).unwrap(), &a);
        prop_assert_eq!(&identity.merged(&a).unwrap(), &a);
    }

    #[test]
    fn merging_the_parts_of_any_partition_equals_aggregating_the_whole(
        (agg, tagged) in aggregation().prop_flat_map(|agg| (
            Just(agg.clone()),
            prop::collection::vec((observation(&agg), 0usize..5), 0..80),
        ))
    ) {
        let whole: Vec<Obs> = tagged.iter().map(|(obs, _)| obs.clone()).collect();
        let mut parts = vec![Vec::new(); 5];
        for (obs, part) in &tagged {
            parts[*part].push(obs.clone());
        }
        let states: Vec<AggregateState> = parts.iter().map(|p| aggregate(&agg, p)).collect();
        let forward = states
            .iter()
            .try_fold(AggregateState::identity(&agg), |acc, s| acc.merged(s))
            .unwrap();
        let backward = states
            .iter()
            .rev()
            .try_fold(AggregateState::identity(&agg), |acc, s| acc.merged(s))
            .unwrap();
        let expected = aggregate(&agg, &whole);
        prop_assert_eq!(&forward, &expected);
        prop_assert_eq!(&backward, &expected);
        prop_assert_eq!(forward.quantity(&agg), expected.quantity(&agg));
    }

    #[test]
    fn states_round_trip_through_json(
        (agg, a) in aggregation().prop_flat_map(|agg| (Just(agg.clone()), stream(&agg)))
    ) {
        let state = aggregate(&agg, &a);
        let json = serde_json::to_value(&state).unwrap();
        prop_assert_eq!(json.get("kind").and_then(|k| k.as_str()), Some(state.kind()));
        let back: AggregateState = serde_json::from_value(json).unwrap();
        prop_assert_eq!(back, state);
    }

    #[test]
    fn additive_parts_rebuild_the_state(
        (agg, a) in aggregation().prop_flat_map(|agg| (Just(agg.clone()), stream(&agg)))
    ) {
        let state = aggregate(&agg, &a);
        match state.additive_parts() {
            Some(parts) => {
                prop_assert!(state.is_additive());
                let rebuilt = AggregateState::from_additive_parts(&agg, &parts).unwrap();
                prop_assert_eq!(rebuilt, state);
            }
            None => prop_assert!(!state.is_additive()),
        }
    }

    #[test]
    fn additive_parts_of_a_merge_are_the_sums_of_the_parts(
        (agg, a, b) in aggregation().prop_flat_map(|agg| (Just(agg.clone()), stream(&agg), stream(&agg)))
    ) {
        let (a, b) = (aggregate(&agg, &a), aggregate(&agg, &b));
        if let (Some(pa), Some(pb)) = (a.additive_parts(), b.additive_parts()) {
            let merged = a.merged(&b).unwrap().additive_parts().unwrap();
            let added: Vec<(&str, Decimal)> =
                pa.iter().zip(&pb).map(|((n, x), (_, y))| (*n, x + y)).collect();
            prop_assert_eq!(merged, added);
        }
    }
}

#[test]
fn kinds_match_between_aggregations_states_and_serde_tags() -> TestResult {
    for agg in all_aggregations() {
        let state = AggregateState::identity(&agg);
        assert_eq!(agg.kind(), state.kind());
        assert!(agg.matches(&state));
        let agg_json = serde_json::to_value(&agg)?;
        let state_json = serde_json::to_value(&state)?;
        assert_eq!(agg_json["kind"], agg.kind());
        assert_eq!(state_json["kind"], state.kind());
        assert_eq!(serde_json::from_value::<Aggregation>(agg_json)?, agg);
    }
    Ok(())
}

#[test]
fn aggregations_serialise_as_documented() -> TestResult {
    assert_eq!(
        serde_json::to_string(&Aggregation::Sum)?,
        r#"{"kind":"sum"}"#
    );
    assert_eq!(
        serde_json::to_string(&Aggregation::UniqueCount)?,
        r#"{"kind":"unique_count"}"#
    );
    let gauge = Aggregation::GaugeIntegral {
        sample_seconds: 60,
        per: IntegralPer::Month,
    };
    let json = r#"{"kind":"gauge_integral","sampleSeconds":60,"per":"month"}"#;
    assert_eq!(serde_json::to_string(&gauge)?, json);
    assert_eq!(serde_json::from_str::<Aggregation>(json)?, gauge);
    let snake = r#"{"kind":"gauge_integral","sample_seconds":60,"per":"month"}"#;
    assert_eq!(serde_json::from_str::<Aggregation>(snake)?, gauge);
    let zero = r#"{"kind":"gauge_integral","sampleSeconds":0,"per":"hour"}"#;
    assert!(matches!(
        serde_json::from_str::<Aggregation>(zero)?,
        Aggregation::GaugeIntegral {
            sample_seconds: 0,
            ..
        }
    ));
    for bad in [
        r#"{"kind":"median"}"#,
        r#"{"kind":"sum","unexpected":1}"#,
        r#"{"kind":"sum","per":"hour"}"#,
        r#"{"kind":"gauge_integral","sampleSeconds":60}"#,
        r#"{"sampleSeconds":60,"per":"hour"}"#,
        r#"{"kind":"gauge_integral","sampleSeconds":-1,"per":"hour"}"#,
        r#"{"kind":"gauge_integral","sampleSeconds":60,"per":"day"}"#,
        r#"{"kind":"gauge_integral","sampleSeconds":60,"per":"hour","x":1}"#,
    ] {
        assert!(serde_json::from_str::<Aggregation>(bad).is_err(), "{bad}");
    }
    Ok(())
}

#[test]
fn states_serialise_compactly_with_decimal_strings() -> TestResult {
    let cases: Vec<(AggregateState, &str)> = vec![
        (AggregateState::Count { n: 3 }, r#"{"kind":"count","n":3}"#),
        (
            AggregateState::Sum { sum: dec!(1.50) },
            r#"{"kind":"sum","sum":"1.50"}"#,
        ),
        (
            AggregateState::Min { min: None },
            r#"{"kind":"min","min":null}"#,
        ),
        (
            AggregateState::Avg {
                sum: dec!(7),
                count: 2,
            },
            r#"{"kind":"avg","sum":"7","count":2}"#,
        ),
        (
            AggregateState::identity(&Aggregation::UniqueCount),
            r#"{"kind":"unique_count","precision":14,"sparse":""}"#,
        ),
        (
            AggregateState::identity(&Aggregation::Percentiles),
            r#"{"kind":"percentiles"}"#,
        ),
    ];
    for (state, json) in cases {
        assert_eq!(serde_json::to_string(&state)?, json);
        assert_eq!(serde_json::from_str::<AggregateState>(json)?, state);
    }
    for bad in [
        r#"{"kind":"count","n":3,"extra":true}"#,
        r#"{"kind":"count","n":-1}"#,
        r#"{"kind":"sum","sum":"abc"}"#,
        r#"{"kind":"unique_count","precision":14,"sparse":"","extra":1}"#,
        r#"{"kind":"percentiles","bogus":1}"#,
    ] {
        assert!(
            serde_json::from_str::<AggregateState>(bad).is_err(),
            "{bad}"
        );
    }
    Ok(())
}

#[test]
fn the_identity_of_every_aggregation_reports_as_documented() {
    let cases: Vec<(Aggregation, Option<Decimal>)> = vec![
        (Aggregation::Count, Some(dec!(0))),
        (Aggregation::Sum, Some(dec!(0))),
        (Aggregation::Min, None),
        (Aggregation::Max, None),
        (Aggregation::Latest, None),
        (Aggregation::Avg, None),
        (Aggregation::UniqueCount, Some(dec!(0))),
        (Aggregation::Percentiles, None),
        (
            Aggregation::GaugeIntegral {
                sample_seconds: 60,
                per: IntegralPer::Hour,
            },
            Some(dec!(0)),
        ),
    ];
    for (agg, expected) in cases {
        let state = AggregateState::identity(&agg);
        assert!(state.is_identity(), "{}", agg.kind());
        assert_eq!(state.quantity(&agg), expected, "{}", agg.kind());
    }
}

#[test]
fn quantities_of_small_streams() -> TestResult {
    let gauge_hour = Aggregation::GaugeIntegral {
        sample_seconds: 60,
        per: IntegralPer::Hour,
    };
    let values = [dec!(-2.5), dec!(4), dec!(1.0), dec!(-7)];
    let stream: Vec<Obs> = values.iter().copied().map(number).collect();
    let cases: Vec<(Aggregation, Option<Decimal>)> = vec![
        (Aggregation::Count, Some(dec!(4))),
        (Aggregation::Sum, Some(dec!(-4.5))),
        (Aggregation::Min, Some(dec!(-7))),
        (Aggregation::Max, Some(dec!(4))),
        (Aggregation::Avg, Some(dec!(-1.125))),
        (Aggregation::UniqueCount, Some(dec!(4))),
        (Aggregation::Percentiles, None),
        // (-2.5 + 4 + 1 - 7) × 60 s = -270 value-seconds = -0.075 value-hours.
        (gauge_hour, Some(dec!(-0.075))),
    ];
    for (agg, expected) in cases {
        let state = aggregate(&agg, &stream);
        assert_eq!(state.quantity(&agg), expected, "{}", agg.kind());
        assert!(!state.is_identity(), "{}", agg.kind());
    }
    Ok(())
}

#[test]
fn gauge_sixty_one_minute_samples_of_50_gb_are_50_gb_hours() {
    let agg = Aggregation::GaugeIntegral {
        sample_seconds: 60,
        per: IntegralPer::Hour,
    };
    let stream: Vec<Obs> = (0..60).map(|_| number(dec!(50))).collect();
    let state = aggregate(&agg, &stream);
    assert_eq!(state.quantity(&agg), Some(dec!(50)));
    assert_eq!(
        state,
        AggregateState::GaugeIntegral {
            value_seconds: dec!(180000),
            samples: 60
        }
    );
}

#[test]
fn gauge_730_hourly_samples_of_50_gb_are_50_gb_months() {
    let agg = Aggregation::GaugeIntegral {
        sample_seconds: 3_600,
        per: IntegralPer::Month,
    };
    let stream: Vec<Obs> = (0..730).map(|_| number(dec!(50))).collect();
    assert_eq!(aggregate(&agg, &stream).quantity(&agg), Some(dec!(50)));
    let as_hours = Aggregation::GaugeIntegral {
        sample_seconds: 3_600,
        per: IntegralPer::Hour,
    };
    assert_eq!(
        aggregate(&as_hours, &stream).quantity(&as_hours),
        Some(dec!(36500))
    );
}

#[test]
fn gauge_gaps_contribute_nothing() {
    let agg = Aggregation::GaugeIntegral {
        sample_seconds: 60,
        per: IntegralPer::Hour,
    };
    let stream: Vec<Obs> = (0..30).map(|_| number(dec!(50))).collect();
    assert_eq!(aggregate(&agg, &stream).quantity(&agg), Some(dec!(25)));
}

#[test]
fn latest_prefers_later_time_then_larger_event_id() {
    let at = |seconds: i64, id: &str, value: Decimal| Obs {
        time: t0() + Duration::seconds(seconds),
        event_id: id.into(),
        value: Value::Number(value),
    };
    let cases: Vec<(&str, Vec<Obs>, Decimal)> = vec![
        (
            "later time wins regardless of order",
            vec![at(5, "a", dec!(1)), at(3, "z", dec!(2))],
            dec!(1),
        ),
        (
            "same time: larger event id wins",
            vec![at(5, "b", dec!(1)), at(5, "a", dec!(2))],
            dec!(1),
        ),
        (
            "same time, same id: larger value wins",
            vec![
                at(5, "a", dec!(1)),
                at(5, "a", dec!(3)),
                at(5, "a", dec!(2)),
            ],
            dec!(3),
        ),
        (
            "negative values are values",
            vec![at(1, "a", dec!(9)), at(2, "a", dec!(-9))],
            dec!(-9),
        ),
    ];
    for (name, stream, expected) in cases {
        let forward = aggregate(&Aggregation::Latest, &stream);
        let reversed: Vec<Obs> = stream.iter().rev().cloned().collect();
        let backward = aggregate(&Aggregation::Latest, &reversed);
        assert_eq!(
            forward.quantity(&Aggregation::Latest),
            Some(expected),
            "{name}"
        );
        assert_eq!(forward, backward, "{name}");
    }
}

#[test]
fn avg_is_sum_over_count() {
    let stream: Vec<Obs> = [dec!(1), dec!(2), dec!(2)]
        .into_iter()
        .map(number)
        .collect();
    let state = aggregate(&Aggregation::Avg, &stream);
    assert_eq!(
        state,
        AggregateState::Avg {
            sum: dec!(5),
            count: 3
        }
    );
    let avg = state.quantity(&Aggregation::Avg).unwrap();
    assert_eq!(avg.round_dp(10), dec!(1.6666666667));
}

#[test]
fn unique_count_treats_equal_numbers_and_their_text_as_one_item() {
    let text = |t: &str| Obs {
        time: t0(),
        event_id: "e".into(),
        value: Value::Text(t.into()),
    };
    let stream = vec![
        number(dec!(1)),
        number(dec!(1.0)),
        number(dec!(1.000)),
        text("1"),
        number(dec!(-0)),
        number(dec!(0.00)),
        text("x"),
    ];
    let state = aggregate(&Aggregation::UniqueCount, &stream);
    assert_eq!(state.quantity(&Aggregation::UniqueCount), Some(dec!(3)));
}

#[test]
fn min_and_max_keep_one_representation_of_equal_values() {
    let a = aggregate(&Aggregation::Min, &[number(dec!(1.50))]);
    let b = aggregate(&Aggregation::Min, &[number(dec!(1.5))]);
    let ab = a.clone().merged(&b).unwrap();
    let ba = b.merged(&a).unwrap();
    assert_eq!(
        serde_json::to_string(&ab).unwrap(),
        serde_json::to_string(&ba).unwrap()
    );
}

#[test]
fn observations_without_the_value_they_need_are_rejected() {
    let none = Obs {
        time: t0(),
        event_id: "e".into(),
        value: Value::None,
    };
    let text = Obs {
        value: Value::Text("x".into()),
        ..none.clone()
    };
    for agg in all_aggregations() {
        let mut state = AggregateState::identity(&agg);
        let before = state.clone();
        match agg {
            Aggregation::Count => {
                state.observe(&agg, &none.borrow()).unwrap();
                state.observe(&agg, &text.borrow()).unwrap();
            }
            Aggregation::UniqueCount => {
                assert_eq!(
                    state.observe(&agg, &none.borrow()),
                    Err(AggregateError::NeedsValue)
                );
                assert_eq!(state, before);
            }
            _ => {
                for obs in [&none, &text] {
                    assert_eq!(
                        state.observe(&agg, &obs.borrow()),
                        Err(AggregateError::NeedsNumber {
                            aggregation: agg.kind()
                        })
                    );
                }
                assert_eq!(state, before);
            }
        }
    }
}

#[test]
fn mismatched_kinds_are_errors_not_panics() {
    let mut count = AggregateState::identity(&Aggregation::Count);
    let sum = AggregateState::identity(&Aggregation::Sum);
    assert_eq!(
        count.merge(&sum),
        Err(AggregateError::KindMismatch {
            expected: "count",
            found: "sum"
        })
    );
    assert_eq!(
        count.observe(&Aggregation::Sum, &number(dec!(1)).borrow()),
        Err(AggregateError::KindMismatch {
            expected: "sum",
            found: "count"
        })
    );
    assert_eq!(count.quantity(&Aggregation::Sum), None);
}

#[test]
fn overflow_is_an_error_and_leaves_the_state_unchanged() {
    let mut count = AggregateState::Count { n: u64::MAX };
    assert_eq!(
        count.merge(&AggregateState::Count { n: 1 }),
        Err(AggregateError::Overflow)
    );
    assert_eq!(count, AggregateState::Count { n: u64::MAX });

    let mut avg = AggregateState::Avg {
        sum: Decimal::ONE,
        count: u64::MAX,
    };
    let before = avg.clone();
    assert_eq!(
        avg.observe(&Aggregation::Avg, &number(dec!(1)).borrow()),
        Err(AggregateError::Overflow)
    );
    assert_eq!(avg, before);

    let mut sum = AggregateState::Sum { sum: Decimal::MAX };
    assert_eq!(
        sum.observe(&Aggregation::Sum, &number(Decimal::MAX).borrow()),
        Err(AggregateError::Overflow)
    );
}

#[test]
fn additive_parts_have_stable_names() {
    type Parts = Vec<(&'static str, Decimal)>;
    let cases: Vec<(AggregateState, Option<Parts>)> = vec![
        (AggregateState::Count { n: 4 }, Some(vec![("n", dec!(4))])),
        (
            AggregateState::Sum { sum: dec!(2.5) },
            Some(vec![("sum", dec!(2.5))]),
        ),
        (
            AggregateState::Avg {
                sum: dec!(9),
                count: 3,
            },
            Some(vec![("sum", dec!(9)), ("count", dec!(3))]),
        ),
        (
            AggregateState::GaugeIntegral {
                value_seconds: dec!(3600),
                samples: 1,
            },
            Some(vec![("value_seconds", dec!(3600)), ("samples", dec!(1))]),
        ),
        (AggregateState::Min { min: Some(dec!(1)) }, None),
        (AggregateState::identity(&Aggregation::UniqueCount), None),
    ];
    for (state, expected) in cases {
        assert_eq!(state.additive_parts(), expected, "{}", state.kind());
        assert_eq!(state.is_additive(), expected.is_some());
    }
}

#[test]
fn from_additive_parts_validates_its_input() {
    let avg = Aggregation::Avg;
    assert_eq!(
        AggregateState::from_additive_parts(&avg, &[("count", dec!(2))]),
        Ok(AggregateState::Avg {
            sum: dec!(0),
            count: 2
        })
    );
    let invalid: Vec<(Aggregation, Vec<(&str, Decimal)>)> = vec![
        (Aggregation::Avg, vec![("total", dec!(1))]),
        (Aggregation::Avg, vec![("sum", dec!(1)), ("sum", dec!(2))]),
        (Aggregation::Avg, vec![("count", dec!(1.5))]),
        (Aggregation::Avg, vec![("count", dec!(-1))]),
        (Aggregation::Count, vec![("n", dec!(1e20))]),
    ];
    for (agg, parts) in invalid {
        assert!(
            matches!(
                AggregateState::from_additive_parts(&agg, &parts),
                Err(AggregateError::InvalidPart { .. })
            ),
            "{parts:?}"
        );
    }
    assert_eq!(
        AggregateState::from_additive_parts(&Aggregation::Max, &[]),
        Err(AggregateError::NotAdditive { aggregation: "max" })
    );
    assert_eq!(
        AggregateState::from_additive_parts_of_kind("gauge_integral", &[("samples", dec!(2))]),
        Ok(AggregateState::GaugeIntegral {
            value_seconds: dec!(0),
            samples: 2
        })
    );
    assert_eq!(
        AggregateState::from_additive_parts_of_kind("median", &[]),
        Err(AggregateError::UnknownKind {
            kind: "median".into()
        })
    );
}

#[test]
fn a_zero_sample_interval_is_rejected_when_observing() {
    let agg = Aggregation::GaugeIntegral {
        sample_seconds: 0,
        per: IntegralPer::Hour,
    };
    let mut state = AggregateState::identity(&agg);
    assert!(matches!(
        state.observe(&agg, &number(dec!(1)).borrow()),
        Err(AggregateError::InvalidAggregation { .. })
    ));
}

#[test]
fn percentiles_report_through_the_sketch() {
    let stream: Vec<Obs> = (1..=100).map(|i| number(Decimal::from(i))).collect();
    let state = aggregate(&Aggregation::Percentiles, &stream);
    let AggregateState::Percentiles(sketch) = &state else {
        panic!("not a percentiles state");
    };
    let summary = sketch.summary().unwrap();
    for (estimate, truth) in [
        (summary.p50, dec!(50)),
        (summary.p95, dec!(95)),
        (summary.p99, dec!(99)),
    ] {
        assert!(
            (estimate - truth).abs() <= truth * dec!(0.01),
            "{estimate} vs {truth}"
        );
    }
}
