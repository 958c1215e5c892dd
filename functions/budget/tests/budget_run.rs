//! The budget run against DynamoDB Local and a verifying webhook receiver: alerts raised
//! once however many runs race, signed deliveries retried until they land, and the block
//! list following the hard limit, a raised budget and a new month.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, Utc};
use hyper::StatusCode;
use rust_decimal::Decimal;
use serde_json::Value;
use tollgate_budget::BudgetRun;
use tollgate_budget::webhook::WebhookClient;
use tollgate_core::aggregate::AggregateState;
use tollgate_core::alert::{AlertTrigger, DeliveryStatus};
use tollgate_core::budget::BudgetConfig;
use tollgate_core::ids::{MeterName, PlanName, TenantId};
use tollgate_core::meter::MeterCatalog;
use tollgate_core::plan::PlanConfig;
use tollgate_core::tenant::{TenantProfile, TenantStatus};
use tollgate_core::usage::{Dimensions, UsageBatch, UsageKey, UsageRow};
use tollgate_core::webhook::WebhookSecret;
use tollgate_core::window::{Granularity, Window};
use tollgate_devstack::webhook::WebhookReceiver;
use tollgate_store::{DynamoDbStore, WebhookEndpoint};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

fn catalog() -> MeterCatalog {
    MeterCatalog::from_json(
        r#"[{"name": "api_requests", "eventTypes": ["api.request"],
             "aggregation": {"kind": "count"}, "unit": "requests"}]"#,
    )
    .unwrap()
}

fn secret() -> WebhookSecret {
    WebhookSecret::from_random_bytes(*b"budget-run-test-webhook-secret!!")
}

/// A store with plan `metered` (base fee 10 USD, 0.01 USD per request) and `tenants`.
async fn store(name: &str, tenants: &[&str]) -> DynamoDbStore {
    let endpoint = tollgate_devstack::dynamodb_endpoint_for_tests();
    let store = DynamoDbStore::new(
        tollgate_store::local_client(&endpoint),
        format!("budget-{name}-{}", std::process::id()),
    );
    store.ensure_table().await.unwrap();
    let plan: PlanConfig = serde_json::from_str(
        r#"{"name": "metered", "effectiveFrom": "2026-01-01T00:00:00Z", "currency": "USD",
            "baseFee": "10",
            "meters": [{"meter": "api_requests", "price": {"type": "perUnit", "unitPrice": "0.01"}}]}"#,
    )
    .unwrap();
    store
        .create_plan_version(&plan.compile().unwrap())
        .await
        .unwrap();
    for tenant in tenants {
        store
            .create_tenant(&TenantProfile {
                tenant: TenantId::new(*tenant).unwrap(),
                display_name: (*tenant).to_owned(),
                plan: PlanName::new("metered").unwrap(),
                status: TenantStatus::Active,
                stripe_customer_id: None,
                created_at: at("2026-10-01T00:00:00Z"),
            })
            .await
            .unwrap();
    }
    store
}

async fn set_budget(store: &DynamoDbStore, tenant: &str, json: &str) {
    let config: BudgetConfig = serde_json::from_str(json).unwrap();
    store
        .put_budget(&TenantId::new(tenant).unwrap(), &config.compile().unwrap())
        .await
        .unwrap();
}

/// `n` requests of `tenant` in the hour of `t`.
async fn use_requests(store: &DynamoDbStore, tenant: &str, t: DateTime<Utc>, n: u64, id: &str) {
    let batch = UsageBatch {
        batch_id: id.to_owned(),
        rows: vec![UsageRow {
            key: UsageKey {
                tenant: TenantId::new(tenant).unwrap(),
                meter: MeterName::new("api_requests").unwrap(),
                window: Window::containing(Granularity::Hour, t),
                dimensions: Dimensions::default(),
            },
            state: AggregateState::Count { n },
        }],
    };
    store.apply_batch_at(&batch, t).await.unwrap();
}

fn job(store: &DynamoDbStore) -> BudgetRun {
    BudgetRun {
        store: store.clone(),
        catalog: catalog(),
        webhooks: WebhookClient::new().unwrap(),
        safety_margin: StdDuration::from_secs(1),
    }
}

