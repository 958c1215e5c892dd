//! Meters: which events count towards what, and how.
//!
//! A meter takes the events of some CloudEvents `type`s, reads a value from a field of
//! their `data`, groups by optional dimensions and folds the values with an
//! [`Aggregation`]. Meters are configured as JSON and compiled once into a
//! [`MeterCatalog`]; compiling reports every problem in the configuration at once.
//!
//! An event is measured by every meter that takes its type, all or nothing: if one meter
//! cannot read its value, the whole event is rejected with that reason, so an event is
//! never half counted. An event that no meter takes is rejected too; usage that is
//! accepted and then counted nowhere is exactly the silent loss this system exists to
//! prevent.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::aggregate::{Aggregation, ObservedValue};
use crate::billing::{StripeMeter, StripeMeterConfig};
use crate::config::{ConfigError, ProblemKind, Problems, field, index};
use crate::event::{UsageEvent, json_type};
use crate::ids::MeterName;
use crate::usage::{DimensionError, Dimensions};

/// A meter as written in configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeterConfig {
    pub name: String,
    /// CloudEvents `type`s this meter takes.
    pub event_types: Vec<String>,
    /// Dotted path into `data` (`bytes`, `usage.gb`). Not needed for `count`.
    #[serde(default)]
    pub value_field: Option<String>,
    pub aggregation: Aggregation,
    /// The unit of the meter's quantity, for people (`requests`, `GB-hours`).
    pub unit: String,
    /// Fields of `data` to group by (`route`, `method`, `region`…).
    #[serde(default)]
    pub group_by: Vec<String>,
    /// How the meter is reported to Stripe Billing Meters; not reported without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripe: Option<StripeMeterConfig>,
}

/// A validated meter.
#[derive(Debug, Clone, PartialEq)]
pub struct Meter {
    pub name: MeterName,
    pub event_types: BTreeSet<String>,
    pub value_field: Option<FieldPath>,
    pub aggregation: Aggregation,
    pub unit: String,
    pub group_by: Vec<FieldPath>,
    pub stripe: Option<StripeMeter>,
}

/// A dotted path into an event's `data` object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    text: String,
    segments: Vec<String>,
}

impl FieldPath {
    pub fn parse(text: &str) -> Option<FieldPath> {
        let segments: Vec<String> = text.split('.').map(str::to_owned).collect();
        if text.is_empty() || segments.iter().any(|s| s.is_empty()) {
            return None;
        }
        Some(FieldPath {
            text: text.to_owned(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn lookup<'a>(&self, data: &'a serde_json::Map<String, Value>) -> Option<&'a Value> {
        let (first, rest) = self.segments.split_first()?;
        rest.iter()
            .try_fold(data.get(first)?, |value, segment| value.get(segment))
    }
}

/// Why an event could not be measured.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum MeterError {
    #[error("no meter takes events of type {event_type:?}")]
    NoMeterForType { event_type: String },
    #[error("meter {meter}: data field `{field}` is missing")]
    MissingValue { meter: MeterName, field: String },
    #[error("meter {meter}: data field `{field}` must be {expected}, found {found}")]
    WrongValueType {
        meter: MeterName,
        field: String,
        expected: &'static str,
        found: String,
    },
    #[error("meter {meter}: dimension `{field}`: {source}")]
    BadDimension {
        meter: MeterName,
        field: String,
        #[source]
        source: DimensionError,
    },
}

impl MeterError {
    /// A stable, machine-readable code for APIs and rejected-event records.
    pub fn code(&self) -> &'static str {
        match self {
            MeterError::NoMeterForType { .. } => "no_meter_for_type",
            MeterError::MissingValue { .. } => "missing_value",
            MeterError::WrongValueType { .. } => "wrong_value_type",
            MeterError::BadDimension { .. } => "bad_dimension",
        }
    }
}

/// What one meter reads from one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement<'e> {
    pub meter: &'e Meter,
    pub dimensions: Dimensions,
    pub value: ObservedValue<'e>,
}

