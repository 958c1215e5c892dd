//! What must hold of the answers in each phase, of the quota with headroom, and of the
//! memory samples.

use std::fmt::Write as _;
use std::time::Duration;

use super::generator::{Outcome, Sample};
use super::memory::{self, MemorySample};
use super::phases::{Phase, QuotaState};
use super::{
    ALPHA, BRAVO, CHARLIE, DELTA, ECHO, EDGE_SLACK_SECONDS, PROPAGATION, QUOTA_PLAN_PER_SECOND,
    RSS_GROWTH_SLACK, RSS_PER_REQUEST, SHARED_BYTES_SLACK, SINGLETON_TICK_SECONDS,
    SNAPSHOT_DATA_DELAY_SECONDS, SNAPSHOT_INTERVAL_SECONDS, TENANTS, WASM_GROWTH_SLACK,
};

/// Which samples a check counts as answered under the new limits.
type SampleFilter = Box<dyn Fn(&Sample) -> bool>;

// ---------------------------------------------------------------------------------------
// Checks

/// What one tenant saw in one phase's window.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub sent: u64,
    pub allowed: u64,
    pub rate_limited: u64,
    pub quota_exceeded: u64,
    pub blocked: u64,
    pub errors: u64,
}

impl Counts {
    pub fn of<'a>(samples: impl Iterator<Item = &'a Sample>) -> Counts {
        let mut counts = Counts::default();
        for sample in samples {
            counts.sent += 1;
            match sample.outcome {
                Outcome::Allowed => counts.allowed += 1,
                Outcome::RateLimited => counts.rate_limited += 1,
                Outcome::QuotaExceeded => counts.quota_exceeded += 1,
                Outcome::Blocked => counts.blocked += 1,
                Outcome::Error(_) => counts.errors += 1,
            }
        }
        counts
    }
}

