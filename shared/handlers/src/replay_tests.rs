//! Unit tests of replay, on the shared in-memory fakes: a job is split and worked by the real
//! splitter and worker, then replayed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use crate::fakes::{self, Answer, Claim, Fakes, ScriptedApi};
use crate::splitter::{self, SplitOutcome};
use fanout_core::ledger::{JobRecord, JobStatus, now_ms};

const BUCKET: &str = "b";
const KEY: &str = "input/p/data.csv";
/// Manifests of at most 32 bytes (several per job).
const CONFIG: &str =
    "input: {format: csv}\nrequest: {url: 'http://h/x/{id}'}\nsplit: {chunk_bytes: 32}\n";

/// The record ids of the input: 0..40.
const RECORDS: u64 = 40;

fn csv() -> Vec<u8> {
    let mut data = b"id\n".to_vec();
    for i in 0..RECORDS {
        data.extend_from_slice(format!("{i}\n").as_bytes());
    }
    data
}

/// The id in a request's URL.
fn id_of(url: &str) -> u64 {
    url.rsplit('/').next().unwrap().parse().unwrap()
}

/// An API that fails every third record (503) until `healthy` is set, and then fails only the
/// records `still_failing` says.
fn flaky(healthy: Arc<AtomicBool>, still_failing: fn(u64) -> bool) -> ScriptedApi {
    ScriptedApi::new(move |request| {
        let id = id_of(&request.url);
        let fails = if healthy.load(Ordering::SeqCst) {
            still_failing(id)
        } else {
            id.is_multiple_of(3)
        };
        if fails {
            Answer::status(503)
        } else {
            Answer::ok()
        }
    })
}

/// Splits the input and returns the job id and its manifests (not yet worked).
async fn split(fakes: &Fakes) -> (String, Vec<Manifest>) {
    fakes.store.insert(BUCKET, "pipelines/p.yaml", CONFIG);
    fakes.store.insert(BUCKET, KEY, csv());
    let event = fakes::s3_event("ObjectCreated:Put", BUCKET, KEY, None);
    let outcomes = splitter::handle_s3_event(event, &fakes.splitter_deps())
        .await
        .unwrap();
    let [SplitOutcome::Started { job_id, manifests }] = &outcomes[..] else {
        panic!("not started: {outcomes:?}")
    };
    let sent = fakes.queue.manifests();
    assert_eq!(sent.len(), *manifests as usize);
    assert!(sent.len() >= 3, "several manifests");
    (job_id.clone(), sent)
}

/// Splits and works the whole job.
async fn finished_job(fakes: &Fakes) -> String {
    let (job_id, manifests) = split(fakes).await;
    let deps = fakes.worker_deps();
    for m in &manifests {
        worker::handle_manifest(m, &deps, None).await.unwrap();
    }
    job_id
}

fn assert_reconciled(fakes: &Fakes, job: &JobRecord) {
    let mut total = Counts::default();
    for m in fakes.ledger.manifest_records(&job.job_id) {
        assert!(m.counts.reconciles(), "{m:?}");
        total.add(&m.counts);
    }
    assert_eq!(
        total, job.counts,
        "job counters are the sum of its manifests'"
    );
    assert_eq!(
        job.counts.succeeded + job.counts.failed + job.counts.rejected,
        RECORDS
    );
}

