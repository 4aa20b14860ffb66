//! The worker: processes manifests from SQS. Reads its byte range as a stream, frames and parses
//! records, calls the API with bounded concurrency, writes results, records the manifest in the
//! ledger, and writes the job summary when it finishes the job's last manifest.
//!
//! Each manifest is claimed first ([`fanout_core::claims`]): a finished one is acknowledged unworked, one
//! that another live invocation holds is returned to the queue. With a deadline, a manifest that
//! cannot finish in time is cut and continued ([`fanout_core::continuation`]).

use std::collections::HashSet;
use std::sync::Arc;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{error, info, warn};

use fanout_client::deadline::DeadlineHandle;
use fanout_core::check::Verdict;
use fanout_core::claims::{self, ClaimOutcome};
use fanout_core::continuation::{self, StopTimes};
use fanout_core::framer::{Frame, RecordFramer};
use fanout_core::latency;
use fanout_core::ledger::{Counts, ManifestRecord, now_ms};
use fanout_core::manifest::{Manifest, keys};
use fanout_core::output::{FailedLine, RejectedLine, ResultLine, to_jsonl};
use fanout_core::ports::{ApiClient, JobLedger, ManifestClaims, ManifestQueue, ObjectStore};
use fanout_core::range::ByteRange;
use fanout_core::record::RecordParser;
use fanout_core::request::{ApiRequest, RequestRenderer, compile};
use fanout_core::summary;

/// Bytes read past the range end in the first GET, so the last record usually needs no second one.
const LOOKAHEAD_BYTES: u64 = 64 * 1024;
/// Size of each further GET while the last record is still incomplete.
const FOLLOW_UP_BYTES: u64 = 1 << 20;

/// Clients the worker needs, built once per container and shared by every invocation.
#[derive(Clone)]
pub struct WorkerDeps {
    pub store: Arc<dyn ObjectStore>,
    pub ledger: Arc<dyn JobLedger>,
    pub api: Arc<dyn ApiClient>,
    /// Where each manifest's metrics go.
    pub metrics: Arc<fanout_core::metrics::WorkerMetrics>,
    /// Manifest claims (in the ledger table).
    pub claims: Arc<dyn ManifestClaims>,
    /// The manifest queue, for continuations.
    pub queue: Arc<dyn ManifestQueue>,
    /// The API client's deadline, set per invocation.
    pub deadline: DeadlineHandle,
}

/// The entry point without a deadline (local runs and tests that do not simulate one).
pub async fn handle_sqs_event(event: SqsEvent, deps: &WorkerDeps) -> SqsBatchResponse {
    handle_sqs_batch(event, deps, None).await
}

/// The Lambda entry point: one SQS batch in, the failed message ids out, so only those return to
/// the queue. `deadline_ms` is the invocation's deadline (the Lambda context's, ms since the
/// epoch).
pub async fn handle_sqs_batch(
    event: SqsEvent,
    deps: &WorkerDeps,
    deadline_ms: Option<u64>,
) -> SqsBatchResponse {
    handle_sqs_batch_with(event, deps, deadline_ms, None).await
}

