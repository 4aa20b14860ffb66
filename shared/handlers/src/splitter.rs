//! The splitter: turns an S3 upload into a job and its manifests, without downloading the object.

use std::sync::Arc;

use aws_lambda_events::s3::{S3Event, S3EventRecord};
use futures::{StreamExt, TryStreamExt};
use tracing::{info, warn};

use fanout_core::config::{InputFormat, PipelineConfig};
use fanout_core::ledger::{Counts, CreateOutcome, JobRecord, JobStatus, now_ms};
use fanout_core::manifest::{Manifest, job_id, keys};
use fanout_core::ports::{JobLedger, ManifestQueue, ObjectHead, ObjectStore};
use fanout_core::range::{ByteRange, plan_ranges};
use fanout_core::record::{BOM, header_line, parse_csv_header};
use fanout_core::request::compile;
use fanout_core::summary;

/// SendMessageBatch calls in flight at once.
const PARALLEL_SENDS: usize = 8;

#[derive(Clone)]
pub struct SplitterDeps {
    pub store: Arc<dyn ObjectStore>,
    pub queue: Arc<dyn ManifestQueue>,
    pub ledger: Arc<dyn JobLedger>,
    /// Where a job that fails at split time is counted.
    pub metrics: fanout_core::metrics::JobMetrics,
    /// The stack's `{{API_BASE_URL}}`, and its rate limit and chunk size for pipelines that set
    /// none; applied to each config before it is validated.
    pub defaults: fanout_core::stack_defaults::StackDefaults,
}

/// What the splitter did with one S3 record.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum SplitOutcome {
    /// Not an input object (outside `input/`, or not an ObjectCreated event).
    Ignored {
        key: String,
        reason: String,
    },
    /// The job already existed past splitting: a duplicate event.
    Duplicate {
        job_id: String,
        status: JobStatus,
    },
    Started {
        job_id: String,
        manifests: u32,
    },
    /// The job failed before anything was enqueued (bad config, bad header); the ledger has why.
    Failed {
        job_id: String,
        error: String,
    },
}

