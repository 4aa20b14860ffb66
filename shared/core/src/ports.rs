//! Ports: one small trait per external capability, all of them here. Handlers depend on these;
//! the AWS adapters (`fanout-aws`) and the API client (`fanout-client`) implement them; the
//! handlers' unit tests substitute in-memory fakes (`fanout_handlers::fakes`).
//!
//! | port | capability | production adapter |
//! | --- | --- | --- |
//! | [`ObjectStore`] | objects: head, ranged reads, puts, multipart uploads | S3 |
//! | [`ManifestQueue`] | sending manifests | SQS |
//! | [`DeadLetterQueue`] | taking manifests back from the DLQ (replay) | SQS |
//! | [`JobLedger`] | jobs and manifests, counted once | DynamoDB |
//! | [`LedgerRepair`] | setting counts after a replay | DynamoDB |
//! | [`ManifestClaims`] | one live worker per manifest | DynamoDB |
//! | [`TokenLeaser`] | the fleet's rate-limit windows | DynamoDB |
//! | [`RateOverrides`] | operators' overrides of the fleet limits' rates | DynamoDB |
//! | [`BreakerStateStore`] | the fleet's breaker open state | DynamoDB |
//! | [`ApiClient`] | the external API | the tower stack over reqwest |
//! | [`MetricsSink`] | metrics | CloudWatch |

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::claims::ClaimOutcome;
use crate::config::ClientConfig;
use crate::ledger::{Counts, CreateOutcome, JobRecord, ManifestRecord};
use crate::range::ByteRange;
use crate::rate_override::RateOverride;
use crate::request::ApiRequest;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectHead {
    pub size: u64,
    pub etag: String,
    pub version_id: Option<String>,
}

pub type ByteStream = BoxStream<'static, anyhow::Result<Bytes>>;

/// Object storage (S3).
#[async_trait]
pub trait ObjectStore: Send + Sync {
    async fn head(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> anyhow::Result<ObjectHead>;
    /// Streams `[range.start, range.end)` of a pinned version. `etag`, when given, must match.
    async fn get_range(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        etag: Option<&str>,
        range: ByteRange,
    ) -> anyhow::Result<ByteStream>;
    /// A small whole object; None when it does not exist.
    async fn get_small(&self, bucket: &str, key: &str) -> anyhow::Result<Option<Vec<u8>>>;
    async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> anyhow::Result<()>;
    async fn delete(&self, bucket: &str, key: &str) -> anyhow::Result<()>;
    /// Starts a multipart upload of `key`; gives its upload id. Nothing is visible at `key`
    /// until [`ObjectStore::complete_multipart`].
    async fn create_multipart(
        &self,
        bucket: &str,
        key: &str,
        content_type: &str,
    ) -> anyhow::Result<String>;
    /// Uploads part `number` (1, 2, …) of an upload; gives its ETag. Every part but the last must
    /// be at least [`MIN_PART_BYTES`].
    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Vec<u8>,
    ) -> anyhow::Result<String>;
    /// Makes the object of the parts uploaded, in their order (replacing any object at `key`).
    async fn complete_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
    ) -> anyhow::Result<()>;
    /// Discards an upload and its parts.
    async fn abort_multipart(&self, bucket: &str, key: &str, upload_id: &str)
    -> anyhow::Result<()>;
}

/// S3's smallest part of a multipart upload, but for the last one.
pub const MIN_PART_BYTES: usize = 5 << 20;

/// A part uploaded: its number and the ETag S3 gave it (both needed to complete the upload).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadedPart {
    pub number: i32,
    pub etag: String,
}

/// The manifest queue (SQS).
#[async_trait]
pub trait ManifestQueue: Send + Sync {
    /// Sends up to 10 messages as (entry id, body); fails unless every one was accepted.
    async fn send_batch(&self, entries: Vec<(String, String)>) -> anyhow::Result<()>;
}

