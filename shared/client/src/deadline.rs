//! Deadline: the whole call (every attempt, every wait) ends by the invocation's deadline.
//!
//! A Lambda invocation that runs past its deadline is killed with its work unrecorded, so a
//! call that cannot finish in time should give up while the worker can still write what it has.
//! The deadline lives in a [`DeadlineHandle`] shared by the container's stacks, because one
//! container serves one invocation at a time and the `ApiClient` port carries no deadline: the
//! handler sets it when an invocation starts. The layer also writes it into the [`ApiCall`], so
//! inner layers can stop before it (retry does not start a backoff that would end past it; the
//! per-attempt timeout is shortened to it) and report what the API last said; the timer here
//! is the backstop for waits that cannot look at it (a slot, a token).

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use super::{ApiCall, ApiResponse, CallFuture, ClientError};

/// The current invocation's deadline, set by the handler and read by every call.
#[derive(Clone, Debug, Default)]
pub struct DeadlineHandle(Arc<Mutex<Option<Instant>>>);

impl DeadlineHandle {
    pub fn set(&self, deadline: Option<Instant>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = deadline;
    }

    /// Sets the deadline from a wall-clock time in ms since the epoch (the Lambda context's
    /// `deadline`), less `margin` for the work that follows the calls (writing the output).
    pub fn set_epoch_ms(&self, deadline_ms: u64, margin: Duration) {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let left = Duration::from_millis(deadline_ms.saturating_sub(now_ms)).saturating_sub(margin);
        self.set(Some(Instant::now() + left));
    }

    pub fn get(&self) -> Option<Instant> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Clone, Debug)]
pub struct DeadlineLayer {
    handle: DeadlineHandle,
}

impl DeadlineLayer {
    pub fn new(handle: DeadlineHandle) -> Self {
        Self { handle }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline {
            inner,
            handle: self.handle.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Deadline<S> {
    inner: S,
    handle: DeadlineHandle,
}

impl<S> Service<ApiCall> for Deadline<S>
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

    fn call(&mut self, mut call: ApiCall) -> CallFuture {
        let deadline = match (self.handle.get(), call.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        call.deadline = deadline;
        let inner = self.inner.clone().oneshot(call);
        Box::pin(async move {
            let Some(deadline) = deadline else {
                return inner.await;
            };
            if deadline <= Instant::now() {
                return Err(ClientError::DeadlineExceeded { last: None });
            }
            tokio::time::timeout_at(deadline, inner)
                .await
                .unwrap_or(Err(ClientError::DeadlineExceeded { last: None }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Scripted, assert_near, call, status};

    #[tokio::test(start_paused = true)]
    async fn passes_the_deadline_down_and_cuts_a_call_that_overruns_it() {
        let handle = DeadlineHandle::default();
        handle.set(Some(Instant::now() + Duration::from_secs(2)));
        let inner = Scripted::delayed(vec![(Duration::from_secs(5), status(200))]);
        let mut svc = DeadlineLayer::new(handle.clone()).layer(inner.clone());

        let started = Instant::now();
        let result = svc.ready().await.unwrap().call(call()).await;

        assert_eq!(result, Err(ClientError::DeadlineExceeded { last: None }));
        assert_near(started.elapsed(), Duration::from_secs(2));
        assert_eq!(inner.seen.lock().unwrap()[0].deadline, handle.get());
    }

    #[tokio::test(start_paused = true)]
    async fn a_passed_deadline_fails_without_calling_and_no_deadline_never_cuts() {
        let handle = DeadlineHandle::default();
        let inner = Scripted::delayed(vec![(Duration::from_secs(60), status(200))]);
        let mut svc = DeadlineLayer::new(handle.clone()).layer(inner.clone());

        assert_eq!(svc.call(call()).await.unwrap().status, 200);
        assert_eq!(inner.seen.lock().unwrap()[0].deadline, None);

        handle.set(Some(Instant::now()));
        let result = svc.call(call()).await;
        assert_eq!(result, Err(ClientError::DeadlineExceeded { last: None }));
        assert_eq!(inner.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_earlier_of_the_handle_and_the_call_deadline_wins() {
        let handle = DeadlineHandle::default();
        handle.set(Some(Instant::now() + Duration::from_secs(10)));
        let inner = Scripted::new(vec![status(200)]);
        let mut svc = DeadlineLayer::new(handle).layer(inner.clone());
        let mut c = call();
        let earlier = Instant::now() + Duration::from_secs(3);
        c.deadline = Some(earlier);

        svc.call(c).await.unwrap();

        assert_eq!(inner.seen.lock().unwrap()[0].deadline, Some(earlier));
    }

    #[tokio::test(start_paused = true)]
    async fn epoch_deadline_keeps_the_margin() {
        let handle = DeadlineHandle::default();
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        handle.set_epoch_ms(now_ms + 60_000, Duration::from_secs(10));
        let left = handle.get().unwrap() - Instant::now();
        // Wall time moves on between the two reads; a few ms is all it can be.
        assert!(
            left <= Duration::from_secs(50) && left > Duration::from_millis(49_900),
            "{left:?}"
        );
    }
}
