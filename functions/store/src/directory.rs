//! Tenants and API keys.
//!
//! Profiles and key records are small JSON documents under their own keys, listed
//! through the sparse `gsi1` index (`TENANTS` for all tenants, `KEYS#{tenant}` for a
//! tenant's keys). A key is found by the SHA-256 digest of the presented secret; the
//! secret itself is never stored.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tollgate_core::ids::TenantId;
use tollgate_core::tenant::{ApiKeyHash, ApiKeyRecord, TenantProfile};

use crate::DynamoDbStore;
use crate::codec::{self, DOC, Item, parse_doc};
use crate::error::StoreError;
use crate::table::{GSI1, GSI1_PK, GSI1_SK, PK, SK, keys};

const TENANTS_INDEX: &str = "TENANTS";
const PROFILE: &str = "PROFILE";
const KEY: &str = "KEY";

/// How a document write treats an existing item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteMode {
    /// Fails with `AlreadyExists` if the item exists.
    Create,
    /// Fails with `NotFound` unless the item exists.
    Replace,
    /// Writes whatever is there.
    Upsert,
}

/// The item of a JSON document under `pk`/`sk`, optionally listed in `gsi1`.
pub(crate) fn doc_item<T: Serialize>(
    pk: &str,
    sk: &str,
    doc: &T,
    index: Option<(String, String)>,
) -> Result<Item, StoreError> {
    let json = codec::to_json(pk, doc)?;
    let mut item: Item = HashMap::from([
        (PK.to_owned(), AttributeValue::S(pk.to_owned())),
        (SK.to_owned(), AttributeValue::S(sk.to_owned())),
        (DOC.to_owned(), AttributeValue::S(json)),
    ]);
    if let Some((gsi_pk, gsi_sk)) = index {
        item.insert(GSI1_PK.to_owned(), AttributeValue::S(gsi_pk));
        item.insert(GSI1_SK.to_owned(), AttributeValue::S(gsi_sk));
    }
    Ok(item)
}

impl DynamoDbStore {
    /// Writes `doc` as JSON under `pk`/`sk`, optionally listed in `gsi1`.
    pub(crate) async fn put_doc<T: Serialize>(
        &self,
        pk: String,
        sk: &str,
        doc: &T,
        index: Option<(String, String)>,
        mode: WriteMode,
    ) -> Result<(), StoreError> {
        let item = doc_item(&pk, sk, doc, index)?;
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        request = match mode {
            WriteMode::Create => request
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", PK),
            WriteMode::Replace => request
                .condition_expression("attribute_exists(#pk)")
                .expression_attribute_names("#pk", PK),
            WriteMode::Upsert => request,
        };
        match request.send().await {
            Ok(_) => Ok(()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                let what = format!("{pk} / {sk}");
                Err(match mode {
                    WriteMode::Create => StoreError::AlreadyExists { what },
                    _ => StoreError::NotFound { what },
                })
            }
            Err(err) => Err(StoreError::from_sdk("PutItem", err)),
        }
    }

