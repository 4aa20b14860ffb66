//! The layers composed into one client, and its [`ApiClient`] implementation.
//!
//! Outermost first:
//!
//! ```text
//! deadline → retry → breaker → concurrency → rate limit → timeout → auth → http
//! ```
//!
//! Why this order:
//!
//! - **Deadline outermost**, so nothing below (retries, backoffs, waits for a slot or a token)
//!   can run past the invocation's deadline; it also hands the deadline down so inner layers
//!   stop early and say why.
//! - **Retry wraps the breaker**, so the breaker sees every attempt, not every call: a failing
//!   API opens it after `min_calls` attempts, and once it is open a retry is turned away at
//!   once instead of reaching the API.
//! - **Breaker outside concurrency and the rate limit**, so a call it turns away holds no slot
//!   and spends no token.
//! - **Breaker wraps the timeout**, so an attempt that times out is a failure in its window.
//! - **Concurrency before the rate limit**, so an attempt takes its token only once it has a
//!   slot: a token is never taken and then held idle while waiting for a slot, which would
//!   waste rate the rest of the fleet could use.
//! - **Rate limit per attempt, below retry**, because the API counts requests: a retry costs a
//!   token like a first attempt.
//! - **Timeout inside the rate limit**, so time spent waiting for a token (a throttled fleet)
//!   is not counted as attempt time and does not turn into timeouts the breaker would count
//!   against the API. The timeout layer is also where attempts are counted and timed.
//! - **Auth innermost**, so the credential is fetched per attempt, just before sending: a
//!   refreshed token applies to the next retry. A 401 that renewed the credential goes back up
//!   to the retry layer, so the one extra attempt it earns takes a slot and a rate-limit token
//!   like any other.
//!
//! A [`ClientStack`] builds one such stack per distinct [`ClientConfig`] it is called with
//! (the worker passes each manifest's pipeline config) and caches it, so the breaker, the
//! concurrency limit and the retry budget persist across calls and invocations. The deadline
//! handle, counters, token source, breaker store and credentials are the container's and are
//! shared by all of them.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};

use super::auth::{AuthLayer, ConfiguredCredential, CredentialSource};
use super::breaker::{
    Breaker, BreakerLayer, BreakerSettings, BreakerStateStore, InMemoryBreakerStore,
};
use super::concurrency::{AdaptiveLimit, ConcurrencyLayer, ConcurrencySettings};
use super::deadline::{DeadlineHandle, DeadlineLayer};
use super::http::HttpService;
use super::limiter::source::system_clock;
use super::oauth2::{HttpTokenEndpoint, OAuth2Source};
use super::rate_limit::{LocalTokenBucket, RateLimitLayer, TokenSource};
use super::retry::{RetryPolicy, RetrySettings, budget_from_config};
use super::timeout::TimeoutLayer;
use super::{ApiCall, ApiResponse, CallTrace, ClientCounters, ClientError};
use fanout_core::auth::AuthConfig;
use fanout_core::batch::RateUnit;
use fanout_core::config::ClientConfig;
use fanout_core::ports::{ApiClient, CallOutcome};
use fanout_core::ports::{SecretSource, SharedTokenStore};
use fanout_core::request::ApiRequest;
use fanout_core::response::StatusRules;
use fanout_core::secret::{Secret, SecretRef};

/// A composed stack, boxed: cheap to clone, one per call.
pub type ApiService = BoxCloneSyncService<ApiCall, ApiResponse, ClientError>;

/// Stacks built per config; a container rarely sees more than one pipeline, and this bounds
/// what a long-lived container keeps.
const MAX_CACHED_CONFIGS: usize = 8;

type Innermost = Arc<dyn Fn(&ClientConfig) -> ApiService + Send + Sync>;

/// Gives the token source for a config's stack: e.g. the fleet-wide limit that config names.
pub type TokenSourceFactory = Arc<dyn Fn(&ClientConfig) -> Arc<dyn TokenSource> + Send + Sync>;

/// Gives the breaker store for a config's stack: e.g. the shared state of the API that config
/// calls.
pub type BreakerStoreFactory =
    Arc<dyn Fn(&ClientConfig) -> Arc<dyn BreakerStateStore> + Send + Sync>;

