//! In-memory fakes of every port the handlers use, shared by their unit tests (and, with the
//! `fakes` feature, by other crates' tests).
//!
//! Each fake keeps the semantics the handlers rely on from the production adapter
//! (`fanout-aws`), not just `Ok`:
//!
//! | fake | port | behaves like |
//! | --- | --- | --- |
//! | [`MemStore`] | `ObjectStore` | S3: missing object → error on head/get, `None` from `get_small`; ETag checked on unversioned reads; a range past the end is cut to the object; a multipart upload is invisible until completed, its parts but the last at least 5 MiB, completed with their ETags |
//! | [`MemQueue`] | `ManifestQueue` | SQS: ≤ 10 entries with distinct ids per batch |
//! | [`MemDeadLetters`] | `DeadLetterQueue` | SQS: received messages hidden until deleted or released; a new receipt per receive |
//! | [`MemLedger`] | `JobLedger` + `LedgerRepair` | the DynamoDB ledger's conditions: create once, record a manifest once, status changes only from the states the conditions allow |
//! | [`MemClaims`] | `ManifestClaims` | the DynamoDB claims: free / expired / own → acquired; completed; held by another |
//! | [`ScriptedApi`] | `ApiClient` | the client stack's outcomes: one scripted answer per request |
//! | [`RecordingMetrics`] | `MetricsSink` | CloudWatch: keeps every datum published |
//!
//! [`Fakes`] holds one of each and builds a `WorkerDeps`, `SplitterDeps` or `ReplayDeps` on them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::s3::S3Event;
use aws_lambda_events::sqs::SqsEvent;
use bytes::Bytes;

use fanout_core::claims::ClaimOutcome;
use fanout_core::config::ClientConfig;
use fanout_core::ledger::{Counts, CreateOutcome, JobRecord, JobStatus, ManifestRecord};
use fanout_core::manifest::Manifest;
use fanout_core::metrics::{Datum, DimensionSets, JobMetrics, WorkerMetrics, no_counters};
use fanout_core::ports::{
    ApiClient, ByteStream, CallOutcome, DeadLetterQueue, JobLedger, LedgerRepair, MIN_PART_BYTES,
    ManifestClaims, ManifestQueue, MetricsSink, ObjectHead, ObjectStore, QueuedMessage,
    UploadedPart,
};
use fanout_core::range::ByteRange;
use fanout_core::request::ApiRequest;

use crate::replay::ReplayDeps;
use crate::splitter::SplitterDeps;
use crate::worker::WorkerDeps;

// ------------------------------------------------------------------------------------ objects

/// One stored object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredObject {
    pub body: Vec<u8>,
    pub etag: String,
    pub version_id: Option<String>,
    pub content_type: String,
}

/// S3 in memory, keyed by (bucket, key), one version per key.
#[derive(Default)]
pub struct MemStore {
    objects: Mutex<BTreeMap<(String, String), StoredObject>>,
    /// Size of the chunks a ranged read streams (0: the whole range in one chunk).
    chunk_bytes: AtomicUsize,
    /// Every put, in order, as `bucket/key`.
    puts: Mutex<Vec<String>>,
    /// Multipart uploads in progress, by upload id.
    uploads: Mutex<HashMap<String, Upload>>,
    /// Upload ids given so far.
    upload_ids: AtomicU64,
    /// Every completed and every aborted multipart upload, in order, as `bucket/key`.
    completed: Mutex<Vec<String>>,
    aborted: Mutex<Vec<String>>,
    /// Parts numbered this or higher fail to upload (0: none fails).
    fail_parts_from: AtomicUsize,
}

/// A multipart upload in progress.
#[derive(Clone, Debug)]
struct Upload {
    bucket: String,
    key: String,
    content_type: String,
    parts: BTreeMap<i32, Vec<u8>>,
}