/// Checks one phase for one tenant; problems are appended to `problems`, findings to
/// `line`. Returns the propagation delay measured, when the tenant's limit changed.
pub fn check_phase(
    phase: &Phase,
    previous: Option<&Phase>,
    tenant: usize,
    samples: &[Sample],
    problems: &mut Vec<String>,
    line: &mut String,
) -> Option<Duration> {
    let id = TENANTS[tenant].id;
    let (from, to) = phase.window();
    let w = (to - from).as_secs_f64();
    let in_window: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.tenant == tenant && s.sent >= from && s.sent < to)
        .collect();
    let counts = Counts::of(in_window.iter().copied());
    let mut problem = |text: String| problems.push(format!("phase {} {id}: {text}", phase.index));
    let _ = write!(
        line,
        " {id} {}/{}/{}/{}",
        counts.allowed, counts.rate_limited, counts.quota_exceeded, counts.blocked
    );

    // What must hold of every answer in the window, and how to recognise the new limit.
    let blocked = tenant == DELTA && phase.limits.delta_blocked;
    let exhausted = tenant == CHARLIE && phase.limits.quota == QuotaState::Exhausted;
    if blocked && counts.blocked != counts.sent {
        problem(format!("blocked, yet {counts:?}"));
    }
    if tenant == DELTA && !blocked && counts.allowed != counts.sent {
        problem(format!("not blocked, yet {counts:?}"));
    }
    if exhausted {
        let wrong: Vec<&&Sample> = in_window
            .iter()
            .filter(|s| s.outcome != Outcome::QuotaExceeded || s.policy != Some((1, 86_400)))
            .collect();
        if !wrong.is_empty() {
            problem(format!(
                "the day quota is 1 (used up), yet {} answers were not 429 quota_exceeded \
                 with q=1;w=86400: {:?}",
                wrong.len(),
                wrong.iter().take(3).collect::<Vec<_>>()
            ));
        }
    }
    if let Some(limit) = phase.rate_of(tenant).filter(|_| !exhausted) {
        // GCRA: in any window of w seconds at most b + ⌊w / T⌋ = L + L·w requests pass
        // (edge-filter/src/rate.rs), plus the slack of seeing the window from the client.
        let l = limit as f64;
        let most = (l * (w + EDGE_SLACK_SECONDS)).ceil() as u64 + limit;
        if counts.allowed > most {
            problem(format!(
                "{} allowed in {w:.1} s at {limit}/s: more than GCRA's {most}",
                counts.allowed
            ));
        }
        // The limit binds (more was offered than it allows): the allowed rate follows it
        // from below too. The floor is loose because the machine is shared under
        // `cargo xtask test`; a stalled gateway loses capacity beyond one period.
        let headroom_phase = tenant == CHARLIE && phase.limits.quota == QuotaState::Headroom;
        if !headroom_phase && counts.sent as f64 >= 1.5 * l * w {
            let least = (0.6 * l * w - l).max(0.0).floor() as u64;
            if counts.allowed < least {
                problem(format!(
                    "{} allowed in {w:.1} s at {limit}/s with {} offered: fewer than {least}",
                    counts.allowed, counts.sent
                ));
            }
        }
        // Every rate-limit answer names the per-second limit in force.
        let wrong: Vec<&&Sample> = in_window
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Allowed | Outcome::RateLimited))
            .filter(|s| !(headroom_phase && s.policy.is_some_and(|(_, w)| w == 86_400)))
            .filter(|s| s.policy != Some((limit, 1)))
            .collect();
        if !wrong.is_empty() {
            problem(format!(
                "{} answers do not name the limit {limit}/s: {:?}",
                wrong.len(),
                wrong.iter().take(3).collect::<Vec<_>>()
            ));
        }
    }

    // Propagation: from the change to the first answer under the new limit.
    let previous = previous?;
    let (changed_at, is_new): (Duration, SampleFilter) = match tenant {
        ALPHA | BRAVO if phase.limits.standard != previous.limits.standard => {
            let limit = phase.limits.standard;
            (
                phase.starts,
                Box::new(move |s: &Sample| s.policy == Some((limit, 1))),
            )
        }
        ECHO if phase.rate_of(ECHO) != previous.rate_of(ECHO) => {
            let limit = phase.rate_of(ECHO).unwrap_or(0);
            let at = if phase.limits.echo_fast == previous.limits.echo_fast {
                phase.starts
            } else {
                phase.changed
            };
            (at, Box::new(move |s: &Sample| s.policy == Some((limit, 1))))
        }
        CHARLIE if phase.limits.quota == QuotaState::Exhausted => (
            phase.starts,
            Box::new(|s: &Sample| s.policy == Some((1, 86_400))),
        ),
        CHARLIE if previous.limits.quota == QuotaState::Exhausted => (
            phase.starts,
            Box::new(|s: &Sample| s.outcome == Outcome::Allowed),
        ),
        DELTA if phase.limits.delta_blocked != previous.limits.delta_blocked => {
            let blocked = phase.limits.delta_blocked;
            (
                phase.changed,
                Box::new(move |s: &Sample| (s.outcome == Outcome::Blocked) == blocked),
            )
        }
        _ => return None,
    };
    let first = samples
        .iter()
        .filter(|s| s.tenant == tenant && s.sent >= changed_at && is_new(s))
        .map(|s| s.sent)
        .min();
    match first {
        Some(at) => {
            let delay = at - changed_at;
            let _ = write!(line, " ({:.1}s)", delay.as_secs_f64());
            if delay > PROPAGATION {
                problem(format!(
                    "the change took {:.2} s to show, more than {} s",
                    delay.as_secs_f64(),
                    PROPAGATION.as_secs()
                ));
            }
            Some(delay)
        }
        None => {
            problem("the change never showed".to_owned());
            None
        }
    }
}

