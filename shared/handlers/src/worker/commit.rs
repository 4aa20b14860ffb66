//! Commit: outcomes → the part that is done (the cut), its three output parts, its ledger record.

use std::collections::HashSet;

use hdrhistogram::Histogram;
use tokio::time::Instant;
use tracing::{error, info, warn};

use fanout_core::continuation;
use fanout_core::csv_output::{CsvLayout, OutputFormat};
use fanout_core::latency;
use fanout_core::ledger::{Counts, ManifestRecord};
use fanout_core::manifest::{Manifest, REDO_PART, keys};
use fanout_core::metrics::StatusTally;
use fanout_core::output::{JSONL_CONTENT_TYPE as JSONL, to_jsonl};
use fanout_core::ports::ObjectStore;

use super::WorkerDeps;
use super::call::Calls;
use super::read::ReadTally;

/// A manifest committed: what [`super::after::after`] needs.
pub(super) struct Committed {
    /// The manifest's record as the ledger counts it (the earlier one on a redelivery).
    pub(super) record: ManifestRecord,
    /// False when the ledger had recorded the manifest already (nothing was added).
    pub(super) newly_recorded: bool,
    /// This run's counts (equal to the record's unless a redelivery found another cut).
    pub(super) counts: Counts,
    pub(super) histogram: Histogram<u64>,
    pub(super) statuses: StatusTally,
}

/// Takes what reading and calling found and gives the committed manifest: cuts it before the
/// first unfinished record (everything from there is the continuation's), writes its `results/`,
/// `failed/` and `rejected/` parts (an empty part is deleted), and records it in the ledger once.
/// Fails when no record finished before a cut (a continuation of the whole range would make no
/// progress: SQS retries it instead). `started` is when the manifest's processing began.
pub(super) async fn commit(
    m: &Manifest,
    deps: &WorkerDeps,
    mut tally: ReadTally,
    calls: Calls,
    started: Instant,
) -> anyhow::Result<Committed> {
    let Calls {
        mut ok,
        mut failed,
        histogram,
    } = calls;
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
    let statuses = StatusTally::of(
        ok.iter()
            .map(|(_, r)| Some(r.status))
            .chain(failed.iter().map(|(_, f)| f.status)),
    );
    let store = deps.store.as_ref();
    let unit = m.unit_id();
    let format = m.config.output.format;
    let (results_key, failed_key, rejected_key) = (
        keys::results_unit_as(&m.job_id, &unit, format),
        keys::failed_unit(&m.job_id, &unit),
        keys::rejected_unit(&m.job_id, &unit),
    );
    if m.part == REDO_PART {
        delete_superseded(m, deps).await?;
    }
    let quote = tally.quote.as_ref().and_then(|t| t.scan(cut));
    let results = match format {
        OutputFormat::Jsonl => to_jsonl(ok),
        OutputFormat::Csv => {
            let layout = CsvLayout::new(&m.config.output.columns);
            let rows = (ok.iter())
                .map(|(offset, line)| (*offset, layout.row(line, &line.fields)))
                .collect();
            layout.part(rows)
        }
    };
    futures::try_join!(
        write_or_delete(
            store,
            &m.bucket,
            &results_key,
            results,
            format.content_type()
        ),
        write_or_delete(store, &m.bucket, &failed_key, to_jsonl(failed), JSONL),
        write_or_delete(
            store,
            &m.bucket,
            &rejected_key,
            to_jsonl(tally.rejected),
            JSONL
        ),
    )?;
    let mut record = ManifestRecord {
        job_id: m.job_id.clone(),
        seq: m.seq,
        part: m.part,
        continued_at: cut,
        counts,
        duration_ms: started.elapsed().as_millis() as u64,
        latency_histogram: latency::encode(&histogram),
        quote,
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
    Ok(Committed {
        record,
        newly_recorded,
        counts,
        histogram,
        statuses,
    })
}

/// A redo replaces its range's earlier parts: their output goes (the ledger no longer counts them
/// once the redo is open, see `fanout_core::quote`). Deleting is idempotent, so a retried redo
/// does it again harmlessly.
async fn delete_superseded(m: &Manifest, deps: &WorkerDeps) -> anyhow::Result<()> {
    let store = deps.store.as_ref();
    for part in 0..REDO_PART {
        if deps
            .ledger
            .manifest(&m.job_id, m.seq, part)
            .await?
            .is_none()
        {
            break;
        }
        let unit = keys::unit(m.seq, part);
        let (results, failed, rejected) = (
            keys::results_unit_as(&m.job_id, &unit, m.config.output.format),
            keys::failed_unit(&m.job_id, &unit),
            keys::rejected_unit(&m.job_id, &unit),
        );
        futures::try_join!(
            store.delete(&m.bucket, &results),
            store.delete(&m.bucket, &failed),
            store.delete(&m.bucket, &rejected),
        )?;
        info!(job_id = %m.job_id, unit, "output of a range read under a wrong quote state deleted");
    }
    Ok(())
}

/// An empty part is deleted rather than written, so a re-run that now has none leaves none behind.
async fn write_or_delete(
    store: &dyn ObjectStore,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
    content_type: &str,
) -> anyhow::Result<()> {
    if body.is_empty() {
        store.delete(bucket, key).await
    } else {
        store.put(bucket, key, body, content_type).await
    }
}