/// A quoted ETag derived from the body, as S3's is for a single-part upload (stable, and
/// different for different bodies).
pub fn etag_of(body: &[u8]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut h);
    format!("\"{:016x}\"", h.finish())
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Ranged reads stream chunks of `n` bytes (to exercise framing across chunk boundaries).
    pub fn with_chunk_bytes(self, n: usize) -> Self {
        self.chunk_bytes.store(n, Ordering::Relaxed);
        self
    }

    /// Stores an object (unversioned) and returns its head.
    pub fn insert(&self, bucket: &str, key: &str, body: impl Into<Vec<u8>>) -> ObjectHead {
        self.insert_version(bucket, key, body, None)
    }

    /// Stores an object as version `version_id` (replacing any other) and returns its head.
    pub fn insert_version(
        &self,
        bucket: &str,
        key: &str,
        body: impl Into<Vec<u8>>,
        version_id: Option<&str>,
    ) -> ObjectHead {
        let body = body.into();
        let object = StoredObject {
            etag: etag_of(&body),
            version_id: version_id.map(str::to_string),
            content_type: "application/octet-stream".into(),
            body,
        };
        let head = head_of(&object);
        self.objects
            .lock()
            .unwrap()
            .insert((bucket.into(), key.into()), object);
        head
    }

    /// The object's body, if it exists.
    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        self.object(bucket, key).map(|o| o.body)
    }

    pub fn object(&self, bucket: &str, key: &str) -> Option<StoredObject> {
        self.objects
            .lock()
            .unwrap()
            .get(&(bucket.to_string(), key.to_string()))
            .cloned()
    }

    pub fn contains(&self, bucket: &str, key: &str) -> bool {
        self.object(bucket, key).is_some()
    }

    /// The keys of `bucket` under `prefix`, in listing order.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        self.objects
            .lock()
            .unwrap()
            .keys()
            .filter(|(b, k)| b == bucket && k.starts_with(prefix))
            .map(|(_, k)| k.clone())
            .collect()
    }

    /// The object as JSON Lines (empty when it does not exist).
    pub fn jsonl(&self, bucket: &str, key: &str) -> Vec<serde_json::Value> {
        self.get(bucket, key)
            .unwrap_or_default()
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).expect("a JSON line"))
            .collect()
    }

    /// Lines (newline-terminated) in the object; 0 when it does not exist.
    pub fn lines(&self, bucket: &str, key: &str) -> usize {
        self.get(bucket, key)
            .map_or(0, |b| b.iter().filter(|c| **c == b'\n').count())
    }

    /// Every put so far, in order, as `bucket/key`.
    pub fn puts(&self) -> Vec<String> {
        self.puts.lock().unwrap().clone()
    }

    /// Every multipart upload completed so far, in order, as `bucket/key`.
    pub fn completed_uploads(&self) -> Vec<String> {
        self.completed.lock().unwrap().clone()
    }

    /// Every multipart upload aborted so far, in order, as `bucket/key`.
    pub fn aborted_uploads(&self) -> Vec<String> {
        self.aborted.lock().unwrap().clone()
    }

    /// Multipart uploads neither completed nor aborted.
    pub fn open_uploads(&self) -> usize {
        self.uploads.lock().unwrap().len()
    }

    /// Parts numbered `n` or higher fail to upload from now on.
    pub fn fail_parts_from(&self, n: usize) {
        self.fail_parts_from.store(n, Ordering::Relaxed);
    }

    fn upload(&self, bucket: &str, key: &str, upload_id: &str) -> anyhow::Result<Upload> {
        match self.uploads.lock().unwrap().get(upload_id) {
            Some(u) if u.bucket == bucket && u.key == key => Ok(u.clone()),
            _ => anyhow::bail!("s3://{bucket}/{key}: NoSuchUpload {upload_id}"),
        }
    }

    fn found(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> anyhow::Result<StoredObject> {
        let object = self
            .object(bucket, key)
            .ok_or_else(|| anyhow::anyhow!("s3://{bucket}/{key}: NoSuchKey"))?;
        if let Some(v) = version_id
            && object.version_id.as_deref() != Some(v)
        {
            anyhow::bail!("s3://{bucket}/{key}: NoSuchVersion {v}");
        }
        Ok(object)
    }
}

fn head_of(object: &StoredObject) -> ObjectHead {
    ObjectHead {
        size: object.body.len() as u64,
        etag: object.etag.clone(),
        version_id: object.version_id.clone(),
    }
}