fn deadline() -> Instant {
    Instant::now() + StdDuration::from_secs(60)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runs_raise_and_deliver_each_alert_once() {
    let store = store("concurrent", &["acme"]).await;
    let acme = TenantId::new("acme").unwrap();
    let receiver = WebhookReceiver::start(secret()).await.unwrap();
    let now = at("2026-11-10T12:00:00Z");
    receiver.set_now(Some(now));
    store
        .put_webhook(
            &acme,
            &WebhookEndpoint {
                url: receiver.url("/hooks/tollgate"),
                secret: secret().expose().to_owned(),
                created_at: now,
            },
        )
        .await
        .unwrap();
    set_budget(
        &store,
        "acme",
        r#"{"monthlyAmount": "100", "currency": "USD"}"#,
    )
    .await;
    // 10 USD base fee + 7,500 requests × 0.01 = 85 USD: 50 % and 80 % crossed, and at
    // this pace (9.5 days in) the month is on track to exceed 100 USD.
    use_requests(&store, "acme", at("2026-11-09T10:00:00Z"), 7_500, "u1").await;

    let runs: Vec<BudgetRun> = (0..6).map(|_| job(&store)).collect();
    let reports = futures_join_all(runs.iter().map(|run| run.run(now, deadline()))).await;
    let raised: usize = reports
        .iter()
        .map(|r| r.as_ref().unwrap().alerts_raised)
        .sum();
    let delivered: usize = reports
        .iter()
        .map(|r| r.as_ref().unwrap().deliveries_succeeded)
        .sum();
    assert_eq!(raised, 3, "{reports:?}");
    assert_eq!(delivered, 3, "{reports:?}");

    let alerts = store.alerts(&acme, None).await.unwrap();
    let ids: Vec<&str> = alerts.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "2026-11.forecast",
            "2026-11.threshold-50",
            "2026-11.threshold-80"
        ]
    );
    assert!(
        alerts
            .iter()
            .all(|a| a.delivery.status == DeliveryStatus::Delivered)
    );
    assert_eq!(alerts[2].spent, Decimal::from(85));

    let received = receiver.received();
    assert_eq!(received.len(), 3, "each alert delivered exactly once");
    for delivery in &received {
        assert_eq!(delivery.verified, Ok(()));
        let body: Value = serde_json::from_slice(&delivery.body).unwrap();
        assert_eq!(body["alert"]["id"].as_str(), delivery.webhook_id.as_deref());
    }
    let forecast = received
        .iter()
        .find(|d| d.webhook_id.as_deref() == Some("2026-11.forecast"))
        .unwrap();
    let body: Value = serde_json::from_slice(&forecast.body).unwrap();
    assert_eq!(body["type"], "budget.forecast_exceeds");
    assert_eq!(
        body["alert"]["forecast"]["outlook"]["status"],
        "onTrackToExceed"
    );

    // A later run with the same spend raises nothing new and delivers nothing again.
    let again = job(&store)
        .run(now + Duration::hours(1), deadline())
        .await
        .unwrap();
    assert_eq!((again.alerts_raised, again.deliveries_succeeded), (0, 0));
    assert_eq!(receiver.received().len(), 3);
}