/// [`handle_sqs_batch`] with an early stop the caller can trigger (the local runner on SIGTERM):
/// the invocation then stops as at its deadline, flushing what is done and continuing the rest.
pub async fn handle_sqs_batch_with(
    event: SqsEvent,
    deps: &WorkerDeps,
    deadline_ms: Option<u64>,
    interrupt: Option<&continuation::Interrupt>,
) -> SqsBatchResponse {
    let stop = match (deadline_ms, interrupt) {
        (Some(d), _) => Some(StopTimes::new(d, now_ms(), Instant::now())),
        // No deadline but an interrupt: a deadline as far off as a claim without one lasts.
        (None, Some(_)) => Some(StopTimes::new(
            now_ms() + claims::DEFAULT_CLAIM_SECS * 1000,
            now_ms(),
            Instant::now(),
        )),
        (None, None) => None,
    }
    .map(|t| match interrupt {
        Some(i) => t.with_interrupt(i.clone()),
        None => t,
    });
    deps.deadline.set(stop.as_ref().map(|t| t.client));
    // The manifests of a batch overlap: the next one starts as soon as the one before has handed
    // its last record to the callers, so that its claim, ledger reads and first GET run while the
    // one before finishes its last calls and writes its output. Worked one after the other, the
    // container's calls would pause at every manifest boundary, and a fleet whose manifests end
    // together (equal shares of one rate limit make them) would leave a hole in the fleet's rate.
    let mut running = futures::stream::FuturesUnordered::new();
    let mut outcomes = Vec::new();
    let mut started: HashSet<(String, String)> = HashSet::new();
    for message in event.records {
        let id = message.message_id.clone().unwrap_or_default();
        let manifest =
            serde_json::from_str::<Manifest>(message.body.as_deref().unwrap_or_default())
                .map_err(|e| anyhow::anyhow!("message {id} is not a manifest: {e}"));
        // A second copy of a manifest in one batch (SQS delivers at least once) waits until the
        // first is done: its claim is then completed and the copy is acknowledged without work,
        // where overlapping it would find the claim held and send it back to the queue.
        let unit = manifest
            .as_ref()
            .ok()
            .map(|m| (m.job_id.clone(), m.unit_id()));
        if unit.as_ref().is_some_and(|u| started.contains(u)) {
            while let Some(outcome) = running.next().await {
                outcomes.push(outcome);
            }
        }
        started.extend(unit);
        while running.len() >= MANIFESTS_IN_FLIGHT {
            outcomes.extend(running.next().await);
        }
        let (reading_done, mut read) = oneshot::channel();
        running.push(handle_message(
            id,
            manifest,
            deps,
            stop.as_ref(),
            reading_done,
        ));
        // Until its reading is done (or it ended without reading), the others make progress.
        loop {
            tokio::select! {
                _ = &mut read => break,
                Some(outcome) = running.next() => outcomes.push(outcome),
            }
        }
    }
    while let Some(outcome) = running.next().await {
        outcomes.push(outcome);
    }
    let mut response = SqsBatchResponse::default();
    for (id, result) in outcomes {
        let retry = match result {
            Ok(Handled::Processed(_)) | Ok(Handled::AlreadyDone) => false,
            Ok(Handled::HeldByOther) => {
                info!(message_id = %id, "manifest is being processed by another invocation; returned to the queue");
                true
            }
            Err(e) => {
                error!(message_id = %id, error = format!("{e:#}"), "manifest failed; it will be retried");
                true
            }
        };
        if retry {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            response.batch_item_failures.push(failure);
        }
    }
    response
}

/// Manifests of one batch worked at once: the one reading its records, and the one before it
/// finishing (see [`handle_sqs_batch_with`]).
const MANIFESTS_IN_FLIGHT: usize = 2;

/// One message of a batch: its id and what became of its manifest. `reading_done` is signalled
/// when the manifest's last record went to the callers (dropped unsignalled when it ends sooner).
async fn handle_message(
    id: String,
    manifest: anyhow::Result<Manifest>,
    deps: &WorkerDeps,
    stop: Option<&StopTimes>,
    reading_done: oneshot::Sender<()>,
) -> (String, anyhow::Result<Handled>) {
    let result = match manifest {
        Err(e) => Err(e),
        // Too late to start: leave it for the next invocation, unclaimed.
        Ok(_) if stop.is_some_and(|t| !t.can_start(Instant::now())) => Err(anyhow::anyhow!(
            "no time left in this invocation to start it"
        )),
        Ok(manifest) => {
            let span = tracing::info_span!("manifest", job_id = %manifest.job_id, seq = manifest.seq, part = manifest.part);
            tracing::Instrument::instrument(
                work_manifest(&manifest, deps, stop, Some(reading_done)),
                span,
            )
            .await
        }
    };
    (id, result)
}

/// What became of one delivered manifest.
#[derive(Debug)]
pub enum Handled {
    /// Worked (or finished after a holder that died once its record was written).
    Processed(ManifestRecord),
    /// Its claim is COMPLETED: a redelivery, acknowledged without work.
    AlreadyDone,
    /// A live invocation holds its claim: to be retried later.
    HeldByOther,
}

/// Claims the manifest, works it, enqueues its continuation, and completes the claim. Idempotent:
/// a redelivered manifest is acknowledged unworked once completed, and even without the claim the
/// ledger counts a manifest once.
pub async fn handle_manifest(
    m: &Manifest,
    deps: &WorkerDeps,
    stop: Option<&StopTimes>,
) -> anyhow::Result<Handled> {
    work_manifest(m, deps, stop, None).await
}

