//! Unit tests of the splitter, on the shared in-memory fakes.

use std::collections::BTreeSet;

use super::*;
use crate::fakes::{self, Fakes};
use crate::worker::{self, Handled};
use fanout_core::ledger::JobStatus;
use fanout_core::metrics::JOBS_FAILED;

const BUCKET: &str = "b";
const KEY: &str = "input/p/data.csv";
/// Manifests of at most 16 bytes (the smallest `split.chunk_bytes` is 1).
const CONFIG: &str =
    "input: {format: csv}\nrequest: {url: 'http://h/x/{id}'}\nsplit: {chunk_bytes: 16}\n";

/// `records` CSV records (`id` column, values 0..records) after a header row.
fn csv(records: usize) -> Vec<u8> {
    let mut data = b"id\n".to_vec();
    for i in 0..records {
        data.extend_from_slice(format!("{i}\n").as_bytes());
    }
    data
}

/// Fakes holding pipeline `p`'s config (`config`) and `data` at [`KEY`].
fn fakes_with(config: Option<&str>, data: Vec<u8>) -> (Fakes, ObjectHead) {
    let fakes = Fakes::new();
    if let Some(config) = config {
        fakes.store.insert(BUCKET, "pipelines/p.yaml", config);
    }
    let head = fakes.store.insert(BUCKET, KEY, data);
    (fakes, head)
}

async fn split(fakes: &Fakes, key: &str) -> SplitOutcome {
    let event = fakes::s3_event("ObjectCreated:Put", BUCKET, key, None);
    let mut outcomes = handle_s3_event(event, &fakes.splitter_deps())
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 1);
    outcomes.remove(0)
}

#[tokio::test]
async fn an_upload_enqueues_manifests_covering_the_object_once_and_opens_the_job() {
    let data = csv(100);
    let (fakes, head) = fakes_with(Some(CONFIG), data.clone());
    let outcome = split(&fakes, KEY).await;

    let job_id = job_id(BUCKET, KEY, &head.etag);
    let SplitOutcome::Started {
        job_id: started,
        manifests,
    } = outcome
    else {
        panic!("not started: {outcome:?}")
    };
    assert_eq!(started, job_id);
    let size = data.len() as u64;
    // 3 header bytes, then 16-byte ranges.
    assert_eq!(u64::from(manifests), (size - 3).div_ceil(16));
    let mut sent = fakes.queue.manifests();
    assert_eq!(sent.len(), manifests as usize);
    assert_eq!(
        fakes.queue.batches(),
        sent.len().div_ceil(10),
        "10 per batch"
    );
    sent.sort_by_key(|m| m.range.start);
    // Contiguous from the first data byte to the end: every byte in exactly one manifest.
    assert_eq!(sent[0].range.start, 3);
    for pair in sent.windows(2) {
        assert_eq!(pair[0].range.end, pair[1].range.start);
    }
    assert_eq!(sent.last().unwrap().range.end, size);
    let seqs: BTreeSet<u32> = sent.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (0..manifests).collect());
    for m in &sent {
        assert_eq!(
            (
                m.job_id.as_str(),
                m.part,
                m.manifests_total,
                m.data_start,
                m.object_size
            ),
            (job_id.as_str(), 0, manifests, 3, size)
        );
        assert_eq!(m.etag, head.etag);
        assert_eq!(m.header.as_deref(), Some(&["id".to_string()][..]));
    }
    let job = fakes.ledger.job(&job_id).expect("job in the ledger");
    assert_eq!(
        (job.status, job.manifests_total, job.manifests_done),
        (JobStatus::Running, manifests, 0)
    );
    assert_eq!((job.key.as_str(), job.pipeline.as_str()), (KEY, "p"));

    // Worked, the manifests send every record exactly once and complete the job.
    let deps = fakes.worker_deps();
    for m in &sent {
        let handled = worker::handle_manifest(m, &deps, None).await.unwrap();
        assert!(matches!(handled, Handled::Processed(_)), "{handled:?}");
    }
    let mut urls = fakes.api.urls();
    urls.sort();
    let mut expected: Vec<String> = (0..100).map(|i| format!("http://h/x/{i}")).collect();
    expected.sort();
    assert_eq!(urls, expected);
    let job = fakes.ledger.job(&job_id).unwrap();
    assert_eq!(
        (job.status, job.counts.succeeded, job.counts.records),
        (JobStatus::Completed, 100, 100)
    );
}

