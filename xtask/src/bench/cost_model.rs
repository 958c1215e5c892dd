//! The AWS cost model of the usage pipeline, in one place so that `cargo xtask bench cost`
//! and `docs/cost.md` cannot disagree: pure arithmetic, no I/O.
//!
//! Volumes (requests, items, units, seconds) are expected values and kept as `f64`;
//! money is [`Decimal`], computed as volume × list price. [`Calibration`] holds what the
//! measured run found (message bytes per row, write units per counter item, ingest time
//! per item); [`Scenario`] the deployment's parameters. Every formula is explained in
//! `docs/cost.md` under the same names.

use rust_decimal::Decimal;
use rust_decimal::prelude::{FromPrimitive, ToPrimitive};
use rust_decimal_macros::dec;

/// The day the prices below were checked against the providers' pages.
pub const PRICES_AS_OF: &str = "2026-11-23";
/// Seconds in the 730-hour month AWS prices monthly items with.
pub const SECONDS_PER_MONTH: f64 = 730.0 * 3600.0;
/// SQS bills each started 64 KiB of a request's payload as one request.
pub const SQS_CHUNK_BYTES: f64 = 64.0 * 1024.0;
/// Most messages one `ReceiveMessage` or `DeleteMessageBatch` handles.
pub const SQS_BATCH: f64 = 10.0;
/// The edge filter's default largest message body (`maxBodyBytes`).
pub const MAX_BODY_BYTES: f64 = 256.0 * 1024.0;
/// Counters per journal chunk (`apply::journal::JOURNAL_CHUNK_ROWS`).
pub const JOURNAL_CHUNK_ROWS: f64 = 99.0;
/// Actions in one `TransactWriteItems`.
pub const TRANSACTION_ITEMS: f64 = 100.0;
/// Milliseconds of a snapshot request served from the usage API's cache (assumed).
pub const CACHED_SNAPSHOT_MS: f64 = 5.0;
/// Long-poll receives an idle event source mapping keeps open: Lambda's documented five
/// concurrent batches at low traffic (the drop to two is not available with maximum
/// concurrency set, and `infra/template.yaml` sets it).
pub const IDLE_POLLERS: f64 = 5.0;
/// The longest `ReceiveMessage` wait, assumed for the mapping's long polls.
pub const LONG_POLL_SECONDS: f64 = 20.0;
/// Memory of the ingest and usage API functions (`MemorySize: 512` in
/// `infra/template.yaml`).
pub const INGEST_MEMORY_GB: f64 = 0.5;
pub const USAGE_API_MEMORY_GB: f64 = 0.5;

/// List prices (us-east-1, on-demand, free tiers ignored), per unit.
#[derive(Debug, Clone, PartialEq)]
pub struct Prices {
    /// SQS standard queue, per request (each 64 KiB chunk of payload one request).
    pub sqs_request: Decimal,
    /// DynamoDB on-demand, per write request unit (1 KB; 2 per KB transactional).
    pub write_unit: Decimal,
    /// DynamoDB on-demand, per read request unit (4 KB strongly consistent; half that
    /// eventually consistent).
    pub read_unit: Decimal,
    /// Lambda, per invocation.
    pub lambda_invocation: Decimal,
    /// Lambda arm64, per GB-second.
    pub lambda_gb_second: Decimal,
    /// EventBridge Scheduler, per invocation (after 14 million free a month).
    pub scheduler_invocation: Decimal,
    /// DynamoDB Standard table storage, per GB-month.
    pub storage_gb_month: Decimal,
    /// DynamoDB continuous backups (PITR), per GB-month.
    pub pitr_gb_month: Decimal,
    /// CloudWatch standard-resolution alarm, per alarm-month.
    pub alarm_month: Decimal,
    /// CloudWatch custom metric, per metric-month (the ingest function's EMF metrics).
    pub metric_month: Decimal,
    /// Secrets Manager, per secret-month.
    pub secret_month: Decimal,
}