#[async_trait]
impl ObjectStore for MemStore {
    async fn head(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> anyhow::Result<ObjectHead> {
        Ok(head_of(&self.found(bucket, key, version_id)?))
    }

    async fn get_range(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        etag: Option<&str>,
        range: ByteRange,
    ) -> anyhow::Result<ByteStream> {
        if range.is_empty() {
            return Ok(Box::pin(futures::stream::empty()));
        }
        let object = self.found(bucket, key, version_id)?;
        // As the S3 adapter: If-Match only on an unversioned read.
        if version_id.is_none()
            && let Some(e) = etag
            && e != object.etag
        {
            anyhow::bail!(
                "s3://{bucket}/{key}: PreconditionFailed (ETag {e} ≠ {})",
                object.etag
            );
        }
        let size = object.body.len() as u64;
        anyhow::ensure!(
            range.start < size,
            "s3://{bucket}/{key}: InvalidRange {range:?} of {size} bytes"
        );
        let data =
            Bytes::from(object.body).slice(range.start as usize..range.end.min(size) as usize);
        let step = match self.chunk_bytes.load(Ordering::Relaxed) {
            0 => data.len().max(1),
            n => n,
        };
        let chunks: Vec<anyhow::Result<Bytes>> = (0..data.len())
            .step_by(step)
            .map(|i| Ok(data.slice(i..(i + step).min(data.len()))))
            .collect();
        Ok(Box::pin(futures::stream::iter(chunks)))
    }

    async fn get_small(&self, bucket: &str, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(self.get(bucket, key))
    }

    async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> anyhow::Result<()> {
        let object = StoredObject {
            etag: etag_of(&body),
            version_id: None,
            content_type: content_type.into(),
            body,
        };
        self.objects
            .lock()
            .unwrap()
            .insert((bucket.into(), key.into()), object);
        self.puts.lock().unwrap().push(format!("{bucket}/{key}"));
        Ok(())
    }

    /// Deleting a missing object succeeds, as in S3.
    async fn delete(&self, bucket: &str, key: &str) -> anyhow::Result<()> {
        self.objects
            .lock()
            .unwrap()
            .remove(&(bucket.to_string(), key.to_string()));
        Ok(())
    }

    async fn create_multipart(
        &self,
        bucket: &str,
        key: &str,
        content_type: &str,
    ) -> anyhow::Result<String> {
        let id = format!("upload-{}", self.upload_ids.fetch_add(1, Ordering::Relaxed));
        let upload = Upload {
            bucket: bucket.into(),
            key: key.into(),
            content_type: content_type.into(),
            parts: BTreeMap::new(),
        };
        self.uploads.lock().unwrap().insert(id.clone(), upload);
        Ok(id)
    }

    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Vec<u8>,
    ) -> anyhow::Result<String> {
        self.upload(bucket, key, upload_id)?;
        let fail_from = self.fail_parts_from.load(Ordering::Relaxed);
        if fail_from > 0 && number as usize >= fail_from {
            anyhow::bail!("UploadPart s3://{bucket}/{key} part {number}: InternalError (injected)");
        }
        let etag = etag_of(&body);
        let mut uploads = self.uploads.lock().unwrap();
        let upload = uploads.get_mut(upload_id).expect("checked above");
        upload.parts.insert(number, body);
        Ok(etag)
    }

    async fn complete_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
    ) -> anyhow::Result<()> {
        let upload = self.upload(bucket, key, upload_id)?;
        anyhow::ensure!(
            !parts.is_empty(),
            "s3://{bucket}/{key}: MalformedXML (no parts)"
        );
        let mut body = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let Some(bytes) = upload.parts.get(&part.number) else {
                anyhow::bail!("s3://{bucket}/{key}: InvalidPart {}", part.number);
            };
            anyhow::ensure!(
                etag_of(bytes) == part.etag,
                "s3://{bucket}/{key}: InvalidPart {} (ETag)",
                part.number
            );
            anyhow::ensure!(
                i == 0 || parts[i - 1].number < part.number,
                "s3://{bucket}/{key}: InvalidPartOrder"
            );
            anyhow::ensure!(
                i + 1 == parts.len() || bytes.len() >= MIN_PART_BYTES,
                "s3://{bucket}/{key}: EntityTooSmall (part {} of {} bytes)",
                part.number,
                bytes.len()
            );
            body.extend_from_slice(bytes);
        }
        self.uploads.lock().unwrap().remove(upload_id);
        let object = StoredObject {
            etag: etag_of(&body),
            version_id: None,
            content_type: upload.content_type,
            body,
        };
        self.objects
            .lock()
            .unwrap()
            .insert((bucket.into(), key.into()), object);
        self.completed
            .lock()
            .unwrap()
            .push(format!("{bucket}/{key}"));
        Ok(())
    }

    async fn abort_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> anyhow::Result<()> {
        self.upload(bucket, key, upload_id)?;
        self.uploads.lock().unwrap().remove(upload_id);
        self.aborted.lock().unwrap().push(format!("{bucket}/{key}"));
        Ok(())
    }
}

// ------------------------------------------------------------------------------------- queues

/// The manifest queue: every message sent, in order.
#[derive(Default)]
pub struct MemQueue {
    sent: Mutex<Vec<String>>,
    batches: AtomicUsize,
    fail: AtomicBool,
}

impl MemQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every message body sent, in order.
    pub fn bodies(&self) -> Vec<String> {
        self.sent.lock().unwrap().clone()
    }

    /// Every message sent, as a manifest.
    pub fn manifests(&self) -> Vec<Manifest> {
        self.bodies()
            .iter()
            .map(|b| serde_json::from_str(b).expect("a manifest"))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.sent.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// SendMessageBatch calls that succeeded.
    pub fn batches(&self) -> usize {
        self.batches.load(Ordering::SeqCst)
    }

    /// While set, every send fails (SQS unavailable).
    pub fn set_failing(&self, fail: bool) {
        self.fail.store(fail, Ordering::SeqCst);
    }
}

