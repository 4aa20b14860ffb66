//! A mock external REST API for integration tests, load tests and the demo.
//!
//! Every method and path except `/_mock/*` is "the API": it can inject
//! latency, random 429/503/504 answers, an enforced token-bucket rate limit
//! and full outages, and it records what clients did (per-status counts,
//! throughput per 100 ms window, idempotency-key reuse and duplicate
//! successes).
//!
//! Control endpoints (not counted in the stats):
//! - `GET /_mock/stats` → [`MockStats`]
//! - `GET /_mock/config` → [`MockConfig`]
//! - `PUT /_mock/config` → replace the config (missing fields take defaults)
//! - `PATCH /_mock/config` → merge the given fields into the current config
//! - `POST /_mock/reset` → zero all counters and key sets

mod http;
mod ledger;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::http::Shared;

/// How long `shutdown` waits for in-flight requests before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Behaviour of the mock API. Can be replaced at runtime.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct MockConfig {
    /// Each non-outage request sleeps a uniform random time in [min, max].
    pub latency_min_ms: u64,
    pub latency_max_ms: u64,
    /// Fraction of requests answered 503.
    pub error_rate: f64,
    /// Fraction of requests answered 429 with `Retry-After`.
    pub rate_429: f64,
    /// `Retry-After` value on every 429 (random or enforced).
    pub retry_after_secs: u64,
    /// Enforced limit in requests/s (token bucket); `None` = off.
    pub rate_limit: Option<f64>,
    /// Bucket capacity as a fraction of `rate_limit` (min capacity 1).
    pub burst: f64,
    /// Fraction of requests that hang for `hang_ms` and then get 504.
    pub timeout_rate: f64,
    pub hang_ms: u64,
    /// When true every request is answered 503 immediately.
    pub outage: bool,
    /// Header carrying the idempotency key (matched case-insensitively).
    pub idempotency_header: String,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            latency_min_ms: 0,
            latency_max_ms: 0,
            error_rate: 0.0,
            rate_429: 0.0,
            retry_after_secs: 1,
            rate_limit: None,
            burst: 0.1,
            timeout_rate: 0.0,
            hang_ms: 30_000,
            outage: false,
            idempotency_header: "Idempotency-Key".to_owned(),
        }
    }
}

/// What the mock has observed since start (or the last reset).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MockStats {
    pub total_requests: u64,
    pub by_status: BTreeMap<u16, u64>,
    /// Requests per 100 ms window since the first request (index 0 = first).
    pub windows_100ms: Vec<u64>,
    /// 2xx answers per 100 ms window, on the same origin: the rate the API served.
    #[serde(default)]
    pub served_100ms: Vec<u64>,
    /// Distinct idempotency keys seen.
    pub keys_seen: u64,
    /// Requests whose key had been seen before (retries do this).
    pub repeated_keys: u64,
    /// 2xx answers for a key that had already been answered 2xx. A correct
    /// client keeps this at 0.
    pub duplicate_successes: u64,
    pub requests_without_key: u64,
}

impl MockStats {
    /// Number of answers with the given status.
    pub fn status(&self, status: u16) -> u64 {
        self.by_status.get(&status).copied().unwrap_or(0)
    }

    /// Number of 2xx answers.
    pub fn successes(&self) -> u64 {
        self.by_status.range(200..300).map(|(_, count)| count).sum()
    }
}

/// A running mock API. Dropping it stops the server too.
pub struct MockApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl MockApi {
    /// Binds 127.0.0.1 on an ephemeral port and serves in a background task.
    pub async fn start(config: MockConfig) -> anyhow::Result<MockApi> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
    }

    /// Binds exactly `addr` and serves in a background task.
    pub async fn start_on(addr: SocketAddr, config: MockConfig) -> anyhow::Result<MockApi> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (shutdown, stopping) = watch::channel(false);
        let shared = Arc::new(Shared::new(config, stopping.clone()));
        let app = http::router(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(wait_stopping(stopping))
                .await
        });
        Ok(MockApi {
            addr,
            shared,
            shutdown,
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> MockStats {
        self.shared.counters.snapshot()
    }

    /// Replaces the config; takes effect for requests arriving afterwards.
    pub fn set_config(&self, config: MockConfig) {
        self.shared.set_config(config);
    }

    pub fn config(&self) -> MockConfig {
        (*self.shared.config()).clone()
    }

    /// Zeroes all counters, windows, key sets and refills the rate-limit bucket.
    pub fn reset(&self) {
        self.shared.counters.reset();
    }

    /// Stops accepting, lets in-flight requests finish (hung ones are cut
    /// short) and aborts whatever is still running after a short grace period.
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        let Some(mut task) = self.task.take() else {
            return;
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for MockApi {
    fn drop(&mut self) {
        // Without this a forgotten handle would keep serving until the
        // runtime ends.
        self.shutdown.send_replace(true);
    }
}

async fn wait_stopping(mut stopping: watch::Receiver<bool>) {
    // An error means the sender is gone, which also means "stop".
    let _ = stopping.wait_for(|stopping| *stopping).await;
}