impl Prices {
    /// The list prices as of [`PRICES_AS_OF`]; sources in `docs/cost.md`.
    pub fn list() -> Prices {
        let per_million = |p: Decimal| p / dec!(1_000_000);
        Prices {
            sqs_request: per_million(dec!(0.40)),
            write_unit: per_million(dec!(0.625)),
            read_unit: per_million(dec!(0.125)),
            lambda_invocation: per_million(dec!(0.20)),
            lambda_gb_second: dec!(0.0000133334),
            scheduler_invocation: per_million(dec!(1.00)),
            storage_gb_month: dec!(0.25),
            pitr_gb_month: dec!(0.20),
            alarm_month: dec!(0.10),
            metric_month: dec!(0.30),
            secret_month: dec!(0.40),
        }
    }
}

/// What one deployment looks like while metering.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scenario {
    /// Metered requests per second over all gateways (R).
    pub rate: f64,
    /// Tenants, each equally likely to send a request (T).
    pub tenants: f64,
    /// Meters each request adds to (M; the filter has three).
    pub meters: f64,
    /// Dimension combinations per tenant and meter (route group × status class; D).
    pub dimensions: f64,
    /// Gateway instances (Envoy processes), each with its own singleton (G).
    pub gateways: f64,
    /// The filter's `flushIntervalSeconds` (F).
    pub flush_seconds: f64,
    /// The event source mapping's batching window in seconds (W; 0 = none).
    pub window_seconds: f64,
    /// The event source mapping's batch size (B).
    pub batch_size: f64,
    /// The filter's snapshot interval in seconds (S; default 15).
    pub snapshot_seconds: f64,
    /// The usage API's snapshot max age in seconds (A; `TOLLGATE_SNAPSHOT_MAX_AGE_SECONDS`,
    /// 0 = rebuilt for every poll).
    pub snapshot_cache_seconds: f64,
}

impl Scenario {
    /// The headline: 1,000 req/s over 10 gateways, 100 tenants × 3 meters, the filter's
    /// default 10 s flush and 15 s snapshot interval, and `infra/template.yaml`'s
    /// defaults: a 90 s batching window, batches of up to 100 messages, a 15 s snapshot
    /// max age.
    pub fn headline() -> Scenario {
        Scenario {
            rate: 1_000.0,
            tenants: 100.0,
            meters: 3.0,
            dimensions: 1.0,
            gateways: 10.0,
            flush_seconds: 10.0,
            window_seconds: 90.0,
            batch_size: 100.0,
            snapshot_seconds: 15.0,
            snapshot_cache_seconds: 15.0,
        }
    }
}

/// Per-unit figures the measured run found (`cargo xtask bench cost`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    /// Bytes of a message's envelope (schema, batch id, gateway, time) without rows.
    pub envelope_bytes: f64,
    /// Mean bytes of one minute row in a message, over the meters.
    pub row_bytes: f64,
    /// Mean ⌈item size / 1 KB⌉ of the counter items written (sketches are larger).
    pub counter_kb: f64,
    /// Mean bytes of one counter in a journal chunk.
    pub journal_row_bytes: f64,
    /// Share of counter writes preceded by a consistent read (non-additive meters).
    pub read_share: f64,
    /// Mean ⌈item size / 4 KB⌉ of those reads.
    pub read_4kb: f64,
    /// Ingest milliseconds per item written, measured against DynamoDB Local (an upper
    /// bound for DynamoDB: the local emulator is slower per call).
    pub ingest_ms_per_item: f64,
}

/// Volumes per second of steady traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Volumes {
    /// Flushes with something to send, over all gateways.
    pub flushes: f64,
    /// Messages (edge batches) sent.
    pub messages: f64,
    /// Mean bytes of one message.
    pub message_bytes: f64,
    /// Minute rows per message.
    pub rows_per_message: f64,
    /// Hourly counter rows per message after ingest folds minutes into hours.
    pub hourly_rows_per_message: f64,
    /// `SendMessageBatch` calls, and the requests they are billed as (64 KiB chunks).
    pub send_calls: f64,
    pub send_billed: f64,
    /// Messages per ingest invocation.
    pub messages_per_invocation: f64,
    pub invocations: f64,
    /// `ReceiveMessage` requests billed while busy (one per message at these rates).
    pub receives_billed: f64,
    /// `DeleteMessageBatch` requests.
    pub deletes: f64,
    pub transactions: f64,
    pub counter_items: f64,
    pub marker_items: f64,
    /// Journal chunks, each written by its claim and deleted by its apply.
    pub journal_items: f64,
    pub write_units: f64,
    pub read_units: f64,
    pub ingest_gb_seconds: f64,
    /// Edge snapshot fetches (usage API invocations), the rebuilds among them, and the
    /// rebuilds' reads.
    pub snapshot_fetches: f64,
    pub snapshot_rebuilds: f64,
    pub snapshot_read_units: f64,
    pub snapshot_gb_seconds: f64,
}

