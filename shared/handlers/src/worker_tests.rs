//! Unit tests of the worker's claim and continuation handling, on in-memory ports.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::*;
use fanout_core::config::{ClientConfig, InputFormat, PipelineConfig};
use fanout_core::ledger::{CreateOutcome, JobRecord, JobStatus};
use fanout_core::ports::{ByteStream, CallOutcome, ObjectHead};

#[derive(Default)]
struct Store(Mutex<HashMap<String, Vec<u8>>>);

#[async_trait]
impl ObjectStore for Store {
    async fn head(&self, _: &str, key: &str, _: Option<&str>) -> anyhow::Result<ObjectHead> {
        let size = self.0.lock().unwrap()[key].len() as u64;
        Ok(ObjectHead {
            size,
            etag: "e".into(),
            version_id: None,
        })
    }
    async fn get_range(
        &self,
        _: &str,
        key: &str,
        _: Option<&str>,
        _: Option<&str>,
        range: ByteRange,
    ) -> anyhow::Result<ByteStream> {
        let data = self.0.lock().unwrap()[key].clone();
        let end = (range.end as usize).min(data.len());
        let chunk = Bytes::copy_from_slice(&data[range.start as usize..end]);
        Ok(Box::pin(futures::stream::iter([Ok(chunk)])))
    }
    async fn get_small(&self, _: &str, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(self.0.lock().unwrap().get(key).cloned())
    }
    async fn put(&self, _: &str, key: &str, body: Vec<u8>, _: &str) -> anyhow::Result<()> {
        self.0.lock().unwrap().insert(key.into(), body);
        Ok(())
    }
    async fn delete(&self, _: &str, key: &str) -> anyhow::Result<()> {
        self.0.lock().unwrap().remove(key);
        Ok(())
    }
}

#[derive(Default)]
struct Ledger {
    job: Mutex<Option<JobRecord>>,
    manifests: Mutex<BTreeMap<(u32, u32), ManifestRecord>>,
}

#[async_trait]
impl JobLedger for Ledger {
    async fn create_job(&self, job: &JobRecord) -> anyhow::Result<CreateOutcome> {
        *self.job.lock().unwrap() = Some(job.clone());
        Ok(CreateOutcome::Created)
    }
    async fn get_job(&self, _: &str) -> anyhow::Result<Option<JobRecord>> {
        Ok(self.job.lock().unwrap().clone())
    }
    async fn mark_running(&self, _: &str) -> anyhow::Result<()> {
        Ok(())
    }
    async fn fail_job(&self, _: &str, _: &str) -> anyhow::Result<()> {
        Ok(())
    }
    async fn record_manifest(&self, m: &ManifestRecord) -> anyhow::Result<bool> {
        let mut manifests = self.manifests.lock().unwrap();
        if manifests.contains_key(&(m.seq, m.part)) {
            return Ok(false);
        }
        manifests.insert((m.seq, m.part), m.clone());
        let mut job = self.job.lock().unwrap();
        let job = job.as_mut().unwrap();
        job.manifests_done += 1;
        job.manifests_total += u32::from(m.continued_at.is_some());
        job.counts.add(&m.counts);
        Ok(true)
    }
    async fn manifest(
        &self,
        _: &str,
        seq: u32,
        part: u32,
    ) -> anyhow::Result<Option<ManifestRecord>> {
        Ok(self.manifests.lock().unwrap().get(&(seq, part)).cloned())
    }
    async fn claim_completion(&self, _: &str, _: u64) -> anyhow::Result<bool> {
        let mut job = self.job.lock().unwrap();
        let job = job.as_mut().unwrap();
        let done = job.manifests_done == job.manifests_total && job.status == JobStatus::Running;
        if done {
            job.status = JobStatus::Completing;
        }
        Ok(done)
    }
    async fn mark_completed(&self, _: &str) -> anyhow::Result<()> {
        self.job.lock().unwrap().as_mut().unwrap().status = JobStatus::Completed;
        Ok(())
    }
    async fn stop_job(&self, _: &str, reason: &str) -> anyhow::Result<bool> {
        self.job.lock().unwrap().as_mut().unwrap().error = Some(reason.into());
        Ok(true)
    }
    async fn mark_stopped(&self, _: &str) -> anyhow::Result<()> {
        self.job.lock().unwrap().as_mut().unwrap().status = JobStatus::Failed;
        Ok(())
    }
    async fn manifests(&self, _: &str) -> anyhow::Result<Vec<ManifestRecord>> {
        Ok(self.manifests.lock().unwrap().values().cloned().collect())
    }
}

#[derive(Default)]
struct Claims(Mutex<HashMap<String, (bool, String, u64)>>);

