//! The worker: processes manifests from SQS. Reads its byte range as a stream, frames and parses
//! records, calls the API with bounded concurrency, writes results, records the manifest in the
//! ledger, and writes the job summary when it finishes the job's last manifest.

use std::sync::Arc;
use std::time::Instant;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use futures::StreamExt;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::framer::{Frame, RecordFramer};
use crate::latency;
use crate::ledger::{Counts, ManifestRecord, now_ms};
use crate::manifest::{Manifest, keys};
use crate::output::{FailedLine, RejectedLine, ResultLine, to_jsonl};
use crate::ports::{ApiClient, JobLedger, ObjectStore};
use crate::range::ByteRange;
use crate::record::RecordParser;
use crate::request::{ApiRequest, RequestRenderer, compile};
use crate::summary;

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
    /// The container's fleet-wide rate limits, for their counters (None when the API client
    /// does not use them, e.g. in unit tests).
    pub limits: Option<Arc<crate::limiter::source::FleetLimits>>,
    /// Where each manifest's metrics go (None: not published, e.g. in unit tests).
    pub metrics: Option<Arc<crate::metrics::WorkerMetrics>>,
}

/// The Lambda entry point: one SQS batch in, the failed message ids out, so only those return to
/// the queue.
pub async fn handle_sqs_event(event: SqsEvent, deps: &WorkerDeps) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for message in event.records {
        let id = message.message_id.clone().unwrap_or_default();
        let result = match serde_json::from_str::<Manifest>(
            message.body.as_deref().unwrap_or_default(),
        ) {
            Ok(manifest) => {
                let span =
                    tracing::info_span!("manifest", job_id = %manifest.job_id, seq = manifest.seq);
                tracing::Instrument::instrument(process_manifest(&manifest, deps), span)
                    .await
                    .map(drop)
            }
            Err(e) => Err(anyhow::anyhow!("message {id} is not a manifest: {e}")),
        };
        if let Err(e) = result {
            error!(message_id = %id, error = format!("{e:#}"), "manifest failed; it will be retried");
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            response.batch_item_failures.push(failure);
        }
    }
    response
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
    blank_lines: u64,
    bytes_read: u64,
}

/// Processes one manifest end to end. Idempotent: output keys are deterministic and the ledger
/// counts a manifest once, so a redelivered manifest overwrites its files and adds nothing.
pub async fn process_manifest(m: &Manifest, deps: &WorkerDeps) -> anyhow::Result<ManifestRecord> {
    let started = Instant::now();
    let (parser, renderer) = compile(&m.config, m.header.as_deref(), &m.config_source)?;
    let policy = &m.config.client;
    let (tx, rx) = mpsc::channel::<Pending>(policy.concurrency * 2);

    let reading = read_records(m, deps.store.as_ref(), parser, &renderer, tx);
    let calling = async {
        let api = deps.api.as_ref();
        let pending =
            futures::stream::unfold(rx, |mut rx| async { rx.recv().await.map(|p| (p, rx)) });
        let calls = pending
            .map(|p| async move {
                let outcome = api.call(&p.request, policy).await;
                (p, outcome)
            })
            .buffer_unordered(policy.concurrency);
        let mut calls = std::pin::pin!(calls);
        let (mut ok, mut failed) = (Vec::new(), Vec::new());
        let mut histogram = latency::new_histogram();
        while let Some((p, outcome)) = calls.next().await {
            histogram.saturating_record(outcome.latency.as_micros().max(1) as u64);
            if outcome.succeeded() {
                ok.push((p.offset, ResultLine::new(p.offset, &outcome)));
            } else {
                failed.push((p.offset, FailedLine::new(p.offset, &p.raw, &outcome)));
            }
        }
        (ok, failed, histogram)
    };
    let (tally, (ok, failed, histogram)) = tokio::join!(reading, calling);
    let tally = tally?;

    let counts = Counts {
        records: (ok.len() + failed.len() + tally.rejected.len()) as u64,
        succeeded: ok.len() as u64,
        failed: failed.len() as u64,
        rejected: tally.rejected.len() as u64,
        blank_lines: tally.blank_lines,
        bytes_read: tally.bytes_read,
    };
    let statuses = crate::metrics::StatusTally::of(
        ok.iter()
            .map(|(_, r)| Some(r.status))
            .chain(failed.iter().map(|(_, f)| f.status)),
    );
    let store = deps.store.as_ref();
    let (results_key, failed_key, rejected_key) = (
        keys::results(&m.job_id, m.seq),
        keys::failed(&m.job_id, m.seq),
        keys::rejected(&m.job_id, m.seq),
    );
    futures::try_join!(
        write_or_delete(store, &m.bucket, &results_key, to_jsonl(ok)),
        write_or_delete(store, &m.bucket, &failed_key, to_jsonl(failed)),
        write_or_delete(store, &m.bucket, &rejected_key, to_jsonl(tally.rejected)),
    )?;
    let record = ManifestRecord {
        job_id: m.job_id.clone(),
        seq: m.seq,
        counts,
        duration_ms: started.elapsed().as_millis() as u64,
        latency_histogram: latency::encode(&histogram),
    };
    let newly_recorded = deps.ledger.record_manifest(&record).await?;
    if !newly_recorded {
        warn!(job_id = %m.job_id, seq = m.seq, "manifest was already recorded (redelivery); output rewritten, counts unchanged");
    }
    if let Some(metrics) = &deps.metrics {
        metrics
            .publish(&m.pipeline, &record, newly_recorded, &histogram, statuses)
            .await;
    }
    info!(job_id = %m.job_id, seq = m.seq, ?counts, ms = record.duration_ms, "manifest done");
    if deps.ledger.claim_completion(&m.job_id, now_ms()).await? {
        summary::write_summary(
            &m.job_id,
            &m.bucket,
            deps.store.as_ref(),
            deps.ledger.as_ref(),
        )
        .await?;
    }
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
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            tally.bytes_read += chunk.len() as u64;
            let done = framer.push(&chunk, &mut frames);
            for frame in frames.drain(..) {
                dispatch(frame, m, &mut parser, renderer, &tx, &mut tally).await?;
            }
            if done {
                break;
            }
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
        dispatch(frame, m, &mut parser, renderer, &tx, &mut tally).await?;
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
) -> anyhow::Result<()> {
    let (offset, raw) = match frame {
        Frame::Oversized { offset, len } => {
            let reason = format!(
                "record of {len} bytes exceeds input.max_record_bytes ({})",
                m.config.input.max_record_bytes
            );
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
    if raw.iter().all(u8::is_ascii_whitespace) {
        tally.blank_lines += 1;
        return Ok(());
    }
    let rendered = parser
        .parse(&raw)
        .and_then(|values| renderer.render(&values, &m.job_id, offset));
    match rendered {
        Ok(request) => tx
            .send(Pending {
                offset,
                raw,
                request,
            })
            .await
            .map_err(|_| anyhow::anyhow!("the API callers stopped early")),
        Err(reason) => {
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