#[tokio::test]
async fn a_duplicate_event_finds_the_job_and_enqueues_nothing_more() {
    let (fakes, head) = fakes_with(Some(CONFIG), csv(20));
    let first = split(&fakes, KEY).await;
    assert!(matches!(first, SplitOutcome::Started { .. }), "{first:?}");
    let sent = fakes.queue.len();
    assert!(sent > 0);

    let again = split(&fakes, KEY).await;
    assert_eq!(
        again,
        SplitOutcome::Duplicate {
            job_id: job_id(BUCKET, KEY, &head.etag),
            status: JobStatus::Running,
        }
    );
    assert_eq!(fakes.queue.len(), sent, "nothing enqueued again");
    assert_eq!(fakes.ledger.job_ids().len(), 1);
}

#[tokio::test]
async fn a_job_left_splitting_by_a_crash_is_enqueued_again_in_full() {
    let (fakes, head) = fakes_with(Some(CONFIG), csv(20));
    let job_id = job_id(BUCKET, KEY, &head.etag);
    let mut crashed = fakes::running_job(&job_id, BUCKET, KEY, "p", 0);
    crashed.status = JobStatus::Splitting;
    fakes.ledger.insert_job(crashed);

    let outcome = split(&fakes, KEY).await;
    let SplitOutcome::Started { manifests, .. } = outcome else {
        panic!("not started: {outcome:?}")
    };
    assert!(manifests > 0);
    assert_eq!(fakes.queue.len(), manifests as usize);
    assert_eq!(
        fakes.ledger.job(&job_id).unwrap().status,
        JobStatus::Running
    );
}

#[tokio::test]
async fn a_bad_config_fails_the_job_before_anything_is_enqueued() {
    let bad = format!("{CONFIG}client: {{concurrency: 0}}\n");
    let (fakes, head) = fakes_with(Some(&bad), csv(20));
    let outcome = split(&fakes, KEY).await;

    let job_id = job_id(BUCKET, KEY, &head.etag);
    let SplitOutcome::Failed {
        job_id: failed,
        error,
    } = outcome
    else {
        panic!("not failed: {outcome:?}")
    };
    assert_eq!(failed, job_id);
    assert!(
        error.contains("s3://b/pipelines/p.yaml") && error.contains("client.concurrency"),
        "the error names the file and the field: {error}"
    );
    assert!(fakes.queue.is_empty(), "nothing enqueued");
    let job = fakes.ledger.job(&job_id).expect("job in the ledger");
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.error.as_deref(), Some(error.as_str()));
    assert!(job.finished_at_ms.is_some());
    assert_eq!(fakes.metrics.total(JOBS_FAILED), 1.0, "JobsFailed counted");
}

#[tokio::test]
async fn a_missing_config_or_a_header_without_the_placeholder_fails_the_job() {
    let (fakes, _) = fakes_with(None, csv(5));
    let SplitOutcome::Failed { error, .. } = split(&fakes, KEY).await else {
        panic!("not failed")
    };
    assert!(
        error.contains("s3://b/pipelines/p.yaml: pipeline config not found"),
        "{error}"
    );
    assert!(fakes.queue.is_empty());

    let no_column = CONFIG.replace("{id}", "{name}");
    let (fakes, _) = fakes_with(Some(&no_column), csv(5));
    let SplitOutcome::Failed { error, job_id } = split(&fakes, KEY).await else {
        panic!("not failed")
    };
    assert!(
        error.contains("request.url") && error.contains("{name}"),
        "{error}"
    );
    assert!(fakes.queue.is_empty());
    assert_eq!(fakes.ledger.job(&job_id).unwrap().status, JobStatus::Failed);
}

