//! Auth: sets a header from a [`CredentialSource`] on every attempt.
//!
//! It is the innermost layer so the credential is fetched per attempt, right before sending:
//! a token that was rotated or refreshed while an earlier attempt was failing or waiting for
//! its backoff applies to the next one. The credential rides on the [`ApiCall`] of that attempt
//! only; the retry layer keeps its own copy of the call without it.
//!
//! The value must never reach a log: [`Credential`]'s `Debug` redacts it, and its header value
//! is marked sensitive so HTTP/2 never puts it in the HPACK table.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use reqwest::header::{HeaderName, HeaderValue, InvalidHeaderValue};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use super::{ApiCall, ApiResponse, CallFuture, ClientError};
use fanout_core::auth::AuthConfig;
use fanout_core::ports::SecretSource;

/// What authenticates a request: a header (e.g. `Authorization: Bearer …`) or a query
/// parameter (an API key some APIs take only in the URL).
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    placement: Placement,
}

#[derive(Clone, PartialEq, Eq)]
enum Placement {
    Header(HeaderName, HeaderValue),
    Query(String, String),
}

impl Credential {
    pub fn new(name: HeaderName, value: &str) -> Result<Self, InvalidHeaderValue> {
        let mut value = HeaderValue::from_str(value)?;
        value.set_sensitive(true);
        Ok(Self {
            placement: Placement::Header(name, value),
        })
    }

    pub fn bearer(token: &str) -> Result<Self, InvalidHeaderValue> {
        Self::new(reqwest::header::AUTHORIZATION, &format!("Bearer {token}"))
    }

    /// HTTP Basic (RFC 7617): `Authorization: Basic base64(username:password)`.
    pub fn basic(username: &str, password: &str) -> Result<Self, InvalidHeaderValue> {
        use base64::Engine;
        let pair =
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        Self::new(reqwest::header::AUTHORIZATION, &format!("Basic {pair}"))
    }

    /// A query parameter added to the URL (percent-encoded by the HTTP client).
    pub fn query(name: &str, value: &str) -> Self {
        Self {
            placement: Placement::Query(name.to_string(), value.to_string()),
        }
    }

    /// The header or parameter name (never the value).
    pub fn name(&self) -> &str {
        match &self.placement {
            Placement::Header(n, _) => n.as_str(),
            Placement::Query(n, _) => n,
        }
    }

    /// For the http layer only; everything else should treat the credential as opaque.
    pub(crate) fn apply(&self, headers: &mut reqwest::header::HeaderMap) -> Option<(&str, &str)> {
        match &self.placement {
            Placement::Header(n, v) => {
                headers.insert(n.clone(), v.clone());
                None
            }
            Placement::Query(n, v) => Some((n, v)),
        }
    }

    /// `body` with every copy of the credential replaced by `<redacted>`: an API that echoes its
    /// request (the URL with an API key, its headers) would otherwise put the secret in the
    /// results, which keep response bodies.
    pub(crate) fn scrub(&self, body: bytes::Bytes) -> bytes::Bytes {
        let forms: Vec<Vec<u8>> = match &self.placement {
            Placement::Header(_, v) => vec![v.as_bytes().to_vec()],
            Placement::Query(_, v) => {
                let encoded: String = url::form_urlencoded::byte_serialize(v.as_bytes()).collect();
                vec![v.as_bytes().to_vec(), encoded.into_bytes()]
            }
        };
        let mut body = body;
        for form in forms.iter().filter(|f| !f.is_empty()) {
            if body.windows(form.len()).any(|w| w == form.as_slice()) {
                body = replace_all(&body, form, b"<redacted>").into();
            }
        }
        body
    }

    /// Every header value that holds a copy of the credential, scrubbed as [`Self::scrub`]
    /// does a body: results keep the headers that `response.keep_headers` names.
    pub(crate) fn scrub_headers(&self, headers: &mut ::http::HeaderMap) {
        for value in headers.values_mut() {
            let bytes = bytes::Bytes::copy_from_slice(value.as_bytes());
            let scrubbed = self.scrub(bytes.clone());
            if scrubbed != bytes
                && let Ok(v) = ::http::HeaderValue::from_bytes(&scrubbed)
            {
                *value = v;
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn value(&self) -> &str {
        match &self.placement {
            Placement::Header(_, v) => v.to_str().unwrap_or_default(),
            Placement::Query(_, v) => v,
        }
    }
}

fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("name", &self.name())
            .field("value", &"<redacted>")
            .finish()
    }
}

/// Where credentials come from: a static secret, or a token that is refreshed before it
/// expires (the implementation caches; this is called once per attempt).
#[async_trait]
pub trait CredentialSource: Send + Sync {
    /// The credential for the next attempt; any wait for it (a token being refreshed) ends by
    /// `deadline`, the call's.
    async fn credential(&self, deadline: Option<Instant>) -> anyhow::Result<Credential>;