#[async_trait]
impl ManifestQueue for MemQueue {
    async fn send_batch(&self, entries: Vec<(String, String)>) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.fail.load(Ordering::SeqCst),
            "SendMessageBatch: unavailable"
        );
        anyhow::ensure!(
            entries.len() <= 10,
            "SendMessageBatch takes at most 10 entries, got {}",
            entries.len()
        );
        let ids: HashSet<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
        anyhow::ensure!(
            ids.len() == entries.len(),
            "SendMessageBatch: BatchEntryIdsNotDistinct"
        );
        if entries.is_empty() {
            return Ok(());
        }
        self.sent
            .lock()
            .unwrap()
            .extend(entries.into_iter().map(|(_, body)| body));
        self.batches.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[derive(Clone, Debug)]
struct DeadLetter {
    id: String,
    body: String,
    /// The receipt of the receive that hides it; None while visible.
    receipt: Option<String>,
}

/// The dead-letter queue: received messages stay hidden until deleted or released (there is no
/// visibility timeout: a message received and neither deleted nor released stays hidden).
#[derive(Default)]
pub struct MemDeadLetters {
    messages: Mutex<Vec<DeadLetter>>,
    next: AtomicU64,
    deleted: Mutex<Vec<String>>,
}

impl MemDeadLetters {
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts a message in the queue; returns its id.
    pub fn push(&self, body: impl Into<String>) -> String {
        let id = format!("dlq-{}", self.next.fetch_add(1, Ordering::SeqCst));
        self.messages.lock().unwrap().push(DeadLetter {
            id: id.clone(),
            body: body.into(),
            receipt: None,
        });
        id
    }

    /// Puts a manifest in the queue; returns its message id.
    pub fn push_manifest(&self, m: &Manifest) -> String {
        self.push(serde_json::to_string(m).expect("a manifest serializes"))
    }

    /// Ids of the messages still in the queue (visible or not), in order.
    pub fn remaining(&self) -> Vec<String> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .map(|m| m.id.clone())
            .collect()
    }

    /// Ids of the messages still in the queue and visible.
    pub fn visible(&self) -> Vec<String> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.receipt.is_none())
            .map(|m| m.id.clone())
            .collect()
    }

    /// Ids of the messages deleted, in order.
    pub fn deleted(&self) -> Vec<String> {
        self.deleted.lock().unwrap().clone()
    }
}

#[async_trait]
impl DeadLetterQueue for MemDeadLetters {
    async fn receive(&self) -> anyhow::Result<Vec<QueuedMessage>> {
        let mut messages = self.messages.lock().unwrap();
        let mut out = Vec::new();
        for m in messages.iter_mut().filter(|m| m.receipt.is_none()).take(10) {
            let receipt = format!("r-{}", self.next.fetch_add(1, Ordering::SeqCst));
            m.receipt = Some(receipt.clone());
            out.push(QueuedMessage {
                id: m.id.clone(),
                receipt,
                body: m.body.clone(),
            });
        }
        Ok(out)
    }

    async fn delete(&self, receipt: &str) -> anyhow::Result<()> {
        let mut messages = self.messages.lock().unwrap();
        let i = messages
            .iter()
            .position(|m| m.receipt.as_deref() == Some(receipt))
            .ok_or_else(|| anyhow::anyhow!("DeleteMessage: ReceiptHandleIsInvalid {receipt}"))?;
        let m = messages.remove(i);
        self.deleted.lock().unwrap().push(m.id);
        Ok(())
    }

    async fn release(&self, receipt: &str) -> anyhow::Result<()> {
        let mut messages = self.messages.lock().unwrap();
        let m = messages
            .iter_mut()
            .find(|m| m.receipt.as_deref() == Some(receipt))
            .ok_or_else(|| {
                anyhow::anyhow!("ChangeMessageVisibility: ReceiptHandleIsInvalid {receipt}")
            })?;
        m.receipt = None;
        Ok(())
    }
}

// ------------------------------------------------------------------------------------- ledger

#[derive(Default)]
struct LedgerState {
    jobs: BTreeMap<String, JobRecord>,
    /// Per job, its manifest records by (seq, part): the order of the table's `M#<unit>` keys.
    manifests: BTreeMap<String, BTreeMap<(u32, u32), ManifestRecord>>,
}

/// The job ledger, keyed by job id, with the DynamoDB ledger's conditions (see
/// `fanout_aws::dynamo`): one state, so every call is atomic as the table's conditional writes are.
#[derive(Default)]
pub struct MemLedger {
    state: Mutex<LedgerState>,
    /// `record_manifest` calls that recorded a manifest (not redeliveries).
    recorded: AtomicUsize,
}

