//! Custom CloudWatch metric names: the one place they are defined. The dashboard and alarms in
//! template.yaml are checked against [`ALL`] by a test, both ways.

/// CloudWatch namespace of every custom metric.
pub const NAMESPACE: &str = "S3ApiFanout";
/// The only dimension: per-job dimensions would make unbounded custom metrics.
pub const DIMENSION_PIPELINE: &str = "Pipeline";

pub const API_CALLS: &str = "ApiCalls";
pub const API_LATENCY: &str = "ApiLatency";
pub const STATUS_2XX: &str = "Status2xx";
pub const STATUS_4XX: &str = "Status4xx";
pub const STATUS_5XX: &str = "Status5xx";
pub const STATUS_429: &str = "Status429";
pub const API_ERRORS: &str = "ApiErrors";
pub const RETRIES: &str = "Retries";
pub const RECORDS_SUCCEEDED: &str = "RecordsSucceeded";
pub const RECORDS_FAILED: &str = "RecordsFailed";
pub const RECORDS_REJECTED: &str = "RecordsRejected";
pub const RATE_LIMITER_WAIT: &str = "RateLimiterWait";
pub const TOKENS_LEASED: &str = "TokensLeased";
pub const CIRCUIT_BREAKER_OPENED: &str = "CircuitBreakerOpened";
pub const MANIFEST_DURATION: &str = "ManifestDuration";
pub const BYTES_READ: &str = "BytesRead";
pub const JOBS_FAILED: &str = "JobsFailed";
/// Requests to an OAuth2 token endpoint, and those that gave no token.
pub const AUTH_TOKEN_REQUESTS: &str = "AuthTokenRequests";
pub const AUTH_TOKEN_FAILURES: &str = "AuthTokenFailures";

pub const ALL: &[&str] = &[
    API_CALLS,
    API_LATENCY,
    STATUS_2XX,
    STATUS_4XX,
    STATUS_5XX,
    STATUS_429,
    API_ERRORS,
    RETRIES,
    RECORDS_SUCCEEDED,
    RECORDS_FAILED,
    RECORDS_REJECTED,
    RATE_LIMITER_WAIT,
    TOKENS_LEASED,
    CIRCUIT_BREAKER_OPENED,
    MANIFEST_DURATION,
    BYTES_READ,
    JOBS_FAILED,
    AUTH_TOKEN_REQUESTS,
    AUTH_TOKEN_FAILURES,
];

// ------------------------------------------------------------------------------ datums

use std::sync::Mutex;

use hdrhistogram::Histogram;

use crate::ledger::ManifestRecord;
use crate::ports::MetricsSink;

/// PutMetricData accepts at most 1000 datums per call.
pub const MAX_DATUMS_PER_CALL: usize = 1000;
/// ... and at most 150 values (with their counts) per datum.
pub const MAX_VALUES_PER_DATUM: usize = 150;
/// A call's payload is capped at 1 MB; in the query encoding a value and its count take about
/// 100 bytes, so this many values per call stays well below it.
pub const MAX_VALUES_PER_CALL: usize = 5000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
    Bytes,
}

/// One CloudWatch datum: a statistic set given as distinct values with how often each occurred
/// (PutMetricData's Values/Counts), so CloudWatch can compute percentiles from it.
#[derive(Clone, Debug, PartialEq)]
pub struct Datum {
    pub name: &'static str,
    pub unit: Unit,
    /// (name, value) pairs; empty for the all-pipelines aggregate.
    pub dimensions: Vec<(&'static str, String)>,
    pub values: Vec<f64>,
    pub counts: Vec<f64>,
}

/// Which dimension sets every metric is published with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DimensionSets {
    /// `[["Pipeline"], []]`: per pipeline and the all-pipelines aggregate, as template.yaml's
    /// dashboard and alarms read them.
    PipelineAndAggregate,
    /// `[["Pipeline"]]` only: for an emulator (ministack, moto) whose query without dimensions
    /// already sums every dimension set, so publishing the aggregate too would count everything
    /// twice.
    PipelineOnly,
}

