//! A mock external REST API for integration tests, load tests and the demo.
//!
//! Every method and path except `/_mock/*` (and, while OAuth2 is configured,
//! `/oauth2/*`) is "the API": it can require credentials ([`MockAuth`]),
//! inject latency, random 429/503/504 answers, an enforced token-bucket rate
//! limit and full outages, and it records what clients did (per-status
//! counts, throughput per 100 ms window, idempotency-key reuse and duplicate
//! successes, accepted and refused credentials).
//!
//! What the API answers (when no fault is injected) depends on the path:
//! - `/status/<code>/…` → that status: a 2xx carries the echo, any other a small
//!   JSON error body (for clients' success, retry and permanent rules);
//! - `/plain/…` → 200 with a `text/plain` body (an answer that is not JSON);
//! - `/batch/…` → a batch endpoint: the body is a JSON array of items (or an
//!   object holding one), the answer `{"results": [...]}` with one item per
//!   item sent, `{"id": <the item's id>, "ok": true, "echo": <the item>}`, or
//!   `{"id": …, "ok": false, "error": "…"}` for the item at `batch_fail_index`;
//!   in reverse order with `batch_reverse`;
//! - anything else → 200 with the echo: method, path, query, idempotency key,
//!   the body (`echo` when it is JSON, `body_text` when not), `content_type`
//!   and `user_agent`; headers `X-Mock-Path` and `ETag` (the body's length).
//!
//! Control endpoints (not counted in the stats):
//! - `GET /_mock/stats` → [`MockStats`]
//! - `GET /_mock/config` → [`MockConfig`]
//! - `PUT /_mock/config` → replace the config (missing fields take defaults)
//! - `PATCH /_mock/config` → merge the given fields into the current config
//! - `POST /_mock/reset` → zero all counters and key sets
//! - `POST /_mock/advance-token-clock` with `{"secs": N}` → see
//!   [`MockApi::advance_token_clock`]
//!
//! While `auth` is [`MockAuth::OAuth2`]:
//! - `POST /oauth2/token` → RFC 6749 token endpoint (`client_credentials` and
//!   `password` grants), counted in `token_requests` / `tokens_issued` only
//! - `POST /oauth2/revoke-all` → see [`MockApi::revoke_tokens`]
//!
//! With any other `auth` those two paths are ordinary API paths.

mod auth;
mod form;
mod http;
mod ledger;
mod oauth;

use std::collections::BTreeMap;
use std::fmt;
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
    /// Credentials the API routes require; checked before every other gate.
    pub auth: MockAuth,
    /// On `/batch/…`: the item at this index of every batch is answered with an error.
    pub batch_fail_index: Option<usize>,
    /// On `/batch/…`: the items are answered in reverse order (for clients that match by id).
    pub batch_reverse: bool,
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
            auth: MockAuth::None,
            batch_fail_index: None,
            batch_reverse: false,
        }
    }
}

/// Which credentials the API routes require.
///
/// A request without them is answered 401 with a JSON body and a
/// `WWW-Authenticate` challenge, at once (no latency, no rate-limit token, no
/// outage): like a gateway in front of the service. It is counted only in
/// [`MockStats::refused_auth`], never as an API call.
///
/// In JSON (`/_mock/config`) the strategy is named by `kind`, e.g.
/// `{"kind": "bearer", "token": "t"}` or `{"kind": "oauth2", "client_id": "c",
/// "client_secret": "s", "token_lifetime_secs": 60}`. The config's JSON carries
/// the secrets (PATCH needs them to round-trip); `Debug` never shows them.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MockAuth {
    /// No credentials needed (the default).
    #[default]
    None,
    /// Header `header: key` (name matched case-insensitively, value exactly).
    ApiKeyHeader { header: String, key: String },
    /// Query parameter `param=key` (form-decoded, so `%2B` and `+` work).
    ApiKeyQuery { param: String, key: String },
    /// `Authorization: Basic base64(username:password)`.
    Basic { username: String, password: String },
    /// `Authorization: Bearer token`, one static token.
    Bearer { token: String },
    /// `Authorization: Bearer t` where `t` came from `POST /oauth2/token`, is
    /// unexpired and not revoked.
    #[serde(rename = "oauth2")]
    OAuth2(OAuth2Config),
}

impl MockAuth {
    /// The strategy's name as in the JSON `kind` (and the CLI's `--auth`,
    /// with `-` for `_`): safe to log, unlike the strategy itself.
    pub fn kind(&self) -> &'static str {
        match self {
            MockAuth::None => "none",
            MockAuth::ApiKeyHeader { .. } => "api_key_header",
            MockAuth::ApiKeyQuery { .. } => "api_key_query",
            MockAuth::Basic { .. } => "basic",
            MockAuth::Bearer { .. } => "bearer",
            MockAuth::OAuth2(_) => "oauth2",
        }
    }
}

