//! [`HostEnv`]: what one Envoy process shares between the VMs of its plugins.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::abi::Status;
use crate::clock::Clock;

/// The most log records a [`HostEnv`] keeps; older ones are dropped first, so a
/// long-running gateway does not grow without bound.
pub const MAX_LOG_RECORDS: usize = 10_000;

/// proxy-wasm log levels (`proxy_log`'s first argument), ordered by severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

impl LogLevel {
    pub(crate) fn from_abi(level: i32) -> Option<Self> {
        Some(match level {
            0 => Self::Trace,
            1 => Self::Debug,
            2 => Self::Info,
            3 => Self::Warn,
            4 => Self::Error,
            5 => Self::Critical,
            _ => return None,
        })
    }

    fn from_u8(level: u8) -> Self {
        Self::from_abi(i32::from(level)).unwrap_or(Self::Info)
    }
}

/// One line a plugin logged (through `proxy_log`, or stdout/stderr), or the host logged
/// about it (traps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub level: LogLevel,
    /// `"{vm_id}/{root_id}#{n}"`: which VM, `n` counting VMs started in this env from 1.
    pub vm: String,
    pub message: String,
}

/// The kind of a metric, as `proxy_define_metric` numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// How much shared data a [`HostEnv`] holds (see [`HostEnv::shared_data_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SharedDataStats {
    /// Entries, over every vm_id.
    pub entries: usize,
    /// Bytes of their keys and values together.
    pub bytes: usize,
    /// The largest single value.
    pub largest_value_bytes: usize,
}

/// What a histogram has recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistogramStats {
    pub count: u64,
    pub sum: u64,
    pub last: u64,
}

#[derive(Debug)]
struct Metric {
    name: String,
    kind: MetricKind,
    /// Counters and gauges; for histograms the sum of recorded values.
    value: i64,
    histogram: HistogramStats,
}

#[derive(Debug)]
struct Queue {
    owner: u64,
    items: VecDeque<Vec<u8>>,
}

#[derive(Debug, Default)]
struct Queues {
    queues: Vec<Queue>,
    /// (vm_id, name) → queue id.
    by_name: HashMap<(String, String), u32>,
    /// Per live VM (its key), one entry per enqueue to a queue it owns, not yet delivered.
    ready: HashMap<u64, Vec<u32>>,
}

#[derive(Debug, Default)]
struct SharedData {
    /// (vm_id, key) → (value, cas).
    entries: HashMap<(String, String), (Vec<u8>, u32)>,
    last_cas: u32,
}

#[derive(Debug, Default)]
struct Metrics {
    metrics: Vec<Metric>,
    by_name: HashMap<String, u32>,
}

#[derive(Debug)]
struct Inner {
    clock: Arc<dyn Clock>,
    clusters: Mutex<HashSet<String>>,
    log_level: AtomicU8,
    vm_count: AtomicU64,
    shared_data: Mutex<SharedData>,
    queues: Mutex<Queues>,
    queue_ready: Condvar,
    metrics: Mutex<Metrics>,
    logs: Mutex<VecDeque<LogRecord>>,
}