/// The Lambda entry point. An error (S3, SQS or DynamoDB unavailable) fails the invocation so that
/// Lambda retries it; every step is idempotent.
pub async fn handle_s3_event(
    event: S3Event,
    deps: &SplitterDeps,
) -> anyhow::Result<Vec<SplitOutcome>> {
    let mut outcomes = Vec::new();
    for record in &event.records {
        let outcome = split_record(record, deps).await?;
        info!(outcome = ?outcome, "split");
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

async fn split_record(record: &S3EventRecord, deps: &SplitterDeps) -> anyhow::Result<SplitOutcome> {
    let bucket = record.s3.bucket.name.clone().unwrap_or_default();
    let raw_key = record.s3.object.key.clone().unwrap_or_default();
    let key = decode_event_key(&raw_key);
    let event_name = record.event_name.clone().unwrap_or_default();
    if !event_name.starts_with("ObjectCreated") {
        return Ok(SplitOutcome::Ignored {
            key,
            reason: format!("event {event_name:?} is not ObjectCreated"),
        });
    }
    let pipeline = match keys::pipeline_of(&key) {
        Ok(p) => p.to_string(),
        Err(reason) => return Ok(SplitOutcome::Ignored { key, reason }),
    };
    let version = record
        .s3
        .object
        .version_id
        .clone()
        .filter(|v| !v.is_empty() && v != "null");
    let head = deps.store.head(&bucket, &key, version.as_deref()).await?;
    split_object(&bucket, &key, &pipeline, head, deps).await
}

/// Keys in S3 events are URL-encoded, with `+` for spaces.
pub fn decode_event_key(key: &str) -> String {
    let spaced = key.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// Plans and enqueues the manifests of one pinned object version.
pub async fn split_object(
    bucket: &str,
    key: &str,
    pipeline: &str,
    head: ObjectHead,
    deps: &SplitterDeps,
) -> anyhow::Result<SplitOutcome> {
    let version_or_etag = head.version_id.clone().unwrap_or_else(|| head.etag.clone());
    let job_id = job_id(bucket, key, &version_or_etag);
    let mut job = JobRecord {
        job_id: job_id.clone(),
        status: JobStatus::Splitting,
        bucket: bucket.into(),
        key: key.into(),
        version_id: head.version_id.clone(),
        pipeline: pipeline.into(),
        manifests_total: 0,
        manifests_done: 0,
        counts: Counts::default(),
        created_at_ms: now_ms(),
        finished_at_ms: None,
        error: None,
        config: None,
        redo: None,
    };
    if let Some(existing) = deps.ledger.get_job(&job_id).await?
        && existing.status != JobStatus::Splitting
    {
        return Ok(SplitOutcome::Duplicate {
            job_id,
            status: existing.status,
        });
    }

    let plan = match plan_job(bucket, key, pipeline, &head, &job_id, deps).await? {
        Ok((config, plan)) => {
            job.config = Some(Box::new(config));
            plan
        }
        Err(error) => {
            warn!(job_id, error, "job failed before splitting");
            job.status = JobStatus::Failed;
            job.error = Some(error.clone());
            job.finished_at_ms = Some(now_ms());
            if let CreateOutcome::Exists(existing) = deps.ledger.create_job(&job).await? {
                if existing.status != JobStatus::Splitting {
                    return Ok(SplitOutcome::Duplicate {
                        job_id,
                        status: existing.status,
                    });
                }
                deps.ledger.fail_job(&job_id, &error).await?;
            }
            deps.metrics.job_failed(&job_id, pipeline).await;
            return Ok(SplitOutcome::Failed { job_id, error });
        }
    };
    let JobPlan { template, ranges } = plan;
    let total = ranges.len() as u32;
    job.manifests_total = total;
    if let CreateOutcome::Exists(existing) = deps.ledger.create_job(&job).await?
        && existing.status != JobStatus::Splitting
    {
        return Ok(SplitOutcome::Duplicate {
            job_id,
            status: existing.status,
        });
    }
    // A job left in SPLITTING by a crashed attempt is enqueued again in full: workers are
    // idempotent, so a manifest sent twice is processed once in effect.
    futures::stream::iter(manifest_batches(template, &ranges))
        .map(|batch| async move { deps.queue.send_batch(batch?).await })
        .buffer_unordered(PARALLEL_SENDS)
        .try_collect::<Vec<()>>()
        .await?;
    deps.ledger.mark_running(&job_id).await?;
    if total == 0 && deps.ledger.claim_completion(&job_id, now_ms()).await? {
        summary::write_summary(&job_id, bucket, deps.store.as_ref(), deps.ledger.as_ref()).await?;
    }
    Ok(SplitOutcome::Started {
        job_id,
        manifests: total,
    })
}

/// A job's manifests, planned: what they share (`template`, the first manifest, whose `seq` and
/// `range` each manifest replaces) and each one's byte range, in `seq` order.
struct JobPlan {
    template: Manifest,
    ranges: Vec<ByteRange>,
}

/// The SendMessageBatch entries (id, body) of the manifests of `ranges`, ten to a batch, each
/// batch made only when it is taken: the splitter holds the manifests of the batches in flight,
/// not the whole job's (a 100 GiB object at 4 MiB ranges is 25,600 manifests, each embedding the
/// config; made all at once they took about 145 MiB, docs/PERFORMANCE.md).
fn manifest_batches(
    mut manifest: Manifest,
    ranges: &[ByteRange],
) -> impl Iterator<Item = anyhow::Result<Vec<(String, String)>>> + '_ {
    ranges.chunks(10).enumerate().map(move |(batch, chunk)| {
        chunk
            .iter()
            .enumerate()
            .map(|(i, range)| {
                manifest.seq = (batch * 10 + i) as u32;
                manifest.range = *range;
                Ok((manifest.seq.to_string(), serde_json::to_string(&manifest)?))
            })
            .collect()
    })
}

/// Loads and checks the config, reads the header, and plans the manifests; returns their plan
/// with the config as resolved. The inner error is a job failure (the user's to fix); the outer
/// one is an infrastructure error (to retry).
async fn plan_job(
    bucket: &str,
    key: &str,
    pipeline: &str,
    head: &ObjectHead,
    job_id: &str,
    deps: &SplitterDeps,
) -> anyhow::Result<Result<(PipelineConfig, JobPlan), String>> {
    let store = deps.store.as_ref();
    let config_key = keys::pipeline_config(pipeline);
    let source = format!("s3://{bucket}/{config_key}");
    let Some(text) = store.get_small(bucket, &config_key).await? else {
        return Ok(Err(format!(
            "{source}: pipeline config not found (input key {key:?} names pipeline {pipeline:?})"
        )));
    };
    let config = match std::str::from_utf8(&text)
        .map_err(|e| format!("{source}: not UTF-8: {e}"))
        .and_then(|t| {
            PipelineConfig::from_yaml_with(&source, t, &deps.defaults).map_err(|e| e.to_string())
        }) {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let (data_start, header) = match read_preamble(bucket, key, head, &config, store).await? {
        Ok(p) => p,
        Err(e) => return Ok(Err(format!("s3://{bucket}/{key}: {e}"))),
    };
    // An empty object has no header to check placeholders against, and no records to send.
    let empty_csv = header.as_ref().is_some_and(Vec::is_empty);
    if !empty_csv && let Err(e) = compile(&config, header.as_deref(), &source) {
        return Ok(Err(e.to_string()));
    }
    let ranges = plan_ranges(data_start, head.size, config.split.chunk_bytes);
    let template = Manifest {
        job_id: job_id.into(),
        seq: 0,
        part: 0,
        manifests_total: ranges.len() as u32,
        bucket: bucket.into(),
        key: key.into(),
        version_id: head.version_id.clone(),
        etag: head.etag.clone(),
        object_size: head.size,
        range: ranges
            .first()
            .copied()
            .unwrap_or(ByteRange::new(data_start, data_start)),
        data_start,
        format: config.input.format,
        header,
        pipeline: pipeline.into(),
        config_source: source,
        config: config.clone(),
        start_state: None,
    };
    Ok(Ok((config, JobPlan { template, ranges })))
}

/// Finds where data starts: after a UTF-8 BOM, and for CSV after the header row, which it parses.
/// Reads only the object's first bytes. (Also used by [`crate::replay`], to parse failed records.)
pub async fn read_preamble(
    bucket: &str,
    key: &str,
    head: &ObjectHead,
    config: &PipelineConfig,
    store: &dyn ObjectStore,
) -> anyhow::Result<Result<(u64, Option<Vec<String>>), String>> {
    let limit = (config.input.max_record_bytes as u64 + BOM.len() as u64 + 2).min(head.size);
    let mut prefix = Vec::new();
    let mut step = 64 * 1024;
    // Read until the header's newline (CSV) or the BOM's length (JSONL) is covered.
    loop {
        let have = prefix.len() as u64;
        let done = match config.input.format {
            InputFormat::Jsonl => have >= BOM.len() as u64,
            InputFormat::Csv => memchr::memchr(b'\n', &prefix).is_some(),
        };
        if done || have >= limit {
            break;
        }
        let to = limit.min(have + step);
        let mut body = store
            .get_range(
                bucket,
                key,
                head.version_id.as_deref(),
                Some(&head.etag),
                ByteRange::new(have, to),
            )
            .await?;
        while let Some(chunk) = body.next().await {
            prefix.extend_from_slice(&chunk?);
        }
        if prefix.len() as u64 == have {
            anyhow::bail!("s3://{bucket}/{key}: empty read at offset {have}");
        }
        step *= 4;
    }
    match config.input.format {
        InputFormat::Jsonl => Ok(Ok((
            if prefix.starts_with(BOM) {
                BOM.len() as u64
            } else {
                0
            },
            None,
        ))),
        InputFormat::Csv => {
            let whole = head.size == prefix.len() as u64;
            let Some((line, data_start)) = header_line(&prefix, whole) else {
                return Ok(Err(format!(
                    "CSV header is longer than input.max_record_bytes ({})",
                    config.input.max_record_bytes
                )));
            };
            if line.is_empty() {
                // An empty object (or a blank first line) has no header and so no records.
                return Ok(if data_start >= head.size {
                    Ok((head.size, Some(Vec::new())))
                } else {
                    Err("CSV header row is empty".into())
                });
            }
            Ok(parse_csv_header(line, config.input.delimiter as u8).map(|h| (data_start, Some(h))))
        }
    }
}

#[cfg(test)]
#[path = "splitter_tests.rs"]
mod tests;
