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

/// One problem in a meter configuration, with the path of the offending field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{path}: {message}")]
pub struct ConfigProblem {
    pub path: String,
    pub message: String,
}

/// Every problem found in a meter configuration.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid meter configuration: {}", .problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct MeterConfigError {
    pub problems: Vec<ConfigProblem>,
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
    pub fn compile(configs: &[MeterConfig]) -> Result<MeterCatalog, MeterConfigError> {
        let mut problems = Vec::new();
        let mut catalog = MeterCatalog::default();
        for (i, config) in configs.iter().enumerate() {
            let at = |field: &str| format!("meters[{i}].{field}");
            let mut problem = |path: String, message: String| {
                problems.push(ConfigProblem { path, message });
            };
            let name = match MeterName::new(config.name.clone()) {
                Ok(name) => Some(name),
                Err(e) => {
                    problem(at("name"), e.to_string());
                    None
                }
            };
            if let Some(name) = &name {
                if catalog.meters.contains_key(name) {
                    problem(at("name"), format!("meter {name} is defined twice"));
                }
            }
            if config.event_types.is_empty() {
                problem(
                    at("eventTypes"),
                    "a meter must take at least one event type".into(),
                );
            }
            if config.event_types.iter().any(|t| t.trim().is_empty()) {
                problem(at("eventTypes"), "event types must not be empty".into());
            }
            let value_field = match &config.value_field {
                None => None,
                Some(text) => {
                    let parsed = FieldPath::parse(text);
                    if parsed.is_none() {
                        problem(
                            at("valueField"),
                            format!("{text:?} is not a dotted field path"),
                        );
                    }
                    parsed
                }
            };
            let needs_value = !matches!(config.aggregation, Aggregation::Count);
            if needs_value && value_field.is_none() && config.value_field.is_none() {
                problem(
                    at("valueField"),
                    format!("a {} meter needs a value field", config.aggregation.kind()),
                );
            }
            if let Aggregation::GaugeIntegral { sample_seconds, .. } = config.aggregation {
                if sample_seconds == 0 {
                    problem(
                        at("aggregation.sampleSeconds"),
                        "the sampling interval must be at least one second".into(),
                    );
                }
            }
            if config.unit.trim().is_empty() {
                problem(at("unit"), "the unit must not be empty".into());
            }
            let mut group_by = Vec::new();
            for (j, text) in config.group_by.iter().enumerate() {
                match FieldPath::parse(text) {
                    Some(path) if !group_by.contains(&path) => group_by.push(path),
                    Some(_) => problem(
                        at(&format!("groupBy[{j}]")),
                        format!("{text:?} is listed twice"),
                    ),
                    None => problem(
                        at(&format!("groupBy[{j}]")),
                        format!("{text:?} is not a dotted field path"),
                    ),
                }
            }
            if let Some(name) = name {
                for event_type in &config.event_types {
                    catalog
                        .by_type
                        .entry(event_type.clone())
                        .or_default()
                        .push(name.clone());
                }
                catalog.meters.insert(
                    name.clone(),
                    Meter {
                        name,
                        event_types: config.event_types.iter().cloned().collect(),
                        value_field,
                        aggregation: config.aggregation.clone(),
                        unit: config.unit.clone(),
                        group_by,
                    },
                );
            }
        }
        if problems.is_empty() {
            Ok(catalog)
        } else {
            Err(MeterConfigError { problems })
        }
    }

    /// Parses and compiles a JSON array of meter configurations.
    pub fn from_json(json: &str) -> Result<MeterCatalog, MeterConfigError> {
        let configs: Vec<MeterConfig> =
            serde_json::from_str(json).map_err(|e| MeterConfigError {
                problems: vec![ConfigProblem {
                    path: format!("line {} column {}", e.line(), e.column()),
                    message: e.to_string(),
                }],
            })?;
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
        let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
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