    /// The API answered 401 to `credential`. True when the next [`credential`] is another one
    /// (a refreshed token), so that one more attempt may succeed; a static secret says false.
    ///
    /// [`credential`]: CredentialSource::credential
    async fn rejected(&self, _credential: &Credential) -> bool {
        false
    }
}

/// The credential a pipeline's `client.auth` describes, its secret read through `secrets` on
/// each attempt (the source caches, so that is a map lookup but for the first attempt and after
/// each cache period: a rotated secret is picked up without a redeploy).
pub struct ConfiguredCredential {
    auth: AuthConfig,
    secrets: Arc<dyn SecretSource>,
}

impl ConfiguredCredential {
    /// None for `AuthConfig::None`.
    pub fn new(auth: &AuthConfig, secrets: Arc<dyn SecretSource>) -> Option<Self> {
        (*auth != AuthConfig::None).then(|| Self {
            auth: auth.clone(),
            secrets,
        })
    }
}

#[async_trait]
impl CredentialSource for ConfiguredCredential {
    async fn credential(&self, _: Option<Instant>) -> anyhow::Result<Credential> {
        let Some(reference) = self.auth.secrets().first().copied() else {
            anyhow::bail!("no credential is configured");
        };
        let secret = self.secrets.secret(reference).await?;
        let value = secret.expose();
        // The header errors say only that the value is unusable, never what it is.
        let unusable = |_| anyhow::anyhow!("the value of {reference} cannot go in a header");
        Ok(match &self.auth {
            AuthConfig::ApiKey {
                header: Some(h), ..
            } => Credential::new(
                HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| anyhow::anyhow!("{h:?} is not a valid header name"))?,
                value,
            )
            .map_err(unusable)?,
            AuthConfig::ApiKey {
                query_param: Some(q),
                ..
            } => Credential::query(q, value),
            AuthConfig::Basic { username, .. } => {
                Credential::basic(username, value).map_err(unusable)?
            }
            AuthConfig::Bearer { .. } => Credential::bearer(value).map_err(unusable)?,
            AuthConfig::ApiKey { .. } | AuthConfig::None | AuthConfig::OAuth2(_) => {
                anyhow::bail!("client.auth is incomplete")
            }
        })
    }
}

/// A credential that never changes (e.g. an API key read at cold start).
#[derive(Clone, Debug)]
pub struct StaticCredential(pub Credential);

#[async_trait]
impl CredentialSource for StaticCredential {
    async fn credential(&self, _: Option<Instant>) -> anyhow::Result<Credential> {
        Ok(self.0.clone())
    }
}

/// Adds the credential from `source`; with no source, passes calls through unchanged.
#[derive(Clone)]
pub struct AuthLayer {
    source: Option<Arc<dyn CredentialSource>>,
}

impl AuthLayer {
    pub fn new(source: Option<Arc<dyn CredentialSource>>) -> Self {
        Self { source }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            source: self.source.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    source: Option<Arc<dyn CredentialSource>>,
}

impl fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthLayer")
            .field("credentials", &self.source.is_some())
            .finish()
    }
}

impl<S: fmt::Debug> fmt::Debug for Auth<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("inner", &self.inner)
            .field("credentials", &self.source.is_some())
            .finish()
    }
}

