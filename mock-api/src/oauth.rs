//! The mock's OAuth2 authorization server: the token endpoint (RFC 6749
//! `client_credentials` and `password` grants), the store of issued tokens,
//! their revocation, and the clock their expiry is judged by.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::{Value, json};

use crate::auth::{self, REALM};
use crate::form;
use crate::http::{self, Shared};
use crate::ledger::TokenRequestSeen;
use crate::{MockAuth, OAuth2Config};

/// 43 alphanumerics from the thread CSPRNG ≈ 256 bits: a client cannot guess
/// a token, it has to ask the token endpoint.
const TOKEN_LEN: usize = 43;

/// Form parameters that carry credentials: used, never recorded in the stats.
const CREDENTIAL_PARAMS: [&str; 4] = ["client_id", "client_secret", "username", "password"];

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum TokenStatus {
    Valid,
    Unknown,
    Expired,
    Revoked,
}

struct Issued {
    /// On the token clock (see `TokenStore::now`).
    expires_at: Duration,
    revoked: bool,
}

struct Store {
    /// Every token ever issued. Never pruned: a test run issues a handful,
    /// and keeping them lets a refusal say "expired" or "revoked" rather than
    /// "unknown", which is what a failing test wants to read.
    tokens: HashMap<String, Issued>,
    /// How far tests have moved the token clock ahead of real time.
    skew: Duration,
}

/// Issued access tokens. Kept apart from the counters: `reset` zeroes those
/// but leaves clients' tokens valid.
pub(crate) struct TokenStore {
    started: Instant,
    store: Mutex<Store>,
}

impl Default for TokenStore {
    fn default() -> Self {
        TokenStore {
            started: Instant::now(),
            store: Mutex::new(Store {
                tokens: HashMap::new(),
                skew: Duration::ZERO,
            }),
        }
    }
}

impl TokenStore {
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().expect("mock-api token lock poisoned")
    }

    /// The token clock: real time since start plus the skew. A `Duration`
    /// rather than an `Instant` so that huge lifetimes or skews saturate
    /// instead of overflowing.
    fn now(&self, store: &Store) -> Duration {
        self.started.elapsed().saturating_add(store.skew)
    }

    pub(crate) fn issue(&self, lifetime: Duration) -> String {
        let token: String = rand::rng()
            .sample_iter(Alphanumeric)
            .take(TOKEN_LEN)
            .map(char::from)
            .collect();
        let mut store = self.lock();
        let expires_at = self.now(&store).saturating_add(lifetime);
        let issued = Issued {
            expires_at,
            revoked: false,
        };
        store.tokens.insert(token.clone(), issued);
        token
    }

    pub(crate) fn status(&self, token: &str) -> TokenStatus {
        let store = self.lock();
        match store.tokens.get(token) {
            None => TokenStatus::Unknown,
            Some(issued) if issued.revoked => TokenStatus::Revoked,
            // Valid up to, not including, `issued + lifetime`: a token with
            // lifetime 0 is born expired.
            Some(issued) if self.now(&store) >= issued.expires_at => TokenStatus::Expired,
            Some(_) => TokenStatus::Valid,
        }
    }

    /// Every token issued so far, for tests that look for them where they must not be.
    pub(crate) fn issued(&self) -> Vec<String> {
        self.lock().tokens.keys().cloned().collect()
    }

    /// Revokes every token issued so far; returns how many were not revoked yet.
    pub(crate) fn revoke_all(&self) -> u64 {
        let mut store = self.lock();
        let mut newly = 0;
        for issued in store.tokens.values_mut().filter(|issued| !issued.revoked) {
            issued.revoked = true;
            newly += 1;
        }
        newly
    }

    pub(crate) fn advance_clock(&self, by: Duration) {
        let mut store = self.lock();
        store.skew = store.skew.saturating_add(by);
    }
}

// ---------------------------------------------------------------- endpoints

/// `/oauth2/token` (RFC 6749 §4.3, §4.4, errors per §5.2).
pub(crate) async fn token(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let config = shared.config();
    let MockAuth::OAuth2(oauth) = &config.auth else {
        // Without OAuth2 this path is part of the API like any other.
        return http::api(State(shared), method, uri, headers, body).await;
    };
    shared.counters.count_token_request();
    if method != Method::POST {
        return no_store(method_not_allowed());
    }
    let granted = read_form(&headers, &body).and_then(|form| {
        shared.counters.record_token_form(seen(&form));
        grant(oauth, &headers, &form)?;
        Ok(form)
    });
    match granted {
        Ok(form) => {
            let lifetime = Duration::from_secs(oauth.token_lifetime_secs);
            let access_token = shared.tokens.issue(lifetime);
            shared.counters.count_token_issued();
            let mut body = json!({
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": oauth.token_lifetime_secs,
            });
            if let Some(scope) = form.get("scope") {
                body["scope"] = Value::from(scope.as_str());
            }
            no_store((StatusCode::OK, Json(body)).into_response())
        }
        Err(error) => error.into_response(),
    }
}

