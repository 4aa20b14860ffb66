//! Circuit breaker: closed / open / half-open on the failure rate over a sliding window.
//!
//! - **Closed**: calls pass; each outcome is recorded in a time-bucketed window. Once the window
//!   holds at least `min_calls` and `failure_rate` of them failed, the breaker opens. It also
//!   opens when the last `min_calls` outcomes all failed: after a sudden outage the window is
//!   still full of the successes from before it, and the rate alone would take half a window
//!   of failures (at full rate, every record burning its attempts) to cross `failure_rate`.
//! - **Open**: calls fail fast with [`ClientError::BreakerOpen`] (saying when the next probe is
//!   due) without taking a slot or a token, so an API that is down is not hammered by retries.
//! - **Half-open**: once `open_for` has passed, one call goes through as a probe while the rest
//!   are still turned away. A probe that succeeds closes the breaker with a fresh window; one
//!   that fails opens it again for another `open_for`.
//!
//! Once the breaker has judged the API down, a failed attempt that it let through anyway is the
//! breaker's cost, not the record's: a failed probe, and a failure of a call admitted before the
//! breaker opened (or learned from the fleet that it was open) and answered after, come back as
//! [`ClientError::BreakerOpen`], which the retry layer waits out without spending an attempt.
//! Otherwise a record picked as the probe again and again, or queued behind the opening, would
//! use up its attempts on an outage the breaker was managing, and fail. The failures that open
//! the breaker are still the records' own attempts: they are its evidence.
//!
//! A failure is evidence that the API is unhealthy: a connect error, a timeout, a transport
//! error or a 5xx. A 429 is the API working as designed (the concurrency limit and Retry-After
//! handle it), so it counts as a success. Errors of our own making (no token, no credential,
//! the deadline) are not counted at all.
//!
//! The open state is published to a [`BreakerStateStore`] and read back from it at most once
//! per [`SYNC_INTERVAL`], so when the store is shared (DynamoDB) a breaker that opens in one
//! container opens the others too and the fleet backs off together. Times in the store are
//! wall-clock milliseconds since the epoch, because containers share no monotonic clock.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};
use tracing::{info, warn};

use super::{ApiCall, ApiResponse, CallFuture, ClientCounters, ClientError};
use fanout_core::config::ClientConfig;

/// How often the breaker reads the shared store: bounds both the store's read load (one read
/// per container per interval) and how late a container learns that the fleet opened.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// Buckets of the sliding window: old outcomes leave the window a bucket at a time.
const BUCKETS: u64 = 10;
/// What a call turned away while the probe is out is told to wait. Short, so that when the probe
/// finds the API back the waiting calls follow within a moment instead of a whole open period
/// later; if the probe fails, they come back to an open breaker and wait for its end. A turned
/// away call costs no attempt, no token and no request, so coming back often is cheap.
pub const PROBE_ANSWER_WAIT: Duration = Duration::from_millis(200);

pub use fanout_core::ports::BreakerStateStore;

/// A store for one container, or for breakers in one process (tests, local runs).
#[derive(Debug, Default)]
pub struct InMemoryBreakerStore {
    until_ms: Mutex<Option<u64>>,
}

