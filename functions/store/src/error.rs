//! Store errors, classified once so callers can choose retry, fail-open or fail-closed.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use thiserror::Error;
use tollgate_core::aggregate::AggregateError;

/// Everything that can go wrong talking to the table.
#[derive(Debug, Error)]
pub enum StoreError {
    /// DynamoDB (or the network on the way) failed the call.
    #[error("DynamoDB {operation} failed ({}): {message}", .code.as_deref().unwrap_or("no error code"))]
    Dynamo {
        operation: &'static str,
        code: Option<String>,
        message: String,
        transient: bool,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Optimistic concurrency lost too many times in a row; retrying later will succeed.
    #[error("{what}: concurrent writers kept winning after {attempts} attempts")]
    Contended { what: String, attempts: u32 },
    /// A stored item does not have the shape this code writes.
    #[error("item {pk} / {sk} is malformed: {reason}")]
    Corrupt {
        pk: String,
        sk: String,
        reason: String,
    },
    /// A batch brings a state of another aggregation than the one stored under its key
    /// (a meter's aggregation was changed in place). Permanent: retrying cannot help.
    #[error("{key}: stored state is `{stored}` but the batch brings `{incoming}`")]
    KindMismatch {
        key: String,
        stored: String,
        incoming: String,
    },
    #[error("aggregate merge failed for {key}: {source}")]
    Aggregate {
        key: String,
        #[source]
        source: AggregateError,
    },
    /// The batch's usage is claimed into a journal that this call could not finish
    /// applying. Transient: a later run finishes the journal (`finish_journals`), and a
    /// redelivery of the batch is recognised as already claimed.
    #[error("usage claimed into journal {journal} but not yet applied: {reason}")]
    JournalPending { journal: String, reason: String },
    /// A transient failure of a claim that carried several batches, reported for each.
    #[error("claim {claim} failed: {reason}")]
    ClaimFailed { claim: String, reason: String },
    /// The batch cannot be stored as given.
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    #[error("{what} already exists")]
    AlreadyExists { what: String },
    #[error("{what} was not found")]
    NotFound { what: String },
}

impl StoreError {
    /// True when the same call may succeed if retried later (throttling, timeouts,
    /// transaction conflicts, contention); false for errors retrying cannot fix.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Dynamo { transient, .. } => *transient,
            StoreError::Contended { .. }
            | StoreError::JournalPending { .. }
            | StoreError::ClaimFailed { .. } => true,
            _ => false,
        }
    }

    pub(crate) fn from_sdk<E, R>(operation: &'static str, err: SdkError<E, R>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let (code, message, transient) = match &err {
            SdkError::ServiceError(service) => {
                let code = service.err().code().map(str::to_owned);
                let message = service.err().message().unwrap_or_default().to_owned();
                let transient = code.as_deref().is_some_and(is_transient_code);
                (code, message, transient)
            }
            SdkError::TimeoutError(_) => (None, "timed out".to_owned(), true),
            SdkError::DispatchFailure(_) => (None, "could not send the request".to_owned(), true),
            SdkError::ResponseError(_) => (None, "unreadable response".to_owned(), true),
            SdkError::ConstructionFailure(_) => {
                (None, "could not build the request".to_owned(), false)
            }
            _ => (None, err.to_string(), false),
        };
        StoreError::Dynamo {
            operation,
            code,
            message,
            transient,
            source: Box::new(err),
        }
    }
}

/// DynamoDB error codes that mean "try again later".
pub(crate) fn is_transient_code(code: &str) -> bool {
    matches!(
        code,
        "ThrottlingException"
            | "ProvisionedThroughputExceededException"
            | "RequestLimitExceeded"
            | "InternalServerError"
            | "ServiceUnavailable"
            | "TransactionInProgressException"
            | "TransactionConflictException"
            | "TransactionConflict"
            | "ThrottlingError"
            | "LimitExceededException"
    )
}
