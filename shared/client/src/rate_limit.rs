//! Rate limit: every attempt, retries included, takes one token from a [`TokenSource`] before
//! it is sent, because the API's limit counts requests, not records; or, for an API that meters
//! records (`client.rate_limit_counts: records`), one token per record the attempt carries (a
//! batch call's size).
//!
//! The source is a trait so the fleet-wide bucket (tokens leased from DynamoDB) can replace the
//! [`LocalTokenBucket`], which limits one container (or one process in local runs). Time spent
//! waiting for a token is added to the `token_wait_micros` counter.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use super::{ApiCall, ApiResponse, CallFuture, ClientCounters, ClientError};
use fanout_core::config::ClientConfig;

/// Where tokens come from.
#[async_trait]
pub trait TokenSource: Send + Sync {
    /// Waits until a token is available and takes it. An error means no token can be had (the
    /// shared bucket is unreachable, say); the attempt then fails without being sent.
    async fn acquire(&self) -> anyhow::Result<()>;
}

/// A token bucket in memory: `rate` tokens a second, holding at most `burst`.
///
/// Each caller reserves its token at once (the balance may go negative) and sleeps until the
/// refill covers it, so waiters are served in order without a queue. A caller dropped while
/// waiting (say, at the deadline) loses its token: the bucket errs on the slow side.
#[derive(Debug)]
pub struct LocalTokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl LocalTokenBucket {
    /// Starts full, so the first `burst` attempts go at once.
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: f64::from(rate_per_sec.max(1)),
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    pub fn from_config(c: &ClientConfig) -> Self {
        Self::new(c.rate_limit_per_sec, c.rate_limit_burst)
    }

    /// Takes a token now and says how long to wait before it may be spent.
    fn reserve(&self) -> Duration {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = *state;
        let tokens =
            (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst) - 1.0;
        *state = (tokens, now);
        if tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-tokens / self.rate)
        }
    }
}

#[async_trait]
impl TokenSource for LocalTokenBucket {
    async fn acquire(&self) -> anyhow::Result<()> {
        let wait = self.reserve();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }
}

#[derive(Clone)]
pub struct RateLimitLayer {
    source: Arc<dyn TokenSource>,
    counters: Arc<ClientCounters>,
    per_record: bool,
}

impl RateLimitLayer {
    pub fn new(source: Arc<dyn TokenSource>, counters: Arc<ClientCounters>) -> Self {
        Self {
            source,
            counters,
            per_record: false,
        }
    }

    /// An attempt takes a token per record it carries ([`ApiRequest::records`]).
    ///
    /// [`ApiRequest::records`]: fanout_core::request::ApiRequest::records
    pub fn per_record(mut self, per_record: bool) -> Self {
        self.per_record = per_record;
        self
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            source: self.source.clone(),
            counters: self.counters.clone(),
            per_record: self.per_record,
        }
    }
}

#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    source: Arc<dyn TokenSource>,
    counters: Arc<ClientCounters>,
    per_record: bool,
}

impl fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer").finish_non_exhaustive()
    }
}

impl<S: fmt::Debug> fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> Service<ApiCall> for RateLimit<S>
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
        let source = self.source.clone();
        let counters = self.counters.clone();
        let tokens = match self.per_record {
            true => call.request.records.max(1),
            false => 1,
        };
        Box::pin(async move {
            let started = Instant::now();
            let mut token = Ok(());
            for _ in 0..tokens {
                token = source.acquire().await;
                if token.is_err() {
                    break;
                }
            }
            counters.token_wait_micros.fetch_add(
                started.elapsed().as_micros() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            token.map_err(|e| ClientError::RateLimit(format!("{e:#}")))?;
            inner.oneshot(call).await
        })
    }
}

#[cfg(test)]
mod tests {
    use fanout_core::response::StatusRules;
    use std::sync::atomic::{AtomicU64, Ordering};

    use futures::future::join_all;
    use tower::retry::budget::TpsBudget;

    use super::*;
    use crate::retry::{RetryPolicy, RetrySettings};
    use crate::testing::{Scripted, assert_near, call, status};

