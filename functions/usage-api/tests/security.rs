//! Security, against DynamoDB Local and the local SQS: one matrix of every route in
//! `router::ROUTES` × every kind of caller, the request size limits, keys stored as
//! digests only, and path parameters that name another tenant's resources.
//!
//! The matrix's expectations come from the route's `Access` alone (the table printed by
//! the test); what a route needs to succeed (its path, query and body) comes from
//! [`fixture`], an exhaustive match on `RouteId`, so a new route does not compile until it
//! has one and is then covered in every column.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_dynamodb::types::AttributeValue;
use common::schema::assert_documented;
use common::*;
use rust_decimal_macros::dec;
use serde_json::{Value, json};
use tollgate_core::alert::alerts_due;
use tollgate_core::budget::{Budget, evaluate};
use tollgate_core::ids::MeterName;
use tollgate_core::invoice::{Statement, preview_invoice};
use tollgate_core::money::Currency;
use tollgate_core::plan::{Plan, PlanTimeline};
use tollgate_core::tenant::{ApiKeyHash, ApiKeyRecord, ApiKeyRole};
use tollgate_core::window::{Granularity, Window};
use tollgate_store::WebhookEndpoint;
use tollgate_usage_api::auth::MAX_KEY_LEN;
use tollgate_usage_api::handlers::events::{MAX_EVENT_BYTES, MAX_EVENTS};
use tollgate_usage_api::http::{MAX_BODY_BYTES, MAX_PATH_BYTES, MAX_QUERY_BYTES};
use tollgate_usage_api::router::{Access, ROUTES, Route, RouteId};

/// A second acme key, for the revocation route to revoke (acme's own key must keep working).
const ACME_SPARE_KEY: &str = "tg_test_acme_spare";
/// A well-formed key that was never issued.
const UNKNOWN_KEY: &str = "tg_0000000000000000000000000000000000000000000000000000000000000000";

/// Text only acme's data contains: a denied reply, or another tenant's, must hold none.
const ACME_MARKERS: [&str; 5] = ["acme", "424242", "777.77", "hooks.acme", "spare-label"];
/// Text only globex's data contains: acme's replies must hold none.
const GLOBEX_MARKERS: [&str; 2] = ["globex", "313131"];

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    NoKey,
    /// A well-formed key that was never issued.
    UnknownKey,
    /// acme's revoked key.
    RevokedKey,
    /// globex's key, naming acme (`?tenant=acme`, or acme in the path).
    OtherTenant,
    /// acme's own key (on admin routes: a tenant key where only admins may go).
    OwnTenant,
    Admin,
}

const CALLERS: [Caller; 6] = [
    Caller::NoKey,
    Caller::UnknownKey,
    Caller::RevokedKey,
    Caller::OtherTenant,
    Caller::OwnTenant,
    Caller::Admin,
];

impl Caller {
    fn key(self) -> Option<&'static str> {
        match self {
            Caller::NoKey => None,
            Caller::UnknownKey => Some(UNKNOWN_KEY),
            Caller::RevokedKey => Some(REVOKED_KEY),
            Caller::OtherTenant => Some(GLOBEX_KEY),
            Caller::OwnTenant => Some(ACME_KEY),
            Caller::Admin => Some(ADMIN_KEY),
        }
    }

    fn heading(self) -> &'static str {
        match self {
            Caller::NoKey => "no key",
            Caller::UnknownKey => "unknown key",
            Caller::RevokedKey => "revoked key",
            Caller::OtherTenant => "other tenant's",
            Caller::OwnTenant => "own tenant key",
            Caller::Admin => "admin key",
        }
    }
}

/// What a cell must answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The route's own success status (from its fixture).
    Allowed,
    Denied(u16, &'static str),
}

