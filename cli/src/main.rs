//! `fanout`: validate pipeline configs, generate test data, and run jobs on a local stack.

mod commands {
    pub mod dashboard;
    pub mod generate;
    pub mod limit;
    pub mod pipeline;
    pub mod plan;
    pub mod replay;
    pub mod report;
    pub mod secret;
    pub mod stack;
    pub mod status;
    pub mod submit;
}

use commands::stack::StackSelector;
use commands::{
    dashboard, generate, limit, pipeline, plan, replay, report, secret, status, submit,
};

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use fanout_cli::local::{self, PollerOptions, StackNames};
use fanout_core::config::PipelineConfig;
use fanout_core::stack_defaults::StackDefaults;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "fanout",
    version,
    about = "Call a REST API once per record of a big S3 object."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a pipeline config offline (and against a CSV header, if given).
    Validate {
        file: PathBuf,
        /// A sample input file: its CSV header is checked against the config's placeholders.
        #[arg(long)]
        sample: Option<PathBuf>,
        /// The stack's defaults the config is checked with, as its splitter applies them.
        #[command(flatten)]
        defaults: DefaultsArgs,
    },
    /// Generate a test input file.
    Generate {
        #[arg(long)]
        records: u64,
        #[arg(long, value_enum, default_value_t = Format::Csv)]
        format: Format,
        #[arg(long)]
        out: PathBuf,
    },
    /// A job's progress from the ledger, redrawn until the job is final (AWS credentials from
    /// the default chain; AWS_ENDPOINT_URL for the local stack).
    Status {
        /// The job id; without it, the most recent jobs.
        job: Option<String>,
        #[command(flatten)]
        stack: StackSelector,
        /// Without JOB: how many of the most recent jobs.
        #[arg(long, default_value_t = 1)]
        last: usize,
        /// Print each job's progress once as a JSON line.
        #[arg(long)]
        json: bool,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 2.0)]
        interval: f64,
    },
    /// Write a job's HTML report (charts, totals, top errors) to results/<JOB>/_REPORT.html and
    /// to a local file.
    Report {
        job: String,
        #[command(flatten)]
        stack: StackSelector,
        /// The local file (default: <JOB>_REPORT.html).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Render the template's CloudWatch dashboard locally: every widget's metrics fetched with
    /// GetMetricData and drawn as an HTML page of SVG charts.
    Dashboard {
        /// The SAM template whose DashboardBody is drawn.
        #[arg(long, default_value = "template.yaml")]
        template: PathBuf,
        #[command(flatten)]
        stack: StackSelector,
        /// Only this pipeline's custom metrics (adds the Pipeline dimension).
        #[arg(long)]
        pipeline: Option<String>,
        /// How far back, in minutes.
        #[arg(long, default_value_t = 60)]
        minutes: u64,
        #[arg(long, default_value = "dashboard.html")]
        out: PathBuf,
    },
    /// Re-run a finished job's failures as a new attempt of the same job: its DLQ manifests,
    /// then its failed/ records (with the config the job ran with), from this machine; a record
    /// that now succeeds replaces its failure, and the summary is rewritten.
    Replay {
        job: String,
        #[command(flatten)]
        stack: StackSelector,
    },
    /// The pipeline configs a stack holds (pipelines/NAME.yaml in its data bucket).
    Pipeline {
        #[command(subcommand)]
        command: PipelineCommand,
    },
    /// Start a job on a deployed stack: upload FILE to input/PIPELINE/ (the stack's splitter
    /// takes it from there) and print its job id; with --follow, show its progress until it is
    /// final, then its summary. Exit status: 0 all records succeeded, 2 some failed (replay
    /// them), 1 the job failed or could not be followed.
    Submit {
        file: PathBuf,
        /// The pipeline (its config must be in the stack: `fanout pipeline put`).
        #[arg(long)]
        pipeline: String,
        /// The object's name under input/PIPELINE/ (default: FILE's name).
        #[arg(long)]
        name: Option<String>,
        /// Follow the job until it is final.
        #[arg(long)]
        follow: bool,
        /// With --follow: seconds between looks at the ledger.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// With --follow: give up following after this many seconds (the job goes on).
        #[arg(long, default_value_t = 86_400)]
        timeout_secs: u64,
        #[command(flatten)]
        stack: StackSelector,
    },
    /// Plan a job before running it: the containers it takes to reach the rate limit, its
    /// manifests, its duration, its AWS requests and cost (beside AWS Glue's for the same job).
    Plan(Box<plan::PlanArgs>),
    /// Store an API credential for a pipeline config to reference: the value is read from stdin
    /// (piped, or typed at a hidden prompt), never from an argument, and never printed.
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// Change a fleet limit's rate while jobs run (`set`, `clear`), or see it (`get`).
    Limit {
        #[command(subcommand)]
        command: limit::LimitCommand,
        /// A deployed stack, by its CloudFormation name (as for every operator command).
        #[arg(long, env = "FANOUT_STACK", global = true)]
        stack: Option<String>,
        /// Without --stack: the local stack of this prefix.
        #[arg(
            long,
            default_value = "fanout",
            global = true,
            conflicts_with = "stack"
        )]
        prefix: String,
    },
    /// Work with the local stack (AWS endpoint from AWS_ENDPOINT_URL).
    Local {
        #[command(subcommand)]
        command: LocalCommand,
    },
}

