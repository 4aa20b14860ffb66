//! OAuth2 tokens as a [`CredentialSource`]: fetched from the token endpoint, kept until they are
//! due for refresh, shared with the rest of the fleet, replaced once when the API refuses them.
//!
//! - **One token per fleet.** With a [`SharedTokenStore`], a container that needs a token first
//!   reads the fleet's copy; only when that one is missing, due for refresh or refused by the API
//!   does it take the refresh lease (a conditional write that names the version it read) and ask
//!   the endpoint. The others keep using their still-valid token meanwhile, or, when they have
//!   none, wait for the new one, polling the store. A lease has an expiry, so a container that
//!   dies mid-refresh holds the others up only until then.
//! - **Refresh before expiry**: at `refresh_margin_secs` before `expires_in` runs out, at 90%
//!   of the lifetime at the earliest (see [`IssuedToken::refresh_at_ms`]).
//! - **A 401 replaces the token once**: [`CredentialSource::rejected`] marks the token refused,
//!   so the next [`CredentialSource::credential`] gets another; the retry layer retries the
//!   attempt once. A 401 on a token that was already replaced (here or by another container)
//!   just uses the new one. A 401 on a token issued moments ago is not followed by another
//!   refresh: an API that refuses every token (a wrong scope) must not turn each record into a
//!   token request.
//! - **A failing token endpoint** is retried with full-jitter backoff, never past the call's
//!   deadline; a refusal (`invalid_client`, `invalid_grant`…) is not retried. Each failure is
//!   counted and logged with its status and OAuth2 error code, never a body or a secret.
//!
//! Within a container one task refreshes at a time (the state's lock), so N calls arriving
//! together with no token make one request.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rand::Rng;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::ClientCounters;
use super::auth::{Credential, CredentialSource};
use super::limiter::source::Clock;
use fanout_core::oauth2::{IssuedToken, OAuth2Config, TokenForm, error_code};
use fanout_core::ports::{SecretSource, SharedTokenStore};
use fanout_core::secret::Secret;

/// How long a refresh lease lasts: the endpoint's retries fit in it, and a container that died
/// holding it delays the others by at most this.
pub const LEASE: Duration = Duration::from_secs(15);
/// How often a container without a usable token looks for the fleet's new one.
const POLL: Duration = Duration::from_millis(200);
/// How often a container whose token is due, but still valid, tries the lease again after
/// another container took it.
const RECHECK: Duration = Duration::from_secs(1);
/// A token is not used in its last seconds: a request must reach the API before it expires.
const EXPIRY_GUARD_MS: u64 = 2_000;
/// A 401 on a token younger than this does not refresh it again.
const MIN_TOKEN_AGE_FOR_REFRESH: Duration = Duration::from_secs(5);
/// Requests per token fetch, and the backoff between them.
const FETCH_ATTEMPTS: u32 = 4;
const FETCH_BACKOFF_BASE: Duration = Duration::from_millis(250);
/// One token request's timeout (shortened by the call's deadline).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A wait for a token with no deadline (calls outside an invocation) ends after this.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// One POST to a token endpoint: the status and body, or why nothing came back.
#[async_trait]
pub trait TokenEndpoint: Send + Sync {
    async fn post(
        &self,
        url: &str,
        form: &TokenForm,
        basic: Option<&(String, Secret)>,
        timeout: Duration,
    ) -> Result<(u16, Bytes), String>;
}

/// The token endpoint over reqwest.
pub struct HttpTokenEndpoint(pub reqwest::Client);

#[async_trait]
impl TokenEndpoint for HttpTokenEndpoint {
    async fn post(
        &self,
        url: &str,
        form: &TokenForm,
        basic: Option<&(String, Secret)>,
        timeout: Duration,
    ) -> Result<(u16, Bytes), String> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&form.0)
            .finish();
        let mut request = self
            .0
            .post(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .timeout(timeout);
        if let Some((id, secret)) = basic {
            // RFC 6749 §2.3.1: both parts form-encoded before the Basic encoding.
            let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect();
            let (id, secret): (String, String) = (enc(id), enc(secret.expose()));
            request = request.basic_auth(id, Some(secret));
        }
        // reqwest's errors hold the URL, never the form or headers; without_url drops even that.
        let response = request
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| e.without_url().to_string())?;
        Ok((status, body))
    }
}

