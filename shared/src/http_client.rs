//! [`ApiClient`] over a pooled reqwest client: per-attempt timeout, and retries with full-jitter
//! exponential backoff that honour Retry-After. Only failures that a retry can fix are retried:
//! connect errors, timeouts, 429 and 502/503/504.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use rand::Rng;

use crate::config::ClientConfig;
use crate::ports::{ApiClient, CallOutcome};
use crate::request::ApiRequest;

const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);
const RETRY_AFTER_CAP: Duration = Duration::from_secs(30);
/// A response body past this is not read further (the connection is dropped instead).
const DRAIN_LIMIT: usize = 1 << 20;

#[derive(Clone, Debug)]
pub struct HttpApiClient {
    client: reqwest::Client,
}

impl HttpApiClient {
    /// One client per container: its connection pool is shared by every call.
    pub fn new() -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("s3-api-fanout/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client })
    }
}

enum Attempt {
    Response {
        status: u16,
        body: Bytes,
        truncated: bool,
        retry_after: Option<Duration>,
    },
    Transport {
        error: String,
        retryable: bool,
    },
}

impl HttpApiClient {
    async fn attempt(&self, req: &ApiRequest, policy: &ClientConfig) -> Attempt {
        let mut builder = self
            .client
            .request(req.method.clone(), &req.url)
            .timeout(Duration::from_millis(policy.timeout_ms));
        for (name, value) in &req.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = &req.body {
            builder = builder.body(body.clone());
        }
        let mut response = match builder.send().await {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Transport {
                    retryable: e.is_connect() || e.is_timeout(),
                    error: error_chain(&e),
                };
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut body = BytesMut::new();
        let mut seen = 0usize;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    seen += chunk.len();
                    let room = policy.max_response_bytes.saturating_sub(body.len());
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if seen > DRAIN_LIMIT {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    return Attempt::Transport {
                        retryable: e.is_timeout(),
                        error: error_chain(&e),
                    };
                }
            }
        }
        Attempt::Response {
            status,
            truncated: seen > body.len(),
            body: body.freeze(),
            retry_after,
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

/// Full jitter: a uniform wait in [0, min(cap, base · 2^(attempt-1))].
pub fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(BACKOFF_CAP);
    ceiling.mul_f64(rand::rng().random::<f64>())
}

#[async_trait]
impl ApiClient for HttpApiClient {
    async fn call(&self, req: &ApiRequest, policy: &ClientConfig) -> CallOutcome {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let started = Instant::now();
            let result = self.attempt(req, policy).await;
            let latency = started.elapsed();
            let last = attempts >= policy.max_attempts;
            let wait = match &result {
                Attempt::Response {
                    status,
                    retry_after,
                    ..
                } if is_retryable_status(*status) && !last => {
                    retry_after.map_or_else(|| backoff(attempts), |d| d.min(RETRY_AFTER_CAP))
                }
                Attempt::Transport {
                    retryable: true, ..
                } if !last => backoff(attempts),
                Attempt::Response {
                    status,
                    body,
                    truncated,
                    ..
                } => {
                    let error = (!(200..300).contains(status)).then(|| format!("HTTP {status}"));
                    return CallOutcome {
                        status: Some(*status),
                        body: body.clone(),
                        body_truncated: *truncated,
                        latency,
                        attempts,
                        error,
                    };
                }
                Attempt::Transport { error, .. } => {
                    return CallOutcome {
                        status: None,
                        body: Bytes::new(),
                        body_truncated: false,
                        latency,
                        attempts,
                        error: Some(error.clone()),
                    };
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_under_its_ceiling() {
        for attempt in 1..20 {
            let cap = BACKOFF_BASE
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(BACKOFF_CAP);
            for _ in 0..50 {
                assert!(backoff(attempt) <= cap);
            }
        }
    }

    #[test]
    fn only_transient_statuses_retry() {
        for s in [429, 502, 503, 504] {
            assert!(is_retryable_status(s));
        }
        for s in [200, 400, 401, 404, 409, 500, 501] {
            assert!(!is_retryable_status(s));
        }
    }
}