/// Expected distinct tenants among `requests` requests spread uniformly over `tenants`.
pub fn active_tenants(tenants: f64, requests: f64) -> f64 {
    if tenants <= 0.0 || requests <= 0.0 {
        return 0.0;
    }
    tenants * (1.0 - (1.0 - 1.0 / tenants).powf(requests))
}

/// Read units of one edge snapshot (`GET /v1/edge/snapshot`) for `tenants` tenants
/// without quotas: the budget block list (1, strongly consistent), the tenant pages of
/// 100 on the index (0.5 per started 4 KB, ≈ 20 KB a page), one plan query per plan
/// (1; a handful of plans, taken as 3), and one key listing per tenant on the index (0.5).
/// Tenants with quotas add their day's and month's usage queries.
pub fn snapshot_read_units(tenants: f64) -> f64 {
    let pages = (tenants / 100.0).ceil().max(1.0);
    1.0 + pages * 0.5 * 5.0 + 3.0 + tenants * 0.5
}

/// Milliseconds of one snapshot: about 5 ms per query, run one after another (assumed,
/// not measured; the usage API is not part of the measured run).
pub fn snapshot_ms(tenants: f64) -> f64 {
    5.0 * (5.0 + tenants)
}

/// The pipeline's volumes per second for `s`, calibrated by `c`.
pub fn volumes(s: &Scenario, c: &Calibration) -> Volumes {
    let per_gateway = s.rate / s.gateways;
    let per_flush = per_gateway * s.flush_seconds;
    // A gateway flushes only when it has something: P(at least one request in F).
    let busy = 1.0 - (-per_flush).exp();
    let flushes = s.gateways * busy / s.flush_seconds;
    // A flush interval of F s spans ⌊F/60⌋ + 1 minute buckets, or one more with
    // probability frac(F/60); rows are per minute, so a flush that straddles a minute
    // boundary carries the active tenants twice and may cross a 64 KiB chunk.
    let whole = (s.flush_seconds / 60.0).floor();
    let straddle = s.flush_seconds / 60.0 - whole;
    let mut rows_per_flush = 0.0;
    let mut messages_per_flush = 0.0;
    let mut chunks_per_flush = 0.0;
    let mut calls_per_flush = 0.0;
    for (minutes, weight) in [(whole + 1.0, 1.0 - straddle), (whole + 2.0, straddle)] {
        let rows =
            minutes * active_tenants(s.tenants, per_flush / minutes) * s.meters * s.dimensions;
        let messages = (rows * c.row_bytes / (MAX_BODY_BYTES - c.envelope_bytes))
            .ceil()
            .max(1.0);
        let calls = (messages / SQS_BATCH).ceil();
        let bytes = messages * c.envelope_bytes + rows * c.row_bytes;
        rows_per_flush += weight * rows;
        messages_per_flush += weight * messages;
        calls_per_flush += weight * calls;
        chunks_per_flush += weight * calls * (bytes / calls / SQS_CHUNK_BYTES).ceil().max(1.0);
    }
    let hourly_rows_per_flush = active_tenants(s.tenants, per_flush) * s.meters * s.dimensions;
    let messages = flushes * messages_per_flush;
    let rows_per_message = rows_per_flush / messages_per_flush;
    let hourly_rows_per_message = hourly_rows_per_flush / messages_per_flush;
    let message_bytes = c.envelope_bytes + rows_per_message * c.row_bytes;
    let send_calls = flushes * calls_per_flush;
    let send_billed = flushes * chunks_per_flush;

    // The mapping gathers messages for W seconds (up to B); without a window each
    // message is its own invocation at these message rates (a few per second).
    let messages_per_invocation = if s.window_seconds > 0.0 {
        (messages * s.window_seconds).clamp(1.0, s.batch_size)
    } else {
        1.0
    };
    let invocations = messages / messages_per_invocation;
    let receives_billed = messages * (message_bytes / SQS_CHUNK_BYTES).ceil().max(1.0);
    let deletes = invocations * (messages_per_invocation / SQS_BATCH).ceil();

    // Writes per invocation (`tollgate_store::apply`): the invocation's k messages are
    // merged by key into K counters. If k markers and K counters fit one transaction
    // they commit together (direct); otherwise a claim puts the markers and the journal
    // (⌈K/99⌉ chunks), and each chunk is applied by a transaction that deletes it and
    // writes its counters. A claim holds at most 100 − chunks markers, so a larger k
    // is split into claims of equal size, each writing its own keys.
    let k = messages_per_invocation;
    let covered = s.rate * s.flush_seconds / s.gateways;
    let keys = |j: f64| {
        (active_tenants(s.tenants, j * covered) * s.meters * s.dimensions)
            .max(hourly_rows_per_message)
    };
    let w = writes_per_invocation(k, keys, c);
    let write_units = invocations * w.write_units;
    // Reads: the versioned counters' consistent reads, and finish_journals' one
    // strongly consistent query per invocation.
    let read_units = invocations * (w.counters * c.read_share * c.read_4kb + 1.0);
    let ingest_gb_seconds =
        invocations * w.items() * c.ingest_ms_per_item / 1000.0 * INGEST_MEMORY_GB;

    let snapshot_fetches = s.gateways / s.snapshot_seconds;
    // One usage API instance serves the polls (each takes milliseconds), rebuilding at
    // most once per max age.
    let snapshot_rebuilds = if s.snapshot_cache_seconds > 0.0 {
        snapshot_fetches.min(1.0 / s.snapshot_cache_seconds)
    } else {
        snapshot_fetches
    };
    Volumes {
        flushes,
        messages,
        message_bytes,
        rows_per_message,
        hourly_rows_per_message,
        send_calls,
        send_billed,
        messages_per_invocation,
        invocations,
        receives_billed,
        deletes,
        transactions: invocations * w.transactions,
        counter_items: invocations * w.counters,
        marker_items: invocations * w.markers,
        journal_items: invocations * w.journal_chunks,
        write_units,
        read_units,
        ingest_gb_seconds,
        snapshot_fetches,
        snapshot_rebuilds,
        snapshot_read_units: snapshot_rebuilds * snapshot_read_units(s.tenants),
        snapshot_gb_seconds: (snapshot_rebuilds * snapshot_ms(s.tenants)
            + (snapshot_fetches - snapshot_rebuilds) * CACHED_SNAPSHOT_MS)
            / 1000.0
            * USAGE_API_MEMORY_GB,
    }
}

