//! Adaptive concurrency limit (AIMD) on attempts in flight.
//!
//! The limit starts at its ceiling (the config's `concurrency`, what the worker keeps in
//! flight anyway), because the rate limiter, not this layer, holds the request rate down: the
//! limit only has to back off when the API says it is overloaded, and recover afterwards.
//!
//! - **Additive increase**: a success whose latency is within `latency_ratio` of the lowest
//!   latency recently seen adds `1 / limit`, about +1 per round trip's worth of calls, but only
//!   while at least half the limit is in use (an idle limit proves nothing about a bigger one).
//! - **Multiplicative decrease**: a 429 or a timeout multiplies the limit by `decrease_ratio`.
//!   Calls that were sent under the limit before a decrease answer with the same news, so only
//!   a call sent after the last decrease can decrease it again: a burst of 429s is one signal.
//!
//! The limit is kept between `min` and `max`. Latency is the attempt's own (as timed by the
//! timeout layer), not the time spent waiting here or for a token, which would otherwise read as
//! the API slowing down.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use super::{ApiCall, ApiResponse, CallFuture, ClientCounters, ClientError};
use fanout_core::config::ClientConfig;

/// The lowest latency is forgotten after one to two of these, so a lasting slowdown of the API
/// becomes the new normal instead of stopping growth forever.
const MIN_LATENCY_PERIOD: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, PartialEq)]
pub struct ConcurrencySettings {
    pub min: usize,
    pub max: usize,
    pub initial: usize,
    pub latency_ratio: f64,
    pub decrease_ratio: f64,
}

impl ConcurrencySettings {
    pub fn from_config(c: &ClientConfig) -> Self {
        let max = c.concurrency.max(1);
        Self {
            min: c.concurrency_min.clamp(1, max),
            max,
            initial: max,
            latency_ratio: c.concurrency_latency_ratio,
            decrease_ratio: c.concurrency_decrease_ratio,
        }
    }
}

#[derive(Debug)]
struct LimitState {
    limit: f64,
    /// Permits that exist (handed out or available): floor(limit) once `debt` is paid.
    permits: usize,
    /// Permits to destroy as they come back, because the limit fell below what is in flight.
    debt: usize,
    /// Bumped on each decrease.
    epoch: u64,
    min_latency: Option<Duration>,
    previous_min_latency: Option<Duration>,
    period_started: Instant,
}

/// The limit shared by every clone of a [`ConcurrencyLayer`].
#[derive(Debug)]
pub struct AdaptiveLimit {
    settings: ConcurrencySettings,
    semaphore: Arc<Semaphore>,
    state: Mutex<LimitState>,
    counters: Arc<ClientCounters>,
}

/// A slot; gives its permit back (or pays the debt with it) when dropped.
struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    limit: Arc<AdaptiveLimit>,
    epoch: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let mut state = self.limit.lock();
        // Otherwise the permit goes back to the semaphore when it drops.
        if state.debt > 0 {
            state.debt -= 1;
            permit.forget();
        }
    }
}

enum Signal {
    Success(Duration),
    Overload,
    Neutral,
}

impl AdaptiveLimit {
    pub fn new(settings: ConcurrencySettings, counters: Arc<ClientCounters>) -> Arc<Self> {
        let initial = settings.initial.clamp(settings.min, settings.max);
        counters
            .concurrency_limit
            .store(initial as u64, std::sync::atomic::Ordering::Relaxed);
        Arc::new(Self {
            semaphore: Arc::new(Semaphore::new(initial)),
            state: Mutex::new(LimitState {
                limit: initial as f64,
                permits: initial,
                debt: 0,
                epoch: 0,
                min_latency: None,
                previous_min_latency: None,
                period_started: Instant::now(),
            }),
            settings,
            counters,
        })
    }

