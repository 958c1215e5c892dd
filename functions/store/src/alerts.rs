//! Budget alerts, tenant webhooks and the budget block list.
//!
//! | item | PK | SK |
//! |---|---|---|
//! | alert (one per month and trigger) | `TENANT#{t}` | `ALERT#{yyyy-mm}#{trigger}` |
//! | webhook (URL and signing secret) | `TENANT#{t}` | `WEBHOOK` |
//! | budget block | `BUDGET_BLOCKS` | `TENANT#{t}` |
//!
//! An alert is created with "only if absent", which is what makes it exactly once per
//! (tenant, month, trigger) whatever runs concurrently. Its delivery state and its
//! acknowledgement are separate attributes updated in place, so the budget run recording
//! an attempt and a tenant acknowledging never overwrite each other.
//!
//! The block list is one partition, so the edge snapshot reads every blocked tenant with
//! a single query.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use tollgate_core::alert::{Alert, AlertId, Delivery};
use tollgate_core::ids::TenantId;
use tollgate_core::window::Window;

use crate::DynamoDbStore;
use crate::codec::{self, Item};
use crate::directory::WriteMode;
use crate::error::StoreError;
use crate::table::{PK, SK, keys};

const DELIVERY: &str = "delivery";
const ACKNOWLEDGED: &str = "ackAt";
const ATTEMPTS: &str = "att";
const WEBHOOK: &str = "WEBHOOK";
const BLOCKS: &str = "BUDGET_BLOCKS";

/// Where a tenant's alerts are delivered. The secret signs every delivery; it is
/// stored because it must be used, and shown to the admin only when it is created.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEndpoint {
    pub url: String,
    pub secret: String,
    pub created_at: DateTime<Utc>,
}

impl std::fmt::Debug for WebhookEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookEndpoint")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// A tenant blocked because its budget with a hard limit is used up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BudgetBlock {
    pub tenant: TenantId,
    /// The month the budget is used up in: a new month lifts the block.
    pub month: Window,
    pub since: DateTime<Utc>,
}

fn alert_sort(id: &AlertId) -> Result<String, StoreError> {
    let (month, trigger) =
        AlertId::parse(id.as_str()).map_err(|e| StoreError::InvalidBatch(e.to_string()))?;
    Ok(format!("ALERT#{}#{}", month.key(), trigger.key()))
}

/// An alert as stored: the document written at creation, with its delivery and
/// acknowledgement as they are now.
fn alert_of(item: &Item) -> Result<Alert, StoreError> {
    let doc = codec::string(item, codec::DOC).ok_or_else(|| codec::corrupt(item, "no document"))?;
    let mut alert: Alert =
        serde_json::from_str(doc).map_err(|e| codec::corrupt(item, format!("alert: {e}")))?;
    if let Some(delivery) = codec::string(item, DELIVERY) {
        alert.delivery = serde_json::from_str(delivery)
            .map_err(|e| codec::corrupt(item, format!("delivery: {e}")))?;
    }
    if let Some(at) = codec::string(item, ACKNOWLEDGED) {
        alert.acknowledged_at = Some(
            DateTime::parse_from_rfc3339(at)
                .map_err(|e| codec::corrupt(item, format!("acknowledgement: {e}")))?
                .to_utc(),
        );
    }
    Ok(alert)
}

impl DynamoDbStore {
    /// Stores `alert` unless its (tenant, month, trigger) already has one: `true` when
    /// this call created it.
    pub async fn create_alert(&self, alert: &Alert) -> Result<bool, StoreError> {
        let sk = alert_sort(&alert.id)?;
        let item: Item = HashMap::from([
            (
                PK.to_owned(),
                AttributeValue::S(keys::tenant(&alert.tenant)),
            ),
            (SK.to_owned(), AttributeValue::S(sk.clone())),
            (
                codec::DOC.to_owned(),
                AttributeValue::S(codec::to_json(&sk, alert)?),
            ),
            (
                DELIVERY.to_owned(),
                AttributeValue::S(codec::to_json(&sk, &alert.delivery)?),
            ),
        ]);
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .send()
            .await;
        match put {
            Ok(_) => Ok(true),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(err) => Err(StoreError::from_sdk("PutItem", err)),
        }
    }

    /// `tenant`'s alerts of `month` (every month when `None`), oldest month first.
    pub async fn alerts(
        &self,
        tenant: &TenantId,
        month: Option<Window>,
    ) -> Result<Vec<Alert>, StoreError> {
        let prefix = match month {
            Some(month) => format!("ALERT#{}#", month.key()),
            None => "ALERT#".to_owned(),
        };
        let items = self.query_prefix(keys::tenant(tenant), &prefix).await?;
        items.iter().map(alert_of).collect()
    }

