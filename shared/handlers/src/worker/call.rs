//! Call: records → outcomes, `concurrency` calls at a time.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use hdrhistogram::Histogram;
use tokio::sync::mpsc;

use fanout_core::config::{BatchConfig, CacheConfig, ClientConfig};
use fanout_core::continuation::StopTimes;
use fanout_core::latency;
use fanout_core::ports::{ApiClient, CallOutcome};
use fanout_core::request::ApiRequest;
use fanout_core::response::{ResponseShaper, Shaped};

use super::batch;
use super::cache::{ResponseCache, Served};
use super::read::Pending;
use super::release::{Outcomes, Weight};

/// What the calls came to besides their lines (which go to the [`Outcomes`]): the latency of
/// every attempted call (microseconds).
pub(super) struct Calls {
    pub(super) histogram: Histogram<u64>,
}

/// The API, through the job's response cache when the pipeline has one.
#[derive(Clone, Copy)]
pub(super) struct Api<'a> {
    pub(super) client: &'a dyn ApiClient,
    pub(super) cache: Option<Cached<'a>>,
}

/// A job's view of the container's cache.
#[derive(Clone, Copy)]
pub(super) struct Cached<'a> {
    pub(super) cache: &'a ResponseCache,
    pub(super) job: &'a str,
    pub(super) config: &'a CacheConfig,
    /// Not part of a request's identity in the cache.
    pub(super) idempotency_header: Option<&'a http::HeaderName>,
}

impl Api<'_> {
    async fn call(&self, request: &ApiRequest, policy: &ClientConfig) -> (CallOutcome, Served) {
        match &self.cache {
            None => (self.client.call(request, policy).await, Served::Called),
            Some(c) => {
                (c.cache)
                    .call(
                        c.job,
                        c.config,
                        c.idempotency_header,
                        self.client,
                        request,
                        policy,
                    )
                    .await
            }
        }
    }
}

/// Takes the records the reader hands over (`rx`) and finishes each in `outcomes` with its line,
/// shaped by `shaper` (the pipeline's `response` section): each one is called with
/// `policy.concurrency` in flight, or with `drain` (a stopped job) not called at all but failed
/// with `drain` as its error. At the hard stop the calls still in flight are abandoned (they stay
/// unfinished, so the cut falls before them), and dropping `rx` and closing the budget stop the
/// reader.
#[allow(clippy::too_many_arguments)]
pub(super) async fn call_records(
    rx: mpsc::Receiver<Pending>,
    api: Api<'_>,
    policy: &ClientConfig,
    shaper: &ResponseShaper,
    batch: Option<&BatchConfig>,
    drain: Option<&str>,
    stop: Option<&StopTimes>,
    outcomes: &Outcomes,
) -> Calls {
    let pending = futures::stream::unfold(rx, |mut rx| async { rx.recv().await.map(|p| (p, rx)) });
    let calls: BoxStream<'_, Done> = match batch {
        None => pending
            .map(|p| async move {
                let (outcome, served) = match drain {
                    None => api.call(&p.request, policy).await,
                    Some(reason) => (not_attempted(reason), Served::Called),
                };
                let mut line = shaper.shape(p.offset, &p.raw, &outcome);
                if let Shaped::Result(line) = &mut line {
                    line.cached = served == Served::Cache;
                    line.fields = p.fields;
                }
                Done::One(p.offset, line, p.weight, attempted(&outcome))
            })
            .buffer_unordered(policy.concurrency)
            .boxed(),
        Some(config) => batch::groups(pending, config)
            .map(move |group| async move {
                let members: Vec<batch::Member<'_>> = (group.iter())
                    .map(|p| batch::Member {
                        offset: p.offset,
                        raw: &p.raw,
                        request: &p.request,
                    })
                    .collect();
                let (lines, outcome) =
                    batch::call(api.client, policy, config, shaper, &members, drain).await;
                drop(members);
                let lines = (lines.into_iter().zip(group))
                    .map(|((offset, mut line), p)| {
                        if let Shaped::Result(line) = &mut line {
                            line.fields = p.fields;
                        }
                        (offset, line, p.weight)
                    })
                    .collect();
                Done::Many(lines, attempted(&outcome))
            })
            .buffer_unordered(policy.concurrency)
            .boxed(),
    };
    let mut calls = std::pin::pin!(calls);
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
        // them and the queue, which stops the reader, as closing the budget below does when it
        // waits for it).
        let next = tokio::select! {
            next = calls.next() => next,
            () = &mut hard => break,
        };
        let Some(done) = next else { break };
        let latency = match done {
            Done::One(offset, line, weight, latency) => {
                outcomes.complete(offset, line, weight);
                latency
            }
            Done::Many(lines, latency) => {
                for (offset, line, weight) in lines {
                    outcomes.complete(offset, line, weight);
                }
                latency
            }
        };
        if let Some(latency) = latency {
            histogram.saturating_record(latency.as_micros().max(1) as u64);
        }
    }
    outcomes.stop();
    Calls { histogram }
}

/// A finished call: its record's line (or, for a batch call, its records' lines) and its
/// latency, when it was attempted.
enum Done {
    One(u64, Shaped, Weight, Option<Duration>),
    Many(Vec<(u64, Shaped, Weight)>, Option<Duration>),
}

/// The latency of the call's last attempt, if it made one.
fn attempted(outcome: &CallOutcome) -> Option<Duration> {
    (outcome.attempts > 0).then_some(outcome.latency)
}

/// The outcome of a record not sent because its job was stopped.
fn not_attempted(reason: &str) -> CallOutcome {
    CallOutcome {
        error: Some(reason.to_string()),
        ..CallOutcome::default()
    }
}
