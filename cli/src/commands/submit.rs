//! `fanout submit FILE --pipeline NAME [--follow]`: starts a job on a deployed stack the way a
//! user's upload does (the object goes to `input/NAME/`, and the stack's splitter takes it from
//! there), prints the job id the splitter derives, and with `--follow` shows the job's progress
//! until it is final, then its summary.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use fanout_aws::dynamo::DynamoLedger;
use fanout_cli::local::{self, Stack};
use fanout_core::config::PipelineConfig;
use fanout_core::ledger::{JobRecord, JobStatus};
use fanout_core::manifest::{job_id, keys};
use fanout_core::ports::JobLedger;
use fanout_core::summary::JobSummary;
use indicatif::{ProgressBar, ProgressStyle};

use super::pipeline;

pub struct SubmitArgs {
    pub file: PathBuf,
    pub pipeline: String,
    /// The object's name under input/<pipeline>/ (default: the file's name).
    pub name: Option<String>,
    pub follow: bool,
    pub interval: Duration,
    pub timeout: Duration,
}

/// How the command ends for a script: 0 when every record succeeded, [`EXIT_RECORDS_FAILED`] when
/// the job completed with failed records (replay them), an error (1) when the job failed.
pub const EXIT_RECORDS_FAILED: i32 = 2;

/// After this long without a job record, the wait says where to look.
const SPLITTER_PATIENCE: Duration = Duration::from_secs(60);

pub async fn run(
    config: &aws_config::SdkConfig,
    stack: &Stack,
    args: &SubmitArgs,
) -> anyhow::Result<i32> {
    anyhow::ensure!(
        stack.deployed.is_some(),
        "submit starts a job on a deployed stack (--stack NAME or FANOUT_STACK), whose splitter takes the upload; on the {}, `fanout local run` runs a job",
        stack.label
    );
    pipeline::check_name(&args.pipeline)?;
    let s3 = fanout_aws::s3_client(config);
    // The job would fail at once on a config its splitter refuses: say so before uploading.
    let (source, text) = pipeline::get_text(&s3, stack, &args.pipeline).await?;
    PipelineConfig::from_yaml_with(&source, &text, &stack.defaults)?;

    let file_name = match &args.name {
        Some(n) => n.clone(),
        None => args
            .file
            .file_name()
            .with_context(|| format!("{}: no file name", args.file.display()))?
            .to_string_lossy()
            .into_owned(),
    };
    anyhow::ensure!(
        !file_name.is_empty() && !file_name.starts_with('/'),
        "object name {file_name:?} is empty or absolute"
    );
    let bucket = &stack.names.bucket;
    let key = format!("{}{}/{file_name}", keys::INPUT_PREFIX, args.pipeline);
    let job = upload(config, bucket, &key, &args.file).await?;
    // stdout's first line is the job id, for scripts; the rest of the talk goes to stderr.
    println!("{job}");
    eprintln!(
        "uploaded {} to s3://{bucket}/{key}: job {job} on {}",
        args.file.display(),
        stack.label
    );
    if !args.follow {
        return Ok(0);
    }
    follow(config, stack, &job, args).await
}

/// Uploads the input and returns the id of the job its upload starts: the splitter derives it
/// from the bucket, the key and the version (or the ETag in an unversioned bucket).
async fn upload(
    config: &aws_config::SdkConfig,
    bucket: &str,
    key: &str,
    file: &Path,
) -> anyhow::Result<String> {
    let event = local::upload_input(config, bucket, key, file).await?;
    let object = &event.records[0].s3.object;
    let version_or_etag = object
        .version_id
        .clone()
        .filter(|v| !v.is_empty() && v != "null")
        .or_else(|| object.e_tag.clone())
        .context("PutObject returned neither a version id nor an ETag")?;
    Ok(job_id(bucket, key, &version_or_etag))
}

