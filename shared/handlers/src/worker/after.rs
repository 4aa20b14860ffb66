//! After: a committed manifest → its metrics, its continuation, the job's tolerance and end.

use tracing::{info, warn};

use fanout_core::config::InputFormat;
use fanout_core::continuation;
use fanout_core::ledger::Counts;
use fanout_core::ledger::now_ms;
use fanout_core::manifest::{Manifest, REDO_PART};
use fanout_core::quote::{self, PartScan, Redo};
use fanout_core::range::plan_ranges;
use fanout_core::summary;

use super::WorkerDeps;
use super::commit::Committed;

/// Takes a committed manifest and gives nothing back but effects, in this order: publishes its
/// metrics (never failing the manifest), enqueues its continuation if it was cut, stops the job if
/// its failure tolerance is now exceeded, and writes the job's summary if this was the job's last
/// manifest to be recorded.
pub(super) async fn after(m: &Manifest, deps: &WorkerDeps, c: &Committed) -> anyhow::Result<()> {
    let record = &c.record;
    deps.metrics
        .publish(
            &m.pipeline,
            record,
            c.newly_recorded,
            &c.histogram,
            c.statuses,
        )
        .await;
    if let Some(at) = record.continued_at {
        enqueue_continuation(m, at, deps).await?;
    }
    judge_tolerance(m, deps).await?;
    info!(job_id = %m.job_id, unit = m.unit_id(), counts = ?c.counts, ms = record.duration_ms, "manifest done");
    finish_job_if_last(m, deps).await
}

/// Takes a manifest and the offset `at` it was cut at, and sends the continuation of `m` from
/// `at`. Sending it twice (a redelivered parent) is harmless: both copies are the same unit, and
/// its claim lets one of them work.
pub(super) async fn enqueue_continuation(
    m: &Manifest,
    at: u64,
    deps: &WorkerDeps,
) -> anyhow::Result<()> {
    let next = continuation::continuation(m, at);
    info!(job_id = %m.job_id, unit = next.unit_id(), from = at, to = next.range.end, "continuation enqueued");
    deps.queue
        .send_batch(vec![("0".into(), serde_json::to_string(&next)?)])
        .await
}

/// Takes a recorded manifest and stops its job if the job's counts, with this manifest's, are
/// past the pipeline's failure tolerance (counting `JobsFailed` once, for whoever stopped it).
async fn judge_tolerance(m: &Manifest, deps: &WorkerDeps) -> anyhow::Result<()> {
    let limits = &m.config.job;
    if limits.tolerated_failure_count.is_none() && limits.tolerated_failure_percent.is_none() {
        return Ok(());
    }
    let Some(job) = deps.ledger.get_job(&m.job_id).await? else {
        return Ok(());
    };
    if job.error.is_none()
        && let Some(reason) = fanout_core::tolerance::exceeded(limits, &job.counts)
        && deps.ledger.stop_job(&m.job_id, &reason).await?
    {
        warn!(job_id = %m.job_id, reason, "job stopped; its remaining records will not be sent");
        deps.metrics.jobs().job_failed(&m.job_id, &m.pipeline).await;
    }
    Ok(())
}

/// Takes a recorded manifest and writes the job's summary if it was the job's last one to be
/// recorded (whoever wins the ledger's completion claim writes it).
pub(super) async fn finish_job_if_last(m: &Manifest, deps: &WorkerDeps) -> anyhow::Result<()> {
    if m.format == InputFormat::Csv && redoing(m, deps).await? {
        return Ok(());
    }
    if deps.ledger.claim_completion(&m.job_id, now_ms()).await? {
        summary::write_summary(
            &m.job_id,
            &m.bucket,
            deps.store.as_ref(),
            deps.ledger.as_ref(),
        )
        .await?;
    }
    Ok(())
}

/// CSV: once every manifest is recorded, composes the ranges' quote transitions (see
/// [`fanout_core::quote`]) and, if some range's start state was guessed wrong, opens the job's
/// redo and sends a redo manifest for each such range. True while a redo is open and not all
/// recorded: the job is not complete yet.
///
/// Whoever finds every manifest recorded resolves (the same answer for all); one opens the redo.
/// An original part finishing again (a retry after a crash between opening and sending) sends
/// the redo again: a redo is a unit with its claim, so a second copy does nothing.
async fn redoing(m: &Manifest, deps: &WorkerDeps) -> anyhow::Result<bool> {
    let Some(job) = deps.ledger.get_job(&m.job_id).await? else {
        return Ok(false);
    };
    let all_recorded = job.manifests_done == job.manifests_total;
    let redo = match job.redo {
        Some(_) if all_recorded => return Ok(false),
        Some(redo) => {
            if m.part < REDO_PART {
                send_redo(m, &redo, deps).await?;
            }
            return Ok(true);
        }
        None if !all_recorded => return Ok(false),
        None => {
            let records = deps.ledger.manifests(&m.job_id).await?;
            let parts: Option<Vec<PartScan>> = records
                .iter()
                .map(|r| {
                    r.quote.map(|scan| PartScan {
                        seq: r.seq,
                        part: r.part,
                        scan,
                    })
                })
                .collect();
            let Some(parts) = parts else {
                warn!(job_id = %m.job_id, "a CSV manifest record has no quote scan: ranges not checked");
                return Ok(false);
            };
            let redo = quote::resolve(&parts);
            if redo.is_empty() {
                return Ok(false);
            }
            let mut superseded = Counts::default();
            for r in records
                .iter()
                .filter(|r| redo.iter().any(|x| x.seq == r.seq))
            {
                superseded.add(&r.counts);
            }
            if deps.ledger.open_redo(&m.job_id, &redo, &superseded).await? {
                warn!(job_id = %m.job_id, ranges = ?redo, "CSV ranges read under a wrong quote state: redoing them");
            }
            // Opened by us or by another finisher: the job's record says which ranges.
            match deps.ledger.get_job(&m.job_id).await?.and_then(|j| j.redo) {
                Some(redo) => redo,
                None => return Ok(false),
            }
        }
    };
    send_redo(m, &redo, deps).await?;
    Ok(true)
}

/// Sends the redo manifest of each range in `redo`: its planned range, from its true state.
async fn send_redo(m: &Manifest, redo: &[Redo], deps: &WorkerDeps) -> anyhow::Result<()> {
    let ranges = plan_ranges(m.data_start, m.object_size, m.config.split.chunk_bytes);
    let mut messages = Vec::new();
    for r in redo {
        let Some(range) = ranges.get(r.seq as usize) else {
            anyhow::bail!("redo of range {} of {}: no such range", r.seq, ranges.len());
        };
        let manifest = Manifest {
            seq: r.seq,
            part: REDO_PART,
            range: *range,
            start_state: Some(r.start),
            ..m.clone()
        };
        messages.push((r.seq.to_string(), serde_json::to_string(&manifest)?));
    }
    for batch in messages.chunks(10) {
        deps.queue.send_batch(batch.to_vec()).await?;
    }
    info!(job_id = %m.job_id, ranges = redo.len(), "redo manifests sent");
    Ok(())
}
