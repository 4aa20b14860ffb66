//! `fanout plan`: how a job will run on a deployed stack, and what it will cost, before it runs.
//!
//! The model is the pipeline's own arithmetic, not a curve fitted to runs:
//! * the object is cut into manifests of `chunk_bytes` (the splitter's plan);
//! * one worker container serves at most `concurrency / latency` calls per second (Little's law
//!   for its in-flight limit), and at most `vCPU / cpu_per_record` records per second, where a
//!   Lambda function gets one vCPU per 1,769 MB of memory;
//! * the fleet (at most the reserved concurrency, and never more containers than manifests in
//!   flight) shares the fleet-wide rate limit, so while enough containers work the job runs at the
//!   limit, and in the tail, when fewer manifests are left than it takes to reach the limit, at
//!   what the remaining containers can do. [`simulate`] plays this out manifest by manifest;
//! * the AWS requests follow from what the code does per job, per manifest and per lease
//!   ([`Requests`], each line says where it comes from), and the prices from a table kept in the
//!   repo with its date and sources (`cli/pricing/us-east-1.json`).

use serde::{Deserialize, Serialize};

/// The pricing table `fanout plan` uses unless given another.
pub const US_EAST_1: &str = include_str!("../pricing/us-east-1.json");

/// Lambda gives a function one vCPU per this many MB of memory.
const MB_PER_VCPU: f64 = 1769.0;

/// Conditional writes per rate-limit lease: one per lease, plus the probes of windows that other
/// containers filled first. Measured by `make bench-limit` (13.5 to 14.1 writes per 1,000 calls
/// at leases of 100 tokens, docs/rate-limit.md).
pub const WRITES_PER_LEASE: f64 = 1.4;

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Pricing {
    pub region: String,
    pub as_of: String,
    pub note: String,
    pub sources: std::collections::BTreeMap<String, String>,
    pub lambda_gb_second_arm64: f64,
    pub lambda_request: f64,
    pub sqs_request: f64,
    pub dynamodb_write_request_unit: f64,
    pub dynamodb_read_request_unit: f64,
    pub s3_put_request: f64,
    pub s3_get_request: f64,
    pub s3_standard_gb_month: f64,
    pub cloudwatch_put_metric_data_request: f64,
    pub cloudwatch_custom_metric_month: f64,
    pub glue_dpu_hour: f64,
    pub glue_minimum_seconds: f64,
    pub glue_default_dpus: f64,
}

impl Pricing {
    pub fn parse(json: &str) -> anyhow::Result<Self> {
        Ok(serde_json::from_str(json)?)
    }
}

/// What the planner is told about the job and the stack.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlanInput {
    pub records: u64,
    /// The input's size (records × their mean size when only a count is known).
    pub bytes: u64,
    /// The fleet-wide limit (requests per second); None: no limit.
    pub rate_per_sec: Option<f64>,
    /// The API's mean latency.
    pub latency_ms: f64,
    /// Attempts per call (1, plus the retries expected).
    pub attempts_per_call: f64,
    /// Records each API call carries (`batch.size`; 1 without batch calls).
    pub records_per_call: u32,
    /// The rate limit counts records, not calls (`client.rate_limit_counts: records`).
    pub limit_counts_records: bool,
    pub worker_memory_mb: u32,
    /// Manifests per worker invocation (the event source mapping's batch size).
    pub batch_size: u32,
    /// Requests in flight per container (`client.concurrency`).
    pub concurrency: u32,
    /// The worker's reserved concurrency: at most this many containers.
    pub reserved_concurrency: u32,
    pub chunk_bytes: u64,
    /// CPU per record in a worker (parse, render, call, write, ledger).
    pub cpu_us_per_record: f64,
    /// Bytes stored per record in results/ (the result line).
    pub result_bytes: u64,
    /// Time before the first call: S3 event delivery, the split, the first invocations.
    pub start_secs: f64,
    /// Pipelines whose metrics the job publishes (each metric is one custom metric per
    /// dimension set).
    pub metric_dimension_sets: u32,
}