impl MemLedger {
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts a job as it is (test setup: any status, counts and `manifests_done`).
    pub fn insert_job(&self, job: JobRecord) {
        self.state
            .lock()
            .unwrap()
            .jobs
            .insert(job.job_id.clone(), job);
    }

    /// Puts a manifest record as it is, without touching its job (test setup: e.g. a holder that
    /// died after recording).
    pub fn insert_manifest(&self, m: ManifestRecord) {
        self.state
            .lock()
            .unwrap()
            .manifests
            .entry(m.job_id.clone())
            .or_default()
            .insert((m.seq, m.part), m);
    }

    /// Every job's id, in order.
    pub fn job_ids(&self) -> Vec<String> {
        self.state.lock().unwrap().jobs.keys().cloned().collect()
    }

    /// The job as stored.
    pub fn job(&self, job_id: &str) -> Option<JobRecord> {
        self.state.lock().unwrap().jobs.get(job_id).cloned()
    }

    /// Changes the stored job (test setup).
    pub fn update_job(&self, job_id: &str, change: impl FnOnce(&mut JobRecord)) {
        change(
            self.state
                .lock()
                .unwrap()
                .jobs
                .get_mut(job_id)
                .expect("job in the ledger"),
        );
    }

    /// The job's manifest records, in key order.
    pub fn manifest_records(&self, job_id: &str) -> Vec<ManifestRecord> {
        self.state
            .lock()
            .unwrap()
            .manifests
            .get(job_id)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// How many `record_manifest` calls recorded a manifest.
    pub fn recorded(&self) -> usize {
        self.recorded.load(Ordering::SeqCst)
    }

    /// Applies `change` to the job if it exists and `allowed` holds, as a conditional update.
    fn set_if(
        &self,
        job_id: &str,
        allowed: impl FnOnce(&JobRecord) -> bool,
        change: impl FnOnce(&mut JobRecord),
    ) -> bool {
        let mut state = self.state.lock().unwrap();
        match state.jobs.get_mut(job_id) {
            Some(job) if allowed(job) => {
                change(job);
                true
            }
            _ => false,
        }
    }
}

#[async_trait]
impl JobLedger for MemLedger {
    async fn create_job(&self, job: &JobRecord) -> anyhow::Result<CreateOutcome> {
        let mut state = self.state.lock().unwrap();
        if let Some(existing) = state.jobs.get(&job.job_id) {
            return Ok(CreateOutcome::Exists(Box::new(existing.clone())));
        }
        // As the adapter: a new job has no manifest done, whatever the caller passed.
        let created = JobRecord {
            manifests_done: 0,
            ..job.clone()
        };
        state.jobs.insert(job.job_id.clone(), created);
        Ok(CreateOutcome::Created)
    }

    async fn get_job(&self, job_id: &str) -> anyhow::Result<Option<JobRecord>> {
        Ok(self.job(job_id))
    }

    async fn mark_running(&self, job_id: &str) -> anyhow::Result<()> {
        self.set_if(
            job_id,
            |j| j.status == JobStatus::Splitting,
            |j| j.status = JobStatus::Running,
        );
        Ok(())
    }

    async fn fail_job(&self, job_id: &str, reason: &str) -> anyhow::Result<()> {
        let now = fanout_core::ledger::now_ms();
        self.set_if(
            job_id,
            |j| j.status == JobStatus::Splitting,
            |j| {
                j.status = JobStatus::Failed;
                j.error = Some(reason.into());
                j.finished_at_ms.get_or_insert(now);
            },
        );
        Ok(())
    }

    async fn record_manifest(&self, m: &ManifestRecord) -> anyhow::Result<bool> {
        let mut state = self.state.lock().unwrap();
        let LedgerState { jobs, manifests } = &mut *state;
        let recorded = manifests.entry(m.job_id.clone()).or_default();
        if recorded.contains_key(&(m.seq, m.part)) {
            return Ok(false);
        }
        let job = jobs.get_mut(&m.job_id).ok_or_else(|| {
            anyhow::anyhow!(
                "TransactWriteItems manifest {}/{}: cancelled: the job does not exist",
                m.job_id,
                m.seq
            )
        })?;
        job.manifests_done += 1;
        job.manifests_total += u32::from(m.continued_at.is_some());
        job.counts.add(&m.counts);
        recorded.insert((m.seq, m.part), m.clone());
        self.recorded.fetch_add(1, Ordering::SeqCst);
        Ok(true)
    }

