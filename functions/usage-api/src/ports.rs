//! The ports the handlers are written against: small capability traits over storage and
//! the usage queue.
//!
//! [`UsageApiStore`] is the supertrait the API is wired with; it is implemented for
//! [`tollgate_store::DynamoDbStore`] in [`crate::dynamodb`]. [`EventQueue`] is
//! implemented for SQS in [`crate::sqs`]. Tests run the handlers over these real
//! adapters against DynamoDB Local and a local SQS.

use std::future::Future;

use chrono::{DateTime, Utc};
use tollgate_core::budget::Budget;
use tollgate_core::ids::{PlanName, TenantId};
use tollgate_core::message::Rejection;
use tollgate_core::plan::Plan;
use tollgate_core::tenant::{ApiKeyHash, ApiKeyRecord, TenantProfile};
use tollgate_core::usage::UsageRow;
use tollgate_core::window::Granularity;
use tollgate_store::StoreError;

/// API keys, stored by the SHA-256 digest of the secret only.
pub trait ApiKeys: Send + Sync {
    /// The record whose digest is `hash`, revoked or not; `None` when there is none.
    fn api_key(
        &self,
        hash: &ApiKeyHash,
    ) -> impl Future<Output = Result<Option<ApiKeyRecord>, StoreError>> + Send;

    /// Stores a new key record; `AlreadyExists` if the digest is taken.
    fn create_api_key(
        &self,
        record: &ApiKeyRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Marks the key revoked at `at` (idempotent: the first time stays);
    /// `NotFound` for an unknown digest.
    fn revoke_api_key(
        &self,
        hash: &ApiKeyHash,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<ApiKeyRecord, StoreError>> + Send;

    /// Every key record of `tenant`, oldest first.
    fn tenant_api_keys(
        &self,
        tenant: &TenantId,
    ) -> impl Future<Output = Result<Vec<ApiKeyRecord>, StoreError>> + Send;
}

/// Tenant profiles.
pub trait Tenants: Send + Sync {
    /// `None` for an unknown tenant.
    fn tenant(
        &self,
        tenant: &TenantId,
    ) -> impl Future<Output = Result<Option<TenantProfile>, StoreError>> + Send;

    /// Up to `limit` tenants in id order after `after` (pass the last id to page on).
    fn tenants(
        &self,
        after: Option<&TenantId>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<TenantProfile>, StoreError>> + Send;

    /// `AlreadyExists` if the id is taken.
    fn create_tenant(
        &self,
        profile: &TenantProfile,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// `NotFound` for an unknown tenant.
    fn update_tenant(
        &self,
        profile: &TenantProfile,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Plan versions (immutable once written) and budgets.
pub trait Plans: Send + Sync {
    /// Every version of plan `name`, oldest first; empty for an unknown plan.
    fn plan_versions(
        &self,
        name: &PlanName,
    ) -> impl Future<Output = Result<Vec<Plan>, StoreError>> + Send;

    /// Every version of every plan, by name then version.
    fn all_plan_versions(&self) -> impl Future<Output = Result<Vec<Plan>, StoreError>> + Send;

    /// `AlreadyExists` if this plan already has a version with that `effectiveFrom`.
    fn create_plan_version(
        &self,
        plan: &Plan,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The tenant's monthly budget, if one is set.
    fn budget(
        &self,
        tenant: &TenantId,
    ) -> impl Future<Output = Result<Option<Budget>, StoreError>> + Send;
}

/// Reading usage back.
pub trait UsageReader: Send + Sync {
    /// `tenant`'s rows at `granularity` for windows overlapping `[from, to)`, as current as
    /// the data allows (rollups where complete, hourly counters not yet rolled up after);
    /// items whose retention passed by `now` are skipped. Only this tenant's rows.
    fn usage_view(
        &self,
        tenant: &TenantId,
        granularity: Granularity,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<UsageRow>, StoreError>> + Send;
}

/// Rejected queue messages.
pub trait RejectedMessages: Send + Sync {
    /// Up to `limit` rejections, oldest first, after the cursor `after`.
    fn rejections(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Rejection>, StoreError>> + Send;

    /// The cursor that pages on after `rejection`.
    fn rejection_cursor(&self, rejection: &Rejection) -> String;
}

/// Everything the usage API needs from storage.
pub trait UsageApiStore: ApiKeys + Tenants + Plans + UsageReader + RejectedMessages {}

impl<T: ApiKeys + Tenants + Plans + UsageReader + RejectedMessages> UsageApiStore for T {}

/// A message body for the usage queue: one CloudEvent as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedEvent {
    pub body: String,
}

/// Why one message did not reach the queue. The text is for logs, never for replies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct QueueFailure {
    /// The queue's error code (`SenderFault` entries, throttling, network…).
    pub code: String,
    pub detail: String,
    /// Whether the failure is the sender's fault (retrying the same body cannot help).
    pub sender_fault: bool,
}

/// The usage queue.
pub trait EventQueue: Send + Sync {
    /// Sends every message, returning one outcome per message in the same order. A failed
    /// call fails every message it carried; a partly failed batch fails only its failed
    /// entries. Never sends a message twice within one call.
    fn send(
        &self,
        messages: &[QueuedEvent],
    ) -> impl Future<Output = Vec<Result<(), QueueFailure>>> + Send;
}