/// [`handle_manifest`], signalling `reading_done` once every record went to the callers.
async fn work_manifest(
    m: &Manifest,
    deps: &WorkerDeps,
    stop: Option<&StopTimes>,
    reading_done: Option<oneshot::Sender<()>>,
) -> anyhow::Result<Handled> {
    let unit = m.unit_id();
    let holder = claims::new_holder();
    let now = now_ms();
    let expires = stop.map_or(now + claims::DEFAULT_CLAIM_SECS * 1000, |t| t.deadline_ms);
    match deps
        .claims
        .claim(&m.job_id, &unit, &holder, expires, now)
        .await?
    {
        ClaimOutcome::Completed => {
            info!(job_id = %m.job_id, unit, "manifest already completed (redelivery); acknowledged without work");
            return Ok(Handled::AlreadyDone);
        }
        ClaimOutcome::HeldByOther { .. } => return Ok(Handled::HeldByOther),
        ClaimOutcome::Acquired { taken_over } => {
            if taken_over {
                warn!(job_id = %m.job_id, unit, "took over the expired claim of an invocation that died");
            }
        }
    }
    let worked = async {
        // A holder that died after recording the manifest left only the continuation and the
        // claim to finish: redoing the work could cut the range elsewhere.
        let record = match deps.ledger.manifest(&m.job_id, m.seq, m.part).await? {
            Some(recorded) => {
                if let Some(at) = recorded.continued_at {
                    enqueue_continuation(m, at, deps).await?;
                }
                finish_job_if_last(m, deps).await?;
                recorded
            }
            None => {
                // A job stopped by its failure tolerance makes no more calls.
                let stopped = deps.ledger.get_job(&m.job_id).await?.and_then(|j| j.error);
                process_manifest(m, deps, stop, stopped.as_deref(), reading_done).await?
            }
        };
        deps.claims.complete(&m.job_id, &unit).await?;
        anyhow::Ok(record)
    }
    .await;
    match worked {
        Ok(record) => Ok(Handled::Processed(record)),
        Err(e) => {
            // Let the retry start at once rather than after the claim's expiry.
            if let Err(release) = deps.claims.release(&m.job_id, &unit, &holder).await {
                warn!(job_id = %m.job_id, unit, error = format!("{release:#}"), "could not release the claim; it will expire");
            }
            Err(e)
        }
    }
}

/// Sends the continuation of `m` from `at`. Sending it twice (a redelivered parent) is harmless:
/// both copies are the same unit, and its claim lets one of them work.
async fn enqueue_continuation(m: &Manifest, at: u64, deps: &WorkerDeps) -> anyhow::Result<()> {
    let next = continuation::continuation(m, at);
    info!(job_id = %m.job_id, unit = next.unit_id(), from = at, to = next.range.end, "continuation enqueued");
    deps.queue
        .send_batch(vec![("0".into(), serde_json::to_string(&next)?)])
        .await
}

/// The outcome of a record not sent because its job was stopped.
fn not_attempted(reason: &str) -> fanout_core::ports::CallOutcome {
    fanout_core::ports::CallOutcome {
        status: None,
        body: bytes::Bytes::new(),
        body_truncated: false,
        latency: std::time::Duration::ZERO,
        attempts: 0,
        error: Some(reason.to_string()),
    }
}

/// Stops the job if its counts, with this manifest's, are past the pipeline's failure tolerance.
async fn judge_tolerance(m: &Manifest, deps: &WorkerDeps) -> anyhow::Result<()> {
    let limits = &m.config.job;
    if limits.tolerated_failure_count.is_none() && limits.tolerated_failure_percent.is_none() {
        return Ok(());
    }
    let Some(job) = deps.ledger.get_job(&m.job_id).await? else {
        return Ok(());
    };
    if job.error.is_none()
        && let Some(reason) = fanout_core::tolerance::exceeded(limits, &job.counts)
        && deps.ledger.stop_job(&m.job_id, &reason).await?
    {
        warn!(job_id = %m.job_id, reason, "job stopped; its remaining records will not be sent");
        deps.metrics.jobs().job_failed(&m.job_id, &m.pipeline).await;
    }
    Ok(())
}

