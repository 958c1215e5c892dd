//! The storage ports implemented by [`DynamoDbStore`]: plain delegation.

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
use tollgate_store::{BudgetBlock, DynamoDbStore, StoreError, WebhookEndpoint};

use crate::ports::{
    Alerts, ApiKeys, Billing, Budgets, Plans, RejectedMessages, Tenants, UsageReader, Webhooks,
};

impl ApiKeys for DynamoDbStore {
    async fn api_key(&self, hash: &ApiKeyHash) -> Result<Option<ApiKeyRecord>, StoreError> {
        DynamoDbStore::api_key(self, hash).await
    }

    async fn create_api_key(&self, record: &ApiKeyRecord) -> Result<(), StoreError> {
        DynamoDbStore::create_api_key(self, record).await
    }

    async fn revoke_api_key(
        &self,
        hash: &ApiKeyHash,
        at: DateTime<Utc>,
    ) -> Result<ApiKeyRecord, StoreError> {
        DynamoDbStore::revoke_api_key(self, hash, at).await
    }

    async fn tenant_api_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKeyRecord>, StoreError> {
        DynamoDbStore::api_keys(self, Some(tenant)).await
    }
}

impl Tenants for DynamoDbStore {
    async fn tenant(&self, tenant: &TenantId) -> Result<Option<TenantProfile>, StoreError> {
        DynamoDbStore::tenant(self, tenant).await
    }

    async fn tenants(
        &self,
        after: Option<&TenantId>,
        limit: usize,
    ) -> Result<Vec<TenantProfile>, StoreError> {
        DynamoDbStore::tenants(self, after, limit).await
    }

    async fn create_tenant(&self, profile: &TenantProfile) -> Result<(), StoreError> {
        DynamoDbStore::create_tenant(self, profile).await
    }

    async fn update_tenant(&self, profile: &TenantProfile) -> Result<(), StoreError> {
        DynamoDbStore::update_tenant(self, profile).await
    }
}

impl Plans for DynamoDbStore {
    async fn plan_versions(&self, name: &PlanName) -> Result<Vec<Plan>, StoreError> {
        DynamoDbStore::plan_versions(self, name).await
    }

    async fn all_plan_versions(&self) -> Result<Vec<Plan>, StoreError> {
        DynamoDbStore::all_plan_versions(self).await
    }

    async fn create_plan_version(&self, plan: &Plan) -> Result<(), StoreError> {
        DynamoDbStore::create_plan_version(self, plan).await
    }
}

impl Budgets for DynamoDbStore {
    async fn budget(&self, tenant: &TenantId) -> Result<Option<Budget>, StoreError> {
        DynamoDbStore::budget(self, tenant).await
    }

    async fn put_budget(&self, tenant: &TenantId, budget: &Budget) -> Result<(), StoreError> {
        DynamoDbStore::put_budget(self, tenant, budget).await
    }

    async fn budget_blocks(&self) -> Result<Vec<BudgetBlock>, StoreError> {
        DynamoDbStore::budget_blocks(self).await
    }

    async fn block_for_budget(&self, block: &BudgetBlock) -> Result<(), StoreError> {
        DynamoDbStore::block_for_budget(self, block).await
    }

    async fn lift_budget_block(&self, tenant: &TenantId) -> Result<bool, StoreError> {
        DynamoDbStore::lift_budget_block(self, tenant).await
    }
}

impl Alerts for DynamoDbStore {
    async fn alerts(
        &self,
        tenant: &TenantId,
        month: Option<Window>,
    ) -> Result<Vec<Alert>, StoreError> {
        DynamoDbStore::alerts(self, tenant, month).await
    }

    async fn acknowledge_alert(
        &self,
        tenant: &TenantId,
        id: &AlertId,
        at: DateTime<Utc>,
    ) -> Result<Alert, StoreError> {
        DynamoDbStore::acknowledge_alert(self, tenant, id, at).await
    }
}

impl Webhooks for DynamoDbStore {
    async fn webhook(&self, tenant: &TenantId) -> Result<Option<WebhookEndpoint>, StoreError> {
        DynamoDbStore::webhook(self, tenant).await
    }

    async fn put_webhook(
        &self,
        tenant: &TenantId,
        webhook: &WebhookEndpoint,
    ) -> Result<(), StoreError> {
        DynamoDbStore::put_webhook(self, tenant, webhook).await
    }

    async fn delete_webhook(&self, tenant: &TenantId) -> Result<bool, StoreError> {
        DynamoDbStore::delete_webhook(self, tenant).await
    }
}

impl Billing for DynamoDbStore {
    async fn statements(&self, tenant: &TenantId) -> Result<Vec<Statement>, StoreError> {
        DynamoDbStore::statements(self, tenant).await
    }

    async fn statement(
        &self,
        tenant: &TenantId,
        month: Window,
    ) -> Result<Option<Statement>, StoreError> {
        DynamoDbStore::statement(self, tenant, month).await
    }

    async fn reconciliation(
        &self,
        tenant: &TenantId,
        catalog: &MeterCatalog,
        month: Window,
        now: DateTime<Utc>,
    ) -> Result<Vec<Reconciliation>, StoreError> {
        DynamoDbStore::reconciliation(self, tenant, catalog, month, now).await
    }
}

impl UsageReader for DynamoDbStore {
    async fn usage_view(
        &self,
        tenant: &TenantId,
        granularity: Granularity,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<UsageRow>, StoreError> {
        DynamoDbStore::usage_view(self, tenant, granularity, from, to, now).await
    }
}

impl RejectedMessages for DynamoDbStore {
    async fn rejections(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Rejection>, StoreError> {
        DynamoDbStore::rejections(self, after, limit).await
    }

    fn rejection_cursor(&self, rejection: &Rejection) -> String {
        tollgate_store::rejection_cursor(rejection)
    }
}