/// A container given no secret source: a config that needs a secret fails each call with a
/// clear error (a credential error, never sent unauthenticated).
struct NoSecrets;

#[async_trait]
impl SecretSource for NoSecrets {
    async fn secret(&self, reference: &SecretRef) -> anyhow::Result<Secret> {
        anyhow::bail!("{reference}: this container has no secret source")
    }
}

/// What a container's stacks share. Anything left unset gets a per-config default: a
/// [`LocalTokenBucket`] from the config's rate, an [`InMemoryBreakerStore`], no credential.
#[derive(Clone, Default)]
pub struct ClientStackBuilder {
    counters: Arc<ClientCounters>,
    deadline: DeadlineHandle,
    tokens: Option<TokenSourceFactory>,
    breaker_stores: Option<BreakerStoreFactory>,
    credentials: Option<Arc<dyn CredentialSource>>,
    secrets: Option<Arc<dyn SecretSource>>,
    shared_tokens: Option<Arc<dyn SharedTokenStore>>,
    /// The client for token endpoints: the API's own (set by `build`), else a default one.
    token_http: Option<reqwest::Client>,
}

impl fmt::Debug for ClientStackBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientStackBuilder")
            .field("counters", &self.counters)
            .field("deadline", &self.deadline)
            .field("token_source", &self.tokens.is_some())
            .field("breaker_store", &self.breaker_stores.is_some())
            .field("credentials", &self.credentials.is_some())
            .field("secrets", &self.secrets.is_some())
            .field("shared_tokens", &self.shared_tokens.is_some())
            .finish()
    }
}

impl ClientStackBuilder {
    pub fn counters(mut self, counters: Arc<ClientCounters>) -> Self {
        self.counters = counters;
        self
    }
    pub fn deadline(mut self, deadline: DeadlineHandle) -> Self {
        self.deadline = deadline;
        self
    }
    /// E.g. the fleet-wide bucket. Shared by every config's stack.
    pub fn token_source(mut self, tokens: Arc<dyn TokenSource>) -> Self {
        self.tokens = Some(Arc::new(move |_: &ClientConfig| tokens.clone()));
        self
    }
    /// A token source per config (built once per config, as the stack is).
    pub fn token_sources(mut self, factory: TokenSourceFactory) -> Self {
        self.tokens = Some(factory);
        self
    }
    /// One store for every config's breaker (tests, a single API).
    pub fn breaker_store(mut self, store: Arc<dyn BreakerStateStore>) -> Self {
        self.breaker_stores = Some(Arc::new(move |_: &ClientConfig| store.clone()));
        self
    }
    /// A store per config, e.g. the DynamoDB item that shares the open state of the API the
    /// config calls across containers.
    pub fn breaker_stores(mut self, factory: BreakerStoreFactory) -> Self {
        self.breaker_stores = Some(factory);
        self
    }
    /// One credential for every config's calls (a config with `client.auth` uses its own).
    pub fn credentials(mut self, credentials: Arc<dyn CredentialSource>) -> Self {
        self.credentials = Some(credentials);
        self
    }
    /// Where the secrets named by configs' `client.auth` are read (Secrets Manager, KMS).
    pub fn secrets(mut self, secrets: Arc<dyn SecretSource>) -> Self {
        self.secrets = Some(secrets);
        self
    }

    /// Where OAuth2 tokens are shared with the rest of the fleet (the ledger table). Without
    /// it, each container gets its own token.
    pub fn shared_tokens(mut self, store: Arc<dyn SharedTokenStore>) -> Self {
        self.shared_tokens = Some(store);
        self
    }

    /// The credential source of `config`'s calls: its `client.auth` through the secret source,
    /// else the container's credential, if any.
    fn credential_source(&self, config: &ClientConfig) -> Option<Arc<dyn CredentialSource>> {
        if config.auth == AuthConfig::None {
            return self.credentials.clone();
        }
        let secrets = self.secrets.clone().unwrap_or_else(|| Arc::new(NoSecrets));
        if let AuthConfig::OAuth2(oauth) = &config.auth {
            let http = self.token_http.clone().unwrap_or_default();
            return Some(Arc::new(OAuth2Source::new(
                oauth.clone(),
                secrets,
                Arc::new(HttpTokenEndpoint(http)),
                self.shared_tokens.clone(),
                system_clock(),
                self.counters.clone(),
            )));
        }
        ConfiguredCredential::new(&config.auth, secrets)
            .map(|c| Arc::new(c) as Arc<dyn CredentialSource>)
    }