/// What a container's token source did, beyond the requests and failures it counts in the
/// client's counters (published as `AuthTokenRequests` / `AuthTokenFailures`).
#[derive(Debug, Default)]
pub struct TokenStats {
    /// Tokens taken from the fleet's shared copy rather than fetched.
    pub shared_hits: AtomicU64,
    /// 401s that replaced the token.
    pub rejections: AtomicU64,
}

/// The token this container holds, and what it knows about it.
#[derive(Default)]
struct Held {
    token: Option<IssuedToken>,
    /// The API answered 401 to it.
    refused: bool,
    /// Until then, a token that is due but valid is used without trying the lease again.
    recheck_at_ms: u64,
}

/// `client.auth` with `type: oauth2`.
pub struct OAuth2Source {
    config: OAuth2Config,
    key: String,
    /// This container, as the lease's holder.
    holder: String,
    secrets: Arc<dyn SecretSource>,
    endpoint: Arc<dyn TokenEndpoint>,
    shared: Option<Arc<dyn SharedTokenStore>>,
    /// Wall clock in µs since the epoch (tokens' times are compared across containers).
    clock: Clock,
    held: Mutex<Held>,
    stats: Arc<TokenStats>,
    counters: Arc<ClientCounters>,
}

impl fmt::Debug for OAuth2Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuth2Source")
            .field("token_url", &self.config.token_url)
            .field("client_id", &self.config.client_id)
            .field("shared", &self.shared.is_some())
            .finish_non_exhaustive()
    }
}

impl OAuth2Source {
    pub fn new(
        config: OAuth2Config,
        secrets: Arc<dyn SecretSource>,
        endpoint: Arc<dyn TokenEndpoint>,
        shared: Option<Arc<dyn SharedTokenStore>>,
        clock: Clock,
        counters: Arc<ClientCounters>,
    ) -> Self {
        let holder = format!("{:016x}", rand::rng().random::<u64>());
        Self {
            key: config.token_key(),
            config,
            holder,
            secrets,
            endpoint,
            shared,
            clock,
            held: Mutex::default(),
            stats: Arc::default(),
            counters,
        }
    }

    pub fn stats(&self) -> &Arc<TokenStats> {
        &self.stats
    }

    fn now_ms(&self) -> u64 {
        (self.clock)() / 1000
    }

    fn due(&self, t: &IssuedToken, now_ms: u64) -> bool {
        now_ms >= t.refresh_at_ms(self.config.refresh_margin_secs)
    }

    fn valid(t: &IssuedToken, now_ms: u64) -> bool {
        now_ms + EXPIRY_GUARD_MS < t.expires_at_ms
    }

    fn credential_of(t: &IssuedToken) -> anyhow::Result<Credential> {
        Credential::bearer(t.token.expose())
            .map_err(|_| anyhow::anyhow!("the token endpoint's access_token cannot go in a header"))
    }

