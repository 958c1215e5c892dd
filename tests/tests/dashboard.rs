//! The tenant dashboard in headless Chromium, against the local stack: the real
//! `usage-api` binary behind the local Function URL serves the page, usage arrives as
//! events through `POST /v1/events`, the real ingest, rollup and budget binaries count it
//! and raise alerts, and the page must show exactly what the API says.
//!
//! The test reads the rendered page through WebDriver (Debian's Chromium and
//! ChromeDriver, installed by `tollgate_devstack::Chromium::ensure`) and compares every
//! figure with the API's reply, string for string: spend, budget and its progress bar,
//! cost lines, the daily chart of each meter, usage, allowances, quotas, rate limits and
//! alerts. It acknowledges an alert by clicking, runs the estimator (and a bad quantity),
//! signs in with another tenant's key and with a wrong one, and checks the key never
//! stays in the address bar and the page never trips its Content Security Policy.
//! Screenshots of each state go to `target/dashboard/`.
//!
//! Figures that move with the clock (the month-end projections) are checked to lie
//! between the API's answers just before and just after the page read them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tollgate_core::tenant::{ApiKeyHash, ApiKeyRecord, ApiKeyRole};
use tollgate_devstack::Chromium;
use tollgate_devstack::webdriver::{Browser, ChromeDriver};
use tollgate_local::{LocalStack, StackConfig, build_functions};

use common::{Api, stay_within_one_day};

const ADMIN_KEY: &str = "tg_admin_dashboard_test_key";
/// How long the page may take to load or react.
const PAGE_WAIT: Duration = Duration::from_secs(30);
/// How long ingest may take to count what was posted.
const INGEST_WAIT: Duration = Duration::from_secs(90);
/// The budget, held against a 49 USD base fee plus overage: past half of it whatever the
/// day of the month (the alert to acknowledge), and later in a month past 80 % and on
/// track to exceed it.
const BUDGET: &str = "70";

const METERS: &str = r#"[
  {"name": "api_requests", "eventTypes": ["api.usage"], "valueField": "requests",
   "aggregation": {"kind": "sum"}, "unit": "requests", "groupBy": ["route"]},
  {"name": "data_transfer", "eventTypes": ["api.usage"], "valueField": "gb",
   "aggregation": {"kind": "sum"}, "unit": "GB", "groupBy": ["route"]}
]"#;

fn plan() -> Value {
    json!({
        "name": "dash-pro",
        "effectiveFrom": "2020-01-01T00:00:00Z",
        "currency": "USD",
        "baseFee": "49",
        "meters": [
            {"meter": "api_requests", "included": "1000",
             "price": {"type": "perUnit", "unitPrice": "0.002"}},
            {"meter": "data_transfer", "included": "1",
             "price": {"type": "perUnit", "unitPrice": "0.09"}}
        ],
        "limits": {
            "rate": {"perSecond": 50, "perMinute": 1200},
            "quotas": [{"meter": "api_requests", "perDay": "5000", "perMonth": "150000"}]
        }
    })
}

