//! Continuations: what a worker does when its invocation's deadline comes before the end of its
//! byte range.
//!
//! A Lambda invocation that runs past its deadline is killed with nothing written, so the worker
//! watches the deadline (the Lambda context's, in ms since the epoch):
//! * at the *soft stop* it stops taking new records;
//! * at the *hard stop* it abandons the calls still in flight (their records are not finished);
//! * the time left after the hard stop is for flushing: the output of the *done prefix* (every
//!   record before the first unfinished one), the ledger record, and a **continuation manifest**
//!   for the rest of the range, `[cut, end)`, where `cut` is the first unfinished record's offset.
//!
//! Records are cut by offset, never by completion order: a record after `cut` that happened to
//! finish is dropped from this part and done again by the continuation (with the same idempotency
//! key, so the API can tell). The part's outputs and ledger record cover exactly `[start, cut)`,
//! the continuation exactly `[cut, end)`, so the parts tile the planned range.
//!
//! A continuation keeps its parent's `seq` and takes `part + 1`; its output keys, ledger record and
//! claim follow from `(seq, part)`, so a redelivered parent that enqueues it again enqueues the
//! same unit, which runs once. The parent's ledger record stores `cut` and adds one manifest to
//! the job's total in the same transaction, so the job completes only when the continuation is
//! recorded too, and a parent redelivered after recording re-enqueues the very same range.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::manifest::Manifest;
use crate::range::ByteRange;

/// How long calls in flight may still finish after an [`Interrupt`] before they are abandoned.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(2);

/// An early stop requested from outside the invocation (the local runner on SIGTERM): from then
/// on the worker behaves as at its soft stop, and [`INTERRUPT_GRACE`] later as at its hard stop.
#[derive(Clone, Debug, Default)]
pub struct Interrupt(Arc<InterruptState>);

#[derive(Debug, Default)]
struct InterruptState {
    set: AtomicBool,
    notify: Notify,
}