    /// Records where the delivery of alert `id` stands, if its attempts so far are still
    /// `attempts_before` (so two runs never both claim one attempt): `false` when another
    /// run moved it first; `NotFound` for an unknown alert.
    pub async fn record_alert_delivery(
        &self,
        tenant: &TenantId,
        id: &AlertId,
        attempts_before: u32,
        delivery: &Delivery,
    ) -> Result<bool, StoreError> {
        let sk = alert_sort(id)?;
        let output = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(keys::tenant(tenant)))
            .key(SK, AttributeValue::S(sk.clone()))
            .update_expression("SET #delivery = :delivery, #attempts = :attempts")
            .condition_expression(
                "attribute_exists(#pk) AND (#attempts = :before OR (attribute_not_exists(#attempts) AND :before = :zero))",
            )
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#delivery", DELIVERY)
            .expression_attribute_names("#attempts", ATTEMPTS)
            .expression_attribute_values(":delivery", AttributeValue::S(codec::to_json(&sk, delivery)?))
            .expression_attribute_values(":attempts", AttributeValue::N(delivery.attempts.to_string()))
            .expression_attribute_values(":before", AttributeValue::N(attempts_before.to_string()))
            .expression_attribute_values(":zero", AttributeValue::N("0".to_owned()))
            .send()
            .await;
        match output {
            Ok(_) => Ok(true),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(err) => Err(StoreError::from_sdk("UpdateItem", err)),
        }
    }

    /// Marks alert `id` acknowledged at `at` (the first acknowledgement stays) and returns
    /// it; `NotFound` for an unknown alert.
    pub async fn acknowledge_alert(
        &self,
        tenant: &TenantId,
        id: &AlertId,
        at: DateTime<Utc>,
    ) -> Result<Alert, StoreError> {
        let sk = alert_sort(id)?;
        let not_found = || StoreError::NotFound {
            what: format!("alert {sk} of {tenant}"),
        };
        let output = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(keys::tenant(tenant)))
            .key(SK, AttributeValue::S(sk.clone()))
            .update_expression("SET #ack = if_not_exists(#ack, :at)")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#ack", ACKNOWLEDGED)
            .expression_attribute_values(
                ":at",
                AttributeValue::S(at.to_rfc3339_opts(SecondsFormat::Millis, true)),
            )
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match output {
            Ok(output) => output
                .attributes()
                .map(alert_of)
                .transpose()?
                .ok_or_else(not_found),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(not_found())
            }
            Err(err) => Err(StoreError::from_sdk("UpdateItem", err)),
        }
    }

    /// Sets (or replaces) `tenant`'s webhook.
    pub async fn put_webhook(
        &self,
        tenant: &TenantId,
        webhook: &WebhookEndpoint,
    ) -> Result<(), StoreError> {
        self.put_doc(
            keys::tenant(tenant),
            WEBHOOK,
            webhook,
            None,
            WriteMode::Upsert,
        )
        .await
    }

    /// `tenant`'s webhook, if one is set.
    pub async fn webhook(&self, tenant: &TenantId) -> Result<Option<WebhookEndpoint>, StoreError> {
        self.get_doc(keys::tenant(tenant), WEBHOOK).await
    }

    /// Removes `tenant`'s webhook; `false` if it had none.
    pub async fn delete_webhook(&self, tenant: &TenantId) -> Result<bool, StoreError> {
        self.delete_item(keys::tenant(tenant), WEBHOOK).await
    }

    /// Puts `tenant` on the budget block list (replacing an older block).
    pub async fn block_for_budget(&self, block: &BudgetBlock) -> Result<(), StoreError> {
        self.put_doc(
            BLOCKS.to_owned(),
            &keys::tenant(&block.tenant),
            block,
            None,
            WriteMode::Upsert,
        )
        .await
    }

    /// Takes `tenant` off the budget block list; `false` if it was not on it.
    pub async fn lift_budget_block(&self, tenant: &TenantId) -> Result<bool, StoreError> {
        self.delete_item(BLOCKS.to_owned(), &keys::tenant(tenant))
            .await
    }

    /// Every tenant on the budget block list, whatever the month (the reader decides
    /// whether a block of an earlier month still holds).
    pub async fn budget_blocks(&self) -> Result<Vec<BudgetBlock>, StoreError> {
        self.query_docs(BLOCKS.to_owned(), "TENANT#").await
    }

    async fn delete_item(&self, pk: String, sk: &str) -> Result<bool, StoreError> {
        let output = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(pk))
            .key(SK, AttributeValue::S(sk.to_owned()))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("DeleteItem", e))?;
        Ok(output.attributes().is_some())
    }
}