/// The job as the model runs it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    pub manifests: u64,
    pub records_per_manifest: f64,
    /// Calls per second one container can make (its in-flight limit over the latency, or its CPU).
    pub container_calls_per_sec: f64,
    /// Records per second one container can work (its calls per second × records per call).
    pub container_records_per_sec: f64,
    /// What bounds one container: "in-flight limit" or "CPU".
    pub container_bound: &'static str,
    /// Containers it takes to reach the rate limit (None without a limit).
    pub containers_for_the_limit: Option<u64>,
    /// Containers that work at once: the event source mapping scales the worker out while
    /// manifests wait, up to the reserved concurrency, whether or not the limit needs them all.
    pub containers: u64,
    /// Calls per second while every container works.
    pub steady_calls_per_sec: f64,
    /// What bounds the job: "rate limit", "reserved concurrency", or "manifests".
    pub job_bound: &'static str,
    pub duration_secs: f64,
    /// Seconds the job could not be shorter than at the limit (tokens / rate: calls, or records
    /// when the limit counts records).
    pub floor_secs: Option<f64>,
    pub worker_busy_secs: f64,
    pub requests: Requests,
    pub cost: Cost,
}

/// AWS requests of the job, by service.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Requests {
    pub api_calls: f64,
    /// One splitter invocation, and one worker invocation per batch of manifests.
    pub lambda_invocations: f64,
    /// Splitter: SendMessageBatch of 10 manifests. Event source mapping: a receive and a delete
    /// per batch, and the long polls of its (at least 5) pollers, about one per poller per 20 s.
    pub sqs_requests: f64,
    /// Rate-limit leases ([`WRITES_PER_LEASE`] per lease), and per manifest its claim, its record
    /// (a transaction of two items: 2 × 2 units) and the claim's completion; per job its creation,
    /// start and completion.
    pub dynamodb_write_units: f64,
    /// Of those, the rate limit's: its leases' conditional writes.
    pub lease_writes: f64,
    /// The shared breaker state, read once per second by each container (strongly consistent),
    /// and the job record read per manifest.
    pub dynamodb_read_units: f64,
    /// Per manifest its ranged read, plus the splitter's config, head-of-file and summary reads.
    pub s3_get_requests: f64,
    /// Per manifest its results part (failed/ and rejected/ parts only when there are any), plus
    /// the summary.
    pub s3_put_requests: f64,
    pub s3_stored_bytes: f64,
    /// One PutMetricData per manifest.
    pub cloudwatch_put_metric_data: f64,
}

/// Dollars, by item.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cost {
    pub lambda_compute: f64,
    pub lambda_requests: f64,
    pub sqs: f64,
    pub dynamodb: f64,
    pub s3_requests: f64,
    /// The results kept for a month.
    pub s3_storage_month: f64,
    pub cloudwatch: f64,
    pub total: f64,
    /// The same job as an AWS Glue job of the default 10 DPU for as long as the limit allows
    /// (at least Glue's 1-minute minimum).
    pub glue_default: f64,
    pub glue_seconds: f64,
}

/// Custom metrics a worker publishes (shared/core/src/metrics.rs `ALL`), per dimension set.
const CUSTOM_METRICS: f64 = fanout_core::metrics::ALL.len() as f64;

