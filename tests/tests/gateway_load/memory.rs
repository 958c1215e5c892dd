//! The gateway's memory, sampled once a second while the load runs: each VM's wasm linear
//! memory, the process's resident set (the gateway runs inside the test process, so this
//! is the test's RSS too, load generator included), the shared data the filter keeps and
//! the shared-queue backlog between workers and the singleton.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_gateway::RunningGateway;

/// One sample.
#[derive(Debug, Clone)]
pub struct MemorySample {
    pub at: Duration,
    /// Per VM, the singleton first.
    pub wasm_bytes: Vec<u64>,
    pub rss_bytes: u64,
    pub shared_entries: usize,
    pub shared_bytes: usize,
    pub largest_shared_value: usize,
    pub queued_items: usize,
    pub queued_bytes: usize,
    /// VMs that trapped so far.
    pub failed_vms: usize,
}

impl MemorySample {
    pub fn wasm_total(&self) -> u64 {
        self.wasm_bytes.iter().sum()
    }
}

/// `VmRSS` of `/proc/self/status`, in bytes (0 where there is no procfs).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map_or(0, |kib| kib * 1024)
}

pub fn sample(gateway: &RunningGateway, start: Instant) -> MemorySample {
    let vms = gateway.vm_stats();
    let shared = gateway.env().shared_data_stats();
    let (queued_items, queued_bytes) = gateway.env().queued();
    MemorySample {
        at: start.elapsed(),
        wasm_bytes: vms.iter().map(|vm| vm.memory_bytes).collect(),
        rss_bytes: rss_bytes(),
        shared_entries: shared.entries,
        shared_bytes: shared.bytes,
        largest_shared_value: shared.largest_value_bytes,
        queued_items,
        queued_bytes,
        failed_vms: vms.iter().filter(|vm| vm.failed).count(),
    }
}

/// Samples every second until `until`.
pub async fn sample_until(
    gateway: &RunningGateway,
    start: Instant,
    until: Instant,
) -> Vec<MemorySample> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        samples.push(sample(gateway, start));
        if Instant::now() >= until {
            return samples;
        }
    }
}

/// The largest value of `f` over the samples of `range` (thirds of the run).
pub fn max_over(
    samples: &[MemorySample],
    range: std::ops::Range<usize>,
    f: impl Fn(&MemorySample) -> u64,
) -> u64 {
    samples
        .get(range)
        .unwrap_or_default()
        .iter()
        .map(f)
        .max()
        .unwrap_or(0)
}

/// `{"first": …, "max": …, "last": …}` of `f` over the samples.
pub fn first_max_last(samples: &[MemorySample], f: impl Fn(&MemorySample) -> u64) -> Value {
    json!({
        "first": samples.first().map(&f),
        "max": samples.iter().map(&f).max(),
        "last": samples.last().map(&f),
    })
}

/// The samples as a table, one line each.
pub fn print(samples: &[MemorySample]) {
    println!(
        "  {:>6}  {:>44}  {:>10}  {:>6} {:>8} {:>7}  {:>6} {:>8}",
        "t (s)",
        "wasm linear memory per VM (KiB)",
        "RSS (MiB)",
        "shared",
        "bytes",
        "largest",
        "queued",
        "bytes"
    );
    for s in samples {
        let per_vm: Vec<String> = s
            .wasm_bytes
            .iter()
            .map(|b| (b / 1024).to_string())
            .collect();
        println!(
            "  {:>6.1}  {:>44}  {:>10.1}  {:>6} {:>8} {:>7}  {:>6} {:>8}",
            s.at.as_secs_f64(),
            per_vm.join(" "),
            s.rss_bytes as f64 / (1024.0 * 1024.0),
            s.shared_entries,
            s.shared_bytes,
            s.largest_shared_value,
            s.queued_items,
            s.queued_bytes,
        );
    }
}