    /// The current limit (attempts allowed in flight).
    pub fn limit(&self) -> usize {
        self.lock().permits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LimitState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn acquire(self: &Arc<Self>) -> Slot {
        let permit = self
            .semaphore
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let epoch = self.lock().epoch;
        Slot {
            permit: Some(permit),
            limit: self.clone(),
            epoch,
        }
    }

    fn in_flight(&self, state: &LimitState) -> usize {
        (state.permits + state.debt).saturating_sub(self.semaphore.available_permits())
    }

    fn on_done(&self, slot_epoch: u64, signal: Signal) {
        let mut state = self.lock();
        match signal {
            Signal::Neutral => {}
            Signal::Overload => {
                if slot_epoch == state.epoch {
                    state.epoch += 1;
                    let limit = state.limit * self.settings.decrease_ratio;
                    self.set_limit(&mut state, limit);
                }
            }
            Signal::Success(latency) => {
                let now = Instant::now();
                if now.duration_since(state.period_started) >= MIN_LATENCY_PERIOD {
                    state.previous_min_latency = state.min_latency.take();
                    state.period_started = now;
                }
                let current = state.min_latency.map_or(latency, |m| m.min(latency));
                state.min_latency = Some(current);
                let lowest = state
                    .previous_min_latency
                    .map_or(current, |p| p.min(current));
                let holds =
                    latency.as_secs_f64() <= lowest.as_secs_f64() * self.settings.latency_ratio;
                if holds && self.in_flight(&state) * 2 >= state.permits {
                    let limit = state.limit + 1.0 / state.limit;
                    self.set_limit(&mut state, limit);
                }
            }
        }
    }

    fn set_limit(&self, state: &mut LimitState, limit: f64) {
        let limit = limit.clamp(self.settings.min as f64, self.settings.max as f64);
        state.limit = limit;
        let target = limit.floor() as usize;
        if target > state.permits {
            let mut add = target - state.permits;
            let forgiven = add.min(state.debt);
            state.debt -= forgiven;
            add -= forgiven;
            self.semaphore.add_permits(add);
        } else if target < state.permits {
            let remove = state.permits - target;
            let forgotten = self.semaphore.forget_permits(remove);
            state.debt += remove - forgotten;
        }
        state.permits = target;
        self.counters
            .concurrency_limit
            .store(target as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

#[derive(Clone, Debug)]
pub struct ConcurrencyLayer {
    limit: Arc<AdaptiveLimit>,
}

impl ConcurrencyLayer {
    pub fn new(limit: Arc<AdaptiveLimit>) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for ConcurrencyLayer {
    type Service = Concurrency<S>;
    fn layer(&self, inner: S) -> Concurrency<S> {
        Concurrency {
            inner,
            limit: self.limit.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Concurrency<S> {
    inner: S,
    limit: Arc<AdaptiveLimit>,
}

impl<S> Service<ApiCall> for Concurrency<S>
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
        let limit = self.limit.clone();
        Box::pin(async move {
            let slot = limit.acquire().await;
            let trace = call.trace.clone();
            let attempts_before = trace.attempts();
            let started = Instant::now();
            let result = inner.oneshot(call).await;
            // The timeout layer's timing when it ran below; a fake inner service has none.
            let latency = if trace.attempts() > attempts_before {
                trace.last_latency()
            } else {
                started.elapsed()
            };
            let signal = match &result {
                Ok(r) if r.status == 429 => Signal::Overload,
                Ok(r) if r.status < 500 => Signal::Success(latency),
                Err(ClientError::Timeout { .. }) => Signal::Overload,
                _ => Signal::Neutral,
            };
            limit.on_done(slot.epoch, signal);
            drop(slot);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::future::join_all;

    use super::*;
    use crate::testing::{Scripted, call, status};

    fn settings(initial: usize) -> ConcurrencySettings {
        ConcurrencySettings {
            min: 2,
            max: 40,
            initial,
            latency_ratio: 2.0,
            decrease_ratio: 0.5,
        }
    }

    fn limiter(initial: usize) -> (Arc<AdaptiveLimit>, Arc<ClientCounters>) {
        let counters = Arc::new(ClientCounters::default());
        (
            AdaptiveLimit::new(settings(initial), counters.clone()),
            counters,
        )
    }

    /// Sends `n` calls at once through `svc`.
    async fn wave<S>(svc: &S, n: usize) -> Vec<Result<ApiResponse, ClientError>>
    where
        S: Service<ApiCall, Response = ApiResponse, Error = ClientError> + Clone,
    {
        join_all((0..n).map(|_| svc.clone().oneshot(call()))).await
    }

    /// Keeps more calls waiting than the limit allows, for `run`, like a busy worker.
    async fn saturate<S>(svc: &S, run: Duration)
    where
        S: Service<ApiCall, Response = ApiResponse, Error = ClientError> + Clone,
    {
        let until = Instant::now() + run;
        join_all((0..60).map(|_| async move {
            while Instant::now() < until {
                let _ = svc.clone().oneshot(call()).await;
            }
        }))
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn grows_additively_while_latency_holds() {
        let (limit, counters) = limiter(10);
        let svc = ConcurrencyLayer::new(limit.clone()).layer(Scripted::delayed(vec![(
            Duration::from_millis(20),
            status(200),
        )]));

        // Ten round trips at a full limit: about +1 per round trip, not a doubling.
        saturate(&svc, Duration::from_millis(200)).await;

        let grown = limit.limit();
        assert!((15..=21).contains(&grown), "{grown}");
        assert_eq!(
            counters.concurrency_limit.load(Ordering::Relaxed),
            grown as u64
        );

        // And never past max.
        saturate(&svc, Duration::from_secs(5)).await;
        assert_eq!(limit.limit(), 40);
    }

    #[tokio::test(start_paused = true)]
    async fn does_not_grow_when_latency_rises_past_the_ratio() {
        let (limit, _) = limiter(10);
        let fast = ConcurrencyLayer::new(limit.clone()).layer(Scripted::delayed(vec![(
            Duration::from_millis(10),
            status(200),
        )]));
        saturate(&fast, Duration::from_millis(50)).await;
        let after_fast = limit.limit();
        assert!(after_fast > 10);

        // 50 ms is past 2 × the 10 ms seen: the API is queueing.
        let slow = ConcurrencyLayer::new(limit.clone()).layer(Scripted::delayed(vec![(
            Duration::from_millis(50),
            status(200),
        )]));
        saturate(&slow, Duration::from_millis(500)).await;

        assert_eq!(limit.limit(), after_fast);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_limit_does_not_grow() {
        let (limit, _) = limiter(10);
        let svc = ConcurrencyLayer::new(limit.clone()).layer(Scripted::delayed(vec![(
            Duration::from_millis(10),
            status(200),
        )]));
        for _ in 0..50 {
            svc.clone().oneshot(call()).await.unwrap();
        }
        assert_eq!(limit.limit(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn decreases_multiplicatively_on_429_and_timeout_once_per_burst() {
        let (limit, counters) = limiter(40);
        let svc = ConcurrencyLayer::new(limit.clone()).layer(Scripted::delayed(vec![(
            Duration::from_millis(10),
            status(429),
        )]));

        // 40 calls sent under the same limit all see 429: one decrease, not forty.
        wave(&svc, 40).await;
        assert_eq!(limit.limit(), 20);

        let timeouts = ConcurrencyLayer::new(limit.clone()).layer(Scripted::new(vec![Err(
            ClientError::Timeout { after: None },
        )]));
        timeouts.clone().oneshot(call()).await.unwrap_err();
        assert_eq!(limit.limit(), 10);
        timeouts.clone().oneshot(call()).await.unwrap_err();
        timeouts.clone().oneshot(call()).await.unwrap_err();
        // Bounded below by min.
        assert_eq!(limit.limit(), 2);
        assert_eq!(counters.concurrency_limit.load(Ordering::Relaxed), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_that_are_not_overload_leave_the_limit_alone() {
        let (limit, _) = limiter(10);
        let svc = ConcurrencyLayer::new(limit.clone()).layer(Scripted::new(vec![
            Err(ClientError::Connect("refused".into())),
            status(503),
            Err(ClientError::RateLimit("no token".into())),
        ]));
        for _ in 0..3 {
            let _ = svc.clone().oneshot(call()).await;
        }
        assert_eq!(limit.limit(), 10);
    }

    /// Counts how many calls are inside it at once.
    #[derive(Clone, Default)]
    struct Gauge {
        now: Arc<AtomicUsize>,
        peak: Arc<AtomicUsize>,
    }

    impl Service<ApiCall> for Gauge {
        type Response = ApiResponse;
        type Error = ClientError;
        type Future = CallFuture;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ClientError>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: ApiCall) -> CallFuture {
            let g = self.clone();
            Box::pin(async move {
                let n = g.now.fetch_add(1, Ordering::SeqCst) + 1;
                g.peak.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                g.now.fetch_sub(1, Ordering::SeqCst);
                Ok(ApiResponse::new(429))
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_limit_bounds_calls_in_flight_even_after_a_decrease() {
        let (limit, _) = limiter(8);
        let gauge = Gauge::default();
        let svc = ConcurrencyLayer::new(limit.clone()).layer(gauge.clone());

        wave(&svc, 30).await;
        assert_eq!(gauge.peak.load(Ordering::SeqCst), 8);
        // Every wave of 429s halved the limit once, down to min; in-flight followed it.
        assert_eq!(limit.limit(), 2);
        gauge.peak.store(0, Ordering::SeqCst);
        wave(&svc, 10).await;
        assert_eq!(gauge.peak.load(Ordering::SeqCst), 2);
    }
}
