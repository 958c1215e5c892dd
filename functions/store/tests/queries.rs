//! Reading usage back, tenant isolation, and the directory of tenants and keys.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod common;

use chrono::Duration;
use common::*;
use tollgate_core::ids::PlanName;
use tollgate_core::tenant::{ApiKeyHash, ApiKeyRecord, ApiKeyRole, TenantProfile, TenantStatus};
use tollgate_core::usage::UsageBatch;
use tollgate_core::window::Granularity;
use tollgate_store::StoreError;

#[tokio::test]
async fn one_tenants_query_never_returns_another_tenants_items() {
    let store = fresh_store("isolation").await;
    let mut rows = Vec::new();
    for t in ["acme", "acme-2", "acm", "globex"] {
        for h in ["2026-11-23T09", "2026-11-23T10", "2026-11-24T00"] {
            rows.push(count_row(hour_key(t, "api_requests", h), 1));
        }
    }
    store
        .apply_batch(&UsageBatch {
            batch_id: "iso".into(),
            rows,
        })
        .await
        .unwrap();
    for t in ["acme", "acme-2", "acm", "globex"] {
        let found = store
            .usage(
                &tenant(t),
                Granularity::Hour,
                at("2020-01-01T00:00:00Z"),
                at("2030-01-01T00:00:00Z"),
            )
            .await
            .unwrap();
        assert_eq!(found.len(), 3);
        assert!(found.iter().all(|r| r.key.tenant.as_str() == t));
    }
}

#[tokio::test]
async fn a_range_query_returns_exactly_the_overlapping_windows_in_order() {
    let store = fresh_store("range").await;
    let hours = [
        "2026-11-22T23",
        "2026-11-23T00",
        "2026-11-23T12",
        "2026-11-23T23",
        "2026-11-24T00",
    ];
    let rows = hours
        .iter()
        .map(|h| count_row(hour_key("acme", "api_requests", h), 1))
        .collect();
    store
        .apply_batch(&UsageBatch {
            batch_id: "range".into(),
            rows,
        })
        .await
        .unwrap();
    let day = store
        .usage(
            &tenant("acme"),
            Granularity::Hour,
            at("2026-11-23T00:00:00Z"),
            at("2026-11-24T00:00:00Z"),
        )
        .await
        .unwrap();
    let keys: Vec<String> = day.iter().map(|r| r.key.window.key()).collect();
    assert_eq!(keys, ["2026-11-23T00", "2026-11-23T12", "2026-11-23T23"]);
    let partial = store
        .usage(
            &tenant("acme"),
            Granularity::Hour,
            at("2026-11-23T12:30:00Z"),
            at("2026-11-23T23:00:01Z"),
        )
        .await
        .unwrap();
    let keys: Vec<String> = partial.iter().map(|r| r.key.window.key()).collect();
    assert_eq!(keys, ["2026-11-23T12", "2026-11-23T23"]);
}

