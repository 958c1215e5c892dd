//! One VM on its own OS thread: jobs in through a channel, answers out through oneshots.
//!
//! The thread owns its [`Vm`] (`Send`, not `Sync`) and loops: take a job (request
//! headers and body, response headers and body, a cancelled stream, the result of an HTTP
//! call the plugin dispatched), poll the VM for ticks and shared-queue deliveries (at
//! least every [`POLL_INTERVAL`]), and send the plugin's new HTTP calls to their clusters
//! on the gateway's tokio runtime, whose results come back into this thread's channel.
//!
//! Streams are detached between the request and the response ([`Stream::detach`],
//! [`Vm::stream`]), so a VM serves other requests while one is upstream.
//!
//! [`Stream::detach`]: tollgate_wasm_host::Stream::detach

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, SystemTime};

use hyper::body::Bytes;
use tokio::sync::oneshot;
use tollgate_wasm_host::{FilterAction, HostError, HttpCallResult, LocalReply, Vm};

use crate::cluster::{Cluster, ClusterClient};

/// The longest a VM thread sleeps between polls: ticks and queue deliveries are at most
/// this late.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(20);

pub(crate) type Headers = Vec<(String, String)>;

/// What a VM thread is asked to do.
pub(crate) enum Job {
    /// A new stream: run the request headers (and body, if any) through the filter.
    Request {
        headers: Headers,
        body: Bytes,
        reply: oneshot::Sender<RequestOutcome>,
    },
    /// The upstream's (or the gateway's own error) response for an open stream; the
    /// stream is finished afterwards in every case.
    Response {
        stream: u32,
        headers: Headers,
        body: Bytes,
        reply: oneshot::Sender<ResponseOutcome>,
    },
    /// The client went away: finish the stream.
    Cancel { stream: u32 },
    /// A dispatched HTTP call ended.
    CallResult { token: u32, result: HttpCallResult },
    /// Leave the loop; the VM is dropped.
    Stop,
}

/// What the filter decided about a request.
#[derive(Debug)]
pub(crate) enum RequestOutcome {
    /// The plugin replied itself; the stream is finished.
    Reply(LocalReply),
    /// Forward the request as the plugin left it; the stream stays open for the response.
    Forward {
        stream: u32,
        headers: Headers,
        body: Vec<u8>,
    },
    /// The VM is failed (trapped now or earlier).
    Failed,
}

/// The response as the filter left it.
#[derive(Debug)]
pub(crate) enum ResponseOutcome {
    Response { headers: Headers, body: Vec<u8> },
    Failed,
}

/// What one VM looks like from outside its thread, for [`RunningGateway::vm_stats`]:
/// refreshed by the thread after every job and poll (so at least every
/// [`POLL_INTERVAL`]).
///
/// [`RunningGateway::vm_stats`]: crate::RunningGateway::vm_stats
#[derive(Debug)]
pub(crate) struct VmStatsCell {
    pub label: String,
    memory_bytes: AtomicU64,
    failed: AtomicBool,
}

impl VmStatsCell {
    pub(crate) fn of(vm: &Vm) -> Arc<VmStatsCell> {
        let cell = Arc::new(VmStatsCell {
            label: vm.label().to_owned(),
            memory_bytes: AtomicU64::new(0),
            failed: AtomicBool::new(false),
        });
        cell.update(vm);
        cell
    }

    fn update(&self, vm: &Vm) {
        let bytes = u64::try_from(vm.memory_bytes()).unwrap_or(u64::MAX);
        self.memory_bytes.store(bytes, Ordering::Relaxed);
        self.failed.store(vm.is_failed(), Ordering::Relaxed);
    }

    pub(crate) fn memory_bytes(&self) -> u64 {
        self.memory_bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }
}

/// What every VM thread shares: where the plugin's calls go.
#[derive(Debug, Clone)]
pub(crate) struct CallContext {
    pub clusters: Arc<HashMap<String, Cluster>>,
    pub client: ClusterClient,
    pub runtime: tokio::runtime::Handle,
}

struct VmThread {
    vm: Vm,
    label: String,
    own: Sender<Job>,
    calls: CallContext,
    /// Requests the plugin paused (waiting for its own HTTP call), by context id.
    paused: HashMap<u32, oneshot::Sender<RequestOutcome>>,
    failure_reported: bool,
}

