//! The API client as a stack of small tower layers, one file each, composed in [`stack`].
//!
//! Every layer is a `Service<ApiCall, Response = ApiResponse, Error = ClientError>` wrapping
//! another one, so each can be tested alone over a fake inner service and the stack can be
//! tested over a fake transport. Every layer is always ready: waiting (for a slot, a token, a
//! backoff) happens inside the response future, so a call that is turned away early holds
//! nothing.
//!
//! | layer | file | does |
//! | --- | --- | --- |
//! | deadline | [`deadline`] | the whole call, retries included, ends by the invocation's deadline |
//! | retry | [`retry`] | full-jitter backoff, Retry-After, max attempts, a retry budget |
//! | breaker | [`breaker`] | closed / open / half-open on the failure rate of a sliding window |
//! | concurrency | [`concurrency`] | AIMD limit on attempts in flight |
//! | rate limit | [`rate_limit`] | one token per attempt from a [`rate_limit::TokenSource`] |
//! | timeout | [`timeout`] | per-attempt timeout; counts and times each attempt |
//! | auth | [`auth`] | a header from a [`auth::CredentialSource`], fetched per attempt; a 401 renews it once ([`oauth2`]) |
//! | http | [`http`] | reqwest: send, read the body up to a cap, classify errors |

pub mod auth;
pub mod breaker;
pub mod concurrency;
pub mod deadline;
pub mod http;
pub mod limiter;
pub mod oauth2;
pub mod rate_limit;
pub mod retry;
pub mod stack;
pub mod timeout;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::time::Instant;

use fanout_core::request::ApiRequest;

pub use stack::{
    ApiService, BreakerStoreFactory, ClientStack, ClientStackBuilder, TokenSourceFactory,
};

/// The future every layer returns: one allocation per layer per attempt is noise next to a
/// network round trip, and it keeps each layer a plain `async move` block.
pub type CallFuture = BoxFuture<'static, Result<ApiResponse, ClientError>>;

/// A request on its way down the stack. The retry layer sends a clone per attempt, so what an
/// inner layer sets (the credential) never leaks into the next attempt.
#[derive(Clone, Debug)]
pub struct ApiCall {
    pub request: Arc<ApiRequest>,
    /// When the whole call must be over. Set by the deadline layer so inner layers stop early
    /// (no backoff that ends past it, no attempt that outlives it) instead of being cut off.
    pub deadline: Option<Instant>,
    /// Shared by every attempt of the call: how many attempts there were and how long the
    /// last one took, for the call's outcome.
    pub trace: Arc<CallTrace>,
    /// Set by the auth layer on each attempt; applied by the http layer.
    pub credential: Option<auth::Credential>,
}

impl ApiCall {
    pub fn new(request: ApiRequest) -> Self {
        Self {
            request: Arc::new(request),
            deadline: None,
            trace: Arc::default(),
            credential: None,
        }
    }
}

/// Attempt accounting of one call, written by the timeout layer (the attempt's clock).
#[derive(Debug, Default)]
pub struct CallTrace {
    attempts: AtomicU32,
    last_latency_micros: AtomicU64,
}

impl CallTrace {
    pub fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::Relaxed)
    }
    pub fn last_latency(&self) -> Duration {
        Duration::from_micros(self.last_latency_micros.load(Ordering::Relaxed))
    }
    pub(crate) fn begin_attempt(&self) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn end_attempt(&self, latency: Duration) {
        self.last_latency_micros
            .store(latency.as_micros() as u64, Ordering::Relaxed);
    }
}

/// What the API answered to one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiResponse {
    pub status: u16,
    /// At most `max_response_bytes` of the body.
    pub body: Bytes,
    /// True when the body was longer than what was kept.
    pub truncated: bool,
    /// The Retry-After header, when it was given in seconds.
    pub retry_after: Option<Duration>,
    /// A 401 after which the credential source has another credential: the retry layer sends
    /// the attempt once more with it.
    pub credential_renewed: bool,
    /// The response's headers (any copy of the credential scrubbed).
    pub headers: ::http::HeaderMap,
}

impl ApiResponse {
    pub fn new(status: u16) -> Self {
        Self {
            status,
            body: Bytes::new(),
            truncated: false,
            retry_after: None,
            credential_renewed: false,
            headers: ::http::HeaderMap::new(),
        }
    }
}

/// Why a call or an attempt failed without a response.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("connect error: {0}")]
    Connect(String),
    #[error("{}", match .after {
        Some(d) => format!("attempt timed out after {} ms", d.as_millis()),
        None => "attempt timed out".to_string(),
    })]
    Timeout { after: Option<Duration> },
    /// The connection failed after the request was sent (reset, bad framing, body error).
    #[error("transport error: {0}")]
    Transport(String),
    /// The request could not be built (e.g. an invalid URL); no attempt can fix it.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("circuit breaker open; next probe in {} ms", .retry_in.as_millis())]
    BreakerOpen { retry_in: Duration },
    #[error("deadline exceeded{}", .last.as_ref().map(|l| format!("; last attempt: {l}")).unwrap_or_default())]
    DeadlineExceeded { last: Option<LastAttempt> },
    #[error("retry budget exhausted; last attempt: {last}")]
    BudgetExhausted { last: LastAttempt },
    #[error("no rate-limit token: {0}")]
    RateLimit(String),
    #[error("no credential: {0}")]
    Credentials(String),
}