/// What one ingest invocation writes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct InvocationWrites {
    pub transactions: f64,
    pub markers: f64,
    pub counters: f64,
    pub journal_chunks: f64,
    pub write_units: f64,
}

impl InvocationWrites {
    /// Items written or deleted (a journal chunk twice).
    pub fn items(&self) -> f64 {
        self.markers + self.counters + 2.0 * self.journal_chunks
    }
}

/// The writes of an invocation of `k` messages whose `j` messages touch `keys(j)`
/// distinct counters.
pub fn writes_per_invocation(
    k: f64,
    keys: impl Fn(f64) -> f64,
    c: &Calibration,
) -> InvocationWrites {
    let all = keys(k);
    if k + all <= TRANSACTION_ITEMS {
        return InvocationWrites {
            transactions: 1.0,
            markers: k,
            counters: all,
            journal_chunks: 0.0,
            write_units: 2.0 * (k + all * c.counter_kb),
        };
    }
    let chunks_of = |n: f64| (n / JOURNAL_CHUNK_ROWS).ceil().max(1.0);
    let mut claims = (k / (TRANSACTION_ITEMS - chunks_of(all))).ceil().max(1.0);
    while (k / claims).ceil() + chunks_of(keys(k / claims)) > TRANSACTION_ITEMS {
        claims += 1.0;
    }
    let per_claim = k / claims;
    let counters = keys(per_claim);
    let chunks = chunks_of(counters);
    // Each chunk's item is billed per started KB, once when put and once when deleted.
    let chunk_kb = (counters / chunks * c.journal_row_bytes / 1024.0)
        .ceil()
        .max(1.0);
    let units =
        2.0 * (per_claim + chunks * chunk_kb) + 2.0 * (chunks * chunk_kb + counters * c.counter_kb);
    InvocationWrites {
        transactions: claims * (1.0 + chunks),
        markers: k,
        counters: claims * counters,
        journal_chunks: claims * chunks,
        write_units: claims * units,
    }
}