impl Meter {
    /// Reads this meter's value and dimensions from `event`.
    pub fn measure<'e>(&'e self, event: &'e UsageEvent) -> Result<Measurement<'e>, MeterError> {
        let value = match (&self.aggregation, &self.value_field) {
            (Aggregation::Count, None) => ObservedValue::None,
            (_, None) => ObservedValue::None,
            (aggregation, Some(field)) => {
                let raw = field
                    .lookup(&event.data)
                    .ok_or_else(|| MeterError::MissingValue {
                        meter: self.name.clone(),
                        field: field.as_str().to_owned(),
                    })?;
                self.read_value(aggregation, field, raw)?
            }
        };
        let mut dimensions = Dimensions::default();
        for field in &self.group_by {
            let Some(raw) = field.lookup(&event.data) else {
                continue;
            };
            let text = match raw {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    return Err(MeterError::WrongValueType {
                        meter: self.name.clone(),
                        field: field.as_str().to_owned(),
                        expected: "a string, number or boolean",
                        found: json_type(other).to_owned(),
                    });
                }
            };
            dimensions.insert(field.as_str(), &text).map_err(|source| {
                MeterError::BadDimension {
                    meter: self.name.clone(),
                    field: field.as_str().to_owned(),
                    source,
                }
            })?;
        }
        Ok(Measurement {
            meter: self,
            dimensions,
            value,
        })
    }

    fn read_value<'e>(
        &self,
        aggregation: &Aggregation,
        field: &FieldPath,
        raw: &'e Value,
    ) -> Result<ObservedValue<'e>, MeterError> {
        let wrong = |expected: &'static str| MeterError::WrongValueType {
            meter: self.name.clone(),
            field: field.as_str().to_owned(),
            expected,
            found: json_type(raw).to_owned(),
        };
        match aggregation {
            Aggregation::UniqueCount => match raw {
                Value::String(s) => Ok(ObservedValue::Text(s)),
                Value::Number(_) => decimal_from_json(raw)
                    .map(ObservedValue::Number)
                    .ok_or_else(|| wrong("a string or a number")),
                _ => Err(wrong("a string or a number")),
            },
            Aggregation::Count => Ok(ObservedValue::None),
            _ => decimal_from_json(raw)
                .map(ObservedValue::Number)
                .ok_or_else(|| wrong("a number or a decimal string")),
        }
    }
}

/// Reads an exact decimal from a JSON number or a decimal string (`"12.50"`).
///
/// JSON numbers pass through serde_json's `f64` when they have a fraction, which keeps
/// about 15 significant digits exact; producers that need more send a string.
pub fn decimal_from_json(value: &Value) -> Option<Decimal> {
    let text = match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_owned(),
        _ => return None,
    };
    Decimal::from_str_exact(&text)
        .ok()
        .or_else(|| Decimal::from_scientific(&text).ok())
        .or_else(|| Decimal::from_str(&text).ok())
}

/// Every configured meter, indexed by the event types they take.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MeterCatalog {
    meters: BTreeMap<MeterName, Meter>,
    by_type: BTreeMap<String, Vec<MeterName>>,
}

