//! Aggregated usage: the rows that flow from producers to storage.
//!
//! A [`UsageRow`] is one aggregate state for one (tenant, meter, window, dimensions)
//! [`UsageKey`]. Because every state is a commutative monoid, rows with the same key can
//! be merged in any order and grouping, which is what lets the edge aggregate in memory,
//! ingest merge a message's rows, and rollups fold hours into days into months.
//!
//! A [`UsageBatch`] is the unit of exactly-once accounting: its id is the dedupe key, and
//! storage applies a batch's rows once, whatever is redelivered.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::aggregate::{AggregateError, AggregateState, Observation};
use crate::event::UsageEvent;
use crate::ids::{MeterName, TenantId};
use crate::meter::{MeterCatalog, MeterError};
use crate::window::{Granularity, Window};

/// Longest dimension name or value, in characters.
pub const MAX_DIMENSION_LEN: usize = 128;
/// Most dimensions on one row.
pub const MAX_DIMENSIONS: usize = 8;

/// Why a dimension was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DimensionError {
    #[error("value is {len} characters long; the limit is {MAX_DIMENSION_LEN}")]
    TooLong { len: usize },
    #[error("more than {MAX_DIMENSIONS} dimensions")]
    TooMany,
    #[error("value contains a control character")]
    ControlCharacter,
}

/// Group-by dimensions of a row (`route=/v1/items`, `method=GET`), sorted by name.
///
/// Its [`key`](Dimensions::key) is canonical, so equal dimensions always make the same
/// storage key; `%`, `,`, `=` and `#` are percent-encoded so the key cannot be forged.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Dimensions(BTreeMap<String, String>);

impl Dimensions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) one dimension.
    pub fn insert(&mut self, name: &str, value: &str) -> Result<(), DimensionError> {
        for text in [name, value] {
            let len = text.chars().count();
            if len > MAX_DIMENSION_LEN {
                return Err(DimensionError::TooLong { len });
            }
            if text.chars().any(char::is_control) {
                return Err(DimensionError::ControlCharacter);
            }
        }
        if self.0.len() >= MAX_DIMENSIONS && !self.0.contains_key(name) {
            return Err(DimensionError::TooMany);
        }
        self.0.insert(name.to_owned(), value.to_owned());
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The canonical text form `a=1,b=2` (empty when there are no dimensions).
    pub fn key(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Parses a [`key`](Dimensions::key) back.
    pub fn from_key(key: &str) -> Option<Dimensions> {
        let mut dims = Dimensions::default();
        if key.is_empty() {
            return Some(dims);
        }
        for pair in key.split(',') {
            let (k, v) = pair.split_once('=')?;
            dims.insert(&unescape(k)?, &unescape(v)?).ok()?;
        }
        Some(dims)
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '%' | ',' | '=' | '#' => out.push_str(&format!("%{:02X}", ch as u32)),
            _ => out.push(ch),
        }
    }
    out
}

fn unescape(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(ch) = chars.next() {
        if ch == '%' {
            let hex: String = chars.by_ref().take(2).collect();
            let byte = u8::from_str_radix(&hex, 16).ok()?;
            out.push(char::from(byte));
        } else {
            out.push(ch);
        }
    }
    Some(out)
}

/// What a usage row counts: one tenant's meter in one window, per dimension combination.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UsageKey {
    pub tenant: TenantId,
    pub meter: MeterName,
    pub window: Window,
    #[serde(default, skip_serializing_if = "Dimensions::is_empty")]
    pub dimensions: Dimensions,
}

impl fmt::Display for UsageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.tenant, self.meter, self.window)?;
        if !self.dimensions.is_empty() {
            write!(f, "/{}", self.dimensions.key())?;
        }
        Ok(())
    }
}

impl UsageKey {
    /// The same key one granularity coarser (hour → day → month), for rollups.
    pub fn rolled_up(&self) -> Option<UsageKey> {
        self.window.parent().map(|window| UsageKey {
            window,
            ..self.clone()
        })
    }
}

/// One aggregate state under one key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRow {
    pub key: UsageKey,
    pub state: AggregateState,
}

/// A set of rows applied exactly once under `batch_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageBatch {
    pub batch_id: String,
    pub rows: Vec<UsageRow>,
}