/// `/oauth2/revoke-all`: `MockApi::revoke_tokens` for the binary.
pub(crate) async fn revoke_all(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !matches!(shared.config().auth, MockAuth::OAuth2(_)) {
        return http::api(State(shared), method, uri, headers, body).await;
    }
    if method != Method::POST {
        return method_not_allowed();
    }
    let revoked = shared.tokens.revoke_all();
    Json(json!({ "revoked": revoked })).into_response()
}

fn method_not_allowed() -> Response {
    let mut response = StatusCode::METHOD_NOT_ALLOWED.into_response();
    let allow = HeaderValue::from_static("POST");
    response.headers_mut().insert(header::ALLOW, allow);
    response
}

/// Token answers must not be cached (RFC 6749 §5.1), errors included.
fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

// ---------------------------------------------------------------- the grant

type Form = BTreeMap<String, String>;

/// An RFC 6749 §5.2 error answer.
#[derive(Debug, PartialEq)]
struct OAuthError {
    status: StatusCode,
    code: &'static str,
    /// For humans reading a failed test; never contains a secret.
    description: String,
}

impl OAuthError {
    fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        let description = description.into();
        OAuthError {
            status,
            code,
            description,
        }
    }

    fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    fn invalid_client(description: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", description)
    }

    fn into_response(self) -> Response {
        let body = json!({ "error": self.code, "error_description": self.description });
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            // §5.2: a 401 names the client authentication scheme it accepts.
            let challenge = format!(r#"Basic realm="{REALM}""#);
            if let Ok(challenge) = HeaderValue::from_str(&challenge) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, challenge);
            }
        }
        no_store(response)
    }
}

/// The request's form, or `invalid_request` if it is not a well-formed form
/// (RFC 6749 §3.2: form-encoded, each parameter at most once, an empty value
/// counts as absent).
fn read_form(headers: &HeaderMap, body: &[u8]) -> Result<Form, OAuthError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(str::trim);
    if !content_type.is_some_and(|ct| ct.eq_ignore_ascii_case("application/x-www-form-urlencoded"))
    {
        return Err(OAuthError::invalid_request(
            "Content-Type must be application/x-www-form-urlencoded",
        ));
    }
    let body =
        std::str::from_utf8(body).map_err(|_| OAuthError::invalid_request("body is not UTF-8"))?;
    let mut form = Form::new();
    for (name, value) in form::pairs(body) {
        if value.is_empty() {
            continue;
        }
        if form.contains_key(&name) {
            return Err(OAuthError::invalid_request(format!(
                "parameter {name} repeated"
            )));
        }
        form.insert(name, value);
    }
    Ok(form)
}

/// What the stats keep of a token request: everything but the credentials.
fn seen(form: &Form) -> TokenRequestSeen {
    let extra = form
        .iter()
        .filter(|(name, _)| {
            !CREDENTIAL_PARAMS.contains(&name.as_str())
                && !["grant_type", "scope", "audience"].contains(&name.as_str())
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    TokenRequestSeen {
        grant_type: form.get("grant_type").cloned(),
        scope: form.get("scope").cloned(),
        audience: form.get("audience").cloned(),
        extra,
    }
}

/// Client authentication first (§3.2.1: confidential clients must
/// authenticate whatever the grant), then the grant itself.
fn grant(oauth: &OAuth2Config, headers: &HeaderMap, form: &Form) -> Result<(), OAuthError> {
    authenticate_client(oauth, headers, form)?;
    match form.get("grant_type").map(String::as_str) {
        None => Err(OAuthError::invalid_request("missing grant_type")),
        Some("client_credentials") => Ok(()),
        Some("password") => authenticate_owner(oauth, form),
        Some(_) => Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "supported: client_credentials, password",
        )),
    }
}

