//! Unit tests of the worker's claim and continuation handling, on the shared in-memory fakes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::fakes::{self, Claim, Fakes, MemStore, ScriptedApi};
use fanout_core::config::{ClientConfig, InputFormat, PipelineConfig};
use fanout_core::ledger::{Counts, JobStatus};
use fanout_core::ports::{ByteStream, CallOutcome, ObjectHead, UploadedPart};
use fanout_core::range::ByteRange;
use fanout_core::request::ApiRequest;

struct Fixture {
    deps: WorkerDeps,
    fakes: Fakes,
    manifest: Manifest,
}

/// One manifest over a CSV of `records` records in `s3://b/in.csv` (job `j`, pipeline `p`), with
/// one call in flight at a time, each answered 200 after `delay`.
fn fixture(records: usize, delay: Duration) -> Fixture {
    let mut data = b"id\n".to_vec();
    for i in 0..records {
        data.extend_from_slice(format!("{i}\n").as_bytes());
    }
    let fakes = Fakes::new().with_api(ScriptedApi::ok().with_delay(delay));
    let head = fakes.store.insert("b", "in.csv", data.clone());
    fakes
        .ledger
        .insert_job(fakes::running_job("j", "b", "in.csv", "p", 1));
    let config = PipelineConfig::from_yaml(
        "p.yaml",
        "input: {format: csv}\nrequest: {url: 'http://h/x/{id}'}\nclient: {concurrency: 1}\n",
    )
    .unwrap();
    let manifest = Manifest {
        start_state: None,
        job_id: "j".into(),
        seq: 0,
        part: 0,
        manifests_total: 1,
        bucket: "b".into(),
        key: "in.csv".into(),
        version_id: None,
        etag: head.etag,
        object_size: data.len() as u64,
        range: ByteRange::new(3, data.len() as u64),
        data_start: 3,
        format: InputFormat::Csv,
        header: Some(vec!["id".into()]),
        pipeline: "p".into(),
        config_source: "p.yaml".into(),
        config,
    };
    Fixture {
        deps: fakes.worker_deps(),
        fakes,
        manifest,
    }
}

impl Fixture {
    fn calls(&self) -> u64 {
        self.fakes.api.calls()
    }
    fn job(&self) -> fanout_core::ledger::JobRecord {
        self.fakes.ledger.job("j").unwrap()
    }
    fn lines(&self, key: &str) -> usize {
        self.fakes.store.lines("b", key)
    }
}

#[tokio::test]
async fn a_completed_manifest_is_acknowledged_without_work() {
    let f = fixture(20, Duration::ZERO);
    let first = handle_manifest(&f.manifest, &f.deps, None).await.unwrap();
    assert!(matches!(first, Handled::Processed(_)), "{first:?}");
    assert_eq!(f.calls(), 20);
    assert_eq!(f.job().status, JobStatus::Completed);

    let again = handle_manifest(&f.manifest, &f.deps, None).await.unwrap();
    assert!(matches!(again, Handled::AlreadyDone), "{again:?}");
    assert_eq!(f.calls(), 20, "no call on redelivery");
}

#[tokio::test]
async fn a_live_claim_held_by_another_returns_the_message() {
    let f = fixture(5, Duration::ZERO);
    let far = now_ms() + 60_000;
    f.fakes
        .claims
        .claim("j", "000000", "other", far, now_ms())
        .await
        .unwrap();
    let body = serde_json::to_string(&f.manifest).unwrap();
    let event: SqsEvent =
        serde_json::from_value(serde_json::json!({"Records": [{"messageId": "m1", "body": body}]}))
            .unwrap();
    let response = handle_sqs_event(event, &f.deps).await;
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|b| b.item_identifier.as_str())
        .collect();
    assert_eq!(failed, ["m1"]);
    assert_eq!(f.calls(), 0);

    // Once the holder's claim has expired (it died), the next delivery takes it over.
    f.fakes.claims.set(
        "j",
        "000000",
        Claim::InProgress {
            holder: "other".into(),
            expires_at_ms: now_ms() - 1,
        },
    );
    let taken = handle_manifest(&f.manifest, &f.deps, None).await.unwrap();
    assert!(matches!(taken, Handled::Processed(_)), "{taken:?}");
    assert_eq!(f.calls(), 5);
}