/// Final outcomes of a manifest's API calls by status class (a call that got no response is in
/// none of them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatusTally {
    pub status_2xx: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
}

impl StatusTally {
    pub fn of(statuses: impl IntoIterator<Item = Option<u16>>) -> Self {
        let mut t = Self::default();
        for s in statuses {
            t.count(s);
        }
        t
    }

    /// Counts one more final outcome (None: no response).
    pub fn count(&mut self, status: Option<u16>) {
        match status {
            Some(200..=299) => self.status_2xx += 1,
            Some(400..=499) => self.status_4xx += 1,
            Some(500..=599) => self.status_5xx += 1,
            _ => {}
        }
    }
}

/// A point-in-time copy of the API client's counters (`fanout_client::ClientCounters`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CountersSnapshot {
    pub attempts: u64,
    pub retries: u64,
    pub status_429: u64,
    pub timeouts: u64,
    pub breaker_opened: u64,
    pub breaker_rejected: u64,
    pub budget_exhausted: u64,
    pub concurrency_limit: u64,
    pub token_wait_micros: u64,
    pub auth_token_requests: u64,
    pub auth_token_failures: u64,
}

/// What the container's cumulative counters moved by while one manifest was processed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterDeltas {
    pub client: CountersSnapshot,
    pub tokens_leased: u64,
}

impl CounterDeltas {
    /// `now - before`, field by field (the gauge `concurrency_limit` is taken as it is now).
    pub fn between(before: &CounterDeltas, now: &CounterDeltas) -> Self {
        let (b, n) = (&before.client, &now.client);
        let d = |now: u64, before: u64| now.saturating_sub(before);
        CounterDeltas {
            client: CountersSnapshot {
                attempts: d(n.attempts, b.attempts),
                retries: d(n.retries, b.retries),
                status_429: d(n.status_429, b.status_429),
                timeouts: d(n.timeouts, b.timeouts),
                breaker_opened: d(n.breaker_opened, b.breaker_opened),
                breaker_rejected: d(n.breaker_rejected, b.breaker_rejected),
                budget_exhausted: d(n.budget_exhausted, b.budget_exhausted),
                concurrency_limit: n.concurrency_limit,
                token_wait_micros: d(n.token_wait_micros, b.token_wait_micros),
                auth_token_requests: d(n.auth_token_requests, b.auth_token_requests),
                auth_token_failures: d(n.auth_token_failures, b.auth_token_failures),
            },
            tokens_leased: d(now.tokens_leased, before.tokens_leased),
        }
    }
}

/// Everything one manifest contributes to the metrics.
#[derive(Clone, Debug)]
pub struct ManifestMetrics<'a> {
    pub pipeline: &'a str,
    pub record: &'a ManifestRecord,
    /// False when the ledger had already counted this manifest (a redelivery): its record counts
    /// are left out so the metrics add up to the summary; the API calls it made are real and stay.
    pub newly_recorded: bool,
    /// The manifest's API latency histogram, in microseconds.
    pub latency_us: &'a Histogram<u64>,
    pub statuses: StatusTally,
    pub deltas: CounterDeltas,
}

/// Latency values sent to CloudWatch per decade: every latency goes out as the nearest of
/// 10^(k/120) ms (steps of 1.9%, so within 1% of its measured value; 1, 10, 100 ms... exactly).
///
/// Why not the histogram's own 3 significant digits: a manifest with latencies spread over
/// 20-80 ms then carries ~600 values, and a CloudWatch datum holds at most 150 (`Values`), so
/// one manifest's latency would take four datums, and its PutMetricData four times the payload
/// that CloudWatch (or the local emulator, in Python) must parse. At these steps the same spread
/// is ~72 values, one datum; no dashboard or alarm reads a percentile to within 1%.
const LATENCY_VALUES_PER_DECADE: f64 = 120.0;