    /// Reads the JSON document under `pk`/`sk`, strongly consistent.
    pub(crate) async fn get_doc<T: DeserializeOwned>(
        &self,
        pk: String,
        sk: &str,
    ) -> Result<Option<T>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(pk))
            .key(SK, AttributeValue::S(sk.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("GetItem", e))?;
        output.item().map(parse_doc).transpose()
    }

    /// Documents listed under `gsi_pk` in `gsi1`, in `gsi1sk` order, after `after`.
    pub(crate) async fn list_docs<T: DeserializeOwned>(
        &self,
        gsi_pk: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<T>, StoreError> {
        let mut request = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(GSI1)
            .expression_attribute_names("#gpk", GSI1_PK)
            .expression_attribute_values(":gpk", AttributeValue::S(gsi_pk.to_owned()));
        request = match after {
            Some(after) => request
                .key_condition_expression("#gpk = :gpk AND #gsk > :after")
                .expression_attribute_names("#gsk", GSI1_SK)
                .expression_attribute_values(":after", AttributeValue::S(after.to_owned())),
            None => request.key_condition_expression("#gpk = :gpk"),
        };
        let mut items = request.into_paginator().items().send();
        let mut docs = Vec::new();
        while docs.len() < limit {
            match items.try_next().await {
                Ok(Some(item)) => docs.push(parse_doc(&item)?),
                Ok(None) => break,
                Err(e) => return Err(StoreError::from_sdk("Query", e)),
            }
        }
        Ok(docs)
    }

    /// Documents under partition `pk` whose sort key begins with `prefix`, in order.
    pub(crate) async fn query_docs<T: DeserializeOwned>(
        &self,
        pk: String,
        prefix: &str,
    ) -> Result<Vec<T>, StoreError> {
        self.query_prefix(pk, prefix)
            .await?
            .iter()
            .map(parse_doc)
            .collect()
    }

    /// Every item under partition `pk` whose sort key begins with `prefix`, in sort-key
    /// order, read strongly consistent.
    pub(crate) async fn query_prefix(
        &self,
        pk: String,
        prefix: &str,
    ) -> Result<Vec<Item>, StoreError> {
        self.client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .expression_attribute_values(":pk", AttributeValue::S(pk))
            .expression_attribute_values(":prefix", AttributeValue::S(prefix.to_owned()))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| StoreError::from_sdk("Query", e))
    }

    /// Every item under partition `pk` whose sort key lies in `[lower, upper]`, in
    /// sort-key order, read strongly consistent.
    pub(crate) async fn query_between(
        &self,
        pk: String,
        lower: String,
        upper: String,
    ) -> Result<Vec<Item>, StoreError> {
        self.client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND #sk BETWEEN :lower AND :upper")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .expression_attribute_values(":pk", AttributeValue::S(pk))
            .expression_attribute_values(":lower", AttributeValue::S(lower))
            .expression_attribute_values(":upper", AttributeValue::S(upper))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| StoreError::from_sdk("Query", e))
    }

    pub async fn create_tenant(&self, profile: &TenantProfile) -> Result<(), StoreError> {
        self.put_doc(
            keys::tenant(&profile.tenant),
            PROFILE,
            profile,
            Some((TENANTS_INDEX.to_owned(), profile.tenant.to_string())),
            WriteMode::Create,
        )
        .await
    }

    /// Replaces an existing tenant's profile; fails with `NotFound` for unknown tenants.
    pub async fn update_tenant(&self, profile: &TenantProfile) -> Result<(), StoreError> {
        self.put_doc(
            keys::tenant(&profile.tenant),
            PROFILE,
            profile,
            Some((TENANTS_INDEX.to_owned(), profile.tenant.to_string())),
            WriteMode::Replace,
        )
        .await
    }

    pub async fn tenant(&self, tenant: &TenantId) -> Result<Option<TenantProfile>, StoreError> {
        self.get_doc(keys::tenant(tenant), PROFILE).await
    }

    /// Up to `limit` tenants in id order, starting after `after`: page through all
    /// tenants by passing the last id of the previous page.
    pub async fn tenants(
        &self,
        after: Option<&TenantId>,
        limit: usize,
    ) -> Result<Vec<TenantProfile>, StoreError> {
        self.list_docs(TENANTS_INDEX, after.map(TenantId::as_str), limit)
            .await
    }

    /// Stores a key record; the digest must be new.
    pub async fn create_api_key(&self, record: &ApiKeyRecord) -> Result<(), StoreError> {
        self.put_doc(
            keys::api_key(record.hash.as_hex()),
            KEY,
            record,
            Some((key_listing(record.tenant.as_ref()), key_order(record))),
            WriteMode::Create,
        )
        .await
    }

    /// The record of the key whose digest is `hash`, revoked or not.
    pub async fn api_key(&self, hash: &ApiKeyHash) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.get_doc(keys::api_key(hash.as_hex()), KEY).await
    }

    /// Marks a key revoked at `at`. Revoking twice keeps the first time.
    pub async fn revoke_api_key(
        &self,
        hash: &ApiKeyHash,
        at: DateTime<Utc>,
    ) -> Result<ApiKeyRecord, StoreError> {
        let mut record = self
            .api_key(hash)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: "API key".to_owned(),
            })?;
        if record.revoked_at.is_none() {
            record.revoked_at = Some(at);
            self.put_doc(
                keys::api_key(hash.as_hex()),
                KEY,
                &record,
                Some((key_listing(record.tenant.as_ref()), key_order(&record))),
                WriteMode::Replace,
            )
            .await?;
        }
        Ok(record)
    }

    /// All key records of `tenant` (or the admin keys for `None`), oldest first.
    pub async fn api_keys(
        &self,
        tenant: Option<&TenantId>,
    ) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.list_docs(&key_listing(tenant), None, usize::MAX).await
    }
}

fn key_listing(tenant: Option<&TenantId>) -> String {
    match tenant {
        Some(tenant) => format!("KEYS#{tenant}"),
        None => "KEYS#admin".to_owned(),
    }
}

fn key_order(record: &ApiKeyRecord) -> String {
    format!(
        "{}#{}",
        record
            .created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        record.hash.as_hex()
    )
}