impl MeterCatalog {
    /// Validates `configs`, reporting every problem at once.
    pub fn compile(configs: &[MeterConfig]) -> Result<MeterCatalog, ConfigError> {
        let mut problems = Problems::default();
        let mut catalog = MeterCatalog::default();
        let mut first_seen: BTreeMap<MeterName, String> = BTreeMap::new();
        for (i, config) in configs.iter().enumerate() {
            let base = index("meters", i);
            let at = |name: &str| field(&base, name);
            let name = problems.meter(at("name"), &config.name);
            if let Some(name) = &name {
                match first_seen.get(name) {
                    Some(first_at) => problems.report(
                        at("name"),
                        ProblemKind::Duplicate {
                            value: name.to_string(),
                            first_at: first_at.clone(),
                        },
                    ),
                    None => {
                        first_seen.insert(name.clone(), at("name"));
                    }
                }
            }
            if config.event_types.is_empty() {
                problems.report(at("eventTypes"), ProblemKind::Empty);
            }
            for (j, event_type) in config.event_types.iter().enumerate() {
                if event_type.trim().is_empty() {
                    problems.report(index(&at("eventTypes"), j), ProblemKind::Empty);
                }
            }
            let value_field = match &config.value_field {
                None => {
                    if !matches!(config.aggregation, Aggregation::Count) {
                        problems.report(
                            at("valueField"),
                            ProblemKind::ValueFieldMissing {
                                aggregation: config.aggregation.kind(),
                            },
                        );
                    }
                    None
                }
                Some(text) => {
                    let parsed = FieldPath::parse(text);
                    if parsed.is_none() {
                        problems.report(
                            at("valueField"),
                            ProblemKind::BadFieldPath {
                                value: text.clone(),
                            },
                        );
                    }
                    parsed
                }
            };
            if let Aggregation::GaugeIntegral { sample_seconds, .. } = config.aggregation
                && sample_seconds == 0
            {
                problems.report(
                    at("aggregation.sampleSeconds"),
                    ProblemKind::ZeroSampleSeconds,
                );
            }
            if config.unit.trim().is_empty() {
                problems.report(at("unit"), ProblemKind::Empty);
            }
            let mut group_by: Vec<FieldPath> = Vec::new();
            for (j, text) in config.group_by.iter().enumerate() {
                let path = index(&at("groupBy"), j);
                match FieldPath::parse(text) {
                    Some(parsed) => match group_by.iter().position(|p| *p == parsed) {
                        Some(first) => problems.report(
                            path,
                            ProblemKind::Duplicate {
                                value: text.clone(),
                                first_at: index(&at("groupBy"), first),
                            },
                        ),
                        None => group_by.push(parsed),
                    },
                    None => problems.report(
                        path,
                        ProblemKind::BadFieldPath {
                            value: text.clone(),
                        },
                    ),
                }
            }
            let stripe = config.stripe.as_ref().and_then(|stripe| {
                stripe.compile(&at("stripe"), &config.aggregation, &mut problems)
            });
            if let Some(name) = name {
                for event_type in &config.event_types {
                    catalog
                        .by_type
                        .entry(event_type.clone())
                        .or_default()
                        .push(name.clone());
                }
                catalog.meters.entry(name.clone()).or_insert(Meter {
                    name,
                    event_types: config.event_types.iter().cloned().collect(),
                    value_field,
                    aggregation: config.aggregation.clone(),
                    unit: config.unit.clone(),
                    group_by,
                    stripe,
                });
            }
        }
        problems.finish(Some(catalog))
    }

    /// Parses and compiles a JSON array of meter configurations.
    pub fn from_json(json: &str) -> Result<MeterCatalog, ConfigError> {
        let configs: Vec<MeterConfig> =
            serde_json::from_str(json).map_err(|e| ConfigError::syntax(&e))?;
        MeterCatalog::compile(&configs)
    }

    pub fn get(&self, name: &MeterName) -> Option<&Meter> {
        self.meters.get(name)
    }

    pub fn meters(&self) -> impl Iterator<Item = &Meter> {
        self.meters.values()
    }