#[async_trait]
impl ManifestClaims for Claims {
    async fn claim(
        &self,
        _: &str,
        unit: &str,
        holder: &str,
        expires_at_ms: u64,
        now_ms: u64,
    ) -> anyhow::Result<ClaimOutcome> {
        let mut claims = self.0.lock().unwrap();
        match claims.get(unit) {
            Some((true, _, _)) => return Ok(ClaimOutcome::Completed),
            Some((false, h, exp)) if h != holder && *exp >= now_ms => {
                return Ok(ClaimOutcome::HeldByOther {
                    expires_at_ms: *exp,
                });
            }
            _ => {}
        }
        let taken_over = claims.contains_key(unit);
        claims.insert(unit.into(), (false, holder.into(), expires_at_ms));
        Ok(ClaimOutcome::Acquired { taken_over })
    }
    async fn complete(&self, _: &str, unit: &str) -> anyhow::Result<()> {
        self.0.lock().unwrap().get_mut(unit).unwrap().0 = true;
        Ok(())
    }
    async fn release(&self, _: &str, unit: &str, holder: &str) -> anyhow::Result<()> {
        let mut claims = self.0.lock().unwrap();
        if claims
            .get(unit)
            .is_some_and(|(done, h, _)| !done && h == holder)
        {
            claims.remove(unit);
        }
        Ok(())
    }
}

struct NoMetrics;

#[async_trait]
impl fanout_core::ports::MetricsSink for NoMetrics {
    async fn publish(&self, _: &str, _: &[fanout_core::metrics::Datum]) -> anyhow::Result<()> {
        Ok(())
    }
}

#[derive(Default)]
struct Queue(Mutex<Vec<String>>);

#[async_trait]
impl ManifestQueue for Queue {
    async fn send_batch(&self, entries: Vec<(String, String)>) -> anyhow::Result<()> {
        self.0
            .lock()
            .unwrap()
            .extend(entries.into_iter().map(|(_, b)| b));
        Ok(())
    }
}

/// Answers 200 after `delay`; counts calls.
struct Api {
    delay: Duration,
    calls: AtomicU64,
}

#[async_trait]
impl ApiClient for Api {
    async fn call(&self, _: &ApiRequest, _: &ClientConfig) -> CallOutcome {
        tokio::time::sleep(self.delay).await;
        self.calls.fetch_add(1, Ordering::SeqCst);
        CallOutcome {
            status: Some(200),
            body: Bytes::from_static(b"{}"),
            body_truncated: false,
            latency: self.delay,
            attempts: 1,
            error: None,
        }
    }
}

struct Fixture {
    deps: WorkerDeps,
    store: Arc<Store>,
    ledger: Arc<Ledger>,
    claims: Arc<Claims>,
    queue: Arc<Queue>,
    api: Arc<Api>,
    manifest: Manifest,
}

/// One manifest over a CSV of `records` records, with one call in flight at a time.
fn fixture(records: usize, delay: Duration) -> Fixture {
    let mut data = b"id\n".to_vec();
    for i in 0..records {
        data.extend_from_slice(format!("{i}\n").as_bytes());
    }
    let store = Arc::new(Store::default());
    store
        .0
        .lock()
        .unwrap()
        .insert("in.csv".into(), data.clone());
    let ledger = Arc::new(Ledger::default());
    *ledger.job.lock().unwrap() = Some(JobRecord {
        job_id: "j".into(),
        status: JobStatus::Running,
        bucket: "b".into(),
        key: "in.csv".into(),
        version_id: None,
        pipeline: "p".into(),
        manifests_total: 1,
        manifests_done: 0,
        counts: Counts::default(),
        created_at_ms: 0,
        finished_at_ms: None,
        error: None,
    });
    let (claims, queue) = (Arc::new(Claims::default()), Arc::new(Queue::default()));
    let api = Arc::new(Api {
        delay,
        calls: AtomicU64::new(0),
    });
    let config = PipelineConfig::from_yaml(
        "p.yaml",
        "input: {format: csv}\nrequest: {url: 'http://h/x/{id}'}\nclient: {concurrency: 1}\n",
    )
    .unwrap();
    let manifest = Manifest {
        job_id: "j".into(),
        seq: 0,
        part: 0,
        manifests_total: 1,
        bucket: "b".into(),
        key: "in.csv".into(),
        version_id: None,
        etag: "e".into(),
        object_size: data.len() as u64,
        range: ByteRange::new(3, data.len() as u64),
        data_start: 3,
        format: InputFormat::Csv,
        header: Some(vec!["id".into()]),
        pipeline: "p".into(),
        config_source: "p.yaml".into(),
        config,
    };
    let deps = WorkerDeps {
        store: store.clone(),
        ledger: ledger.clone(),
        api: api.clone(),
        claims: claims.clone(),
        queue: queue.clone(),
        deadline: Default::default(),
        metrics: Arc::new(fanout_core::metrics::WorkerMetrics::new(
            Arc::new(NoMetrics),
            fanout_core::metrics::DimensionSets::PipelineOnly,
            fanout_core::metrics::no_counters(),
        )),
    };
    Fixture {
        deps,
        store,
        ledger,
        claims,
        queue,
        api,
        manifest,
    }
}

