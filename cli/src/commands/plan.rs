//! `fanout plan`: the concurrency a job needs to reach its limit, its manifests, its expected
//! duration and its AWS cost beside AWS Glue's, from a record count or an input (its size and a
//! sample of its first records). The model: `fanout_cli::plan`.

use std::path::PathBuf;

use anyhow::Context;
use fanout_cli::plan::{self, Plan, PlanInput, Pricing};

#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    /// Records in the job (with --record-bytes for the input's size).
    #[arg(long, required_unless_present = "input", conflicts_with = "input")]
    pub records: Option<u64>,
    /// The input instead: a local file or s3://BUCKET/KEY; its size, and the records in its
    /// first MiB, give the record count and size.
    #[arg(long)]
    pub input: Option<String>,
    /// Mean bytes per record, with --records.
    #[arg(long, default_value_t = 120)]
    pub record_bytes: u64,
    /// A pipeline config: its rate limit (and what the limit counts), `client.concurrency`,
    /// `split.chunk_bytes` and `batch.size` are the plan's, unless a flag below says otherwise.
    #[arg(long, value_name = "FILE")]
    pub pipeline: Option<PathBuf>,
    /// The fleet-wide rate limit (per second); without it (and without --pipeline), no limit.
    #[arg(long)]
    pub rate: Option<f64>,
    /// The API's mean latency.
    #[arg(long, default_value_t = 50.0)]
    pub latency_ms: f64,
    /// Retries expected, in percent of records (each is one more call).
    #[arg(long, default_value_t = 0.0)]
    pub retries_percent: f64,
    /// Worker memory (the template's WorkerMemory).
    #[arg(long, default_value_t = 1024)]
    pub memory_mb: u32,
    /// Manifests per worker invocation (WorkerBatchSize).
    #[arg(long, default_value_t = 1)]
    pub batch_size: u32,
    /// Requests in flight per container (client.concurrency) [default: 64, or the pipeline's].
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// Records per API call (batch.size) [default: 1, or the pipeline's].
    #[arg(long)]
    pub records_per_call: Option<u32>,
    /// What the rate limit counts (client.rate_limit_counts) [default: calls, or the pipeline's].
    #[arg(long, value_enum)]
    pub limit_counts: Option<LimitCounts>,
    /// At most this many worker containers (WorkerReservedConcurrency).
    #[arg(long, default_value_t = 10)]
    pub reserved_concurrency: u32,
    /// Bytes per manifest (split.chunk_bytes or ChunkBytes) [default: 4 MiB, or the pipeline's].
    #[arg(long)]
    pub chunk_bytes: Option<u64>,
    /// Worker CPU per record (docs/PERFORMANCE.md has the measured figure).
    #[arg(long, default_value_t = 50.0)]
    pub cpu_us_per_record: f64,
    /// Bytes stored per record in results/.
    #[arg(long, default_value_t = 200)]
    pub result_bytes: u64,
    /// Seconds from the upload to the first call (event, split, first invocations).
    #[arg(long, default_value_t = 3.5)]
    pub start_secs: f64,
    /// A pricing table of the same form as cli/pricing/us-east-1.json (the default).
    #[arg(long)]
    pub pricing: Option<PathBuf>,
    /// The plan as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitCounts {
    Calls,
    Records,
}

/// What the plan takes from a pipeline config (or the defaults without one).
struct Shape {
    rate: Option<f64>,
    concurrency: u32,
    chunk_bytes: u64,
    records_per_call: u32,
    counts_records: bool,
}