/// Runs `vm` until [`Job::Stop`] (or every sender is gone), keeping `stats` current.
pub(crate) fn run(
    vm: Vm,
    jobs: Receiver<Job>,
    own: Sender<Job>,
    calls: CallContext,
    stats: Arc<VmStatsCell>,
) {
    let mut thread = VmThread {
        label: vm.label().to_owned(),
        vm,
        own,
        calls,
        paused: HashMap::new(),
        failure_reported: false,
    };
    tracing::debug!(vm = thread.vm.label(), "VM thread started");
    loop {
        let wait = thread.wait();
        match jobs.recv_timeout(wait) {
            Ok(Job::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            Ok(job) => thread.handle(job),
            Err(RecvTimeoutError::Timeout) => {}
        }
        thread.poll();
        thread.dispatch_calls();
        thread.sweep_paused();
        stats.update(&thread.vm);
    }
    for (_, reply) in thread.paused.drain() {
        let _ = reply.send(RequestOutcome::Failed);
    }
    tracing::debug!(vm = thread.vm.label(), "VM thread stopped");
}

impl VmThread {
    fn wait(&self) -> Duration {
        let until_tick = self
            .vm
            .next_tick_at()
            .and_then(|at| at.duration_since(SystemTime::now()).ok())
            .unwrap_or(POLL_INTERVAL);
        until_tick.clamp(Duration::from_millis(1), POLL_INTERVAL)
    }

    fn report(&mut self, error: &HostError) {
        report(&self.label, &mut self.failure_reported, error);
    }

    fn poll(&mut self) {
        if self.vm.is_failed() {
            return;
        }
        if let Err(error) = self.vm.poll() {
            self.report(&error);
        }
    }

    fn handle(&mut self, job: Job) {
        match job {
            Job::Request {
                headers,
                body,
                reply,
            } => self.on_request(headers, &body, reply),
            Job::Response {
                stream,
                headers,
                body,
                reply,
            } => {
                let outcome = self.on_response(stream, headers, &body);
                let _ = reply.send(outcome);
            }
            Job::Cancel { stream } => {
                self.paused.remove(&stream);
                self.finish(stream);
            }
            Job::CallResult { token, result } => {
                if !self.vm.is_failed()
                    && let Err(error) = self.vm.deliver_http_response(token, result)
                {
                    self.report(&error);
                }
                self.resume_paused();
            }
            Job::Stop => {}
        }
    }

    fn finish(&mut self, stream: u32) {
        if let Some(Err(error)) = self.vm.stream(stream).map(|stream| stream.finish()) {
            self.report(&error);
        }
    }

    fn on_request(
        &mut self,
        headers: Headers,
        body: &[u8],
        reply: oneshot::Sender<RequestOutcome>,
    ) {
        let mut stream = match self.vm.new_stream() {
            Ok(stream) => stream,
            Err(error) => {
                report(&self.label, &mut self.failure_reported, &error);
                let _ = reply.send(RequestOutcome::Failed);
                return;
            }
        };
        let mut result = stream.on_request_headers(headers, body.is_empty());
        if matches!(result, Ok(FilterAction::Continue))
            && stream.local_reply().is_none()
            && !body.is_empty()
        {
            result = stream.on_request_body(body, true);
        }
        match result {
            Err(error) => {
                drop(stream);
                self.report(&error);
                let _ = reply.send(RequestOutcome::Failed);
            }
            Ok(action) => {
                if let Some(local) = stream.local_reply().cloned() {
                    if let Err(error) = stream.finish() {
                        self.report(&error);
                    }
                    let _ = reply.send(RequestOutcome::Reply(local));
                } else if action == FilterAction::Pause && !stream.is_request_resumed() {
                    let id = stream.detach();
                    self.paused.insert(id, reply);
                } else {
                    let headers = stream.request_headers().to_vec();
                    let body = if body.is_empty() {
                        Vec::new()
                    } else {
                        stream.request_body().to_vec()
                    };
                    let id = stream.detach();
                    let forward = RequestOutcome::Forward {
                        stream: id,
                        headers,
                        body,
                    };
                    if reply.send(forward).is_err() {
                        self.finish(id);
                    }
                }
            }
        }
    }

    fn on_response(&mut self, id: u32, headers: Headers, body: &[u8]) -> ResponseOutcome {
        let Some(mut stream) = self.vm.stream(id) else {
            return ResponseOutcome::Failed;
        };
        let mut result = stream.on_response_headers(headers, body.is_empty());
        if result.is_ok() && !body.is_empty() {
            result = stream.on_response_body(body, true);
        }
        if let Err(error) = result {
            drop(stream);
            self.report(&error);
            return ResponseOutcome::Failed;
        }
        let headers = stream.response_headers().to_vec();
        let body = if body.is_empty() {
            Vec::new()
        } else {
            stream.response_body().to_vec()
        };
        if let Err(error) = stream.finish() {
            self.report(&error);
        }
        ResponseOutcome::Response { headers, body }
    }

    /// Paused requests the plugin resumed or answered since its last callback.
    fn resume_paused(&mut self) {
        let ids: Vec<u32> = self.paused.keys().copied().collect();
        for id in ids {
            let Some(stream) = self.vm.stream(id) else {
                if let Some(reply) = self.paused.remove(&id) {
                    let _ = reply.send(RequestOutcome::Failed);
                }
                continue;
            };
            let outcome = if let Some(local) = stream.local_reply().cloned() {
                if let Err(error) = stream.finish() {
                    self.report(&error);
                }
                Some(RequestOutcome::Reply(local))
            } else if stream.is_request_resumed() {
                let headers = stream.request_headers().to_vec();
                let body = stream.request_body().to_vec();
                Some(RequestOutcome::Forward {
                    stream: stream.detach(),
                    headers,
                    body,
                })
            } else {
                stream.detach();
                None
            };
            if let (Some(outcome), Some(reply)) = (outcome, self.paused.remove(&id))
                && let Err(RequestOutcome::Forward { stream, .. }) = reply.send(outcome)
            {
                self.finish(stream);
            }
        }
    }

    /// Finishes paused requests whose client went away; fails them all if the VM is.
    fn sweep_paused(&mut self) {
        if self.paused.is_empty() {
            return;
        }
        let failed = self.vm.is_failed();
        let gone: Vec<u32> = self
            .paused
            .iter()
            .filter(|(_, reply)| failed || reply.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(reply) = self.paused.remove(&id) {
                let _ = reply.send(RequestOutcome::Failed);
            }
            self.finish(id);
        }
    }

    /// Sends the plugin's new HTTP calls to their clusters; a call to a cluster the
    /// gateway does not know fails at once, as Envoy's would.
    fn dispatch_calls(&mut self) {
        loop {
            let calls = self.vm.take_http_calls();
            if calls.is_empty() {
                return;
            }
            for call in calls {
                match self.calls.clusters.get(&call.cluster) {
                    Some(cluster) => {
                        let cluster = cluster.clone();
                        let client = self.calls.client.clone();
                        let own = self.own.clone();
                        self.calls.runtime.spawn(async move {
                            let result = client.call(&call, &cluster).await;
                            let _ = own.send(Job::CallResult {
                                token: call.token,
                                result,
                            });
                        });
                    }
                    None => {
                        tracing::warn!(vm = self.vm.label(), cluster = %call.cluster, "call to an unknown cluster fails");
                        if let Err(error) = self
                            .vm
                            .deliver_http_response(call.token, HttpCallResult::Failed)
                        {
                            self.report(&error);
                        }
                    }
                }
            }
            if self.vm.is_failed() {
                return;
            }
        }
    }
}

/// Logs a filter error; a trap (the VM is failed for good) once per VM, loudly.
fn report(label: &str, reported: &mut bool, error: &HostError) {
    if matches!(error, HostError::Trap { .. } | HostError::Failed) {
        if !*reported {
            *reported = true;
            tracing::error!(
                vm = label,
                %error,
                "the VM trapped and is failed; its requests are refused (or passed through with fail_open)"
            );
        }
    } else {
        tracing::warn!(vm = label, %error, "filter call failed");
    }
}
