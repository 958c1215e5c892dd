//! Shared set-up for store tests: a fresh table in DynamoDB Local per test.

// Test helpers: panicking on broken set-up is the point, and each test binary uses a
// different subset of them.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU32, Ordering};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tollgate_core::aggregate::{AggregateState, Aggregation, Observation, ObservedValue};
use tollgate_core::ids::{MeterName, TenantId};
use tollgate_core::usage::{Dimensions, UsageKey, UsageRow};
use tollgate_core::window::{Granularity, Window};
use tollgate_store::DynamoDbStore;

static TABLES: AtomicU32 = AtomicU32::new(0);

/// A store on a table of its own, so tests never see each other's items.
pub async fn fresh_store(name: &str) -> DynamoDbStore {
    let endpoint = tollgate_devstack::dynamodb_endpoint_for_tests();
    let table = format!(
        "{name}-{}-{}",
        std::process::id(),
        TABLES.fetch_add(1, Ordering::Relaxed)
    );
    let store = DynamoDbStore::new(tollgate_store::local_client(&endpoint), table);
    store.ensure_table().await.expect("create table");
    store
}

pub fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

pub fn tenant(id: &str) -> TenantId {
    TenantId::new(id).unwrap()
}

pub fn hour_key(tenant_id: &str, meter: &str, hour: &str) -> UsageKey {
    UsageKey {
        tenant: tenant(tenant_id),
        meter: MeterName::new(meter).unwrap(),
        window: Window::parse_key(Granularity::Hour, hour).unwrap(),
        dimensions: Dimensions::default(),
    }
}

pub fn count_row(key: UsageKey, n: u64) -> UsageRow {
    UsageRow {
        key,
        state: AggregateState::Count { n },
    }
}

pub fn sum_row(key: UsageKey, sum: Decimal) -> UsageRow {
    UsageRow {
        key,
        state: AggregateState::Sum { sum },
    }
}

/// A state of `aggregation` that observed `values` (numbers) at `time`.
pub fn observed(aggregation: &Aggregation, values: &[i64], time: DateTime<Utc>) -> AggregateState {
    let mut state = AggregateState::identity(aggregation);
    for (i, v) in values.iter().enumerate() {
        let id = format!("e{i}-{v}");
        state
            .observe(
                aggregation,
                &Observation {
                    time,
                    event_id: &id,
                    value: ObservedValue::Number(Decimal::from(*v)),
                },
            )
            .unwrap();
    }
    state
}