    async fn manifest(
        &self,
        job_id: &str,
        seq: u32,
        part: u32,
    ) -> anyhow::Result<Option<ManifestRecord>> {
        Ok(self
            .state
            .lock()
            .unwrap()
            .manifests
            .get(job_id)
            .and_then(|m| m.get(&(seq, part)))
            .cloned())
    }

    async fn claim_completion(&self, job_id: &str, finished_at_ms: u64) -> anyhow::Result<bool> {
        Ok(self.set_if(
            job_id,
            |j| {
                j.manifests_done == j.manifests_total
                    && matches!(
                        j.status,
                        JobStatus::Splitting | JobStatus::Running | JobStatus::Completing
                    )
            },
            |j| {
                j.status = JobStatus::Completing;
                j.finished_at_ms.get_or_insert(finished_at_ms);
            },
        ))
    }

    async fn mark_completed(&self, job_id: &str) -> anyhow::Result<()> {
        self.set_if(
            job_id,
            |j| j.status == JobStatus::Completing,
            |j| j.status = JobStatus::Completed,
        );
        Ok(())
    }

    async fn stop_job(&self, job_id: &str, reason: &str) -> anyhow::Result<bool> {
        Ok(self.set_if(
            job_id,
            |j| j.error.is_none() && matches!(j.status, JobStatus::Splitting | JobStatus::Running),
            |j| j.error = Some(reason.into()),
        ))
    }

    async fn mark_stopped(&self, job_id: &str) -> anyhow::Result<()> {
        self.set_if(
            job_id,
            |j| j.status == JobStatus::Completing,
            |j| j.status = JobStatus::Failed,
        );
        Ok(())
    }

    async fn manifests(&self, job_id: &str) -> anyhow::Result<Vec<ManifestRecord>> {
        let job = self.job(job_id);
        Ok(self
            .manifest_records(job_id)
            .into_iter()
            .filter(|m| job.as_ref().is_none_or(|j| j.counts_part(m.seq, m.part)))
            .collect())
    }

    async fn open_redo(
        &self,
        job_id: &str,
        redo: &[fanout_core::quote::Redo],
        superseded: &Counts,
    ) -> anyhow::Result<bool> {
        Ok(self.set_if(
            job_id,
            |j| {
                j.redo.is_none()
                    && j.manifests_done == j.manifests_total
                    && matches!(j.status, JobStatus::Splitting | JobStatus::Running)
            },
            |j| {
                j.redo = Some(redo.to_vec());
                j.manifests_total += redo.len() as u32;
                let c = &mut j.counts;
                c.records -= superseded.records;
                c.succeeded -= superseded.succeeded;
                c.failed -= superseded.failed;
                c.rejected -= superseded.rejected;
                c.blank_lines -= superseded.blank_lines;
                c.bytes_read -= superseded.bytes_read;
            },
        ))
    }
}

#[async_trait]
impl LedgerRepair for MemLedger {
    async fn set_manifest_counts(
        &self,
        job_id: &str,
        seq: u32,
        part: u32,
        counts: &Counts,
    ) -> anyhow::Result<()> {
        let mut state = self.state.lock().unwrap();
        let m = state
            .manifests
            .get_mut(job_id)
            .and_then(|m| m.get_mut(&(seq, part)))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "UpdateItem manifest counts: manifest {job_id}/{seq}.{part} does not exist"
                )
            })?;
        m.counts = *counts;
        Ok(())
    }

    async fn set_job_counts(&self, job_id: &str, counts: &Counts) -> anyhow::Result<()> {
        let mut state = self.state.lock().unwrap();
        let job = state
            .jobs
            .get_mut(job_id)
            .ok_or_else(|| anyhow::anyhow!("UpdateItem job counts: job {job_id} does not exist"))?;
        job.counts = *counts;
        Ok(())
    }
}

// ------------------------------------------------------------------------------------- claims

/// A claim as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    InProgress { holder: String, expires_at_ms: u64 },
    Completed,
}

/// Manifest claims keyed by (job, unit), with the DynamoDB claims' conditions.
#[derive(Default)]
pub struct MemClaims(Mutex<HashMap<(String, String), Claim>>);

impl MemClaims {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, job_id: &str, unit: &str) -> Option<Claim> {
        self.0
            .lock()
            .unwrap()
            .get(&(job_id.to_string(), unit.to_string()))
            .cloned()
    }

    pub fn is_completed(&self, job_id: &str, unit: &str) -> bool {
        self.get(job_id, unit) == Some(Claim::Completed)
    }

    /// Stores a claim as it is (test setup: another holder's, live or expired).
    pub fn set(&self, job_id: &str, unit: &str, claim: Claim) {
        self.0
            .lock()
            .unwrap()
            .insert((job_id.into(), unit.into()), claim);
    }
}