    /// Measures `event` with every meter that takes its type: all of them, or an error.
    pub fn measure<'e>(
        &'e self,
        event: &'e UsageEvent,
    ) -> Result<Vec<Measurement<'e>>, MeterError> {
        let names = self
            .by_type
            .get(&event.event_type)
            .filter(|names| !names.is_empty())
            .ok_or_else(|| MeterError::NoMeterForType {
                event_type: event.event_type.clone(),
            })?;
        names
            .iter()
            .filter_map(|name| self.meters.get(name))
            .map(|meter| meter.measure(event))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::EventTimePolicy;
    use chrono::{DateTime, Utc};
    use serde_json::json;

    fn catalog() -> MeterCatalog {
        MeterCatalog::from_json(
            r#"[
              {"name": "api_requests", "eventTypes": ["api.request"], "aggregation": {"kind": "count"},
               "unit": "requests", "groupBy": ["route", "method"]},
              {"name": "egress_bytes", "eventTypes": ["api.request"], "valueField": "response.bytes",
               "aggregation": {"kind": "sum"}, "unit": "bytes"},
              {"name": "active_users", "eventTypes": ["login"], "valueField": "user",
               "aggregation": {"kind": "unique_count"}, "unit": "users"}
            ]"#,
        )
        .unwrap()
    }

    fn event(event_type: &str, data: Value) -> UsageEvent {
        let now = DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        UsageEvent::from_json(
            &json!({"specversion": "1.0", "id": "e1", "source": "s", "type": event_type,
                    "subject": "acme", "time": "2026-11-23T11:00:00Z", "data": data}),
            &EventTimePolicy::default(),
            now,
        )
        .unwrap()
    }

    #[test]
    fn an_event_is_measured_by_every_meter_of_its_type() {
        let catalog = catalog();
        let e = event(
            "api.request",
            json!({"route": "/v1/items", "method": "GET", "response": {"bytes": 2048}}),
        );
        let measurements = catalog.measure(&e).unwrap();
        assert_eq!(measurements.len(), 2);
        let egress = measurements
            .iter()
            .find(|m| m.meter.name.as_str() == "egress_bytes")
            .unwrap();
        assert_eq!(egress.value, ObservedValue::Number(Decimal::from(2048)));
        let requests = measurements
            .iter()
            .find(|m| m.meter.name.as_str() == "api_requests")
            .unwrap();
        assert_eq!(requests.dimensions.key(), "method=GET,route=/v1/items");
    }

    #[test]
    fn a_missing_or_mistyped_value_rejects_the_whole_event() {
        let catalog = catalog();
        let missing = catalog
            .measure(&event("api.request", json!({})))
            .unwrap_err();
        assert_eq!(missing.code(), "missing_value");
        let wrong = catalog
            .measure(&event(
                "api.request",
                json!({"response": {"bytes": "lots"}}),
            ))
            .unwrap_err();
        assert_eq!(wrong.code(), "wrong_value_type");
    }

    #[test]
    fn decimal_strings_are_read_exactly() {
        assert_eq!(decimal_from_json(&json!("0.1")), Some(Decimal::new(1, 1)));
        assert_eq!(decimal_from_json(&json!(1.5e3)), Some(Decimal::from(1500)));
        assert_eq!(decimal_from_json(&json!(true)), None);
    }

    #[test]
    fn an_event_type_no_meter_takes_is_rejected_not_ignored() {
        let err = catalog()
            .measure(&event("unknown.type", json!({})))
            .unwrap_err();
        assert_eq!(err.code(), "no_meter_for_type");
    }

    #[test]
    fn unique_count_takes_strings() {
        let catalog = catalog();
        let e = event("login", json!({"user": "u-17"}));
        let m = catalog.measure(&e).unwrap();
        assert_eq!(m[0].value, ObservedValue::Text("u-17"));
    }

    #[test]
    fn compile_reports_every_problem_at_once() {
        let err = MeterCatalog::from_json(
            r#"[
              {"name": "bad name", "eventTypes": [], "aggregation": {"kind": "sum"}, "unit": ""},
              {"name": "ok", "eventTypes": ["t"], "aggregation": {"kind": "count"}, "unit": "u", "groupBy": ["a..b"]},
              {"name": "ok", "eventTypes": ["t"], "aggregation": {"kind": "count"}, "unit": "u"}
            ]"#,
        )
        .unwrap_err();
        let paths: Vec<&str> = err.problems().iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "meters[0].name",
                "meters[0].eventTypes",
                "meters[0].valueField",
                "meters[0].unit",
                "meters[1].groupBy[0]",
                "meters[2].name"
            ]
        );
    }

    #[test]
    fn unknown_config_fields_are_refused() {
        let err = MeterCatalog::from_json(
            r#"[{"name": "a", "eventTypes": ["t"], "aggregation": {"kind": "count"}, "unit": "u", "colour": 1}]"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }
}
