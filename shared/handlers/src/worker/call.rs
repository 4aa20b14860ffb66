//! Call: records → outcomes, `concurrency` calls at a time.

use futures::StreamExt;
use hdrhistogram::Histogram;
use tokio::sync::mpsc;

use fanout_core::config::ClientConfig;
use fanout_core::continuation::StopTimes;
use fanout_core::latency;
use fanout_core::output::{FailedLine, ResultLine};
use fanout_core::ports::{ApiClient, CallOutcome};
use fanout_core::response::{ResponseShaper, Shaped};

use super::read::Pending;

/// What the calls came to: the lines for `results/` and `failed/` (with their offsets), and the
/// latency of every attempted call (microseconds).
pub(super) struct Calls {
    pub(super) ok: Vec<(u64, ResultLine)>,
    pub(super) failed: Vec<(u64, FailedLine)>,
    pub(super) histogram: Histogram<u64>,
}

/// Takes the records the reader hands over (`rx`) and gives their outcomes as [`Calls`], each
/// shaped into its line by `shaper` (the pipeline's `response` section): each one
/// is called with `policy.concurrency` in flight, or with `drain` (a stopped job) not called at
/// all but failed with `drain` as its error. At the hard stop the calls still in flight are
/// abandoned (they are not in the result, so the cut falls before them) and dropping `rx` stops
/// the reader.
pub(super) async fn call_records(
    rx: mpsc::Receiver<Pending>,
    api: &dyn ApiClient,
    policy: &ClientConfig,
    shaper: &ResponseShaper,
    drain: Option<&str>,
    stop: Option<&StopTimes>,
) -> Calls {
    let pending = futures::stream::unfold(rx, |mut rx| async { rx.recv().await.map(|p| (p, rx)) });
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
        match shaper.shape(p.offset, &p.raw, &outcome) {
            Shaped::Result(line) => ok.push((p.offset, line)),
            Shaped::Failed(line) => failed.push((p.offset, line)),
        }
    }
    Calls {
        ok,
        failed,
        histogram,
    }
}

/// The outcome of a record not sent because its job was stopped.
fn not_attempted(reason: &str) -> CallOutcome {
    CallOutcome {
        error: Some(reason.to_string()),
        ..CallOutcome::default()
    }
}
