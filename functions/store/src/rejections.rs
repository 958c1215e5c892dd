//! Rejected messages: the record that keeps "nothing lost silently" true.
//!
//! A message that can never be applied (malformed, unknown contract, too old) is stored
//! here with its reason and acknowledged, instead of cycling through retries to the DLQ.
//! The record is keyed by the queue's message id, so a redelivery of the same message
//! records it once.

use tollgate_core::message::Rejection;

use aws_sdk_dynamodb::types::{Put, TransactWriteItem};

use crate::DynamoDbStore;
use crate::directory::{WriteMode, doc_item};
use crate::error::StoreError;

const REJECTIONS_INDEX: &str = "REJECTED";
const MESSAGE: &str = "MSG";

/// The listing position of a rejection: pass the last one seen as `after` to page on.
pub fn rejection_cursor(rejection: &Rejection) -> String {
    format!(
        "{}#{}",
        rejection
            .received_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        rejection.message_id
    )
}

fn partition(rejection: &Rejection) -> String {
    match &rejection.tenant {
        Some(tenant) => format!("REJECTED#{tenant}"),
        None => "REJECTED#-".to_owned(),
    }
}

fn sort(rejection: &Rejection) -> String {
    format!("{MESSAGE}#{}", rejection.message_id)
}

fn listing(rejection: &Rejection) -> Option<(String, String)> {
    Some((REJECTIONS_INDEX.to_owned(), rejection_cursor(rejection)))
}

impl DynamoDbStore {
    /// Records `rejection` once; recording the same message id again keeps the first.
    pub async fn record_rejection(&self, rejection: &Rejection) -> Result<(), StoreError> {
        let written = self
            .put_doc(
                partition(rejection),
                &sort(rejection),
                rejection,
                listing(rejection),
                WriteMode::Create,
            )
            .await;
        match written {
            Err(StoreError::AlreadyExists { .. }) => Ok(()),
            other => other,
        }
    }

    /// Up to `limit` rejections, oldest first, after the cursor `after`
    /// (see [`rejection_cursor`]).
    pub async fn rejections(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Rejection>, StoreError> {
        self.list_docs(REJECTIONS_INDEX, after, limit).await
    }

    /// `rejection` as one action of a transaction, so a refusal is recorded together with
    /// the writes it stands in for.
    pub(crate) fn rejection_put(
        &self,
        rejection: &Rejection,
    ) -> Result<TransactWriteItem, StoreError> {
        let item = doc_item(
            &partition(rejection),
            &sort(rejection),
            rejection,
            listing(rejection),
        )?;
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .build()
            .map_err(|e| StoreError::InvalidBatch(format!("rejection: {e}")))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }
}
