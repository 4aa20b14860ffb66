//! Credential checks on the API routes: does a request satisfy the strategy
//! the config asks for, and if not, what 401 does it get.
//!
//! Secrets never appear in an answer: the reason says what was wrong
//! (missing, malformed, wrong, expired...), not what was expected.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use crate::MockAuth;
use crate::form;
use crate::oauth::{TokenStatus, TokenStore};

/// Realm named in every `WWW-Authenticate` challenge.
pub(crate) const REALM: &str = "mock-api";

/// The outcome of checking one API request.
pub(crate) enum Verdict {
    /// No auth configured: nothing to count.
    Open,
    Accepted,
    Refused(Refusal),
}

/// Why a request was refused. Each variant becomes the JSON `reason`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Refusal {
    Missing,
    /// Credentials of the right kind that cannot be read (bad base64...).
    Malformed,
    Wrong,
    /// An OAuth2 bearer token the mock did not issue, or no longer accepts.
    Token(TokenStatus),
}

impl Refusal {
    fn reason(self) -> &'static str {
        match self {
            Refusal::Missing => "missing credentials",
            Refusal::Malformed => "malformed credentials",
            Refusal::Wrong => "wrong credentials",
            Refusal::Token(TokenStatus::Expired) => "expired token",
            Refusal::Token(TokenStatus::Revoked) => "revoked token",
            Refusal::Token(TokenStatus::Unknown | TokenStatus::Valid) => "unknown token",
        }
    }
}

pub(crate) fn check(
    auth: &MockAuth,
    headers: &HeaderMap,
    uri: &Uri,
    tokens: &TokenStore,
) -> Verdict {
    let outcome = match auth {
        MockAuth::None => return Verdict::Open,
        MockAuth::ApiKeyHeader { header, key } => match headers.get(header.as_str()) {
            None => Err(Refusal::Missing),
            Some(value) => matches(value.as_bytes() == key.as_bytes()),
        },
        MockAuth::ApiKeyQuery { param, key } => {
            let pairs = form::pairs(uri.query().unwrap_or(""));
            let mut values = pairs.iter().filter(|(name, _)| name == param).peekable();
            if values.peek().is_none() {
                Err(Refusal::Missing)
            } else {
                matches(values.any(|(_, value)| value == key))
            }
        }
        MockAuth::Basic { username, password } => match basic_credentials(headers) {
            None => Err(Refusal::Missing),
            Some(None) => Err(Refusal::Malformed),
            Some(Some((user, pass))) => matches(user == *username && pass == *password),
        },
        MockAuth::Bearer { token } => match credentials(headers, "Bearer") {
            None => Err(Refusal::Missing),
            Some(given) => matches(given == token.as_str()),
        },
        MockAuth::OAuth2(_) => match credentials(headers, "Bearer") {
            None => Err(Refusal::Missing),
            Some(given) => match tokens.status(given) {
                TokenStatus::Valid => Ok(()),
                status => Err(Refusal::Token(status)),
            },
        },
    };
    match outcome {
        Ok(()) => Verdict::Accepted,
        Err(refusal) => Verdict::Refused(refusal),
    }
}

fn matches(ok: bool) -> Result<(), Refusal> {
    if ok { Ok(()) } else { Err(Refusal::Wrong) }
}

/// The 401: JSON body plus the challenge for the configured strategy.
pub(crate) fn refuse(auth: &MockAuth, refusal: Refusal) -> Response {
    let body = json!({ "ok": false, "error": "unauthorized", "reason": refusal.reason() });
    let mut response = (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    // A name from the config that cannot go in a header just loses its challenge.
    if let Ok(value) = HeaderValue::from_str(&challenge(auth, refusal)) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

fn challenge(auth: &MockAuth, refusal: Refusal) -> String {
    match auth {
        // There is no registered scheme for API keys; this one at least tells
        // a human (or a test) where the key was expected.
        MockAuth::ApiKeyHeader { header, .. } => {
            format!(r#"ApiKey realm="{REALM}", header="{header}""#)
        }
        MockAuth::ApiKeyQuery { param, .. } => {
            format!(r#"ApiKey realm="{REALM}", param="{param}""#)
        }
        MockAuth::Basic { .. } => format!(r#"Basic realm="{REALM}", charset="UTF-8""#),
        // RFC 6750 §3.1: no error code when no token was presented at all.
        MockAuth::Bearer { .. } | MockAuth::OAuth2(_) if refusal == Refusal::Missing => {
            format!(r#"Bearer realm="{REALM}""#)
        }
        MockAuth::Bearer { .. } | MockAuth::OAuth2(_) => format!(
            r#"Bearer realm="{REALM}", error="invalid_token", error_description="{}""#,
            refusal.reason()
        ),
        MockAuth::None => String::new(),
    }
}

/// The credentials after `Authorization: <scheme> `, if the request uses that
/// scheme (matched case-insensitively, RFC 9110 §11.1).
pub(crate) fn credentials<'a>(headers: &'a HeaderMap, scheme: &str) -> Option<&'a str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (given, rest) = value.trim().split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

/// `Authorization: Basic` as `(user, password)`: `None` without such a
/// header, `Some(None)` if it is not base64 of UTF-8 `user:password`.
pub(crate) fn basic_credentials(headers: &HeaderMap) -> Option<Option<(String, String)>> {
    let encoded = credentials(headers, "Basic")?;
    let decoded = STANDARD.decode(encoded).ok();
    let text = decoded.and_then(|bytes| String::from_utf8(bytes).ok());
    Some(text.and_then(|text| {
        let (user, password) = text.split_once(':')?;
        Some((user.to_owned(), password.to_owned()))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_authorization(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(value).expect("value"),
        );
        headers
    }

    #[test]
    fn scheme_is_case_insensitive_and_padding_tolerated() {
        let headers = with_authorization("bearer   tok ");
        assert_eq!(credentials(&headers, "Bearer"), Some("tok"));
        assert_eq!(credentials(&headers, "Basic"), None);
    }

    #[test]
    fn basic_splits_at_the_first_colon() {
        // base64("u:p:q")
        let headers = with_authorization("Basic dTpwOnE=");
        assert_eq!(
            basic_credentials(&headers),
            Some(Some(("u".to_owned(), "p:q".to_owned())))
        );
        assert_eq!(
            basic_credentials(&with_authorization("Basic !!")),
            Some(None)
        );
        assert_eq!(basic_credentials(&HeaderMap::new()), None);
    }

    #[test]
    fn debug_never_shows_secrets() {
        let auth = MockAuth::OAuth2(crate::OAuth2Config {
            client_id: "id".into(),
            client_secret: "s3cret".into(),
            username: Some("alice".into()),
            password: Some("pw-1".into()),
            ..Default::default()
        });
        let shown = format!(
            "{auth:?} {:?}",
            MockAuth::Bearer {
                token: "t0ken".into()
            }
        );
        for secret in ["s3cret", "pw-1", "t0ken"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("alice"));
    }
}
