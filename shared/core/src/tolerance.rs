//! Failure tolerance: when a job stops calling the API.
//!
//! After each manifest is recorded, the worker judges the job's running counts against the
//! pipeline's `job.tolerated_failure_count` / `job.tolerated_failure_percent`. Once over either,
//! the job is *stopped*: its reason is written to the job's `error` (once, conditionally), every
//! manifest worked from then on is drained without calls (its records go to `failed/` with the
//! reason, so results + failed + rejected = input still holds and `fanout replay` can retry
//! them), and the job finishes FAILED with the reason when its last manifest is recorded.
//!
//! The judgement is made at manifest boundaries, so calls already under way in other workers'
//! manifests finish: a job can go past the limit by up to one manifest per worker.

use crate::config::JobConfig;
use crate::ledger::Counts;

/// A percentage judged over fewer attempts than this would stop a job on its first failures.
pub const MIN_ATTEMPTS_FOR_PERCENT: u64 = 100;

/// The error a drained record carries, and the prefix of the job's error.
pub const STOPPED: &str = "job stopped: failure tolerance exceeded";

/// Why the job must stop, if its counts are past the tolerance.
pub fn exceeded(job: &JobConfig, counts: &Counts) -> Option<String> {
    let attempted = counts.succeeded + counts.failed;
    if let Some(max) = job.tolerated_failure_count
        && counts.failed > max
    {
        return Some(format!(
            "{STOPPED} ({} records failed, job.tolerated_failure_count is {max})",
            counts.failed
        ));
    }
    if let Some(max) = job.tolerated_failure_percent
        && attempted >= MIN_ATTEMPTS_FOR_PERCENT
        && counts.failed as f64 * 100.0 > max * attempted as f64
    {
        return Some(format!(
            "{STOPPED} ({} of {attempted} attempted records failed, job.tolerated_failure_percent is {max})",
            counts.failed
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(succeeded: u64, failed: u64) -> Counts {
        Counts {
            records: succeeded + failed,
            succeeded,
            failed,
            ..Counts::default()
        }
    }

    #[test]
    fn no_limit_never_stops() {
        assert_eq!(exceeded(&JobConfig::default(), &counts(0, 1_000_000)), None);
    }

    #[test]
    fn count_is_exceeded_above_the_limit() {
        let job = JobConfig {
            tolerated_failure_count: Some(5),
            ..JobConfig::default()
        };
        assert_eq!(exceeded(&job, &counts(10, 5)), None);
        let why = exceeded(&job, &counts(10, 6)).unwrap();
        assert!(why.starts_with(STOPPED), "{why}");
        assert!(why.contains("6 records failed"), "{why}");
        // Zero tolerates nothing.
        let strict = JobConfig {
            tolerated_failure_count: Some(0),
            ..JobConfig::default()
        };
        assert!(exceeded(&strict, &counts(100, 1)).is_some());
    }

    #[test]
    fn percent_waits_for_enough_attempts() {
        let job = JobConfig {
            tolerated_failure_percent: Some(10.0),
            ..JobConfig::default()
        };
        assert_eq!(
            exceeded(&job, &counts(5, 5)),
            None,
            "too few attempts to judge"
        );
        assert_eq!(
            exceeded(&job, &counts(90, 10)),
            None,
            "exactly 10% is tolerated"
        );
        assert!(exceeded(&job, &counts(89, 11)).is_some());
    }
}
