//! Release: a manifest's outcomes, from the reader and the callers, to the writer in offset
//! order, within a memory budget.
//!
//! Every record the reader frames is registered here in reading order ([`OrderedRelease`]):
//! dispatched to the callers, or finished at once (rejected, blank). A finished record's line is
//! rendered as it will be written and held until every record before it is finished; then it goes
//! to the writer ([`super::write`]), which appends it to its part. So what is held is the records
//! in flight and those finished behind a slower one, never the range.
//!
//! **The budget.** Each record takes its weight (about the bytes it holds) from a byte-counting
//! semaphore before the reader registers it, and gives it back once the writer has its line.
//! The reader waits when the budget is spent: a record at the head retrying for a minute holds
//! back at most the budget, not the rest of the range. It cannot deadlock: the head, the lowest
//! unfinished record, was registered (so it holds its weight already) and is with the callers,
//! who finish it or reach the hard stop, which closes the budget ([`Outcomes::stop`]).

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use fanout_core::csv_output::{CsvLayout, OutputFormat};
use fanout_core::output::RejectedLine;
use fanout_core::release::OrderedRelease;
use fanout_core::response::Shaped;

/// The bytes a manifest's records may hold between the reader and the writer: enough for the 64
/// calls of a default pipeline's small records many times over (the callers stay full), and for
/// a few records of `input.max_record_bytes` (1 MiB by default) in flight, so that a worker of
/// such records stays within its memory goal (docs/PERFORMANCE.md, "Memory").
pub(super) const BUDGET_BYTES: usize = 16 << 20;

/// What each registered record weighs besides its bytes (its slot, its line's allocations).
const RECORD_OVERHEAD: usize = 128;

/// What became of a record, as its output sorts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Result,
    Failed,
    Rejected,
    Blank,
}

/// A finished record: its line as written (empty for a blank line), its kind and API status.
pub(super) struct Line {
    pub(super) kind: Kind,
    pub(super) bytes: Vec<u8>,
    pub(super) status: Option<u16>,
    /// The record's share of the budget, given back when the line is dropped (written).
    _weight: Weight,
}

/// A record's share of the budget.
pub(super) struct Weight {
    /// Held only to be dropped: dropping it gives the bytes back.
    _permit: OwnedSemaphorePermit,
}

/// How a result is rendered: a JSON line, or a CSV row (the writer puts the header first).
enum Render {
    Jsonl,
    Csv(CsvLayout),
}

struct Released {
    order: OrderedRelease<Line>,
    /// To the writer; None once nothing more will be released.
    to_writer: Option<mpsc::UnboundedSender<Line>>,
}

/// A manifest's outcomes between the reader, the callers and the writer; see the module.
pub(super) struct Outcomes {
    released: Mutex<Released>,
    budget: Arc<Semaphore>,
    budget_bytes: usize,
    render: Render,
}

impl Outcomes {
    /// Outcomes rendered as `format`'s results (CSV with `layout`), within `budget_bytes`; and
    /// the writer's end, which gets every released line in offset order.
    pub(super) fn new(
        format: OutputFormat,
        layout: Option<CsvLayout>,
        budget_bytes: usize,
    ) -> (Self, mpsc::UnboundedReceiver<Line>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let render = match (format, layout) {
            (OutputFormat::Csv, Some(layout)) => Render::Csv(layout),
            _ => Render::Jsonl,
        };
        let outcomes = Self {
            released: Mutex::new(Released {
                order: OrderedRelease::new(),
                to_writer: Some(tx),
            }),
            budget: Arc::new(Semaphore::new(budget_bytes)),
            budget_bytes,
            render,
        };
        (outcomes, rx)
    }

    /// Waits for `bytes` of the budget (all of it for a record heavier than the budget). None
    /// once the budget is closed ([`Outcomes::stop`]): no record may be taken any more.
    pub(super) async fn weigh(&self, bytes: usize) -> Option<Weight> {
        let n = (bytes + RECORD_OVERHEAD).min(self.budget_bytes);
        let permit = self.budget.clone().acquire_many_owned(n as u32).await;
        permit.ok().map(|p| Weight { _permit: p })
    }

    /// Closes the budget: a reader waiting for it stops (the hard stop, or the writer failed).
    pub(super) fn stop(&self) {
        self.budget.close();
    }

    /// Registers `offset` as sent to the callers (before it is sent, so its outcome finds it).
    pub(super) fn dispatch(&self, offset: u64) {
        self.lock().order.dispatch(offset);
    }

    /// Registers a rejected record.
    pub(super) fn rejected(&self, line: RejectedLine, weight: Weight) {
        let offset = line.offset;
        let line = Line {
            kind: Kind::Rejected,
            bytes: json_line(&line),
            status: None,
            _weight: weight,
        };
        let mut released = self.lock();
        released.order.finished(offset, line);
        released.release();
    }