/// The flags, over the pipeline's settings, over the defaults.
fn shape(args: &PlanArgs) -> anyhow::Result<Shape> {
    let mut shape = Shape {
        rate: None,
        concurrency: 64,
        chunk_bytes: 4 << 20,
        records_per_call: 1,
        counts_records: false,
    };
    if let Some(path) = &args.pipeline {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        // The plan needs the API's shape, not its address: any base URL checks the config.
        let defaults = fanout_core::stack_defaults::StackDefaults {
            api_base_url: Some("https://api.example.com".into()),
            ..Default::default()
        };
        let config = fanout_core::config::PipelineConfig::from_yaml_with(
            &path.display().to_string(),
            &text,
            &defaults,
        )?;
        shape.rate = Some(f64::from(config.client.rate_limit_per_sec));
        shape.concurrency = config.client.concurrency as u32;
        shape.chunk_bytes = config.split.chunk_bytes;
        if let Some(batch) = &config.batch {
            shape.records_per_call = batch.size as u32;
        }
        shape.counts_records =
            config.client.rate_limit_counts == fanout_core::batch::RateUnit::Records;
    }
    shape.rate = args.rate.or(shape.rate);
    shape.concurrency = args.concurrency.unwrap_or(shape.concurrency);
    shape.chunk_bytes = args.chunk_bytes.unwrap_or(shape.chunk_bytes);
    shape.records_per_call = args.records_per_call.unwrap_or(shape.records_per_call);
    if let Some(counts) = args.limit_counts {
        shape.counts_records = counts == LimitCounts::Records;
    }
    Ok(shape)
}

/// Bytes of an input read to learn its records' size.
const SAMPLE_BYTES: u64 = 1 << 20;

pub async fn run(args: &PlanArgs) -> anyhow::Result<()> {
    let pricing = match &args.pricing {
        Some(path) => Pricing::parse(
            &std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| path.display().to_string())?,
        None => Pricing::parse(plan::US_EAST_1)?,
    };
    let (records, bytes) = match (&args.records, &args.input) {
        (Some(n), _) => (*n, n.saturating_mul(args.record_bytes)),
        (None, Some(input)) => {
            let (size, sample) = sample(input).await?;
            let n = estimate_records(size, &sample)
                .with_context(|| format!("{input}: no complete record in its first MiB"))?;
            (n, size)
        }
        (None, None) => anyhow::bail!("--records or --input"),
    };
    let shape = shape(args)?;
    let input = PlanInput {
        records,
        bytes,
        rate_per_sec: shape.rate,
        latency_ms: args.latency_ms,
        attempts_per_call: 1.0 + args.retries_percent / 100.0,
        records_per_call: shape.records_per_call,
        limit_counts_records: shape.counts_records,
        worker_memory_mb: args.memory_mb,
        batch_size: args.batch_size,
        concurrency: shape.concurrency,
        reserved_concurrency: args.reserved_concurrency,
        chunk_bytes: shape.chunk_bytes,
        cpu_us_per_record: args.cpu_us_per_record,
        result_bytes: args.result_bytes,
        start_secs: args.start_secs,
        metric_dimension_sets: 2,
    };
    let plan = plan::plan(&input, &pricing)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"input": input, "plan": plan, "pricing": {"region": pricing.region, "as_of": pricing.as_of}})
        );
    } else {
        print!("{}", render(&input, &plan, &pricing));
    }
    Ok(())
}

/// The input's size and its first bytes.
async fn sample(input: &str) -> anyhow::Result<(u64, Vec<u8>)> {
    if let Some(rest) = input.strip_prefix("s3://") {
        let (bucket, key) = rest
            .split_once('/')
            .with_context(|| format!("{input}: not s3://BUCKET/KEY"))?;
        let config = fanout_aws::load_config().await;
        let s3 = fanout_aws::s3_client(&config);
        let head = s3
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "HeadObject {input}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            })?;
        let size = head.content_length().unwrap_or(0).max(0) as u64;
        let body = s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .range(format!("bytes=0-{}", SAMPLE_BYTES.min(size.max(1)) - 1))
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "GetObject {input}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            })?
            .body
            .collect()
            .await?
            .into_bytes();
        Ok((size, body.to_vec()))
    } else {
        use std::io::Read;
        let mut file = std::fs::File::open(input).with_context(|| format!("reading {input}"))?;
        let size = file.metadata()?.len();
        let mut sample = Vec::new();
        file.by_ref().take(SAMPLE_BYTES).read_to_end(&mut sample)?;
        Ok((size, sample))
    }
}

/// Records in an input of `size` bytes whose first bytes are `sample`: the size over the mean
/// length of the sample's complete lines (a CSV header counts as one, which errs by one record).
pub fn estimate_records(size: u64, sample: &[u8]) -> Option<u64> {
    let complete = sample.iter().rposition(|&b| b == b'\n')? + 1;
    let lines = sample[..complete].iter().filter(|&&b| b == b'\n').count() as u64;
    if complete as u64 >= size {
        return Some(lines);
    }
    Some((size as f64 / (complete as f64 / lines as f64)).round() as u64)
}

