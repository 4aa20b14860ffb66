//! A job's progress as `fanout status` shows it: pure arithmetic over the ledger's job record
//! (counts are added as each manifest is recorded), the input's size and the pipeline's limit.

use serde::{Deserialize, Serialize};

use fanout_core::ledger::{JobRecord, JobStatus};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobProgress {
    pub job_id: String,
    pub status: JobStatus,
    pub pipeline: String,
    pub input: String,
    pub manifests_done: u32,
    pub manifests_total: u32,
    /// Input bytes read so far (each manifest reads a little past its range to finish its last
    /// record, so this can end slightly above the input's size).
    pub bytes_read: u64,
    pub input_bytes: Option<u64>,
    pub records: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub rejected: u64,
    pub blank_lines: u64,
    /// Records per second since the earlier look at the job when one is given (`fanout status`
    /// gives one at least 30 s old, as counts move only when a manifest is recorded), else since
    /// the job began.
    pub records_per_sec: f64,
    /// The pipeline's fleet-wide API limit (requests per second).
    pub rate_limit_per_sec: Option<f64>,
    pub elapsed_secs: f64,
    /// Seconds left at the current pace, by manifests (None when finished or nothing done yet).
    pub eta_secs: Option<f64>,
    pub error: Option<String>,
}

/// An earlier look at the same job, to measure the current pace.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub at_ms: u64,
    pub records: u64,
    pub manifests_done: u32,
}

impl JobProgress {
    pub fn of(
        job: &JobRecord,
        input_bytes: Option<u64>,
        rate_limit_per_sec: Option<f64>,
        now_ms: u64,
        previous: Option<Sample>,
    ) -> Self {
        let end_ms = job.finished_at_ms.unwrap_or(now_ms).max(job.created_at_ms);
        let elapsed_secs = (end_ms - job.created_at_ms) as f64 / 1000.0;
        let since_start = (
            job.counts.records as f64 / elapsed_secs.max(1e-3),
            elapsed_secs,
        );
        // A fresh pace needs a later look at an unfinished job.
        let recent = previous.filter(|p| now_ms > p.at_ms && !job.status.is_final());
        let (records_per_sec, manifests_per_sec) = match recent {
            Some(p) => {
                let secs = (now_ms - p.at_ms) as f64 / 1000.0;
                (
                    job.counts.records.saturating_sub(p.records) as f64 / secs,
                    f64::from(job.manifests_done.saturating_sub(p.manifests_done)) / secs,
                )
            }
            None => (
                since_start.0,
                f64::from(job.manifests_done) / since_start.1.max(1e-3),
            ),
        };
        let left = job.manifests_total.saturating_sub(job.manifests_done);
        let eta_secs = (!job.status.is_final() && left > 0 && manifests_per_sec > 0.0)
            .then(|| (f64::from(left) / manifests_per_sec * 10.0).round() / 10.0);
        Self {
            job_id: job.job_id.clone(),
            status: job.status,
            pipeline: job.pipeline.clone(),
            input: format!("s3://{}/{}", job.bucket, job.key),
            manifests_done: job.manifests_done,
            manifests_total: job.manifests_total,
            bytes_read: job.counts.bytes_read,
            input_bytes,
            records: job.counts.records,
            succeeded: job.counts.succeeded,
            failed: job.counts.failed,
            rejected: job.counts.rejected,
            blank_lines: job.counts.blank_lines,
            records_per_sec: (records_per_sec * 10.0).round() / 10.0,
            rate_limit_per_sec,
            elapsed_secs,
            eta_secs,
            error: job.error.clone(),
        }
    }

    pub fn sample(&self, at_ms: u64) -> Sample {
        Sample {
            at_ms,
            records: self.records,
            manifests_done: self.manifests_done,
        }
    }

