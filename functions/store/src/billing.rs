//! The billing ledger and month statements.
//!
//! | item | PK | SK |
//! |---|---|---|
//! | ledger totals of a meter's month | `TENANT#{t}` | `STRIPE#{meter}#M#{yyyy-mm}` |
//! | ledger event | `TENANT#{t}` | `STRIPE#{meter}#E#{yyyy-mm-ddThh}#{seq:05}` |
//! | month statement | `TENANT#{t}` | `STATEMENT#{yyyy-mm}` |
//!
//! An event is recorded as `pending` in the same transaction that moves its month's
//! totals (guarded by the totals' version), *before* it is sent; it is settled (`sent`,
//! `rejected`, `expired`) in a second transaction after Stripe answers. A crash in between
//! leaves a pending event, which the next run resends with the same identifier and value.
//! A lost race (another run recorded or settled first) is reported as `false`, never as
//! a second write: the caller re-reads and carries on.

use std::collections::HashMap;

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use chrono::{DateTime, Utc};
use tollgate_core::billing::{EventStatus, LedgerEvent, MeterLedger, Reconciliation};
use tollgate_core::ids::{MeterName, TenantId};
use tollgate_core::invoice::Statement;
use tollgate_core::meter::MeterCatalog;
use tollgate_core::usage::quantities_by_meter;
use tollgate_core::window::Granularity;
use tollgate_core::window::Window;

use crate::DynamoDbStore;
use crate::codec::{self, Item};
use crate::directory::WriteMode;
use crate::error::StoreError;
use crate::table::{PK, SK, keys};

const VERSION: &str = "ver";
const STATUS: &str = "st";

fn month_sort(meter: &MeterName, month: Window) -> String {
    format!("STRIPE#{meter}#M#{}", month.key())
}

fn event_sort(meter: &MeterName, hour: Window, sequence: u32) -> String {
    format!("STRIPE#{meter}#E#{}#{sequence:05}", hour.key())
}

fn statement_sort(month: Window) -> String {
    format!("STATEMENT#{}", month.key())
}

fn status_name(status: EventStatus) -> &'static str {
    match status {
        EventStatus::Pending => "pending",
        EventStatus::Sent => "sent",
        EventStatus::Rejected => "rejected",
        EventStatus::Carried => "carried",
        EventStatus::Expired => "expired",
    }
}