/// The whole rule: the reader can check this table against `auth.rs`'s documentation.
fn expected(access: Access, caller: Caller) -> Expect {
    use Caller::*;
    match (access, caller) {
        (Access::Public, _) => Expect::Allowed,
        (_, NoKey | UnknownKey | RevokedKey) => Expect::Denied(401, "unauthorized"),
        (Access::Tenant, OtherTenant) => Expect::Denied(404, "not_found"),
        (Access::Tenant, OwnTenant | Admin) => Expect::Allowed,
        (Access::Admin, OtherTenant | OwnTenant) => Expect::Denied(403, "forbidden"),
        (Access::Admin, Admin) => Expect::Allowed,
    }
}

/// A request that succeeds for an allowed caller, aimed at acme's resources.
struct Fixture {
    /// The path, `{id}` and `{sha256}` filled in with acme's.
    path: String,
    /// Query parameters besides `tenant`.
    query: &'static str,
    body: Option<String>,
    ok: u16,
}

fn fixture(route: &Route) -> Fixture {
    let fill = |pattern: &str| {
        pattern
            .replace(
                "{id}",
                match route.id {
                    RouteId::AcknowledgeAlert => "2026-11.threshold-80",
                    _ => "acme",
                },
            )
            .replace("{sha256}", ApiKeyHash::of(ACME_SPARE_KEY).as_hex())
            .replace("{month}", "2026-10")
    };
    let f = |query: &'static str, body: Option<Value>, ok: u16| Fixture {
        path: fill(route.pattern),
        query,
        body: body.map(|b| b.to_string()),
        ok,
    };
    let range = "granularity=day&from=2026-11-01T00:00:00Z&to=2026-11-24T00:00:00Z";
    match route.id {
        RouteId::OpenApi
        | RouteId::Dashboard
        | RouteId::DashboardScript
        | RouteId::DashboardStyle => f("", None, 200),
        RouteId::Usage => f("", None, 200),
        RouteId::UsageHistory => f(range, None, 200),
        RouteId::UsageRealtime => f("", None, 200),
        RouteId::UsageExport => f(range, None, 200),
        RouteId::Pricing => f("", None, 200),
        RouteId::Estimate => f("", Some(json!({"usage": {"api_requests": "1000"}})), 200),
        RouteId::Forecast => f("", None, 200),
        RouteId::InvoicePreview => f("", None, 200),
        RouteId::Events => f(
            "",
            Some(api_event("matrix-1", "acme", "2026-11-23T12:00:00Z", 1)),
            202,
        ),
        RouteId::ListTenants => f("", None, 200),
        RouteId::CreateTenant => f(
            "",
            Some(json!({"tenant": "initech", "displayName": "Initech", "plan": "starter"})),
            201,
        ),
        RouteId::GetTenant => f("", None, 200),
        RouteId::PutTenant => f(
            "",
            Some(json!({"displayName": "acme inc.", "plan": "starter", "status": "active"})),
            200,
        ),
        RouteId::ListPlans => f("", None, 200),
        RouteId::CreatePlan => f(
            "",
            Some(
                json!({"name": "legacy", "effectiveFrom": "2020-01-01T00:00:00Z",
                        "currency": "EUR", "baseFee": "5"}),
            ),
            201,
        ),
        RouteId::CreateKey => f("", Some(json!({"label": "matrix"})), 201),
        RouteId::ListKeys => f("", None, 200),
        RouteId::RevokeKey => f("", None, 200),
        RouteId::Rejected => f("", None, 200),
        RouteId::EdgeSnapshot => f("", None, 200),
        RouteId::GetBudget => f("", None, 200),
        RouteId::PutBudget => f(
            "",
            Some(json!({"monthlyAmount": "777.77", "currency": "USD"})),
            200,
        ),
        RouteId::ListAlerts => f("", None, 200),
        RouteId::AcknowledgeAlert => f("", None, 200),
        RouteId::ListStatements => f("", None, 200),
        RouteId::GetStatement => f("", None, 200),
        RouteId::GetWebhook => f("", None, 200),
        RouteId::PutWebhook => f(
            "",
            Some(json!({"url": "https://hooks.acme.example/matrix"})),
            200,
        ),
        RouteId::DeleteWebhook => f("", None, 204),
        RouteId::Reconciliation => f("", None, 200),
    }
}