/// Why an event could not be added to an aggregation.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum UsageError {
    #[error(transparent)]
    Meter(#[from] MeterError),
    #[error("meter {meter}: {source}")]
    Aggregate {
        meter: MeterName,
        #[source]
        source: AggregateError,
    },
    #[error("usage of meter {meter}, which is not configured")]
    UnknownMeter { meter: MeterName },
    #[error("rows for {key} cannot be merged: {source}")]
    Merge {
        key: String,
        #[source]
        source: AggregateError,
    },
}

impl UsageError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            UsageError::Meter(e) => e.code(),
            UsageError::Aggregate { .. } => "aggregate_error",
            UsageError::Merge { .. } => "merge_error",
            UsageError::UnknownMeter { .. } => "unknown_meter",
        }
    }
}

/// Folds events and rows into one state per [`UsageKey`] at a fixed granularity.
///
/// Adding an event is all or nothing: it is measured by every meter first and only then
/// observed, so a rejected event leaves the aggregation untouched.
#[derive(Debug, Clone)]
pub struct UsageAggregator<'c> {
    catalog: &'c MeterCatalog,
    granularity: Granularity,
    rows: BTreeMap<UsageKey, AggregateState>,
}

impl<'c> UsageAggregator<'c> {
    pub fn new(catalog: &'c MeterCatalog, granularity: Granularity) -> Self {
        UsageAggregator {
            catalog,
            granularity,
            rows: BTreeMap::new(),
        }
    }

    /// Measures `event` with every meter of its type and folds it in.
    pub fn add_event(&mut self, event: &UsageEvent) -> Result<(), UsageError> {
        let measurements = self.catalog.measure(event)?;
        let window = Window::containing(self.granularity, event.time);
        let mut updates = Vec::with_capacity(measurements.len());
        for m in measurements {
            let key = UsageKey {
                tenant: event.tenant.clone(),
                meter: m.meter.name.clone(),
                window,
                dimensions: m.dimensions,
            };
            let mut state = self
                .rows
                .get(&key)
                .cloned()
                .unwrap_or_else(|| AggregateState::identity(&m.meter.aggregation));
            let observation = Observation {
                time: event.time,
                event_id: &event.id,
                value: m.value,
            };
            state
                .observe(&m.meter.aggregation, &observation)
                .map_err(|source| UsageError::Aggregate {
                    meter: m.meter.name.clone(),
                    source,
                })?;
            updates.push((key, state));
        }
        self.rows.extend(updates);
        Ok(())
    }

    /// Number of distinct keys held.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rows, sorted by key.
    pub fn into_rows(self) -> Vec<UsageRow> {
        self.rows
            .into_iter()
            .map(|(key, state)| UsageRow { key, state })
            .collect()
    }
}

/// Merges rows with equal keys; the result is sorted by key.
pub fn merge_rows(rows: impl IntoIterator<Item = UsageRow>) -> Result<Vec<UsageRow>, UsageError> {
    Ok(merge_by(rows, |key| key.clone())?
        .into_iter()
        .map(|(key, state)| UsageRow { key, state })
        .collect())
}

/// Rolls rows up to `granularity` (hours → days → months): each key's window becomes the
/// coarser window containing it, and equal keys merge. Rows already at or above the
/// target granularity keep their window.
pub fn rolled_up_to(
    rows: impl IntoIterator<Item = UsageRow>,
    granularity: Granularity,
) -> Result<Vec<UsageRow>, UsageError> {
    merge_rows(rows.into_iter().map(|row| {
        let window = if row.key.window.granularity() < granularity {
            Window::containing(granularity, row.key.window.start())
        } else {
            row.key.window
        };
        UsageRow {
            key: UsageKey { window, ..row.key },
            state: row.state,
        }
    }))
}

/// The rows of `recomputed` whose state differs from (or is missing in) `stored`: what a
/// rollup must write. Writing only these keeps a re-run of an unchanged window free.
pub fn changed_rows(recomputed: Vec<UsageRow>, stored: &[UsageRow]) -> Vec<UsageRow> {
    let stored: BTreeMap<&UsageKey, &AggregateState> =
        stored.iter().map(|row| (&row.key, &row.state)).collect();
    recomputed
        .into_iter()
        .filter(|row| stored.get(&row.key) != Some(&&row.state))
        .collect()
}