impl<S> Service<ApiCall> for Auth<S>
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
        let inner = self.inner.clone();
        let source = self.source.clone();
        Box::pin(async move {
            let Some(source) = source else {
                return inner.oneshot(call).await;
            };
            let credential = source
                .credential(call.deadline)
                .await
                .map_err(|e| ClientError::Credentials(format!("{e:#}")))?;
            call.credential = Some(credential.clone());
            let mut response = inner.oneshot(call).await?;
            if response.status == 401 && source.rejected(&credential).await {
                response.credential_renewed = true;
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use fanout_core::response::StatusRules;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use tower::retry::budget::TpsBudget;

    use super::*;
    use crate::ClientCounters;
    use crate::retry::{RetryPolicy, RetrySettings};
    use crate::testing::{Scripted, call, status};

    /// Hands out a new token on every call, like a source whose token keeps expiring.
    #[derive(Debug, Default)]
    struct Rotating(AtomicU32);

    #[async_trait]
    impl CredentialSource for Rotating {
        async fn credential(&self, _: Option<Instant>) -> anyhow::Result<Credential> {
            let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(Credential::bearer(&format!("secret-{n}"))?)
        }
    }

    fn sent_token(inner: &Scripted, i: usize) -> String {
        let seen = inner.seen.lock().unwrap();
        let c = seen[i].credential.as_ref().expect("a credential");
        c.value().to_string()
    }

    #[tokio::test(start_paused = true)]
    async fn each_attempt_carries_a_freshly_fetched_credential() {
        let inner = Scripted::new(vec![status(401), status(503), status(200)]);
        let retry = RetryPolicy::new(
            RetrySettings {
                max_attempts: 3,
                backoff_base: Duration::from_millis(10),
                backoff_max: Duration::from_millis(100),
                retry_after_max: Duration::from_secs(1),
                statuses: StatusRules::default(),
            },
            Arc::new(TpsBudget::new(Duration::from_secs(10), 100, 1.0)),
            Arc::new(ClientCounters::default()),
        );
        let auth = AuthLayer::new(Some(Arc::new(Rotating::default())));
        let svc = retry.layer().layer(auth.layer(inner.clone()));

        // 401 is not retried: a second call, whose first attempt is a 503.
        assert_eq!(svc.clone().oneshot(call()).await.unwrap().status, 401);
        assert_eq!(svc.oneshot(call()).await.unwrap().status, 200);

        assert_eq!(sent_token(&inner, 0), "Bearer secret-1");
        assert_eq!(sent_token(&inner, 1), "Bearer secret-2");
        assert_eq!(sent_token(&inner, 2), "Bearer secret-3");
    }

    /// Like an OAuth2 source: every 401 replaces the token.
    #[derive(Debug, Default)]
    struct Renewing(Rotating);

    #[async_trait]
    impl CredentialSource for Renewing {
        async fn credential(&self, d: Option<Instant>) -> anyhow::Result<Credential> {
            self.0.credential(d).await
        }
        async fn rejected(&self, _: &Credential) -> bool {
            true
        }
    }

    fn one_attempt() -> RetryPolicy {
        RetryPolicy::new(
            RetrySettings {
                max_attempts: 1,
                backoff_base: Duration::from_millis(10),
                backoff_max: Duration::from_millis(100),
                retry_after_max: Duration::from_secs(1),
                statuses: StatusRules::default(),
            },
            // No budget for retries: the renewal must not need any.
            Arc::new(TpsBudget::new(Duration::from_secs(10), 0, 0.0)),
            Arc::new(ClientCounters::default()),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_401_with_a_renewed_credential_is_sent_once_more_and_no_more() {
        let source: Arc<dyn CredentialSource> = Arc::new(Renewing::default());
        let inner = Scripted::new(vec![status(401), status(200)]);
        let svc = one_attempt()
            .layer()
            .layer(AuthLayer::new(Some(source.clone())).layer(inner.clone()));
        assert_eq!(svc.oneshot(call()).await.unwrap().status, 200);
        assert_eq!(inner.calls(), 2);
        assert_eq!(sent_token(&inner, 1), "Bearer secret-2");

        // An API that refuses every token: one renewal, then the 401 is the answer.
        let inner = Scripted::new(vec![status(401), status(401), status(200)]);
        let svc = one_attempt()
            .layer()
            .layer(AuthLayer::new(Some(source)).layer(inner.clone()));
        assert_eq!(svc.oneshot(call()).await.unwrap().status, 401);
        assert_eq!(inner.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_401_on_a_credential_that_cannot_change_is_final() {
        let source = Arc::new(StaticCredential(Credential::bearer("k").unwrap()));
        let inner = Scripted::new(vec![status(401), status(200)]);
        let svc = one_attempt()
            .layer()
            .layer(AuthLayer::new(Some(source)).layer(inner.clone()));
        assert_eq!(svc.oneshot(call()).await.unwrap().status, 401);
        assert_eq!(inner.calls(), 1);
    }

    #[tokio::test]
    async fn no_source_sends_no_credential() {
        let inner = Scripted::new(vec![status(200)]);
        AuthLayer::new(None)
            .layer(inner.clone())
            .oneshot(call())
            .await
            .unwrap();
        assert!(inner.seen.lock().unwrap()[0].credential.is_none());
    }

    #[derive(Debug)]
    struct Failing;

    #[async_trait]
    impl CredentialSource for Failing {
        async fn credential(&self, _: Option<Instant>) -> anyhow::Result<Credential> {
            anyhow::bail!("secret not found")
        }
    }

    #[tokio::test]
    async fn a_failed_fetch_sends_nothing() {
        let inner = Scripted::new(vec![status(200)]);
        let result = AuthLayer::new(Some(Arc::new(Failing)))
            .layer(inner.clone())
            .oneshot(call())
            .await;
        assert_eq!(
            result,
            Err(ClientError::Credentials("secret not found".into()))
        );
        assert_eq!(inner.calls(), 0);
    }

    #[test]
    fn the_value_never_shows_in_debug_output() {
        let credential = Credential::bearer("hunter2").unwrap();
        let mut c = call();
        c.credential = Some(credential.clone());
        for text in [
            format!("{credential:?}"),
            format!("{:?}", StaticCredential(credential.clone())),
            format!("{c:?}"),
            format!("{c:#?}"),
        ] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("authorization"), "{text}");
        }
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(credential.apply(&mut headers), None);
        assert!(headers["authorization"].is_sensitive());
    }

    /// Secrets by name, counting reads.
    #[derive(Default)]
    struct FakeSecrets(std::sync::Mutex<Vec<String>>);

    #[async_trait]
    impl SecretSource for FakeSecrets {
        async fn secret(
            &self,
            reference: &fanout_core::secret::SecretRef,
        ) -> anyhow::Result<fanout_core::secret::Secret> {
            self.0.lock().unwrap().push(reference.to_string());
            match reference {
                fanout_core::secret::SecretRef::SecretsManager {
                    secrets_manager, ..
                } if secrets_manager == "missing" => anyhow::bail!("{reference}: not found"),
                _ => Ok(fanout_core::secret::Secret::new("s3cr3t-value")),
            }
        }
    }

    fn auth(yaml: &str) -> AuthConfig {
        serde_norway::from_str(yaml).unwrap()
    }

    async fn configured(yaml: &str) -> anyhow::Result<Credential> {
        let source = ConfiguredCredential::new(&auth(yaml), Arc::new(FakeSecrets::default()))
            .expect("a strategy with a credential");
        source.credential(None).await
    }

    #[tokio::test]
    async fn each_strategy_becomes_its_header_or_parameter() {
        let c = configured("{type: bearer, token: {secrets_manager: t}}")
            .await
            .unwrap();
        assert_eq!(
            (c.name(), c.value()),
            ("authorization", "Bearer s3cr3t-value")
        );

        let c = configured("{type: basic, username: alice, password: {kms_ciphertext: AQ}}")
            .await
            .unwrap();
        // base64("alice:s3cr3t-value")
        assert_eq!(c.value(), "Basic YWxpY2U6czNjcjN0LXZhbHVl");

        let c = configured("{type: api_key, header: X-Api-Key, key: {secrets_manager: k}}")
            .await
            .unwrap();
        assert_eq!((c.name(), c.value()), ("x-api-key", "s3cr3t-value"));

        let c = configured("{type: api_key, query_param: api_key, key: {secrets_manager: k}}")
            .await
            .unwrap();
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(c.apply(&mut headers), Some(("api_key", "s3cr3t-value")));
        assert!(headers.is_empty());
        assert!(!format!("{c:?}").contains("s3cr3t"));

        assert!(
            ConfiguredCredential::new(&AuthConfig::None, Arc::new(FakeSecrets::default()))
                .is_none()
        );
    }

    #[test]
    fn an_echoed_credential_is_scrubbed_from_the_body() {
        let c = Credential::query("api_key", "k&y 1");
        let body = bytes::Bytes::from_static(b"{\"query\":\"api_key=k%26y+1\",\"raw\":\"k&y 1\"}");
        assert_eq!(
            &c.scrub(body)[..],
            b"{\"query\":\"api_key=<redacted>\",\"raw\":\"<redacted>\"}"
        );
        let c = Credential::bearer("tok").unwrap();
        let body = bytes::Bytes::from_static(b"{\"authorization\":\"Bearer tok\"}");
        assert_eq!(&c.scrub(body)[..], b"{\"authorization\":\"<redacted>\"}");
        let clean = bytes::Bytes::from_static(b"{\"ok\":true}");
        assert_eq!(c.scrub(clean.clone()), clean);
    }

    #[test]
    fn an_echoed_credential_is_scrubbed_from_the_headers() {
        let c = Credential::bearer("tok").unwrap();
        let mut headers = ::http::HeaderMap::new();
        headers.insert("x-echo-auth", "Bearer tok".parse().unwrap());
        headers.insert("etag", "\"v1\"".parse().unwrap());
        c.scrub_headers(&mut headers);
        assert_eq!(headers["x-echo-auth"], "<redacted>");
        assert_eq!(headers["etag"], "\"v1\"");
    }

    #[tokio::test]
    async fn a_secret_that_cannot_be_read_fails_naming_it() {
        let err = configured("{type: bearer, token: {secrets_manager: missing}}")
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("Secrets Manager secret missing"),
            "{err}"
        );
    }
}
