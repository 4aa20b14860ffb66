//! The job summary: `results/<job>/_SUMMARY.json`, written once by whoever completes the job.

use serde::{Deserialize, Serialize};

use crate::latency::{self, Percentiles};
use crate::ledger::{Counts, JobStatus};
use crate::manifest::keys;
use crate::ports::{JobLedger, ObjectStore};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    pub job_id: String,
    pub status: JobStatus,
    pub bucket: String,
    pub key: String,
    pub version_id: Option<String>,
    pub pipeline: String,
    pub manifests: u32,
    /// Records in the input (blank lines excluded) = succeeded + failed + rejected.
    pub input_records: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub rejected: u64,
    pub blank_lines: u64,
    pub bytes_read: u64,
    pub reconciled: bool,
    pub latency: Percentiles,
    pub created_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    pub error: Option<String>,
}

/// Builds the summary from the ledger (the job and every manifest record).
pub async fn build_summary(job_id: &str, ledger: &dyn JobLedger) -> anyhow::Result<JobSummary> {
    let job = ledger
        .get_job(job_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("job {job_id} not found in the ledger"))?;
    let mut histogram = latency::new_histogram();
    let mut counts = Counts::default();
    for m in ledger.manifests(job_id).await? {
        histogram.add(latency::decode(&m.latency_histogram)?)?;
        counts.add(&m.counts);
    }
    // The manifest records are the source of truth; the job's running counters must agree.
    if counts != job.counts {
        anyhow::bail!(
            "job {job_id}: manifest records {counts:?} disagree with job counters {:?}",
            job.counts
        );
    }
    Ok(JobSummary {
        job_id: job.job_id,
        // A job stopped by its failure tolerance keeps its reason in `error` and ends FAILED.
        status: match (job.status, &job.error) {
            (JobStatus::Completing, None) => JobStatus::Completed,
            (JobStatus::Completing, Some(_)) => JobStatus::Failed,
            (status, _) => status,
        },
        bucket: job.bucket,
        key: job.key,
        version_id: job.version_id,
        pipeline: job.pipeline,
        manifests: job.manifests_total,
        input_records: counts.records,
        succeeded: counts.succeeded,
        failed: counts.failed,
        rejected: counts.rejected,
        blank_lines: counts.blank_lines,
        bytes_read: counts.bytes_read,
        reconciled: counts.reconciles(),
        latency: Percentiles::of(&histogram),
        created_at_ms: job.created_at_ms,
        finished_at_ms: job.finished_at_ms,
        error: job.error,
    })
}

pub async fn write_summary(
    job_id: &str,
    bucket: &str,
    store: &dyn ObjectStore,
    ledger: &dyn JobLedger,
) -> anyhow::Result<JobSummary> {
    let summary = build_summary(job_id, ledger).await?;
    let body = serde_json::to_vec_pretty(&summary)?;
    store
        .put(bucket, &keys::summary(job_id), body, "application/json")
        .await?;
    if summary.status == JobStatus::Failed {
        ledger.mark_stopped(job_id).await?;
    } else {
        ledger.mark_completed(job_id).await?;
    }
    tracing::info!(
        job_id,
        input_records = summary.input_records,
        succeeded = summary.succeeded,
        failed = summary.failed,
        rejected = summary.rejected,
        "job completed; summary written"
    );
    Ok(summary)
}