/// The events of the last six days (ingest takes up to seven days late): per day, a few
/// calls on two routes and some data transfer in fractions of a GB. Returns them with
/// their totals per meter.
fn events(tenant: &str, now: DateTime<Utc>) -> (Vec<Value>, Decimal, Decimal) {
    let mut events = Vec::new();
    let (mut requests, mut gigabytes) = (Decimal::ZERO, Decimal::ZERO);
    for day in 0..6_i64 {
        for (k, route) in ["/v1/orders", "/v1/items", "/v1/orders"].iter().enumerate() {
            let k = i64::try_from(k).unwrap();
            let time = now - TimeDelta::days(day) - TimeDelta::seconds(1 + 20 * k);
            let calls = 150 * (6 - day) + 37 * k;
            let gb: Decimal = format!("0.{}", 125 + 250 * k).parse().unwrap();
            requests += Decimal::from(calls);
            gigabytes += gb;
            events.push(json!({
                "specversion": "1.0",
                "id": format!("{tenant}-{day}-{k}"),
                "source": "/dashboard-test",
                "type": "api.usage",
                "subject": tenant,
                "time": time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "data": {"requests": calls, "gb": gb.to_string(), "route": route}
            }));
        }
    }
    (events, requests, gigabytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_exactly_what_the_api_says_and_acts_through_it() {
    stay_within_one_day(900).await;
    let chromium = tokio::task::spawn_blocking(Chromium::ensure)
        .await
        .unwrap()
        .unwrap();
    println!("browser: {}", chromium.version().unwrap());

    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let binaries = build_functions(&workspace).unwrap();
    let meters = std::env::temp_dir().join(format!(
        "tollgate-dashboard-meters-{}.json",
        std::process::id()
    ));
    std::fs::write(&meters, METERS).unwrap();
    let mut config = StackConfig::new(binaries, &meters);
    config.table = format!("dashboard-{}", std::process::id());
    let stack = LocalStack::start(&config).await.unwrap();
    let base = stack.usage_api_url().trim_end_matches('/').to_owned();
    let api = Api::new(&base);
    let keys = bootstrap(&stack, &api).await;
    let (acme, globex) = (keys[0].as_str(), keys[1].as_str());

    // Usage, counted by the real pipeline; then the rollup and the budget run, as their
    // schedules would.
    let now = Utc::now();
    let (acme_events, requests, gigabytes) = events("acme", now);
    let (globex_events, ..) = events("globex", now);
    for (key, events) in [(acme, &acme_events), (globex, &globex_events)] {
        let reply = api
            .call("POST", key, "/v1/events", Some(&json!(events)))
            .await;
        assert_eq!(reply["accepted"], json!(events.len()), "{reply}");
    }
    wait_for_usage(
        &api,
        acme,
        &[("api_requests", requests), ("data_transfer", gigabytes)],
    )
    .await;
    stack.run_rollup(Utc::now()).await.unwrap();
    stack.run_budget(Utc::now()).await.unwrap();
    let alerts = api.call("GET", acme, "/v1/alerts", None).await;
    assert!(
        !alerts["alerts"].as_array().unwrap().is_empty(),
        "the budget run raised at least the 50 % alert: {alerts}"
    );

    let screenshots = workspace.join("target").join("dashboard");
    std::fs::create_dir_all(&screenshots).unwrap();
    let driver = tokio::task::spawn_blocking({
        let chromium = chromium.clone();
        move || chromium.start_driver()
    })
    .await
    .unwrap()
    .unwrap();
    let page = format!("{base}/v1/dashboard");

    signed_in_page_equals_the_api(&driver, &api, &page, acme, &screenshots).await;
    other_tenant_sees_only_its_own(&driver, &api, &page, globex).await;
    wrong_key_is_refused_and_forgotten(&driver, &page, &screenshots).await;

    drop(driver);
    stack.stop().await;
    let _ = std::fs::remove_file(meters);
}

/// The admin key (written to the store, as `cargo xtask demo` does), the plan, two
/// tenants and their keys, and acme's budget. Returns the tenant keys.
async fn bootstrap(stack: &LocalStack, api: &Api) -> Vec<String> {
    stack
        .store
        .create_api_key(&ApiKeyRecord {
            hash: ApiKeyHash::of(ADMIN_KEY),
            role: ApiKeyRole::Admin,
            tenant: None,
            label: "dashboard test".into(),
            created_at: Utc::now(),
            revoked_at: None,
        })
        .await
        .unwrap();
    api.call("POST", ADMIN_KEY, "/v1/admin/plans", Some(&plan()))
        .await;
    let mut keys = Vec::new();
    for tenant in ["acme", "globex"] {
        let body = json!({"tenant": tenant, "displayName": tenant, "plan": "dash-pro"});
        api.call("POST", ADMIN_KEY, "/v1/admin/tenants", Some(&body))
            .await;
        let created = api
            .call(
                "POST",
                ADMIN_KEY,
                &format!("/v1/admin/tenants/{tenant}/keys"),
                Some(&json!({"label": "dashboard"})),
            )
            .await;
        keys.push(created["key"].as_str().unwrap().to_owned());
    }
    let budget = json!({"monthlyAmount": BUDGET, "currency": "USD", "hardLimit": false});
    api.call("PUT", &keys[0], "/v1/budget", Some(&budget)).await;
    keys
}

async fn wait_for_usage(api: &Api, key: &str, expected: &[(&str, Decimal)]) {
    let deadline = tokio::time::Instant::now() + INGEST_WAIT;
    loop {
        let usage = api.call("GET", key, "/v1/usage", None).await;
        let seen: Vec<(&str, Decimal)> = expected
            .iter()
            .map(|(meter, _)| (*meter, meter_quantity(&usage, meter)))
            .collect();
        if seen == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ingest counted {seen:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn meter_quantity(usage: &Value, meter: &str) -> Decimal {
    usage["meters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["meter"] == meter)
        .map_or(Decimal::ZERO, |m| decimal(&m["quantity"]))
}

fn decimal(value: &Value) -> Decimal {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a decimal string: {value}"))
        .parse()
        .unwrap()
}

/// The API's replies the page is built from.
struct Replies {
    usage: Value,
    forecast: Value,
    pricing: Value,
    preview: Value,
    history: Value,
    alerts: Value,
}

async fn replies(api: &Api, key: &str) -> Replies {
    let usage = api.call("GET", key, "/v1/usage", None).await;
    let period = &usage["period"];
    let history = api
        .call(
            "GET",
            key,
            &format!(
                "/v1/usage/history?granularity=day&by=meter&from={}&to={}",
                period["start"].as_str().unwrap(),
                period["end"].as_str().unwrap()
            ),
            None,
        )
        .await;
    let month = period["key"].as_str().unwrap();
    Replies {
        forecast: api.call("GET", key, "/v1/forecast", None).await,
        pricing: api.call("GET", key, "/v1/pricing", None).await,
        preview: api.call("GET", key, "/v1/invoice/preview", None).await,
        alerts: api
            .call("GET", key, &format!("/v1/alerts?month={month}"), None)
            .await,
        history,
        usage,
    }
}

/// Runs blocking WebDriver calls on this runtime thread (the test's runtime has more).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn text_of(browser: &Browser, testid: &str) -> String {
    let element = browser
        .find(&format!("[data-testid=\"{testid}\"]"))
        .unwrap()
        .unwrap_or_else(|| panic!("no [data-testid={testid}] on the page"));
    browser.text(&element).unwrap()
}

fn wait_for_state(browser: &Browser, state: &str) {
    if let Err(err) = browser.wait_for(&format!("main[data-state=\"{state}\"]"), PAGE_WAIT) {
        let source = browser.source().unwrap_or_else(|e| e.to_string());
        let source: String = source.chars().take(3000).collect();
        panic!("{err}; the page at {:?}:\n{source}", browser.url());
    }
}

fn screenshot(browser: &Browser, dir: &Path, name: &str) -> PathBuf {
    let png = browser.screenshot().unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{name}: not a PNG of a page"
    );
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    println!("screenshot: {}", path.display());
    path
}

fn csp_violations(browser: &Browser) -> String {
    browser
        .execute("return document.body.dataset.cspViolations;", &[])
        .unwrap()
        .as_str()
        .unwrap_or("none read")
        .to_owned()
}

/// Reads rows of a table: for each element matching `row`, its `data-*` attributes named
/// in `keys` and the text of each `[data-testid]` named in `cells` (null when absent).
fn read_rows(browser: &Browser, row: &str, keys: &[&str], cells: &[&str]) -> Vec<Value> {
    let script = "
        const [row, keys, cells] = arguments;
        return [...document.querySelectorAll(row)].map(r => {
            const out = {};
            for (const k of keys) out[k] = r.dataset[k] ?? null;
            for (const c of cells) {
                const el = r.querySelector(`[data-testid=\"${c}\"]`);
                out[c] = el ? el.textContent : null;
            }
            return out;
        });";
    browser
        .execute(script, &[json!(row), json!(keys), json!(cells)])
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// `value` as the page shows a decimal the API may omit: its string, or null.
fn shown(value: &Value) -> Value {
    match value {
        Value::String(_) => value.clone(),
        Value::Number(n) => json!(n.to_string()),
        _ => Value::Null,
    }
}

async fn signed_in_page_equals_the_api(
    driver: &ChromeDriver,
    api: &Api,
    page: &str,
    key: &str,
    screenshots: &Path,
) {
    let browser = blocking(|| driver.new_session(1280, 1000)).unwrap();
    // Before the page reads the API, and after: what moves with the clock lies between.
    let before = replies(api, key).await;
    blocking(|| {
        browser.goto(page).unwrap();
        wait_for_state(&browser, "signed-out");
        let input = browser.find("#key").unwrap().unwrap();
        browser.type_text(&input, key).unwrap();
        browser
            .click(&browser.find("#key-form button").unwrap().unwrap())
            .unwrap();
        wait_for_state(&browser, "ready");
    });
    let after = replies(api, key).await;
    blocking(|| {
        check_figures(&browser, &before, &after);
        check_trend(&browser, &before);
        screenshot(&browser, screenshots, "overview");
        assert_eq!(csp_violations(&browser), "0");
    });

    // Acknowledge the first open alert by clicking; the API and the page both show it.
    let open: Vec<String> = after.alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["acknowledgedAt"].is_null())
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    let target = open.first().expect("an open alert").clone();
    let shown_at = blocking(|| {
        let button = browser
            .find(&format!(
                "[data-testid=alert][data-id=\"{target}\"] [data-testid=ack]"
            ))
            .unwrap()
            .unwrap();
        browser.click(&button).unwrap();
        let done = browser
            .wait_for(
                &format!(
                    "[data-testid=alert][data-id=\"{target}\"] [data-testid=acknowledged] time"
                ),
                PAGE_WAIT,
            )
            .unwrap();
        browser.attribute(&done, "datetime").unwrap().unwrap()
    });
    let alerts = api.call("GET", key, "/v1/alerts", None).await;
    for alert in alerts["alerts"].as_array().unwrap() {
        let id = alert["id"].as_str().unwrap();
        if id == target {
            assert_eq!(alert["acknowledgedAt"], json!(shown_at), "{alert}");
        } else if open.iter().any(|o| o == id) {
            assert!(
                alert["acknowledgedAt"].is_null(),
                "only {target} was acknowledged: {alert}"
            );
        }
    }
    blocking(|| {
        let buttons = browser
            .find_all("[data-testid=alert] [data-testid=ack]")
            .unwrap();
        assert_eq!(buttons.len(), open.len() - 1);
        screenshot(&browser, screenshots, "alert-acknowledged");
    });

    estimator(&browser, api, key, &after, screenshots).await;
    blocking(|| assert_eq!(csp_violations(&browser), "0"));
}

/// Every figure on the page against the API, string for string.
fn check_figures(browser: &Browser, before: &Replies, after: &Replies) {
    let usage = &after.usage;
    let forecast = &after.forecast;
    assert_eq!(
        before.usage["meters"], usage["meters"],
        "usage moved during the read"
    );
    assert_eq!(
        text_of(browser, "tenant"),
        usage["tenant"].as_str().unwrap()
    );
    assert_eq!(text_of(browser, "plan"), usage["plan"].as_str().unwrap());

    // Spend against the budget.
    assert_eq!(
        text_of(browser, "spend-so-far"),
        forecast["cost"]["soFar"].as_str().unwrap()
    );
    assert_eq!(
        forecast["cost"]["soFar"], usage["costSoFar"],
        "one month-to-date figure"
    );
    assert_eq!(text_of(browser, "currency"), "USD");
    let budget = &forecast["budget"];
    let evaluation = &budget["evaluation"];
    assert_eq!(text_of(browser, "budget-amount"), BUDGET);
    assert_eq!(
        text_of(browser, "budget-amount"),
        budget["budget"]["monthlyAmount"].as_str().unwrap()
    );
    assert_eq!(
        text_of(browser, "budget-percent"),
        evaluation["percentUsed"].as_str().unwrap()
    );
    let progress = browser
        .find("[data-testid=budget-progress]")
        .unwrap()
        .unwrap();
    assert_eq!(
        browser
            .attribute(&progress, "aria-valuenow")
            .unwrap()
            .as_deref(),
        evaluation["percentUsed"].as_str()
    );
    assert_eq!(
        browser.attribute(&progress, "role").unwrap().as_deref(),
        Some("progressbar")
    );
    let width = browser
        .execute(
            "return document.querySelector('[data-testid=budget-progress] .fill').style.width;",
            &[],
        )
        .unwrap();
    let percent: Decimal = decimal(&evaluation["percentUsed"]);
    assert_eq!(
        width,
        json!(format!(
            "{}%",
            percent.min(Decimal::ONE_HUNDRED).normalize()
        ))
    );
    let projected: Decimal = text_of(browser, "projected-spend").parse().unwrap();
    let (early, late) = (
        decimal(&before.forecast["cost"]["projected"]),
        decimal(&after.forecast["cost"]["projected"]),
    );
    assert!(
        early.min(late) <= projected && projected <= early.max(late),
        "projected {projected} between the API's {early} and {late}"
    );

    // Cost lines: the invoice preview, line for line.
    let lines = read_rows(
        browser,
        "[data-testid=cost-line]",
        &["kind", "meter"],
        &[
            "line-quantity",
            "line-included",
            "line-billable",
            "line-amount",
        ],
    );
    let expected: Vec<Value> = after.preview["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|line| {
            json!({
                "kind": line["kind"],
                "meter": shown(&line["meter"]),
                "line-quantity": shown(&line["quantity"]),
                "line-included": shown(&line["included"]),
                "line-billable": shown(&line["billable"]),
                "line-amount": shown(&line["amount"]),
            })
        })
        .collect();
    assert_eq!(lines, expected);
    let total = browser
        .find("[data-testid=invoice-total]")
        .unwrap()
        .unwrap();
    assert_eq!(
        browser.attribute(&total, "data-value").unwrap(),
        after.preview["total"].as_str().map(str::to_owned)
    );
    assert_eq!(after.preview["total"], usage["costSoFar"]);

    // Usage and allowances per meter.
    let meters = read_rows(
        browser,
        "[data-testid=meter-row]",
        &["meter"],
        &[
            "meter-quantity",
            "meter-today",
            "meter-included",
            "meter-cost",
        ],
    );
    let expected: Vec<Value> = usage["meters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            json!({
                "meter": m["meter"],
                "meter-quantity": shown(&m["quantity"]),
                "meter-today": shown(&m["today"]),
                "meter-included": shown(&m["included"]),
                "meter-cost": shown(&m["cost"]),
            })
        })
        .collect();
    assert_eq!(meters, expected);

    // Quotas.
    let quotas = read_rows(
        browser,
        "[data-testid=quota]",
        &["meter", "period"],
        &["quota-limit", "quota-used", "quota-remaining"],
    );
    let mut expected = Vec::new();
    for m in usage["meters"].as_array().unwrap() {
        for period in ["perDay", "perMonth"] {
            let quota = &m["quotas"][period];
            if quota.is_object() {
                expected.push(json!({
                    "meter": m["meter"], "period": period,
                    "quota-limit": quota["limit"], "quota-used": quota["used"],
                    "quota-remaining": quota["remaining"],
                }));
            }
        }
    }
    assert_eq!(expected.len(), 2, "the plan has a day and a month quota");
    assert_eq!(quotas, expected);
    let resets: Vec<Value> = browser
        .execute("return [...document.querySelectorAll('[data-testid=quota-resets] time')].map(t => t.getAttribute('datetime'));", &[])
        .unwrap()
        .as_array()
        .unwrap()
        .clone();
    let expected_resets: Vec<Value> = usage["meters"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| ["perDay", "perMonth"].map(|p| m["quotas"][p]["resetsAt"].clone()))
        .filter(|r| !r.is_null())
        .collect();
    assert_eq!(resets, expected_resets);

    // Rate limits, from the plan in force.
    let limits = read_rows(
        browser,
        "[data-testid=rate-limit]",
        &["period"],
        &["rate-limit-value"],
    );
    let rate = &after.pricing["current"]["limits"]["rate"];
    let expected: Vec<Value> = ["perSecond", "perMinute", "perHour", "perDay"]
        .into_iter()
        .filter(|p| !rate[*p].is_null())
        .map(|p| json!({"period": p, "rate-limit-value": rate[p].to_string()}))
        .collect();
    assert_eq!(limits, expected);

    // Alerts, newest first, as listed.
    let shown_alerts = read_rows(
        browser,
        "[data-testid=alert]",
        &["id"],
        &[
            "alert-severity",
            "alert-spent",
            "alert-budget",
            "alert-percent",
        ],
    );
    let expected: Vec<Value> = after.alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            json!({
                "id": a["id"], "alert-severity": a["severity"], "alert-spent": a["spent"],
                "alert-budget": a["budget"], "alert-percent": a["percentUsed"],
            })
        })
        .collect();
    assert_eq!(shown_alerts, expected);
}

