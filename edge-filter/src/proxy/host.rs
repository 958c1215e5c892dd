//! Host calls the glue uses, each with its failure turned into a value: the SDK's own
//! convenience methods `unwrap` host answers (and panic on non-UTF-8 header values),
//! which a filter in front of tenants' traffic must never do.

use chrono::{DateTime, Utc};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType, Status};

pub fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

pub fn now() -> DateTime<Utc> {
    hostcalls::get_current_time()
        .map(DateTime::<Utc>::from)
        .unwrap_or_default()
}

pub fn now_ms(now: DateTime<Utc>) -> u64 {
    u64::try_from(now.timestamp_millis()).unwrap_or(0)
}

pub fn plugin_configuration() -> String {
    let bytes = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
        .ok()
        .flatten()
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A property as UTF-8 text; `None` if missing or not text.
pub fn property_string(path: &[&str]) -> Option<String> {
    let bytes = hostcalls::get_property(path.to_vec()).ok().flatten()?;
    String::from_utf8(bytes).ok()
}

/// One header's value as bytes (header values need not be UTF-8).
pub fn header(map: MapType, name: &str) -> Option<Vec<u8>> {
    hostcalls::get_map_value_bytes(map, name).ok().flatten()
}

pub fn add_header(map: MapType, name: &str, value: &str) {
    let _ = hostcalls::add_map_value(map, name, value);
}

pub fn buffer(kind: BufferType, size: usize) -> Vec<u8> {
    hostcalls::get_buffer(kind, 0, size)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// A shared-data entry and its CAS token; a missing entry or a host error is `(None,
/// None)`, which admission treats as a fresh entry.
pub fn shared_data(key: &str) -> (Option<Vec<u8>>, Option<u32>) {
    hostcalls::get_shared_data(key).unwrap_or((None, None))
}

pub fn set_shared_data(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status> {
    hostcalls::set_shared_data(key, Some(value), cas)
}

/// The filter's counters and gauges, defined by name so every VM of an Envoy process
/// adds to the same ones.
#[derive(Debug, Clone, Copy, Default)]
pub struct Metrics {
    pub requests_allowed: Option<u32>,
    pub requests_rate_limited: Option<u32>,
    pub requests_quota_exceeded: Option<u32>,
    pub requests_blocked: Option<u32>,
    pub requests_unauthorized: Option<u32>,
    pub requests_unavailable: Option<u32>,
    pub batches_flushed: Option<u32>,
    pub rows_flushed: Option<u32>,
    pub flush_failures: Option<u32>,
    pub rows_dropped: Option<u32>,
    pub snapshot_failures: Option<u32>,
    pub snapshot_age_seconds: Option<u32>,
}

impl Metrics {
    pub fn define() -> Metrics {
        let counter = |name: &str| hostcalls::define_metric(MetricType::Counter, name).ok();
        Metrics {
            requests_allowed: counter("tollgate.requests_allowed"),
            requests_rate_limited: counter("tollgate.requests_rate_limited"),
            requests_quota_exceeded: counter("tollgate.requests_quota_exceeded"),
            requests_blocked: counter("tollgate.requests_blocked"),
            requests_unauthorized: counter("tollgate.requests_unauthorized"),
            requests_unavailable: counter("tollgate.requests_unavailable"),
            batches_flushed: counter("tollgate.batches_flushed"),
            rows_flushed: counter("tollgate.rows_flushed"),
            flush_failures: counter("tollgate.flush_failures"),
            rows_dropped: counter("tollgate.rows_dropped"),
            snapshot_failures: counter("tollgate.snapshot_failures"),
            snapshot_age_seconds: hostcalls::define_metric(
                MetricType::Gauge,
                "tollgate.snapshot_age_seconds",
            )
            .ok(),
        }
    }

    pub fn add(metric: Option<u32>, n: u64) {
        if let (Some(id), Ok(n)) = (metric, i64::try_from(n))
            && n > 0
        {
            let _ = hostcalls::increment_metric(id, n);
        }
    }

    /// Adds to the dropped-rows counter what a buffer dropped since `*reported`, the
    /// buffer's running total of drops.
    pub fn report_dropped(&self, total: u64, reported: &mut u64) {
        Metrics::add(self.rows_dropped, total.saturating_sub(*reported));
        *reported = total;
    }

    pub fn set(metric: Option<u32>, value: u64) {
        if let Some(id) = metric {
            let _ = hostcalls::record_metric(id, value);
        }
    }
}

/// A small xorshift generator for retry jitter (not for anything secret).
#[derive(Debug, Clone, Copy)]
pub struct Jitter(u64);

impl Jitter {
    pub fn seeded(now: DateTime<Utc>) -> Jitter {
        let seed = now.timestamp_nanos_opt().unwrap_or(1).unsigned_abs();
        Jitter(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}