/// The mock's authorization server: one confidential client and, optionally,
/// one resource owner for the password grant.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct OAuth2Config {
    pub client_id: String,
    pub client_secret: String,
    /// Resource owner for `grant_type=password`; that grant is refused
    /// (`unauthorized_client`) unless both are set.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// `expires_in` of each new token. A token keeps the lifetime it was
    /// issued with, so changing this (via `set_config`) affects only tokens
    /// issued afterwards. 0 issues tokens that are already expired.
    #[serde(default = "default_token_lifetime_secs")]
    pub token_lifetime_secs: u64,
}

fn default_token_lifetime_secs() -> u64 {
    3600
}

impl Default for OAuth2Config {
    fn default() -> Self {
        OAuth2Config {
            client_id: String::new(),
            client_secret: String::new(),
            username: None,
            password: None,
            token_lifetime_secs: default_token_lifetime_secs(),
        }
    }
}

/// Stands in for a secret in `Debug` output (test failures print configs).
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Debug for MockAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MockAuth::None => f.write_str("None"),
            MockAuth::ApiKeyHeader { header, .. } => f
                .debug_struct("ApiKeyHeader")
                .field("header", header)
                .field("key", &Redacted)
                .finish(),
            MockAuth::ApiKeyQuery { param, .. } => f
                .debug_struct("ApiKeyQuery")
                .field("param", param)
                .field("key", &Redacted)
                .finish(),
            MockAuth::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &Redacted)
                .finish(),
            MockAuth::Bearer { .. } => f.debug_struct("Bearer").field("token", &Redacted).finish(),
            MockAuth::OAuth2(config) => f.debug_tuple("OAuth2").field(config).finish(),
        }
    }
}

impl fmt::Debug for OAuth2Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuth2Config")
            .field("client_id", &self.client_id)
            .field("client_secret", &Redacted)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| Redacted))
            .field("token_lifetime_secs", &self.token_lifetime_secs)
            .finish()
    }
}

/// What the mock has observed since start (or the last reset).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct MockStats {
    pub total_requests: u64,
    pub by_status: BTreeMap<u16, u64>,
    /// Requests per 100 ms window since the first request (index 0 = first).
    pub windows_100ms: Vec<u64>,
    /// When the first request came, ms since the epoch (the windows' origin).
    #[serde(default)]
    pub first_request_unix_ms: Option<u64>,
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
    /// API calls whose credentials were accepted (0 while `auth` is `None`).
    /// Only these reach the counters above.
    #[serde(default)]
    pub accepted_auth: u64,
    /// API calls answered 401 for missing or wrong credentials. They appear in
    /// no other counter (not in `total_requests`, `by_status` or the windows).
    #[serde(default)]
    pub refused_auth: u64,
    /// Requests to `/oauth2/token`, whatever their outcome.
    #[serde(default)]
    pub token_requests: u64,
    /// Access tokens the token endpoint issued.
    #[serde(default)]
    pub tokens_issued: u64,
    /// What the last token request sent (whether or not it got a token):
    /// `grant_type`, `scope`, `audience`, and every other form parameter
    /// except the credentials (`client_id`, `client_secret`, `username`,
    /// `password`).
    #[serde(default)]
    pub last_token_grant_type: Option<String>,
    #[serde(default)]
    pub last_token_scope: Option<String>,
    #[serde(default)]
    pub last_token_audience: Option<String>,
    #[serde(default)]
    pub last_token_extra_params: BTreeMap<String, String>,
    /// Calls to `/batch/…` answered 200, and the items they carried.
    #[serde(default)]
    pub batch_calls: u64,
    #[serde(default)]
    pub batch_items: u64,
    /// The `id` of every item answered with an error (`batch_fail_index`), in answer order.
    #[serde(default)]
    pub batch_failed_ids: Vec<serde_json::Value>,
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
    /// Issued tokens and the token clock are kept: a reset starts a new
    /// measurement, and clients holding a token should not notice it.
    pub fn reset(&self) {
        self.shared.counters.reset();
    }

    /// Every OAuth2 token issued so far (tests search outputs for them).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared.tokens.issued()
    }

    /// Revokes every token issued so far (OAuth2): API calls carrying one are
    /// refused from now on, tokens issued afterwards work. Returns how many
    /// tokens were newly revoked. Same as `POST /oauth2/revoke-all`.
    pub fn revoke_tokens(&self) -> u64 {
        self.shared.tokens.revoke_all()
    }

    /// Moves the clock that token expiry is judged by forward by `by`, so a
    /// test can expire tokens without sleeping (and without depending on how
    /// fast the machine is). Only token expiry sees this clock; latency, hangs
    /// and the rate limit keep real time. Same as
    /// `POST /_mock/advance-token-clock` with `{"secs": N}`.
    pub fn advance_token_clock(&self, by: Duration) {
        self.shared.tokens.advance_clock(by);
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
