//! Commit: what was read, called and written → the part that is done (the cut), its three output
//! parts finished, its ledger record.

use hdrhistogram::Histogram;
use tokio::time::Instant;
use tracing::{error, info, warn};

use fanout_core::continuation;
use fanout_core::latency;
use fanout_core::ledger::{Counts, ManifestRecord};
use fanout_core::manifest::{Manifest, REDO_PART, keys};
use fanout_core::metrics::StatusTally;

use super::WorkerDeps;
use super::call::Calls;
use super::read::ReadTally;
use super::release::Outcomes;
use super::write::Outputs;

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

/// Takes what reading, calling and writing did and gives the committed manifest: cuts it before
/// the first unfinished record (everything from there is the continuation's; what was written is
/// before it by construction, see [`super::release`]), finishes its `results/`, `failed/` and
/// `rejected/` parts (an empty part is deleted), and records it in the ledger once. Fails when
/// no record finished before a cut (a continuation of the whole range would make no progress:
/// SQS retries it instead). `started` is when the manifest's processing began.
pub(super) async fn commit(
    m: &Manifest,
    deps: &WorkerDeps,
    tally: ReadTally,
    calls: Calls,
    outcomes: &Outcomes,
    outputs: &mut Outputs<'_>,
    started: Instant,
) -> anyhow::Result<Committed> {
    let Calls { histogram } = calls;
    // Everything before the first unfinished record is this part; the rest is the continuation's.
    let cut = continuation::cut(outcomes.first_unfinished(), tally.stopped_at);
    let counts = Counts {
        bytes_read: tally.bytes_read,
        ..outputs.counts
    };
    if let Some(cut) = cut {
        if counts.records == 0 && counts.blank_lines == 0 {
            // A continuation of the whole range would make no progress: let SQS retry it (and
            // after maxReceiveCount, keep it in the DLQ), so nothing is lost and nothing loops.
            anyhow::bail!(
                "no record of {} finished before the invocation's deadline (first unfinished at offset {cut})",
                m.unit_id()
            );
        }
        info!(job_id = %m.job_id, unit = m.unit_id(), cut, end = m.range.end, "deadline: done prefix flushed, rest continued");
    }
    let unit = m.unit_id();
    if m.part == REDO_PART {
        delete_superseded(m, deps).await?;
    }
    let quote = tally.quote.as_ref().and_then(|t| t.scan(cut));
    outputs.finish().await?;
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
        statuses: outputs.statuses,
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