#[tokio::test]
async fn objects_outside_input_and_other_events_are_ignored() {
    let (fakes, _) = fakes_with(Some(CONFIG), csv(5));
    fakes.store.insert(BUCKET, "other/p/data.csv", csv(5));
    let outcome = split(&fakes, "other/p/data.csv").await;
    assert!(
        matches!(&outcome, SplitOutcome::Ignored { key, .. } if key == "other/p/data.csv"),
        "{outcome:?}"
    );
    let removed = fakes::s3_event("ObjectRemoved:Delete", BUCKET, KEY, None);
    let outcomes = handle_s3_event(removed, &fakes.splitter_deps())
        .await
        .unwrap();
    assert!(
        matches!(&outcomes[..], [SplitOutcome::Ignored { reason, .. }] if reason.contains("ObjectRemoved")),
        "{outcomes:?}"
    );
    assert!(fakes.queue.is_empty());
    assert!(fakes.ledger.job_ids().is_empty(), "no job opened");
}

#[tokio::test]
async fn a_header_only_csv_completes_at_once_with_a_summary() {
    let (fakes, head) = fakes_with(Some(CONFIG), csv(0));
    let outcome = split(&fakes, KEY).await;
    let job_id = job_id(BUCKET, KEY, &head.etag);
    assert_eq!(
        outcome,
        SplitOutcome::Started {
            job_id: job_id.clone(),
            manifests: 0
        }
    );
    assert!(fakes.queue.is_empty());
    assert_eq!(
        fakes.ledger.job(&job_id).unwrap().status,
        JobStatus::Completed
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&fakes.store.get(BUCKET, &keys::summary(&job_id)).unwrap()).unwrap();
    assert_eq!(summary["input_records"], 0);
    assert_eq!(summary["status"], "COMPLETED");
}

#[tokio::test]
async fn an_event_key_is_decoded_before_use() {
    let key = "input/p/my file+1.csv";
    let (fakes, _) = fakes_with(Some(CONFIG), Vec::new());
    let head = fakes.store.insert(BUCKET, key, csv(3));
    let outcome = split(&fakes, key).await;
    assert!(
        matches!(outcome, SplitOutcome::Started { .. }),
        "{outcome:?}"
    );
    let job = fakes
        .ledger
        .job(&job_id(BUCKET, key, &head.etag))
        .expect("job under the decoded key");
    assert_eq!(job.key, key);
}

/// The manifests are made a batch at a time from the plan: ten to a batch (the last has the
/// rest), each entry's id its seq, each manifest the template with its own seq and range and
/// nothing else changed.
#[tokio::test]
async fn manifest_batches_make_each_manifest_from_the_template() {
    let (fakes, _) = fakes_with(Some(CONFIG), csv(100));
    split(&fakes, KEY).await;
    let mut template = fakes.queue.manifests().remove(0);
    // Another seq and range than the first manifest's: each manifest must set both.
    template.seq = 7;
    template.range = ByteRange::new(0, 1);
    let ranges = plan_ranges(3, 3 + 16 * 25 + 5, 16);
    assert_eq!(ranges.len(), 26);

    let batches: Vec<Vec<(String, String)>> = manifest_batches(template.clone(), &ranges)
        .collect::<anyhow::Result<_>>()
        .unwrap();
    assert_eq!(
        batches.iter().map(Vec::len).collect::<Vec<_>>(),
        [10, 10, 6]
    );
    let entries: Vec<(String, String)> = batches.into_iter().flatten().collect();
    for (seq, ((id, body), range)) in entries.iter().zip(&ranges).enumerate() {
        assert_eq!(id, &seq.to_string());
        let manifest: Manifest = serde_json::from_str(body).unwrap();
        let expected = Manifest {
            seq: seq as u32,
            range: *range,
            ..template.clone()
        };
        assert_eq!(manifest, expected);
    }
    assert_eq!(manifest_batches(template, &[]).count(), 0);
}
