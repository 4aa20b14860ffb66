//! Replay: a new attempt at a finished job's failures, under the same job id.
//!
//! 1. Manifests in the dead-letter queue that belong to the job are worked like any delivery
//!    (claim, process, record), and deleted from the DLQ once done. This is what finishes a job
//!    left RUNNING by a manifest that failed five times (or by Lambda's recursive-loop stop).
//! 2. Every record in `failed/<job>/` is sent again (same idempotency key: `<job>-<offset>`). One
//!    that now succeeds moves to its unit's `results/` part; one that fails again stays in
//!    `failed/` with its new error. Each unit's ledger record is then set to the counts of its
//!    part files, the job's counters to the sum of the units', and the summary is rewritten.
//!
//! Crash-safe by re-running: the results part is written before the failed part, and a failed
//! line whose offset is already in the results is dropped rather than sent again; the counts are
//! set (not added) from the objects, so a second run after a crash converges on the same state.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use futures::StreamExt;
use serde_json::Value;
use tracing::{info, warn};

use crate::worker::{self, Handled, WorkerDeps};
use fanout_core::config::{InputFormat, PipelineConfig};
use fanout_core::csv_output::{CsvLayout, OutputFormat, rows_of_part};
use fanout_core::ledger::{Counts, ManifestRecord};
use fanout_core::manifest::{Manifest, keys};
use fanout_core::output::ResultLine;
use fanout_core::ports::{DeadLetterQueue, LedgerRepair};
use fanout_core::request::compile;
use fanout_core::response::{ResponseShaper, Shaped};

use crate::worker::batch::{self, Member};

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReplayReport {
    pub job_id: String,
    /// DLQ manifests of the job worked (and deleted from the DLQ).
    pub dlq_manifests: u32,
    /// DLQ manifests of the job left there (held by another invocation, or failing again).
    pub dlq_left: u32,
    /// failed/ records sent again.
    pub replayed: u64,
    pub now_succeeded: u64,
    pub still_failed: u64,
}

/// What a replay needs: a worker's deps (to work DLQ manifests and call the API), the ledger's
/// repair side (counts set from the parts) and the dead-letter queue.
#[derive(Clone)]
pub struct ReplayDeps {
    pub worker: WorkerDeps,
    pub repair: Arc<dyn LedgerRepair>,
    pub dead_letters: Arc<dyn DeadLetterQueue>,
}

/// Replays job `job_id` of `bucket`: its DLQ manifests first, then its failed records.
pub async fn replay(job_id: &str, bucket: &str, deps: &ReplayDeps) -> anyhow::Result<ReplayReport> {
    let mut report = ReplayReport {
        job_id: job_id.to_string(),
        ..Default::default()
    };
    replay_dead_letters(job_id, deps, &mut report).await?;
    replay_failed(job_id, bucket, deps, &mut report).await?;
    Ok(report)
}

/// Works the job's manifests found in the dead-letter queue, deleting each one done.
pub async fn replay_dead_letters(
    job_id: &str,
    deps: &ReplayDeps,
    report: &mut ReplayReport,
) -> anyhow::Result<()> {
    let dlq = deps.dead_letters.as_ref();
    let mut seen = BTreeSet::new();
    loop {
        let messages = dlq.receive().await?;
        if messages.is_empty() || messages.iter().all(|m| seen.contains(&m.id)) {
            // Only messages already looked at came back: hand them back at once rather than
            // leaving them hidden for the queue's visibility timeout.
            for m in &messages {
                if let Err(e) = dlq.release(&m.receipt).await {
                    warn!(job_id, error = format!("{e:#}"), "DLQ message not returned");
                }
            }
            return Ok(());
        }
        for m in messages {
            seen.insert(m.id.clone());
            let done = match serde_json::from_str::<Manifest>(&m.body) {
                Ok(manifest) if manifest.job_id == job_id => {
                    match worker::handle_manifest(&manifest, &deps.worker, None).await {
                        Ok(Handled::Processed(_)) | Ok(Handled::AlreadyDone) => {
                            report.dlq_manifests += 1;
                            true
                        }
                        Ok(Handled::HeldByOther) => {
                            report.dlq_left += 1;
                            false
                        }
                        Err(e) => {
                            warn!(
                                job_id,
                                unit = manifest.unit_id(),
                                error = format!("{e:#}"),
                                "DLQ manifest failed again; left in the DLQ"
                            );
                            report.dlq_left += 1;
                            false
                        }
                    }
                }
                // Another job's, or not a manifest: not ours to touch.
                _ => false,
            };
            let result = if done {
                dlq.delete(&m.receipt).await
            } else {
                dlq.release(&m.receipt).await
            };
            if let Err(e) = result {
                warn!(
                    job_id,
                    error = format!("{e:#}"),
                    "DLQ message not deleted/returned"
                );
            }
        }
    }
}