/// The URI a caller uses: on tenant routes everyone but acme's own key names acme.
fn uri(route: &Route, fixture: &Fixture, caller: Caller) -> String {
    let mut params = Vec::new();
    if route.access == Access::Tenant && caller != Caller::OwnTenant {
        params.push("tenant=acme");
    }
    if !fixture.query.is_empty() {
        params.push(fixture.query);
    }
    if params.is_empty() {
        fixture.path.clone()
    } else {
        format!("{}?{}", fixture.path, params.join("&"))
    }
}

/// The statement of acme's October on the starter plan.
fn october_statement() -> Statement {
    let plans: Vec<Plan> = serde_json::from_str(PLANS).unwrap();
    let starter: Vec<Plan> = plans
        .into_iter()
        .filter(|p| p.name().as_str() == "starter")
        .collect();
    let timeline = PlanTimeline::from_versions(&starter).unwrap();
    let october = Window::parse_key(Granularity::Month, "2026-10").unwrap();
    let usage = BTreeMap::from([(MeterName::new("api_requests").unwrap(), dec!(250000))]);
    Statement {
        invoice: preview_invoice(&tenant_id("acme"), october, &timeline, &usage).unwrap(),
        plan_versions: starter,
        closed_at: october.end() + chrono::Duration::hours(2),
    }
}

/// The common harness plus something of acme's for every route to find: usage, a
/// budget, alerts, a statement, a webhook and a spare key; and globex's own usage.
async fn seeded(name: &str) -> Harness {
    let h = harness_with_queue(name).await;
    h.apply(vec![
        requests_row("acme", "2026-11-23T10", None, 424242),
        requests_row("globex", "2026-11-23T10", None, 313131),
    ])
    .await;
    let acme = tenant_id("acme");
    let store = h.store();
    store
        .put_budget(&acme, &Budget::new(dec!(777.77), Currency::USD).unwrap())
        .await
        .unwrap();
    let budget = Budget::new(dec!(100), Currency::USD).unwrap();
    let month = Window::containing(Granularity::Month, now());
    let evaluation = evaluate(&budget, dec!(85), now(), month);
    for alert in alerts_due(
        &acme,
        month,
        &budget,
        &evaluation,
        &BTreeSet::new(),
        false,
        now(),
    ) {
        assert!(store.create_alert(&alert).await.unwrap());
    }
    assert!(store.create_statement(&october_statement()).await.unwrap());
    store
        .put_webhook(
            &acme,
            &WebhookEndpoint {
                url: "https://hooks.acme.example/tollgate".into(),
                secret: "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
                created_at: now(),
            },
        )
        .await
        .unwrap();
    store
        .create_api_key(&ApiKeyRecord {
            hash: ApiKeyHash::of(ACME_SPARE_KEY),
            role: ApiKeyRole::Tenant,
            tenant: Some(acme),
            label: "spare-label".into(),
            created_at: now(),
            revoked_at: None,
        })
        .await
        .unwrap();
    h
}

/// Every item of the table, each attribute rendered, sorted: equal before and after a
/// request if and only if the request wrote nothing.
async fn table_state(h: &Harness) -> Vec<BTreeMap<String, String>> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = h
            .store()
            .client()
            .scan()
            .table_name(h.store().table())
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        for item in page.items() {
            items.push(
                item.iter()
                    .map(|(name, value)| (name.clone(), format!("{value:?}")))
                    .collect::<BTreeMap<_, _>>(),
            );
        }
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            break;
        }
    }
    items.sort();
    items
}

fn is_json(reply: &Reply) -> bool {
    reply
        .headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
}