/// The job ledger (DynamoDB).
#[async_trait]
pub trait JobLedger: Send + Sync {
    /// Creates the job unless it exists; an existing job is returned as it is.
    async fn create_job(&self, job: &JobRecord) -> anyhow::Result<CreateOutcome>;
    async fn get_job(&self, job_id: &str) -> anyhow::Result<Option<JobRecord>>;
    /// SPLITTING → RUNNING once every manifest is enqueued (no-op in any other state).
    async fn mark_running(&self, job_id: &str) -> anyhow::Result<()>;
    async fn fail_job(&self, job_id: &str, reason: &str) -> anyhow::Result<()>;
    /// Records a finished manifest and adds its counts to the job, once: returns false when the
    /// manifest had already been recorded (a redelivery), in which case nothing is added.
    /// A manifest with `continued_at` also adds one to the job's `manifests_total`, in the same
    /// write: the continuation it enqueues is part of the job from then on.
    async fn record_manifest(&self, manifest: &ManifestRecord) -> anyhow::Result<bool>;
    /// The record of manifest `(seq, part)`, if it was recorded.
    async fn manifest(
        &self,
        job_id: &str,
        seq: u32,
        part: u32,
    ) -> anyhow::Result<Option<ManifestRecord>>;
    /// Claims the job's completion once every manifest is recorded (status → COMPLETING; the
    /// first claim sets the finish time). True means: write the summary, then call
    /// [`JobLedger::mark_completed`]. A claim stays open until then, so whoever processes a
    /// redelivered manifest after a crash can finish the job; the summary is built from the
    /// ledger alone, so two finishers write the same object.
    async fn claim_completion(&self, job_id: &str, finished_at_ms: u64) -> anyhow::Result<bool>;
    /// COMPLETING → COMPLETED, once the summary is written.
    async fn mark_completed(&self, job_id: &str) -> anyhow::Result<()>;
    /// Stops a running job (its failure tolerance was exceeded): sets its `error` to `reason`
    /// unless it has one. False when it had one already (another worker stopped it first).
    async fn stop_job(&self, job_id: &str, reason: &str) -> anyhow::Result<bool>;
    /// COMPLETING → FAILED for a stopped job, once the summary is written.
    async fn mark_stopped(&self, job_id: &str) -> anyhow::Result<()>;
    /// The recorded manifests that count: without the earlier parts of a redone CSV range
    /// ([`JobRecord::counts_part`]).
    async fn manifests(&self, job_id: &str) -> anyhow::Result<Vec<ManifestRecord>>;
    /// Opens a CSV job's redo, once: records `redo` on the job, adds one manifest per redone
    /// range to its total, and takes `superseded` (the counts of the redone ranges' parts) off
    /// its counts, in one write, while every manifest is recorded and nobody opened it before.
    /// False when that did not hold (another finisher opened it).
    async fn open_redo(
        &self,
        job_id: &str,
        redo: &[crate::quote::Redo],
        superseded: &Counts,
    ) -> anyhow::Result<bool>;
}

/// Counts set rather than added: only a replay does this, after it moved records from failed to
/// succeeded (see `fanout_handlers::replay`).
#[async_trait]
pub trait LedgerRepair: Send + Sync {
    /// Sets a recorded manifest's counts (a replay moved records from failed to succeeded).
    async fn set_manifest_counts(
        &self,
        job_id: &str,
        seq: u32,
        part: u32,
        counts: &Counts,
    ) -> anyhow::Result<()>;
    /// Sets the job's counters (to the sum of its manifests' after a replay).
    async fn set_job_counts(&self, job_id: &str, counts: &Counts) -> anyhow::Result<()>;
}

/// What one record's API call came to, after all attempts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallOutcome {
    /// Final HTTP status, if a response came back.
    pub status: Option<u16>,
    pub body: Bytes,
    pub body_truncated: bool,
    /// Latency of the last attempt.
    pub latency: Duration,
    pub attempts: u32,
    /// Why the call failed, if it did (a transport error, or a status that is not one of
    /// `client.success_statuses`).
    pub error: Option<String>,
    /// The final response's headers (empty without a response); `response.keep_headers` picks
    /// from them.
    pub headers: http::HeaderMap,
}

impl CallOutcome {
    /// A response came back and the client judged it a success (its status is one of
    /// `client.success_statuses`).
    pub fn succeeded(&self) -> bool {
        self.error.is_none() && self.status.is_some()
    }
}

/// The external API.
#[async_trait]
pub trait ApiClient: Send + Sync {
    async fn call(&self, request: &ApiRequest, policy: &ClientConfig) -> CallOutcome;
}

/// Metrics (CloudWatch). Publishes what a caller aggregated; never called per record.
#[async_trait]
pub trait MetricsSink: Send + Sync {
    /// Publishes `datums` in `namespace`, in as many calls as the service's limits need.
    async fn publish(
        &self,
        namespace: &str,
        datums: &[crate::metrics::Datum],
    ) -> anyhow::Result<()>;
}

/// The dead-letter queue, read by a replay: manifests that failed every delivery.
#[async_trait]
pub trait DeadLetterQueue: Send + Sync {
    /// Up to 10 messages, waiting briefly; hidden from other receivers until deleted or released.
    async fn receive(&self) -> anyhow::Result<Vec<QueuedMessage>>;
    /// The message was worked: it leaves the queue.
    async fn delete(&self, receipt: &str) -> anyhow::Result<()>;
    /// The message was not ours or not done: visible again at once.
    async fn release(&self, receipt: &str) -> anyhow::Result<()>;
}

/// A message taken from a queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedMessage {
    pub id: String,
    pub receipt: String,
    pub body: String,
}