    /// Over reqwest: the production client.
    pub fn build(mut self, client: reqwest::Client) -> ClientStack {
        self.token_http = Some(client.clone());
        self.build_with(move |config| HttpService::new(client.clone(), config.max_response_bytes))
    }

    /// Over any innermost service: a fake API in tests, another transport.
    pub fn build_with<S, F>(self, innermost: F) -> ClientStack
    where
        F: Fn(&ClientConfig) -> S + Send + Sync + 'static,
        S: Service<ApiCall, Response = ApiResponse, Error = ClientError>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        ClientStack {
            innermost: Arc::new(move |config| ApiService::new(innermost(config))),
            parts: self,
            built: Mutex::default(),
        }
    }

    /// Composes the layers over `innermost` for `config`. Each call makes a new breaker,
    /// concurrency limit and retry budget; [`ClientStack`] keeps one per config.
    pub fn compose<S>(&self, innermost: S, config: &ClientConfig) -> ApiService
    where
        S: Service<ApiCall, Response = ApiResponse, Error = ClientError>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let counters = &self.counters;
        let tokens = match &self.tokens {
            Some(factory) => factory(config),
            None => Arc::new(LocalTokenBucket::from_config(config)),
        };
        let store = match &self.breaker_stores {
            Some(factory) => factory(config),
            None => Arc::new(InMemoryBreakerStore::default()),
        };
        let retry = RetryPolicy::new(
            RetrySettings::from_config(config),
            Arc::new(budget_from_config(config)),
            counters.clone(),
        );
        let breaker = Breaker::new(
            BreakerSettings::from_config(config),
            store,
            counters.clone(),
        );
        let limit = AdaptiveLimit::new(ConcurrencySettings::from_config(config), counters.clone());
        let service = ServiceBuilder::new()
            .layer(DeadlineLayer::new(self.deadline.clone()))
            .layer(retry.layer())
            .layer(BreakerLayer::new(breaker))
            .layer(ConcurrencyLayer::new(limit))
            .layer(
                RateLimitLayer::new(tokens, counters.clone())
                    .per_record(config.rate_limit_counts == RateUnit::Records),
            )
            .layer(TimeoutLayer::new(
                Duration::from_millis(config.timeout_ms),
                counters.clone(),
            ))
            .layer(AuthLayer::new(self.credential_source(config)))
            .service(innermost);
        ApiService::new(service)
    }
}

/// The resilient API client: implements [`ApiClient`] so the worker can use it in place of
/// the single-layer client it replaced.
///
/// ```no_run
/// # async fn f(config: &fanout_core::config::ClientConfig, request: &fanout_core::request::ApiRequest)
/// # -> anyhow::Result<()> {
/// use fanout_client::{ClientStack, http::pooled_client};
/// use fanout_core::ports::ApiClient;
///
/// let stack = ClientStack::new(pooled_client()?);
/// stack.deadline().set_epoch_ms(1_700_000_000_000, std::time::Duration::from_secs(10));
/// let outcome = stack.call(request, config).await;
/// println!("{} attempts, {:?}", outcome.attempts, stack.counters().snapshot());
/// # Ok(()) }
/// ```
pub struct ClientStack {
    parts: ClientStackBuilder,
    innermost: Innermost,
    /// The stack of each config seen, with its status rules (judged on every call).
    built: Mutex<Vec<(ClientConfig, ApiService, StatusRules)>>,
}

impl fmt::Debug for ClientStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientStack")
            .field("parts", &self.parts)
            .finish_non_exhaustive()
    }
}

impl ClientStack {
    /// Over `client` with every default (see [`ClientStackBuilder`]).
    pub fn new(client: reqwest::Client) -> Self {
        Self::builder().build(client)
    }

    pub fn builder() -> ClientStackBuilder {
        ClientStackBuilder::default()
    }

    pub fn counters(&self) -> &Arc<ClientCounters> {
        &self.parts.counters
    }

    /// Set it when an invocation starts (from the Lambda context's deadline).
    pub fn deadline(&self) -> &DeadlineHandle {
        &self.parts.deadline
    }

