//! Conversions between domain values and DynamoDB attribute maps. All `AttributeValue`
//! handling of usage items lives here.

use std::collections::HashMap;
use std::str::FromStr;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tollgate_core::aggregate::AggregateState;
use tollgate_core::ids::TenantId;
use tollgate_core::usage::{UsageKey, UsageRow};

use crate::error::StoreError;
use crate::table::{PK, SK, TTL, keys};

/// The JSON document of a document item (profiles, plans, alerts, ledger entries…).
pub(crate) const DOC: &str = "doc";

/// The aggregation kind of a counter (`count`, `sum`, …).
pub(crate) const KIND: &str = "kind";
/// JSON of a non-additive state.
pub(crate) const STATE: &str = "state";
/// Optimistic-concurrency version of a non-additive state.
pub(crate) const VERSION: &str = "ver";

/// The attribute an additive part is kept in: `a_sum`, `a_count`, …
pub(crate) fn part_attribute(part: &str) -> String {
    format!("a_{part}")
}

pub(crate) type Item = HashMap<String, AttributeValue>;

/// A counter as read back for a read-merge-write.
#[derive(Debug, Clone)]
pub(crate) struct StoredState {
    /// Partition and sort key: sort keys repeat across tenants, so both are needed.
    pub key: (String, String),
    pub state: AggregateState,
    pub version: u64,
}

pub(crate) fn corrupt(item: &Item, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        pk: string(item, PK).unwrap_or_default().to_owned(),
        sk: string(item, SK).unwrap_or_default().to_owned(),
        reason: reason.into(),
    }
}

pub(crate) fn string<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

pub(crate) fn number(item: &Item, name: &str) -> Option<Decimal> {
    item.get(name).and_then(|v| v.as_n().ok()).and_then(|n| {
        Decimal::from_str(n)
            .ok()
            .or_else(|| Decimal::from_scientific(n).ok())
    })
}

/// Whether an item's TTL has passed; DynamoDB deletes expired items only eventually, so
/// readers must skip them.
pub(crate) fn is_expired(item: &Item, now: DateTime<Utc>) -> bool {
    item.get(TTL)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse::<i64>().ok())
        .is_some_and(|ttl| ttl <= now.timestamp())
}

/// Reads the aggregate state held by a counter item, additive or not.
pub(crate) fn state_of(item: &Item) -> Result<AggregateState, StoreError> {
    let kind = string(item, KIND).ok_or_else(|| corrupt(item, "no aggregation kind"))?;
    if let Some(json) = string(item, STATE) {
        let state: AggregateState =
            serde_json::from_str(json).map_err(|e| corrupt(item, format!("state: {e}")))?;
        if state.kind() != kind {
            return Err(corrupt(item, "state does not match its kind"));
        }
        return Ok(state);
    }
    let parts: Vec<(String, Decimal)> = item
        .keys()
        .filter_map(|name| {
            let part = name.strip_prefix("a_")?;
            Some((part.to_owned(), number(item, name)?))
        })
        .collect();
    let borrowed: Vec<(&str, Decimal)> = parts.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    AggregateState::from_additive_parts_of_kind(kind, &borrowed)
        .map_err(|e| corrupt(item, format!("additive parts: {e}")))
}

pub(crate) fn stored_state(item: &Item) -> Result<StoredState, StoreError> {
    let pk = string(item, PK)
        .ok_or_else(|| corrupt(item, "no partition key"))?
        .to_owned();
    let sk = string(item, SK)
        .ok_or_else(|| corrupt(item, "no sort key"))?
        .to_owned();
    let version = number(item, VERSION)
        .and_then(|v| u64::try_from(v).ok())
        .ok_or_else(|| corrupt(item, "no version"))?;
    Ok(StoredState {
        key: (pk, sk),
        state: state_of(item)?,
        version,
    })
}

/// The item for a non-additive counter.
pub(crate) fn versioned_item(
    key: &UsageKey,
    state: &AggregateState,
    version: u64,
    expiry: Option<DateTime<Utc>>,
) -> Result<Item, StoreError> {
    let sk = keys::usage_sort(key)
        .ok_or_else(|| StoreError::InvalidBatch(format!("{key}: no storage key")))?;
    let json = serde_json::to_string(state)
        .map_err(|e| StoreError::InvalidBatch(format!("{key}: state does not serialise: {e}")))?;
    let mut item = HashMap::from([
        (
            PK.to_owned(),
            AttributeValue::S(keys::usage_partition(&key.tenant)),
        ),
        (SK.to_owned(), AttributeValue::S(sk)),
        (KIND.to_owned(), AttributeValue::S(state.kind().to_owned())),
        (STATE.to_owned(), AttributeValue::S(json)),
        (VERSION.to_owned(), AttributeValue::N(version.to_string())),
    ]);
    if let Some(expiry) = expiry {
        item.insert(
            TTL.to_owned(),
            AttributeValue::N(expiry.timestamp().to_string()),
        );
    }
    Ok(item)
}

/// A usage row read back from a counter or rollup item of `tenant`.
pub(crate) fn usage_row(tenant: &TenantId, item: &Item) -> Result<UsageRow, StoreError> {
    let sk = string(item, SK).ok_or_else(|| corrupt(item, "no sort key"))?;
    let key = keys::parse_usage(tenant, sk).ok_or_else(|| corrupt(item, "not a usage key"))?;
    Ok(UsageRow {
        key,
        state: state_of(item)?,
    })
}

/// `value` as the JSON kept in a document item; `what` names it in the error.
pub(crate) fn to_json<T: serde::Serialize>(what: &str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::InvalidBatch(format!("{what}: does not serialise: {e}")))
}

/// The JSON document of a document item.
pub(crate) fn parse_doc<T: serde::de::DeserializeOwned>(item: &Item) -> Result<T, StoreError> {
    let json = string(item, DOC).ok_or_else(|| corrupt(item, "no document"))?;
    serde_json::from_str(json).map_err(|e| corrupt(item, format!("document: {e}")))
}