    /// A few lines for a terminal.
    pub fn render_text(&self) -> String {
        let pct = |done: f64, total: f64| {
            if total > 0.0 {
                100.0 * done / total
            } else {
                0.0
            }
        };
        let mut out = format!(
            "job {}  {}  pipeline {}  {}\n",
            self.job_id,
            self.status.as_str(),
            self.pipeline,
            self.input
        );
        out += &format!(
            "  manifests {}/{} ({:.0}%)",
            self.manifests_done,
            self.manifests_total,
            pct(
                f64::from(self.manifests_done),
                f64::from(self.manifests_total)
            )
        );
        match self.input_bytes {
            Some(total) => {
                out += &format!(
                    "   bytes {} of {} ({:.0}%)\n",
                    self.bytes_read,
                    total,
                    pct(self.bytes_read as f64, total as f64).min(100.0)
                )
            }
            None => out += &format!("   bytes {}\n", self.bytes_read),
        }
        out += &format!(
            "  records {}   ok {}   failed {}   rejected {}   blank lines {}\n",
            self.records, self.succeeded, self.failed, self.rejected, self.blank_lines
        );
        out += &format!("  rate {:.1} records/s", self.records_per_sec);
        if let Some(limit) = self.rate_limit_per_sec {
            out += &format!(" (API limit {limit}/s)");
        }
        out += &format!("   elapsed {:.1} s", self.elapsed_secs);
        if let Some(eta) = self.eta_secs {
            out += &format!("   ETA {eta:.0} s");
        }
        out.push('\n');
        if let Some(e) = &self.error {
            out += &format!("  error: {e}\n");
        }
        out
    }
}

/// Reads a job's progress: the ledger's job record (with the limit of the config the job runs
/// with) and the input's size (best effort: a missing input leaves it out).
pub async fn read(
    job_id: &str,
    ledger: &dyn fanout_core::ports::JobLedger,
    store: &dyn fanout_core::ports::ObjectStore,
    previous: Option<Sample>,
) -> anyhow::Result<JobProgress> {
    let job = ledger
        .get_job(job_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("job {job_id} not found in the ledger"))?;
    let input_bytes = store
        .head(&job.bucket, &job.key, job.version_id.as_deref())
        .await
        .ok()
        .map(|h| h.size);
    let rate_limit = job
        .config
        .as_ref()
        .map(|c| f64::from(c.client.rate_limit_per_sec));
    Ok(JobProgress::of(
        &job,
        input_bytes,
        rate_limit,
        fanout_core::ledger::now_ms(),
        previous,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fanout_core::ledger::Counts;

    fn job(done: u32, records: u64, status: JobStatus, finished: Option<u64>) -> JobRecord {
        JobRecord {
            redo: None,
            job_id: "j".into(),
            status,
            bucket: "b".into(),
            key: "input/p/x.csv".into(),
            version_id: None,
            pipeline: "p".into(),
            manifests_total: 10,
            manifests_done: done,
            counts: Counts {
                records,
                succeeded: records - 2,
                failed: 1,
                rejected: 1,
                blank_lines: 0,
                bytes_read: 500,
            },
            created_at_ms: 1_000_000,
            finished_at_ms: finished,
            error: None,
            config: None,
        }
    }

    #[test]
    fn pace_and_eta_since_the_start() {
        // 4 of 10 manifests and 400 records in 8 s: 50 records/s, 6 manifests at 0.5/s = 12 s.
        let p = JobProgress::of(
            &job(4, 400, JobStatus::Running, None),
            Some(1000),
            Some(100.0),
            1_008_000,
            None,
        );
        assert_eq!(p.records_per_sec, 50.0);
        assert_eq!(p.eta_secs, Some(12.0));
        assert_eq!(p.elapsed_secs, 8.0);
        assert!(
            p.render_text().contains("manifests 4/10 (40%)"),
            "{}",
            p.render_text()
        );
        assert!(p.render_text().contains("API limit 100/s"));
    }

    #[test]
    fn pace_over_the_last_refresh() {
        let before = Sample {
            at_ms: 1_006_000,
            records: 300,
            manifests_done: 3,
        };
        let p = JobProgress::of(
            &job(4, 400, JobStatus::Running, None),
            None,
            None,
            1_008_000,
            Some(before),
        );
        assert_eq!(p.records_per_sec, 50.0);
        assert_eq!(p.eta_secs, Some(12.0));
    }

    #[test]
    fn a_finished_job_has_no_eta_and_stops_its_clock() {
        let p = JobProgress::of(
            &job(10, 1000, JobStatus::Completed, Some(1_010_000)),
            None,
            None,
            9_000_000,
            None,
        );
        assert_eq!(p.eta_secs, None);
        assert_eq!(p.elapsed_secs, 10.0);
        assert_eq!(p.records_per_sec, 100.0);
    }
}