    /// Hands out tokens freely and counts them.
    #[derive(Debug, Default)]
    struct Counting(AtomicU64);

    #[async_trait]
    impl TokenSource for Counting {
        async fn acquire(&self) -> anyhow::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[derive(Debug)]
    struct Broken;

    #[async_trait]
    impl TokenSource for Broken {
        async fn acquire(&self) -> anyhow::Result<()> {
            anyhow::bail!("token table unreachable")
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_takes_a_token_per_record_when_records_are_counted() {
        for (per_record, want) in [(false, 1), (true, 25)] {
            let tokens = Arc::new(Counting::default());
            let layer = RateLimitLayer::new(tokens.clone(), Arc::default()).per_record(per_record);
            let mut batch = call();
            Arc::make_mut(&mut batch.request).records = 25;
            let answer = layer
                .layer(Scripted::new(vec![status(200)]))
                .oneshot(batch)
                .await;
            assert_eq!(answer.unwrap().status, 200);
            assert_eq!(
                tokens.0.load(Ordering::SeqCst),
                want,
                "per_record {per_record}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn every_attempt_including_retries_costs_a_token() {
        let tokens = Arc::new(Counting::default());
        let counters = Arc::new(ClientCounters::default());
        let inner = Scripted::new(vec![
            status(503),
            Err(ClientError::Connect("refused".into())),
            status(200),
        ]);
        let retry = RetryPolicy::new(
            RetrySettings {
                max_attempts: 5,
                backoff_base: Duration::from_millis(10),
                backoff_max: Duration::from_millis(100),
                retry_after_max: Duration::from_secs(1),
                statuses: StatusRules::default(),
            },
            Arc::new(TpsBudget::new(Duration::from_secs(10), 100, 1.0)),
            counters.clone(),
        );
        let svc = retry
            .layer()
            .layer(RateLimitLayer::new(tokens.clone(), counters).layer(inner.clone()));

        assert_eq!(svc.oneshot(call()).await.unwrap().status, 200);

        assert_eq!(inner.calls(), 3);
        assert_eq!(tokens.0.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn no_token_means_no_attempt() {
        let counters = Arc::new(ClientCounters::default());
        let inner = Scripted::new(vec![status(200)]);
        let svc = RateLimitLayer::new(Arc::new(Broken), counters).layer(inner.clone());

        let result = svc.oneshot(call()).await;

        assert_eq!(
            result,
            Err(ClientError::RateLimit("token table unreachable".into()))
        );
        assert_eq!(inner.calls(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn local_bucket_allows_the_burst_then_the_rate() {
        let counters = Arc::new(ClientCounters::default());
        let bucket = Arc::new(LocalTokenBucket::new(100, 10));
        let inner = Scripted::new(vec![status(200)]);
        let svc = RateLimitLayer::new(bucket, counters.clone()).layer(inner.clone());

        let started = Instant::now();
        join_all((0..10).map(|_| svc.clone().oneshot(call()))).await;
        assert_near(started.elapsed(), Duration::ZERO);
        assert_eq!(counters.token_wait_micros.load(Ordering::Relaxed), 0);

        // 100 more at 100/s: the last one a second later.
        join_all((0..100).map(|_| svc.clone().oneshot(call()))).await;
        assert_near(started.elapsed(), Duration::from_secs(1));
        assert_eq!(inner.calls(), 110);
        // 100 waits of 10, 20, … 1000 ms.
        let waited = counters.token_wait_micros.load(Ordering::Relaxed);
        assert!((50_000_000..=50_600_000).contains(&waited), "{waited}");
    }

    #[tokio::test(start_paused = true)]
    async fn local_bucket_refills_only_up_to_the_burst() {
        let bucket = LocalTokenBucket::new(100, 5);
        tokio::time::advance(Duration::from_secs(60)).await;
        for _ in 0..5 {
            assert_eq!(bucket.reserve(), Duration::ZERO);
        }
        assert_eq!(bucket.reserve(), Duration::from_millis(10));
    }
}