/// The value a latency of `ms` milliseconds is sent as (see [`LATENCY_VALUES_PER_DECADE`]).
pub fn latency_value_ms(ms: f64) -> f64 {
    if ms <= 0.0 {
        return 0.0;
    }
    let step = (ms.log10() * LATENCY_VALUES_PER_DECADE).round();
    round_sig(10f64.powf(step / LATENCY_VALUES_PER_DECADE), 5)
}

/// A latency histogram (µs) as distinct millisecond values and their counts, each value within 1%
/// of the latencies it stands for (see [`LATENCY_VALUES_PER_DECADE`]), in ascending order.
pub fn histogram_values_ms(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    for v in h.iter_recorded() {
        let ms = latency_value_ms(h.median_equivalent(v.value_iterated_to()) as f64 / 1000.0);
        match out.last_mut() {
            Some((last, count)) if *last == ms => *count += v.count_at_value() as f64,
            _ => out.push((ms, v.count_at_value() as f64)),
        }
    }
    out
}

fn round_sig(x: f64, digits: i32) -> f64 {
    if x == 0.0 {
        return 0.0;
    }
    let scale = 10f64.powi(digits - 1 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

/// A metric's name, unit and (value, count) pairs.
type Series = (&'static str, Unit, Vec<(f64, f64)>);

/// The datums of one manifest, each once per dimension set. Pure: no clock, no I/O.
pub fn manifest_datums(m: &ManifestMetrics<'_>, sets: DimensionSets) -> Vec<Datum> {
    let c = &m.deltas.client;
    let counts = &m.record.counts;
    let mut series: Vec<Series> = vec![
        (API_CALLS, Unit::Count, vec![(c.attempts as f64, 1.0)]),
        (RETRIES, Unit::Count, vec![(c.retries as f64, 1.0)]),
        (STATUS_429, Unit::Count, vec![(c.status_429 as f64, 1.0)]),
        (
            STATUS_2XX,
            Unit::Count,
            vec![(m.statuses.status_2xx as f64, 1.0)],
        ),
        (
            STATUS_4XX,
            Unit::Count,
            vec![(m.statuses.status_4xx as f64, 1.0)],
        ),
        (
            STATUS_5XX,
            Unit::Count,
            vec![(m.statuses.status_5xx as f64, 1.0)],
        ),
        // Calls that failed after all their attempts: one per failed record.
        (API_ERRORS, Unit::Count, vec![(counts.failed as f64, 1.0)]),
        (
            CIRCUIT_BREAKER_OPENED,
            Unit::Count,
            vec![(c.breaker_opened as f64, 1.0)],
        ),
        (
            TOKENS_LEASED,
            Unit::Count,
            vec![(m.deltas.tokens_leased as f64, 1.0)],
        ),
        (
            AUTH_TOKEN_REQUESTS,
            Unit::Count,
            vec![(c.auth_token_requests as f64, 1.0)],
        ),
        (
            AUTH_TOKEN_FAILURES,
            Unit::Count,
            vec![(c.auth_token_failures as f64, 1.0)],
        ),
        (
            MANIFEST_DURATION,
            Unit::Milliseconds,
            vec![(m.record.duration_ms as f64, 1.0)],
        ),
    ];
    if m.newly_recorded {
        series.extend([
            (
                RECORDS_SUCCEEDED,
                Unit::Count,
                vec![(counts.succeeded as f64, 1.0)],
            ),
            (
                RECORDS_FAILED,
                Unit::Count,
                vec![(counts.failed as f64, 1.0)],
            ),
            (
                RECORDS_REJECTED,
                Unit::Count,
                vec![(counts.rejected as f64, 1.0)],
            ),
            (
                BYTES_READ,
                Unit::Bytes,
                vec![(counts.bytes_read as f64, 1.0)],
            ),
        ]);
    }
    let latency = histogram_values_ms(m.latency_us);
    if !latency.is_empty() {
        series.push((API_LATENCY, Unit::Milliseconds, latency));
    }
    // The counters hold only the total wait, so each attempt is given the manifest's mean wait:
    // the Sum is exact, and percentiles are over manifests' means weighted by their attempts.
    if c.attempts > 0 {
        let mean_ms = c.token_wait_micros as f64 / 1000.0 / c.attempts as f64;
        series.push((
            RATE_LIMITER_WAIT,
            Unit::Milliseconds,
            vec![(round_sig(mean_ms, 3), c.attempts as f64)],
        ));
    }

    expand(m.pipeline, sets, &series)
}

/// A job that ended FAILED (a config the splitter refused, or a failure tolerance exceeded):
/// one `JobsFailed` count, which the job-failed alarm watches.
pub fn job_failed_datums(pipeline: &str, sets: DimensionSets) -> Vec<Datum> {
    expand(
        pipeline,
        sets,
        &[(JOBS_FAILED, Unit::Count, vec![(1.0, 1.0)])],
    )
}

/// Every series as datums of each dimension set, values cut to the per-datum limit.
fn expand(pipeline: &str, sets: DimensionSets, series: &[Series]) -> Vec<Datum> {
    let mut dimension_sets = vec![vec![(DIMENSION_PIPELINE, pipeline.to_string())]];
    if sets == DimensionSets::PipelineAndAggregate {
        dimension_sets.push(Vec::new());
    }
    let mut datums = Vec::new();
    for dimensions in &dimension_sets {
        for (name, unit, pairs) in series {
            for chunk in pairs.chunks(MAX_VALUES_PER_DATUM) {
                datums.push(Datum {
                    name,
                    unit: *unit,
                    dimensions: dimensions.clone(),
                    values: chunk.iter().map(|(v, _)| *v).collect(),
                    counts: chunk.iter().map(|(_, n)| *n).collect(),
                });
            }
        }
    }
    datums
}

/// Publishes job-level metrics (today: a job that failed), from the splitter or a worker.
#[derive(Clone)]
pub struct JobMetrics {
    sink: std::sync::Arc<dyn MetricsSink>,
    sets: DimensionSets,
}

impl JobMetrics {
    pub fn new(sink: std::sync::Arc<dyn MetricsSink>, sets: DimensionSets) -> Self {
        Self { sink, sets }
    }

    /// The same publisher with other dimension sets.
    pub fn with_dimension_sets(&self, sets: DimensionSets) -> Self {
        Self::new(self.sink.clone(), sets)
    }

    /// Counts a job that just became FAILED. Never fails the caller: the job's status is in the
    /// ledger whatever happens here; a publishing error is logged.
    pub async fn job_failed(&self, job_id: &str, pipeline: &str) {
        let datums = job_failed_datums(pipeline, self.sets);
        if let Err(e) = self.sink.publish(NAMESPACE, &datums).await {
            tracing::warn!(
                job_id,
                error = format!("{e:#}"),
                "publishing JobsFailed failed"
            );
        }
    }
}

/// Datums cut into PutMetricData calls: at most [`MAX_DATUMS_PER_CALL`] datums and
/// [`MAX_VALUES_PER_CALL`] values each.
pub fn calls(datums: &[Datum]) -> Vec<&[Datum]> {
    let mut out = Vec::new();
    let (mut start, mut values) = (0, 0);
    for (i, d) in datums.iter().enumerate() {
        let full =
            i - start == MAX_DATUMS_PER_CALL || values + d.values.len() > MAX_VALUES_PER_CALL;
        if full && i > start {
            out.push(&datums[start..i]);
            start = i;
            values = 0;
        }
        values += d.values.len();
    }
    if start < datums.len() {
        out.push(&datums[start..]);
    }
    out
}

// ------------------------------------------------------------------------------ the worker's side

/// Reads a container's cumulative counters (the API client's, the tokens its limiter leased).
pub type CounterReader = std::sync::Arc<dyn Fn() -> CounterDeltas + Send + Sync>;

/// A reader of counters that never move (a container without an API client stack).
pub fn no_counters() -> CounterReader {
    std::sync::Arc::new(CounterDeltas::default)
}

/// A worker container's metrics: turns each finished manifest and what the container's counters
/// moved by meanwhile into one publication. The counters are cumulative per container, so the
/// last values published are kept to send deltas.
pub struct WorkerMetrics {
    sink: std::sync::Arc<dyn MetricsSink>,
    sets: DimensionSets,
    counters: CounterReader,
    published: Mutex<CounterDeltas>,
}

impl WorkerMetrics {
    pub fn new(
        sink: std::sync::Arc<dyn MetricsSink>,
        sets: DimensionSets,
        counters: CounterReader,
    ) -> Self {
        Self {
            sink,
            sets,
            counters,
            published: Mutex::default(),
        }
    }

    /// Job-level metrics through the same sink and dimension sets.
    pub fn jobs(&self) -> JobMetrics {
        JobMetrics::new(self.sink.clone(), self.sets)
    }

    /// The same metrics published with other dimension sets.
    pub fn with_dimension_sets(&self, sets: DimensionSets) -> Self {
        Self::new(self.sink.clone(), sets, self.counters.clone())
    }

    fn current(&self) -> CounterDeltas {
        (self.counters)()
    }

    /// Publishes one manifest's metrics. Never fails the manifest: a failure is logged, and the
    /// counters' deltas are not carried over (they were taken), so nothing is counted twice.
    pub async fn publish(
        &self,
        pipeline: &str,
        record: &ManifestRecord,
        newly_recorded: bool,
        latency_us: &Histogram<u64>,
        statuses: StatusTally,
    ) {
        let deltas = {
            let now = self.current();
            let mut published = self.published.lock().expect("metrics lock");
            let deltas = CounterDeltas::between(&published, &now);
            *published = now;
            deltas
        };
        let datums = manifest_datums(
            &ManifestMetrics {
                pipeline,
                record,
                newly_recorded,
                latency_us,
                statuses,
                deltas,
            },
            self.sets,
        );
        if let Err(e) = self.sink.publish(NAMESPACE, &datums).await {
            tracing::warn!(job_id = %record.job_id, seq = record.seq, error = format!("{e:#}"), "publishing metrics failed; the manifest is done regardless");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency;
    use crate::ledger::Counts;

    fn record() -> ManifestRecord {
        ManifestRecord {
            quote: None,
            job_id: "job".into(),
            seq: 3,
            counts: Counts {
                records: 10,
                succeeded: 7,
                failed: 2,
                rejected: 1,
                blank_lines: 4,
                bytes_read: 4096,
            },
            duration_ms: 1234,
            latency_histogram: Vec::new(),
            part: 0,
            continued_at: None,
        }
    }

    fn deltas() -> CounterDeltas {
        CounterDeltas {
            client: CountersSnapshot {
                attempts: 12,
                retries: 3,
                status_429: 2,
                breaker_opened: 1,
                token_wait_micros: 24_000,
                auth_token_requests: 3,
                auth_token_failures: 2,
                ..Default::default()
            },
            tokens_leased: 50,
        }
    }

    fn find<'a>(datums: &'a [Datum], name: &str, aggregate: bool) -> &'a Datum {
        let matching: Vec<&Datum> = datums
            .iter()
            .filter(|d| d.name == name && d.dimensions.is_empty() == aggregate)
            .collect();
        assert_eq!(matching.len(), 1, "{name} aggregate={aggregate}");
        matching[0]
    }

    fn sum(d: &Datum) -> f64 {
        d.values.iter().zip(&d.counts).map(|(v, c)| v * c).sum()
    }

    #[test]
    fn a_manifest_becomes_one_datum_per_metric_and_dimension_set() {
        let mut h = latency::new_histogram();
        for ms in [10u64, 10, 20, 30, 30, 30, 400, 400, 5] {
            h.record(ms * 1000).unwrap();
        }
        let record = record();
        let m = ManifestMetrics {
            pipeline: "users",
            record: &record,
            newly_recorded: true,
            latency_us: &h,
            statuses: StatusTally::of([Some(200); 7].into_iter().chain([Some(503), None])),
            deltas: deltas(),
        };
        let datums = manifest_datums(&m, DimensionSets::PipelineAndAggregate);
        // Every metric the worker emits, per pipeline and as the aggregate.
        let names: std::collections::BTreeSet<&str> = datums.iter().map(|d| d.name).collect();
        // JobsFailed is the job's, not a manifest's: job_failed_datums emits it.
        let expected: std::collections::BTreeSet<&str> =
            ALL.iter().copied().filter(|n| *n != JOBS_FAILED).collect();
        assert_eq!(names, expected);
        assert_eq!(datums.len(), 2 * expected.len());
        for aggregate in [false, true] {
            let get = |n| sum(find(&datums, n, aggregate));
            assert_eq!(get(API_CALLS), 12.0);
            assert_eq!(get(RETRIES), 3.0);
            assert_eq!(get(STATUS_429), 2.0);
            assert_eq!(get(STATUS_2XX), 7.0);
            assert_eq!(get(STATUS_4XX), 0.0);
            assert_eq!(get(STATUS_5XX), 1.0);
            assert_eq!(get(API_ERRORS), 2.0);
            assert_eq!(get(RECORDS_SUCCEEDED), 7.0);
            assert_eq!(get(RECORDS_FAILED), 2.0);
            assert_eq!(get(RECORDS_REJECTED), 1.0);
            assert_eq!(get(BYTES_READ), 4096.0);
            assert_eq!(get(TOKENS_LEASED), 50.0);
            assert_eq!(get(CIRCUIT_BREAKER_OPENED), 1.0);
            assert_eq!(get(AUTH_TOKEN_REQUESTS), 3.0);
            assert_eq!(get(AUTH_TOKEN_FAILURES), 2.0);
            assert_eq!(get(MANIFEST_DURATION), 1234.0);
            // 24 ms of waiting over 12 attempts: 2 ms each, summing to the total.
            let wait = find(&datums, RATE_LIMITER_WAIT, aggregate);
            assert_eq!(
                (wait.values.clone(), wait.counts.clone()),
                (vec![2.0], vec![12.0])
            );
        }
        let lat = find(&datums, API_LATENCY, false);
        assert_eq!(lat.values.len(), 5, "{:?}", lat.values);
        for (sent, ms) in lat.values.iter().zip([5.0, 10.0, 20.0, 30.0, 400.0]) {
            assert!((sent - ms).abs() <= 0.01 * ms, "{ms} ms sent as {sent}");
        }
        assert_eq!(lat.values[1], 10.0, "decades are values of their own");
        assert_eq!(lat.counts, vec![1.0, 2.0, 1.0, 3.0, 2.0]);
        assert_eq!(lat.unit, Unit::Milliseconds);
        assert_eq!(
            find(&datums, API_CALLS, false).dimensions,
            vec![(DIMENSION_PIPELINE, "users".to_string())]
        );
    }

    #[test]
    fn a_redelivered_manifest_adds_no_records_but_its_calls() {
        let h = latency::new_histogram();
        let record = record();
        let m = ManifestMetrics {
            pipeline: "users",
            record: &record,
            newly_recorded: false,
            latency_us: &h,
            statuses: StatusTally::default(),
            deltas: CounterDeltas::default(),
        };
        let datums = manifest_datums(&m, DimensionSets::PipelineOnly);
        assert!(datums.iter().all(|d| !d.dimensions.is_empty()));
        for gone in [
            RECORDS_SUCCEEDED,
            RECORDS_FAILED,
            RECORDS_REJECTED,
            BYTES_READ,
        ] {
            assert!(datums.iter().all(|d| d.name != gone), "{gone}");
        }
        // No calls: no latency and no wait datum (CloudWatch rejects empty Values).
        assert!(
            datums
                .iter()
                .all(|d| d.name != API_LATENCY && d.name != RATE_LIMITER_WAIT)
        );
        assert!(datums.iter().any(|d| d.name == API_CALLS));
    }

    #[test]
    fn wide_histograms_are_split_into_datums_of_150_values() {
        let mut h = latency::new_histogram();
        for ms in 1..=60_000u64 {
            h.record(ms * 1000).unwrap();
        }
        let values = histogram_values_ms(&h);
        let n = values.len();
        assert!(n > 300 && n < 600, "{n} values from 1 ms to 60 s");
        let record = record();
        let m = ManifestMetrics {
            pipeline: "p",
            record: &record,
            newly_recorded: true,
            latency_us: &h,
            statuses: StatusTally::default(),
            deltas: deltas(),
        };
        let datums = manifest_datums(&m, DimensionSets::PipelineOnly);
        let lat: Vec<&Datum> = datums.iter().filter(|d| d.name == API_LATENCY).collect();
        let sizes: Vec<usize> = lat.iter().map(|d| d.values.len()).collect();
        assert_eq!(sizes.len(), n.div_ceil(150));
        assert!(
            sizes[..sizes.len() - 1].iter().all(|&s| s == 150),
            "{sizes:?}"
        );
        assert_eq!(sizes.iter().sum::<usize>(), n);
        let sent: f64 = lat.iter().flat_map(|d| d.counts.iter()).sum();
        assert_eq!(sent, 60_000.0, "every call is counted once");
    }

    #[test]
    fn latencies_spread_over_20_to_80_ms_fit_one_datum() {
        let mut h = latency::new_histogram();
        for us in (20_000..=80_000u64).step_by(7) {
            h.record(us).unwrap();
        }
        let values = histogram_values_ms(&h);
        assert!(
            values.len() <= MAX_VALUES_PER_DATUM,
            "{} values",
            values.len()
        );
        assert!(
            values.windows(2).all(|w| w[0].0 < w[1].0),
            "ascending and distinct"
        );
        let calls: f64 = values.iter().map(|(_, c)| c).sum();
        assert_eq!(calls, h.len() as f64);
    }

    proptest::proptest! {
        #[test]
        fn a_latency_is_sent_within_one_percent(us in 1u64..600_000_000) {
            let ms = us as f64 / 1000.0;
            let sent = latency_value_ms(ms);
            proptest::prop_assert!((sent - ms).abs() <= 0.01 * ms, "{ms} ms sent as {sent}");
        }
    }

    #[test]
    fn calls_hold_at_most_1000_datums_and_the_value_budget() {
        let datum = |n: usize| Datum {
            name: API_CALLS,
            unit: Unit::Count,
            dimensions: Vec::new(),
            values: vec![1.0; n],
            counts: vec![1.0; n],
        };
        let many: Vec<Datum> = (0..2500).map(|_| datum(1)).collect();
        let sizes: Vec<usize> = calls(&many).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![1000, 1000, 500]);
        let wide: Vec<Datum> = (0..100).map(|_| datum(150)).collect();
        let split = calls(&wide);
        assert!(
            split
                .iter()
                .all(|c| c.iter().map(|d| d.values.len()).sum::<usize>() <= MAX_VALUES_PER_CALL)
        );
        assert_eq!(split.iter().map(|c| c.len()).sum::<usize>(), 100);
        assert!(calls(&[]).is_empty());
    }

    #[test]
    fn deltas_subtract_cumulative_counters() {
        let before = deltas();
        let mut now = deltas();
        now.client.attempts += 5;
        now.client.concurrency_limit = 9;
        now.tokens_leased += 7;
        let d = CounterDeltas::between(&before, &now);
        assert_eq!(d.client.attempts, 5);
        assert_eq!(d.client.retries, 0);
        assert_eq!(d.client.concurrency_limit, 9);
        assert_eq!(d.tokens_leased, 7);
    }

    /// Remembers what it was given; fails when told to.
    #[derive(Default)]
    struct TestSink {
        fail: std::sync::atomic::AtomicBool,
        published: Mutex<Vec<Vec<Datum>>>,
    }

    #[async_trait::async_trait]
    impl MetricsSink for TestSink {
        async fn publish(&self, namespace: &str, datums: &[Datum]) -> anyhow::Result<()> {
            assert_eq!(namespace, NAMESPACE);
            if self.fail.load(std::sync::atomic::Ordering::Relaxed) {
                anyhow::bail!("CloudWatch is down");
            }
            self.published.lock().unwrap().push(datums.to_vec());
            Ok(())
        }
    }

    /// The container's counters are cumulative: each publication sends what they moved by since
    /// the previous one, and a failed publication neither fails the caller nor resends later.
    #[tokio::test]
    async fn publications_send_counter_deltas_and_survive_a_failing_sink() {
        let sink = std::sync::Arc::new(TestSink::default());
        let counters = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let reader = counters.clone();
        let metrics = WorkerMetrics::new(
            sink.clone(),
            DimensionSets::PipelineOnly,
            std::sync::Arc::new(move || CounterDeltas {
                client: CountersSnapshot {
                    attempts: reader.load(std::sync::atomic::Ordering::Relaxed),
                    ..Default::default()
                },
                tokens_leased: 0,
            }),
        );
        let h = latency::new_histogram();
        let record = record();
        let calls = |datums: &[Datum]| sum(find(datums, API_CALLS, false));
        counters.fetch_add(5, std::sync::atomic::Ordering::Relaxed);
        metrics
            .publish("p", &record, true, &h, StatusTally::default())
            .await;
        counters.fetch_add(3, std::sync::atomic::Ordering::Relaxed);
        sink.fail.store(true, std::sync::atomic::Ordering::Relaxed);
        metrics
            .publish("p", &record, true, &h, StatusTally::default())
            .await;
        sink.fail.store(false, std::sync::atomic::Ordering::Relaxed);
        counters.fetch_add(2, std::sync::atomic::Ordering::Relaxed);
        metrics
            .publish("p", &record, true, &h, StatusTally::default())
            .await;
        let published = sink.published.lock().unwrap();
        assert_eq!(published.len(), 2);
        assert_eq!(calls(&published[0]), 5.0);
        assert_eq!(calls(&published[1]), 2.0);
    }

    #[test]
    fn status_classes() {
        let t = StatusTally::of([Some(201), Some(404), Some(429), Some(500), None, Some(302)]);
        assert_eq!((t.status_2xx, t.status_4xx, t.status_5xx), (1, 2, 1));
    }

    #[test]
    fn a_failed_job_is_one_count_per_pipeline_and_in_the_aggregate() {
        let datums = job_failed_datums("orders", DimensionSets::PipelineAndAggregate);
        assert_eq!(datums.len(), 2);
        for d in &datums {
            assert_eq!((d.name, d.unit), (JOBS_FAILED, Unit::Count));
            assert_eq!(
                (d.values.as_slice(), d.counts.as_slice()),
                (&[1.0][..], &[1.0][..])
            );
        }
        assert_eq!(
            datums[0].dimensions,
            vec![(DIMENSION_PIPELINE, "orders".to_string())]
        );
        assert!(datums[1].dimensions.is_empty());
        let local = job_failed_datums("orders", DimensionSets::PipelineOnly);
        assert_eq!(local.len(), 1);
        assert_eq!(local[0].dimensions.len(), 1);
    }
}
