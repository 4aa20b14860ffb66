//! After: a committed manifest → its metrics, its continuation, the job's tolerance and end.

use tracing::{info, warn};

use fanout_core::continuation;
use fanout_core::ledger::now_ms;
use fanout_core::manifest::Manifest;
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
