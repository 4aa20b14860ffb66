//! Per-attempt timeout, and the attempt's clock.
//!
//! An attempt that runs past the timeout fails with [`ClientError::Timeout`], which the breaker
//! counts as a failure, retry retries and the concurrency limit treats as overload. When the
//! call's deadline comes first the attempt is cut at the deadline instead and fails with
//! [`ClientError::DeadlineExceeded`]: running out of time is ours, not the API's fault.
//!
//! This layer sits right below the rate limiter, so it sees exactly the attempts that were
//! granted a token, from that moment on. That makes it the place that counts attempts and times
//! them (the call's [`super::CallTrace`] and the shared counters), without the time spent
//! waiting for a slot or a token.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use super::{ApiCall, ApiResponse, CallFuture, ClientCounters, ClientError};

#[derive(Clone, Debug)]
pub struct TimeoutLayer {
    timeout: Duration,
    counters: Arc<ClientCounters>,
}

impl TimeoutLayer {
    pub fn new(timeout: Duration, counters: Arc<ClientCounters>) -> Self {
        Self { timeout, counters }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;
    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout {
            inner,
            timeout: self.timeout,
            counters: self.counters.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Timeout<S> {
    inner: S,
    timeout: Duration,
    counters: Arc<ClientCounters>,
}

impl<S> Service<ApiCall> for Timeout<S>
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
        let timeout = self.timeout;
        let counters = self.counters.clone();
        Box::pin(async move {
            let started = Instant::now();
            let (until, cut_by_deadline) = match call.deadline {
                Some(d) if d < started + timeout => (d, true),
                _ => (started + timeout, false),
            };
            let trace = call.trace.clone();
            trace.begin_attempt();
            ClientCounters::bump(&counters.attempts);
            let result = match tokio::time::timeout_at(until, inner.oneshot(call)).await {
                Ok(result) => result,
                Err(_) if cut_by_deadline => Err(ClientError::DeadlineExceeded { last: None }),
                Err(_) => Err(ClientError::Timeout {
                    after: Some(timeout),
                }),
            };
            trace.end_attempt(started.elapsed());
            match &result {
                Ok(r) if r.status == 429 => ClientCounters::bump(&counters.status_429),
                Err(ClientError::Timeout { .. }) => ClientCounters::bump(&counters.timeouts),
                _ => {}
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::breaker::{
        Breaker, BreakerLayer, BreakerSettings, BreakerState, InMemoryBreakerStore,
    };
    use crate::testing::{Scripted, assert_near, call, status};

    fn slow(delay: Duration) -> Scripted {
        Scripted::delayed(vec![(delay, status(200))])
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_past_the_timeout_fails_with_timeout() {
        let counters = Arc::new(ClientCounters::default());
        let svc = TimeoutLayer::new(Duration::from_secs(1), counters.clone())
            .layer(slow(Duration::from_secs(3)));
        let c = call();
        let trace = c.trace.clone();

        let result = svc.oneshot(c).await;

        assert_eq!(
            result,
            Err(ClientError::Timeout {
                after: Some(Duration::from_secs(1))
            })
        );
        assert_near(trace.last_latency(), Duration::from_secs(1));
        assert_eq!(trace.attempts(), 1);
        assert_eq!(counters.timeouts.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_attempt_is_timed_and_counted() {
        let counters = Arc::new(ClientCounters::default());
        let svc =
            TimeoutLayer::new(Duration::from_secs(1), counters.clone()).layer(Scripted::delayed(
                vec![(Duration::from_millis(30), Ok(super::ApiResponse::new(429)))],
            ));
        let c = call();
        let trace = c.trace.clone();

        assert_eq!(svc.clone().oneshot(c.clone()).await.unwrap().status, 429);
        svc.oneshot(c).await.unwrap();

        assert_eq!(trace.attempts(), 2);
        assert_near(trace.last_latency(), Duration::from_millis(30));
        assert_eq!(counters.attempts.load(Ordering::Relaxed), 2);
        assert_eq!(counters.status_429.load(Ordering::Relaxed), 2);
        assert_eq!(counters.timeouts.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_shortens_the_attempt_and_is_not_a_timeout() {
        let counters = Arc::new(ClientCounters::default());
        let svc = TimeoutLayer::new(Duration::from_secs(10), counters.clone())
            .layer(slow(Duration::from_secs(3)));
        let mut c = call();
        c.deadline = Some(Instant::now() + Duration::from_secs(1));

        let started = Instant::now();
        let result = svc.oneshot(c).await;

        assert_eq!(result, Err(ClientError::DeadlineExceeded { last: None }));
        assert_near(started.elapsed(), Duration::from_secs(1));
        assert_eq!(counters.timeouts.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_breaker_counts_timeouts_as_failures() {
        let counters = Arc::new(ClientCounters::default());
        let breaker = Breaker::new(
            BreakerSettings {
                failure_rate: 0.5,
                min_calls: 3,
                window: Duration::from_secs(10),
                open_for: Duration::from_secs(5),
            },
            Arc::new(InMemoryBreakerStore::default()),
            counters.clone(),
        );
        // The API answers 200, but too late: only the timeout can tell the breaker.
        let inner = slow(Duration::from_secs(3));
        let svc = BreakerLayer::new(breaker.clone()).layer(
            TimeoutLayer::new(Duration::from_secs(1), counters.clone()).layer(inner.clone()),
        );

        for _ in 0..3 {
            let result = svc.clone().oneshot(call()).await;
            assert!(
                matches!(result, Err(ClientError::Timeout { .. })),
                "{result:?}"
            );
        }

        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(counters.breaker_opened.load(Ordering::Relaxed), 1);
        let rejected = svc.oneshot(call()).await;
        assert!(matches!(rejected, Err(ClientError::BreakerOpen { .. })));
        assert_eq!(inner.calls(), 3);
    }
}
