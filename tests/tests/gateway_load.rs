//! The local gateway under load for a while, with limits changing mid-run and its SQS
//! flushes failing: the real edge filter (`tollgate_edge_filter.wasm`, one singleton and
//! four worker VMs, as `cargo xtask demo` runs it) in front of a loopback upstream, its
//! snapshot from the real `usage-api` binary and its usage flushed to the stack's SQS
//! emulator through a fault proxy, ingested by the real `ingest` binary.
//!
//! A bounded load generator (keep-alive clients per tenant, each request bounded in time,
//! the run bounded in count and duration) pushes five tenants while the limits change
//! through the admin API every [`PHASE`]: new versions of a plan (its rate limit, its
//! day quota: used up, then a little headroom, then lifted), a tenant moved to another
//! plan, a budget hard limit set below the spend and raised again. After each change and
//! the filter's propagation delay ([`PROPAGATION`]) the answers must follow the new
//! limit: the rate-limit headers name it, the allowed rate stays within GCRA's bound, a
//! used-up quota admits nothing, a quota with headroom admits at most the documented
//! overshoot, a block answers 402 and nothing else.
//!
//! Throughout: no request error (every answer a 200 from the upstream, a 429 or a 402 with
//! the documented headers; no 5xx, no connection error, no timeout), no VM trap, the
//! filter's memory flat after warm-up and its shared data bounded by the tenants. After
//! the run the usage API must report, per tenant, exactly the 200s the clients saw.
//!
//! Default ≈ 28 s of load (inside `cargo xtask test`); under `cargo xtask soak`
//! (`TOLLGATE_SOAK=1`) 4 minutes; `TOLLGATE_LOAD_SECONDS` overrides both. One
//! `tollgate-report:` line sums it up.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

#[path = "gateway_load/checks.rs"]
mod checks;
mod common;
#[path = "gateway_load/generator.rs"]
mod generator;
#[path = "gateway_load/memory.rs"]
mod memory;
#[path = "gateway_load/phases.rs"]
mod phases;
#[path = "gateway_load/stack.rs"]
mod stack;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;
use tollgate_devstack::report;
use tollgate_local::{LocalStack, StackConfig, build_functions};
use tollgate_wasm_host::LogLevel;

use checks::{Counts, check_memory, check_phase, check_quota_headroom};
use generator::{Outcome, Tally, TenantLoad};
use memory::MemorySample;
use phases::Changer;
use stack::{
    Api, bootstrap, queue_depth, start_gateway, stay_within_one_day, upstream, wait_for_metered,
    wait_for_snapshot,
};

/// How long each set of limits holds before the next change.
const PHASE: Duration = Duration::from_secs(7);
/// Phases of the default run: the initial limits, then three changes.
const DEFAULT_PHASES: u64 = 4;
/// The soak's length.
const SOAK_SECONDS: u64 = 240;
/// Overrides the length of the load, in seconds (`cargo xtask soak --load-seconds`).
const LOAD_SECONDS_ENV: &str = "TOLLGATE_LOAD_SECONDS";
/// Plan versions are posted this long before they take effect (a new version must take
/// effect in the future).
const LEAD: Duration = Duration::from_millis(1_500);

/// The filter's snapshot interval (`snapshot.intervalSeconds`) and flush interval.
const SNAPSHOT_INTERVAL_SECONDS: u64 = 1;
const FLUSH_INTERVAL_SECONDS: u64 = 1;
/// The singleton fetches the snapshot on its tick (1 s, `edge-filter/src/proxy/service.rs`).
const SINGLETON_TICK_SECONDS: u64 = 1;
/// How long a change takes to reach the edge: `docs/billing.md` says "the snapshot
/// interval of the filter"; the singleton checks it on its 1 s tick, and the snapshot the
/// usage API builds (≈ 0.1–0.5 s here) is published to the workers, who read it on their
/// next request. So interval + tick + 1 s for the build: 3 s.
const PROPAGATION: Duration =
    Duration::from_secs(SNAPSHOT_INTERVAL_SECONDS + SINGLETON_TICK_SECONDS + 1);