#[tokio::test]
async fn expired_counters_are_not_returned_before_dynamodb_deletes_them() {
    let store = fresh_store("ttl").await;
    store
        .apply_batch(&UsageBatch {
            batch_id: "ttl".into(),
            rows: vec![count_row(
                hour_key("acme", "api_requests", "2026-11-23T10"),
                1,
            )],
        })
        .await
        .unwrap();
    let from = at("2026-11-23T00:00:00Z");
    let to = at("2026-11-24T00:00:00Z");
    let fresh = store
        .usage_at(
            &tenant("acme"),
            Granularity::Hour,
            from,
            to,
            at("2026-12-01T00:00:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(fresh.len(), 1);
    let expired = store
        .usage_at(
            &tenant("acme"),
            Granularity::Hour,
            from,
            to,
            at("2026-11-23T11:00:00Z") + Duration::days(35),
        )
        .await
        .unwrap();
    assert!(expired.is_empty());
}

fn profile(id: &str) -> TenantProfile {
    TenantProfile {
        tenant: tenant(id),
        display_name: format!("{id} Inc."),
        plan: PlanName::new("starter").unwrap(),
        status: TenantStatus::Active,
        stripe_customer_id: Some(format!("cus_{id}")),
        created_at: at("2026-11-01T00:00:00Z"),
    }
}

#[tokio::test]
async fn tenants_are_created_once_and_listed_in_pages() {
    let store = fresh_store("tenants").await;
    for id in ["c", "a", "b", "d", "e"] {
        store.create_tenant(&profile(id)).await.unwrap();
    }
    let again = store.create_tenant(&profile("a")).await.unwrap_err();
    assert!(matches!(again, StoreError::AlreadyExists { .. }));
    assert_eq!(
        store.tenant(&tenant("b")).await.unwrap(),
        Some(profile("b"))
    );
    assert_eq!(store.tenant(&tenant("zz")).await.unwrap(), None);
    let first = store.tenants(None, 2).await.unwrap();
    let second = store.tenants(Some(&first[1].tenant), 2).await.unwrap();
    let third = store.tenants(Some(&second[1].tenant), 2).await.unwrap();
    let ids: Vec<&str> = first
        .iter()
        .chain(&second)
        .chain(&third)
        .map(|p| p.tenant.as_str())
        .collect();
    assert_eq!(ids, ["a", "b", "c", "d", "e"]);
    let mut changed = profile("zz");
    changed.display_name = "nobody".into();
    assert!(matches!(
        store.update_tenant(&changed).await,
        Err(StoreError::NotFound { .. })
    ));
}

#[tokio::test]
async fn api_keys_are_found_by_digest_and_revocable() {
    let store = fresh_store("keys").await;
    let secret = "tg_live_0123456789abcdef";
    let record = ApiKeyRecord {
        hash: ApiKeyHash::of(secret),
        role: ApiKeyRole::Tenant,
        tenant: Some(tenant("acme")),
        label: "ci".into(),
        created_at: at("2026-11-01T00:00:00Z"),
        revoked_at: None,
    };
    store.create_api_key(&record).await.unwrap();
    let found = store
        .api_key(&ApiKeyHash::of(secret))
        .await
        .unwrap()
        .unwrap();
    assert!(found.is_active());
    assert_eq!(store.api_key(&ApiKeyHash::of("wrong")).await.unwrap(), None);
    let revoked = store
        .revoke_api_key(&record.hash, at("2026-11-02T00:00:00Z"))
        .await
        .unwrap();
    assert!(!revoked.is_active());
    assert!(
        !store
            .api_key(&record.hash)
            .await
            .unwrap()
            .unwrap()
            .is_active()
    );
    assert_eq!(
        store.api_keys(Some(&tenant("acme"))).await.unwrap().len(),
        1
    );
    assert!(
        store
            .api_keys(Some(&tenant("globex")))
            .await
            .unwrap()
            .is_empty()
    );
}

fn sample_plans() -> Vec<tollgate_core::plan::Plan> {
    let json = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../events/samples/plans.json"
    ))
    .unwrap();
    serde_json::from_str(&json).unwrap()
}

#[tokio::test]
async fn plan_versions_are_immutable_and_read_back_in_version_order() {
    let store = fresh_store("plans").await;
    let plans = sample_plans();
    for plan in &plans {
        store.create_plan_version(plan).await.unwrap();
    }
    let again = store.create_plan_version(&plans[1]).await.unwrap_err();
    assert!(matches!(again, StoreError::AlreadyExists { .. }), "{again}");
    let mut raised: serde_json::Value = serde_json::to_value(&plans[1]).unwrap();
    raised["effectiveFrom"] = serde_json::json!("2026-12-01T00:00:00Z");
    raised["baseFee"] = serde_json::json!("35");
    let raised: tollgate_core::plan::Plan = serde_json::from_value(raised).unwrap();
    store.create_plan_version(&raised).await.unwrap();
    let versions = store
        .plan_versions(&PlanName::new("starter").unwrap())
        .await
        .unwrap();
    assert_eq!(versions, vec![plans[1].clone(), raised]);
    assert_eq!(
        store.all_plan_versions().await.unwrap().len(),
        plans.len() + 1
    );
    assert!(
        store
            .plan_versions(&PlanName::new("nope").unwrap())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_budget_is_set_replaced_and_read_per_tenant() {
    use rust_decimal_macros::dec;
    use tollgate_core::budget::Budget;
    use tollgate_core::money::Currency;
    let store = fresh_store("budgets").await;
    assert_eq!(store.budget(&tenant("acme")).await.unwrap(), None);
    let budget = Budget::new(dec!(100), Currency::USD).unwrap();
    store.put_budget(&tenant("acme"), &budget).await.unwrap();
    let stricter = Budget::new(dec!(50), Currency::USD)
        .unwrap()
        .with_hard_limit(true);
    store.put_budget(&tenant("acme"), &stricter).await.unwrap();
    assert_eq!(store.budget(&tenant("acme")).await.unwrap(), Some(stricter));
    assert_eq!(store.budget(&tenant("globex")).await.unwrap(), None);
}
