//! DynamoDB calls as the SDK sends them, recorded by an interceptor on the client: every
//! call by operation, and the items each write or read touched. Shared by the bench parts
//! (ingest's writes per 1,000 events, the API's calls per view, cost's write units).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use aws_sdk_dynamodb::config::interceptors::{
    BeforeDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use serde_json::Value;

#[derive(Debug, Default)]
pub(super) struct Calls {
    pub(super) by_operation: BTreeMap<String, u64>,
    /// (pk, sk) → transactional writes of that item.
    pub(super) transact_writes: HashMap<(String, String), u64>,
    /// (pk, sk) → standard (non-transactional) writes.
    pub(super) writes: HashMap<(String, String), u64>,
    /// (pk, sk) → consistent `BatchGetItem` reads.
    pub(super) reads: HashMap<(String, String), u64>,
    /// Responses with an error status (their writes are counted above all the same).
    pub(super) failed: u64,
    /// Journal chunks as put by their claim: (pk, sk) → (bytes, counters). They are
    /// deleted by the end of a run, so their size must be taken from the request; their
    /// delete is billed on that size too.
    pub(super) journal_chunks: HashMap<(String, String), (usize, usize)>,
}

/// Records DynamoDB calls from the requests the SDK sends.
#[derive(Debug, Default, Clone)]
pub(super) struct Recorder(Arc<Mutex<Calls>>);

fn key_of(item: &Value) -> (String, String) {
    let s = |name: &str| item[name]["S"].as_str().unwrap_or_default().to_owned();
    (s("pk"), s("sk"))
}

/// A number's size by DynamoDB's rules: about 1 byte per 2 significant digits, plus 1.
pub(super) fn number_size(n: &str) -> usize {
    let mantissa = n.split(['e', 'E']).next().unwrap_or_default();
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0').len();
    significant.div_ceil(2) + 1
}

/// An item's size from its DynamoDB JSON, by DynamoDB's rules for the attribute types
/// tollgate writes (names plus values; strings by bytes, numbers ≈ 1 byte per 2 digits).
fn json_item_size(item: &Value) -> usize {
    item.as_object()
        .into_iter()
        .flatten()
        .map(|(name, value)| {
            let size = if let Some(s) = value["S"].as_str() {
                s.len()
            } else if let Some(n) = value["N"].as_str() {
                number_size(n)
            } else {
                value.to_string().len()
            };
            name.len() + size
        })
        .sum()
}

impl Recorder {
    fn record(&self, operation: &str, body: &[u8]) {
        let mut calls = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *calls.by_operation.entry(operation.to_owned()).or_default() += 1;
        let touches_items = matches!(
            operation,
            "TransactWriteItems" | "PutItem" | "UpdateItem" | "DeleteItem" | "BatchGetItem"
        );
        if !touches_items {
            return;
        }
        let Ok(request) = serde_json::from_slice::<Value>(body) else {
            return;
        };
        match operation {
            "TransactWriteItems" => {
                for action in request["TransactItems"].as_array().into_iter().flatten() {
                    let key = if let Some(put) = action.get("Put") {
                        let key = key_of(&put["Item"]);
                        if key.0 == "JOURNAL" {
                            let rows = put["Item"]["rows"]["S"].as_str().unwrap_or_default();
                            let counters = serde_json::from_str::<Vec<Value>>(rows)
                                .map(|r| r.len())
                                .unwrap_or(0);
                            calls
                                .journal_chunks
                                .insert(key.clone(), (json_item_size(&put["Item"]), counters));
                        }
                        key
                    } else if let Some(update) = action.get("Update") {
                        key_of(&update["Key"])
                    } else if let Some(delete) = action.get("Delete") {
                        key_of(&delete["Key"])
                    } else {
                        continue;
                    };
                    *calls.transact_writes.entry(key).or_default() += 1;
                }
            }
            "PutItem" => *calls.writes.entry(key_of(&request["Item"])).or_default() += 1,
            "UpdateItem" | "DeleteItem" => {
                *calls.writes.entry(key_of(&request["Key"])).or_default() += 1
            }
            "BatchGetItem" => {
                let tables = request["RequestItems"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                for (_, wanted) in tables {
                    for key in wanted["Keys"].as_array().into_iter().flatten() {
                        *calls.reads.entry(key_of(key)).or_default() += 1;
                    }
                }
            }
            _ => {}
        }
    }

    /// The calls recorded since the last take.
    pub(super) fn take(&self) -> Calls {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "Recorder"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        let target = request.headers().get("x-amz-target").unwrap_or_default();
        let operation = target.rsplit('.').next().unwrap_or_default();
        self.record(operation, request.body().bytes().unwrap_or_default());
        Ok(())
    }

    fn read_before_deserialization(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if !context.response().status().is_success() {
            self.0.lock().unwrap_or_else(PoisonError::into_inner).failed += 1;
        }
        Ok(())
    }
}