fn dollars(x: f64) -> String {
    if x >= 0.01 {
        format!("${x:.2}")
    } else {
        format!("${x:.4}")
    }
}

fn render(input: &PlanInput, plan: &Plan, pricing: &Pricing) -> String {
    let mut out = String::new();
    let rate = input
        .rate_per_sec
        .map_or("no limit".to_string(), |r| format!("{r}/s"));
    out += &format!(
        "job: {} records, {} bytes, {} manifests of {} bytes ({:.0} records each); limit {rate}, API latency {} ms\n",
        input.records,
        input.bytes,
        plan.manifests,
        input.chunk_bytes,
        plan.records_per_manifest,
        input.latency_ms
    );
    if input.records_per_call > 1 {
        out += &format!(
            "batch calls: {} records per call, the limit counts {}\n",
            input.records_per_call,
            if input.limit_counts_records {
                "records"
            } else {
                "calls"
            }
        );
    }
    out += &format!(
        "one container: {:.0} calls/s, {:.0} records/s ({}: {} in flight, {} MB)\n",
        plan.container_calls_per_sec,
        plan.container_records_per_sec,
        plan.container_bound,
        input.concurrency,
        input.worker_memory_mb
    );
    match plan.containers_for_the_limit {
        Some(n) => {
            out += &format!(
                "containers to reach the limit: {n}; working at once: {} (reserved concurrency {})\n",
                plan.containers, input.reserved_concurrency
            )
        }
        None => {
            out += &format!(
                "containers working at once: {} (reserved concurrency {})\n",
                plan.containers, input.reserved_concurrency
            )
        }
    }
    out += &format!(
        "duration: {:.0} s at {:.0} calls/s, bound by the {}{}\n",
        plan.duration_secs,
        plan.steady_calls_per_sec,
        plan.job_bound,
        plan.floor_secs.map_or(String::new(), |f| format!(
            " (floor {f:.0} s, {:.2} x)",
            plan.duration_secs / f
        ))
    );
    let r = &plan.requests;
    out += &format!(
        "requests: {:.0} API calls, {:.0} Lambda invocations ({:.0} worker-seconds), {:.0} SQS, {:.0} DynamoDB write units, {:.0} read units, {:.0} S3 GET, {:.0} S3 PUT, {:.0} PutMetricData\n",
        r.api_calls,
        r.lambda_invocations,
        plan.worker_busy_secs,
        r.sqs_requests,
        r.dynamodb_write_units,
        r.dynamodb_read_units,
        r.s3_get_requests,
        r.s3_put_requests,
        r.cloudwatch_put_metric_data
    );
    let c = &plan.cost;
    out += &format!(
        "cost ({} list prices of {}): Lambda {} + {} requests, SQS {}, DynamoDB {}, S3 {} + {} a month for {:.1} MB of results, CloudWatch {}: total {}\n",
        pricing.region,
        pricing.as_of,
        dollars(c.lambda_compute),
        dollars(c.lambda_requests),
        dollars(c.sqs),
        dollars(c.dynamodb),
        dollars(c.s3_requests),
        dollars(c.s3_storage_month),
        r.s3_stored_bytes / 1e6,
        dollars(c.cloudwatch),
        dollars(c.total)
    );
    out += &format!(
        "AWS Glue, the same calls at the same limit: {} DPU x {:.0} s at ${}/DPU-hour = {} ({:.0} x)\n",
        pricing.glue_default_dpus,
        c.glue_seconds,
        pricing.glue_dpu_hour,
        dollars(c.glue_default),
        c.glue_default / c.total
    );
    out
}

#[cfg(test)]
mod tests {
    use super::estimate_records;

    #[test]
    fn records_are_estimated_from_the_sample() {
        // The whole file in the sample: its lines.
        assert_eq!(estimate_records(12, b"id\n1\n2\n3\n4\n5\n"), Some(6));
        // 10-byte lines in a 1,000-byte file: 100 records.
        assert_eq!(
            estimate_records(1000, b"123456789\n123456789\n12345"),
            Some(100)
        );
        assert_eq!(estimate_records(1000, b"no newline"), None);
    }
}