#[async_trait]
impl ManifestClaims for MemClaims {
    async fn claim(
        &self,
        job_id: &str,
        unit: &str,
        holder: &str,
        expires_at_ms: u64,
        now_ms: u64,
    ) -> anyhow::Result<ClaimOutcome> {
        let mut claims = self.0.lock().unwrap();
        let key = (job_id.to_string(), unit.to_string());
        let taken_over = match claims.get(&key) {
            None => false,
            Some(Claim::Completed) => return Ok(ClaimOutcome::Completed),
            Some(Claim::InProgress {
                holder: h,
                expires_at_ms: exp,
            }) => {
                // Free only when expired (`claim_expires_ms < now`) or ours.
                if *exp >= now_ms && h != holder {
                    return Ok(ClaimOutcome::HeldByOther {
                        expires_at_ms: *exp,
                    });
                }
                h != holder
            }
        };
        claims.insert(
            key,
            Claim::InProgress {
                holder: holder.into(),
                expires_at_ms,
            },
        );
        Ok(ClaimOutcome::Acquired { taken_over })
    }

    /// Unconditional, as the adapter's update: the claim becomes COMPLETED whatever it was.
    async fn complete(&self, job_id: &str, unit: &str) -> anyhow::Result<()> {
        self.set(job_id, unit, Claim::Completed);
        Ok(())
    }

    /// Drops the claim only if it is `holder`'s and in progress; otherwise a no-op.
    async fn release(&self, job_id: &str, unit: &str, holder: &str) -> anyhow::Result<()> {
        let mut claims = self.0.lock().unwrap();
        let key = (job_id.to_string(), unit.to_string());
        if matches!(claims.get(&key), Some(Claim::InProgress { holder: h, .. }) if h == holder) {
            claims.remove(&key);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------- API

/// What the scripted API answers to one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// A response with this status and body (non-2xx is a failure, as the client stack reports
    /// it: `error = "HTTP <status>"`).
    Status(u16, Bytes),
    /// No response: a transport error.
    Error(String),
}

impl Answer {
    /// 200 with `{}`.
    pub fn ok() -> Self {
        Answer::Status(200, Bytes::from_static(b"{}"))
    }

    pub fn status(status: u16) -> Self {
        Answer::Status(status, Bytes::new())
    }
}

type Script = dyn Fn(&ApiRequest) -> Answer + Send + Sync;

/// The external API: answers each request as its script says, after `delay`, and keeps every
/// request's URL. Outcomes are shaped as the client stack's (one attempt each).
pub struct ScriptedApi {
    script: Box<Script>,
    delay: Duration,
    calls: AtomicU64,
    urls: Mutex<Vec<String>>,
}

impl Default for ScriptedApi {
    fn default() -> Self {
        Self::ok()
    }
}

impl ScriptedApi {
    /// Answers every request with `script(request)`.
    pub fn new(script: impl Fn(&ApiRequest) -> Answer + Send + Sync + 'static) -> Self {
        Self {
            script: Box::new(script),
            delay: Duration::ZERO,
            calls: AtomicU64::new(0),
            urls: Mutex::new(Vec::new()),
        }
    }

    /// 200 `{}` to everything.
    pub fn ok() -> Self {
        Self::new(|_| Answer::ok())
    }

    /// Each call takes `delay` (tokio time, so it can be paused).
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Calls answered so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// The URL of every call started, in order.
    pub fn urls(&self) -> Vec<String> {
        self.urls.lock().unwrap().clone()
    }
}

#[async_trait]
impl ApiClient for ScriptedApi {
    async fn call(&self, request: &ApiRequest, _: &ClientConfig) -> CallOutcome {
        self.urls.lock().unwrap().push(request.url.clone());
        let answer = (self.script)(request);
        tokio::time::sleep(self.delay).await;
        self.calls.fetch_add(1, Ordering::SeqCst);
        match answer {
            Answer::Status(status, body) => CallOutcome {
                status: Some(status),
                body,
                body_truncated: false,
                latency: self.delay,
                attempts: 1,
                error: (!(200..300).contains(&status)).then(|| format!("HTTP {status}")),
                headers: Default::default(),
            },
            Answer::Error(e) => CallOutcome {
                status: None,
                body: Bytes::new(),
                body_truncated: false,
                latency: self.delay,
                attempts: 1,
                error: Some(e),
                headers: Default::default(),
            },
        }
    }
}

// ------------------------------------------------------------------------------------ metrics

/// A metrics sink that keeps every datum published (and can be made to fail).
#[derive(Default)]
pub struct RecordingMetrics {
    published: Mutex<Vec<(String, Vec<Datum>)>>,
    fail: AtomicBool,
}

impl RecordingMetrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every datum published, in order.
    pub fn datums(&self) -> Vec<Datum> {
        self.published
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(_, d)| d.clone())
            .collect()
    }