/// §2.3.1: HTTP Basic or `client_id`/`client_secret` in the form, not both.
fn authenticate_client(
    oauth: &OAuth2Config,
    headers: &HeaderMap,
    form: &Form,
) -> Result<(), OAuthError> {
    let form_secret = form.get("client_secret");
    let genuine = match (auth::basic_credentials(headers), form_secret) {
        (Some(_), Some(_)) => {
            return Err(OAuthError::invalid_request(
                "client authenticated both by Authorization header and by form",
            ));
        }
        (Some(None), None) => {
            return Err(OAuthError::invalid_client("malformed Basic credentials"));
        }
        // §2.3.1 has the client form-encode id and secret before base64;
        // many clients skip that, so the raw values are accepted too.
        (Some(Some((id, secret))), None) => {
            let same =
                |given: &str, expected: &str| given == expected || form::decode(given) == expected;
            same(&id, &oauth.client_id) && same(&secret, &oauth.client_secret)
        }
        (None, Some(secret)) => {
            let Some(id) = form.get("client_id") else {
                return Err(OAuthError::invalid_client(
                    "client_secret without client_id",
                ));
            };
            *id == oauth.client_id && *secret == oauth.client_secret
        }
        (None, None) => return Err(OAuthError::invalid_client("no client authentication")),
    };
    if genuine {
        Ok(())
    } else {
        Err(OAuthError::invalid_client("unknown client or wrong secret"))
    }
}

/// §4.3: the resource owner's username and password.
fn authenticate_owner(oauth: &OAuth2Config, form: &Form) -> Result<(), OAuthError> {
    let (Some(username), Some(password)) = (&oauth.username, &oauth.password) else {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "the password grant is not enabled",
        ));
    };
    let (Some(given_user), Some(given_password)) = (form.get("username"), form.get("password"))
    else {
        return Err(OAuthError::invalid_request(
            "the password grant needs username and password",
        ));
    };
    if given_user == username && given_password == password {
        Ok(())
    } else {
        Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "wrong resource owner credentials",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_follows_the_token_clock() {
        let store = TokenStore::default();
        let token = store.issue(Duration::from_secs(60));
        assert_eq!(store.status(&token), TokenStatus::Valid);
        store.advance_clock(Duration::from_secs(60));
        assert_eq!(store.status(&token), TokenStatus::Expired);
        assert_eq!(store.status("guess"), TokenStatus::Unknown);
        let born_expired = store.issue(Duration::ZERO);
        assert_eq!(store.status(&born_expired), TokenStatus::Expired);
    }

    #[test]
    fn huge_lifetimes_and_skews_saturate() {
        let store = TokenStore::default();
        let token = store.issue(Duration::MAX);
        store.advance_clock(Duration::MAX);
        store.advance_clock(Duration::MAX);
        // Both ends saturate at Duration::MAX, and equal means expired.
        assert_eq!(store.status(&token), TokenStatus::Expired);
    }

    #[test]
    fn revocation_counts_only_new_revocations() {
        let store = TokenStore::default();
        let (a, b) = (store.issue(Duration::MAX), store.issue(Duration::MAX));
        assert_ne!(a, b);
        assert_eq!(a.len(), TOKEN_LEN);
        assert_eq!(store.revoke_all(), 2);
        assert_eq!(store.revoke_all(), 0);
        assert_eq!(store.status(&a), TokenStatus::Revoked);
        let c = store.issue(Duration::MAX);
        assert_eq!(store.status(&c), TokenStatus::Valid);
    }

    #[test]
    fn form_rules() {
        let mut headers = HeaderMap::new();
        let wrong_type = read_form(&headers, b"a=1");
        assert_eq!(wrong_type.unwrap_err().code, "invalid_request");
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=UTF-8"),
        );
        let form = read_form(&headers, b"a=1&empty=&b=x+y").expect("form");
        assert_eq!(form.len(), 2);
        assert_eq!(form["b"], "x y");
        let repeated = read_form(&headers, b"a=1&a=2");
        assert_eq!(repeated.unwrap_err().code, "invalid_request");
    }

    #[test]
    fn seen_drops_credentials() {
        let form: Form = [
            ("grant_type", "password"),
            ("client_secret", "s"),
            ("password", "p"),
            ("username", "u"),
            ("client_id", "c"),
            ("scope", "read"),
            ("resource", "https://x"),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
        let seen = seen(&form);
        assert_eq!(seen.grant_type.as_deref(), Some("password"));
        assert_eq!(seen.scope.as_deref(), Some("read"));
        assert_eq!(seen.audience, None);
        assert_eq!(seen.extra.len(), 1);
        assert_eq!(seen.extra["resource"], "https://x");
    }
}