#[async_trait]
impl BreakerStateStore for InMemoryBreakerStore {
    async fn open_until(&self) -> anyhow::Result<Option<u64>> {
        Ok(*self.until_ms.lock().unwrap_or_else(|e| e.into_inner()))
    }
    async fn publish_open(&self, until_ms: u64) -> anyhow::Result<()> {
        let mut stored = self.until_ms.lock().unwrap_or_else(|e| e.into_inner());
        *stored = Some(stored.map_or(until_ms, |s| s.max(until_ms)));
        Ok(())
    }
    async fn publish_closed(&self) -> anyhow::Result<()> {
        *self.until_ms.lock().unwrap_or_else(|e| e.into_inner()) = None;
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct BreakerSettings {
    /// Fraction (0 < r <= 1) of failed calls in the window that opens the breaker.
    pub failure_rate: f64,
    pub min_calls: u32,
    pub window: Duration,
    pub open_for: Duration,
}

impl BreakerSettings {
    pub fn from_config(c: &ClientConfig) -> Self {
        Self {
            failure_rate: c.breaker_failure_rate,
            min_calls: c.breaker_min_calls.max(1),
            window: Duration::from_secs(c.breaker_window_secs.max(1)),
            open_for: Duration::from_secs(c.breaker_open_secs.max(1)),
        }
    }
}

/// The breaker's state, for observers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// Calls and failures per bucket; `slot` is the bucket's absolute index since `origin`, so a
/// bucket last written a lap ago is recognised as stale.
#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    slot: u64,
    calls: u32,
    failures: u32,
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// Bumped on every transition, so outcomes of calls admitted under an earlier state (say,
    /// calls still in flight when the breaker opened) are not counted against the new one.
    generation: u64,
    buckets: Vec<Bucket>,
    /// Failures recorded since the last success (in this generation).
    consecutive_failures: u32,
    last_sync: Option<Instant>,
}

/// The shared state behind every clone of a [`BreakerLayer`].
pub struct Breaker {
    settings: BreakerSettings,
    store: Arc<dyn BreakerStateStore>,
    counters: Arc<ClientCounters>,
    /// Anchors between the monotonic clock and the wall clock, taken together once, so that
    /// wall times follow tokio's (pausable) clock.
    origin: Instant,
    origin_epoch_ms: u64,
    inner: Mutex<Inner>,
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("settings", &self.settings)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, Debug)]
struct Admission {
    generation: u64,
    probe: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Success,
    Failure,
    /// Says nothing about the API's health.
    Neutral,
}

fn verdict(result: &Result<ApiResponse, ClientError>) -> Verdict {
    match result {
        Ok(r) if r.status >= 500 => Verdict::Failure,
        Ok(_) => Verdict::Success,
        Err(e) if e.is_api_failure() => Verdict::Failure,
        Err(_) => Verdict::Neutral,
    }
}

/// An admitted call whose outcome is still to be recorded. A call dropped before its answer
/// (cut by the deadline) is recorded as neutral when this drops: otherwise a cancelled probe
/// would leave the breaker half-open, waiting for it, and turning every call away for good.
struct Pending {
    breaker: Arc<Breaker>,
    admission: Option<Admission>,
}

impl Pending {
    fn finish(mut self, verdict: Verdict) -> Recorded {
        match self.admission.take() {
            Some(a) => self.breaker.record(a, verdict),
            None => Recorded::nothing(),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(a) = self.admission.take() {
            self.breaker.record(a, Verdict::Neutral);
        }
    }
}

/// What the store must hear after an outcome.
enum Publish {
    Nothing,
    Open(Instant),
    Closed,
}

/// What recording an outcome decided.
struct Recorded {
    publish: Publish,
    /// Set when the breaker takes the failure on itself (see the module docs): the caller gets
    /// [`ClientError::BreakerOpen`] with this wait instead of the failure.
    taken_back: Option<Duration>,
}

impl Recorded {
    fn nothing() -> Self {
        Self::publish(Publish::Nothing)
    }

    fn publish(publish: Publish) -> Self {
        Self {
            publish,
            taken_back: None,
        }
    }
}

impl Breaker {
    pub fn new(
        settings: BreakerSettings,
        store: Arc<dyn BreakerStateStore>,
        counters: Arc<ClientCounters>,
    ) -> Arc<Self> {
        let origin_epoch_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        Arc::new(Self {
            settings,
            store,
            counters,
            origin: Instant::now(),
            origin_epoch_ms,
            inner: Mutex::new(Inner {
                state: State::Closed,
                generation: 0,
                buckets: vec![Bucket::default(); BUCKETS as usize],
                consecutive_failures: 0,
                last_sync: None,
            }),
        })
    }