/// Writes the summary if this manifest was the job's last one to be recorded.
async fn finish_job_if_last(m: &Manifest, deps: &WorkerDeps) -> anyhow::Result<()> {
    if deps.ledger.claim_completion(&m.job_id, now_ms()).await? {
        summary::write_summary(
            &m.job_id,
            &m.bucket,
            deps.store.as_ref(),
            deps.ledger.as_ref(),
        )
        .await?;
    }
    Ok(())
}

/// A record on its way to the API.
struct Pending {
    offset: u64,
    raw: Vec<u8>,
    request: ApiRequest,
}

/// What the reading side found besides requests.
#[derive(Default)]
struct ReadTally {
    rejected: Vec<(u64, RejectedLine)>,
    /// Offsets of blank lines (kept, so that a cut can tell which ones its prefix holds).
    blank_lines: Vec<u64>,
    bytes_read: u64,
    /// Offsets of the records handed to the callers.
    sent: Vec<u64>,
    /// The first record not dispatched, when reading stopped before the range's end.
    stopped_at: Option<u64>,
}

/// Processes one manifest end to end, or with `stop`, as much of it as the deadline allows and a
/// continuation for the rest. Idempotent: output keys are deterministic and the ledger counts a
/// manifest once, so a redelivered manifest overwrites its files and adds nothing.
///
/// With `drain` (the job was stopped, see [`fanout_core::tolerance`]) no call is made: every record that
/// would have been sent goes to `failed/` with `drain` as its error, not attempted.
///
/// `reading_done` is signalled when the last record went to the callers.
pub async fn process_manifest(
    m: &Manifest,
    deps: &WorkerDeps,
    stop: Option<&StopTimes>,
    drain: Option<&str>,
    reading_done: Option<oneshot::Sender<()>>,
) -> anyhow::Result<ManifestRecord> {
    let started = Instant::now();
    let (parser, renderer) = compile(&m.config, m.header.as_deref(), &m.config_source)?;
    let policy = &m.config.client;
    let (tx, rx) = mpsc::channel::<Pending>(policy.concurrency * 2);

    let reading = async {
        let tally = read_records(m, deps.store.as_ref(), parser, &renderer, tx, stop).await;
        if let Some(done) = reading_done {
            // The batch may be gone already (a hard stop): nobody waits then.
            let _ = done.send(());
        }
        tally
    };
    let calling = async {
        let api = deps.api.as_ref();
        let pending =
            futures::stream::unfold(rx, |mut rx| async { rx.recv().await.map(|p| (p, rx)) });
        let calls = pending
            .map(|p| async move {
                let outcome = match drain {
                    None => api.call(&p.request, policy).await,
                    Some(reason) => not_attempted(reason),
                };
                (p, outcome)
            })
            .buffer_unordered(policy.concurrency);
        let mut calls = std::pin::pin!(calls);
        let (mut ok, mut failed) = (Vec::new(), Vec::new());
        let mut histogram = latency::new_histogram();
        let hard = async {
            match stop {
                Some(t) => t.hard_reached().await,
                None => std::future::pending().await,
            }
        };
        let mut hard = std::pin::pin!(hard);
        loop {
            // At the hard stop the calls still in flight are abandoned (dropping `calls` drops
            // them and the queue, which stops the reader).
            let next = tokio::select! {
                next = calls.next() => next,
                () = &mut hard => break,
            };
            let Some((p, outcome)) = next else { break };
            if outcome.attempts > 0 {
                histogram.saturating_record(outcome.latency.as_micros().max(1) as u64);
            }
            if outcome.succeeded() {
                ok.push((p.offset, ResultLine::new(p.offset, &outcome)));
            } else {
                failed.push((p.offset, FailedLine::new(p.offset, &p.raw, &outcome)));
            }
        }
        (ok, failed, histogram)
    };
    let (tally, (mut ok, mut failed, histogram)) = tokio::join!(reading, calling);
    let mut tally = tally?;

    // Everything before the first unfinished record is this part; the rest is the continuation's.
    let finished: HashSet<u64> = ok
        .iter()
        .map(|(o, _)| *o)
        .chain(failed.iter().map(|(o, _)| *o))
        .collect();
    let unfinished = tally.sent.iter().filter(|o| !finished.contains(o)).copied();
    let cut = continuation::cut(unfinished, tally.stopped_at);
    if let Some(cut) = cut {
        ok.retain(|(o, _)| *o < cut);
        failed.retain(|(o, _)| *o < cut);
        tally.rejected.retain(|(o, _)| *o < cut);
        tally.blank_lines.retain(|o| *o < cut);
        if ok.is_empty()
            && failed.is_empty()
            && tally.rejected.is_empty()
            && tally.blank_lines.is_empty()
        {
            // A continuation of the whole range would make no progress: let SQS retry it (and
            // after maxReceiveCount, keep it in the DLQ), so nothing is lost and nothing loops.
            anyhow::bail!(
                "no record of {} finished before the invocation's deadline (first unfinished at offset {cut})",
                m.unit_id()
            );
        }
        info!(job_id = %m.job_id, unit = m.unit_id(), cut, end = m.range.end, "deadline: done prefix flushed, rest continued");
    }

    let counts = Counts {
        records: (ok.len() + failed.len() + tally.rejected.len()) as u64,
        succeeded: ok.len() as u64,
        failed: failed.len() as u64,
        rejected: tally.rejected.len() as u64,
        blank_lines: tally.blank_lines.len() as u64,
        bytes_read: tally.bytes_read,
    };
    let statuses = fanout_core::metrics::StatusTally::of(
        ok.iter()
            .map(|(_, r)| Some(r.status))
            .chain(failed.iter().map(|(_, f)| f.status)),
    );
    let store = deps.store.as_ref();
    let unit = m.unit_id();
    let (results_key, failed_key, rejected_key) = (
        keys::results_unit(&m.job_id, &unit),
        keys::failed_unit(&m.job_id, &unit),
        keys::rejected_unit(&m.job_id, &unit),
    );
    futures::try_join!(
        write_or_delete(store, &m.bucket, &results_key, to_jsonl(ok)),
        write_or_delete(store, &m.bucket, &failed_key, to_jsonl(failed)),
        write_or_delete(store, &m.bucket, &rejected_key, to_jsonl(tally.rejected)),
    )?;
    let mut record = ManifestRecord {
        job_id: m.job_id.clone(),
        seq: m.seq,
        part: m.part,
        continued_at: cut,
        counts,
        duration_ms: started.elapsed().as_millis() as u64,
        latency_histogram: latency::encode(&histogram),
    };
    let newly_recorded = deps.ledger.record_manifest(&record).await?;
    if !newly_recorded {
        warn!(job_id = %m.job_id, unit, "manifest was already recorded (redelivery); output rewritten, counts unchanged");
        // The recorded cut is the one the job's total counts on.
        if let Some(recorded) = deps.ledger.manifest(&m.job_id, m.seq, m.part).await? {
            if recorded.continued_at != record.continued_at {
                // Only two live invocations on one unit get here (the claim excludes that unless
                // clocks disagree by more than the flush margin): the part files just written
                // cover a different prefix than the ledger counts. Say so loudly.
                error!(job_id = %m.job_id, unit, recorded = ?recorded.continued_at, ours = ?record.continued_at,
                    "unit worked twice concurrently with different cuts: its output parts disagree with the ledger");
            }
            record = recorded;
        }
    }
    deps.metrics
        .publish(&m.pipeline, &record, newly_recorded, &histogram, statuses)
        .await;
    if let Some(at) = record.continued_at {
        enqueue_continuation(m, at, deps).await?;
    }
    judge_tolerance(m, deps).await?;
    info!(job_id = %m.job_id, unit, ?counts, ms = record.duration_ms, "manifest done");
    finish_job_if_last(m, deps).await?;
    Ok(record)
}