#[tokio::test]
async fn every_route_answers_every_kind_of_caller_as_its_access_says() {
    let h = seeded("security-matrix").await;

    println!("\nExpected, by the route's access (A: the route's own success status):");
    println!(
        "    {:<8}{}",
        "access",
        CALLERS.map(|c| format!("{:>16}", c.heading())).join("")
    );
    for access in [Access::Public, Access::Tenant, Access::Admin] {
        let cells = CALLERS.map(|caller| {
            format!(
                "{:>16}",
                match expected(access, caller) {
                    Expect::Allowed => "A".to_owned(),
                    Expect::Denied(status, code) => format!("{status} {code}"),
                }
            )
        });
        println!("    {:<8}{}", format!("{access:?}"), cells.join(""));
    }

    let mut failures = Vec::new();
    let mut rows = Vec::new();
    for route in ROUTES {
        let fixture = fixture(route);
        let before = table_state(&h).await;
        let mut cells = Vec::new();
        for caller in CALLERS {
            let expect = expected(route.access, caller);
            let uri = uri(route, &fixture, caller);
            let reply = h
                .call(route.method, &uri, caller.key(), fixture.body.as_deref())
                .await;
            let status = reply.status.as_u16();
            let mut problems = Vec::new();
            match expect {
                Expect::Allowed => {
                    if status != fixture.ok {
                        problems.push(format!("expected {}, got {status}", fixture.ok));
                    }
                    if route.access == Access::Tenant
                        && caller == Caller::OwnTenant
                        && let Some(marker) =
                            GLOBEX_MARKERS.iter().find(|m| reply.text.contains(*m))
                    {
                        problems.push(format!("acme's reply shows globex's {marker:?}"));
                    }
                    if is_json(&reply) && problems.is_empty() {
                        assert_documented(route.method, route.pattern, status, &reply.json);
                    }
                }
                Expect::Denied(want, code) => {
                    if (status, reply.code()) != (want, code) {
                        problems.push(format!(
                            "expected {want} {code}, got {status} {}",
                            reply.code()
                        ));
                    } else {
                        assert_documented(route.method, route.pattern, status, &reply.json);
                    }
                    let challenge = reply.headers.get("www-authenticate");
                    if (want == 401) != challenge.is_some_and(|v| v == "Bearer") {
                        problems.push(format!("WWW-Authenticate {challenge:?} on {status}"));
                    }
                    if let Some(marker) = ACME_MARKERS.iter().find(|m| reply.text.contains(*m)) {
                        problems.push(format!("a denied reply shows acme's {marker:?}"));
                    }
                }
            }
            // Denied cells run first (CALLERS' order) and must not have written anything.
            if caller == Caller::OtherTenant {
                if table_state(&h).await != before {
                    problems.push("the table changed after the denied calls".to_owned());
                }
                if h.queue_depth().await != 0 {
                    problems.push("a denied call queued something".to_owned());
                }
            }
            cells.push(if problems.is_empty() {
                format!("{status} ✓")
            } else {
                format!("{status} ✗")
            });
            failures.extend(problems.into_iter().map(|p| {
                format!(
                    "{} {} as {}: {p}\n    {}",
                    route.method,
                    uri,
                    caller.heading(),
                    reply.text.chars().take(300).collect::<String>()
                )
            }));
        }
        h.drain_messages().await;
        rows.push((route, cells));
    }

    println!(
        "\n{} routes × {} callers, each cell the status answered:",
        ROUTES.len(),
        CALLERS.len()
    );
    println!(
        "    {:<7}{:<34}{:<8}{}",
        "method",
        "route",
        "access",
        CALLERS.map(|c| format!("{:>16}", c.heading())).join("")
    );
    for (route, cells) in &rows {
        println!(
            "    {:<7}{:<34}{:<8}{}",
            route.method,
            route.pattern,
            format!("{:?}", route.access),
            cells.iter().map(|c| format!("{c:>16}")).collect::<String>()
        );
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[tokio::test]
async fn path_parameters_naming_another_tenants_resources_reach_nothing_of_it() {
    let h = seeded("security-paths").await;
    let before = table_state(&h).await;

    // globex's own key, no `?tenant`: the path names acme's alert and statement, the
    // lookup is in globex's data, where they do not exist. The reply is the one an id
    // that exists nowhere gets.
    let ack = h
        .post("/v1/alerts/2026-11.threshold-80/ack", GLOBEX_KEY, "")
        .await;
    ack.expect_error(404, "no_alert");
    let statement = h.get("/v1/statements/2026-10", GLOBEX_KEY).await;
    statement.expect_error(404, "no_statement");
    let nowhere = h
        .post("/v1/alerts/2026-11.threshold-50/ack", PODCO_KEY, "")
        .await;
    nowhere.expect_error(404, "no_alert");

    // Admin routes with acme's id or key digest in the path: a tenant key is refused.
    let spare = ApiKeyHash::of(ACME_SPARE_KEY).as_hex().to_owned();
    let admin_paths: [(&str, String, Option<&str>); 6] = [
        ("DELETE", format!("/v1/admin/keys/{spare}"), None),
        ("DELETE", "/v1/admin/tenants/acme/webhook".into(), None),
        (
            "PUT",
            "/v1/admin/tenants/acme/webhook".into(),
            Some(r#"{"url": "https://evil.example/"}"#),
        ),
        (
            "PUT",
            "/v1/admin/tenants/acme".into(),
            Some(r#"{"displayName": "pwned", "plan": "starter", "status": "suspended"}"#),
        ),
        ("POST", "/v1/admin/tenants/acme/keys".into(), Some("{}")),
        ("GET", "/v1/admin/tenants/acme/keys".into(), None),
    ];
    for (method, path, body) in &admin_paths {
        let reply = h.call(method, path, Some(GLOBEX_KEY), *body).await;
        reply.expect_error(403, "forbidden");
    }
    // An event naming acme, sent with globex's key, is refused per event.
    let event = api_event("foreign-1", "acme", "2026-11-23T12:00:00Z", 5);
    let submitted = h.post("/v1/events", GLOBEX_KEY, &event.to_string()).await;
    submitted.expect(202);
    assert_eq!(submitted.json["results"][0]["code"], "subject_not_allowed");

    for reply in [&ack, &statement] {
        for marker in ACME_MARKERS {
            assert!(!reply.text.contains(marker), "{marker}: {}", reply.text);
        }
    }
    assert_eq!(table_state(&h).await, before, "nothing of acme's changed");
    assert_eq!(h.queue_depth().await, 0, "nothing was queued");
    // acme's alert is still unacknowledged, its spare key active, its webhook in place.
    let alerts = h.get("/v1/alerts", ACME_KEY).await;
    let acked: Vec<&Value> = alerts.json["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a.get("acknowledgedAt").is_some())
        .collect();
    assert!(acked.is_empty(), "{acked:?}");
    h.get("/v1/usage", ACME_SPARE_KEY).await.expect(200);
    h.get("/v1/admin/tenants/acme/webhook", ADMIN_KEY)
        .await
        .expect(200);
}

/// Routes that read a body: every `POST` and `PUT`.
fn body_routes() -> impl Iterator<Item = &'static Route> {
    ROUTES.iter().filter(|r| matches!(r.method, "POST" | "PUT"))
}

/// The caller a route lets in.
fn allowed_caller(route: &Route) -> Caller {
    match route.access {
        Access::Admin => Caller::Admin,
        Access::Public | Access::Tenant => Caller::OwnTenant,
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_on_every_route_that_takes_one_but_only_after_the_key() {
    let h = seeded("security-body").await;
    let before = table_state(&h).await;
    let oversized = format!("{{\"pad\": \"{}\"}}", "x".repeat(MAX_BODY_BYTES));
    for route in body_routes() {
        let fixture = fixture(route);
        let caller = allowed_caller(route);
        let uri = uri(route, &fixture, caller);
        let reply = h
            .call(route.method, &uri, caller.key(), Some(&oversized))
            .await;
        reply.expect_error(413, "payload_too_large");
        assert_documented(route.method, route.pattern, 413, &reply.json);
        assert!(
            reply.text.contains(&MAX_BODY_BYTES.to_string()),
            "{}",
            reply.text
        );
        // Nothing is read before the key is checked.
        let anonymous = h.call(route.method, &uri, None, Some(&oversized)).await;
        anonymous.expect_error(401, "unauthorized");
    }
    assert_eq!(table_state(&h).await, before);
    assert_eq!(h.queue_depth().await, 0);

    // The limit itself is accepted: a valid estimate padded to exactly the limit.
    let estimate = r#"{"usage": {"api_requests": "1000"}}"#;
    let padded = format!("{estimate}{}", " ".repeat(MAX_BODY_BYTES - estimate.len()));
    assert_eq!(padded.len(), MAX_BODY_BYTES);
    h.post("/v1/estimate", ACME_KEY, &padded).await.expect(200);
    h.post("/v1/estimate", ACME_KEY, &format!("{padded} "))
        .await
        .expect_error(413, "payload_too_large");
}

#[tokio::test]
async fn an_overlong_query_string_is_414_on_every_route_and_an_overlong_key_401() {
    let h = seeded("security-uri").await;
    let long = format!("pad={}", "q".repeat(MAX_QUERY_BYTES));
    let at_limit = format!("pad={}", "q".repeat(MAX_QUERY_BYTES - 4));
    let oversized_key = format!("tg_{}", "k".repeat(MAX_KEY_LEN));
    for route in ROUTES {
        let fixture = fixture(route);
        let caller = allowed_caller(route);
        let base = uri(route, &fixture, caller);
        let join = if base.contains('?') { '&' } else { '?' };
        let reply = h
            .call(
                route.method,
                &format!("{base}{join}{long}"),
                caller.key(),
                fixture.body.as_deref(),
            )
            .await;
        reply.expect_error(414, "uri_too_long");
        assert_documented(route.method, route.pattern, 414, &reply.json);
        assert!(reply.text.len() < 200, "{}", reply.text);
        // At the limit the query is read (and `pad` refused as unknown).
        if base.contains('?') {
            continue;
        }
        let reply = h
            .call(
                route.method,
                &format!("{base}?{at_limit}"),
                caller.key(),
                fixture.body.as_deref(),
            )
            .await;
        reply.expect_error(400, "unknown_query_parameter");
        if route.access != Access::Public {
            let reply = h
                .call(
                    route.method,
                    &base,
                    Some(&oversized_key),
                    fixture.body.as_deref(),
                )
                .await;
            reply.expect_error(401, "unauthorized");
            assert_eq!(reply.headers["www-authenticate"], "Bearer");
        }
    }
    // Without a key, a protected route answers 401 before it looks at the query.
    h.call("GET", &format!("/v1/usage?{long}"), None, None)
        .await
        .expect_error(401, "unauthorized");
}

#[tokio::test]
async fn overlong_paths_are_414_and_long_path_parameters_400_without_a_long_echo() {
    let h = seeded("security-path-len").await;
    let paths = |segment: &str| {
        [
            ("GET", format!("/v1/admin/tenants/{segment}"), ADMIN_KEY),
            ("DELETE", format!("/v1/admin/keys/{segment}"), ADMIN_KEY),
            ("POST", format!("/v1/alerts/{segment}/ack"), ACME_KEY),
            ("GET", format!("/v1/statements/{segment}"), ACME_KEY),
        ]
    };
    let too_long = "p".repeat(MAX_PATH_BYTES);
    for (method, path, key) in paths(&too_long) {
        let reply = h.call(method, &path, Some(key), None).await;
        reply.expect_error(414, "uri_too_long");
        assert!(reply.text.len() < 200, "{}", reply.text);
        // The key is checked first.
        h.call(method, &path, None, None)
            .await
            .expect_error(401, "unauthorized");
    }
    // Under the path limit a malformed parameter is a 400 that may name it, so the reply
    // stays within about the path limit.
    let long = "p".repeat(MAX_PATH_BYTES - 100);
    for (method, path, key) in paths(&long) {
        let reply = h.call(method, &path, Some(key), None).await;
        reply.expect_error(400, "bad_path_parameter");
        assert!(
            reply.text.len() < MAX_PATH_BYTES + 200,
            "{} bytes",
            reply.text.len()
        );
    }
    // A path no route matches is a 404 that quotes at most 200 characters of it.
    let reply = h
        .call(
            "GET",
            &format!("/v1/{}", "p".repeat(5000)),
            Some(ACME_KEY),
            None,
        )
        .await;
    reply.expect_error(404, "no_such_route");
    assert!(reply.text.len() < 400, "{} bytes", reply.text.len());
}

#[tokio::test]
async fn the_event_intake_limits_each_event_each_batch_and_the_request() {
    let h = seeded("security-events").await;
    // A full batch is taken.
    let full = Value::Array(
        (0..MAX_EVENTS)
            .map(|i| api_event(&format!("full-{i}"), "acme", "2026-11-23T12:00:00Z", 1))
            .collect(),
    );
    let reply = h.post("/v1/events", ACME_KEY, &full.to_string()).await;
    reply.expect(202);
    assert_eq!(reply.json["accepted"], MAX_EVENTS);
    assert_eq!(h.drain_queue().await.len(), MAX_EVENTS);
    // One more is refused whole.
    let mut over = full.as_array().unwrap().clone();
    over.push(api_event("one-more", "acme", "2026-11-23T12:00:00Z", 1));
    h.post("/v1/events", ACME_KEY, &Value::Array(over).to_string())
        .await
        .expect_error(400, "too_many_events");
    // An event larger than a queue message is refused on its own; its neighbours pass.
    let mut big = api_event("big", "acme", "2026-11-23T12:00:00Z", 1);
    big["data"]["note"] = json!("n".repeat(MAX_EVENT_BYTES));
    let batch = json!([
        api_event("small-1", "acme", "2026-11-23T12:00:00Z", 1),
        big,
        api_event("small-2", "acme", "2026-11-23T12:00:00Z", 1)
    ]);
    let reply = h.post("/v1/events", ACME_KEY, &batch.to_string()).await;
    reply.expect(202);
    assert_documented("POST", "/v1/events", 202, &reply.json);
    assert_eq!(reply.json["accepted"], 2);
    assert_eq!(reply.json["results"][1]["code"], "event_too_large");
    assert!(!reply.text.contains("nnnnnnnn"), "the event is not echoed");
    let queued = h.drain_queue().await;
    assert_eq!(queued.len(), 2);
    assert!(queued.iter().all(|e| !e.contains("\"big\"")));
    // And the request as a whole is bounded by the body limit.
    let huge = Value::Array(
        (0..3)
            .map(|i| {
                let mut e = api_event(&format!("h{i}"), "acme", "2026-11-23T12:00:00Z", 1);
                e["data"]["note"] = json!("n".repeat(MAX_BODY_BYTES / 3));
                e
            })
            .collect(),
    );
    h.post("/v1/events", ACME_KEY, &huge.to_string())
        .await
        .expect_error(413, "payload_too_large");
    assert_eq!(h.queue_depth().await, 0);
}

/// Every string an attribute holds, however deeply nested.
fn strings_of(value: &AttributeValue, out: &mut Vec<String>) {
    match value {
        AttributeValue::S(s) | AttributeValue::N(s) => out.push(s.clone()),
        AttributeValue::B(b) => out.push(String::from_utf8_lossy(b.as_ref()).into_owned()),
        AttributeValue::Ss(items) | AttributeValue::Ns(items) => out.extend(items.iter().cloned()),
        AttributeValue::Bs(items) => out.extend(
            items
                .iter()
                .map(|b| String::from_utf8_lossy(b.as_ref()).into_owned()),
        ),
        AttributeValue::L(items) => items.iter().for_each(|v| strings_of(v, out)),
        AttributeValue::M(map) => map.iter().for_each(|(k, v)| {
            out.push(k.clone());
            strings_of(v, out);
        }),
        _ => {}
    }
}

#[tokio::test]
async fn issued_keys_are_stored_and_served_to_the_edge_as_digests_only() {
    let h = seeded("security-digests").await;
    let mut issued = Vec::new();
    for tenant in ["acme", "globex", "podco", "acme"] {
        let created = h
            .post(
                &format!("/v1/admin/tenants/{tenant}/keys"),
                ADMIN_KEY,
                r#"{"label": "issued"}"#,
            )
            .await;
        created.expect(201);
        let key = created.json["key"].as_str().unwrap().to_owned();
        h.get("/v1/usage", &key).await.expect(200);
        issued.push(key);
    }
    let revoked = ApiKeyHash::of(&issued[3]).as_hex().to_owned();
    h.call(
        "DELETE",
        &format!("/v1/admin/keys/{revoked}"),
        Some(ADMIN_KEY),
        None,
    )
    .await
    .expect(200);

    // Every attribute of every item, keys included, searched for each key's text (and
    // its random part alone, in case a prefix were stripped before storing).
    let mut secrets: Vec<String> = issued.clone();
    secrets.extend(
        issued
            .iter()
            .map(|k| k.trim_start_matches("tg_").to_owned()),
    );
    let mut strings = Vec::new();
    let mut start = None;
    let mut key_items = 0;
    loop {
        let page = h
            .store()
            .client()
            .scan()
            .table_name(h.store().table())
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        for item in page.items() {
            if item
                .get(tollgate_store::table::PK)
                .and_then(|pk| pk.as_s().ok())
                .is_some_and(|pk| pk.starts_with("KEY#"))
            {
                key_items += 1;
            }
            for (name, value) in item {
                strings.push(name.clone());
                strings_of(value, &mut strings);
            }
        }
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            break;
        }
    }
    assert!(key_items >= issued.len() + 6, "{key_items} key items");
    for secret in &secrets {
        assert!(
            !strings.iter().any(|s| s.contains(secret.as_str())),
            "a key's text is stored"
        );
    }
    let stored: BTreeSet<&str> = strings.iter().map(String::as_str).collect();
    for key in &issued {
        assert!(
            stored
                .iter()
                .any(|s| s.contains(ApiKeyHash::of(key).as_hex())),
            "the digest of an issued key is stored"
        );
    }

    // The listings and the edge snapshot show digests only; the snapshot lists the
    // active keys and not the revoked one.
    let listed = h.get("/v1/admin/tenants/acme/keys", ADMIN_KEY).await;
    let snapshot = h.get("/v1/edge/snapshot", ADMIN_KEY).await;
    snapshot.expect(200);
    for reply in [&listed, &snapshot] {
        for secret in &secrets {
            assert!(!reply.text.contains(secret.as_str()), "a key in a reply");
        }
    }
    let digests: BTreeSet<&str> = snapshot.json["apiKeys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["sha256"].as_str().unwrap())
        .collect();
    for key in &issued[..3] {
        assert!(digests.contains(ApiKeyHash::of(key).as_hex()));
    }
    assert!(!digests.contains(revoked.as_str()));
    assert!(digests.iter().all(|d| ApiKeyHash::from_hex(d).is_some()));
    for fixed in [ADMIN_KEY, ACME_KEY, GLOBEX_KEY, REVOKED_KEY, ACME_SPARE_KEY] {
        assert!(!snapshot.text.contains(fixed));
        assert!(!listed.text.contains(fixed));
    }
    assert!(
        !digests.contains(ApiKeyHash::of(ADMIN_KEY).as_hex()),
        "admin keys are not tenant keys"
    );
}