#[derive(Subcommand)]
enum PipelineCommand {
    /// Check FILE as the stack's splitter will (with the stack's defaults), then store it as
    /// pipelines/NAME.yaml.
    Put {
        name: String,
        file: PathBuf,
        #[command(flatten)]
        stack: StackSelector,
    },
    /// Every stored config, checked with the stack's defaults.
    List {
        /// One JSON line per pipeline.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        stack: StackSelector,
    },
    /// Print a stored config.
    Get {
        name: String,
        #[command(flatten)]
        stack: StackSelector,
    },
}

#[derive(Subcommand)]
enum SecretCommand {
    /// Create a Secrets Manager secret with the value on stdin (or store a new value in it if it
    /// exists); prints its ARN and the config reference {secrets_manager: NAME}.
    Put {
        /// The secret's name.
        name: String,
        /// The secret's description (set or replaced).
        #[arg(long)]
        description: Option<String>,
        /// The KMS key that encrypts the secret (default: Secrets Manager's AWS managed key).
        #[arg(long)]
        kms_key_id: Option<String>,
    },
    /// Encrypt the value on stdin with a KMS key; prints the config reference
    /// {kms_ciphertext: BASE64}.
    Encrypt {
        /// The KMS key (id, ARN or alias/NAME) the workers may decrypt with.
        #[arg(long)]
        key_id: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Csv,
    Jsonl,
}

/// Which stack a local run uses: the one `local up` makes for a prefix, or resources that exist
/// already (a stack deployed from template.yaml), named all four together.
#[derive(clap::Args)]
struct StackArgs {
    /// Prefix of the resources `local up` creates (bucket <prefix>-data, ...).
    #[arg(long, default_value = "fanout")]
    prefix: String,
    /// An existing data bucket (with --queue-url, --dlq-url and --table): run on it instead.
    #[arg(long, requires_all = ["queue_url", "dlq_url", "table"])]
    bucket: Option<String>,
    #[arg(long, requires = "bucket")]
    queue_url: Option<String>,
    #[arg(long, requires = "bucket")]
    dlq_url: Option<String>,
    #[arg(long, requires = "bucket")]
    table: Option<String>,
    /// The existing stack's KMS key (its KeyArn output), with --bucket: the workers then share
    /// each OAuth2 token through the ledger table, encrypted with it (else each gets its own).
    #[arg(long, requires = "bucket")]
    kms_key_id: Option<String>,
    #[command(flatten)]
    defaults: DefaultsArgs,
}

/// What the stack sets for pipelines, as the template's parameters do for a deployed one.
#[derive(clap::Args)]
struct DefaultsArgs {
    /// Replaces {{API_BASE_URL}} in pipeline configs (the template's ApiBaseUrl).
    #[arg(long)]
    api_base_url: Option<String>,
    /// The rate limit of pipelines whose config sets none (RateLimitPerSecond).
    #[arg(long)]
    rate_limit_per_second: Option<u32>,
    /// The burst of pipelines whose config sets none (RateLimitBurst).
    #[arg(long)]
    rate_limit_burst: Option<u32>,
    /// The chunk size of pipelines whose config sets none (ChunkBytes).
    #[arg(long)]
    chunk_bytes: Option<u64>,
}

impl DefaultsArgs {
    /// Checked as the splitter checks its environment.
    fn defaults(&self) -> anyhow::Result<StackDefaults> {
        StackDefaults::from_vars(|name| match name {
            "API_BASE_URL" => self.api_base_url.clone(),
            "RATE_LIMIT_PER_SECOND" => self.rate_limit_per_second.map(|v| v.to_string()),
            "RATE_LIMIT_BURST" => self.rate_limit_burst.map(|v| v.to_string()),
            "CHUNK_BYTES" => self.chunk_bytes.map(|v| v.to_string()),
            _ => None,
        })
        .map_err(|e| anyhow::anyhow!("{e}"))
    }
}

impl StackArgs {
    async fn stack(&self, config: &aws_config::SdkConfig) -> anyhow::Result<local::Stack> {
        let defaults = self.defaults.defaults()?;
        let mut stack = self.resources(config).await?;
        stack.defaults = defaults;
        Ok(stack)
    }