impl ClientError {
    /// The HTTP status of the last attempt, when this error stands for a response that was not
    /// retried (budget or deadline).
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::DeadlineExceeded {
                last: Some(LastAttempt::Status(s)),
            }
            | ClientError::BudgetExhausted {
                last: LastAttempt::Status(s),
            } => Some(*s),
            _ => None,
        }
    }

    /// Failures that say the API (or the way to it) is unhealthy. Errors of our own making
    /// (no token, no credential, deadline) say nothing about the API and must not trip the breaker.
    pub fn is_api_failure(&self) -> bool {
        matches!(
            self,
            ClientError::Connect(_) | ClientError::Timeout { .. } | ClientError::Transport(_)
        )
    }
}

/// The last attempt of a call that was cut short, so the outcome still says what the API did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LastAttempt {
    Status(u16),
    Error(String),
}

impl LastAttempt {
    pub fn of(result: &Result<ApiResponse, ClientError>) -> Self {
        match result {
            Ok(r) => LastAttempt::Status(r.status),
            Err(e) => LastAttempt::Error(e.to_string()),
        }
    }
}

impl fmt::Display for LastAttempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LastAttempt::Status(s) => write!(f, "HTTP {s}"),
            LastAttempt::Error(e) => f.write_str(e),
        }
    }
}

/// Counters for metrics, shared by every layer of a container's stacks. Monotonic except
/// `concurrency_limit`, a gauge.
#[derive(Debug, Default)]
pub struct ClientCounters {
    /// Attempts that got past the breaker, the concurrency limit and the rate limiter.
    pub attempts: AtomicU64,
    pub retries: AtomicU64,
    pub status_429: AtomicU64,
    pub timeouts: AtomicU64,
    /// Transitions of a breaker into the open state on this container's own evidence.
    pub breaker_opened: AtomicU64,
    /// Calls turned away by an open breaker.
    pub breaker_rejected: AtomicU64,
    /// Retries refused by the retry budget.
    pub budget_exhausted: AtomicU64,
    /// The adaptive concurrency limit, as last set.
    pub concurrency_limit: AtomicU64,
    /// Total time attempts waited for a rate-limit token.
    pub token_wait_micros: AtomicU64,
    /// OAuth2 token endpoint requests, and those that gave no token.
    pub auth_token_requests: AtomicU64,
    pub auth_token_failures: AtomicU64,
}

pub use fanout_core::metrics::CountersSnapshot;

impl ClientCounters {
    pub fn snapshot(&self) -> CountersSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountersSnapshot {
            attempts: get(&self.attempts),
            retries: get(&self.retries),
            status_429: get(&self.status_429),
            timeouts: get(&self.timeouts),
            breaker_opened: get(&self.breaker_opened),
            breaker_rejected: get(&self.breaker_rejected),
            budget_exhausted: get(&self.budget_exhausted),
            concurrency_limit: get(&self.concurrency_limit),
            token_wait_micros: get(&self.token_wait_micros),
            auth_token_requests: get(&self.auth_token_requests),
            auth_token_failures: get(&self.auth_token_failures),
        }
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Fakes shared by the layers' tests.

    use std::sync::Mutex;
    use std::task::{Context, Poll};

    use super::*;

    pub fn call() -> ApiCall {
        ApiCall::new(ApiRequest {
            method: reqwest::Method::GET,
            url: "http://api.test/x".into(),
            headers: Vec::new(),
            body: None,
            records: 1,
        })
    }

    /// Answers each attempt from a script (the last entry repeats), optionally after a delay,
    /// and remembers what it was sent.
    #[derive(Clone)]
    pub struct Scripted {
        script: Arc<Vec<(Duration, Result<ApiResponse, ClientError>)>>,
        pub seen: Arc<Mutex<Vec<ApiCall>>>,
    }

    impl Scripted {
        pub fn new(script: Vec<Result<ApiResponse, ClientError>>) -> Self {
            Self::delayed(script.into_iter().map(|r| (Duration::ZERO, r)).collect())
        }
        pub fn delayed(script: Vec<(Duration, Result<ApiResponse, ClientError>)>) -> Self {
            assert!(!script.is_empty());
            Self {
                script: Arc::new(script),
                seen: Arc::default(),
            }
        }
        pub fn calls(&self) -> usize {
            self.seen.lock().unwrap().len()
        }
    }

    /// Paused-time timers fire on the millisecond tick at or after their deadline.
    #[track_caller]
    pub fn assert_near(actual: Duration, expected: Duration) {
        assert!(
            actual >= expected && actual < expected + Duration::from_millis(2),
            "{actual:?} is not {expected:?}"
        );
    }

    /// Serves `response` on every connection of a local port and hands back each raw request.
    pub async fn serve(response: Vec<u8>) -> (String, tokio::sync::mpsc::Receiver<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                // Read the whole request, body included: closing with unread input would
                // reset the connection before the client reads the response.
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tx.try_send(String::from_utf8_lossy(&request).into_owned());
                let _ = socket.write_all(&response).await;
                let _ = socket.shutdown().await;
            }
        });
        (format!("http://{addr}/v1/x"), rx)
    }

    /// An HTTP/1.1 response that closes its connection.
    pub fn reply(status: &str, extra_headers: &str, body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n{extra_headers}\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    pub fn status(s: u16) -> Result<ApiResponse, ClientError> {
        Ok(ApiResponse::new(s))
    }

    impl tower::Service<ApiCall> for Scripted {
        type Response = ApiResponse;
        type Error = ClientError;
        type Future = CallFuture;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ClientError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, call: ApiCall) -> CallFuture {
            let n = {
                let mut seen = self.seen.lock().unwrap();
                seen.push(call);
                seen.len() - 1
            };
            let (delay, result) = self.script[n.min(self.script.len() - 1)].clone();
            Box::pin(async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                result
            })
        }
    }
}