/// Manifest claims (DynamoDB, in the ledger table); see [`crate::claims`].
#[async_trait]
pub trait ManifestClaims: Send + Sync {
    /// Claims manifest `unit` of `job_id` for `holder` until `expires_at_ms` (ms since the
    /// epoch); `now_ms` decides whether an existing claim has expired.
    async fn claim(
        &self,
        job_id: &str,
        unit: &str,
        holder: &str,
        expires_at_ms: u64,
        now_ms: u64,
    ) -> anyhow::Result<ClaimOutcome>;
    /// Marks the claim `COMPLETED`. Only after the manifest's ledger record is written and its
    /// continuation (if any) enqueued: from then on every redelivery is acknowledged unworked.
    async fn complete(&self, job_id: &str, unit: &str) -> anyhow::Result<()>;
    /// Drops `holder`'s claim so that a retry need not wait for its expiry (after a failure that
    /// the handler reports, e.g. S3 unavailable). Best effort: an expired claim does the same.
    async fn release(&self, job_id: &str, unit: &str, holder: &str) -> anyhow::Result<()>;
}

/// What a lease of a rate-limit window was granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowGrant {
    /// The window's counter after the addition: the lease's tokens are
    /// `[granted_after - n, min(granted_after, cap))`.
    pub granted_after: u64,
    /// The window's capacity, as its first lease fixed it: every container spaces and clips
    /// this window's tokens by it, whatever rate it believes in (during a rate change, two
    /// containers may differ).
    pub cap: u64,
}

/// The shared counter behind the fleet's rate limit (DynamoDB in production).
#[async_trait]
pub trait TokenLeaser: Send + Sync {
    /// Adds `n` to window `window`'s counter unless it has reached the window's capacity
    /// already; returns the counter after the addition with that capacity, or None when the
    /// window was full. The first lease of a window fixes its capacity to `cap` (the rate the
    /// caller believes in); later leases' `cap` is ignored. One conditional write.
    async fn lease(
        &self,
        limit: &str,
        window: u64,
        n: u64,
        cap: u64,
    ) -> anyhow::Result<Option<WindowGrant>>;
}

/// Operators' overrides of the fleet limits' rates (`fanout limit set`; DynamoDB, in the ledger
/// table). Workers read them with their leases, at most once a second per limit.
#[async_trait]
pub trait RateOverrides: Send + Sync {
    /// The override of limit `limit`, if one is set. Strongly consistent: a worker that reads
    /// after `set` returned sees it.
    async fn get(&self, limit: &str) -> anyhow::Result<Option<RateOverride>>;
    /// Stores `rate` for `limit`, replacing any override it had.
    async fn set(&self, limit: &str, rate: &RateOverride) -> anyhow::Result<()>;
    /// Removes `limit`'s override (each pipeline's config applies again); false when it had none.
    async fn clear(&self, limit: &str) -> anyhow::Result<bool>;
}

/// Where a circuit breaker's open state is shared. Implementations only store; the breaker
/// decides.
#[async_trait]
pub trait BreakerStateStore: Send + Sync {
    /// The time (ms since the epoch) until which some breaker sharing this store is open, if
    /// one is. A time in the past means closed.
    async fn open_until(&self) -> anyhow::Result<Option<u64>>;
    /// A breaker opened until `until_ms`. Should keep the later of this and what is stored, so
    /// that two containers opening at once do not shorten each other's open period.
    async fn publish_open(&self, until_ms: u64) -> anyhow::Result<()>;
    /// A probe succeeded: the API is back.
    async fn publish_closed(&self) -> anyhow::Result<()>;
}

/// Secrets (AWS Secrets Manager, KMS ciphertexts). An implementation caches what it read: a
/// worker asks for the same secret for every manifest.
#[async_trait]
pub trait SecretSource: Send + Sync {
    /// The value `reference` names. Errors name the reference, never a value.
    async fn secret(
        &self,
        reference: &crate::secret::SecretRef,
    ) -> anyhow::Result<crate::secret::Secret>;
}

/// The fleet's shared OAuth2 token (`pk = OAUTH2#<key>` in the ledger table, the token
/// encrypted with the stack's KMS key), so that the token endpoint sees about one request per
/// token lifetime however many containers run. One container refreshes it at a time, under a
/// lease with an expiry: a container that dies mid-refresh blocks the others only until then.
#[async_trait]
pub trait SharedTokenStore: Send + Sync {
    /// The stored token and its version (0 when there is none yet). Strongly consistent.
    async fn read(&self, key: &str) -> anyhow::Result<(u64, Option<crate::oauth2::IssuedToken>)>;
    /// Takes the refresh lease for `holder` until `until_ms`, if it is free (never taken, or
    /// expired at `now_ms`) and the stored version is still `seen_version`: a container that
    /// read an older token than the one stored since must use that one, not refresh again.
    async fn try_lease(
        &self,
        key: &str,
        holder: &str,
        seen_version: u64,
        now_ms: u64,
        until_ms: u64,
    ) -> anyhow::Result<bool>;
    /// Stores `token` as version `seen_version + 1` and frees the lease, unless another
    /// container stored a newer version meanwhile (its lease had expired): then nothing is
    /// written and the answer is false.
    async fn store(
        &self,
        key: &str,
        holder: &str,
        seen_version: u64,
        token: &crate::oauth2::IssuedToken,
    ) -> anyhow::Result<bool>;
}