/// Merges the states of `rows` that `group` maps to the same group.
fn merge_by<G: Ord, R: std::borrow::Borrow<UsageRow>>(
    rows: impl IntoIterator<Item = R>,
    group: impl Fn(&UsageKey) -> G,
) -> Result<BTreeMap<G, AggregateState>, UsageError> {
    let mut merged: BTreeMap<G, AggregateState> = BTreeMap::new();
    for row in rows {
        let row = row.borrow();
        match merged.entry(group(&row.key)) {
            std::collections::btree_map::Entry::Occupied(mut entry) => entry
                .get_mut()
                .merge(&row.state)
                .map_err(|source| UsageError::Merge {
                    key: row.key.to_string(),
                    source,
                })?,
            std::collections::btree_map::Entry::Vacant(entry) => {
                entry.insert(row.state.clone());
            }
        }
    }
    Ok(merged)
}

/// Folds `rows` (any windows, any dimensions) into one state per meter and reads each
/// meter's quantity: the month-to-date figures that pricing and budgets take.
///
/// Rows of a meter the catalog does not know are an error rather than skipped: usage must
/// never vanish between storage and an invoice.
pub fn quantities_by_meter(
    rows: &[UsageRow],
    catalog: &MeterCatalog,
) -> Result<BTreeMap<MeterName, rust_decimal::Decimal>, UsageError> {
    let states = merge_by(rows, |key| key.meter.clone())?;
    let mut quantities = BTreeMap::new();
    for (meter, state) in states {
        let aggregation = catalog.get(&meter).map(|m| &m.aggregation).ok_or_else(|| {
            UsageError::UnknownMeter {
                meter: meter.clone(),
            }
        })?;
        if let Some(quantity) = state.quantity(aggregation) {
            quantities.insert(meter.clone(), quantity);
        }
    }
    Ok(quantities)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dimension_keys_are_canonical_and_escape_separators() {
        let mut a = Dimensions::new();
        a.insert("route", "/a,b=c#d%").unwrap();
        a.insert("method", "GET").unwrap();
        assert_eq!(a.key(), "method=GET,route=/a%2Cb%3Dc%23d%25");
        assert_eq!(Dimensions::from_key(&a.key()).unwrap(), a);
    }

    #[test]
    fn dimensions_are_bounded() {
        let mut d = Dimensions::new();
        assert_eq!(
            d.insert("a", &"x".repeat(129)),
            Err(DimensionError::TooLong { len: 129 })
        );
        assert_eq!(d.insert("a", "x\n"), Err(DimensionError::ControlCharacter));
        for i in 0..MAX_DIMENSIONS {
            d.insert(&format!("d{i}"), "v").unwrap();
        }
        assert_eq!(d.insert("one-more", "v"), Err(DimensionError::TooMany));
    }

    fn catalog() -> MeterCatalog {
        MeterCatalog::from_json(
            r#"[
              {"name": "requests", "eventTypes": ["api"], "valueField": "n",
               "aggregation": {"kind": "sum"}, "unit": "requests", "groupBy": ["route"]},
              {"name": "disk", "eventTypes": ["sample"], "valueField": "gb",
               "aggregation": {"kind": "gauge_integral", "sampleSeconds": 3600, "per": "month"},
               "unit": "GB-months"}
            ]"#,
        )
        .unwrap()
    }

    fn event(id: &str, event_type: &str, time: &str, data: serde_json::Value) -> UsageEvent {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let policy = crate::window::EventTimePolicy {
            late_horizon: chrono::Duration::days(60),
            ..Default::default()
        };
        UsageEvent::from_json(
            &serde_json::json!({"specversion": "1.0", "id": id, "source": "t", "type": event_type,
                                "subject": "acme", "time": time, "data": data}),
            &policy,
            now,
        )
        .unwrap()
    }

    #[test]
    fn events_fold_into_hourly_rows_and_then_into_month_quantities() {
        let catalog = catalog();
        let mut aggregator = UsageAggregator::new(&catalog, Granularity::Hour);
        let events = [
            event(
                "1",
                "api",
                "2026-10-01T00:10:00Z",
                serde_json::json!({"n": 5, "route": "/a"}),
            ),
            event(
                "2",
                "api",
                "2026-10-01T00:20:00Z",
                serde_json::json!({"n": 7, "route": "/b"}),
            ),
            event(
                "3",
                "api",
                "2026-10-02T13:00:00Z",
                serde_json::json!({"n": "0.5", "route": "/a"}),
            ),
            event(
                "4",
                "sample",
                "2026-10-01T00:30:00Z",
                serde_json::json!({"gb": 73}),
            ),
            event(
                "5",
                "sample",
                "2026-10-01T01:30:00Z",
                serde_json::json!({"gb": 73}),
            ),
        ];
        for e in &events {
            aggregator.add_event(e).unwrap();
        }
        assert!(
            aggregator
                .add_event(&event(
                    "6",
                    "api",
                    "2026-10-01T00:10:00Z",
                    serde_json::json!({})
                ))
                .is_err()
        );
        let rows = aggregator.into_rows();
        assert_eq!(
            rows.len(),
            5,
            "three request rows by hour and route, two disk hours"
        );
        let quantities = quantities_by_meter(&rows, &catalog).unwrap();
        let requests = MeterName::new("requests").unwrap();
        let disk = MeterName::new("disk").unwrap();
        assert_eq!(quantities[&requests], rust_decimal::Decimal::new(125, 1));
        // 2 hourly samples of 73 GB = 146 GB-hours = 0.2 GB-months of 730 h.
        assert_eq!(quantities[&disk], rust_decimal::Decimal::new(2, 1));
    }

    fn count_row(window: &str, granularity: Granularity, n: u64) -> UsageRow {
        UsageRow {
            key: UsageKey {
                tenant: TenantId::new("acme").unwrap(),
                meter: MeterName::new("requests").unwrap(),
                window: Window::parse_key(granularity, window).unwrap(),
                dimensions: Dimensions::default(),
            },
            state: AggregateState::Count { n },
        }
    }

    #[test]
    fn hours_roll_up_into_days_and_months() {
        let hours = vec![
            count_row("2026-10-31T23", Granularity::Hour, 1),
            count_row("2026-11-01T00", Granularity::Hour, 2),
            count_row("2026-11-01T13", Granularity::Hour, 3),
        ];
        let days = rolled_up_to(hours.clone(), Granularity::Day).unwrap();
        assert_eq!(
            days,
            vec![
                count_row("2026-10-31", Granularity::Day, 1),
                count_row("2026-11-01", Granularity::Day, 5)
            ]
        );
        let months = rolled_up_to(days, Granularity::Month).unwrap();
        assert_eq!(months, rolled_up_to(hours, Granularity::Month).unwrap());
        assert_eq!(months[1], count_row("2026-11", Granularity::Month, 5));
    }

    #[test]
    fn only_changed_rows_are_written_again() {
        let stored = vec![
            count_row("2026-11-01", Granularity::Day, 5),
            count_row("2026-11-02", Granularity::Day, 1),
        ];
        let recomputed = vec![
            count_row("2026-11-01", Granularity::Day, 5),
            count_row("2026-11-02", Granularity::Day, 2),
            count_row("2026-11-03", Granularity::Day, 1),
        ];
        let changed = changed_rows(recomputed, &stored);
        let windows: Vec<String> = changed.iter().map(|r| r.key.window.key()).collect();
        assert_eq!(windows, ["2026-11-02", "2026-11-03"]);
    }

    #[test]
    fn usage_of_an_unconfigured_meter_is_an_error_not_a_gap() {
        let rows = vec![UsageRow {
            key: UsageKey {
                tenant: TenantId::new("acme").unwrap(),
                meter: MeterName::new("retired").unwrap(),
                window: Window::parse_key(Granularity::Hour, "2026-10-01T00").unwrap(),
                dimensions: Dimensions::default(),
            },
            state: AggregateState::Count { n: 3 },
        }];
        let err = quantities_by_meter(&rows, &catalog()).unwrap_err();
        assert_eq!(err.code(), "unknown_meter");
    }

    proptest! {
        #[test]
        fn dimension_keys_round_trip(pairs in proptest::collection::btree_map("[a-z%,=#]{1,6}", "[ -~]{0,12}", 0..4)) {
            let mut d = Dimensions::new();
            for (k, v) in &pairs {
                d.insert(k, v).unwrap();
            }
            prop_assert_eq!(Dimensions::from_key(&d.key()).unwrap(), d);
        }
    }
}