/// An empty part is deleted rather than written, so a re-run that now has none leaves none behind.
async fn write_or_delete(
    store: &dyn ObjectStore,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
) -> anyhow::Result<()> {
    if body.is_empty() {
        store.delete(bucket, key).await
    } else {
        store.put(bucket, key, body, "application/x-ndjson").await
    }
}

/// Streams the manifest's range (and as far past it as the last record needs), frames records,
/// rejects what cannot be sent, and hands the rest to the callers through `tx`.
async fn read_records(
    m: &Manifest,
    store: &dyn ObjectStore,
    mut parser: RecordParser,
    renderer: &RequestRenderer,
    tx: mpsc::Sender<Pending>,
    stop: Option<&StopTimes>,
) -> anyhow::Result<ReadTally> {
    let max = m.config.input.max_record_bytes;
    let mut framer = RecordFramer::new(m.range, m.data_start, max);
    let mut tally = ReadTally::default();
    let mut frames = Vec::new();
    let mut segment = m.range.end.saturating_sub(framer.read_from()) + LOOKAHEAD_BYTES;
    while !framer.is_done() && framer.position() < m.object_size {
        let from = framer.position();
        let to = m.object_size.min(from + segment);
        let mut body = store
            .get_range(
                &m.bucket,
                &m.key,
                m.version_id.as_deref(),
                Some(&m.etag),
                ByteRange::new(from, to),
            )
            .await?;
        loop {
            let hard = async {
                match stop {
                    Some(t) => t.hard_reached().await,
                    None => std::future::pending().await,
                }
            };
            let chunk = tokio::select! {
                chunk = body.next() => chunk,
                () = hard => anyhow::bail!(
                    "s3://{}/{}: read stalled past the invocation's deadline",
                    m.bucket,
                    m.key
                ),
            };
            let Some(chunk) = chunk else { break };
            let chunk = chunk?;
            tally.bytes_read += chunk.len() as u64;
            let done = framer.push(&chunk, &mut frames);
            for frame in frames.drain(..) {
                if tally.stopped_at.is_none() {
                    dispatch(frame, m, &mut parser, renderer, &tx, &mut tally, stop).await?;
                }
            }
            if done || tally.stopped_at.is_some() {
                break;
            }
        }
        if tally.stopped_at.is_some() {
            return Ok(tally);
        }
        if framer.position() == from {
            anyhow::bail!(
                "s3://{}/{}: empty read at offset {from} of {}",
                m.bucket,
                m.key,
                m.object_size
            );
        }
        segment = FOLLOW_UP_BYTES;
    }
    framer.finish(&mut frames);
    for frame in frames.drain(..) {
        if tally.stopped_at.is_none() {
            dispatch(frame, m, &mut parser, renderer, &tx, &mut tally, stop).await?;
        }
    }
    Ok(tally)
}