/// The delay `D` of `edge-filter/src/quota.rs` before an admitted request shows in the
/// snapshot: flush interval (1 s) + SQS + the event source mapping's batching window
/// (1 s) + ingest + the snapshot build, stated generously for a loaded 2-core machine.
const SNAPSHOT_DATA_DELAY_SECONDS: u64 = 8;
/// The client sees a window's edges up to this late or early compared with the filter's
/// clock (queueing in the gateway and the client), so rate bounds get this much slack.
const EDGE_SLACK_SECONDS: f64 = 0.3;
/// A quota with headroom is set to what the tenant has used plus this.
const QUOTA_HEADROOM: u64 = 30;
/// "Open" quota: more than the run can use.
const OPEN_QUOTA: u64 = 1_000_000;
/// Wasm linear memory a VM may gain after the first third of the run (4 pages of 64 KiB).
const WASM_GROWTH_SLACK: u64 = 4 * 64 * 1024;
/// The process's RSS may grow by this after the first third, plus [`RSS_PER_REQUEST`]
/// for every request sent since (the load generator keeps a record of each, ≈ 100 bytes,
/// in vectors that double). A leak in the gateway of a few hundred bytes per request
/// would show.
const RSS_GROWTH_SLACK: u64 = 8 * 1024 * 1024;
const RSS_PER_REQUEST: u64 = 256;
/// Shared data may grow by this after the first third (the snapshot's usage figures get
/// longer as they grow).
const SHARED_BYTES_SLACK: u64 = 1024;
/// How long the usage may take to be flushed, ingested and served after the load stops
/// (the flush backs off up to 60 s after failures).
const DRAIN_DEADLINE: Duration = Duration::from_secs(180);

const ADMIN_KEY: &str = "tg_admin_gateway_load_test_key";
/// Edge meters, as in the demo's catalog.
const EDGE_REQUESTS: &str = "edge_requests";
const WORKERS: usize = 4;

/// The tenants, by index into [`TENANTS`].
const ALPHA: usize = 0;
const BRAVO: usize = 1;
const CHARLIE: usize = 2;
const DELTA: usize = 3;
const ECHO: usize = 4;

struct TenantSpec {
    id: &'static str,
    plan: &'static str,
    /// Offered load, requests per second, above every limit the tenant meets.
    per_second: f64,
    clients: usize,
}

const TENANTS: [TenantSpec; 5] = [
    TenantSpec {
        id: "alpha",
        plan: "load-standard",
        per_second: 30.0,
        clients: 2,
    },
    TenantSpec {
        id: "bravo",
        plan: "load-standard",
        per_second: 30.0,
        clients: 2,
    },
    TenantSpec {
        id: "charlie",
        plan: "load-quota",
        per_second: 22.0,
        clients: 2,
    },
    TenantSpec {
        id: "delta",
        plan: "load-billed",
        per_second: 8.0,
        clients: 1,
    },
    TenantSpec {
        id: "echo",
        plan: "load-standard",
        per_second: 30.0,
        clients: 2,
    },
];

/// The fixed limits: `load-fast`'s rate and `load-quota`'s rate.
const FAST_PER_SECOND: u64 = 20;
const QUOTA_PLAN_PER_SECOND: u64 = 15;