    /// Registers a blank line.
    pub(super) fn blank(&self, offset: u64, weight: Weight) {
        let line = Line {
            kind: Kind::Blank,
            bytes: Vec::new(),
            status: None,
            _weight: weight,
        };
        let mut released = self.lock();
        released.order.finished(offset, line);
        released.release();
    }

    /// Finishes a dispatched record with its shaped outcome.
    pub(super) fn complete(&self, offset: u64, shaped: Shaped, weight: Weight) {
        let line = match shaped {
            Shaped::Result(line) => Line {
                kind: Kind::Result,
                status: Some(line.status),
                bytes: match &self.render {
                    Render::Jsonl => json_line(&line),
                    Render::Csv(layout) => layout.row(&line, &line.fields),
                },
                _weight: weight,
            },
            Shaped::Failed(line) => Line {
                kind: Kind::Failed,
                status: line.status,
                bytes: json_line(&line),
                _weight: weight,
            },
        };
        let mut released = self.lock();
        let known = released.order.complete(offset, line);
        debug_assert!(known, "offset {offset} finished but not dispatched");
        released.release();
    }

    /// The lowest unfinished record, where a cut falls.
    pub(super) fn first_unfinished(&self) -> Option<u64> {
        self.lock().order.first_unfinished()
    }

    /// Nothing more will be released: the writer ends once it has written what was.
    pub(super) fn close(&self) {
        self.lock().to_writer = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Released> {
        self.released.lock().expect("no panic while releasing")
    }
}

impl Released {
    /// Sends the finished prefix to the writer, under the lock, so its lines keep their order.
    fn release(&mut self) {
        for (_, line) in self.order.release() {
            // A writer that failed is gone; its error fails the manifest.
            if let Some(tx) = &self.to_writer {
                let _ = tx.send(line);
            }
        }
    }
}

/// One JSON line, as `fanout_core::output::to_jsonl` writes it.
fn json_line<T: serde::Serialize>(line: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec(line).expect("output lines serialize");
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use fanout_core::output::ResultLine;

    fn result(offset: u64) -> Shaped {
        Shaped::Result(ResultLine {
            offset,
            status: 200,
            latency_ms: 1.0,
            attempts: 1,
            response: None,
            response_text: None,
            response_truncated: false,
            headers: Default::default(),
            cached: false,
            fields: Vec::new(),
        })
    }

    #[tokio::test]
    async fn lines_reach_the_writer_in_offset_order_as_their_prefix_finishes() {
        let (o, mut rx) = Outcomes::new(OutputFormat::Jsonl, None, 1 << 20);
        o.dispatch(0);
        o.dispatch(10);
        o.rejected(
            RejectedLine {
                offset: 20,
                reason: "bad".into(),
                record: None,
                record_bytes: 3,
            },
            o.weigh(3).await.unwrap(),
        );
        o.complete(10, result(10), o.weigh(1).await.unwrap());
        assert!(rx.try_recv().is_err(), "held behind 0");
        o.complete(0, result(0), o.weigh(1).await.unwrap());
        let kinds: Vec<Kind> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|l| l.kind)
            .collect();
        assert_eq!(kinds, [Kind::Result, Kind::Result, Kind::Rejected]);
        o.close();
        assert!(rx.recv().await.is_none(), "closed: the writer ends");
    }

    #[tokio::test]
    async fn a_held_line_keeps_its_weight_until_it_is_written() {
        let (o, mut rx) = Outcomes::new(OutputFormat::Jsonl, None, 1000);
        o.dispatch(0);
        o.dispatch(1);
        let head = o.weigh(0).await.unwrap();
        o.complete(1, result(1), o.weigh(800 - RECORD_OVERHEAD).await.unwrap());
        // 928 of 1000 taken, 800 of it held behind record 0: a record of 400 must wait.
        let waiting = o.weigh(400 - RECORD_OVERHEAD);
        tokio::pin!(waiting);
        assert!(futures::poll!(&mut waiting).is_pending());
        o.complete(0, result(0), head);
        assert!(
            futures::poll!(&mut waiting).is_pending(),
            "released, not written yet"
        );
        drop(rx.recv().await);
        drop(rx.recv().await);
        assert!(
            futures::poll!(&mut waiting).is_ready(),
            "written: the weight is back"
        );
    }

    #[tokio::test]
    async fn a_record_heavier_than_the_budget_takes_all_of_it_and_a_stop_ends_the_wait() {
        let (o, _rx) = Outcomes::new(OutputFormat::Jsonl, None, 1000);
        let all = o.weigh(1 << 20).await.expect("the whole budget");
        let waiting = o.weigh(1);
        tokio::pin!(waiting);
        assert!(futures::poll!(&mut waiting).is_pending());
        o.stop();
        assert!(waiting.await.is_none(), "a stop ends the wait");
        drop(all);
    }
}