/// The offsets in every part under `prefix`.
fn offsets(fakes: &Fakes, prefix: &str) -> Vec<u64> {
    let mut out: Vec<u64> = fakes
        .store
        .keys(BUCKET, prefix)
        .iter()
        .filter(|k| k.ends_with(".jsonl"))
        .flat_map(|k| fakes.store.jsonl(BUCKET, k))
        .map(|l| l["offset"].as_u64().unwrap())
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn failed_records_that_now_succeed_move_to_results_and_the_counts_add_up() {
    let healthy = Arc::new(AtomicBool::new(false));
    let fakes = Fakes::new().with_api(flaky(healthy.clone(), |_| false));
    let job_id = finished_job(&fakes).await;
    let before = fakes.ledger.job(&job_id).unwrap();
    assert_eq!(before.status, JobStatus::Completed);
    let failed_before = before.counts.failed;
    assert_eq!(
        failed_before,
        RECORDS.div_ceil(3),
        "ids 0, 3, ..., 39 failed"
    );
    assert_eq!(
        offsets(&fakes, &format!("failed/{job_id}/")).len() as u64,
        failed_before
    );

    healthy.store(true, Ordering::SeqCst);
    let calls_before = fakes.api.calls();
    let report = replay(&job_id, BUCKET, &fakes.replay_deps()).await.unwrap();

    assert_eq!(
        (report.replayed, report.now_succeeded, report.still_failed),
        (failed_before, failed_before, 0)
    );
    assert_eq!(
        fakes.api.calls() - calls_before,
        failed_before,
        "only the failed are sent"
    );
    assert!(
        fakes
            .store
            .keys(BUCKET, &format!("failed/{job_id}/"))
            .is_empty(),
        "no failed part left"
    );
    assert_eq!(
        offsets(&fakes, &format!("results/{job_id}/")).len() as u64,
        RECORDS,
        "every record in results/ once"
    );
    let job = fakes.ledger.job(&job_id).unwrap();
    assert_eq!((job.counts.succeeded, job.counts.failed), (RECORDS, 0));
    assert_reconciled(&fakes, &job);
    let summary: serde_json::Value = serde_json::from_slice(
        &fakes
            .store
            .get(BUCKET, &fanout_core::manifest::keys::summary(&job_id))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (
            &summary["succeeded"],
            &summary["failed"],
            &summary["input_records"]
        ),
        (&RECORDS.into(), &0.into(), &RECORDS.into())
    );
}

#[tokio::test]
async fn records_that_fail_again_stay_in_failed_with_their_new_error() {
    let healthy = Arc::new(AtomicBool::new(false));
    // After the outage, ids divisible by 9 still fail: 0, 9, 18, 27, 36.
    let fakes = Fakes::new().with_api(flaky(healthy.clone(), |id| id.is_multiple_of(9)));
    let job_id = finished_job(&fakes).await;
    let failed_before = fakes.ledger.job(&job_id).unwrap().counts.failed;
    healthy.store(true, Ordering::SeqCst);

    let report = replay(&job_id, BUCKET, &fakes.replay_deps()).await.unwrap();
    assert_eq!(report.replayed, failed_before);
    assert_eq!(
        (report.now_succeeded, report.still_failed),
        (failed_before - 5, 5)
    );
    let failed: Vec<serde_json::Value> = fakes
        .store
        .keys(BUCKET, &format!("failed/{job_id}/"))
        .iter()
        .flat_map(|k| fakes.store.jsonl(BUCKET, k))
        .collect();
    let ids: Vec<u64> = failed
        .iter()
        .map(|l| l["record"].as_str().unwrap().trim().parse().unwrap())
        .collect();
    assert_eq!(ids.len(), 5);
    assert!(ids.iter().all(|id| id.is_multiple_of(9)), "{ids:?}");
    assert!(failed.iter().all(|l| l["error"] == "HTTP 503"));
    let job = fakes.ledger.job(&job_id).unwrap();
    assert_eq!((job.counts.succeeded, job.counts.failed), (RECORDS - 5, 5));
    assert_reconciled(&fakes, &job);

    // A second replay sends only those five again.
    let again = replay(&job_id, BUCKET, &fakes.replay_deps()).await.unwrap();
    assert_eq!((again.replayed, again.still_failed), (5, 5));
    assert_reconciled(&fakes, &fakes.ledger.job(&job_id).unwrap());
}

#[tokio::test]
async fn a_dead_letter_of_the_job_is_worked_and_deleted_another_jobs_is_released() {
    let fakes = Fakes::new();
    let (job_id, manifests) = split(&fakes).await;
    let deps = fakes.worker_deps();
    // Every manifest but the last was worked; the last went to the DLQ.
    let (dead, worked) = manifests.split_last().unwrap();
    for m in worked {
        worker::handle_manifest(m, &deps, None).await.unwrap();
    }
    assert_eq!(
        fakes.ledger.job(&job_id).unwrap().status,
        JobStatus::Running
    );
    let ours = fakes.dead_letters.push_manifest(dead);
    let mut other = dead.clone();
    other.job_id = "j-another".into();
    let theirs = fakes.dead_letters.push_manifest(&other);
    let garbage = fakes.dead_letters.push("not a manifest");

    let report = replay(&job_id, BUCKET, &fakes.replay_deps()).await.unwrap();

    assert_eq!((report.dlq_manifests, report.dlq_left), (1, 0));
    assert_eq!(fakes.dead_letters.deleted(), [ours]);
    // Released, so still in the queue and visible at once: the replay's last receive, which
    // finds only messages it has seen, hands them back too.
    assert_eq!(
        fakes.dead_letters.remaining(),
        [theirs.clone(), garbage.clone()]
    );
    assert_eq!(fakes.dead_letters.visible(), [theirs, garbage]);
    let job = fakes.ledger.job(&job_id).unwrap();
    assert_eq!(
        job.status,
        JobStatus::Completed,
        "the DLQ manifest finished the job"
    );
    assert_eq!(job.counts.succeeded, RECORDS);
    assert!(fakes.claims.is_completed(&job_id, &dead.unit_id()));
    assert_eq!(report.replayed, 0, "nothing had failed");
}

#[tokio::test]
async fn a_dead_letter_held_by_a_live_invocation_is_left_in_the_queue() {
    let fakes = Fakes::new();
    let (job_id, manifests) = split(&fakes).await;
    let dead = &manifests[0];
    fakes.claims.set(
        &job_id,
        &dead.unit_id(),
        Claim::InProgress {
            holder: "another".into(),
            expires_at_ms: now_ms() + 60_000,
        },
    );
    let id = fakes.dead_letters.push_manifest(dead);

    let mut report = ReplayReport::default();
    replay_dead_letters(&job_id, &fakes.replay_deps(), &mut report)
        .await
        .unwrap();
    assert_eq!((report.dlq_manifests, report.dlq_left), (0, 1));
    assert!(fakes.dead_letters.deleted().is_empty());
    assert_eq!(fakes.dead_letters.remaining(), [id]);
    assert_eq!(fakes.api.calls(), 0);

    // The job is not final: its failed records cannot be replayed yet.
    let err = replay_failed(&job_id, BUCKET, &fakes.replay_deps(), &mut report)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is RUNNING"), "{err}");
}

/// Replay sends the failed records with the config the job ran with, as its splitter resolved
/// it (here with the stack's base URL for `{{API_BASE_URL}}`), even after the stored config has
/// changed: the failures are retried as they were made.
#[tokio::test]
async fn replay_uses_the_config_the_job_ran_with() {
    let healthy = Arc::new(AtomicBool::new(false));
    let fakes = Fakes::new().with_api(flaky(healthy.clone(), |_| false));
    fakes.store.insert(
        BUCKET,
        "pipelines/p.yaml",
        CONFIG.replace("http://h/x", "{{API_BASE_URL}}/x"),
    );
    fakes.store.insert(BUCKET, KEY, csv());
    let deps = crate::splitter::SplitterDeps {
        defaults: fanout_core::stack_defaults::StackDefaults {
            api_base_url: Some("http://stack-api".into()),
            ..Default::default()
        },
        ..fakes.splitter_deps()
    };
    let event = fakes::s3_event("ObjectCreated:Put", BUCKET, KEY, None);
    let outcomes = splitter::handle_s3_event(event, &deps).await.unwrap();
    let [SplitOutcome::Started { job_id, .. }] = &outcomes[..] else {
        panic!("not started: {outcomes:?}")
    };
    let recorded = fakes
        .ledger
        .job(job_id)
        .unwrap()
        .config
        .expect("config recorded");
    assert_eq!(recorded.request.url, "http://stack-api/x/{id}");
    let worker = fakes.worker_deps();
    for m in &fakes.queue.manifests() {
        worker::handle_manifest(m, &worker, None).await.unwrap();
    }
    let failed = fakes.ledger.job(job_id).unwrap().counts.failed;
    assert!(failed > 0);

    // The stored config changes (it would no longer even parse); the job's does not.
    fakes
        .store
        .insert(BUCKET, "pipelines/p.yaml", "request: [not, a, config]");
    healthy.store(true, Ordering::SeqCst);
    let sent_before = fakes.api.urls().len();
    let report = replay(job_id, BUCKET, &fakes.replay_deps()).await.unwrap();
    assert_eq!((report.replayed, report.now_succeeded), (failed, failed));
    let urls = fakes.api.urls();
    assert!(
        urls[sent_before..]
            .iter()
            .all(|u| u.starts_with("http://stack-api/x/")),
        "{:?}",
        &urls[sent_before..]
    );
}