/// One Envoy process as its plugins see it: shared data (with CAS), shared queues,
/// metrics, logs, the clock and the upstream clusters that exist.
///
/// `Clone` gives another handle to the same process; it is `Send + Sync`, so the VMs of
/// every worker thread share one. Shared data and queue names are keyed by vm_id, as in
/// Envoy; metrics by name.
#[derive(Debug, Clone)]
pub struct HostEnv {
    inner: Arc<Inner>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl HostEnv {
    /// An empty process reading time from `clock`, logging at `Info` and above, with no
    /// clusters.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Arc::new(Inner {
                clock,
                clusters: Mutex::new(HashSet::new()),
                log_level: AtomicU8::new(LogLevel::Info as u8),
                vm_count: AtomicU64::new(0),
                shared_data: Mutex::new(SharedData::default()),
                queues: Mutex::new(Queues::default()),
                queue_ready: Condvar::new(),
                metrics: Mutex::new(Metrics::default()),
                logs: Mutex::new(VecDeque::new()),
            }),
        }
    }

    /// Declares upstream clusters; `proxy_http_call` to any other name returns
    /// `BadArgument`, as Envoy does for a cluster missing from its configuration.
    pub fn with_clusters(self, clusters: impl IntoIterator<Item = impl Into<String>>) -> Self {
        lock(&self.inner.clusters).extend(clusters.into_iter().map(Into::into));
        self
    }

    /// The clock plugins read.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// A counter's or gauge's value; for a histogram the sum of what was recorded.
    pub fn metric(&self, name: &str) -> Option<i64> {
        let metrics = lock(&self.inner.metrics);
        let id = *metrics.by_name.get(name)?;
        metrics
            .metrics
            .get(id_index(id)?)
            .map(|metric| metric.value)
    }

    /// A histogram's count, sum and last recorded value.
    pub fn histogram(&self, name: &str) -> Option<HistogramStats> {
        let metrics = lock(&self.inner.metrics);
        let id = *metrics.by_name.get(name)?;
        let metric = metrics.metrics.get(id_index(id)?)?;
        (metric.kind == MetricKind::Histogram).then_some(metric.histogram)
    }

    /// Every metric by name (values as in [`HostEnv::metric`]).
    pub fn metrics(&self) -> BTreeMap<String, i64> {
        lock(&self.inner.metrics)
            .metrics
            .iter()
            .map(|metric| (metric.name.clone(), metric.value))
            .collect()
    }

    /// The log records kept so far (at most [`MAX_LOG_RECORDS`], oldest first).
    pub fn logs(&self) -> Vec<LogRecord> {
        lock(&self.inner.logs).iter().cloned().collect()
    }

    /// The shared-data entry `key` (value and CAS token). Entries are keyed by vm_id; this
    /// returns the entry of any vm_id holding `key`, which is *the* entry when (as in
    /// practice) one env serves one vm_id. See [`HostEnv::shared_data_of`].
    pub fn shared_data(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        lock(&self.inner.shared_data)
            .entries
            .iter()
            .find(|((_, entry_key), _)| entry_key == key)
            .map(|(_, value)| value.clone())
    }

    /// The shared-data entry `key` of VMs with `vm_id`: value and CAS token.
    pub fn shared_data_of(&self, vm_id: &str, key: &str) -> Option<(Vec<u8>, u32)> {
        lock(&self.inner.shared_data)
            .entries
            .get(&(vm_id.to_owned(), key.to_owned()))
            .cloned()
    }

    /// How many shared-data entries the process holds and their size. Envoy never
    /// deletes shared data, so a plugin must keep its keys bounded; a long run samples
    /// this to check it does.
    pub fn shared_data_stats(&self) -> SharedDataStats {
        let data = lock(&self.inner.shared_data);
        let mut stats = SharedDataStats {
            entries: data.entries.len(),
            ..SharedDataStats::default()
        };
        for ((vm_id, key), (value, _)) in &data.entries {
            stats.bytes += vm_id.len() + key.len() + value.len();
            stats.largest_value_bytes = stats.largest_value_bytes.max(value.len());
        }
        stats
    }

    /// Items waiting in shared queues (enqueued, not yet dequeued) and their bytes: what
    /// a consumer that falls behind leaves in the host's memory.
    pub fn queued(&self) -> (usize, usize) {
        let queues = lock(&self.inner.queues);
        queues
            .queues
            .iter()
            .flat_map(|queue| queue.items.iter())
            .fold((0, 0), |(items, bytes), item| {
                (items + 1, bytes + item.len())
            })
    }

    /// The least severe level kept (and reported by `proxy_get_log_level`).
    pub fn set_log_level(&self, level: LogLevel) {
        self.inner.log_level.store(level as u8, Ordering::Relaxed);
    }

    /// See [`HostEnv::set_log_level`].
    pub fn log_level(&self) -> LogLevel {
        LogLevel::from_u8(self.inner.log_level.load(Ordering::Relaxed))
    }

    // ---- crate-internal operations behind the hostcalls ----

    pub(crate) fn next_vm_number(&self) -> u64 {
        self.inner.vm_count.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn has_cluster(&self, name: &str) -> bool {
        lock(&self.inner.clusters).contains(name)
    }

    /// Keeps a record if its level is at or above the env's level, and emits it as a
    /// `tracing` event (target `tollgate_wasm_host::guest`).
    pub(crate) fn log(&self, level: LogLevel, vm: &str, message: String) {
        if level < self.log_level() {
            return;
        }
        match level {
            LogLevel::Trace => {
                tracing::trace!(target: "tollgate_wasm_host::guest", vm, "{message}")
            }
            LogLevel::Debug => {
                tracing::debug!(target: "tollgate_wasm_host::guest", vm, "{message}")
            }
            LogLevel::Info => tracing::info!(target: "tollgate_wasm_host::guest", vm, "{message}"),
            LogLevel::Warn => tracing::warn!(target: "tollgate_wasm_host::guest", vm, "{message}"),
            LogLevel::Error | LogLevel::Critical => {
                tracing::error!(target: "tollgate_wasm_host::guest", vm, "{message}");
            }
        }
        let mut logs = lock(&self.inner.logs);
        if logs.len() >= MAX_LOG_RECORDS {
            logs.pop_front();
        }
        logs.push_back(LogRecord {
            level,
            vm: vm.to_owned(),
            message,
        });
    }

    pub(crate) fn logs_of(&self, vm: &str) -> Vec<LogRecord> {
        lock(&self.inner.logs)
            .iter()
            .filter(|record| record.vm == vm)
            .cloned()
            .collect()
    }

    pub(crate) fn get_shared(&self, vm_id: &str, key: &str) -> Option<(Vec<u8>, u32)> {
        self.shared_data_of(vm_id, key)
    }

    /// Envoy's `set`: CAS 0 writes unconditionally; a CAS that is not the entry's current
    /// one is `CasMismatch`; a missing key is inserted whatever the CAS (Envoy does the
    /// same). Every write gets a new nonzero CAS.
    pub(crate) fn set_shared(
        &self,
        vm_id: &str,
        key: &str,
        value: Vec<u8>,
        cas: u32,
    ) -> Result<(), Status> {
        let mut data = lock(&self.inner.shared_data);
        data.last_cas = data.last_cas.checked_add(1).unwrap_or(1);
        let next_cas = data.last_cas;
        match data.entries.get_mut(&(vm_id.to_owned(), key.to_owned())) {
            Some(entry) => {
                if cas != 0 && cas != entry.1 {
                    return Err(Status::CasMismatch);
                }
                *entry = (value, next_cas);
            }
            None => {
                data.entries
                    .insert((vm_id.to_owned(), key.to_owned()), (value, next_cas));
            }
        }
        Ok(())
    }

    /// Registers (or re-registers) queue `name` of `vm_id`, owned by the VM `owner`.
    pub(crate) fn register_queue(&self, vm_id: &str, name: &str, owner: u64) -> u32 {
        let mut queues = lock(&self.inner.queues);
        let key = (vm_id.to_owned(), name.to_owned());
        if let Some(&id) = queues.by_name.get(&key) {
            if let Some(queue) = queues.queues.get_mut(id_index(id).unwrap_or(usize::MAX)) {
                queue.owner = owner;
            }
            return id;
        }
        queues.queues.push(Queue {
            owner,
            items: VecDeque::new(),
        });
        let id = u32::try_from(queues.queues.len()).unwrap_or(u32::MAX);
        queues.by_name.insert(key, id);
        id
    }

    pub(crate) fn resolve_queue(&self, vm_id: &str, name: &str) -> Option<u32> {
        lock(&self.inner.queues)
            .by_name
            .get(&(vm_id.to_owned(), name.to_owned()))
            .copied()
    }

    pub(crate) fn enqueue(&self, id: u32, item: Vec<u8>) -> Result<(), Status> {
        let mut queues = lock(&self.inner.queues);
        let queue = id_index(id)
            .and_then(|index| queues.queues.get_mut(index))
            .ok_or(Status::NotFound)?;
        queue.items.push_back(item);
        let owner = queue.owner;
        if let Some(ready) = queues.ready.get_mut(&owner) {
            ready.push(id);
            self.inner.queue_ready.notify_all();
        }
        Ok(())
    }

    pub(crate) fn dequeue(&self, id: u32) -> Result<Vec<u8>, Status> {
        let mut queues = lock(&self.inner.queues);
        let queue = id_index(id)
            .and_then(|index| queues.queues.get_mut(index))
            .ok_or(Status::NotFound)?;
        queue.items.pop_front().ok_or(Status::Empty)
    }

    /// Marks a VM live: enqueues to queues it owns are delivered to it from now on.
    pub(crate) fn vm_started(&self, vm: u64) {
        lock(&self.inner.queues).ready.entry(vm).or_default();
    }

    pub(crate) fn vm_dropped(&self, vm: u64) {
        lock(&self.inner.queues).ready.remove(&vm);
    }

    /// The queue ids to deliver `on_queue_ready` for, one per enqueue since the last take.
    pub(crate) fn take_ready(&self, vm: u64) -> Vec<u32> {
        lock(&self.inner.queues)
            .ready
            .get_mut(&vm)
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Blocks until a queue owned by `vm` has undelivered enqueues, or `max` passes.
    pub(crate) fn wait_ready(&self, vm: u64, max: Duration) {
        let deadline = Instant::now() + max;
        let mut queues = lock(&self.inner.queues);
        loop {
            if queues.ready.get(&vm).is_none_or(|ready| !ready.is_empty()) {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            queues = self
                .inner
                .queue_ready
                .wait_timeout(queues, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Same id for the same name across the env's VMs; redefining a name with another
    /// kind is `BadArgument`.
    pub(crate) fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, Status> {
        let mut metrics = lock(&self.inner.metrics);
        if let Some(&id) = metrics.by_name.get(name) {
            let same_kind = id_index(id)
                .and_then(|index| metrics.metrics.get(index))
                .is_some_and(|metric| metric.kind == kind);
            return if same_kind {
                Ok(id)
            } else {
                Err(Status::BadArgument)
            };
        }
        metrics.metrics.push(Metric {
            name: name.to_owned(),
            kind,
            value: 0,
            histogram: HistogramStats::default(),
        });
        let id = u32::try_from(metrics.metrics.len()).map_err(|_| Status::InternalFailure)?;
        metrics.by_name.insert(name.to_owned(), id);
        Ok(id)
    }

    /// Envoy: counters only go up (a negative offset is `BadArgument`), gauges go both
    /// ways, histograms cannot be incremented (`BadArgument`).
    pub(crate) fn increment_metric(&self, id: u32, offset: i64) -> Result<(), Status> {
        self.with_metric(id, |metric| match metric.kind {
            MetricKind::Counter if offset >= 0 => {
                metric.value = metric.value.saturating_add(offset);
                Ok(())
            }
            MetricKind::Gauge => {
                metric.value = metric.value.saturating_add(offset);
                Ok(())
            }
            MetricKind::Counter | MetricKind::Histogram => Err(Status::BadArgument),
        })
    }

    /// Envoy: a counter adds the value, a gauge is set to it, a histogram records it
    /// (kept here as count, sum and last value; [`HostEnv::metric`] shows the sum).
    pub(crate) fn record_metric(&self, id: u32, value: u64) -> Result<(), Status> {
        let signed = i64::try_from(value).unwrap_or(i64::MAX);
        self.with_metric(id, |metric| {
            match metric.kind {
                MetricKind::Counter => metric.value = metric.value.saturating_add(signed),
                MetricKind::Gauge => metric.value = signed,
                MetricKind::Histogram => {
                    let stats = &mut metric.histogram;
                    stats.count += 1;
                    stats.sum = stats.sum.saturating_add(value);
                    stats.last = value;
                    metric.value = i64::try_from(stats.sum).unwrap_or(i64::MAX);
                }
            }
            Ok(())
        })
    }

    /// Counters and gauges; a histogram has no single value (`BadArgument`, as Envoy).
    pub(crate) fn get_metric(&self, id: u32) -> Result<u64, Status> {
        self.with_metric(id, |metric| match metric.kind {
            MetricKind::Histogram => Err(Status::BadArgument),
            // Envoy's gauges are unsigned on this path too: a negative gauge reads as its
            // two's complement.
            MetricKind::Counter | MetricKind::Gauge => Ok(metric.value as u64),
        })
    }

    fn with_metric<R>(
        &self,
        id: u32,
        f: impl FnOnce(&mut Metric) -> Result<R, Status>,
    ) -> Result<R, Status> {
        let mut metrics = lock(&self.inner.metrics);
        let metric = id_index(id)
            .and_then(|index| metrics.metrics.get_mut(index))
            .ok_or(Status::NotFound)?;
        f(metric)
    }
}

/// Ids are 1-based indices (0 is never handed out).
fn id_index(id: u32) -> Option<usize> {
    usize::try_from(id).ok()?.checked_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;

    fn env() -> HostEnv {
        HostEnv::new(Arc::new(SystemClock))
    }

    #[test]
    fn shared_data_cas_rules_follow_envoy() {
        let env = env();
        assert_eq!(env.get_shared("vm", "k"), None);
        // A missing key is inserted whatever the CAS, as Envoy does.
        env.set_shared("vm", "k", b"1".to_vec(), 77).unwrap();
        let (value, cas) = env.get_shared("vm", "k").unwrap();
        assert_eq!(value, b"1");
        assert_ne!(cas, 0);
        assert_eq!(
            env.set_shared("vm", "k", b"2".to_vec(), cas + 1),
            Err(Status::CasMismatch)
        );
        env.set_shared("vm", "k", b"2".to_vec(), cas).unwrap();
        let (_, next) = env.get_shared("vm", "k").unwrap();
        assert_ne!(next, cas);
        assert_eq!(
            env.set_shared("vm", "k", b"3".to_vec(), cas),
            Err(Status::CasMismatch)
        );
        env.set_shared("vm", "k", b"4".to_vec(), 0).unwrap();
        assert_eq!(env.shared_data("k").unwrap().0, b"4");
        // Keyed by vm_id.
        assert_eq!(env.get_shared("other_vm", "k"), None);
        env.set_shared("other_vm", "key", b"12345".to_vec(), 0)
            .unwrap();
        assert_eq!(
            env.shared_data_stats(),
            SharedDataStats {
                entries: 2,
                bytes: "vm".len() + 1 + 1 + "other_vm".len() + 3 + 5,
                largest_value_bytes: 5,
            }
        );
    }

    #[test]
    fn queues_resolve_by_vm_id_and_name_and_wake_their_latest_owner() {
        let env = env();
        env.vm_started(1);
        env.vm_started(2);
        assert_eq!(env.resolve_queue("vm", "q"), None);
        let id = env.register_queue("vm", "q", 1);
        assert_eq!(env.resolve_queue("vm", "q"), Some(id));
        assert_eq!(env.resolve_queue("other", "q"), None);
        assert_eq!(
            env.register_queue("vm", "q", 2),
            id,
            "re-registering keeps the id"
        );
        env.enqueue(id, b"a".to_vec()).unwrap();
        env.enqueue(id, b"b".to_vec()).unwrap();
        assert!(env.take_ready(1).is_empty());
        assert_eq!(env.take_ready(2), vec![id, id]);
        assert_eq!(env.queued(), (2, 2));
        assert_eq!(env.dequeue(id).unwrap(), b"a");
        assert_eq!(env.dequeue(id).unwrap(), b"b");
        assert_eq!(env.dequeue(id), Err(Status::Empty));
        assert_eq!(env.enqueue(id + 1, Vec::new()), Err(Status::NotFound));
        assert_eq!(env.dequeue(0), Err(Status::NotFound));
    }

    #[test]
    fn metrics_keep_envoy_kind_rules() {
        let env = env();
        let counter = env.define_metric(MetricKind::Counter, "c").unwrap();
        assert_eq!(env.define_metric(MetricKind::Counter, "c"), Ok(counter));
        assert_eq!(
            env.define_metric(MetricKind::Gauge, "c"),
            Err(Status::BadArgument)
        );
        env.increment_metric(counter, 2).unwrap();
        assert_eq!(env.increment_metric(counter, -1), Err(Status::BadArgument));
        env.record_metric(counter, 3).unwrap();
        assert_eq!(env.get_metric(counter), Ok(5));
        let gauge = env.define_metric(MetricKind::Gauge, "g").unwrap();
        env.increment_metric(gauge, -4).unwrap();
        env.record_metric(gauge, 9).unwrap();
        assert_eq!(env.metric("g"), Some(9));
        let histogram = env.define_metric(MetricKind::Histogram, "h").unwrap();
        env.record_metric(histogram, 10).unwrap();
        env.record_metric(histogram, 5).unwrap();
        assert_eq!(env.get_metric(histogram), Err(Status::BadArgument));
        assert_eq!(
            env.histogram("h"),
            Some(HistogramStats {
                count: 2,
                sum: 15,
                last: 5
            })
        );
        assert_eq!(env.metric("h"), Some(15));
        assert_eq!(env.increment_metric(999, 1), Err(Status::NotFound));
    }

    #[test]
    fn logs_below_the_level_are_dropped() {
        let env = env();
        env.log(LogLevel::Debug, "vm/root#1", "hidden".to_owned());
        env.log(LogLevel::Info, "vm/root#1", "shown".to_owned());
        env.set_log_level(LogLevel::Trace);
        env.log(LogLevel::Trace, "vm/root#1", "now shown".to_owned());
        let messages: Vec<String> = env.logs().into_iter().map(|r| r.message).collect();
        assert_eq!(messages, ["shown", "now shown"]);
    }
}