async fn follow(
    config: &aws_config::SdkConfig,
    stack: &Stack,
    job_id: &str,
    args: &SubmitArgs,
) -> anyhow::Result<i32> {
    let ledger = DynamoLedger::new(aws_sdk_dynamodb::Client::new(config), &stack.names.table);
    let stack_flag = stack
        .deployed
        .as_ref()
        .map_or(String::new(), |d| format!("--stack {}", d.stack_name));
    let terminal = std::io::stderr().is_terminal();
    let bar = if terminal {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} manifests  {msg}",
    )?);
    bar.enable_steady_tick(Duration::from_millis(200));
    let started = Instant::now();
    // What a plain line is printed for: the counts, not the pace that moves between them.
    let mut last_seen = None;
    let job = loop {
        let job = ledger.get_job(job_id).await?;
        let line = match &job {
            None if started.elapsed() < SPLITTER_PATIENCE => "waiting for the splitter".to_string(),
            None => format!(
                "no job record after {} s: the splitter's log and its failure queue ({}) say why",
                started.elapsed().as_secs(),
                stack
                    .deployed
                    .as_ref()
                    .map_or("", |d| d.splitter_failure_queue_url())
            ),
            Some(job) => progress_line(job, started.elapsed()),
        };
        if let Some(job) = &job {
            bar.set_length(job.manifests_total.into());
            bar.set_position(job.manifests_done.into());
        }
        bar.set_message(line.clone());
        // Not a terminal (a pipe, a CI log): a plain line when something changed.
        let seen = (
            job.as_ref().map(|j| {
                (
                    j.status,
                    j.manifests_done,
                    j.counts.records,
                    j.counts.failed,
                )
            }),
            job.is_none() && started.elapsed() >= SPLITTER_PATIENCE,
        );
        if !terminal && last_seen != Some(seen) {
            eprintln!("{job_id}: {line}");
        }
        last_seen = Some(seen);
        match job {
            Some(job) if job.status.is_final() => break job,
            _ => {}
        }
        if started.elapsed() > args.timeout {
            bar.abandon();
            anyhow::bail!(
                "job {job_id} is not final after {} s; it goes on: `fanout status {stack_flag} {job_id}` follows it",
                args.timeout.as_secs()
            );
        }
        tokio::time::sleep(args.interval).await;
    };
    bar.finish_and_clear();
    if job.status == JobStatus::Failed {
        anyhow::bail!(
            "job {job_id} FAILED: {}",
            job.error.as_deref().unwrap_or("(no reason recorded)")
        );
    }
    let summary = read_summary(config, &job).await?;
    eprintln!(
        "job {job_id} {}: {} records, {} succeeded, {} failed, {} rejected, {} manifests, reconciled: {}",
        summary.status.as_str(),
        summary.input_records,
        summary.succeeded,
        summary.failed,
        summary.rejected,
        summary.manifests,
        summary.reconciled
    );
    println!("{}", serde_json::to_string(&summary)?);
    anyhow::ensure!(
        summary.reconciled,
        "job {job_id}: results + failed + rejected != input records"
    );
    if summary.failed > 0 {
        eprintln!(
            "{} records failed (s3://{}/failed/{job_id}/): `fanout replay {stack_flag} {job_id}` sends them again",
            summary.failed, job.bucket
        );
        return Ok(EXIT_RECORDS_FAILED);
    }
    Ok(0)
}

fn progress_line(job: &JobRecord, elapsed: Duration) -> String {
    format!(
        "{}: {} records ({:.0}/s), {} failed, {} rejected",
        job.status.as_str(),
        job.counts.records,
        job.counts.records as f64 / elapsed.as_secs_f64().max(0.001),
        job.counts.failed,
        job.counts.rejected
    )
}

/// The summary the job's last manifest writes right after it completes the job (retried
/// briefly: the ledger says COMPLETED a moment before the object is there).
async fn read_summary(
    config: &aws_config::SdkConfig,
    job: &JobRecord,
) -> anyhow::Result<JobSummary> {
    let s3 = fanout_aws::s3_client(config);
    let key = keys::summary(&job.job_id);
    for _ in 0..60 {
        match s3.get_object().bucket(&job.bucket).key(&key).send().await {
            Ok(out) => {
                let body = out.body.collect().await?.into_bytes();
                return serde_json::from_slice(&body)
                    .with_context(|| format!("s3://{}/{key}", job.bucket));
            }
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "GetObject s3://{}/{key}: {}",
                    job.bucket,
                    aws_sdk_s3::error::DisplayErrorContext(e)
                ));
            }
        }
    }
    anyhow::bail!(
        "job {} is COMPLETED but s3://{}/{key} was not written within 30 s",
        job.job_id,
        job.bucket
    )
}
