//! The single table: its definition, its key design and its retention rules.
//!
//! | item | PK | SK | TTL |
//! |---|---|---|---|
//! | tenant profile | `TENANT#{t}` | `PROFILE` | – |
//! | API key (digest only) | `KEY#{sha256}` | `KEY` | – |
//! | plan version | `PLAN#{name}` | `V#{effective_from}` | – |
//! | budget | `TENANT#{t}` | `BUDGET` | – |
//! | hourly counter | `USAGE#{t}` | `H#{yyyy-mm-ddThh}#{meter}[#{dims}]` | 35 d |
//! | daily rollup | `USAGE#{t}` | `D#{yyyy-mm-dd}#{meter}[#{dims}]` | 400 d |
//! | monthly rollup | `USAGE#{t}` | `M#{yyyy-mm}#{meter}[#{dims}]` | – |
//! | dedupe marker | `DEDUPE#{batch id}` | `CHUNK#{i}` | 21 d |
//! | journal chunk | `JOURNAL` | `{claimed at}#{journal id}#{i}` | – |
//! | alert | `TENANT#{t}` | `ALERT#{yyyy-mm}#{trigger}` | – |
//! | webhook | `TENANT#{t}` | `WEBHOOK` | – |
//! | budget block | `BUDGET_BLOCKS` | `TENANT#{t}` | – |
//! | Stripe ledger totals | `TENANT#{t}` | `STRIPE#{meter}#M#{yyyy-mm}` | – |
//! | Stripe ledger event | `TENANT#{t}` | `STRIPE#{meter}#E#{yyyy-mm-ddThh}#{seq}` | – |
//! | month statement | `TENANT#{t}` | `STATEMENT#{yyyy-mm}` | – |
//!
//! Usage of one tenant lives under one partition key and sorts by time, so "this tenant,
//! this range" is a single `Query` that cannot reach another tenant's items. A sparse
//! global index (`gsi1pk`/`gsi1sk`) lists entities by kind: all tenants, a tenant's keys,
//! a plan's versions.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TableStatus, TimeToLiveSpecification,
};
use chrono::{DateTime, Duration, Utc};
use tollgate_core::ids::{MeterName, TenantId};
use tollgate_core::usage::{Dimensions, UsageKey};
use tollgate_core::window::{Granularity, Window};

use crate::error::StoreError;

// The table's definition, public so a deployment (infra/template.yaml) can be checked
// against what [`create_table`] creates. Every key attribute is a string (`S`) and the
// index projects all attributes.
/// The partition key attribute.
pub const PK: &str = "pk";
/// The sort key attribute.
pub const SK: &str = "sk";
/// The TTL attribute (epoch seconds).
pub const TTL: &str = "ttl";
/// The sparse listing index.
pub const GSI1: &str = "gsi1";
/// `gsi1`'s partition key attribute.
pub const GSI1_PK: &str = "gsi1pk";
/// `gsi1`'s sort key attribute.
pub const GSI1_SK: &str = "gsi1sk";

/// How long each kind of item is kept. `None` keeps it forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub hourly: Option<Duration>,
    pub daily: Option<Duration>,
    pub monthly: Option<Duration>,
    /// Dedupe markers must outlive every redelivery: keep them longer than the queue's
    /// retention (SQS: at most 14 days) plus the late-event horizon.
    pub dedupe: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            hourly: Some(Duration::days(35)),
            daily: Some(Duration::days(400)),
            monthly: None,
            dedupe: Duration::days(21),
        }
    }
}

impl Retention {
    /// When an item of `window` expires: the window's end plus its retention.
    pub fn expiry(&self, window: &Window) -> Option<DateTime<Utc>> {
        let keep = match window.granularity() {
            Granularity::Minute | Granularity::Hour => self.hourly,
            Granularity::Day => self.daily,
            Granularity::Month => self.monthly,
        }?;
        Some(window.end() + keep)
    }
}

/// Key builders. One place knows how keys are spelled.
pub(crate) mod keys {
    use super::*;

    pub fn tenant(tenant: &TenantId) -> String {
        format!("TENANT#{tenant}")
    }

    pub fn usage_partition(tenant: &TenantId) -> String {
        format!("USAGE#{tenant}")
    }

