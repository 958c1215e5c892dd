//! Plan versions and tenant budgets: the configuration that pricing and budget checks
//! read.
//!
//! A plan version is immutable once written (an invoice must be reproducible from the
//! version it used): a price change is a new version with a later `effectiveFrom`.

use tollgate_core::budget::Budget;
use tollgate_core::ids::{PlanName, TenantId};
use tollgate_core::plan::Plan;

use crate::DynamoDbStore;
use crate::directory::WriteMode;
use crate::error::StoreError;
use crate::table::keys;

const PLANS_INDEX: &str = "PLANS";
const BUDGET: &str = "BUDGET";

impl DynamoDbStore {
    /// Stores a new plan version; fails with `AlreadyExists` if that version exists.
    pub async fn create_plan_version(&self, plan: &Plan) -> Result<(), StoreError> {
        let version = keys::plan_version(&plan.effective_from());
        self.put_doc(
            keys::plan(plan.name().as_str()),
            &version,
            plan,
            Some((PLANS_INDEX.to_owned(), format!("{}#{version}", plan.name()))),
            WriteMode::Create,
        )
        .await
    }

    /// Every version of plan `name`, oldest first (empty for an unknown plan).
    pub async fn plan_versions(&self, name: &PlanName) -> Result<Vec<Plan>, StoreError> {
        let mut versions: Vec<Plan> = self.query_docs(keys::plan(name.as_str()), "V#").await?;
        versions.sort_by_key(Plan::effective_from);
        Ok(versions)
    }

    /// Every version of every plan, by plan name then version.
    pub async fn all_plan_versions(&self) -> Result<Vec<Plan>, StoreError> {
        self.list_docs(PLANS_INDEX, None, usize::MAX).await
    }

    /// Sets (or replaces) `tenant`'s monthly budget.
    pub async fn put_budget(&self, tenant: &TenantId, budget: &Budget) -> Result<(), StoreError> {
        self.put_doc(
            keys::tenant(tenant),
            BUDGET,
            budget,
            None,
            WriteMode::Upsert,
        )
        .await
    }

    /// `tenant`'s budget, if one is set.
    pub async fn budget(&self, tenant: &TenantId) -> Result<Option<Budget>, StoreError> {
        self.get_doc(keys::tenant(tenant), BUDGET).await
    }
}