#[tokio::test]
async fn a_holder_that_died_after_recording_leaves_only_the_continuation_to_send() {
    let f = fixture(10, Duration::ZERO);
    f.fakes.ledger.update_job("j", |j| j.manifests_total = 2);
    f.fakes.ledger.insert_manifest(ManifestRecord {
        quote: None,
        job_id: "j".into(),
        seq: 0,
        part: 0,
        continued_at: Some(13),
        counts: Counts::default(),
        duration_ms: 0,
        latency_histogram: Vec::new(),
    });
    let handled = handle_manifest(&f.manifest, &f.deps, None).await.unwrap();
    assert!(matches!(handled, Handled::Processed(_)), "{handled:?}");
    assert_eq!(f.calls(), 0, "no work redone");
    let sent = f.fakes.queue.manifests();
    assert_eq!(sent.len(), 1);
    let next = &sent[0];
    assert_eq!((next.seq, next.part, next.range.start), (0, 1, 13));
    assert!(
        f.fakes.claims.is_completed("j", "000000"),
        "claim completed"
    );
}

#[tokio::test]
async fn at_the_deadline_the_done_prefix_is_recorded_and_the_rest_continued() {
    // 40 records at 50 ms each, one at a time: 2 s of work in a 1.2 s invocation.
    let f = fixture(40, Duration::from_millis(50));
    let stop = StopTimes::new(now_ms() + 1_200, now_ms(), Instant::now());
    let Handled::Processed(record) = handle_manifest(&f.manifest, &f.deps, Some(&stop))
        .await
        .unwrap()
    else {
        panic!("not processed")
    };
    let cut = record.continued_at.expect("a continuation");
    let done = record.counts.records as usize;
    assert!(done > 0 && done < 40, "{done} records done");
    // Record i is at offset 3 + (sum of the lengths of records before it).
    let offsets: Vec<u64> = (0..40u64)
        .scan(3u64, |o, i| {
            let at = *o;
            *o += format!("{i}\n").len() as u64;
            Some(at)
        })
        .collect();
    assert_eq!(cut, offsets[done], "cut at the first record not done");
    assert_eq!(f.lines("results/j/part-000000.jsonl"), done);
    let job = f.job();
    assert_eq!((job.manifests_total, job.manifests_done), (2, 1));

    // The continuation, delivered, does the rest; the job completes with every record once.
    let next = f.fakes.queue.manifests().remove(0);
    handle_manifest(&next, &f.deps, None).await.unwrap();
    assert_eq!(f.lines("results/j/part-000000.001.jsonl"), 40 - done);
    let job = f.job();
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(job.counts.succeeded, 40);
    assert!(f.fakes.store.contains("b", "results/j/_SUMMARY.json"));
}