fn money(volume: f64, price: Decimal) -> Decimal {
    Decimal::from_f64(volume).unwrap_or_default() * price
}

/// Dollars per 1,000,000 metered requests, by line.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Breakdown {
    pub sqs_send: Decimal,
    pub sqs_receive_delete: Decimal,
    pub dynamodb_writes: Decimal,
    pub dynamodb_reads: Decimal,
    pub ingest_lambda: Decimal,
    /// The gateways' snapshot polling (usage API invocations, GB-s and reads).
    pub snapshot: Decimal,
}

impl Breakdown {
    pub fn total(&self) -> Decimal {
        self.sqs_send
            + self.sqs_receive_delete
            + self.dynamodb_writes
            + self.dynamodb_reads
            + self.ingest_lambda
            + self.snapshot
    }

    /// The lines by name, largest first.
    pub fn lines(&self) -> Vec<(&'static str, Decimal)> {
        let mut lines = vec![
            ("SQS SendMessageBatch", self.sqs_send),
            ("SQS receive + delete (ESM)", self.sqs_receive_delete),
            ("DynamoDB writes", self.dynamodb_writes),
            ("DynamoDB reads", self.dynamodb_reads),
            ("Lambda ingest", self.ingest_lambda),
            ("edge snapshot polling", self.snapshot),
        ];
        lines.sort_by_key(|line| std::cmp::Reverse(line.1));
        lines
    }
}

/// The cost of 1,000,000 metered requests at `s` (the variable cost; the monthly floor
/// is [`floor`]).
pub fn per_million(s: &Scenario, c: &Calibration, p: &Prices) -> Breakdown {
    let v = volumes(s, c);
    // Seconds of traffic that meter one million requests.
    let seconds = 1_000_000.0 / s.rate;
    let scale = |per_second: f64| per_second * seconds;
    Breakdown {
        sqs_send: money(scale(v.send_billed), p.sqs_request),
        sqs_receive_delete: money(scale(v.receives_billed + v.deletes), p.sqs_request),
        dynamodb_writes: money(scale(v.write_units), p.write_unit),
        dynamodb_reads: money(scale(v.read_units), p.read_unit),
        ingest_lambda: money(scale(v.invocations), p.lambda_invocation)
            + money(scale(v.ingest_gb_seconds), p.lambda_gb_second),
        snapshot: money(scale(v.snapshot_fetches), p.lambda_invocation)
            + money(scale(v.snapshot_gb_seconds), p.lambda_gb_second)
            + money(scale(v.snapshot_read_units), p.read_unit),
    }
}

/// What the deployment runs on whether or not anything is metered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Deployment {
    pub tenants: f64,
    pub meters: f64,
    /// CloudWatch alarms (`infra/template.yaml` has six: DLQ depth, ingest errors,
    /// rejected messages, billing-sync errors, rejected or expired events, stopped meters).
    pub alarms: f64,
    /// Custom metrics: ingest's five EMF metrics and at least the three others the alarms
    /// watch (`EventsRejected`, `EventsExpired`, `MetersStopped`).
    pub custom_metrics: f64,
    /// Secrets (the Stripe key).
    pub secrets: f64,
    /// Table size in GB (storage and PITR are billed on it).
    pub table_gb: f64,
}

