//! Usage events: CloudEvents 1.0 in JSON structured mode.
//!
//! Any producer (the usage API's `POST /v1/events`, SDKs, pod samplers) sends usage as a
//! CloudEvent: `id` names the event, `subject` is the tenant, `type` the kind of usage and
//! `time` when it happened. Parsing checks every rule and reports the first one broken
//! with a typed error, so a rejected event always carries a reason a person can act on.
//! Nothing here panics, whatever the bytes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

use crate::ids::{IdError, TenantId};
use crate::window::{EventTimeError, EventTimePolicy};

/// The longest accepted `id`, `source` or `type`, in characters.
pub const MAX_ATTRIBUTE_LEN: usize = 256;

/// A validated usage event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageEvent {
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(rename = "subject")]
    pub tenant: TenantId,
    pub time: DateTime<Utc>,
    pub data: Map<String, Value>,
}

/// Why an event was rejected. Every variant names the rule that was broken.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum EventError {
    #[error("event is not valid JSON: {0}")]
    NotJson(String),
    #[error("event must be a JSON object, found {found}")]
    NotAnObject { found: &'static str },
    #[error("required attribute `{0}` is missing")]
    MissingAttribute(&'static str),
    #[error("attribute `{0}` is empty")]
    EmptyAttribute(&'static str),
    #[error("attribute `{attribute}` must be a string, found {found}")]
    NotAString {
        attribute: &'static str,
        found: &'static str,
    },
    #[error("attribute `{attribute}` is {len} characters long; the limit is {MAX_ATTRIBUTE_LEN}")]
    AttributeTooLong { attribute: &'static str, len: usize },
    #[error("specversion {0:?} is not supported; expected \"1.0\"")]
    UnsupportedSpecVersion(String),
    #[error("subject is not a valid tenant id: {0}")]
    BadTenant(#[source] IdError),
    #[error("time {value:?} is not an RFC 3339 timestamp: {reason}")]
    BadTimestamp { value: String, reason: String },
    #[error(transparent)]
    OutOfTimeRange(#[from] EventTimeError),
    #[error("`data` must be a JSON object, found {found}")]
    DataNotAnObject { found: &'static str },
    #[error("datacontenttype {0:?} is not supported; usage data must be application/json")]
    UnsupportedContentType(String),
}

impl EventError {
    /// A stable, machine-readable code for APIs and rejected-event records.
    pub fn code(&self) -> &'static str {
        match self {
            EventError::NotJson(_) => "not_json",
            EventError::NotAnObject { .. } => "not_an_object",
            EventError::MissingAttribute(_) => "missing_attribute",
            EventError::EmptyAttribute(_) => "empty_attribute",
            EventError::NotAString { .. } => "attribute_not_a_string",
            EventError::AttributeTooLong { .. } => "attribute_too_long",
            EventError::UnsupportedSpecVersion(_) => "unsupported_specversion",
            EventError::BadTenant(_) => "bad_subject",
            EventError::BadTimestamp { .. } => "bad_time",
            EventError::OutOfTimeRange(EventTimeError::TooFarInFuture { .. }) => "time_in_future",
            EventError::OutOfTimeRange(EventTimeError::BeyondLateHorizon { .. }) => "time_too_old",
            EventError::DataNotAnObject { .. } => "data_not_an_object",
            EventError::UnsupportedContentType(_) => "unsupported_datacontenttype",
        }
    }
}

/// The JSON type name of a value, for error messages.
pub(crate) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl UsageEvent {
    /// Parses and validates one event from JSON bytes, judging its time against `now`.
    pub fn parse(
        bytes: &[u8],
        policy: &EventTimePolicy,
        now: DateTime<Utc>,
    ) -> Result<UsageEvent, EventError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| EventError::NotJson(e.to_string()))?;
        UsageEvent::from_json(&value, policy, now)
    }

    /// Validates an already parsed JSON value (one element of a batch, say).
    pub fn from_json(
        value: &Value,
        policy: &EventTimePolicy,
        now: DateTime<Utc>,
    ) -> Result<UsageEvent, EventError> {
        let object = value.as_object().ok_or(EventError::NotAnObject {
            found: json_type(value),
        })?;
        let specversion = required_string(object, "specversion")?;
        if specversion != "1.0" {
            return Err(EventError::UnsupportedSpecVersion(specversion.to_owned()));
        }
        let id = required_string(object, "id")?;
        let source = required_string(object, "source")?;
        let event_type = required_string(object, "type")?;
        let subject = required_string(object, "subject")?;
        let tenant = TenantId::new(subject).map_err(EventError::BadTenant)?;
        let time_text = required_string(object, "time")?;
        let time = DateTime::parse_from_rfc3339(time_text)
            .map_err(|e| EventError::BadTimestamp {
                value: time_text.to_owned(),
                reason: e.to_string(),
            })?
            .with_timezone(&Utc);
        if let Some(content_type) = object.get("datacontenttype") {
            let content_type = content_type.as_str().ok_or(EventError::NotAString {
                attribute: "datacontenttype",
                found: json_type(content_type),
            })?;
            if !content_type.starts_with("application/json") {
                return Err(EventError::UnsupportedContentType(content_type.to_owned()));
            }
        }
        let data = match object.get("data") {
            None => return Err(EventError::MissingAttribute("data")),
            Some(Value::Object(data)) => data.clone(),
            Some(other) => {
                return Err(EventError::DataNotAnObject {
                    found: json_type(other),
                });
            }
        };
        policy.check(time, now)?;
        Ok(UsageEvent {
            id: id.to_owned(),
            source: source.to_owned(),
            event_type: event_type.to_owned(),
            tenant,
            time,
            data,
        })
    }

    /// The key under which this event is deduplicated.
    ///
    /// CloudEvents makes `source` + `id` unique; the tenant is part of the key as well so
    /// that one tenant can never suppress another tenant's event by reusing its id.
    pub fn dedupe_key(&self) -> String {
        format!(
            "{}\u{1f}{}\u{1f}{}",
            self.tenant.as_str(),
            self.source,
            self.id
        )
    }

    /// The event as CloudEvents JSON, as a producer would send it.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "specversion": "1.0",
            "id": self.id,
            "source": self.source,
            "type": self.event_type,
            "subject": self.tenant.as_str(),
            "time": self.time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            "datacontenttype": "application/json",
            "data": self.data,
        })
    }
}