/// Sends the job's failed/ records again and rewrites its parts, ledger counts and summary. The
/// job must be final (COMPLETED, or FAILED after its failure tolerance).
pub async fn replay_failed(
    job_id: &str,
    bucket: &str,
    deps: &ReplayDeps,
    report: &mut ReplayReport,
) -> anyhow::Result<()> {
    let ledger = deps.worker.ledger.as_ref();
    let store = deps.worker.store.as_ref();
    let job = ledger
        .get_job(job_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("job {job_id} not found in the ledger"))?;
    anyhow::ensure!(
        job.status.is_final(),
        "job {job_id} is {}: replay it once it has finished (its DLQ manifests are replayed first)",
        job.status.as_str()
    );
    let source = format!("s3://{bucket}/{}", keys::pipeline_config(&job.pipeline));
    // The config the job ran with, as its splitter resolved it (the stack's defaults applied),
    // whatever has become of pipelines/<name>.yaml since. A job recorded without one (by an
    // earlier version) falls back to the stored file.
    let config = match job.config {
        Some(config) => *config,
        None => {
            let text = store
                .get_small(bucket, &keys::pipeline_config(&job.pipeline))
                .await?
                .ok_or_else(|| anyhow::anyhow!("{source}: pipeline config not found"))?;
            PipelineConfig::from_yaml(&source, std::str::from_utf8(&text)?)?
        }
    };
    let header = match config.input.format {
        InputFormat::Jsonl => None,
        InputFormat::Csv => {
            let head = store
                .head(bucket, &job.key, job.version_id.as_deref())
                .await?;
            crate::splitter::read_preamble(bucket, &job.key, &head, &config, store)
                .await?
                .map_err(|e| anyhow::anyhow!("s3://{bucket}/{}: {e}", job.key))?
                .1
        }
    };
    let (mut parser, renderer) = compile(&config, header.as_deref(), &source)?;
    let mut units = ledger.manifests(job_id).await?;
    units.retain(|m| m.counts.failed > 0);
    for unit in units {
        replay_unit(
            job_id,
            bucket,
            &unit,
            &config,
            &mut parser,
            &renderer,
            deps,
            report,
        )
        .await?;
    }
    let mut total = Counts::default();
    for m in ledger.manifests(job_id).await? {
        total.add(&m.counts);
    }
    deps.repair.set_job_counts(job_id, &total).await?;
    fanout_core::summary::write_summary(job_id, bucket, store, ledger).await?;
    info!(job_id, ?report, "replay done; summary rewritten");
    Ok(())
}

fn jsonl(body: Option<Vec<u8>>) -> anyhow::Result<Vec<Value>> {
    body.unwrap_or_default()
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| Ok(serde_json::from_slice(l)?))
        .collect()
}

/// A unit's results part, in the pipeline's `output.format`.
enum ResultsPart {
    Jsonl(Vec<Value>),
    /// The rows as written, with their offsets.
    Csv(CsvLayout, Vec<(u64, Vec<u8>)>),
}

impl ResultsPart {
    fn offsets(&self) -> BTreeSet<u64> {
        match self {
            ResultsPart::Jsonl(lines) => {
                lines.iter().filter_map(|l| l["offset"].as_u64()).collect()
            }
            ResultsPart::Csv(_, rows) => rows.iter().map(|(o, _)| *o).collect(),
        }
    }

    fn len(&self) -> u64 {
        match self {
            ResultsPart::Jsonl(lines) => lines.len() as u64,
            ResultsPart::Csv(_, rows) => rows.len() as u64,
        }
    }

    fn push(&mut self, line: ResultLine) -> anyhow::Result<()> {
        match self {
            ResultsPart::Jsonl(lines) => lines.push(serde_json::to_value(line)?),
            ResultsPart::Csv(layout, rows) => {
                rows.push((line.offset, layout.row(&line, &line.fields)))
            }
        }
        Ok(())
    }

    fn body(self) -> anyhow::Result<(Vec<u8>, &'static str)> {
        Ok(match self {
            ResultsPart::Jsonl(lines) => (to_body(lines)?, OutputFormat::Jsonl.content_type()),
            ResultsPart::Csv(layout, rows) => (layout.part(rows), OutputFormat::Csv.content_type()),
        })
    }
}