impl Interrupt {
    pub fn trigger(&self) {
        self.0.set.store(true, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    pub fn is_set(&self) -> bool {
        self.0.set.load(Ordering::SeqCst)
    }

    async fn wait(&self) {
        loop {
            let notified = self.0.notify.notified();
            if self.is_set() {
                return;
            }
            notified.await;
        }
    }
}

/// When the worker stops taking records, abandons calls, and must be done flushing.
#[derive(Clone, Debug)]
pub struct StopTimes {
    /// Stop dispatching new records.
    pub soft: Instant,
    /// Abandon calls still in flight; what is left is for flushing.
    pub hard: Instant,
    /// The API client's own deadline, a backstop after `hard` (so that the worker's cut, not a
    /// client error, decides what an unfinished call means).
    pub client: Instant,
    /// The invocation's deadline, as ms since the epoch (the claim expires then).
    pub deadline_ms: u64,
    /// An early stop, if the runner can request one.
    pub interrupt: Interrupt,
}

/// The flushing margin for `remaining` time: a quarter of it, between 500 ms and 15 s. Flushing
/// is three S3 PUTs, one SQS send and one DynamoDB transaction: well under a second normally,
/// but a retried AWS call can take a few.
pub fn margin(remaining: Duration) -> Duration {
    (remaining / 4).clamp(Duration::from_millis(500), Duration::from_secs(15))
}

impl StopTimes {
    /// Stop times for an invocation ending at `deadline_ms`, as seen at `now_ms` / `now`.
    pub fn new(deadline_ms: u64, now_ms: u64, now: Instant) -> Self {
        let remaining = Duration::from_millis(deadline_ms.saturating_sub(now_ms));
        let m = margin(remaining);
        let end = now + remaining;
        Self {
            soft: end.checked_sub(m).unwrap_or(now),
            hard: end.checked_sub(m * 2 / 3).unwrap_or(now),
            client: end.checked_sub(m / 3).unwrap_or(now),
            deadline_ms,
            interrupt: Interrupt::default(),
        }
    }

    /// With `interrupt` as the early stop.
    pub fn with_interrupt(mut self, interrupt: Interrupt) -> Self {
        self.interrupt = interrupt;
        self
    }

    /// Whether a manifest may still be started: some time must be left before the soft stop.
    pub fn can_start(&self, now: Instant) -> bool {
        now + Duration::from_millis(100) < self.soft && !self.interrupt.is_set()
    }

    /// Whether no new record may be taken.
    pub fn soft_reached(&self, now: Instant) -> bool {
        now >= self.soft || self.interrupt.is_set()
    }

    /// Resolves at the hard stop: the deadline's, or [`INTERRUPT_GRACE`] after an interrupt.
    pub async fn hard_reached(&self) {
        tokio::select! {
            () = tokio::time::sleep_until(self.hard) => {}
            () = async {
                self.interrupt.wait().await;
                tokio::time::sleep(INTERRUPT_GRACE).await;
            } => {}
        }
    }
}

/// Where the done prefix ends: the lowest offset among the records that were dispatched but not
/// finished, and the record at which reading stopped (if it stopped early). None when nothing
/// is unfinished: the whole range is done.
pub fn cut(
    unfinished: impl IntoIterator<Item = u64>,
    reading_stopped_at: Option<u64>,
) -> Option<u64> {
    unfinished.into_iter().chain(reading_stopped_at).min()
}

/// The continuation of `m` from `cut`: the same unit of work with `part + 1` and the range
/// `[cut, m.range.end)`. `cut` is a record's first byte, so the framer (which reads from `cut - 1`)
/// sees the previous record's newline there and starts at `cut`.
pub fn continuation(m: &Manifest, cut: u64) -> Manifest {
    assert!(
        m.range.contains(cut),
        "cut {cut} outside {:?}: a record belongs to the range it starts in",
        m.range
    );
    let mut next = m.clone();
    next.part = m.part + 1;
    next.range = ByteRange::new(cut, m.range.end);
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framer::{RecordFramer, split_all};
    use proptest::prelude::*;

    #[test]
    fn stop_times_are_ordered_and_leave_a_margin() {
        let now = Instant::now();
        let t = StopTimes::new(1_300_000, 1_000_000, now);
        assert_eq!(t.soft, now + Duration::from_secs(285));
        assert_eq!(t.hard, now + Duration::from_secs(290));
        assert_eq!(t.client, now + Duration::from_secs(295));
        let short = StopTimes::new(1_004_000, 1_000_000, now);
        assert_eq!(short.soft, now + Duration::from_secs(3));
        assert!(short.soft < short.hard && short.hard < short.client);
        // A deadline already passed leaves nothing to start.
        let past = StopTimes::new(999_000, 1_000_000, now);
        assert!(!past.can_start(now));
        assert!(t.can_start(now));
    }

    #[tokio::test(start_paused = true)]
    async fn an_interrupt_is_a_soft_stop_now_and_a_hard_stop_after_the_grace() {
        let now = Instant::now();
        let t = StopTimes::new(1_300_000, 1_000_000, now).with_interrupt(Interrupt::default());
        assert!(!t.soft_reached(now) && t.can_start(now));
        let interrupt = t.interrupt.clone();
        let hard = tokio::spawn({
            let t = t.clone();
            async move {
                t.hard_reached().await;
                Instant::now()
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        interrupt.trigger();
        assert!(t.soft_reached(Instant::now()) && !t.can_start(Instant::now()));
        let at = hard.await.unwrap();
        assert_eq!(at, now + Duration::from_secs(1) + INTERRUPT_GRACE);
    }

    #[test]
    fn cut_is_the_first_unfinished_record() {
        assert_eq!(cut([40, 12, 90], Some(100)), Some(12));
        assert_eq!(cut([], Some(100)), Some(100));
        assert_eq!(cut([], None), None);
    }

    fn frame_range(data: &[u8], range: ByteRange) -> Vec<u64> {
        let mut f = RecordFramer::new(range, 0, 1 << 20);
        let mut out = Vec::new();
        f.push(&data[f.read_from() as usize..], &mut out);
        f.finish(&mut out);
        out.iter().map(|fr| fr.offset()).collect()
    }

    proptest! {
        /// Cutting a range at any record and continuing from there frames every record of the
        /// range exactly once: the parent's prefix and the continuation tile it.
        #[test]
        fn parent_prefix_and_continuation_tile_the_range(
            lines in proptest::collection::vec("[a-z,]{0,12}", 1..40),
            pick in 0usize..1000,
        ) {
            let data = lines.join("\n").into_bytes();
            prop_assume!(!data.is_empty());
            let all: Vec<u64> = split_all(&data, 0).into_iter().map(|(o, _)| o).collect();
            let range = ByteRange::new(0, data.len().max(1) as u64);
            let at = all[pick % all.len()];
            let m = Manifest {
                start_state: None,
                job_id: "j".into(), seq: 7, part: 0, manifests_total: 1, bucket: "b".into(),
                key: "k".into(), version_id: None, etag: "e".into(), object_size: data.len() as u64,
                range, data_start: 0, format: crate::config::InputFormat::Jsonl, header: None,
                pipeline: "p".into(), config_source: "s".into(),
                config: crate::config::PipelineConfig::from_yaml("s", "input: {format: jsonl}\nrequest: {url: 'http://h/x'}\n").unwrap(),
            };
            let next = continuation(&m, at);
            prop_assert_eq!(next.part, 1);
            prop_assert_eq!(next.seq, 7);
            let prefix: Vec<u64> = frame_range(&data, range).into_iter().filter(|o| *o < at).collect();
            let mut both = prefix;
            both.extend(frame_range(&data, next.range));
            prop_assert_eq!(both, all);
        }
    }
}
