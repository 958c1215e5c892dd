//! The phases of the run: the limits in force in each, and the changes between them,
//! made through the admin API while the load runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use tollgate_devstack::fault_proxy::{Fault, FaultProxy, FaultRule, RequestMatch};

use super::generator::Tally;
use super::stack::{Api, budget, quota_plan, standard_plan};
use super::{
    ADMIN_KEY, ALPHA, BRAVO, CHARLIE, DELTA, ECHO, FAST_PER_SECOND, LEAD, OPEN_QUOTA, PHASE,
    PROPAGATION, QUOTA_HEADROOM, QUOTA_PLAN_PER_SECOND,
};

/// Charlie's day quota in a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaState {
    /// [`OPEN_QUOTA`]: only the rate limit binds.
    Open,
    /// 1, below what is used: nothing is admitted.
    Exhausted,
    /// Used so far + [`QUOTA_HEADROOM`]: admitted until reached, plus the overshoot bound.
    Headroom,
}

/// Faults on the gateway's SQS cluster during a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Faults {
    None,
    /// A 500, a reset connection and a lost answer, one after the other.
    Errors,
    /// SQS unreachable for [`OUTAGE`].
    Outage,
}

/// SQS outage length.
pub const OUTAGE: Duration = Duration::from_secs(4);

/// The limits in force during one phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `load-standard`'s per-second limit (alpha, bravo, and echo when on it).
    pub standard: u64,
    /// Echo is on `load-fast`.
    pub echo_fast: bool,
    pub quota: QuotaState,
    /// Delta's budget is below its spend (hard limit).
    pub delta_blocked: bool,
    pub faults: Faults,
}

/// Phase 0 is the warm-up; then the three kinds of change cycle (a soak runs them over
/// and over).
pub fn limits_of(phase: usize) -> Limits {
    if phase == 0 {
        return Limits {
            standard: 8,
            echo_fast: false,
            quota: QuotaState::Open,
            delta_blocked: false,
            faults: Faults::None,
        };
    }
    match (phase - 1) % 3 {
        0 => Limits {
            standard: 16,
            echo_fast: true,
            quota: QuotaState::Exhausted,
            delta_blocked: true,
            faults: Faults::Errors,
        },
        // No faults here: the quota overshoot bound assumes the flush works (D).
        1 => Limits {
            standard: 4,
            echo_fast: false,
            quota: QuotaState::Headroom,
            delta_blocked: false,
            faults: Faults::None,
        },
        _ => Limits {
            standard: 12,
            echo_fast: true,
            quota: QuotaState::Open,
            delta_blocked: true,
            faults: Faults::Outage,
        },
    }
}

/// One phase as it ran.
#[derive(Debug, Clone)]
pub struct Phase {
    pub index: usize,
    pub limits: Limits,
    /// When the new plan versions took effect (since the load started).
    pub starts: Duration,
    /// When the last change of the phase was made (the tenant move and budget `PUT`s
    /// answered).
    pub changed: Duration,
    pub ends: Duration,
    /// Charlie's day quota.
    pub quota: u64,
    pub changes: u32,
}

impl Phase {
    /// The part of the phase after every change has propagated.
    pub fn window(&self) -> (Duration, Duration) {
        let from = if self.index == 0 {
            Duration::from_secs(1)
        } else {
            self.changed + PROPAGATION
        };
        (from, self.ends.max(from))
    }