impl Deployment {
    pub fn idle(tenants: f64, meters: f64) -> Deployment {
        Deployment {
            tenants,
            meters,
            alarms: 6.0,
            custom_metrics: 8.0,
            secrets: 1.0,
            table_gb: 0.1,
        }
    }
}

/// Scheduled functions (`infra/template.yaml`): name, runs per month, memory in GB.
pub const SCHEDULED_RUNS: [(&str, f64, f64); 3] = [
    ("rollup (hourly)", 730.0, 0.5),
    ("budget (every 5 min)", 730.0 * 12.0, 0.25),
    ("billing-sync (hourly)", 730.0, 0.25),
];

/// The monthly cost of a deployment with nothing metered, by line.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Floor {
    pub esm_empty_receives: Decimal,
    pub scheduled_lambda: Decimal,
    pub scheduled_reads: Decimal,
    pub scheduler: Decimal,
    pub alarms: Decimal,
    pub custom_metrics: Decimal,
    pub secret: Decimal,
    pub storage: Decimal,
    pub pitr: Decimal,
}

impl Floor {
    pub fn total(&self) -> Decimal {
        self.esm_empty_receives
            + self.scheduled_lambda
            + self.scheduled_reads
            + self.scheduler
            + self.alarms
            + self.custom_metrics
            + self.secret
            + self.storage
            + self.pitr
    }

    pub fn lines(&self) -> Vec<(&'static str, Decimal)> {
        vec![
            (
                "SQS empty receives (ESM long polls)",
                self.esm_empty_receives,
            ),
            ("scheduled Lambda runs", self.scheduled_lambda),
            ("their DynamoDB reads", self.scheduled_reads),
            ("EventBridge Scheduler", self.scheduler),
            ("CloudWatch alarms", self.alarms),
            ("CloudWatch custom metrics (EMF)", self.custom_metrics),
            ("Secrets Manager secret", self.secret),
            ("DynamoDB storage", self.storage),
            ("DynamoDB PITR", self.pitr),
        ]
    }
}

/// Empty `ReceiveMessage` requests per month of an idle event source mapping.
pub fn idle_receives_per_month() -> f64 {
    IDLE_POLLERS * SECONDS_PER_MONTH / LONG_POLL_SECONDS
}

/// Read units of one scheduled run with nothing metered: one query per tenant (and per
/// tenant and meter for billing-sync's ledger), 1 unit each, strongly consistent.
pub fn idle_reads_per_run(d: &Deployment) -> f64 {
    d.tenants * (1.0 + d.meters)
}

/// The fixed monthly floor (Function URL: free; free tiers ignored).
pub fn floor(d: &Deployment, p: &Prices) -> Floor {
    let runs: f64 = SCHEDULED_RUNS.iter().map(|(_, n, _)| n).sum();
    // An idle run: about 5 ms per query, sequential, plus 20 ms of start-up work.
    let seconds_per_run = (20.0 + 5.0 * idle_reads_per_run(d)) / 1000.0;
    let gb_seconds: f64 = SCHEDULED_RUNS
        .iter()
        .map(|(_, n, gb)| n * seconds_per_run * gb)
        .sum();
    Floor {
        esm_empty_receives: money(idle_receives_per_month(), p.sqs_request),
        scheduled_lambda: money(runs, p.lambda_invocation) + money(gb_seconds, p.lambda_gb_second),
        scheduled_reads: money(runs * idle_reads_per_run(d), p.read_unit),
        scheduler: money(runs, p.scheduler_invocation),
        alarms: money(d.alarms, p.alarm_month),
        custom_metrics: money(d.custom_metrics, p.metric_month),
        secret: money(d.secrets, p.secret_month),
        storage: money(d.table_gb, p.storage_gb_month),
        pitr: money(d.table_gb, p.pitr_gb_month),
    }
}