/// The daily chart of each meter: a bar per day of the month so far, each the API's
/// folded quantity of that day (zero where it has no row), in the chart and its table.
fn check_trend(browser: &Browser, replies: &Replies) {
    let meters: Vec<String> = replies.usage["meters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["meter"].as_str().unwrap().to_owned())
        .collect();
    let as_of = replies.usage["asOf"].as_str().unwrap();
    let first = replies.usage["period"]["start"].as_str().unwrap();
    let days = u32::try_from(
        (as_of[..10].parse::<chrono::NaiveDate>().unwrap()
            - first[..10].parse::<chrono::NaiveDate>().unwrap())
        .num_days()
            + 1,
    )
    .unwrap();
    let mut nonzero_days = 0;
    for meter in &meters {
        let option = browser
            .find(&format!("#trend-meter option[value=\"{meter}\"]"))
            .unwrap()
            .unwrap();
        browser
            .click(&browser.find("#trend-meter").unwrap().unwrap())
            .unwrap();
        browser.click(&option).unwrap();
        browser
            .wait_until("the chart of the chosen meter", PAGE_WAIT, |b| {
                let label = b.execute(
                    "return document.querySelector('#trend-chart svg').getAttribute('aria-label');",
                    &[],
                )?;
                Ok((label == json!(format!("{meter} per day"))).then_some(()))
            })
            .unwrap();
        let by_day: BTreeMap<String, String> = replies.history["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["meter"] == meter.as_str())
            .map(|r| {
                assert_eq!(r["dimensions"], json!({}), "by=meter folds dimensions");
                (
                    r["window"]["start"].as_str().unwrap()[..10].to_owned(),
                    r["quantity"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let bars = read_rows(browser, "[data-testid=trend-bar]", &["day", "value"], &[]);
        assert_eq!(bars.len(), days as usize, "{meter}: a bar per day so far");
        for bar in &bars {
            let day = bar["day"].as_str().unwrap();
            let expected = by_day.get(day).map_or("0", String::as_str);
            assert_eq!(bar["value"], json!(expected), "{meter} on {day}");
        }
        nonzero_days += bars.iter().filter(|b| b["value"] != json!("0")).count();
        let table = read_rows(
            browser,
            "[data-testid=trend-row]",
            &["day"],
            &["trend-quantity"],
        );
        let values: Vec<&Value> = table.iter().map(|r| &r["trend-quantity"]).collect();
        let bar_values: Vec<&Value> = bars.iter().map(|b| &b["value"]).collect();
        assert_eq!(
            values, bar_values,
            "{meter}: the table says what the chart draws"
        );
    }
    assert!(nonzero_days >= 2, "today's usage of each meter shows up");
}

async fn estimator(browser: &Browser, api: &Api, key: &str, replies: &Replies, screenshots: &Path) {
    // Prefilled from the month's projection.
    let prefilled = blocking(|| {
        read_rows(browser, "[data-testid=estimate-input]", &["meter"], &[])
            .into_iter()
            .map(|row| row["meter"].as_str().unwrap().to_owned())
            .map(|meter| {
                let input = browser
                    .find(&format!("#estimate-{meter}"))
                    .unwrap()
                    .unwrap();
                let value = browser.property(&input, "value").unwrap();
                (meter, value.as_str().unwrap().to_owned())
            })
            .collect::<Vec<_>>()
    });
    assert_eq!(
        prefilled.len(),
        replies.usage["meters"].as_array().unwrap().len()
    );
    for (meter, value) in &prefilled {
        let projected = replies.forecast["meters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["meter"] == meter.as_str())
            .map(|m| decimal(&m["projected"]))
            .unwrap();
        let value: Decimal = value.parse().unwrap();
        assert!(
            value >= Decimal::ZERO
                && value >= projected * Decimal::new(9, 1)
                && value <= projected * Decimal::new(11, 1),
            "{meter}: prefilled {value}, projected {projected}"
        );
    }

    // What if: 250,000 requests and 12.5 GB.
    let typed = [("api_requests", "250000"), ("data_transfer", "12.5")];
    let (total, lines) = blocking(|| {
        for (meter, value) in typed {
            let input = browser
                .find(&format!("#estimate-{meter}"))
                .unwrap()
                .unwrap();
            browser.clear(&input).unwrap();
            browser.type_text(&input, value).unwrap();
        }
        browser
            .click(
                &browser
                    .find("[data-testid=estimate-submit]")
                    .unwrap()
                    .unwrap(),
            )
            .unwrap();
        browser
            .wait_for("[data-testid=estimate-form][data-state=done]", PAGE_WAIT)
            .unwrap();
        (
            text_of(browser, "estimate-total"),
            read_rows(
                browser,
                "[data-testid=estimate-line]",
                &["kind", "meter"],
                &["estimate-amount"],
            ),
        )
    });
    let body = json!({"usage": {"api_requests": "250000", "data_transfer": "12.5"}});
    let estimate = api.call("POST", key, "/v1/estimate", Some(&body)).await;
    assert_eq!(total, estimate["total"].as_str().unwrap());
    let expected: Vec<Value> = estimate["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| json!({"kind": l["kind"], "meter": shown(&l["meter"]), "estimate-amount": l["amount"]}))
        .collect();
    assert_eq!(lines, expected);
    // 49 + (250,000 − 1,000) × 0.002 + (12.5 − 1) × 0.09 = 49 + 498 + 1.035 → 548.04 (half-even cents).
    assert_eq!(total, "548.04");
    blocking(|| screenshot(browser, screenshots, "estimate"));

    // A quantity that is not a decimal: the API's reason, on the page.
    let reason = blocking(|| {
        let input = browser.find("#estimate-data_transfer").unwrap().unwrap();
        browser.clear(&input).unwrap();
        browser.type_text(&input, "12,5").unwrap();
        browser
            .click(
                &browser
                    .find("[data-testid=estimate-submit]")
                    .unwrap()
                    .unwrap(),
            )
            .unwrap();
        browser
            .wait_for("[data-testid=estimate-form][data-state=failed]", PAGE_WAIT)
            .unwrap();
        text_of(browser, "estimate-error")
    });
    assert!(
        reason.contains("data_transfer") && reason.contains("decimal"),
        "{reason}"
    );
}

async fn other_tenant_sees_only_its_own(driver: &ChromeDriver, api: &Api, page: &str, key: &str) {
    let replies = replies(api, key).await;
    let browser = blocking(|| driver.new_session(1280, 1000)).unwrap();
    blocking(|| {
        browser.goto(&format!("{page}#key={key}")).unwrap();
        wait_for_state(&browser, "ready");
        assert_eq!(text_of(&browser, "tenant"), "globex");
        assert_eq!(
            text_of(&browser, "spend-so-far"),
            replies.forecast["cost"]["soFar"].as_str().unwrap()
        );
        // No budget: said so, and no progress bar.
        assert!(
            browser
                .is_displayed(&browser.find("[data-testid=no-budget]").unwrap().unwrap())
                .unwrap()
        );
        assert!(
            !browser
                .is_displayed(
                    &browser
                        .find("[data-testid=budget-progress]")
                        .unwrap()
                        .unwrap()
                )
                .unwrap()
        );
        // The key left the address bar at once.
        let url = browser.url().unwrap();
        assert!(!url.contains(key) && !url.contains('#'), "{url}");
        assert_eq!(csp_violations(&browser), "0");
    });
}

async fn wrong_key_is_refused_and_forgotten(driver: &ChromeDriver, page: &str, screenshots: &Path) {
    let browser = blocking(|| driver.new_session(1280, 800)).unwrap();
    blocking(|| {
        browser
            .goto(&format!("{page}#key=tg_not_a_real_key"))
            .unwrap();
        wait_for_state(&browser, "signed-out");
        let error = text_of(&browser, "error");
        assert!(error.starts_with("This key was not accepted"), "{error}");
        let stored = browser
            .execute("return sessionStorage.length;", &[])
            .unwrap();
        assert_eq!(stored, json!(0), "a refused key is not kept");
        let url = browser.url().unwrap();
        assert!(!url.contains("tg_not_a_real_key"), "{url}");
        assert!(
            !browser
                .is_displayed(&browser.find("#dashboard").unwrap().unwrap())
                .unwrap()
        );
        screenshot(&browser, screenshots, "wrong-key");
        assert_eq!(csp_violations(&browser), "0");
    });
}
