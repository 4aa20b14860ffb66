//! The worker: processes manifests from SQS. Reads its byte range as a stream, frames and parses
//! records, calls the API with bounded concurrency, writes results, records the manifest in the
//! ledger, and writes the job summary when it finishes the job's last manifest.
//!
//! Each manifest is claimed first ([`fanout_core::claims`]): a finished one is acknowledged
//! unworked, one that another live invocation holds is returned to the queue. With a deadline, a
//! manifest that cannot finish in time is cut and continued ([`fanout_core::continuation`]).
//!
//! A claimed manifest goes through one pipeline ([`process_manifest`]), a module per stage:
//!
//! | stage | takes | gives |
//! | --- | --- | --- |
//! | `read` | the manifest's byte range | records sent to the callers; rejected and blank ones |
//! | `call` | records | outcomes: result and failed lines, a latency histogram |
//! | `release` | outcomes, in any order | lines in offset order, once every record before is done |
//! | `write` | lines in offset order | the three output parts, streamed ([`crate::part_writer`]), counts |
//! | `commit` | what was written | the cut, the parts finished, the ledger record |
//! | `after` | the committed manifest | metrics, continuation, failure tolerance, job completion |
//!
//! `read`, `call` and `write` run together (a bounded channel from `read` to `call`, `release`
//! between all three); `commit` and `after` follow. Memory is bounded by what is in flight, not by
//! the range: the records between `read` and `write` share a byte budget
//! ([`release::BUDGET_BYTES`]) and each part is uploaded as it fills
//! ([`crate::part_writer::PART_BYTES`]).

use std::collections::HashSet;
use std::sync::Arc;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{error, info, warn};

use fanout_client::deadline::DeadlineHandle;
use fanout_core::claims::{self, ClaimOutcome};
use fanout_core::continuation::{self, StopTimes};
use fanout_core::csv_output::{CsvLayout, OutputFormat};
use fanout_core::ledger::{ManifestRecord, now_ms};
use fanout_core::manifest::Manifest;
use fanout_core::ports::{ApiClient, JobLedger, ManifestClaims, ManifestQueue, ObjectStore};
use fanout_core::request::compile;
use fanout_core::response::ResponseShaper;

mod after;
pub(crate) mod batch;
pub mod cache;
mod call;
mod commit;
mod read;
mod release;
mod write;

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
    /// The container's response cache, for pipelines with `cache.enabled`.
    pub cache: Arc<cache::ResponseCache>,
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
                    after::enqueue_continuation(m, at, deps).await?;
                }
                after::finish_job_if_last(m, deps).await?;
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
    let batch = m.config.batch.as_ref();
    // Enough records waiting for every call in flight to be full, and as many again.
    let per_call = batch.map_or(1, |b| b.size);
    let (tx, rx) = mpsc::channel::<read::Pending>(policy.concurrency * per_call * 2);
    let layout = (m.config.output.format == OutputFormat::Csv)
        .then(|| CsvLayout::new(&m.config.output.columns));
    let (outcomes, released) = release::Outcomes::new(
        m.config.output.format,
        layout.clone(),
        release::BUDGET_BYTES,
    );
    let mut outputs = write::Outputs::new(m, deps.store.as_ref(), layout.as_ref());
    // read → call → write run together, joined by the channel and the outcomes; then commit,
    // then after.
    let reading = async {
        let tally = read::read_records(
            m,
            deps.store.as_ref(),
            parser,
            &renderer,
            tx,
            stop,
            &outcomes,
        )
        .await;
        if let Some(done) = reading_done {
            // The batch may be gone already (a hard stop): nobody waits then.
            let _ = done.send(());
        }
        tally
    };
    let shaper = ResponseShaper::from_config(&m.config.response);
    let idempotency_header =
        http::HeaderName::from_bytes(m.config.request.idempotency_header.as_bytes()).ok();
    let cache = m.config.cache.enabled.then(|| call::Cached {
        cache: deps.cache.as_ref(),
        job: &m.job_id,
        config: &m.config.cache,
        idempotency_header: idempotency_header.as_ref(),
    });
    let api = call::Api {
        client: deps.api.as_ref(),
        cache,
    };
    let calling = call::call_records(rx, api, policy, &shaper, batch, drain, stop, &outcomes);
    let working = async {
        let done = tokio::join!(reading, calling);
        // Nothing more will be released: the writer ends with what was.
        outcomes.close();
        done
    };
    let writing = async {
        let written = outputs.write(released).await;
        if written.is_err() {
            // No use reading on: the manifest fails.
            outcomes.stop();
        }
        written
    };
    let ((tally, calls), written) = tokio::join!(working, writing);
    let committed = match (written, tally) {
        (Err(e), _) | (Ok(()), Err(e)) => Err(e),
        (Ok(()), Ok(tally)) => {
            commit::commit(m, deps, tally, calls, &outcomes, &mut outputs, started).await
        }
    };
    let committed = match committed {
        Ok(c) => c,
        Err(e) => {
            outputs.abort().await;
            return Err(e);
        }
    };
    after::after(m, deps, &committed).await?;
    Ok(committed.record)
}

#[cfg(test)]
mod tests;