    pub fn granularity_prefix(granularity: Granularity) -> Option<&'static str> {
        match granularity {
            Granularity::Minute => None,
            Granularity::Hour => Some("H"),
            Granularity::Day => Some("D"),
            Granularity::Month => Some("M"),
        }
    }

    /// `H#2026-11-23T15#api_requests` or `H#2026-11-23T15#api_requests#route=%2Fv1`.
    pub fn usage_sort(key: &UsageKey) -> Option<String> {
        let prefix = granularity_prefix(key.window.granularity())?;
        let mut sk = format!("{prefix}#{}#{}", key.window.key(), key.meter);
        if !key.dimensions.is_empty() {
            sk.push('#');
            sk.push_str(&key.dimensions.key());
        }
        Some(sk)
    }

    /// Reads a usage key back from its partition and sort keys.
    pub fn parse_usage(tenant: &TenantId, sk: &str) -> Option<UsageKey> {
        let mut parts = sk.splitn(4, '#');
        let granularity = match parts.next()? {
            "H" => Granularity::Hour,
            "D" => Granularity::Day,
            "M" => Granularity::Month,
            _ => return None,
        };
        let window = Window::parse_key(granularity, parts.next()?).ok()?;
        let meter = MeterName::new(parts.next()?).ok()?;
        let dimensions = match parts.next() {
            Some(dims) => Dimensions::from_key(dims)?,
            None => Dimensions::default(),
        };
        Some(UsageKey {
            tenant: tenant.clone(),
            meter,
            window,
            dimensions,
        })
    }

    pub fn dedupe_partition(batch_id: &str) -> String {
        format!("DEDUPE#{batch_id}")
    }

    /// Chunk 0 marks a whole batch, or the first content chunk of a batch too wide for
    /// one claim (see `apply`).
    pub fn dedupe_sort(chunk: usize) -> String {
        format!("CHUNK#{chunk}")
    }

    pub const JOURNAL_PARTITION: &str = "JOURNAL";

    /// Sorts journal chunks by claim time, so "claimed before t" is one key range.
    pub fn journal_sort(claimed_at: &DateTime<Utc>, journal: &str, chunk: usize) -> String {
        format!("{}#{journal}#{chunk:04}", journal_time(claimed_at))
    }

    /// The fixed-width time prefix of journal sort keys (compares like the time).
    pub fn journal_time(at: &DateTime<Utc>) -> String {
        at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    }

    pub fn api_key(hash: &str) -> String {
        format!("KEY#{hash}")
    }

    pub fn plan(name: &str) -> String {
        format!("PLAN#{name}")
    }

    pub fn plan_version(effective_from: &DateTime<Utc>) -> String {
        format!(
            "V#{}",
            effective_from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    }
}

/// Creates the table (on-demand, TTL on `ttl`, one sparse GSI) if it does not exist and
/// waits until it is active. Safe to call on every start.
pub async fn create_table(client: &Client, table: &str) -> Result<(), StoreError> {
    let string_attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
    };
    let key = |name: &str, key_type: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(key_type)
            .build()
    };
    let gsi = GlobalSecondaryIndex::builder()
        .index_name(GSI1)
        .key_schema(build(key(GSI1_PK, KeyType::Hash))?)
        .key_schema(build(key(GSI1_SK, KeyType::Range))?)
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::All)
                .build(),
        )
        .build();
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(build(string_attr(PK))?)
        .attribute_definitions(build(string_attr(SK))?)
        .attribute_definitions(build(string_attr(GSI1_PK))?)
        .attribute_definitions(build(string_attr(GSI1_SK))?)
        .key_schema(build(key(PK, KeyType::Hash))?)
        .key_schema(build(key(SK, KeyType::Range))?)
        .global_secondary_indexes(build(gsi)?)
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()) => {}
        Err(err) => return Err(StoreError::from_sdk("CreateTable", err)),
    }
    for _ in 0..120 {
        let described = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("DescribeTable", e))?;
        if described.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let ttl = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| StoreError::from_sdk("DescribeTimeToLive", e))?;
    let enabled = ttl
        .time_to_live_description()
        .and_then(|d| d.attribute_name())
        .is_some_and(|name| name == TTL);
    if !enabled {
        client
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(TTL)
                    .enabled(true)
                    .build()
                    .map_err(|e| StoreError::InvalidBatch(format!("TTL specification: {e}")))?,
            )
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("UpdateTimeToLive", e))?;
    }
    Ok(())
}

fn build<T>(built: Result<T, aws_sdk_dynamodb::error::BuildError>) -> Result<T, StoreError> {
    built.map_err(|e| StoreError::InvalidBatch(format!("table definition: {e}")))
}

#[cfg(test)]
mod tests {
    use super::keys::*;
    use super::*;

    #[test]
    fn usage_sort_keys_round_trip_with_dimensions() {
        let tenant = TenantId::new("acme").unwrap();
        let mut dimensions = Dimensions::new();
        dimensions.insert("route", "/v1/a#b").unwrap();
        let key = UsageKey {
            tenant: tenant.clone(),
            meter: MeterName::new("api_requests").unwrap(),
            window: Window::parse_key(Granularity::Hour, "2026-11-23T15").unwrap(),
            dimensions,
        };
        let sk = usage_sort(&key).unwrap();
        assert_eq!(sk, "H#2026-11-23T15#api_requests#route=/v1/a%23b");
        assert_eq!(parse_usage(&tenant, &sk).unwrap(), key);
    }

    #[test]
    fn minute_rows_have_no_storage_key() {
        let key = UsageKey {
            tenant: TenantId::new("acme").unwrap(),
            meter: MeterName::new("m").unwrap(),
            window: Window::parse_key(Granularity::Minute, "2026-11-23T15:01").unwrap(),
            dimensions: Dimensions::default(),
        };
        assert_eq!(usage_sort(&key), None);
    }

    #[test]
    fn retention_follows_the_policy() {
        let r = Retention::default();
        let hour = Window::parse_key(Granularity::Hour, "2026-11-23T15").unwrap();
        assert_eq!(r.expiry(&hour), Some(hour.end() + Duration::days(35)));
        let month = Window::parse_key(Granularity::Month, "2026-11").unwrap();
        assert_eq!(r.expiry(&month), None);
    }
}