fn to_body(mut lines: Vec<Value>) -> anyhow::Result<Vec<u8>> {
    lines.sort_by_key(|l| l["offset"].as_u64());
    let mut out = Vec::new();
    for l in lines {
        serde_json::to_writer(&mut out, &l)?;
        out.push(b'\n');
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
async fn replay_unit(
    job_id: &str,
    bucket: &str,
    unit: &ManifestRecord,
    config: &PipelineConfig,
    parser: &mut fanout_core::record::RecordParser,
    renderer: &fanout_core::request::RequestRenderer,
    deps: &ReplayDeps,
    report: &mut ReplayReport,
) -> anyhow::Result<()> {
    let store = deps.worker.store.as_ref();
    let id = keys::unit(unit.seq, unit.part);
    let (results_key, failed_key) = (
        keys::results_unit_as(job_id, &id, config.output.format),
        keys::failed_unit(job_id, &id),
    );
    let existing = store.get_small(bucket, &results_key).await?;
    let mut results = match config.output.format {
        OutputFormat::Jsonl => ResultsPart::Jsonl(jsonl(existing)?),
        OutputFormat::Csv => ResultsPart::Csv(
            CsvLayout::new(&config.output.columns),
            rows_of_part(&existing.unwrap_or_default())
                .map_err(|e| anyhow::anyhow!("s3://{bucket}/{results_key}: {e}"))?,
        ),
    };
    let failed = jsonl(store.get_small(bucket, &failed_key).await?)?;
    let done = results.offsets();
    // A line already in the results is a success an interrupted replay did not clear from failed/.
    let todo: Vec<(u64, String)> = failed
        .iter()
        .filter_map(|l| Some((l["offset"].as_u64()?, l["record"].as_str()?.to_string())))
        .filter(|(o, _)| !done.contains(o))
        .collect();
    let policy = &config.client;
    // Parsing is sequential (the parser keeps buffers); the calls run `concurrency` at a time.
    let keep = fanout_core::check::kept_slots(config, parser);
    let mut fields: HashMap<u64, Vec<String>> = HashMap::new();
    let prepared: Vec<_> = todo
        .into_iter()
        .map(|(offset, record)| {
            let request = parser.parse(record.as_bytes()).and_then(|v| {
                let cells = keep
                    .iter()
                    .map(|&s| v.get(s).map(CsvLayout::cell).unwrap_or_default());
                fields.insert(offset, cells.collect());
                renderer.render(&v, job_id, offset)
            });
            (offset, record, request)
        })
        .collect();
    let shaper = ResponseShaper::from_config(&config.response);
    let api = deps.worker.api.as_ref();
    // A record that no longer renders fails with the reason, without a call.
    let mut lines: Vec<(u64, Shaped)> = Vec::with_capacity(prepared.len());
    let mut sendable = Vec::with_capacity(prepared.len());
    for (offset, record, request) in prepared {
        match request {
            Ok(request) => sendable.push((offset, record, request)),
            Err(reason) => {
                let out = fanout_core::ports::CallOutcome {
                    error: Some(reason),
                    ..Default::default()
                };
                lines.push((offset, shaper.shape(offset, record.as_bytes(), &out)));
            }
        }
    }
    let called: Vec<Vec<(u64, Shaped)>> = match &config.batch {
        None => {
            futures::stream::iter(&sendable)
                .map(|(offset, record, request)| async {
                    let out = api.call(request, policy).await;
                    vec![(*offset, shaper.shape(*offset, record.as_bytes(), &out))]
                })
                .buffer_unordered(policy.concurrency)
                .collect()
                .await
        }
        // The same batches as the worker's calls: the API takes nothing else.
        Some(batch_config) => {
            futures::stream::iter(sendable.chunks(batch_config.size.max(1)))
                .map(|group| {
                    let shaper = &shaper;
                    async move {
                        let members: Vec<Member<'_>> = (group.iter())
                            .map(|(offset, record, request)| Member {
                                offset: *offset,
                                raw: record.as_bytes(),
                                request,
                            })
                            .collect();
                        batch::call(api, policy, batch_config, shaper, &members, None)
                            .await
                            .0
                    }
                })
                .buffer_unordered(policy.concurrency)
                .collect()
                .await
        }
    };
    lines.extend(called.into_iter().flatten());
    let mut still_failed = Vec::new();
    for (offset, line) in lines {
        report.replayed += 1;
        match line {
            Shaped::Result(mut line) => {
                report.now_succeeded += 1;
                line.fields = fields.remove(&offset).unwrap_or_default();
                results.push(line)?;
            }
            Shaped::Failed(line) => {
                report.still_failed += 1;
                still_failed.push(serde_json::to_value(line)?);
            }
        }
    }
    let counts = Counts {
        succeeded: results.len(),
        failed: still_failed.len() as u64,
        ..unit.counts
    };
    // Results first: a crash between the two writes leaves a success in both parts, which the
    // next replay clears from failed/ without sending it.
    let (body, content_type) = results.body()?;
    store.put(bucket, &results_key, body, content_type).await?;
    if still_failed.is_empty() {
        store.delete(bucket, &failed_key).await?;
    } else {
        store
            .put(
                bucket,
                &failed_key,
                to_body(still_failed)?,
                fanout_core::output::JSONL_CONTENT_TYPE,
            )
            .await?;
    }
    anyhow::ensure!(
        counts.reconciles(),
        "unit {id}: {counts:?} does not reconcile after replay"
    );
    deps.repair
        .set_manifest_counts(job_id, unit.seq, unit.part, &counts)
        .await
}

#[cfg(test)]
#[path = "replay_tests.rs"]
mod tests;