fn lines(store: &Store, key: &str) -> usize {
    store
        .0
        .lock()
        .unwrap()
        .get(key)
        .map_or(0, |b| b.iter().filter(|c| **c == b'\n').count())
}

#[tokio::test]
async fn a_completed_manifest_is_acknowledged_without_work() {
    let f = fixture(20, Duration::ZERO);
    let first = handle_manifest(&f.manifest, &f.deps, None).await.unwrap();
    assert!(matches!(first, Handled::Processed(_)), "{first:?}");
    assert_eq!(f.api.calls.load(Ordering::SeqCst), 20);
    assert_eq!(
        f.ledger.job.lock().unwrap().as_ref().unwrap().status,
        JobStatus::Completed
    );

    let again = handle_manifest(&f.manifest, &f.deps, None).await.unwrap();
    assert!(matches!(again, Handled::AlreadyDone), "{again:?}");
    assert_eq!(
        f.api.calls.load(Ordering::SeqCst),
        20,
        "no call on redelivery"
    );
}

#[tokio::test]
async fn a_live_claim_held_by_another_returns_the_message() {
    let f = fixture(5, Duration::ZERO);
    let far = now_ms() + 60_000;
    f.claims
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
    assert_eq!(f.api.calls.load(Ordering::SeqCst), 0);

    // Once the holder's claim has expired (it died), the next delivery takes it over.
    f.claims.0.lock().unwrap().get_mut("000000").unwrap().2 = now_ms() - 1;
    let taken = handle_manifest(&f.manifest, &f.deps, None).await.unwrap();
    assert!(matches!(taken, Handled::Processed(_)), "{taken:?}");
    assert_eq!(f.api.calls.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_holder_that_died_after_recording_leaves_only_the_continuation_to_send() {
    let f = fixture(10, Duration::ZERO);
    f.ledger
        .job
        .lock()
        .unwrap()
        .as_mut()
        .unwrap()
        .manifests_total = 2;
    f.ledger.manifests.lock().unwrap().insert(
        (0, 0),
        ManifestRecord {
            job_id: "j".into(),
            seq: 0,
            part: 0,
            continued_at: Some(13),
            counts: Counts::default(),
            duration_ms: 0,
            latency_histogram: Vec::new(),
        },
    );
    let handled = handle_manifest(&f.manifest, &f.deps, None).await.unwrap();
    assert!(matches!(handled, Handled::Processed(_)), "{handled:?}");
    assert_eq!(f.api.calls.load(Ordering::SeqCst), 0, "no work redone");
    let sent = f.queue.0.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    let next: Manifest = serde_json::from_str(&sent[0]).unwrap();
    assert_eq!((next.seq, next.part, next.range.start), (0, 1, 13));
    assert!(f.claims.0.lock().unwrap()["000000"].0, "claim completed");
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
    assert_eq!(lines(&f.store, "results/j/part-000000.jsonl"), done);
    let job = f.ledger.job.lock().unwrap().clone().unwrap();
    assert_eq!((job.manifests_total, job.manifests_done), (2, 1));

    // The continuation, delivered, does the rest; the job completes with every record once.
    let next: Manifest = serde_json::from_str(&f.queue.0.lock().unwrap()[0]).unwrap();
    handle_manifest(&next, &f.deps, None).await.unwrap();
    assert_eq!(
        lines(&f.store, "results/j/part-000000.001.jsonl"),
        40 - done
    );
    let job = f.ledger.job.lock().unwrap().clone().unwrap();
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(job.counts.succeeded, 40);
    assert!(
        f.store
            .0
            .lock()
            .unwrap()
            .contains_key("results/j/_SUMMARY.json")
    );
}

/// Writes after `delay`, and logs when each write ends.
struct SlowPuts {
    inner: Arc<Store>,
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
}

/// Logs each call's URL, then answers as `inner` does.
struct LoggedApi {
    inner: Arc<Api>,
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
        inner: f.store.clone(),
        delay: Duration::from_secs(1),
        log: log.clone(),
    });
    f.deps.api = Arc::new(LoggedApi {
        inner: f.api.clone(),
        log: log.clone(),
    });
    f.ledger
        .job
        .lock()
        .unwrap()
        .as_mut()
        .unwrap()
        .manifests_total = 2;
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
    let job = f.ledger.job.lock().unwrap().clone().unwrap();
    assert_eq!(
        (job.status, job.counts.succeeded),
        (JobStatus::Completed, 10)
    );
    assert_eq!(lines(&f.store, "results/j/part-000000.jsonl"), 5);
    assert_eq!(lines(&f.store, "results/j/part-000001.jsonl"), 5);
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
    assert_eq!(f.api.calls.load(Ordering::SeqCst), 5, "worked once");
    assert_eq!(lines(&f.store, "results/j/part-000000.jsonl"), 5);
}