    /// The stack for `config`, built on first use.
    pub fn service(&self, config: &ClientConfig) -> ApiService {
        self.built_for(config).0
    }

    fn built_for(&self, config: &ClientConfig) -> (ApiService, StatusRules) {
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, service, rules)) = built.iter().find(|(c, ..)| c == config) {
            return (service.clone(), *rules);
        }
        let service = self.parts.compose((self.innermost)(config), config);
        let rules = StatusRules::from_config(config);
        if built.len() == MAX_CACHED_CONFIGS {
            built.remove(0);
        }
        built.push((config.clone(), service.clone(), rules));
        (service, rules)
    }
}

#[async_trait]
impl ApiClient for ClientStack {
    async fn call(&self, request: &ApiRequest, policy: &ClientConfig) -> CallOutcome {
        let call = ApiCall::new(request.clone());
        let trace = call.trace.clone();
        let (service, statuses) = self.built_for(policy);
        let result = service.oneshot(call).await;
        outcome(result, &trace, &statuses)
    }
}

fn outcome(
    result: Result<ApiResponse, ClientError>,
    trace: &CallTrace,
    statuses: &StatusRules,
) -> CallOutcome {
    let (attempts, latency) = (trace.attempts(), trace.last_latency());
    match result {
        Ok(r) => CallOutcome {
            error: (!statuses.is_success(r.status)).then(|| format!("HTTP {}", r.status)),
            status: Some(r.status),
            body: r.body,
            body_truncated: r.truncated,
            latency,
            attempts,
            headers: r.headers,
        },
        Err(e) => CallOutcome {
            status: e.status(),
            body: Bytes::new(),
            body_truncated: false,
            latency,
            attempts,
            error: Some(e.to_string()),
            headers: ::http::HeaderMap::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use tokio::time::Instant;

    use super::*;
    use crate::auth::{Credential, StaticCredential};
    use crate::testing::{Scripted, assert_near, reply, serve, status};

    fn request() -> ApiRequest {
        ApiRequest {
            method: reqwest::Method::POST,
            url: "http://api.test/v1/users/1".into(),
            headers: Vec::new(),
            body: Some(Bytes::from_static(b"{}")),
            records: 1,
        }
    }

    fn config() -> ClientConfig {
        ClientConfig {
            backoff_base_ms: 10,
            backoff_max_ms: 100,
            ..ClientConfig::default()
        }
    }

    fn over(inner: Scripted) -> ClientStack {
        ClientStack::builder().build_with(move |_| inner.clone())
    }

    /// Free tokens, each taken at a recorded time; optionally slow to hand them out.
    #[derive(Debug, Default)]
    struct Tokens {
        delay: Duration,
        taken: Mutex<Vec<Instant>>,
    }

    #[async_trait]
    impl TokenSource for Tokens {
        async fn acquire(&self) -> anyhow::Result<()> {
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            self.taken.lock().unwrap().push(Instant::now());
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn outcome_reports_real_attempts_and_the_last_latency() {
        let inner = Scripted::delayed(vec![
            (Duration::from_millis(300), status(503)),
            (
                Duration::from_millis(200),
                Err(ClientError::Connect("refused".into())),
            ),
            (Duration::from_millis(40), status(201)),
        ]);
        let stack = over(inner.clone());

        let out = stack.call(&request(), &config()).await;

        assert!(out.succeeded(), "{out:?}");
        assert_eq!(out.status, Some(201));
        assert_eq!(out.attempts, 3);
        assert_near(out.latency, Duration::from_millis(40));
        let c = stack.counters().snapshot();
        assert_eq!((c.attempts, c.retries), (3, 2));
        assert_eq!(c.concurrency_limit, 64);
    }

    #[tokio::test(start_paused = true)]
    async fn success_is_what_success_statuses_say_and_headers_come_through() {
        let mut answer = ApiResponse::new(201);
        answer.headers.insert("etag", "\"e1\"".parse().unwrap());
        let stack = over(Scripted::new(vec![Ok(answer)]));
        let out = stack.call(&request(), &config()).await;
        assert!(out.succeeded(), "{out:?}");
        assert_eq!(out.headers["etag"], "\"e1\"");
        let strict = ClientConfig {
            success_statuses: serde_norway::from_str("[200]").unwrap(),
            ..config()
        };
        let out = stack.call(&request(), &strict).await;
        assert!(!out.succeeded());
        assert_eq!((out.error.as_deref(), out.attempts), (Some("HTTP 201"), 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_final_error_status_and_a_transport_error_are_reported() {
        let stack = over(Scripted::new(vec![status(404)]));
        let out = stack.call(&request(), &config()).await;
        assert_eq!((out.status, out.attempts), (Some(404), 1));
        assert_eq!(out.error.as_deref(), Some("HTTP 404"));

        let stack = over(Scripted::new(vec![Err(ClientError::Connect(
            "refused".into(),
        ))]));
        let out = stack.call(&request(), &config()).await;
        assert_eq!((out.status, out.attempts), (None, 3));
        assert_eq!(out.error.as_deref(), Some("connect error: refused"));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_each_pass_the_breaker_and_it_opens_on_attempts() {
        let inner = Scripted::new(vec![status(503)]);
        let stack = over(inner.clone());
        let config = ClientConfig {
            breaker_min_calls: 6,
            max_attempts: 3,
            ..config()
        };

        // Two calls of three attempts each: six failures, enough to open.
        for _ in 0..2 {
            stack.call(&request(), &config).await;
        }
        assert_eq!(stack.counters().snapshot().breaker_opened, 1);

        // With no deadline an open breaker answers at once, and the API sees nothing more.
        let out = stack.call(&request(), &config).await;
        assert_eq!(out.attempts, 0);
        assert!(out.error.unwrap().contains("circuit breaker open"));
        assert_eq!(inner.calls(), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn with_a_deadline_calls_wait_out_an_outage_and_finish_after_it() {
        // Down for 5 attempts, then back.
        let mut script = vec![status(503); 5];
        script.push(status(200));
        let inner = Scripted::new(script);
        let stack = over(inner.clone());
        let config = ClientConfig {
            breaker_min_calls: 3,
            max_attempts: 5,
            breaker_open_secs: 5,
            ..config()
        };

        // Three failed attempts open the breaker; the 4th attempt is turned away and, with no
        // deadline to bound a wait, the call ends there.
        let first = stack.call(&request(), &config).await;
        assert_eq!(first.attempts, 3);
        assert!(first.error.unwrap().contains("circuit breaker open"));

        stack
            .deadline()
            .set(Some(Instant::now() + Duration::from_secs(120)));
        let started = Instant::now();
        let second = stack.call(&request(), &config).await;

        // It slept through three open periods, each ended by one probe: two failed (and
        // reopened the breaker), the third found the API back.
        assert!(second.succeeded(), "{second:?}");
        assert_eq!(second.attempts, 3);
        assert_eq!(inner.calls(), 6);
        assert_eq!(stack.counters().snapshot().breaker_opened, 3);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(14_900) && waited < Duration::from_secs(16),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_longer_than_max_attempts_probes_costs_the_waiting_call_nothing() {
        // Down for 3 attempts and then 7 probes, then back: more failures than max_attempts.
        let mut script = vec![status(503); 3 + 7];
        script.push(status(200));
        let inner = Scripted::new(script);
        let stack = over(inner.clone());
        let config = ClientConfig {
            breaker_min_calls: 3,
            max_attempts: 5,
            breaker_open_secs: 5,
            ..config()
        };
        stack
            .deadline()
            .set(Some(Instant::now() + Duration::from_secs(120)));

        // One call is every probe; its failed probes are the breaker's, so it outlasts them.
        let out = stack.call(&request(), &config).await;
        assert!(out.succeeded(), "{out:?}");
        assert_eq!(inner.calls(), 11);
        assert_eq!(stack.counters().snapshot().breaker_opened, 8);
        // Retries after the three failures that opened it; the probes were no retries of its own.
        assert_eq!(stack.counters().snapshot().retries, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_ends_a_call_with_what_the_api_last_said() {
        let stack = over(Scripted::new(vec![status(503)]));
        let config = ClientConfig {
            backoff_base_ms: 10_000,
            backoff_max_ms: 10_000,
            ..config()
        };
        stack
            .deadline()
            .set(Some(Instant::now() + Duration::from_millis(5)));

        // A backoff drawn from [0, 10 s] almost never fits in 5 ms, so it is not started.
        let out = stack.call(&request(), &config).await;

        assert_eq!(
            out.error.as_deref(),
            Some("deadline exceeded; last attempt: HTTP 503")
        );
        assert_eq!(out.status, Some(503));
        assert!(Instant::now() < stack.deadline().get().unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_is_taken_only_once_a_slot_is_free() {
        let tokens = Arc::new(Tokens::default());
        let inner = Scripted::delayed(vec![(Duration::from_secs(1), status(200))]);
        let stack = Arc::new(
            ClientStack::builder()
                .token_source(tokens.clone())
                .build_with(move |_| inner.clone()),
        );
        let config = ClientConfig {
            concurrency: 2,
            ..config()
        };

        let started = Instant::now();
        let calls = (0..4).map(|_| {
            let (stack, config) = (stack.clone(), config.clone());
            async move { stack.call(&request(), &config).await }
        });
        futures::future::join_all(calls).await;

        let taken: Vec<Duration> = tokens
            .taken
            .lock()
            .unwrap()
            .iter()
            .map(|t| *t - started)
            .collect();
        assert_eq!(taken.len(), 4);
        // Two slots: two tokens at once, the other two only when the first calls finish.
        assert_eq!(taken.iter().filter(|t| t.is_zero()).count(), 2);
        assert_eq!(
            taken
                .iter()
                .filter(|t| **t == Duration::from_secs(1))
                .count(),
            2
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_a_token_is_not_attempt_time() {
        let tokens = Arc::new(Tokens {
            delay: Duration::from_secs(5),
            ..Tokens::default()
        });
        let inner = Scripted::delayed(vec![(Duration::from_millis(100), status(200))]);
        let stack = ClientStack::builder()
            .token_source(tokens)
            .build_with(move |_| inner.clone());
        let config = ClientConfig {
            timeout_ms: 1_000,
            ..config()
        };

        let out = stack.call(&request(), &config).await;

        assert!(out.succeeded(), "{out:?}");
        assert_near(out.latency, Duration::from_millis(100));
        let c = stack.counters().snapshot();
        assert_eq!(c.timeouts, 0);
        assert!((5_000_000..5_002_000).contains(&c.token_wait_micros));
    }

    #[tokio::test(start_paused = true)]
    async fn each_config_gets_its_own_stack() {
        let inner = Scripted::new(vec![status(503)]);
        let stack = over(inner.clone());
        let two = ClientConfig {
            max_attempts: 2,
            ..config()
        };
        let four = ClientConfig {
            max_attempts: 4,
            ..config()
        };

        assert_eq!(stack.call(&request(), &two).await.attempts, 2);
        assert_eq!(stack.call(&request(), &four).await.attempts, 4);
        assert_eq!(stack.call(&request(), &two).await.attempts, 2);
        assert_eq!(stack.built.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn over_reqwest_end_to_end() {
        let (url, mut requests) = serve(reply(
            "200 OK",
            "content-type: application/json\r\n",
            "{\"ok\":true}",
        ))
        .await;
        let stack = ClientStack::builder()
            .credentials(Arc::new(StaticCredential(
                Credential::bearer("s3cr3t").unwrap(),
            )))
            .build(crate::http::pooled_client().unwrap());
        let request = ApiRequest { url, ..request() };

        let out = stack.call(&request, &ClientConfig::default()).await;

        assert!(out.succeeded(), "{out:?}");
        assert_eq!(&out.body[..], b"{\"ok\":true}");
        assert_eq!(out.attempts, 1);
        let sent = requests.recv().await.unwrap().to_ascii_lowercase();
        assert!(sent.starts_with("post /v1/x "), "{sent}");
        assert!(sent.contains("authorization: bearer s3cr3t\r\n"), "{sent}");
        assert!(!format!("{stack:?}").contains("s3cr3t"));
    }

    #[test]
    fn counters_are_shared_with_the_builder() {
        let counters = Arc::new(ClientCounters::default());
        let stack = ClientStack::builder()
            .counters(counters.clone())
            .build(reqwest::Client::new());
        counters.retries.fetch_add(1, Ordering::Relaxed);
        assert_eq!(stack.counters().snapshot().retries, 1);
    }
}
