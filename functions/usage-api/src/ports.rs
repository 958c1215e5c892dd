//! The ports the handlers are written against: small capability traits over storage and
//! the usage queue.
//!
//! [`UsageApiStore`] is the supertrait the API is wired with; it is implemented for
//! [`tollgate_store::DynamoDbStore`] in [`crate::dynamodb`]. [`EventQueue`] is
//! implemented for SQS in [`crate::sqs`]. Tests run the handlers over these real
//! adapters against DynamoDB Local and a local SQS.

use std::future::Future;

use chrono::{DateTime, Utc};
use tollgate_core::alert::{Alert, AlertId};
use tollgate_core::billing::Reconciliation;
use tollgate_core::budget::Budget;
use tollgate_core::ids::{PlanName, TenantId};
use tollgate_core::invoice::Statement;
use tollgate_core::message::Rejection;
use tollgate_core::meter::MeterCatalog;
use tollgate_core::plan::Plan;
use tollgate_core::tenant::{ApiKeyHash, ApiKeyRecord, TenantProfile};
use tollgate_core::usage::UsageRow;
use tollgate_core::window::{Granularity, Window};
use tollgate_store::{BudgetBlock, StoreError, WebhookEndpoint};

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

/// Plan versions, immutable once written.
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
}

/// Monthly budgets and the budget block list the edge enforces.
pub trait Budgets: Send + Sync {
    /// The tenant's monthly budget, if one is set.
    fn budget(
        &self,
        tenant: &TenantId,
    ) -> impl Future<Output = Result<Option<Budget>, StoreError>> + Send;

    /// Sets or replaces the tenant's budget.
    fn put_budget(
        &self,
        tenant: &TenantId,
        budget: &Budget,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every block on the list, of any month: a block of an earlier month no longer
    /// holds, and the reader must skip it.
    fn budget_blocks(&self) -> impl Future<Output = Result<Vec<BudgetBlock>, StoreError>> + Send;

    /// Puts the block's tenant on the list, replacing its earlier block.
    fn block_for_budget(
        &self,
        block: &BudgetBlock,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Takes the tenant off the list; `false` when it was not on it.
    fn lift_budget_block(
        &self,
        tenant: &TenantId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// Budget alerts, raised by the budget Lambda and read and acknowledged here.
pub trait Alerts: Send + Sync {
    /// The tenant's alerts of `month` (every month when `None`), in no promised order.
    fn alerts(
        &self,
        tenant: &TenantId,
        month: Option<Window>,
    ) -> impl Future<Output = Result<Vec<Alert>, StoreError>> + Send;

    /// Marks the tenant's alert `id` acknowledged at `at` and returns it; acknowledging
    /// twice keeps the first time. `NotFound` when the tenant has no such alert.
    fn acknowledge_alert(
        &self,
        tenant: &TenantId,
        id: &AlertId,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<Alert, StoreError>> + Send;
}

/// Where a tenant's alerts are delivered. The endpoint holds the signing secret.
pub trait Webhooks: Send + Sync {
    /// `None` when the tenant has no webhook.
    fn webhook(
        &self,
        tenant: &TenantId,
    ) -> impl Future<Output = Result<Option<WebhookEndpoint>, StoreError>> + Send;

    /// Sets or replaces the tenant's webhook (and with it the secret).
    fn put_webhook(
        &self,
        tenant: &TenantId,
        webhook: &WebhookEndpoint,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes the tenant's webhook; `false` when it had none.
    fn delete_webhook(
        &self,
        tenant: &TenantId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// Month statements and the Stripe ledger.
pub trait Billing: Send + Sync {
    /// Every statement of the tenant, oldest month first.
    fn statements(
        &self,
        tenant: &TenantId,
    ) -> impl Future<Output = Result<Vec<Statement>, StoreError>> + Send;

    /// The tenant's statement of `month`; `None` until that month is closed.
    fn statement(
        &self,
        tenant: &TenantId,
        month: Window,
    ) -> impl Future<Output = Result<Option<Statement>, StoreError>> + Send;

    /// One line per Stripe-reported meter of `catalog`: the tenant's ledger of `month`
    /// held against its usage as of `now`.
    fn reconciliation(
        &self,
        tenant: &TenantId,
        catalog: &MeterCatalog,
        month: Window,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<Reconciliation>, StoreError>> + Send;
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
pub trait UsageApiStore:
    ApiKeys + Tenants + Plans + Budgets + Alerts + Webhooks + Billing + UsageReader + RejectedMessages
{
}

impl<T> UsageApiStore for T where
    T: ApiKeys
        + Tenants
        + Plans
        + Budgets
        + Alerts
        + Webhooks
        + Billing
        + UsageReader
        + RejectedMessages
{
}

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