    /// The datums named `name`.
    pub fn named(&self, name: &str) -> Vec<Datum> {
        self.datums()
            .into_iter()
            .filter(|d| d.name == name)
            .collect()
    }

    /// The sum of value × count over the datums named `name`.
    pub fn total(&self, name: &str) -> f64 {
        self.named(name)
            .iter()
            .flat_map(|d| d.values.iter().zip(&d.counts).map(|(v, c)| v * c))
            .sum()
    }

    /// Publish calls made (including failed ones).
    pub fn publications(&self) -> usize {
        self.published.lock().unwrap().len()
    }

    /// While set, every publish fails (CloudWatch unavailable); nothing is kept.
    pub fn set_failing(&self, fail: bool) {
        self.fail.store(fail, Ordering::SeqCst);
    }
}

#[async_trait]
impl MetricsSink for RecordingMetrics {
    async fn publish(&self, namespace: &str, datums: &[Datum]) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.fail.load(Ordering::SeqCst),
            "PutMetricData: unavailable"
        );
        self.published
            .lock()
            .unwrap()
            .push((namespace.to_string(), datums.to_vec()));
        Ok(())
    }
}

// --------------------------------------------------------------------------------------- deps

/// One fake of each port, and the handlers' deps built on them.
#[derive(Clone, Default)]
pub struct Fakes {
    pub store: Arc<MemStore>,
    pub queue: Arc<MemQueue>,
    pub dead_letters: Arc<MemDeadLetters>,
    pub ledger: Arc<MemLedger>,
    pub claims: Arc<MemClaims>,
    pub api: Arc<ScriptedApi>,
    pub metrics: Arc<RecordingMetrics>,
}

impl Fakes {
    pub fn new() -> Self {
        Self::default()
    }

    /// The same fakes with this API.
    pub fn with_api(mut self, api: ScriptedApi) -> Self {
        self.api = Arc::new(api);
        self
    }

    /// The same fakes with this store.
    pub fn with_store(mut self, store: MemStore) -> Self {
        self.store = Arc::new(store);
        self
    }

    /// A worker's deps on the fakes (metrics per pipeline only, no client counters).
    pub fn worker_deps(&self) -> WorkerDeps {
        WorkerDeps {
            store: self.store.clone(),
            ledger: self.ledger.clone(),
            api: self.api.clone(),
            metrics: Arc::new(WorkerMetrics::new(
                self.metrics.clone(),
                DimensionSets::PipelineOnly,
                no_counters(),
            )),
            claims: self.claims.clone(),
            queue: self.queue.clone(),
            deadline: Default::default(),
            cache: Default::default(),
        }
    }

    pub fn splitter_deps(&self) -> SplitterDeps {
        SplitterDeps {
            store: self.store.clone(),
            queue: self.queue.clone(),
            ledger: self.ledger.clone(),
            metrics: JobMetrics::new(self.metrics.clone(), DimensionSets::PipelineOnly),
            defaults: Default::default(),
        }
    }

    pub fn replay_deps(&self) -> ReplayDeps {
        ReplayDeps {
            worker: self.worker_deps(),
            repair: self.ledger.clone(),
            dead_letters: self.dead_letters.clone(),
        }
    }
}

// ------------------------------------------------------------------------------------- events

/// An S3 event of one record, as S3 sends it (the key URL-encoded, `+` for spaces).
/// `event_name` is e.g. `ObjectCreated:Put` or `ObjectRemoved:Delete`.
pub fn s3_event(event_name: &str, bucket: &str, key: &str, version_id: Option<&str>) -> S3Event {
    crate::events::s3_event(event_name, bucket, key, None, None, version_id)
}

/// An SQS event of messages `(message id, body)`.
pub fn sqs_event(messages: &[(&str, String)]) -> SqsEvent {
    let records: Vec<_> = messages
        .iter()
        .map(|(id, body)| serde_json::json!({"messageId": id, "body": body}))
        .collect();
    serde_json::from_value(serde_json::json!({ "Records": records })).expect("an SQS event")
}

/// A RUNNING job record of `manifests_total` manifests, nothing done.
pub fn running_job(job_id: &str, bucket: &str, key: &str, pipeline: &str, total: u32) -> JobRecord {
    JobRecord {
        job_id: job_id.into(),
        status: JobStatus::Running,
        bucket: bucket.into(),
        key: key.into(),
        version_id: None,
        pipeline: pipeline.into(),
        manifests_total: total,
        manifests_done: 0,
        counts: Counts::default(),
        created_at_ms: 0,
        finished_at_ms: None,
        error: None,
        config: None,
        redo: None,
    }
}