    /// The per-second limit `tenant` meets, if it has one.
    pub fn rate_of(&self, tenant: usize) -> Option<u64> {
        match tenant {
            ALPHA | BRAVO => Some(self.limits.standard),
            ECHO if self.limits.echo_fast => Some(FAST_PER_SECOND),
            ECHO => Some(self.limits.standard),
            CHARLIE => Some(QUOTA_PLAN_PER_SECOND),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The changes

/// What the limit changes need while the load runs.
pub struct Changer<'a> {
    pub api: &'a Api,
    /// In front of the SQS emulator, on the gateway's `sqs` cluster: flush failures.
    pub sqs_proxy: &'a FaultProxy,
    pub keys: &'a [String],
    pub tally: Arc<Tally>,
    pub start: Instant,
    pub wall_start: DateTime<Utc>,
    pub phases: usize,
    pub deadline: Duration,
}

impl Changer<'_> {
    /// Makes the changes of every phase at its start; returns the phases as they ran.
    pub async fn run(&self) -> Vec<Phase> {
        let mut phases = vec![Phase {
            index: 0,
            limits: limits_of(0),
            starts: Duration::ZERO,
            changed: Duration::ZERO,
            ends: self.deadline,
            quota: OPEN_QUOTA,
            changes: 0,
        }];
        for index in 1..self.phases {
            let starts = PHASE * u32::try_from(index).unwrap();
            let before = phases.last().unwrap().clone();
            let limits = limits_of(index);
            let mut changes = 0;
            tokio::time::sleep_until((self.start + starts - LEAD).into()).await;
            let effective = self.wall_start + TimeDelta::from_std(starts).unwrap();
            if limits.standard != before.limits.standard {
                let body = standard_plan(effective, limits.standard);
                self.api
                    .call("POST", ADMIN_KEY, "/v1/admin/plans", Some(&body))
                    .await;
                changes += 1;
            }
            let quota = match limits.quota {
                QuotaState::Open => OPEN_QUOTA,
                QuotaState::Exhausted => 1,
                QuotaState::Headroom => self.tally.allowed(CHARLIE) + QUOTA_HEADROOM,
            };
            if quota != before.quota {
                let body = quota_plan(effective, quota);
                self.api
                    .call("POST", ADMIN_KEY, "/v1/admin/plans", Some(&body))
                    .await;
                changes += 1;
            }
            tokio::time::sleep_until((self.start + starts).into()).await;
            if limits.echo_fast != before.limits.echo_fast {
                let plan = if limits.echo_fast {
                    "load-fast"
                } else {
                    "load-standard"
                };
                let body = json!({"displayName": "echo", "plan": plan, "status": "active"});
                self.api
                    .call("PUT", ADMIN_KEY, "/v1/admin/tenants/echo", Some(&body))
                    .await;
                changes += 1;
            }
            if limits.delta_blocked != before.limits.delta_blocked {
                let reply = self
                    .api
                    .call(
                        "PUT",
                        &self.keys[DELTA],
                        "/v1/budget",
                        Some(&budget(limits.delta_blocked)),
                    )
                    .await;
                let verdict = if limits.delta_blocked {
                    "block"
                } else {
                    "allow"
                };
                assert_eq!(reply["evaluation"]["verdict"], verdict, "{reply}");
                changes += 1;
            }
            let changed = self.start.elapsed();
            if let Some(last) = phases.last_mut() {
                last.ends = starts;
            }
            phases.push(Phase {
                index,
                limits,
                starts,
                changed,
                ends: self.deadline,
                quota,
                changes,
            });
            self.inject(limits.faults).await;
        }
        phases
    }

    /// Fails the gateway's next flushes: a 500, a reset connection and an answer lost
    /// after SQS took the batch (the filter resends it; ingest dedupes); or takes SQS
    /// away for [`OUTAGE`].
    ///
    /// Faults the last phase left unused are dropped first. Otherwise they pile up: the
    /// filter backs off (up to 60 s) after each failure, so faults cued every other phase
    /// can arrive faster than its retries use them, and then every flush of the run fails.
    /// (A soak run did just that: metering stalled after the first 30 s.)
    async fn inject(&self, faults: Faults) {
        self.sqs_proxy.clear();
        let send_batch = |fault| FaultRule {
            matching: RequestMatch::SqsAction("SendMessageBatch"),
            skip: 0,
            count: 1,
            fault,
        };
        match faults {
            Faults::None => {}
            Faults::Errors => {
                self.sqs_proxy.inject(send_batch(Fault::Status(500)));
                self.sqs_proxy.inject(send_batch(Fault::ResetConnection));
                self.sqs_proxy.inject(send_batch(Fault::LoseResponse));
            }
            Faults::Outage => {
                self.sqs_proxy.set_down(true);
                tokio::time::sleep(OUTAGE).await;
                self.sqs_proxy.set_down(false);
            }
        }
    }
}
