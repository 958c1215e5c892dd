//! The storage ports implemented by [`DynamoDbStore`]: plain delegation.

use chrono::{DateTime, Utc};
use tollgate_core::budget::Budget;
use tollgate_core::ids::{PlanName, TenantId};
use tollgate_core::message::Rejection;
use tollgate_core::plan::Plan;
use tollgate_core::tenant::{ApiKeyHash, ApiKeyRecord, TenantProfile};
use tollgate_core::usage::UsageRow;
use tollgate_core::window::Granularity;
use tollgate_store::{DynamoDbStore, StoreError};

use crate::ports::{ApiKeys, Plans, RejectedMessages, Tenants, UsageReader};

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

    async fn budget(&self, tenant: &TenantId) -> Result<Option<Budget>, StoreError> {
        DynamoDbStore::budget(self, tenant).await
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