async fn dispatch(
    frame: Frame,
    m: &Manifest,
    parser: &mut RecordParser,
    renderer: &RequestRenderer,
    tx: &mpsc::Sender<Pending>,
    tally: &mut ReadTally,
    stop: Option<&StopTimes>,
) -> anyhow::Result<()> {
    // Past the soft stop no record is taken: this one starts the continuation.
    if stop.is_some_and(|t| t.soft_reached(Instant::now())) {
        tally.stopped_at = Some(frame.offset());
        return Ok(());
    }
    let (offset, raw) = match frame {
        Frame::Oversized { offset, len } => {
            let reason = fanout_core::check::oversized(len, m.config.input.max_record_bytes);
            tally.rejected.push((
                offset,
                RejectedLine {
                    offset,
                    reason,
                    record: None,
                    record_bytes: len,
                },
            ));
            return Ok(());
        }
        Frame::Record { offset, bytes } => (offset, bytes),
    };
    match fanout_core::check::judge(&raw, parser, renderer, &m.job_id, offset) {
        Verdict::Blank => {
            tally.blank_lines.push(offset);
            Ok(())
        }
        Verdict::Send(request) => {
            let sent = tx
                .send(Pending {
                    offset,
                    raw,
                    request,
                })
                .await;
            match sent {
                Ok(()) => tally.sent.push(offset),
                // The callers stop early only at the hard stop: this record is unfinished.
                Err(_) if stop.is_some() => tally.stopped_at = Some(offset),
                Err(_) => anyhow::bail!("the API callers stopped early"),
            }
            Ok(())
        }
        Verdict::Reject(reason) => {
            let record = Some(String::from_utf8_lossy(&raw).into_owned());
            tally.rejected.push((
                offset,
                RejectedLine {
                    offset,
                    reason,
                    record,
                    record_bytes: raw.len() as u64,
                },
            ));
            Ok(())
        }
    }
}

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;