/// The monthly cost of `gateways` gateways polling the snapshot every `snapshot_seconds`,
/// served by one usage API instance that rebuilds at most once per `cache_seconds`.
pub fn snapshot_polling_month(
    gateways: f64,
    tenants: f64,
    snapshot_seconds: f64,
    cache_seconds: f64,
    p: &Prices,
) -> Decimal {
    let fetches = gateways * SECONDS_PER_MONTH / snapshot_seconds;
    let rebuilds = if cache_seconds > 0.0 {
        fetches.min(SECONDS_PER_MONTH / cache_seconds)
    } else {
        fetches
    };
    let gb_seconds = (rebuilds * snapshot_ms(tenants) + (fetches - rebuilds) * CACHED_SNAPSHOT_MS)
        / 1000.0
        * USAGE_API_MEMORY_GB;
    money(fetches, p.lambda_invocation)
        + money(gb_seconds, p.lambda_gb_second)
        + money(rebuilds * snapshot_read_units(tenants), p.read_unit)
}

/// The naive design per 1,000,000 requests: one `SendMessage` per request, received and
/// deleted by the mapping 10 at a time, one invocation per 10 messages, one standard
/// (non-transactional) counter write of ≤ 1 KB per request. With exactly-once (a
/// transactional write of the counter and a dedupe marker) the writes cost 4 units.
pub fn naive_per_million(p: &Prices, exactly_once: bool) -> Decimal {
    let n = 1_000_000.0;
    let units = if exactly_once { 4.0 } else { 1.0 };
    // 10 ms per invocation of 10 messages.
    let gb_seconds = n / SQS_BATCH * 0.010 * INGEST_MEMORY_GB;
    money(n + 2.0 * n / SQS_BATCH, p.sqs_request)
        + money(n * units, p.write_unit)
        + money(n / SQS_BATCH, p.lambda_invocation)
        + money(gb_seconds, p.lambda_gb_second)
}

/// Rounds dollars for printing: 6 significant places below a cent, else cents and 4 more.
pub fn dollars(amount: Decimal) -> String {
    let rounded = amount.round_dp(6).normalize();
    format!("${rounded}")
}