pub fn plan(input: &PlanInput, pricing: &Pricing) -> anyhow::Result<Plan> {
    anyhow::ensure!(input.records > 0, "records: must be at least 1");
    anyhow::ensure!(input.chunk_bytes > 0, "chunk_bytes: must be at least 1");
    anyhow::ensure!(input.latency_ms > 0.0, "latency: must be positive");
    anyhow::ensure!(
        input.reserved_concurrency > 0 && input.concurrency > 0 && input.batch_size > 0,
        "concurrency, reserved concurrency and batch size must be at least 1"
    );
    if let Some(r) = input.rate_per_sec {
        anyhow::ensure!(r > 0.0, "rate: must be positive");
    }
    anyhow::ensure!(
        input.records_per_call > 0,
        "records per call (batch size): must be at least 1"
    );
    let manifests = input.bytes.div_ceil(input.chunk_bytes).max(1);
    let records_per_manifest = input.records as f64 / manifests as f64;
    let per_call = f64::from(input.records_per_call);
    // Each manifest closes its own last batch (a partial one): calls are counted per manifest.
    let calls_per_manifest = if input.records_per_call == 1 {
        records_per_manifest
    } else {
        (records_per_manifest / per_call).ceil()
    };
    let calls = if input.records_per_call == 1 {
        input.records as f64
    } else {
        calls_per_manifest * manifests as f64
    } * input.attempts_per_call;
    // What one call takes from the limit, and so the limit in calls per second.
    let tokens_per_call = if input.limit_counts_records {
        records_per_manifest / calls_per_manifest
    } else {
        1.0
    };
    let rate_calls = input.rate_per_sec.map(|r| r / tokens_per_call);

    let by_inflight = f64::from(input.concurrency) / (input.latency_ms / 1000.0);
    let vcpu = f64::from(input.worker_memory_mb) / MB_PER_VCPU;
    // A record costs its CPU once, however many calls it takes, and a call carries `per_call`.
    let by_cpu = vcpu / (input.cpu_us_per_record / 1e6) / per_call * input.attempts_per_call;
    let (container_calls_per_sec, container_bound) = if by_cpu < by_inflight {
        (by_cpu, "CPU")
    } else {
        (by_inflight, "in-flight limit")
    };
    let containers_for_the_limit = rate_calls.map(|r| (r / container_calls_per_sec).ceil() as u64);
    let containers = u64::from(input.reserved_concurrency).min(manifests).max(1);
    let fleet = containers as f64 * container_calls_per_sec;
    let steady_calls_per_sec = rate_calls.map_or(fleet, |r| r.min(fleet));
    let job_bound = match rate_calls {
        Some(r) if fleet >= r => "rate limit",
        _ if containers == manifests && manifests < u64::from(input.reserved_concurrency) => {
            "manifests"
        }
        _ => "reserved concurrency",
    };

    let run = simulate(
        manifests,
        calls,
        containers,
        container_calls_per_sec,
        rate_calls,
    );
    let duration_secs = input.start_secs + run.seconds;

    let m = manifests as f64;
    let lease_writes = if input.rate_per_sec.is_some() {
        // Leases are of tokens: records when the limit counts them.
        let lease = fanout_client::limiter::lease_size(
            steady_calls_per_sec * tokens_per_call,
            containers as u32,
            std::time::Duration::from_secs(1),
        ) as f64;
        calls * tokens_per_call / lease * WRITES_PER_LEASE
    } else {
        0.0
    };
    let invocations = (m / f64::from(input.batch_size)).ceil();
    let requests = Requests {
        api_calls: calls,
        lambda_invocations: 1.0 + invocations,
        sqs_requests: (m / 10.0).ceil() + 2.0 * invocations + 5.0 * (duration_secs / 20.0).ceil(),
        dynamodb_write_units: lease_writes + m * (1.0 + 4.0 + 1.0) + 3.0,
        lease_writes,
        dynamodb_read_units: run.busy_container_secs + m,
        s3_get_requests: m + 3.0,
        s3_put_requests: m + 1.0,
        s3_stored_bytes: input.records as f64 * input.result_bytes as f64,
        cloudwatch_put_metric_data: m,
    };
    let gb = f64::from(input.worker_memory_mb) / 1024.0;
    let lambda_compute = run.busy_container_secs * gb * pricing.lambda_gb_second_arm64;
    let lambda_requests = requests.lambda_invocations * pricing.lambda_request;
    let sqs = requests.sqs_requests * pricing.sqs_request;
    let dynamodb = requests.dynamodb_write_units * pricing.dynamodb_write_request_unit
        + requests.dynamodb_read_units * pricing.dynamodb_read_request_unit;
    let s3_requests = requests.s3_get_requests * pricing.s3_get_request
        + requests.s3_put_requests * pricing.s3_put_request;
    let s3_storage_month = requests.s3_stored_bytes / 1e9 * pricing.s3_standard_gb_month;
    // Custom metrics are billed by the hour they are published in (a month is 730 hours).
    let hours = (duration_secs / 3600.0).ceil();
    let cloudwatch = requests.cloudwatch_put_metric_data
        * pricing.cloudwatch_put_metric_data_request
        + CUSTOM_METRICS * f64::from(input.metric_dimension_sets) * hours / 730.0
            * pricing.cloudwatch_custom_metric_month;
    let total = lambda_compute
        + lambda_requests
        + sqs
        + dynamodb
        + s3_requests
        + s3_storage_month
        + cloudwatch;
    // Glue calls the same API under the same limit: at best the same calls per second.
    let glue_seconds = duration_secs.max(pricing.glue_minimum_seconds);
    let glue_default = pricing.glue_default_dpus * glue_seconds / 3600.0 * pricing.glue_dpu_hour;
    Ok(Plan {
        manifests,
        records_per_manifest,
        container_calls_per_sec,
        container_records_per_sec: container_calls_per_sec * per_call / input.attempts_per_call,
        container_bound,
        containers_for_the_limit,
        containers,
        steady_calls_per_sec,
        job_bound,
        duration_secs,
        floor_secs: input.rate_per_sec.map(|r| calls * tokens_per_call / r),
        worker_busy_secs: run.busy_container_secs,
        requests,
        cost: Cost {
            lambda_compute,
            lambda_requests,
            sqs,
            dynamodb,
            s3_requests,
            s3_storage_month,
            cloudwatch,
            total,
            glue_default,
            glue_seconds,
        },
    })
}