    pub fn state(&self) -> BreakerState {
        match self.lock().state {
            State::Closed => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn epoch_ms(&self, at: Instant) -> u64 {
        self.origin_epoch_ms + at.saturating_duration_since(self.origin).as_millis() as u64
    }

    fn instant(&self, epoch_ms: u64) -> Instant {
        self.origin + Duration::from_millis(epoch_ms.saturating_sub(self.origin_epoch_ms))
    }

    /// Reads the shared state if it is due; one caller per interval does the read.
    async fn sync(&self) {
        let now = Instant::now();
        {
            let mut inner = self.lock();
            if inner
                .last_sync
                .is_some_and(|t| now.duration_since(t) < SYNC_INTERVAL)
            {
                return;
            }
            inner.last_sync = Some(now);
        }
        let until = match self.store.open_until().await {
            Ok(Some(ms)) => self.instant(ms),
            Ok(None) => return,
            Err(e) => {
                // The local breaker still works without the fleet's view.
                warn!(
                    error = format!("{e:#}"),
                    "reading the shared breaker state failed"
                );
                return;
            }
        };
        let now = Instant::now();
        if until <= now {
            return;
        }
        let mut inner = self.lock();
        let later = match inner.state {
            State::Open { until: mine } => until > mine,
            // A probe is out: its answer is fresher than what the store says, and a state
            // change now would discard it (another generation) and so cost a second probe.
            State::HalfOpen { probing: true } => false,
            State::Closed | State::HalfOpen { probing: false } => true,
        };
        if later {
            info!(
                open_ms = (until - now).as_millis() as u64,
                "circuit breaker opened by the fleet"
            );
            inner.state = State::Open { until };
            inner.generation += 1;
        }
    }

    fn admit(&self) -> Result<Admission, Duration> {
        let now = Instant::now();
        let mut inner = self.lock();
        let generation = inner.generation;
        match inner.state {
            State::Closed => Ok(Admission {
                generation,
                probe: false,
            }),
            State::Open { until } if now < until => Err(until - now),
            State::Open { .. } | State::HalfOpen { probing: false } => {
                inner.state = State::HalfOpen { probing: true };
                inner.generation += 1;
                Ok(Admission {
                    generation: inner.generation,
                    probe: true,
                })
            }
            State::HalfOpen { probing: true } => Err(PROBE_ANSWER_WAIT),
        }
    }

    fn record(&self, admission: Admission, verdict: Verdict) -> Recorded {
        let now = Instant::now();
        let mut inner = self.lock();
        if admission.generation != inner.generation {
            // Admitted under an earlier state. A failure answered while the breaker is open or
            // probing is one it would have turned away: it waits like the calls turned away.
            let taken_back = match (verdict, &inner.state) {
                (Verdict::Failure, State::Open { until }) => {
                    Some(until.saturating_duration_since(now))
                }
                (Verdict::Failure, State::HalfOpen { probing: true }) => Some(PROBE_ANSWER_WAIT),
                (Verdict::Failure, State::HalfOpen { probing: false }) => Some(Duration::ZERO),
                _ => None,
            };
            return Recorded {
                publish: Publish::Nothing,
                taken_back,
            };
        }
        let open = |inner: &mut Inner| {
            let until = now + self.settings.open_for;
            inner.state = State::Open { until };
            inner.generation += 1;
            inner.consecutive_failures = 0;
            ClientCounters::bump(&self.counters.breaker_opened);
            Publish::Open(until)
        };
        if admission.probe {
            return match verdict {
                Verdict::Success => {
                    inner.state = State::Closed;
                    inner.generation += 1;
                    inner.buckets.fill(Bucket::default());
                    inner.consecutive_failures = 0;
                    info!("circuit breaker closed: probe succeeded");
                    Recorded::publish(Publish::Closed)
                }
                Verdict::Failure => {
                    warn!("circuit breaker reopened: probe failed");
                    Recorded {
                        publish: open(&mut inner),
                        taken_back: Some(self.settings.open_for),
                    }
                }
                Verdict::Neutral => {
                    inner.state = State::HalfOpen { probing: false };
                    Recorded::nothing()
                }
            };
        }
        if verdict == Verdict::Neutral {
            return Recorded::nothing();
        }
        let bucket_len = self.settings.window / BUCKETS as u32;
        let slot =
            (now.duration_since(self.origin).as_nanos() / bucket_len.as_nanos().max(1)) as u64;
        let bucket = &mut inner.buckets[(slot % BUCKETS) as usize];
        if bucket.slot != slot {
            *bucket = Bucket {
                slot,
                ..Bucket::default()
            };
        }
        bucket.calls += 1;
        bucket.failures += u32::from(verdict == Verdict::Failure);
        inner.consecutive_failures = match verdict {
            Verdict::Failure => inner.consecutive_failures + 1,
            _ => 0,
        };
        if inner.consecutive_failures >= self.settings.min_calls {
            warn!(
                failures = inner.consecutive_failures,
                "circuit breaker opened: consecutive failures"
            );
            return Recorded::publish(open(&mut inner));
        }
        let (calls, failures) = inner
            .buckets
            .iter()
            .filter(|b| b.slot + BUCKETS > slot)
            .fold((0u64, 0u64), |(c, f), b| {
                (c + u64::from(b.calls), f + u64::from(b.failures))
            });
        if calls >= u64::from(self.settings.min_calls)
            && failures as f64 >= self.settings.failure_rate * calls as f64
        {
            warn!(calls, failures, "circuit breaker opened");
            return Recorded::publish(open(&mut inner));
        }
        Recorded::nothing()
    }

    async fn publish(&self, publish: Publish) {
        let result = match publish {
            Publish::Nothing => return,
            Publish::Open(until) => self.store.publish_open(self.epoch_ms(until)).await,
            Publish::Closed => self.store.publish_closed().await,
        };
        if let Err(e) = result {
            warn!(
                error = format!("{e:#}"),
                "publishing the breaker state failed"
            );
        }
    }
}

#[derive(Clone, Debug)]
pub struct BreakerLayer {
    breaker: Arc<Breaker>,
}

impl BreakerLayer {
    pub fn new(breaker: Arc<Breaker>) -> Self {
        Self { breaker }
    }
}

impl<S> Layer<S> for BreakerLayer {
    type Service = BreakerService<S>;
    fn layer(&self, inner: S) -> BreakerService<S> {
        BreakerService {
            inner,
            breaker: self.breaker.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct BreakerService<S> {
    inner: S,
    breaker: Arc<Breaker>,
}

impl<S> Service<ApiCall> for BreakerService<S>
where
    S: Service<ApiCall, Response = ApiResponse, Error = ClientError> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = ApiResponse;
    type Error = ClientError;
    type Future = CallFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ClientError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: ApiCall) -> CallFuture {
        let inner = self.inner.clone();
        let breaker = self.breaker.clone();
        Box::pin(async move {
            breaker.sync().await;
            let pending = match breaker.admit() {
                Ok(a) => Pending {
                    breaker: breaker.clone(),
                    admission: Some(a),
                },
                Err(retry_in) => {
                    ClientCounters::bump(&breaker.counters.breaker_rejected);
                    return Err(ClientError::BreakerOpen { retry_in });
                }
            };
            let result = inner.oneshot(call).await;
            let recorded = pending.finish(verdict(&result));
            breaker.publish(recorded.publish).await;
            match recorded.taken_back {
                Some(retry_in) => Err(ClientError::BreakerOpen { retry_in }),
                None => result,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::testing::{Scripted, call, status};

    fn settings() -> BreakerSettings {
        BreakerSettings {
            failure_rate: 0.5,
            min_calls: 4,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(5),
        }
    }

    fn breaker_with(store: Arc<dyn BreakerStateStore>) -> (Arc<Breaker>, Arc<ClientCounters>) {
        let counters = Arc::new(ClientCounters::default());
        (Breaker::new(settings(), store, counters.clone()), counters)
    }

    fn breaker() -> (Arc<Breaker>, Arc<ClientCounters>) {
        breaker_with(Arc::new(InMemoryBreakerStore::default()))
    }

    async fn send<S>(svc: &S) -> Result<ApiResponse, ClientError>
    where
        S: Service<ApiCall, Response = ApiResponse, Error = ClientError> + Clone,
    {
        svc.clone().oneshot(call()).await
    }

    /// Opens `breaker` with `min_calls` failures.
    async fn trip(breaker: &Arc<Breaker>) {
        let failing = BreakerLayer::new(breaker.clone()).layer(Scripted::new(vec![status(503)]));
        for _ in 0..4 {
            send(&failing).await.unwrap();
        }
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_the_failure_rate_once_the_window_has_min_calls() {
        let (breaker, counters) = breaker();
        // 2 of 3 failed: above the rate but below min_calls, so still closed.
        let inner = Scripted::new(vec![status(200), status(503), status(503), status(200)]);
        let svc = BreakerLayer::new(breaker.clone()).layer(inner.clone());
        for _ in 0..3 {
            send(&svc).await.unwrap();
        }
        assert_eq!(breaker.state(), BreakerState::Closed);

        // The 4th call makes min_calls with 2/4 = 50% failed.
        send(&svc).await.unwrap();

        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(counters.breaker_opened.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn min_calls_failures_in_a_row_open_it_despite_a_window_of_successes() {
        let (breaker, _) = breaker();
        let healthy = BreakerLayer::new(breaker.clone()).layer(Scripted::new(vec![status(200)]));
        for _ in 0..100 {
            send(&healthy).await.unwrap();
        }
        let down = BreakerLayer::new(breaker.clone()).layer(Scripted::new(vec![status(503)]));
        // 3 failures, a success, 3 failures: never 4 in a row, and 6 of 107 is a low rate.
        let mixed = BreakerLayer::new(breaker.clone()).layer(Scripted::new(vec![
            status(503),
            status(503),
            status(503),
            status(200),
        ]));
        for _ in 0..4 {
            send(&mixed).await.unwrap();
        }
        for _ in 0..3 {
            send(&down).await.unwrap();
        }
        assert_eq!(breaker.state(), BreakerState::Closed);

        // The 4th in a row (min_calls) opens it, with 7 of 108 calls failed in the window.
        send(&down).await.unwrap();

        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn a_low_failure_rate_and_429s_keep_it_closed() {
        let (breaker, _) = breaker();
        let inner = Scripted::new(vec![
            status(503),
            status(200),
            status(429),
            status(429),
            status(404),
            status(200),
        ]);
        let svc = BreakerLayer::new(breaker.clone()).layer(inner);
        for _ in 0..6 {
            send(&svc).await.unwrap();
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_leave_the_window_as_it_slides() {
        let (breaker, _) = breaker();
        let svc = BreakerLayer::new(breaker.clone()).layer(Scripted::new(vec![
            status(503),
            status(503),
            status(503),
            status(200),
        ]));
        for _ in 0..3 {
            send(&svc).await.unwrap();
        }
        tokio::time::advance(Duration::from_secs(11)).await;

        // Only this success is in the window now: 0 of 1 failed.
        send(&svc).await.unwrap();

        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn fails_fast_while_open() {
        let (breaker, counters) = breaker();
        trip(&breaker).await;
        let inner = Scripted::new(vec![status(200)]);
        let svc = BreakerLayer::new(breaker.clone()).layer(inner.clone());

        tokio::time::advance(Duration::from_secs(2)).await;
        let result = send(&svc).await;

        assert_eq!(
            result,
            Err(ClientError::BreakerOpen {
                retry_in: Duration::from_secs(3)
            })
        );
        assert_eq!(inner.calls(), 0);
        assert_eq!(counters.breaker_rejected.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_one_probe_through_and_closes_on_its_success() {
        let (breaker, _) = breaker();
        trip(&breaker).await;
        tokio::time::advance(Duration::from_secs(5)).await;
        let inner = Scripted::delayed(vec![(Duration::from_millis(100), status(200))]);
        let svc = BreakerLayer::new(breaker.clone()).layer(inner.clone());

        let probe = tokio::spawn(svc.clone().oneshot(call()));
        tokio::task::yield_now().await;
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        // While the probe is out, other calls are still turned away, told to come back soon.
        assert_eq!(
            send(&svc).await,
            Err(ClientError::BreakerOpen {
                retry_in: PROBE_ANSWER_WAIT
            })
        );

        assert_eq!(probe.await.unwrap().unwrap().status, 200);
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(inner.calls(), 1);
        send(&svc).await.unwrap();
        assert_eq!(inner.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_for_another_period() {
        let (breaker, counters) = breaker();
        trip(&breaker).await;
        tokio::time::advance(Duration::from_secs(5)).await;
        let inner = Scripted::new(vec![Err(ClientError::Timeout { after: None })]);
        let svc = BreakerLayer::new(breaker.clone()).layer(inner.clone());

        // The probe's failure is the breaker's, not the caller's: the caller is told to wait for
        // the next probe, as a call turned away is (so the retry layer charges it no attempt).
        assert_eq!(
            send(&svc).await,
            Err(ClientError::BreakerOpen {
                retry_in: Duration::from_secs(5)
            })
        );
        assert_eq!(inner.calls(), 1);
        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(counters.breaker_opened.load(Ordering::Relaxed), 2);
        assert_eq!(counters.breaker_rejected.load(Ordering::Relaxed), 0);
        assert_eq!(
            send(&svc).await,
            Err(ClientError::BreakerOpen {
                retry_in: Duration::from_secs(5)
            })
        );
        assert_eq!(inner.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_answered_after_the_opening_is_taken_back() {
        let (b, _) = breaker();
        // Admitted while closed; its 503 comes back 1 s later, after the breaker opened.
        let slow = BreakerLayer::new(b.clone()).layer(Scripted::delayed(vec![(
            Duration::from_secs(1),
            status(503),
        )]));
        let queued = tokio::spawn(slow.clone().oneshot(call()));
        tokio::task::yield_now().await;
        trip(&b).await;
        // It would have been turned away: it waits for the rest of the open period.
        assert_eq!(
            queued.await.unwrap(),
            Err(ClientError::BreakerOpen {
                retry_in: Duration::from_secs(4)
            })
        );

        // A success answered late is the API's answer, and stands.
        let (b, _) = breaker();
        let slow_ok = BreakerLayer::new(b.clone()).layer(Scripted::delayed(vec![(
            Duration::from_secs(1),
            status(200),
        )]));
        let queued = tokio::spawn(slow_ok.clone().oneshot(call()));
        tokio::task::yield_now().await;
        trip(&b).await;
        assert_eq!(queued.await.unwrap().unwrap().status, 200);

        // So does a failure answered after the breaker closed again: the API may be back, and
        // the record's attempt was a real one.
        let (b, _) = breaker();
        let slow = BreakerLayer::new(b.clone()).layer(Scripted::delayed(vec![(
            Duration::from_secs(7),
            status(503),
        )]));
        let queued = tokio::spawn(slow.clone().oneshot(call()));
        tokio::task::yield_now().await;
        trip(&b).await;
        tokio::time::advance(Duration::from_secs(5)).await;
        let probe = BreakerLayer::new(b.clone()).layer(Scripted::new(vec![status(200)]));
        send(&probe).await.unwrap();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(queued.await.unwrap().unwrap().status, 503);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_cut_short_lets_the_next_call_probe() {
        let (breaker, _) = breaker();
        trip(&breaker).await;
        tokio::time::advance(Duration::from_secs(5)).await;
        let inner = Scripted::delayed(vec![
            (Duration::from_secs(30), status(200)),
            (Duration::ZERO, status(200)),
        ]);
        let svc = BreakerLayer::new(breaker.clone()).layer(inner.clone());

        // The deadline layer drops a call that runs out of time; here, the probe.
        let cut = tokio::time::timeout(Duration::from_secs(1), send(&svc)).await;
        assert!(cut.is_err());
        assert_eq!(breaker.state(), BreakerState::HalfOpen);

        assert_eq!(send(&svc).await.unwrap().status, 200);
        assert_eq!(inner.calls(), 2);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn the_fleet_state_does_not_discard_a_probe_in_flight() {
        let store: Arc<dyn BreakerStateStore> = Arc::new(InMemoryBreakerStore::default());
        let (a, _) = breaker_with(store.clone());
        let (b, b_counters) = breaker_with(store.clone());
        trip(&b).await;
        tokio::time::advance(Duration::from_secs(5)).await;
        let b_svc = BreakerLayer::new(b.clone()).layer(Scripted::delayed(vec![(
            Duration::from_secs(2),
            status(503),
        )]));
        let probe = tokio::spawn(b_svc.clone().oneshot(call()));
        tokio::task::yield_now().await;
        assert_eq!(b.state(), BreakerState::HalfOpen);

        // Meanwhile another container opens; b's next call reads that from the store.
        tokio::time::advance(Duration::from_millis(500)).await;
        trip(&a).await;
        tokio::time::advance(SYNC_INTERVAL).await;
        assert_eq!(
            send(&b_svc).await,
            Err(ClientError::BreakerOpen {
                retry_in: PROBE_ANSWER_WAIT
            })
        );

        // b's failed probe still counts: b reopens on its own evidence, for a full period (and
        // its caller waits that period without being charged the attempt).
        assert_eq!(
            probe.await.unwrap(),
            Err(ClientError::BreakerOpen {
                retry_in: Duration::from_secs(5)
            })
        );
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b_counters.breaker_opened.load(Ordering::Relaxed), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_of_our_own_are_not_counted() {
        let (breaker, _) = breaker();
        let svc = BreakerLayer::new(breaker.clone()).layer(Scripted::new(vec![Err(
            ClientError::RateLimit("table unreachable".into()),
        )]));
        for _ in 0..10 {
            send(&svc).await.unwrap_err();
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_shared_store_opens_the_other_containers() {
        let store: Arc<dyn BreakerStateStore> = Arc::new(InMemoryBreakerStore::default());
        let (a, _) = breaker_with(store.clone());
        let (b, b_counters) = breaker_with(store.clone());
        let b_inner = Scripted::new(vec![status(200)]);
        let b_svc = BreakerLayer::new(b.clone()).layer(b_inner.clone());
        send(&b_svc).await.unwrap();

        trip(&a).await;
        assert!(store.open_until().await.unwrap().is_some());
        // b learns of it at its next sync.
        tokio::time::advance(SYNC_INTERVAL).await;
        let result = send(&b_svc).await;

        assert!(
            matches!(result, Err(ClientError::BreakerOpen { .. })),
            "{result:?}"
        );
        assert_eq!(b_inner.calls(), 1);
        assert_eq!(b.state(), BreakerState::Open);
        // b did not trip on its own evidence.
        assert_eq!(b_counters.breaker_opened.load(Ordering::Relaxed), 0);

        // a's successful probe clears the store.
        tokio::time::advance(Duration::from_secs(5)).await;
        let a_svc = BreakerLayer::new(a.clone()).layer(Scripted::new(vec![status(200)]));
        send(&a_svc).await.unwrap();
        assert_eq!(store.open_until().await.unwrap(), None);
    }
}