/// `a / b` as a float, for ratios.
pub fn ratio(a: Decimal, b: Decimal) -> f64 {
    if b.is_zero() {
        return f64::INFINITY;
    }
    (a / b).to_f64().unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calibration() -> Calibration {
        Calibration {
            envelope_bytes: 150.0,
            row_bytes: 200.0,
            counter_kb: 1.0,
            journal_row_bytes: 70.0,
            read_share: 0.0,
            read_4kb: 1.0,
            ingest_ms_per_item: 0.0,
        }
    }

    #[test]
    fn the_naive_design_costs_about_a_dollar_ten_per_million() {
        let p = Prices::list();
        // 1M sends + 0.2M receives/deletes = 1.2M SQS requests = $0.48; 1M write units =
        // $0.625; 0.1M invocations = $0.02; 1,000 s × 0.5 GB of Lambda = 500 GB-s.
        let expected = dec!(0.48) + dec!(0.625) + dec!(0.02) + dec!(500) * dec!(0.0000133334);
        assert_eq!(naive_per_million(&p, false), expected);
        assert!(naive_per_million(&p, false) > dec!(1.1));
        assert!(naive_per_million(&p, false) < dec!(1.2));
        assert_eq!(
            naive_per_million(&p, true) - naive_per_million(&p, false),
            dec!(3) * dec!(0.625)
        );
    }

    #[test]
    fn active_tenants_saturate_at_the_tenant_count() {
        assert_eq!(active_tenants(100.0, 0.0), 0.0);
        assert!((active_tenants(1.0, 5.0) - 1.0).abs() < 1e-12);
        assert!((active_tenants(100.0, 1.0) - 1.0).abs() < 1e-9);
        assert!(active_tenants(100.0, 1_000.0) > 99.99);
    }

    #[test]
    fn a_message_wider_than_a_transaction_is_claimed_into_a_journal() {
        // 100 tenants all active in every 10 s flush: 300 hourly rows per message; 1
        // message/s over 10 gateways; no window, so one message per invocation.
        let s = Scenario {
            window_seconds: 0.0,
            ..Scenario::headline()
        };
        let v = volumes(&s, &calibration());
        assert!((v.messages - 1.0).abs() < 1e-9);
        // 1,000 requests over 100 tenants leave ≈ 0.004 of them idle in a flush.
        assert!((v.hourly_rows_per_message - 300.0).abs() < 0.02);
        // The claim, then 4 journal chunks of ≤ 99 counters (75 × 70 B: 6 KB each).
        assert!((v.transactions - 5.0).abs() < 1e-6);
        assert!((v.journal_items - 4.0).abs() < 1e-6);
        let claim = 2.0 * (1.0 + 4.0 * 6.0);
        let apply = 2.0 * (4.0 * 6.0 + 300.0);
        assert!((v.write_units - (claim + apply)).abs() < 0.05);
    }

    #[test]
    fn the_window_merges_an_invocations_messages_into_one_write_per_counter() {
        // The headline: 60 messages a minute, 300 counters, one claim of 60 markers and
        // 4 chunks; every counter is written once per minute, not once per message.
        let c = calibration();
        let w = writes_per_invocation(60.0, |_| 300.0, &c);
        assert_eq!(w.transactions, 5.0);
        assert_eq!(w.counters, 300.0);
        assert_eq!(w.write_units, 2.0 * (60.0 + 24.0) + 2.0 * (24.0 + 300.0));
        // 100 messages need 100 markers: two claims of 50, each writing the 300 counters.
        let w = writes_per_invocation(100.0, |_| 300.0, &c);
        assert_eq!((w.transactions, w.counters), (10.0, 600.0));
        let per_million = per_million(&Scenario::headline(), &c, &Prices::list());
        assert!(per_million.dynamodb_writes < dec!(0.009), "{per_million:?}");
    }

    #[test]
    fn the_snapshot_cache_bounds_rebuilds_whatever_the_fleet() {
        let p = Prices::list();
        let uncached = snapshot_polling_month(10.0, 100.0, 15.0, 0.0, &p);
        let cached = snapshot_polling_month(10.0, 100.0, 15.0, 5.0, &p);
        assert!(cached < uncached / dec!(2), "{cached} vs {uncached}");
        // One gateway polls less often than the max age: every poll rebuilds.
        assert_eq!(
            snapshot_polling_month(1.0, 100.0, 15.0, 5.0, &p),
            snapshot_polling_month(1.0, 100.0, 15.0, 0.0, &p)
        );
    }

    #[test]
    fn a_narrow_invocation_commits_markers_and_counters_together() {
        // 10 tenants × 3 meters = 30 rows per message; a 30 s window gathers 30 messages,
        // whose 30 markers and 30 merged counters commit in one transaction.
        let s = Scenario {
            tenants: 10.0,
            window_seconds: 30.0,
            ..Scenario::headline()
        };
        let v = volumes(&s, &calibration());
        assert!((v.messages_per_invocation - 30.0).abs() < 1e-9);
        // 30 markers + 30 counters fit one transaction: the claim is direct.
        assert!((v.transactions * 30.0 - 1.0).abs() < 1e-6);
        // Per second: 30 keys + 30 markers per 30 s = 2 items/s, 4 write units/s.
        assert!((v.write_units - 4.0).abs() < 1e-3);
        let none = volumes(
            &Scenario {
                window_seconds: 0.0,
                ..s
            },
            &calibration(),
        );
        assert!((none.write_units - 2.0 * 31.0).abs() < 1e-3);
    }

    #[test]
    fn the_idle_floor_adds_up_its_lines() {
        let p = Prices::list();
        let f = floor(&Deployment::idle(100.0, 3.0), &p);
        // 5 pollers × 2,628,000 s / 20 s = 657,000 empty receives = $0.2628.
        assert_eq!(f.esm_empty_receives, dec!(0.2628));
        assert_eq!(f.alarms, dec!(0.60));
        assert_eq!(f.custom_metrics, dec!(2.40));
        assert_eq!(f.secret, dec!(0.40));
        let sum: Decimal = f.lines().iter().map(|(_, d)| *d).sum();
        assert_eq!(sum, f.total());
    }
}
