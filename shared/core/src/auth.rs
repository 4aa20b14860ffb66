//! How a pipeline authenticates to its API (`client.auth` in the config).
//!
//! Every credential is a [`SecretRef`]: the config names where the secret lives (Secrets
//! Manager, or a ciphertext of the stack's KMS key) and the worker reads it. A config with a
//! literal secret fails to parse, naming the field.

use serde::{Deserialize, Serialize};

use crate::oauth2::OAuth2Config;
use crate::secret::SecretRef;

/// The pipeline's auth strategy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// No credential (the default).
    #[default]
    None,
    /// A key in a header (`header: X-Api-Key`) or a query parameter (`query_param: api_key`):
    /// exactly one of the two.
    ApiKey {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        header: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        query_param: Option<String>,
        key: SecretRef,
    },
    /// HTTP Basic: `Authorization: Basic base64(username:password)`.
    Basic {
        username: String,
        password: SecretRef,
    },
    /// A static bearer token: `Authorization: Bearer <token>`.
    Bearer { token: SecretRef },
    /// OAuth2 tokens from a token endpoint, sent as bearer tokens and refreshed before they
    /// expire; one token shared by the whole fleet.
    #[serde(rename = "oauth2")]
    OAuth2(OAuth2Config),
}

impl AuthConfig {
    /// The secrets the strategy needs.
    pub fn secrets(&self) -> Vec<&SecretRef> {
        match self {
            AuthConfig::None => Vec::new(),
            AuthConfig::ApiKey { key, .. } => vec![key],
            AuthConfig::Basic { password, .. } => vec![password],
            AuthConfig::Bearer { token } => vec![token],
            AuthConfig::OAuth2(o) => o.secrets(),
        }
    }

    /// Problems serde cannot see, as (field under `client.auth`, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        match self {
            AuthConfig::ApiKey {
                header,
                query_param,
                ..
            } => match (header, query_param) {
                (Some(h), None) => {
                    if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                        out.push(("header", format!("{h:?} is not a valid header name")));
                    }
                }
                (None, Some(q)) => {
                    if q.is_empty() || q.contains(['&', '=', '#', ' ']) {
                        out.push((
                            "query_param",
                            format!("{q:?} is not a plain parameter name"),
                        ));
                    }
                }
                _ => out.push((
                    "header",
                    "an api_key goes in exactly one of `header` and `query_param`".into(),
                )),
            },
            AuthConfig::Basic { username, .. } => {
                if username.is_empty() || username.contains(':') {
                    out.push(("username", "must be non-empty and hold no ':'".into()));
                }
            }
            AuthConfig::OAuth2(o) => out = o.problems(),
            AuthConfig::None | AuthConfig::Bearer { .. } => {}
        }
        out
    }
}

/// Request header names that carry credentials: a literal value there would be a secret in
/// plain text in the config (S3, the manifests, the repo), so they are refused in
/// `request.headers` and `client.auth` is the place for them.
pub fn is_credential_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "authorization" | "proxy-authorization" | "cookie"
    ) || [
        "api-key", "apikey", "api_key", "token", "secret", "password",
    ]
    .iter()
    .any(|w| n.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<AuthConfig, String> {
        serde_norway::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn each_strategy_parses() {
        assert_eq!(parse("{type: none}").unwrap(), AuthConfig::None);
        assert!(matches!(
            parse("{type: api_key, header: X-Api-Key, key: {secrets_manager: k}}").unwrap(),
            AuthConfig::ApiKey {
                header: Some(_),
                query_param: None,
                ..
            }
        ));
        assert!(matches!(
            parse("{type: basic, username: u, password: {kms_ciphertext: AQ}}").unwrap(),
            AuthConfig::Basic { .. }
        ));
        assert!(matches!(
            parse("{type: bearer, token: {secrets_manager: t, json_key: k}}").unwrap(),
            AuthConfig::Bearer { .. }
        ));
    }

    #[test]
    fn literal_secrets_and_unknown_keys_are_refused() {
        let err = parse("{type: bearer, token: tok-123-secret}").unwrap_err();
        assert!(err.contains("must be a reference"), "{err}");
        assert!(!err.contains("tok-123"), "{err}");
        assert!(parse("{type: bearer, token: {secrets_manager: t}, extra: 1}").is_err());
        assert!(parse("{type: oauth3}").is_err());
        let oauth = parse(
            "{type: oauth2, token_url: 'https://a/t', client_id: c, \
             client_secret: {secrets_manager: s}}",
        );
        assert!(matches!(oauth, Ok(AuthConfig::OAuth2(_))), "{oauth:?}");
        assert!(
            parse("{type: oauth2, token_url: 'https://a/t', client_id: c, client_secret: x1}")
                .unwrap_err()
                .contains("must be a reference")
        );
    }

    #[test]
    fn api_key_placement_is_exactly_one() {
        let both =
            parse("{type: api_key, header: X-Key, query_param: key, key: {secrets_manager: k}}")
                .unwrap();
        assert_eq!(both.problems().len(), 1);
        let neither = parse("{type: api_key, key: {secrets_manager: k}}").unwrap();
        assert_eq!(neither.problems().len(), 1);
        let bad = parse("{type: api_key, header: 'Bad Header', key: {secrets_manager: k}}");
        assert_eq!(bad.unwrap().problems()[0].0, "header");
    }

    #[test]
    fn credential_headers_are_recognised() {
        for h in [
            "Authorization",
            "X-Api-Key",
            "x-auth-token",
            "Cookie",
            "client_secret",
        ] {
            assert!(is_credential_header(h), "{h}");
        }
        for h in ["X-Source", "Content-Type", "Idempotency-Key", "Accept"] {
            assert!(!is_credential_header(h), "{h}");
        }
    }
}