/// `join_all` without another dependency: runs the futures concurrently on this task.
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let futures: Vec<_> = futures.map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    let mut futures: Vec<_> = futures.into_iter().map(Some).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => {
                        *output = Some(value);
                        *slot = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_is_retried_on_a_later_run_until_it_lands() {
    let store = store("retry", &["acme"]).await;
    let acme = TenantId::new("acme").unwrap();
    let receiver = WebhookReceiver::start(secret()).await.unwrap();
    let now = at("2026-11-20T08:00:00Z");
    store
        .put_webhook(
            &acme,
            &WebhookEndpoint {
                url: receiver.url("/hook"),
                secret: secret().expose().to_owned(),
                created_at: now,
            },
        )
        .await
        .unwrap();
    set_budget(
        &store,
        "acme",
        r#"{"monthlyAmount": "1000", "currency": "USD", "thresholds": [50]}"#,
    )
    .await;
    use_requests(&store, "acme", at("2026-11-19T10:00:00Z"), 50_000, "u1").await;
    receiver.fail_next(2, StatusCode::SERVICE_UNAVAILABLE);

    receiver.set_now(Some(now));
    let first = job(&store).run(now, deadline()).await.unwrap();
    assert_eq!((first.alerts_raised, first.deliveries_retrying), (1, 1));
    let alert = &store.alerts(&acme, None).await.unwrap()[0];
    assert_eq!(
        alert.trigger,
        AlertTrigger::Threshold {
            threshold: tollgate_core::budget::Threshold::new(50).unwrap()
        }
    );
    assert_eq!(alert.delivery.status, DeliveryStatus::Pending);
    assert_eq!(alert.delivery.attempts, 1);
    assert!(
        alert
            .delivery
            .last_error
            .as_deref()
            .unwrap()
            .contains("503")
    );
    let next = alert.delivery.next_attempt_at.unwrap();
    assert!(
        next <= now + Duration::seconds(30),
        "first retry within 30 s: {next}"
    );

    // Not due before its time; then a second failure, then delivered.
    let mut t = now + Duration::minutes(1);
    for expected in [DeliveryStatus::Pending, DeliveryStatus::Delivered] {
        receiver.set_now(Some(t));
        job(&store).run(t, deadline()).await.unwrap();
        let alert = &store.alerts(&acme, None).await.unwrap()[0];
        assert_eq!(alert.delivery.status, expected);
        t = alert.delivery.next_attempt_at.unwrap_or(t) + Duration::seconds(1);
    }
    let received = receiver.received();
    assert_eq!(received.len(), 3);
    assert!(received.iter().all(|d| d.verified.is_ok()));
    assert_eq!(
        received
            .iter()
            .map(|d| d.status.as_u16())
            .collect::<Vec<_>>(),
        [503, 503, 204]
    );

    // Acknowledging is the tenant's "seen"; it survives later delivery updates.
    let acked = store.acknowledge_alert(&acme, &alert.id, t).await.unwrap();
    assert_eq!(acked.acknowledged_at, Some(t));
    assert_eq!(acked.delivery.status, DeliveryStatus::Delivered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hard_limit_blocks_until_the_budget_is_raised_or_the_month_ends() {
    let store = store("block", &["acme", "globex"]).await;
    let acme = TenantId::new("acme").unwrap();
    let now = at("2026-11-15T00:00:00Z");
    set_budget(
        &store,
        "acme",
        r#"{"monthlyAmount": "50", "currency": "USD", "hardLimit": true}"#,
    )
    .await;
    set_budget(
        &store,
        "globex",
        r#"{"monthlyAmount": "50", "currency": "USD"}"#,
    )
    .await;
    // 10 + 4,000 × 0.01 = 50 USD: exactly the budget.
    use_requests(&store, "acme", at("2026-11-14T09:00:00Z"), 4_000, "a1").await;
    use_requests(&store, "globex", at("2026-11-14T09:00:00Z"), 9_000, "g1").await;

    let report = job(&store).run(now, deadline()).await.unwrap();
    assert_eq!(
        report.blocked,
        std::slice::from_ref(&acme),
        "globex has no hard limit"
    );
    let blocks = store.budget_blocks().await.unwrap();
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].month, Window::containing(Granularity::Month, now));
    // No webhook: the alerts are only listed.
    let alerts = store.alerts(&acme, None).await.unwrap();
    assert!(
        alerts
            .iter()
            .all(|a| a.delivery.status == DeliveryStatus::NoWebhook)
    );
    assert!(alerts.iter().any(|a| a.hard_limit));

    // A second run keeps the block without rewriting it.
    let again = job(&store)
        .run(now + Duration::minutes(5), deadline())
        .await
        .unwrap();
    assert!(again.blocked.is_empty() && again.unblocked.is_empty());

    // Raising the budget lifts it.
    set_budget(
        &store,
        "acme",
        r#"{"monthlyAmount": "80", "currency": "USD", "hardLimit": true}"#,
    )
    .await;
    let raised = job(&store)
        .run(now + Duration::minutes(10), deadline())
        .await
        .unwrap();
    assert_eq!(raised.unblocked, std::slice::from_ref(&acme));
    assert!(store.budget_blocks().await.unwrap().is_empty());

    // Used up again, then a new month: the old month's block is lifted.
    use_requests(&store, "acme", at("2026-11-14T10:00:00Z"), 3_000, "a2").await;
    job(&store)
        .run(now + Duration::minutes(15), deadline())
        .await
        .unwrap();
    assert_eq!(store.budget_blocks().await.unwrap().len(), 1);
    let december = job(&store)
        .run(at("2026-12-01T00:05:00Z"), deadline())
        .await
        .unwrap();
    assert_eq!(december.unblocked, [acme]);
    assert!(store.budget_blocks().await.unwrap().is_empty());
}