fn load_seconds() -> u64 {
    std::env::var(LOAD_SECONDS_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(if report::soak() {
            SOAK_SECONDS
        } else {
            PHASE.as_secs() * DEFAULT_PHASES
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_under_load_follows_changing_limits_with_flat_memory_and_exact_counts() {
    let seconds = load_seconds();
    let phases = usize::try_from((seconds / PHASE.as_secs()).max(2)).unwrap();
    let seconds = PHASE.as_secs() * phases as u64;
    stay_within_one_day(seconds).await;

    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let binaries = build_functions(&workspace).unwrap();
    let meters = std::env::temp_dir().join(format!(
        "tollgate-gateway-load-meters-{}.json",
        std::process::id()
    ));
    std::fs::write(
        &meters,
        json!([
            {"name": EDGE_REQUESTS, "eventTypes": ["edge.request"], "aggregation": {"kind": "count"},
             "unit": "requests", "groupBy": ["route", "status"]},
            {"name": "edge_response_bytes", "eventTypes": ["edge.request"], "valueField": "response_bytes",
             "aggregation": {"kind": "sum"}, "unit": "bytes", "groupBy": ["route", "status"]},
            {"name": "edge_latency_ms", "eventTypes": ["edge.request"], "valueField": "latency_ms",
             "aggregation": {"kind": "percentiles"}, "unit": "ms", "groupBy": ["route", "status"]}
        ])
        .to_string(),
    )
    .unwrap();
    let mut config = StackConfig::new(binaries, &meters);
    config.table = format!("gateway-load-{}", std::process::id());
    config.function_log = Some(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()));
    let stack = LocalStack::start(&config).await.unwrap();
    let api = Api::new(&stack.usage_api_url());
    let keys = bootstrap(&stack, &api).await;

    let (upstream, upstream_task) = upstream().await;
    // The gateway flushes through a fault proxy: the phases fail some flushes.
    let sqs_proxy = tollgate_devstack::fault_proxy::FaultProxy::start(&stack.sqs_endpoint)
        .await
        .unwrap();
    let gateway = start_gateway(&stack, upstream, &sqs_proxy.endpoint());
    wait_for_snapshot(&gateway).await;

    // The load, the changes and the memory samples, all at once.
    let loads: Vec<TenantLoad> = TENANTS
        .iter()
        .zip(&keys)
        .map(|(spec, key)| TenantLoad {
            key: key.clone(),
            per_second: spec.per_second,
            clients: spec.clients,
        })
        .collect();
    let offered: f64 = TENANTS.iter().map(|t| t.per_second).sum();
    // Bounded in count as well as time: at most 20 % over what the rates offer.
    let max_requests = (offered * seconds as f64 * 1.2).ceil() as u64;
    let tally = Tally::new(TENANTS.len());
    let start = Instant::now();
    let wall_start = Utc::now();
    let deadline = Duration::from_secs(seconds);
    println!(
        "load: {} clients, {offered} requests/s offered over {} tenants, {seconds} s in {phases} \
         phases of {} s, at most {max_requests} requests",
        TENANTS.iter().map(|t| t.clients).sum::<usize>(),
        TENANTS.len(),
        PHASE.as_secs()
    );
    let changer = Changer {
        api: &api,
        sqs_proxy: &sqs_proxy,
        keys: &keys,
        tally: Arc::clone(&tally),
        start,
        wall_start,
        phases,
        deadline,
    };
    let (samples, phases, memory) = tokio::join!(
        generator::run(
            gateway.addr(),
            &loads,
            start,
            start + deadline,
            max_requests,
            Arc::clone(&tally)
        ),
        changer.run(),
        memory::sample_until(&gateway, start, start + deadline),
    );
    let load_time = start.elapsed();
    // SQS is well again for the drain: no fault is left waiting for a flush.
    sqs_proxy.clear();

    // Per phase and tenant: allowed/rate-limited/quota-exceeded/blocked in the window
    // after the change propagated, and the propagation delay.
    let mut problems = Vec::new();
    let mut delays = Vec::new();
    println!("phases (allowed/429 rate/429 quota/402 in the window after propagation):");
    for (k, phase) in phases.iter().enumerate() {
        let (from, to) = phase.window();
        let mut line = format!(
            "  {k:>2} {:>5.1}-{:>5.1}s {:?}, quota {}: window {:.1}-{:.1}s:",
            phase.starts.as_secs_f64(),
            phase.ends.as_secs_f64(),
            phase.limits,
            phase.quota,
            from.as_secs_f64(),
            to.as_secs_f64()
        );
        for tenant in 0..TENANTS.len() {
            let previous = k.checked_sub(1).map(|p| &phases[p]);
            delays.extend(check_phase(
                phase,
                previous,
                tenant,
                &samples,
                &mut problems,
                &mut line,
            ));
        }
        println!("{line}");
    }
    let overshoot = check_quota_headroom(&phases, &samples, &mut problems);

    // Every request: no errors, and each ended in exactly one outcome.
    let mut per_tenant = Vec::new();
    for (tenant, spec) in TENANTS.iter().enumerate() {
        let counts = Counts::of(samples.iter().filter(|s| s.tenant == tenant));
        println!("  {:<8} {counts:?}", spec.id);
        assert_eq!(
            counts.sent,
            counts.allowed
                + counts.rate_limited
                + counts.quota_exceeded
                + counts.blocked
                + counts.errors
        );
        per_tenant.push(counts);
    }
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for sample in &samples {
        if let Outcome::Error(text) = &sample.outcome {
            *errors.entry(text.clone()).or_default() += 1;
        }
    }
    let client_errors: u64 = errors.values().sum();
    if client_errors > 0 {
        problems.push(format!("{client_errors} request errors: {errors:?}"));
    }
    let slowest = samples
        .iter()
        .map(|s| s.answered - s.sent)
        .max()
        .unwrap_or_default();

    // Memory.
    memory::print(&memory);
    check_memory(&memory, &samples, &mut problems);
    let traps = gateway.vm_stats().iter().filter(|vm| vm.failed).count()
        + gateway
            .env()
            .logs()
            .iter()
            .filter(|r| r.level == LogLevel::Critical && r.message.contains("trap in"))
            .count();
    if traps > 0 {
        problems.push(format!("{traps} traps"));
    }

    // Counts: the usage API's metered requests per tenant = the 200s the clients saw.
    let allowed: Vec<u64> = per_tenant.iter().map(|c| c.allowed).collect();
    let metered = wait_for_metered(&stack, &api, &keys, &allowed).await;
    let difference: u64 = metered
        .iter()
        .zip(&allowed)
        .map(|(m, a)| m.abs_diff(*a))
        .sum();
    if difference > 0 {
        problems.push(format!("metered {metered:?} but allowed {allowed:?}"));
    }
    let dlq = queue_depth(&stack, &stack.dlq_url).await;
    if dlq > 0 {
        problems.push(format!("{dlq} messages in the DLQ"));
    }
    let metrics = gateway.env().metrics();
    println!("gateway metrics: {metrics:?}");
    let metric = |name: &str| metrics.get(name).copied().unwrap_or(0);
    if metric("tollgate.rows_dropped") > 0 {
        problems.push(format!("{} rows dropped", metric("tollgate.rows_dropped")));
    }
    if u64::try_from(metric("tollgate.requests_allowed")).unwrap() != allowed.iter().sum::<u64>() {
        problems.push(format!(
            "the filter counted {} allowed, the clients {}",
            metric("tollgate.requests_allowed"),
            allowed.iter().sum::<u64>()
        ));
    }
    let mapping = stack.mapping_metrics();
    let duplicates = mapping
        .deleted
        .saturating_sub(u64::try_from(metric("tollgate.batches_flushed")).unwrap());

    let total = |f: fn(&Counts) -> u64| per_tenant.iter().map(f).sum::<u64>();
    let limit_changes: u32 = phases.iter().map(|p| p.changes).sum();
    let max_delay = delays.iter().max().copied().unwrap_or_default();
    let proxy_stats = sqs_proxy.stats();
    let flush_faults = proxy_stats.faults() + proxy_stats.refused_connections;
    println!("the gateway's SQS proxy: {proxy_stats:?}");
    report::report(&json!({
        "kind": "load",
        "seconds": load_time.as_secs(),
        "requests": samples.len(),
        "allowed": total(|c| c.allowed),
        "limited": total(|c| c.rate_limited + c.quota_exceeded),
        "blocked": total(|c| c.blocked),
        "client_errors": client_errors,
        "traps": traps,
        "limit_changes": limit_changes,
        "flush_faults": flush_faults,
        "flush_failures": metric("tollgate.flush_failures"),
        "duplicates_delivered": duplicates,
        "propagation_ms_max": max_delay.as_millis(),
        "quota_overshoot_max": overshoot,
        "slowest_answer_ms": slowest.as_millis(),
        "wasm_memory_bytes": memory::first_max_last(&memory, MemorySample::wasm_total),
        "rss_bytes": memory::first_max_last(&memory, |s| s.rss_bytes),
        "shared_data_entries_max": memory.iter().map(|s| s.shared_entries).max(),
        "metered": metered.iter().sum::<u64>(),
        "difference_from_ground_truth": difference,
    }));

    gateway.shutdown();
    upstream_task.abort();
    stack.stop().await;
    let _ = std::fs::remove_file(meters);
    assert!(
        problems.is_empty(),
        "problems:\n  {}",
        problems.join("\n  ")
    );
}