    /// Gets a token into `held`: the fleet's, or a new one.
    async fn obtain(&self, held: &mut Held, deadline: Instant) -> anyhow::Result<()> {
        let Some(shared) = &self.shared else {
            held.token = Some(self.fetch(deadline).await?);
            held.refused = false;
            return Ok(());
        };
        loop {
            let now = self.now_ms();
            let (version, stored) = shared.read(&self.key).await?;
            let refused = |t: &IssuedToken| {
                held.refused && held.token.as_ref().is_some_and(|h| h.token == t.token)
            };
            if let Some(t) = stored.filter(|t| !self.due(t, now) && !refused(t)) {
                self.stats.shared_hits.fetch_add(1, Ordering::Relaxed);
                *held = Held {
                    token: Some(t),
                    refused: false,
                    recheck_at_ms: 0,
                };
                return Ok(());
            }
            let until = now + LEASE.as_millis() as u64;
            if shared
                .try_lease(&self.key, &self.holder, version, now, until)
                .await?
            {
                let fresh = self.fetch(deadline).await?;
                if !shared
                    .store(&self.key, &self.holder, version, &fresh)
                    .await?
                {
                    tracing::info!("another container stored a newer OAuth2 token meanwhile");
                }
                *held = Held {
                    token: Some(fresh),
                    refused: false,
                    recheck_at_ms: 0,
                };
                return Ok(());
            }
            // Another container is refreshing. A token that is still good is used meanwhile.
            if let Some(t) = &held.token
                && !held.refused
                && Self::valid(t, now)
            {
                held.recheck_at_ms = now + RECHECK.as_millis() as u64;
                return Ok(());
            }
            if Instant::now() + POLL >= deadline {
                anyhow::bail!(
                    "no OAuth2 token before the deadline: another container holds the refresh"
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// A new token from the endpoint, retrying what a later request can fix.
    async fn fetch(&self, deadline: Instant) -> anyhow::Result<IssuedToken> {
        let client_secret = self.secrets.secret(&self.config.client_secret).await?;
        let password = match &self.config.password {
            Some(r) => Some(self.secrets.secret(r).await?),
            None => None,
        };
        let (form, basic) = self.config.token_form(&client_secret, password.as_ref());
        let mut last = String::new();
        for attempt in 1..=FETCH_ATTEMPTS {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            ClientCounters::bump(&self.counters.auth_token_requests);
            let answer = self
                .endpoint
                .post(
                    &self.config.token_url,
                    &form,
                    basic.as_ref(),
                    left.min(REQUEST_TIMEOUT),
                )
                .await;
            let (retry, reason) = match answer {
                Ok((200, body)) => match IssuedToken::from_answer(&body, self.now_ms()) {
                    Ok(t) => return Ok(t),
                    Err(why) => (false, why),
                },
                Ok((status, body)) => {
                    let code = error_code(&body)
                        .map(|c| format!(" ({c})"))
                        .unwrap_or_default();
                    let retry = status == 429 || status >= 500;
                    (retry, format!("HTTP {status}{code}"))
                }
                Err(e) => (true, e),
            };
            ClientCounters::bump(&self.counters.auth_token_failures);
            tracing::warn!(
                token_url = %self.config.token_url,
                attempt,
                reason = %reason,
                retry,
                "OAuth2 token request failed"
            );
            last = reason;
            if !retry || attempt == FETCH_ATTEMPTS {
                break;
            }
            let ceiling = FETCH_BACKOFF_BASE * 2u32.pow(attempt - 1);
            let wait = ceiling.mul_f64(rand::rng().random::<f64>());
            if Instant::now() + wait >= deadline {
                break;
            }
            tokio::time::sleep(wait).await;
        }
        anyhow::bail!(
            "no OAuth2 token from {}: {}",
            self.config.token_url,
            if last.is_empty() {
                "deadline reached"
            } else {
                &last
            }
        )
    }
}

#[async_trait]
impl CredentialSource for OAuth2Source {
    async fn credential(&self, deadline: Option<Instant>) -> anyhow::Result<Credential> {
        let mut held = self.held.lock().await;
        let now = self.now_ms();
        if let Some(t) = &held.token
            && !held.refused
            && (!self.due(t, now) || (now < held.recheck_at_ms && Self::valid(t, now)))
        {
            return Self::credential_of(t);
        }
        let deadline = deadline.unwrap_or_else(|| Instant::now() + MAX_WAIT);
        match self.obtain(&mut held, deadline).await {
            Ok(()) => {}
            // A due token still works: keep it and try again on a later call.
            Err(e) => match &held.token {
                Some(t) if !held.refused && Self::valid(t, now) => {
                    tracing::warn!(error = %format!("{e:#}"), "OAuth2 refresh failed; the current token is still valid");
                    held.recheck_at_ms = now + RECHECK.as_millis() as u64;
                }
                _ => return Err(e),
            },
        }
        match &held.token {
            Some(t) => Self::credential_of(t),
            None => anyhow::bail!("no OAuth2 token"),
        }
    }

    async fn rejected(&self, credential: &Credential) -> bool {
        let mut held = self.held.lock().await;
        let Some(t) = &held.token else {
            return true;
        };
        if Self::credential_of(t).ok().as_ref() != Some(credential) {
            // Replaced since this attempt took it: the next attempt gets the new one.
            return true;
        }
        if held.refused {
            return true;
        }
        let age_ms = self.now_ms().saturating_sub(t.issued_at_ms);
        if age_ms < MIN_TOKEN_AGE_FOR_REFRESH.as_millis() as u64 {
            return false;
        }
        held.refused = true;
        self.stats.rejections.fetch_add(1, Ordering::Relaxed);
        tracing::info!("the API refused the OAuth2 token (401); it will be replaced");
        true
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex as StdMutex;

    use super::*;
    use fanout_core::secret::SecretRef;

    /// A token endpoint that answers from a script, then issues `tok-N` tokens of `lifetime` s.
    #[derive(Default)]
    struct FakeEndpoint {
        script: StdMutex<VecDeque<Result<(u16, &'static str), &'static str>>>,
        lifetime: u64,
        posts: AtomicU64,
        /// When each request came (the test runtime's clock).
        post_times: StdMutex<Vec<Instant>>,
        forms: StdMutex<Vec<String>>,
    }

    impl FakeEndpoint {
        fn issuing(lifetime: u64) -> Arc<Self> {
            Arc::new(Self {
                lifetime,
                ..Self::default()
            })
        }
        fn scripted(
            lifetime: u64,
            script: Vec<Result<(u16, &'static str), &'static str>>,
        ) -> Arc<Self> {
            Arc::new(Self {
                lifetime,
                script: StdMutex::new(script.into()),
                ..Self::default()
            })
        }
        fn posts(&self) -> u64 {
            self.posts.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl TokenEndpoint for FakeEndpoint {
        async fn post(
            &self,
            _: &str,
            form: &TokenForm,
            basic: Option<&(String, Secret)>,
            _: Duration,
        ) -> Result<(u16, Bytes), String> {
            let n = self.posts.fetch_add(1, Ordering::SeqCst) + 1;
            self.post_times.lock().unwrap().push(Instant::now());
            let mut seen: Vec<String> = form.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
            if let Some((id, s)) = basic {
                seen.push(format!("basic={id}:{}", s.expose()));
            }
            self.forms.lock().unwrap().push(seen.join("&"));
            match self.script.lock().unwrap().pop_front() {
                Some(Ok((status, body))) => Ok((status, Bytes::from_static(body.as_bytes()))),
                Some(Err(e)) => Err(e.to_string()),
                None => Ok((
                    200,
                    Bytes::from(format!(
                        r#"{{"access_token":"tok-{n}","token_type":"Bearer","expires_in":{}}}"#,
                        self.lifetime
                    )),
                )),
            }
        }
    }

    /// The port's contract, in memory: one item per key.
    #[derive(Default)]
    struct MemStore {
        items: StdMutex<std::collections::HashMap<String, Item>>,
    }

    #[derive(Clone, Default)]
    struct Item {
        version: u64,
        token: Option<IssuedToken>,
        lease: Option<(String, u64)>,
    }

    #[async_trait]
    impl SharedTokenStore for MemStore {
        async fn read(&self, key: &str) -> anyhow::Result<(u64, Option<IssuedToken>)> {
            let item = self
                .items
                .lock()
                .unwrap()
                .get(key)
                .cloned()
                .unwrap_or_default();
            Ok((item.version, item.token))
        }
        async fn try_lease(
            &self,
            key: &str,
            holder: &str,
            seen: u64,
            now_ms: u64,
            until_ms: u64,
        ) -> anyhow::Result<bool> {
            let mut items = self.items.lock().unwrap();
            let item = items.entry(key.to_string()).or_default();
            let free = item.lease.as_ref().is_none_or(|(_, until)| *until < now_ms);
            if free && item.version == seen {
                item.lease = Some((holder.to_string(), until_ms));
                return Ok(true);
            }
            Ok(false)
        }
        async fn store(
            &self,
            key: &str,
            _: &str,
            seen: u64,
            token: &IssuedToken,
        ) -> anyhow::Result<bool> {
            let mut items = self.items.lock().unwrap();
            let item = items.entry(key.to_string()).or_default();
            if item.version != seen {
                return Ok(false);
            }
            *item = Item {
                version: seen + 1,
                token: Some(token.clone()),
                lease: None,
            };
            Ok(true)
        }
    }

    struct Secrets;

    #[async_trait]
    impl SecretSource for Secrets {
        async fn secret(&self, _: &SecretRef) -> anyhow::Result<Secret> {
            Ok(Secret::new("client-s3cret"))
        }
    }

    fn config() -> OAuth2Config {
        serde_norway::from_str(
            "{token_url: 'http://auth.test/token', client_id: app, \
             client_secret: {secrets_manager: s}, scopes: [read]}",
        )
        .unwrap()
    }

    /// Wall clock that moves with tokio's (paused) clock, from an epoch of 1,000 s.
    fn clock() -> Clock {
        let start = Instant::now();
        Arc::new(move || 1_000_000_000 + start.elapsed().as_micros() as u64)
    }

    fn source(endpoint: &Arc<FakeEndpoint>, shared: Option<&Arc<MemStore>>) -> OAuth2Source {
        OAuth2Source::new(
            config(),
            Arc::new(Secrets),
            endpoint.clone(),
            shared.map(|s| s.clone() as Arc<dyn SharedTokenStore>),
            clock(),
            Arc::default(),
        )
    }

    async fn token(s: &OAuth2Source) -> String {
        let c = s.credential(None).await.expect("a credential");
        c.value().trim_start_matches("Bearer ").to_string()
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_is_kept_until_due_then_refreshed() {
        let endpoint = FakeEndpoint::issuing(60);
        let s = source(&endpoint, None);
        assert_eq!(token(&s).await, "tok-1");
        tokio::time::advance(Duration::from_secs(53)).await;
        assert_eq!(token(&s).await, "tok-1");
        assert_eq!(endpoint.posts(), 1);
        // 90% of 60 s: the default 60 s margin is cut to 6 s.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(token(&s).await, "tok-2");
        assert_eq!(endpoint.posts(), 2);
        let form = endpoint.forms.lock().unwrap()[0].clone();
        assert_eq!(
            form,
            "grant_type=client_credentials&scope=read&basic=app:client-s3cret"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_fleet_makes_one_request_per_token_lifetime() {
        let endpoint = FakeEndpoint::issuing(60);
        let store = Arc::new(MemStore::default());
        let fleet: Vec<Arc<OAuth2Source>> = (0..20)
            .map(|_| Arc::new(source(&endpoint, Some(&store))))
            .collect();
        for round in 0..5u64 {
            let tokens = futures::future::join_all(fleet.iter().map(|s| {
                let s = s.clone();
                tokio::spawn(async move { token(&s).await })
            }))
            .await;
            let distinct: std::collections::BTreeSet<String> =
                tokens.into_iter().map(Result::unwrap).collect();
            assert_eq!(distinct.len(), 1, "round {round}: {distinct:?}");
            assert_eq!(endpoint.posts(), round + 1, "round {round}");
            tokio::time::advance(Duration::from_secs(55)).await;
        }
        let hits: u64 = fleet
            .iter()
            .map(|s| s.stats().shared_hits.load(Ordering::SeqCst))
            .sum();
        assert!(hits >= 19 * 5, "{hits}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_401_replaces_the_token_once_for_the_whole_fleet() {
        let endpoint = FakeEndpoint::issuing(600);
        let store = Arc::new(MemStore::default());
        let (a, b) = (
            source(&endpoint, Some(&store)),
            source(&endpoint, Some(&store)),
        );
        assert_eq!(
            (token(&a).await, token(&b).await),
            ("tok-1".into(), "tok-1".into())
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        let refused = Credential::bearer("tok-1").unwrap();
        assert!(a.rejected(&refused).await);
        assert!(b.rejected(&refused).await);
        assert!(a.rejected(&refused).await, "a second 401 on the same token");
        assert_eq!(token(&a).await, "tok-2");
        assert_eq!(token(&b).await, "tok-2", "b uses a's new token");
        assert_eq!(endpoint.posts(), 2);
        // A late 401 on the old token: the new one is there, nothing is fetched.
        assert!(b.rejected(&refused).await);
        assert_eq!(token(&b).await, "tok-2");
        assert_eq!(endpoint.posts(), 2);
        assert_eq!(a.stats().rejections.load(Ordering::SeqCst), 1);
        assert_eq!(b.stats().rejections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_api_that_refuses_fresh_tokens_gets_no_more_refreshes() {
        let endpoint = FakeEndpoint::issuing(600);
        let s = source(&endpoint, None);
        let t = token(&s).await;
        assert!(!s.rejected(&Credential::bearer(&t).unwrap()).await);
        assert_eq!(token(&s).await, t);
        assert_eq!(endpoint.posts(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_endpoint_is_retried_and_a_refusal_is_not() {
        let endpoint = FakeEndpoint::scripted(
            600,
            vec![Ok((503, "busy")), Err("connection reset"), Ok((429, "{}"))],
        );
        let s = source(&endpoint, None);
        assert_eq!(token(&s).await, "tok-4");
        let counters = s.counters.snapshot();
        assert_eq!(
            (counters.auth_token_requests, counters.auth_token_failures),
            (4, 3)
        );

        let endpoint = FakeEndpoint::scripted(
            600,
            vec![Ok((
                401,
                r#"{"error":"invalid_client","error_description":"client-s3cret"}"#,
            ))],
        );
        let s = source(&endpoint, None);
        let err = format!("{:#}", s.credential(None).await.unwrap_err());
        assert!(err.contains("HTTP 401 (invalid_client)"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        assert_eq!(endpoint.posts(), 1);

        let endpoint = FakeEndpoint::scripted(600, vec![Ok((200, "<html>tok</html>"))]);
        let err = format!(
            "{:#}",
            source(&endpoint, None).credential(None).await.unwrap_err()
        );
        assert!(err.contains("not JSON"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_call_deadline_bounds_the_retries() {
        let endpoint = FakeEndpoint::scripted(600, vec![Ok((503, "")); 4]);
        let s = source(&endpoint, None);
        let start = Instant::now();
        let deadline = start + Duration::from_millis(300);
        assert!(s.credential(Some(deadline)).await.is_err());
        assert!(Instant::now() <= deadline);
        // How many requests fit depends on the jittered backoff (all four, when its waits happen
        // to be short): what the deadline bounds is when they are made.
        let times = endpoint.post_times.lock().unwrap().clone();
        assert!(!times.is_empty());
        assert!(times.iter().all(|t| *t < deadline), "{times:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_lease_holder_delays_the_others_until_its_lease_expires() {
        let endpoint = FakeEndpoint::issuing(600);
        let store = Arc::new(MemStore::default());
        let now_ms = clock()() / 1000;
        let key = config().token_key();
        assert!(
            store
                .try_lease(&key, "dead", 0, now_ms, now_ms + 15_000)
                .await
                .unwrap()
        );
        let s = source(&endpoint, Some(&store));
        let start = Instant::now();
        assert_eq!(token(&s).await, "tok-1");
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(15) && waited < Duration::from_secs(16),
            "{waited:?}"
        );
        // With a deadline shorter than the lease, the wait ends with a clear error.
        let store = Arc::new(MemStore::default());
        let now_ms = clock()() / 1000;
        assert!(
            store
                .try_lease(&key, "dead", 0, now_ms, now_ms + 15_000)
                .await
                .unwrap()
        );
        let s = source(&endpoint, Some(&store));
        let err = s
            .credential(Some(Instant::now() + Duration::from_secs(2)))
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("another container holds the refresh"),
            "{err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_due_token_is_used_while_another_container_refreshes() {
        let endpoint = FakeEndpoint::issuing(60);
        let store = Arc::new(MemStore::default());
        let s = source(&endpoint, Some(&store));
        assert_eq!(token(&s).await, "tok-1");
        tokio::time::advance(Duration::from_secs(55)).await;
        // Another container holds the lease for the refresh.
        let now_ms = clock()() / 1000 + 55_000;
        let key = config().token_key();
        assert!(
            store
                .try_lease(&key, "other", 1, now_ms, now_ms + 15_000)
                .await
                .unwrap()
        );
        let start = Instant::now();
        assert_eq!(token(&s).await, "tok-1");
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(endpoint.posts(), 1);
    }

    /// Both grants and both client authentications, over HTTP against the mock API's token
    /// endpoint, through the whole client stack: the mock refuses a call without a valid token.
    #[tokio::test]
    async fn the_stack_calls_an_oauth2_api_with_one_token() {
        use fanout_core::config::ClientConfig;
        use fanout_core::ports::ApiClient;
        use fanout_core::request::ApiRequest;
        use mock_api::{MockApi, MockAuth, MockConfig};

        for (grant, client_auth) in [("client_credentials", "basic"), ("password", "body")] {
            let api = MockApi::start(MockConfig {
                auth: MockAuth::OAuth2(mock_api::OAuth2Config {
                    client_id: "app".into(),
                    client_secret: "client-s3cret".into(),
                    username: Some("owner".into()),
                    password: Some("client-s3cret".into()),
                    token_lifetime_secs: 600,
                }),
                ..MockConfig::default()
            })
            .await
            .unwrap();
            let user = if grant == "password" {
                ", username: owner, password: {secrets_manager: p}"
            } else {
                ""
            };
            let auth = format!(
                "{{type: oauth2, token_url: '{}/oauth2/token', grant: {grant}, client_id: app, \
                 client_auth: {client_auth}, client_secret: {{secrets_manager: s}}{user}, \
                 scopes: [read, write], audience: orders, extra_params: {{resource: r1}}}}",
                api.base_url()
            );
            let config = ClientConfig {
                auth: serde_norway::from_str(&auth).unwrap(),
                ..ClientConfig::default()
            };
            let stack = crate::ClientStack::builder()
                .secrets(Arc::new(Secrets))
                .build(crate::http::pooled_client().unwrap());
            for i in 0..5 {
                let request = ApiRequest {
                    method: reqwest::Method::GET,
                    url: format!("{}/items/{i}", api.base_url()),
                    headers: Vec::new(),
                    body: None,
                    records: 1,
                };
                let outcome = stack.call(&request, &config).await;
                assert_eq!(outcome.status, Some(200), "{grant}: {outcome:?}");
            }
            let stats = api.stats();
            assert_eq!((stats.accepted_auth, stats.refused_auth), (5, 0), "{grant}");
            assert_eq!(
                (stats.token_requests, stats.tokens_issued),
                (1, 1),
                "{grant}"
            );
            assert_eq!(stats.last_token_grant_type.as_deref(), Some(grant));
            assert_eq!(stats.last_token_scope.as_deref(), Some("read write"));
            assert_eq!(stats.last_token_audience.as_deref(), Some("orders"));
            assert_eq!(
                stats
                    .last_token_extra_params
                    .get("resource")
                    .map(String::as_str),
                Some("r1")
            );
        }
    }
}