/// The job played out: `manifests` of equal size (`calls` in all), handed to `containers` in
/// turn, each container calling at most `per_container` per second and all of them together at
/// most `rate`. Between two manifest completions every working container gets an equal share.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Run {
    pub seconds: f64,
    pub busy_container_secs: f64,
}

pub fn simulate(
    manifests: u64,
    calls: f64,
    containers: u64,
    per_container: f64,
    rate: Option<f64>,
) -> Run {
    let size = calls / manifests as f64;
    let mut queued = manifests;
    let mut working: Vec<f64> = Vec::new();
    let (mut seconds, mut busy) = (0.0, 0.0);
    loop {
        while (working.len() as u64) < containers && queued > 0 {
            working.push(size);
            queued -= 1;
        }
        if working.is_empty() {
            return Run {
                seconds,
                busy_container_secs: busy,
            };
        }
        let k = working.len() as f64;
        let each = rate.map_or(per_container, |r| per_container.min(r / k));
        let least = working.iter().copied().fold(f64::INFINITY, f64::min);
        let dt = least / each;
        seconds += dt;
        busy += k * dt;
        for w in &mut working {
            *w -= each * dt;
        }
        // Equal manifests finish together; a relative tolerance absorbs the rounding.
        working.retain(|w| *w > size * 1e-9);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pricing() -> Pricing {
        Pricing::parse(US_EAST_1).unwrap()
    }

    /// The README's example: 1,000,000 records of 120 bytes at 5,000/s, the template's worker.
    fn million() -> PlanInput {
        PlanInput {
            records: 1_000_000,
            bytes: 120_000_000,
            rate_per_sec: Some(5000.0),
            latency_ms: 50.0,
            attempts_per_call: 1.0,
            records_per_call: 1,
            limit_counts_records: false,
            worker_memory_mb: 1024,
            batch_size: 1,
            concurrency: 64,
            reserved_concurrency: 10,
            chunk_bytes: 4 << 20,
            cpu_us_per_record: 87.0,
            result_bytes: 200,
            start_secs: 3.5,
            metric_dimension_sets: 2,
        }
    }

    #[test]
    fn the_pricing_table_has_its_date_and_sources() {
        let p = pricing();
        assert_eq!(p.region, "us-east-1");
        assert!(p.as_of.starts_with("20"), "{}", p.as_of);
        for service in ["lambda", "sqs", "dynamodb", "s3", "cloudwatch", "glue"] {
            assert!(
                p.sources
                    .get(service)
                    .is_some_and(|s| s.starts_with("https://aws.amazon.com/")),
                "{service}"
            );
        }
        assert_eq!(
            (p.glue_dpu_hour, p.glue_default_dpus, p.glue_minimum_seconds),
            (0.44, 10.0, 60.0)
        );
    }

    #[test]
    fn a_rate_bound_job_takes_its_floor_plus_the_start() {
        let plan = plan(&million(), &pricing()).unwrap();
        assert_eq!(plan.manifests, 29);
        assert_eq!(plan.job_bound, "rate limit");
        // 64 in flight at 50 ms: 1,280 calls/s per container; 4 reach 5,000/s, and the 9 of the
        // last round still do: no tail.
        assert_eq!(plan.container_calls_per_sec, 1280.0);
        assert_eq!(plan.containers_for_the_limit, Some(4));
        assert_eq!(plan.containers, 10);
        assert_eq!(plan.floor_secs, Some(200.0));
        assert!(
            (plan.duration_secs - 203.5).abs() < 1e-6,
            "{}",
            plan.duration_secs
        );
        assert!(
            plan.cost.total < plan.cost.glue_default / 4.0,
            "{:?}",
            plan.cost
        );
    }

    #[test]
    fn the_tail_runs_at_what_the_last_containers_can_do() {
        let mut input = million();
        input.reserved_concurrency = 4;
        let plan = plan(&input, &pricing()).unwrap();
        // The last 29 % 4 = 1 manifest runs alone at 1,280/s.
        let last = 1_000_000.0 / 29.0;
        let expected = 3.5 + (1_000_000.0 - last) / 5000.0 + last / 1280.0;
        assert!(
            (plan.duration_secs - expected).abs() < 1e-6,
            "{} vs {expected}",
            plan.duration_secs
        );
    }

    #[test]
    fn a_slow_api_needs_more_containers_than_reserved() {
        let mut input = million();
        input.latency_ms = 500.0;
        input.reserved_concurrency = 10;
        let plan = plan(&input, &pricing()).unwrap();
        // 128 calls/s per container; 40 would reach the limit, 10 may run.
        assert_eq!(plan.containers_for_the_limit, Some(40));
        assert_eq!(plan.containers, 10);
        assert_eq!(plan.job_bound, "reserved concurrency");
        assert_eq!(plan.steady_calls_per_sec, 1280.0);
        assert!(plan.duration_secs > 1_000_000.0 / 1280.0);
    }

    #[test]
    fn a_small_worker_is_bound_by_its_cpu() {
        let mut input = million();
        input.worker_memory_mb = 128;
        input.latency_ms = 5.0;
        let plan = plan(&input, &pricing()).unwrap();
        assert_eq!(plan.container_bound, "CPU");
        let expected = 128.0 / 1769.0 / 87e-6;
        assert!((plan.container_calls_per_sec - expected).abs() < 1e-6);
    }

    #[test]
    fn the_simulation_conserves_the_calls_and_never_beats_the_rate() {
        for (manifests, containers, per, rate) in [
            (86, 8, 1280.0, Some(5000.0)),
            (7, 3, 100.0, None),
            (1, 10, 50.0, Some(10.0)),
        ] {
            let run = simulate(manifests, 10_000.0, containers, per, rate);
            let fleet = containers.min(manifests) as f64 * per;
            let fastest = rate.map_or(fleet, |r: f64| r.min(fleet));
            assert!(run.seconds >= 10_000.0 / fastest - 1e-6, "{run:?}");
            // Busy container-seconds times each one's pace covers every call.
            assert!(run.busy_container_secs * per >= 10_000.0 - 1e-6);
        }
    }

    #[test]
    fn requests_follow_the_manifests_and_the_leases() {
        let plan = plan(&million(), &pricing()).unwrap();
        let r = &plan.requests;
        assert_eq!(r.lambda_invocations, 30.0);
        assert_eq!(r.s3_put_requests, 30.0);
        assert_eq!(r.cloudwatch_put_metric_data, 29.0);
        // Leases of 125 tokens (5,000 / (10 × 4)): 8,000 leases, 1.4 writes each.
        let leases = 1_000_000.0 / 125.0;
        assert!(
            (r.dynamodb_write_units - (leases * 1.4 + 29.0 * 6.0 + 3.0)).abs() < 1.0,
            "{r:?}"
        );
    }

    #[test]
    fn batch_calls_divide_the_calls_and_the_limit_counts_what_it_is_told() {
        // 25 records a call: 40,000 calls; metered by record, the floor stays 200 s.
        let mut input = million();
        input.records_per_call = 25;
        input.limit_counts_records = true;
        // A batch call's records cost little CPU each: the in-flight limit binds.
        input.cpu_us_per_record = 10.0;
        input.bytes = 1_000_000 * 128;
        input.chunk_bytes = 128 * 10_000;
        let by_record = plan(&input, &pricing()).unwrap();
        assert_eq!(by_record.manifests, 100);
        assert_eq!(by_record.requests.api_calls, 40_000.0);
        assert_eq!(by_record.floor_secs, Some(200.0));
        assert_eq!(by_record.job_bound, "rate limit");
        assert_eq!(by_record.container_records_per_sec, 1280.0 * 25.0);
        assert!((by_record.duration_secs - 203.5).abs() < 1e-6);
        // Metered by call, the same 40,000 calls take 8 s at 5,000 calls/s.
        input.limit_counts_records = false;
        let by_call = plan(&input, &pricing()).unwrap();
        assert_eq!(by_call.floor_secs, Some(8.0));
        assert!((by_call.duration_secs - 11.5).abs() < 1e-6);
        // A partial last batch in each manifest is a call of its own.
        input.records_per_call = 3;
        let partial = plan(&input, &pricing()).unwrap();
        assert_eq!(partial.requests.api_calls, 100.0 * 3334.0);
        // Fewer tokens per lease write when leases are of records: more leases, more writes.
        assert!(by_record.requests.dynamodb_write_units > by_call.requests.dynamodb_write_units);
    }

    #[test]
    fn bad_input_is_refused_with_the_field() {
        let mut input = million();
        input.records = 0;
        assert!(
            plan(&input, &pricing())
                .unwrap_err()
                .to_string()
                .contains("records")
        );
        let mut input = million();
        input.rate_per_sec = Some(0.0);
        assert!(
            plan(&input, &pricing())
                .unwrap_err()
                .to_string()
                .contains("rate")
        );
    }
}