impl DynamoDbStore {
    /// The ledger totals of `tenant`'s `meter` in `month`; `None` before its first event.
    pub async fn meter_ledger(
        &self,
        tenant: &TenantId,
        meter: &MeterName,
        month: Window,
    ) -> Result<Option<MeterLedger>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(keys::tenant(tenant)))
            .key(SK, AttributeValue::S(month_sort(meter, month)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("GetItem", e))?;
        output.item().map(codec::parse_doc).transpose()
    }

    /// The ledger events of `tenant`'s `meter` for the hours `[from, to]`, by hour then
    /// sequence.
    pub async fn ledger_events(
        &self,
        tenant: &TenantId,
        meter: &MeterName,
        from: Window,
        to: Window,
    ) -> Result<Vec<LedgerEvent>, StoreError> {
        let lower = format!("STRIPE#{meter}#E#{}#", from.key());
        let upper = format!("STRIPE#{meter}#E#{}#~", to.key());
        let items = self
            .query_between(keys::tenant(tenant), lower, upper)
            .await?;
        items.iter().map(codec::parse_doc).collect()
    }

    /// Records `event` (new, under its hour and sequence) and the month's totals moving
    /// from version `expected` (`None`: no totals yet) to `after`. `false` when another
    /// writer recorded first: nothing was written.
    pub async fn record_ledger_event(
        &self,
        event: &LedgerEvent,
        expected: Option<u64>,
        after: &MeterLedger,
    ) -> Result<bool, StoreError> {
        let event_put = self.event_put(event, None)?;
        let month_put = self.ledger_put(event, expected, after)?;
        self.transact(vec![event_put, month_put]).await
    }

    /// Settles a pending `event` (its new status is in `event`) and moves the month's
    /// totals from version `expected` to `after`. `false` when the event was no longer
    /// pending or the totals moved: nothing was written.
    pub async fn settle_ledger_event(
        &self,
        event: &LedgerEvent,
        expected: u64,
        after: &MeterLedger,
    ) -> Result<bool, StoreError> {
        let event_put = self.event_put(event, Some(EventStatus::Pending))?;
        let month_put = self.ledger_put(event, Some(expected), after)?;
        self.transact(vec![event_put, month_put]).await
    }

    /// Writes a pending event back with a note (the last retryable failure) while it
    /// stays pending. `false` when it is no longer pending.
    pub async fn note_pending_event(&self, event: &LedgerEvent) -> Result<bool, StoreError> {
        let put = self.event_put(event, Some(EventStatus::Pending))?;
        self.transact(vec![put]).await
    }

    fn event_put(
        &self,
        event: &LedgerEvent,
        was: Option<EventStatus>,
    ) -> Result<TransactWriteItem, StoreError> {
        let sk = event_sort(&event.meter, event.hour, event.sequence);
        let item: Item = HashMap::from([
            (
                PK.to_owned(),
                AttributeValue::S(keys::tenant(&event.tenant)),
            ),
            (SK.to_owned(), AttributeValue::S(sk.clone())),
            (
                codec::DOC.to_owned(),
                AttributeValue::S(codec::to_json(&sk, event)?),
            ),
            (
                STATUS.to_owned(),
                AttributeValue::S(status_name(event.status).to_owned()),
            ),
        ]);
        let mut put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .expression_attribute_names("#pk", PK);
        put = match was {
            None => put.condition_expression("attribute_not_exists(#pk)"),
            Some(status) => put
                .condition_expression("attribute_exists(#pk) AND #st = :was")
                .expression_attribute_names("#st", STATUS)
                .expression_attribute_values(
                    ":was",
                    AttributeValue::S(status_name(status).to_owned()),
                ),
        };
        let put = put
            .build()
            .map_err(|e| StoreError::InvalidBatch(format!("{sk}: {e}")))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn ledger_put(
        &self,
        event: &LedgerEvent,
        expected: Option<u64>,
        after: &MeterLedger,
    ) -> Result<TransactWriteItem, StoreError> {
        let month = event
            .hour
            .parent()
            .and_then(|day| day.parent())
            .ok_or_else(|| StoreError::InvalidBatch(format!("{}: no month", event.hour)))?;
        let sk = month_sort(&event.meter, month);
        let item: Item = HashMap::from([
            (
                PK.to_owned(),
                AttributeValue::S(keys::tenant(&event.tenant)),
            ),
            (SK.to_owned(), AttributeValue::S(sk.clone())),
            (
                codec::DOC.to_owned(),
                AttributeValue::S(codec::to_json(&sk, after)?),
            ),
            (
                VERSION.to_owned(),
                AttributeValue::N(after.version.to_string()),
            ),
        ]);
        let put = Put::builder().table_name(&self.table).set_item(Some(item));
        let put = match expected {
            None => put
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", PK),
            Some(version) => put
                .condition_expression("#ver = :ver")
                .expression_attribute_names("#ver", VERSION)
                .expression_attribute_values(":ver", AttributeValue::N(version.to_string())),
        }
        .build()
        .map_err(|e| StoreError::InvalidBatch(format!("{sk}: {e}")))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// Runs a transaction; `false` when a condition failed or another transaction
    /// conflicted with it.
    async fn transact(&self, actions: Vec<TransactWriteItem>) -> Result<bool, StoreError> {
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(actions))
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(true),
            Err(err) => err,
        };
        if let Some(TransactWriteItemsError::TransactionCanceledException(cancel)) =
            err.as_service_error()
        {
            let lost_race = cancel.cancellation_reasons().iter().any(|r| {
                matches!(
                    r.code(),
                    Some("ConditionalCheckFailed" | "TransactionConflict")
                )
            });
            if lost_race {
                return Ok(false);
            }
        }
        Err(StoreError::from_sdk("TransactWriteItems", err))
    }

    /// Stores the statement of its month, once: `false` if that month already has one
    /// (a statement is never rewritten).
    pub async fn create_statement(&self, statement: &Statement) -> Result<bool, StoreError> {
        match self
            .put_doc(
                keys::tenant(&statement.invoice.tenant),
                &statement_sort(statement.invoice.period),
                statement,
                None,
                WriteMode::Create,
            )
            .await
        {
            Ok(()) => Ok(true),
            Err(StoreError::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `tenant`'s statement of `month`, if that month was closed.
    pub async fn statement(
        &self,
        tenant: &TenantId,
        month: Window,
    ) -> Result<Option<Statement>, StoreError> {
        self.get_doc(keys::tenant(tenant), &statement_sort(month))
            .await
    }

    /// `tenant`'s ledger of every Stripe-reported meter of `catalog` in `month`, held
    /// against the month's usage as of `now`.
    pub async fn reconciliation(
        &self,
        tenant: &TenantId,
        catalog: &MeterCatalog,
        month: Window,
        now: DateTime<Utc>,
    ) -> Result<Vec<Reconciliation>, StoreError> {
        let rows = self
            .usage_view(tenant, Granularity::Month, month.start(), month.end(), now)
            .await?;
        let usage = quantities_by_meter(&rows, catalog)
            .map_err(|e| StoreError::InvalidBatch(format!("usage of {tenant}: {e}")))?;
        let mut lines = Vec::new();
        for meter in catalog.meters().filter(|m| m.stripe.is_some()) {
            let ledger = self
                .meter_ledger(tenant, &meter.name, month)
                .await?
                .unwrap_or_default();
            let quantity = usage.get(&meter.name).copied().unwrap_or_default();
            lines.push(ledger.reconcile(tenant, &meter.name, month, quantity));
        }
        Ok(lines)
    }

    /// Every statement of `tenant`, oldest month first.
    pub async fn statements(&self, tenant: &TenantId) -> Result<Vec<Statement>, StoreError> {
        self.query_docs(keys::tenant(tenant), "STATEMENT#").await
    }
}