    async fn resources(&self, config: &aws_config::SdkConfig) -> anyhow::Result<local::Stack> {
        match (&self.bucket, &self.queue_url, &self.dlq_url, &self.table) {
            (Some(bucket), Some(queue_url), Some(dlq_url), Some(table)) => {
                Ok(local::Stack::existing(
                    bucket,
                    queue_url,
                    dlq_url,
                    table,
                    self.kms_key_id.as_deref(),
                ))
            }
            _ => local::ensure_stack(config, &StackNames::with_prefix(&self.prefix)).await,
        }
    }
}

#[derive(Subcommand)]
enum LocalCommand {
    /// Create the bucket, queues, ledger table and KMS key unless they exist.
    Up {
        #[arg(long, default_value = "fanout")]
        prefix: String,
    },
    /// Upload an input and run its job with the splitter and worker handlers, polling SQS like
    /// Lambda's event source mapping.
    Run {
        /// The input file (CSV with a header row, or JSON Lines).
        #[arg(long)]
        input: PathBuf,
        /// The pipeline config (YAML).
        #[arg(long)]
        pipeline: PathBuf,
        /// Pipeline name; the input goes to input/<name>/<file name>. Defaults to the config's file stem.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        stack: Box<StackArgs>,
        /// Simulated worker containers (the event source mapping's maximum concurrency).
        #[arg(long, default_value_t = 8)]
        workers: usize,
        /// Manifests per worker invocation.
        #[arg(long, default_value_t = 1)]
        batch_size: i32,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout_secs: u64,
        /// Simulate Lambda's timeout: each worker invocation gets this deadline, continues what
        /// it cannot finish by then, and is killed if it runs past it.
        #[arg(long)]
        invocation_timeout_secs: Option<u64>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
}

// The worker's allocator: `fanout local run` works records as the worker Lambda does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    fanout_handlers::telemetry::init_text("warn");
    match Cli::parse().command {
        Command::Validate {
            file,
            sample,
            defaults,
        } => validate(&file, sample.as_deref(), &defaults.defaults()?),
        Command::Generate {
            records,
            format,
            out,
        } => generate::write(&out, records, matches!(format, Format::Jsonl)),
        Command::Status {
            job,
            stack,
            last,
            json,
            interval,
        } => {
            let config = fanout_aws::load_config().await;
            status::run(status::StatusArgs {
                job,
                table: stack.resolve(&config).await?.names.table,
                last,
                json,
                interval: Duration::from_secs_f64(interval.max(0.2)),
            })
            .await
        }
        Command::Report { job, stack, out } => {
            let config = fanout_aws::load_config().await;
            report::run(&job, &stack.resolve(&config).await?.names.table, out).await
        }
        Command::Dashboard {
            template,
            stack,
            pipeline,
            minutes,
            out,
        } => {
            let config = fanout_aws::load_config().await;
            dashboard::run(dashboard::DashboardArgs {
                template,
                stack: stack.resolve(&config).await?,
                pipeline,
                minutes,
                out,
            })
            .await
        }
        Command::Replay { job, stack } => {
            let config = fanout_aws::load_config().await;
            replay::run(&config, &stack.resolve(&config).await?, &job).await
        }
        Command::Plan(args) => plan::run(&args).await,
        Command::Pipeline { command } => {
            let config = fanout_aws::load_config().await;
            match command {
                PipelineCommand::Put { name, file, stack } => {
                    pipeline::put(&config, &stack.resolve(&config).await?, &name, &file).await
                }
                PipelineCommand::List { json, stack } => {
                    pipeline::list(&config, &stack.resolve(&config).await?, json).await
                }
                PipelineCommand::Get { name, stack } => {
                    pipeline::get(&config, &stack.resolve(&config).await?, &name).await
                }
            }
        }
        Command::Submit {
            file,
            pipeline,
            name,
            follow,
            interval,
            timeout_secs,
            stack,
        } => {
            let config = fanout_aws::load_config().await;
            let stack = stack.resolve(&config).await?;
            let args = submit::SubmitArgs {
                file,
                pipeline,
                name,
                follow,
                interval: Duration::from_secs_f64(interval.max(0.2)),
                timeout: Duration::from_secs(timeout_secs),
            };
            match submit::run(&config, &stack, &args).await? {
                0 => Ok(()),
                code => std::process::exit(code),
            }
        }
        Command::Secret { command } => match command {
            SecretCommand::Put {
                name,
                description,
                kms_key_id,
            } => secret::put(&name, description.as_deref(), kms_key_id.as_deref()).await,
            SecretCommand::Encrypt { key_id } => secret::encrypt(&key_id).await,
        },
        Command::Limit {
            command,
            stack,
            prefix,
        } => {
            let config = fanout_aws::load_config().await;
            let stack = StackSelector { stack, prefix }.resolve(&config).await?;
            limit::run(command, &stack.names.table).await
        }
        Command::Local { command } => match command {
            LocalCommand::Up { prefix } => {
                let config = fanout_aws::load_config().await;
                let stack = local::ensure_stack(&config, &StackNames::with_prefix(&prefix)).await?;
                println!(
                    "{}",
                    json!({"bucket": stack.names.bucket, "queue_url": stack.queue_url, "dlq_url": stack.dlq_url, "table": stack.names.table, "kms_key_id": stack.kms_key_id})
                );
                Ok(())
            }
            LocalCommand::Run {
                input,
                pipeline,
                name,
                stack,
                workers,
                batch_size,
                timeout_secs,
                invocation_timeout_secs,
                quiet,
            } => {
                let options = PollerOptions {
                    workers,
                    batch_size,
                    invocation_timeout: invocation_timeout_secs.map(Duration::from_secs),
                    ..PollerOptions::default()
                };
                run(
                    &input,
                    &pipeline,
                    name,
                    &stack,
                    &options,
                    Duration::from_secs(timeout_secs),
                    quiet,
                )
                .await
            }
        },
    }
}

fn validate(file: &Path, sample: Option<&Path>, defaults: &StackDefaults) -> anyhow::Result<()> {
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {name}"))?;
    let config = PipelineConfig::from_yaml_with(&name, &text, defaults)?;
    if let Some(sample) = sample {
        let data =
            std::fs::read(sample).with_context(|| format!("reading {}", sample.display()))?;
        // Every record is judged as a job would judge it: the same reasons as in rejected/.
        let check = fanout_core::check::check_sample(&config, &data, &name)
            .map_err(|e| anyhow::anyhow!("{}: {e}", sample.display()))?;
        for r in &check.rejected {
            println!(
                "{}:{}: {} (offset {})",
                sample.display(),
                r.line,
                r.reason,
                r.offset
            );
        }
        if !check.rejected.is_empty() {
            anyhow::bail!(
                "{}: {} of {} records would be rejected",
                sample.display(),
                check.rejected.len(),
                check.records
            );
        }
        println!("{}: {} records ok", sample.display(), check.records);
    }
    println!("{name}: ok");
    Ok(())
}

async fn run(
    input: &Path,
    pipeline: &Path,
    name: Option<String>,
    stack: &StackArgs,
    options: &PollerOptions,
    timeout: Duration,
    quiet: bool,
) -> anyhow::Result<()> {
    let yaml = std::fs::read_to_string(pipeline)
        .with_context(|| format!("reading {}", pipeline.display()))?;
    // Fail fast on a bad config, with the local file's name in the message, checked with the
    // stack's defaults as its splitter will.
    PipelineConfig::from_yaml_with(
        &pipeline.display().to_string(),
        &yaml,
        &stack.defaults.defaults()?,
    )?;
    let name = name.unwrap_or_else(|| {
        pipeline
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    });
    let file_name = input
        .file_name()
        .context("input has no file name")?
        .to_string_lossy()
        .into_owned();

    let config = fanout_aws::load_config().await;
    let stack = stack.stack(&config).await?;
    local::put_pipeline(&config, &stack.names.bucket, &name, &yaml).await?;
    let key = format!("input/{name}/{file_name}");
    eprintln!(
        "uploading {} to s3://{}/{key}",
        input.display(),
        stack.names.bucket
    );
    let event = local::upload_input(&config, &stack.names.bucket, &key, input).await?;

    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} manifests  {msg}",
    )?);
    let progress = |job: &fanout_core::ledger::JobRecord| {
        bar.set_length(job.manifests_total.into());
        bar.set_position(job.manifests_done.into());
        let secs = bar.elapsed().as_secs_f64().max(0.001);
        bar.set_message(format!(
            "{} records ({:.0}/s), {} failed, {} rejected",
            job.counts.records,
            job.counts.records as f64 / secs,
            job.counts.failed,
            job.counts.rejected
        ));
    };
    // SIGTERM or Ctrl-C: the containers stop as at their deadline (what is done is flushed and
    // recorded, the rest continued in the queue), so no half-written output is left; the pollers
    // of the next `fanout local run` on this stack finish the job.
    let interrupt = fanout_core::continuation::Interrupt::default();
    let options = PollerOptions {
        interrupt: Some(interrupt.clone()),
        ..options.clone()
    };
    let watcher = tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let terminated = async {
            match term.as_mut() {
                Some(t) => drop(t.recv().await),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = terminated => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        eprintln!("stopping: flushing the work under way (the rest stays queued)");
        interrupt.trigger();
    });
    let report = local::run_event(&config, &stack, event, &options, timeout, &progress).await;
    watcher.abort();
    let report = report?;
    bar.finish_and_clear();
    if report.interrupted {
        eprintln!(
            "interrupted: finished manifests are recorded with their output; the rest stays queued for the next `fanout local run` on this stack"
        );
    }
    print_report(&report)
}

fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kb / 1024.0 * 10.0).round() / 10.0)
}

fn print_report(report: &local::RunReport) -> anyhow::Result<()> {
    let job = report.job.as_ref();
    if let Some(j) = job.filter(|j| j.error.is_some()) {
        eprintln!(
            "job {} FAILED: {}",
            j.job_id,
            j.error.as_deref().unwrap_or_default()
        );
    }
    let mut line = json!({
        "job_id": report.job_id,
        "status": job.map(|j| j.status.as_str()),
        "wall_seconds": (report.wall_seconds * 100.0).round() / 100.0,
        "started_unix_ms": report.started_unix_ms,
        "peak_rss_mb": peak_rss_mb(),
        "worker_invocations": report.pollers.invocations,
        "ddb_lease_writes": report.pollers.lease_writes,
    });
    if let Some(s) = &report.summary {
        let rate = s.input_records as f64 / report.wall_seconds.max(1e-9);
        eprintln!("job {}  ({} manifests)", s.job_id, s.manifests);
        eprintln!(
            "  records   {:>10}   ok {}   failed {}   rejected {}   blank lines {}",
            s.input_records, s.succeeded, s.failed, s.rejected, s.blank_lines
        );
        eprintln!(
            "  wall      {:>10.2} s   {:.0} records/s",
            report.wall_seconds, rate
        );
        eprintln!(
            "  latency   p50 {} ms   p95 {} ms   p99 {} ms   max {} ms",
            s.latency.p50_ms, s.latency.p95_ms, s.latency.p99_ms, s.latency.max_ms
        );
        eprintln!(
            "  reconciled (ok + failed + rejected = records): {}",
            s.reconciled
        );
        let extra = json!({
            "input_records": s.input_records, "succeeded": s.succeeded, "failed": s.failed, "rejected": s.rejected,
            "blank_lines": s.blank_lines, "manifests": s.manifests, "reconciled": s.reconciled,
            "records_per_second": rate.round(), "latency_ms": s.latency,
        });
        line.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
    } else if report.job_id.is_none() {
        eprintln!("no job started: {:?}", report.split);
    }
    println!("{line}");
    if job.is_some_and(|j| j.status == fanout_core::ledger::JobStatus::Failed) {
        anyhow::bail!("the job failed");
    }
    Ok(())
}