fn required_string<'a>(
    object: &'a Map<String, Value>,
    attribute: &'static str,
) -> Result<&'a str, EventError> {
    let value = object
        .get(attribute)
        .ok_or(EventError::MissingAttribute(attribute))?;
    let text = value.as_str().ok_or(EventError::NotAString {
        attribute,
        found: json_type(value),
    })?;
    if text.trim().is_empty() {
        return Err(EventError::EmptyAttribute(attribute));
    }
    let len = text.chars().count();
    if len > MAX_ATTRIBUTE_LEN {
        return Err(EventError::AttributeTooLong { attribute, len });
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn valid() -> Value {
        json!({
            "specversion": "1.0",
            "id": "evt-1",
            "source": "/gateway/eu-1",
            "type": "api.request",
            "subject": "acme",
            "time": "2026-11-23T11:59:00Z",
            "data": {"bytes": 512}
        })
    }

    fn parse(value: &Value) -> Result<UsageEvent, EventError> {
        UsageEvent::from_json(value, &EventTimePolicy::default(), now())
    }

    #[test]
    fn a_valid_event_parses_with_its_tenant_and_utc_time() {
        let event = parse(&valid()).unwrap();
        assert_eq!(event.tenant.as_str(), "acme");
        assert_eq!(event.time.to_rfc3339(), "2026-11-23T11:59:00+00:00");
        assert_eq!(event.data["bytes"], json!(512));
    }

    #[test]
    fn offsets_are_converted_to_utc() {
        let mut v = valid();
        v["time"] = json!("2026-11-23T12:59:00+01:00");
        assert_eq!(parse(&v).unwrap().time, parse(&valid()).unwrap().time);
    }

    #[test]
    fn each_broken_rule_has_its_own_error() {
        type Mutation = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|v| v["specversion"] = json!("0.3")),
                "unsupported_specversion",
            ),
            (
                Box::new(|v| {
                    v.as_object_mut().unwrap().remove("id");
                }),
                "missing_attribute",
            ),
            (Box::new(|v| v["id"] = json!("  ")), "empty_attribute"),
            (Box::new(|v| v["id"] = json!(7)), "attribute_not_a_string"),
            (
                Box::new(|v| v["id"] = json!("x".repeat(257))),
                "attribute_too_long",
            ),
            (Box::new(|v| v["subject"] = json!("acme#2")), "bad_subject"),
            (Box::new(|v| v["time"] = json!("yesterday")), "bad_time"),
            (
                Box::new(|v| v["time"] = json!("2026-11-23T12:10:00Z")),
                "time_in_future",
            ),
            (
                Box::new(|v| v["time"] = json!("2026-11-01T00:00:00Z")),
                "time_too_old",
            ),
            (
                Box::new(|v| v["data"] = json!([1, 2])),
                "data_not_an_object",
            ),
            (
                Box::new(|v| {
                    v.as_object_mut().unwrap().remove("data");
                }),
                "missing_attribute",
            ),
            (
                Box::new(|v| v["datacontenttype"] = json!("text/plain")),
                "unsupported_datacontenttype",
            ),
        ];
        for (mutate, code) in cases {
            let mut v = valid();
            mutate(&mut v);
            let err = parse(&v).unwrap_err();
            assert_eq!(err.code(), code, "{err}");
        }
    }

    #[test]
    fn non_objects_and_garbage_are_rejected() {
        assert_eq!(parse(&json!([1])).unwrap_err().code(), "not_an_object");
        let err = UsageEvent::parse(b"{not json", &EventTimePolicy::default(), now()).unwrap_err();
        assert_eq!(err.code(), "not_json");
    }

    #[test]
    fn dedupe_key_is_scoped_by_tenant_and_source() {
        let a = parse(&valid()).unwrap();
        let mut other = valid();
        other["subject"] = json!("globex");
        let b = parse(&other).unwrap();
        assert_ne!(a.dedupe_key(), b.dedupe_key());
    }

    #[test]
    fn to_json_round_trips() {
        let a = parse(&valid()).unwrap();
        assert_eq!(parse(&a.to_json()).unwrap(), a);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = UsageEvent::parse(&bytes, &EventTimePolicy::default(), now());
        }

        #[test]
        fn arbitrary_attribute_values_never_panic(id in ".{0,300}", subject in ".{0,80}", time in ".{0,40}") {
            let mut v = valid();
            v["id"] = json!(id);
            v["subject"] = json!(subject);
            v["time"] = json!(time);
            let _ = parse(&v);
        }
    }
}