/// Writes after `delay`, and logs when each write ends.
struct SlowPuts {
    inner: Arc<MemStore>,
    delay: Duration,
    log: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl ObjectStore for SlowPuts {
    async fn head(&self, b: &str, key: &str, v: Option<&str>) -> anyhow::Result<ObjectHead> {
        self.inner.head(b, key, v).await
    }
    async fn get_range(
        &self,
        b: &str,
        key: &str,
        v: Option<&str>,
        e: Option<&str>,
        range: ByteRange,
    ) -> anyhow::Result<ByteStream> {
        self.inner.get_range(b, key, v, e, range).await
    }
    async fn get_small(&self, b: &str, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        self.inner.get_small(b, key).await
    }
    async fn put(&self, b: &str, key: &str, body: Vec<u8>, t: &str) -> anyhow::Result<()> {
        tokio::time::sleep(self.delay).await;
        self.log.lock().unwrap().push(format!("put {key}"));
        self.inner.put(b, key, body, t).await
    }
    async fn delete(&self, b: &str, key: &str) -> anyhow::Result<()> {
        self.inner.delete(b, key).await
    }
    async fn create_multipart(&self, b: &str, key: &str, t: &str) -> anyhow::Result<String> {
        self.inner.create_multipart(b, key, t).await
    }
    async fn upload_part(
        &self,
        b: &str,
        key: &str,
        id: &str,
        n: i32,
        body: Vec<u8>,
    ) -> anyhow::Result<String> {
        self.inner.upload_part(b, key, id, n, body).await
    }
    async fn complete_multipart(
        &self,
        b: &str,
        key: &str,
        id: &str,
        parts: &[UploadedPart],
    ) -> anyhow::Result<()> {
        self.inner.complete_multipart(b, key, id, parts).await
    }
    async fn abort_multipart(&self, b: &str, key: &str, id: &str) -> anyhow::Result<()> {
        self.inner.abort_multipart(b, key, id).await
    }
}

/// Logs each call's URL, then answers as `inner` does.
struct LoggedApi {
    inner: Arc<ScriptedApi>,
    log: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl ApiClient for LoggedApi {
    async fn call(&self, request: &ApiRequest, config: &ClientConfig) -> CallOutcome {
        self.log
            .lock()
            .unwrap()
            .push(format!("call {}", request.url));
        self.inner.call(request, config).await
    }
}

#[tokio::test(start_paused = true)]
async fn the_next_manifest_of_a_batch_calls_while_the_one_before_writes_its_output() {
    // Records 0..=9; manifest 0 holds 0..=4 (offsets 3..13), manifest 1 holds 5..=9.
    let mut f = fixture(10, Duration::from_millis(10));
    let log = Arc::new(Mutex::new(Vec::new()));
    f.deps.store = Arc::new(SlowPuts {
        inner: f.fakes.store.clone(),
        delay: Duration::from_secs(1),
        log: log.clone(),
    });
    f.deps.api = Arc::new(LoggedApi {
        inner: f.fakes.api.clone(),
        log: log.clone(),
    });
    f.fakes.ledger.update_job("j", |j| j.manifests_total = 2);
    let end = f.manifest.range.end;
    let mut first = f.manifest.clone();
    first.manifests_total = 2;
    first.range = ByteRange::new(3, 13);
    let mut second = first.clone();
    second.seq = 1;
    second.range = ByteRange::new(13, end);
    let records: Vec<_> = [("m0", &first), ("m1", &second)]
        .iter()
        .map(|(id, m)| serde_json::json!({"messageId": id, "body": serde_json::to_string(m).unwrap()}))
        .collect();
    let event: SqsEvent =
        serde_json::from_value(serde_json::json!({ "Records": records })).unwrap();

    let started = Instant::now();
    let response = handle_sqs_event(event, &f.deps).await;
    let took = started.elapsed();

    assert!(response.batch_item_failures.is_empty());
    let job = f.job();
    assert_eq!(
        (job.status, job.counts.succeeded),
        (JobStatus::Completed, 10)
    );
    assert_eq!(f.lines("results/j/part-000000.jsonl"), 5);
    assert_eq!(f.lines("results/j/part-000001.jsonl"), 5);
    let log = log.lock().unwrap().clone();
    let position = |entry: &str| {
        log.iter()
            .position(|e| e == entry)
            .unwrap_or_else(|| panic!("{entry} in {log:?}"))
    };
    assert!(
        position("call http://h/x/5") < position("put results/j/part-000000.jsonl"),
        "manifest 1 started calling while manifest 0 wrote its output: {log:?}"
    );
    // Worked one after the other, the two 1 s writes would add up (and the summary's too).
    assert!(took < Duration::from_millis(2900), "took {took:?}");
}

#[tokio::test]
async fn a_second_copy_in_the_same_batch_is_acknowledged_without_work() {
    let f = fixture(5, Duration::from_millis(10));
    let body = serde_json::to_string(&f.manifest).unwrap();
    let event: SqsEvent = serde_json::from_value(serde_json::json!({"Records": [
        {"messageId": "m1", "body": body},
        {"messageId": "m2", "body": body},
    ]}))
    .unwrap();
    let response = handle_sqs_event(event, &f.deps).await;
    assert!(
        response.batch_item_failures.is_empty(),
        "neither copy goes back to the queue: {response:?}"
    );
    assert_eq!(f.calls(), 5, "worked once");
    assert_eq!(f.lines("results/j/part-000000.jsonl"), 5);
}

/// A CSV whose one quoted field (`"x\n2,b\n2,b\n…"`) spans two range boundaries and looks like
/// plain records from inside: both ranges guess "unquoted" and are wrong. Once all three are
/// recorded, the last finisher opens a redo of ranges 1 and 2 from their true (quoted) state;
/// the redos replace those ranges' output and counts, and the job then holds each record once.
#[tokio::test]
async fn ranges_guessed_wrong_are_redone_and_replace_their_output() {
    let mut data = b"id,name\n1,\"x\n".to_vec();
    for _ in 0..20_000 {
        data.extend_from_slice(b"2,b\n");
    }
    data.extend_from_slice(b"\"\n3,c\n");
    let closing = data.len() as u64 - 6;
    let fakes = Fakes::new().with_api(ScriptedApi::ok());
    let head = fakes.store.insert("b", "in.csv", data.clone());
    let config = PipelineConfig::from_yaml(
        "p.yaml",
        "input: {format: csv}\nrequest: {url: 'http://h/x/{id}'}\nsplit: {chunk_bytes: 40000}\n",
    )
    .unwrap();
    let ranges = fanout_core::range::plan_ranges(8, data.len() as u64, 40_000);
    assert_eq!(ranges.len(), 3);
    fakes
        .ledger
        .insert_job(fakes::running_job("j", "b", "in.csv", "p", 3));
    let deps = fakes.worker_deps();
    for (seq, range) in ranges.iter().enumerate() {
        let m = Manifest {
            start_state: None,
            job_id: "j".into(),
            seq: seq as u32,
            part: 0,
            manifests_total: 3,
            bucket: "b".into(),
            key: "in.csv".into(),
            version_id: None,
            etag: head.etag.clone(),
            object_size: data.len() as u64,
            range: *range,
            data_start: 8,
            format: InputFormat::Csv,
            header: Some(vec!["id".into(), "name".into()]),
            pipeline: "p".into(),
            config_source: "p.yaml".into(),
            config: config.clone(),
        };
        handle_manifest(&m, &deps, None).await.unwrap();
    }
    // The wrong guesses sent the inside of the quoted field as records; the job waits for redos.
    assert!(fakes.api.calls() > 10_000);
    let job = fakes.ledger.job("j").unwrap();
    assert_eq!(job.status, JobStatus::Running);
    let redo: Vec<(u32, fanout_core::quote::QState)> = job
        .redo
        .clone()
        .unwrap()
        .iter()
        .map(|r| (r.seq, r.start))
        .collect();
    use fanout_core::quote::QState::Quoted;
    assert_eq!(redo, [(1, Quoted), (2, Quoted)]);
    let redos = fakes.queue.manifests();
    assert_eq!(redos.len(), 2);
    for m in &redos {
        assert_eq!(m.part, fanout_core::manifest::REDO_PART);
        handle_manifest(m, &deps, None).await.unwrap();
    }
    let job = fakes.ledger.job("j").unwrap();
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(job.counts.records, 2);
    let mut offsets: Vec<u64> = fakes
        .store
        .keys("b", "results/j/part-")
        .iter()
        .flat_map(|k| fakes.store.jsonl("b", k))
        .map(|l| l["offset"].as_u64().unwrap())
        .collect();
    offsets.sort_unstable();
    assert_eq!(offsets, [8, closing + 2]);
    let summary: serde_json::Value =
        serde_json::from_slice(&fakes.store.get("b", "results/j/_SUMMARY.json").unwrap()).unwrap();
    assert_eq!(summary["input_records"], 2, "{summary}");
    assert_eq!(summary["reconciled"], true, "{summary}");
}

/// Answers the record with id 0 after a minute (tokio time), every other one at once, as `inner`
/// does; and notes how many calls had been made when the slow one answered.
struct SlowHead {
    inner: ScriptedApi,
    calls: std::sync::atomic::AtomicU64,
    made_when_head_answered: std::sync::atomic::AtomicU64,
}

#[async_trait]
impl ApiClient for SlowHead {
    async fn call(&self, request: &ApiRequest, config: &ClientConfig) -> CallOutcome {
        use std::sync::atomic::Ordering::SeqCst;
        self.calls.fetch_add(1, SeqCst);
        if request.url.ends_with("/0") {
            tokio::time::sleep(Duration::from_secs(60)).await;
            (self.made_when_head_answered).store(self.calls.load(SeqCst), SeqCst);
        }
        self.inner.call(request, config).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_head_record_holds_reading_to_the_budget_and_the_part_is_still_whole() {
    // 600 records of 64 KiB (about 38 MiB, over twice the budget); the first answers last.
    let mut f = fixture(0, Duration::ZERO);
    let pad = "p".repeat(64 << 10);
    let mut data = b"id,pad\n".to_vec();
    let mut offsets = Vec::new();
    for i in 0..600 {
        offsets.push(data.len() as u64);
        data.extend_from_slice(format!("{i},{pad}\n").as_bytes());
    }
    let head = f.fakes.store.insert("b", "in.csv", data.clone());
    f.manifest.config = PipelineConfig::from_yaml(
        "p.yaml",
        "input: {format: csv}\nrequest: {url: 'http://h/x/{id}', body: {pad: '{pad}'}}\n",
    )
    .unwrap();
    (f.manifest.etag, f.manifest.object_size) = (head.etag, data.len() as u64);
    f.manifest.header = Some(vec!["id".into(), "pad".into()]);
    f.manifest.range = ByteRange::new(7, data.len() as u64);
    f.manifest.data_start = 7;
    let api = Arc::new(SlowHead {
        inner: ScriptedApi::ok(),
        calls: Default::default(),
        made_when_head_answered: Default::default(),
    });
    f.deps.api = api.clone();
    let Handled::Processed(record) = handle_manifest(&f.manifest, &f.deps, None).await.unwrap()
    else {
        panic!("not processed")
    };
    // Each record weighs its bytes twice (its line and its request's body): while the head was
    // out, no more records than the budget holds were taken. Without the budget, all 600 were.
    let made = api
        .made_when_head_answered
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        made as usize <= release::BUDGET_BYTES / (2 * (64 << 10)) + 1,
        "{made} calls"
    );
    assert!(
        made < 300,
        "{made} calls: bounded by the range, not the budget"
    );
    assert!(made > 1, "the others went on while the head was out");
    assert_eq!(record.counts.succeeded, 600);
    let lines = f.fakes.store.jsonl("b", "results/j/part-000000.jsonl");
    let written: Vec<u64> = lines
        .iter()
        .map(|l| l["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(written, offsets, "every record once, in offset order");
}
