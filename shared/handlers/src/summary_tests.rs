//! Unit tests of the job summary (`fanout_core::summary`), on the shared in-memory ledger and
//! store: the summary is built from the ledger alone and written to its deterministic key.

use fanout_core::latency;
use fanout_core::ledger::{Counts, JobStatus, ManifestRecord};
use fanout_core::manifest::keys;
use fanout_core::ports::JobLedger;
use fanout_core::summary::{JobSummary, build_summary, write_summary};

use crate::fakes::{self, MemLedger, MemStore};

const JOB: &str = "j-1";

/// A manifest record with these counts and API latencies (ms).
fn manifest(seq: u32, counts: Counts, latencies_ms: &[u64]) -> ManifestRecord {
    let mut h = latency::new_histogram();
    for ms in latencies_ms {
        h.record(ms * 1000).unwrap();
    }
    ManifestRecord {
        quote: None,
        job_id: JOB.into(),
        seq,
        part: 0,
        continued_at: None,
        counts,
        duration_ms: 5,
        latency_histogram: latency::encode(&h),
    }
}

fn counts(succeeded: u64, failed: u64, rejected: u64, blank: u64) -> Counts {
    Counts {
        records: succeeded + failed + rejected,
        succeeded,
        failed,
        rejected,
        blank_lines: blank,
        bytes_read: 100 * (succeeded + failed + rejected + blank),
    }
}

/// A job of two manifests, both recorded (through the ledger, which adds their counts) and its
/// completion claimed at 1234 ms.
async fn completing_ledger() -> MemLedger {
    let ledger = MemLedger::new();
    ledger.insert_job(fakes::running_job(JOB, "b", "input/p/f.csv", "p", 2));
    assert!(
        ledger
            .record_manifest(&manifest(0, counts(7, 2, 1, 3), &[10, 20, 30]))
            .await
            .unwrap()
    );
    assert!(
        ledger
            .record_manifest(&manifest(1, counts(5, 0, 2, 0), &[40, 50]))
            .await
            .unwrap()
    );
    assert!(ledger.claim_completion(JOB, 1234).await.unwrap());
    ledger
}

#[tokio::test]
async fn the_summary_is_built_from_the_ledger_and_reconciles() {
    let ledger = completing_ledger().await;
    let s = build_summary(JOB, &ledger).await.unwrap();
    assert_eq!(s.status, JobStatus::Completed, "COMPLETING without error");
    assert_eq!(
        (s.succeeded, s.failed, s.rejected, s.blank_lines),
        (12, 2, 3, 3)
    );
    assert_eq!(s.input_records, s.succeeded + s.failed + s.rejected);
    assert_eq!(s.input_records, 17);
    assert_eq!(s.bytes_read, 2000);
    assert!(s.reconciled);
    assert_eq!(s.manifests, 2);
    assert_eq!(s.finished_at_ms, Some(1234));
    assert_eq!(
        (s.key.as_str(), s.pipeline.as_str()),
        ("input/p/f.csv", "p")
    );
    // Latencies merged over both manifests: 10..50 ms.
    assert!((s.latency.max_ms - 50.0).abs() < 0.1, "{:?}", s.latency);
    assert!((s.latency.p50_ms - 30.0).abs() < 0.1, "{:?}", s.latency);
}

#[tokio::test]
async fn the_summary_is_written_to_its_key_and_completes_the_job_the_same_for_two_finishers() {
    let ledger = completing_ledger().await;
    let store = MemStore::new();
    let written = write_summary(JOB, "b", &store, &ledger).await.unwrap();
    let key = keys::summary(JOB);
    assert_eq!(key, "results/j-1/_SUMMARY.json");
    let first = store.get("b", &key).expect("summary written");
    let read: JobSummary = serde_json::from_slice(&first).unwrap();
    assert_eq!(read, written);
    assert_eq!(
        store.object("b", &key).unwrap().content_type,
        "application/json"
    );
    assert_eq!(ledger.job(JOB).unwrap().status, JobStatus::Completed);

    // A second finisher (a redelivery after a crash) writes the very same object.
    write_summary(JOB, "b", &store, &ledger).await.unwrap();
    assert_eq!(store.get("b", &key).unwrap(), first);
    assert_eq!(store.keys("b", ""), [key]);
}

#[tokio::test]
async fn a_stopped_job_is_summarised_failed_with_its_reason() {
    let ledger = MemLedger::new();
    ledger.insert_job(fakes::running_job(JOB, "b", "input/p/f.csv", "p", 1));
    ledger
        .record_manifest(&manifest(0, counts(1, 9, 0, 0), &[10]))
        .await
        .unwrap();
    assert!(ledger.stop_job(JOB, "too many failures").await.unwrap());
    assert!(ledger.claim_completion(JOB, 1).await.unwrap());
    let store = MemStore::new();
    let s = write_summary(JOB, "b", &store, &ledger).await.unwrap();
    assert_eq!(s.status, JobStatus::Failed);
    assert_eq!(s.error.as_deref(), Some("too many failures"));
    assert_eq!(s.input_records, 10);
    assert_eq!(ledger.job(JOB).unwrap().status, JobStatus::Failed);
}

#[tokio::test]
async fn counters_that_disagree_with_the_manifests_or_a_missing_job_fail_the_summary() {
    let ledger = completing_ledger().await;
    ledger.update_job(JOB, |j| j.counts.succeeded += 1);
    let err = build_summary(JOB, &ledger).await.unwrap_err();
    assert!(err.to_string().contains("disagree"), "{err}");
    let store = MemStore::new();
    assert!(write_summary(JOB, "b", &store, &ledger).await.is_err());
    assert!(store.keys("b", "").is_empty(), "nothing written");
    assert_eq!(ledger.job(JOB).unwrap().status, JobStatus::Completing);

    let err = build_summary("j-none", &MemLedger::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
}