/// The quota-with-headroom phases: charlie's usage reached the quota and stayed within
/// `edge-filter/src/quota.rs`'s bound `limit + N·(⌈(I + D)·R⌉ + 1)·u` with N = 1 gateway,
/// I = snapshot interval + the singleton's tick, D = [`SNAPSHOT_DATA_DELAY_SECONDS`],
/// R = the plan's per-second limit, u = 1. Returns the largest overshoot seen.
pub fn check_quota_headroom(
    phases: &[Phase],
    samples: &[Sample],
    problems: &mut Vec<String>,
) -> u64 {
    let i = SNAPSHOT_INTERVAL_SECONDS + SINGLETON_TICK_SECONDS;
    let bound = (i + SNAPSHOT_DATA_DELAY_SECONDS) * QUOTA_PLAN_PER_SECOND + 1;
    let mut largest = 0;
    for phase in phases
        .iter()
        .filter(|p| p.limits.quota == QuotaState::Headroom)
    {
        // Everything charlie used today was admitted by this run (the day did not change:
        // the test starts after midnight if it would cross it).
        let used = samples
            .iter()
            .filter(|s| s.tenant == CHARLIE && s.sent < phase.ends && s.outcome == Outcome::Allowed)
            .count() as u64;
        let refused = samples.iter().any(|s| {
            s.tenant == CHARLIE
                && s.sent >= phase.starts
                && s.sent < phase.ends
                && s.outcome == Outcome::QuotaExceeded
        });
        let overshoot = used.saturating_sub(phase.quota);
        largest = largest.max(overshoot);
        println!(
            "  phase {}: charlie's day quota {}: used {used} by the phase's end (overshoot \
             {overshoot}, bound {bound}), quota refusals: {refused}",
            phase.index, phase.quota
        );
        if used < phase.quota || !refused {
            problems.push(format!(
                "phase {}: charlie's quota {} was not reached (used {used}, refusals {refused})",
                phase.index, phase.quota
            ));
        }
        if overshoot > bound {
            problems.push(format!(
                "phase {}: charlie used {used} against a quota of {}: overshoot {overshoot} > \
                 the bound {bound}",
                phase.index, phase.quota
            ));
        }
    }
    largest
}

/// Memory: each VM's linear memory in the last third of the run at most its first
/// third's maximum + [`WASM_GROWTH_SLACK`]; the process's RSS likewise, within what the
/// test's own records take plus a slack; shared data at most one entry per tenant plus
/// the snapshot and its generation, and not growing; no trap.
pub fn check_memory(samples: &[MemorySample], requests: &[Sample], problems: &mut Vec<String>) {
    let n = samples.len();
    assert!(n >= 6, "only {n} memory samples");
    let first = 0..n / 3;
    let last = n - n / 3..n;
    // The process's RSS holds the test's own record of every request too (≈ 100 bytes
    // each): it may grow by that (counted as RSS_PER_REQUEST) plus RSS_GROWTH_SLACK.
    let first_third_ends = samples[n / 3].at;
    let later_requests = requests
        .iter()
        .filter(|r| r.sent >= first_third_ends)
        .count() as u64;
    let early = memory::max_over(samples, first.clone(), |s| s.rss_bytes);
    let late = memory::max_over(samples, last.clone(), |s| s.rss_bytes);
    let allowed = RSS_GROWTH_SLACK + RSS_PER_REQUEST * later_requests;
    if late > early + allowed {
        problems.push(format!(
            "the process's RSS grew from {early} to {late} bytes after the first third, more \
             than {allowed} ({later_requests} requests since)"
        ));
    }
    let vms = samples[0].wasm_bytes.len();
    for vm in 0..vms {
        let early = memory::max_over(samples, first.clone(), |s| s.wasm_bytes[vm]);
        let late = memory::max_over(samples, last.clone(), |s| s.wasm_bytes[vm]);
        if late > early + WASM_GROWTH_SLACK {
            problems.push(format!(
                "VM {vm}'s linear memory grew from {early} to {late} bytes after the first third"
            ));
        }
    }
    let entries_bound = TENANTS.len() + 2;
    if let Some(s) = samples.iter().find(|s| s.shared_entries > entries_bound) {
        problems.push(format!(
            "{} shared-data entries at {:.0} s: more than one per tenant + 2",
            s.shared_entries,
            s.at.as_secs_f64()
        ));
    }
    let early = memory::max_over(samples, first, |s| s.shared_bytes as u64);
    let late = memory::max_over(samples, last, |s| s.shared_bytes as u64);
    if late > early + SHARED_BYTES_SLACK {
        problems.push(format!(
            "shared data grew from {early} to {late} bytes after the first third"
        ));
    }
    if let Some(s) = samples.iter().find(|s| s.failed_vms > 0) {
        problems.push(format!(
            "{} VMs trapped by {:.0} s",
            s.failed_vms,
            s.at.as_secs_f64()
        ));
    }
}
