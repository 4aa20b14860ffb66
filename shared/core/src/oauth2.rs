//! OAuth2 (RFC 6749) as a pipeline's `client.auth`: the config, the token request it makes, the
//! token answer it reads and when that token must be refreshed. Pure: the client sends the
//! request and keeps the token; the fleet's shared copy lives behind
//! [`SharedTokenStore`](crate::ports::SharedTokenStore).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::secret::{Secret, SecretRef};

/// The grant the client uses to get a token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    /// §4.4: the client acts for itself.
    #[default]
    ClientCredentials,
    /// §4.3: the resource owner's username and password (legacy APIs that still require it).
    Password,
}

/// How the client authenticates to the token endpoint (§2.3.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// `Authorization: Basic base64(client_id:client_secret)`, which servers must support.
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Body,
}

/// `client.auth` with `type: oauth2`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Config {
    pub token_url: String,
    #[serde(default)]
    pub grant: Grant,
    pub client_id: String,
    pub client_secret: SecretRef,
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// The resource owner, for `grant: password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The resource owner's password, for `grant: password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretRef>,
    /// Sent space-separated as `scope`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Sent as `audience` (Auth0, Okta and others scope tokens to one API by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// More form parameters some servers need (e.g. `resource`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_params: BTreeMap<String, String>,
    /// A token is replaced this long before it expires (at most 10% of its lifetime before),
    /// so that no request carries a token that expires on its way.
    #[serde(default = "default_refresh_margin_secs")]
    pub refresh_margin_secs: u64,
}

fn default_refresh_margin_secs() -> u64 {
    60
}

/// Form parameters the config builds itself; `extra_params` may not set them.
const RESERVED: [&str; 8] = [
    "grant_type",
    "client_id",
    "client_secret",
    "username",
    "password",
    "scope",
    "audience",
    "refresh_token",
];

impl OAuth2Config {
    /// The secrets the grant needs.
    pub fn secrets(&self) -> Vec<&SecretRef> {
        let mut out = vec![&self.client_secret];
        out.extend(self.password.as_ref());
        out
    }

    /// Problems serde cannot see, as (field under `client.auth`, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        match url::Url::parse(&self.token_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {
                if !u.username().is_empty() || u.password().is_some() {
                    out.push(("token_url", "must not hold credentials".to_string()));
                }
            }
            _ => out.push(("token_url", "must be an absolute http(s) URL".to_string())),
        }
        if self.client_id.is_empty() || self.client_id.contains(':') {
            out.push(("client_id", "must be non-empty and hold no ':'".to_string()));
        }
        match self.grant {
            Grant::Password => {
                if self.username.as_deref().is_none_or(str::is_empty) {
                    out.push(("username", "the password grant needs a username".into()));
                }
                if self.password.is_none() {
                    out.push(("password", "the password grant needs a password".into()));
                }
            }
            Grant::ClientCredentials => {
                if self.username.is_some() || self.password.is_some() {
                    out.push((
                        "username",
                        "username and password belong to `grant: password` only".into(),
                    ));
                }
            }
        }
        for s in &self.scopes {
            if s.is_empty() || s.contains(' ') {
                out.push(("scopes", format!("{s:?} is not a single scope")));
            }
        }
        for name in self.extra_params.keys() {
            if RESERVED.contains(&name.as_str()) {
                out.push((
                    "extra_params",
                    format!("{name:?} is set by the grant; use the config's own key"),
                ));
            } else if crate::auth::is_credential_header(name) {
                out.push((
                    "extra_params",
                    format!("{name:?} looks like a credential, which must not be written here"),
                ));
            }
        }
        out
    }

    /// The token request's form, in a fixed order, with the secrets in place. The second value
    /// is the `(client_id, client_secret)` pair for a Basic header, when `client_auth: basic`.
    pub fn token_form(
        &self,
        client_secret: &Secret,
        password: Option<&Secret>,
    ) -> (TokenForm, Option<(String, Secret)>) {
        let mut form = Vec::new();
        let grant = match self.grant {
            Grant::ClientCredentials => "client_credentials",
            Grant::Password => "password",
        };
        form.push(("grant_type".to_string(), grant.to_string()));
        if self.grant == Grant::Password {
            let user = self.username.clone().unwrap_or_default();
            form.push(("username".to_string(), user));
            let password = password.map(|p| p.expose().to_string()).unwrap_or_default();
            form.push(("password".to_string(), password));
        }
        if !self.scopes.is_empty() {
            form.push(("scope".to_string(), self.scopes.join(" ")));
        }
        if let Some(a) = &self.audience {
            form.push(("audience".to_string(), a.clone()));
        }
        for (k, v) in &self.extra_params {
            form.push((k.clone(), v.clone()));
        }
        let basic = match self.client_auth {
            ClientAuth::Basic => Some((self.client_id.clone(), client_secret.clone())),
            ClientAuth::Body => {
                form.push(("client_id".to_string(), self.client_id.clone()));
                form.push((
                    "client_secret".to_string(),
                    client_secret.expose().to_string(),
                ));
                None
            }
        };
        (TokenForm(form), basic)
    }

    /// Names the token this config obtains, for the fleet's shared copy: every container with
    /// the same endpoint, client, grant, user, scopes and audience shares one token. A digest, so
    /// the key says nothing about the client; the secrets are not part of it (they are
    /// references, and a rotated secret still names the same client).
    pub fn token_key(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            self.token_url.as_str(),
            &self.client_id,
            match self.grant {
                Grant::ClientCredentials => "cc",
                Grant::Password => "pw",
            },
            self.username.as_deref().unwrap_or(""),
            &self.scopes.join(" "),
            self.audience.as_deref().unwrap_or(""),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        for (k, v) in &self.extra_params {
            h.update(k.as_bytes());
            h.update([b'=']);
            h.update(v.as_bytes());
            h.update([0]);
        }
        let digest = h.finalize();
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The form of a token request. `Debug` names the parameters only: values include secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenForm(pub Vec<(String, String)>);

impl fmt::Debug for TokenForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, _)| k))
            .finish()
    }
}

/// A token and its lifetime, wall clock in ms since the epoch (containers compare them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedToken {
    pub token: Secret,
    pub issued_at_ms: u64,
    pub expires_at_ms: u64,
}

/// The lifetime assumed when a token answer has no `expires_in` (it is only RECOMMENDED): a
/// 401 refreshes a token that ends sooner.
pub const DEFAULT_LIFETIME_SECS: u64 = 3600;

impl IssuedToken {
    /// When to replace the token: `margin_secs` before it expires, but not before 90% of its
    /// lifetime (a 60 s margin on a 60 s token would refresh it at once, forever).
    pub fn refresh_at_ms(&self, margin_secs: u64) -> u64 {
        let lifetime = self.expires_at_ms.saturating_sub(self.issued_at_ms);
        let margin = margin_secs.saturating_mul(1000).min(lifetime / 10);
        self.expires_at_ms - margin
    }

    /// A successful token answer (§5.1), read at `now_ms`. Errors never hold the body, which
    /// holds the token.
    pub fn from_answer(body: &[u8], now_ms: u64) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Answer {
            access_token: String,
            #[serde(default)]
            token_type: Option<String>,
            #[serde(default)]
            expires_in: Option<serde_json::Value>,
        }
        let answer: Answer = serde_json::from_slice(body)
            .map_err(|_| "the token answer is not JSON with an access_token".to_string())?;
        if answer.access_token.is_empty() {
            return Err("the token answer's access_token is empty".into());
        }
        if let Some(t) = &answer.token_type
            && !t.eq_ignore_ascii_case("bearer")
        {
            return Err(format!("token_type {t:?} is not supported (only Bearer)"));
        }
        // Some servers send expires_in as a string.
        let lifetime = match &answer.expires_in {
            None | Some(serde_json::Value::Null) => DEFAULT_LIFETIME_SECS,
            Some(serde_json::Value::Number(n)) => {
                n.as_u64().ok_or("expires_in is not a whole number")?
            }
            Some(serde_json::Value::String(s)) => {
                s.parse().map_err(|_| "expires_in is not a whole number")?
            }
            Some(_) => return Err("expires_in is not a whole number".into()),
        };
        Ok(Self {
            token: Secret::new(answer.access_token),
            issued_at_ms: now_ms,
            expires_at_ms: now_ms.saturating_add(lifetime.saturating_mul(1000)),
        })
    }
}

/// What an error answer of the token endpoint says (§5.2), for logs and errors: the `error`
/// code only, which is one of a fixed set of words and holds no secret.
pub fn error_code(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let code = v.get("error")?.as_str()?;
    code.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
        .then(|| code.chars().take(64).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> OAuth2Config {
        serde_norway::from_str(yaml).unwrap()
    }

    const CC: &str = "{token_url: 'https://auth.test/token', client_id: app, \
        client_secret: {secrets_manager: s}, scopes: [read, write], audience: api}";

    #[test]
    fn client_credentials_by_basic_header() {
        let c = config(CC);
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        let (form, basic) = c.token_form(&Secret::new("shh"), None);
        assert_eq!(
            form.0,
            vec![
                ("grant_type".into(), "client_credentials".into()),
                ("scope".into(), "read write".into()),
                ("audience".into(), "api".into()),
            ]
        );
        let (id, secret) = basic.unwrap();
        assert_eq!((id.as_str(), secret.expose()), ("app", "shh"));
        assert_eq!(
            format!("{form:?}"),
            r#"["grant_type", "scope", "audience"]"#
        );
    }

    #[test]
    fn password_grant_in_the_body() {
        let c = config(
            "{token_url: 'http://a/t', grant: password, client_id: app, client_auth: body, \
             client_secret: {secrets_manager: s}, username: u, password: {kms_ciphertext: AQ}, \
             extra_params: {resource: r}}",
        );
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert_eq!(c.secrets().len(), 2);
        let (form, basic) = c.token_form(&Secret::new("cs"), Some(&Secret::new("pw")));
        assert!(basic.is_none());
        let keys: Vec<_> = form.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            keys,
            [
                "grant_type=password",
                "username=u",
                "password=pw",
                "resource=r",
                "client_id=app",
                "client_secret=cs"
            ]
        );
    }

    #[test]
    fn problems_name_their_field() {
        let fields = |yaml: &str| -> Vec<&'static str> {
            config(yaml)
                .problems()
                .into_iter()
                .map(|(f, _)| f)
                .collect()
        };
        assert_eq!(
            fields("{token_url: 'ftp://x', client_id: a, client_secret: {secrets_manager: s}}"),
            ["token_url"]
        );
        assert_eq!(
            fields(
                "{token_url: 'http://x', grant: password, client_id: a, \
                 client_secret: {secrets_manager: s}}"
            ),
            ["username", "password"]
        );
        assert_eq!(
            fields(
                "{token_url: 'http://x', client_id: a, client_secret: {secrets_manager: s}, \
                 extra_params: {grant_type: x, client_secret: y, tenant: t}}"
            ),
            ["extra_params", "extra_params"]
        );
        let literal: Result<OAuth2Config, _> =
            serde_norway::from_str("{token_url: 'http://x', client_id: a, client_secret: hunter2}");
        let err = literal.unwrap_err().to_string();
        assert!(
            err.contains("must be a reference") && !err.contains("hunter2"),
            "{err}"
        );
    }

    #[test]
    fn the_key_depends_on_what_names_the_token() {
        let a = config(CC);
        let mut b = a.clone();
        b.client_secret = SecretRef::Kms {
            kms_ciphertext: "AQ".into(),
        };
        assert_eq!(a.token_key(), b.token_key());
        b.scopes.pop();
        assert_ne!(a.token_key(), b.token_key());
        assert_eq!(a.token_key().len(), 32);
    }

    #[test]
    fn answers_and_refresh_times() {
        let t = IssuedToken::from_answer(
            br#"{"access_token":"abc","token_type":"bearer","expires_in":600}"#,
            1_000,
        )
        .unwrap();
        assert_eq!(t.expires_at_ms, 601_000);
        // A 60 s margin on a 600 s token.
        assert_eq!(t.refresh_at_ms(60), 541_000);
        // A 1 s margin on a 60 s token; a margin as long as the lifetime is cut to 10% of it.
        let short = IssuedToken::from_answer(br#"{"access_token":"x","expires_in":"60"}"#, 0);
        assert_eq!(short.as_ref().unwrap().refresh_at_ms(1), 59_000);
        assert_eq!(short.unwrap().refresh_at_ms(60), 54_000);
        let no_expiry = IssuedToken::from_answer(br#"{"access_token":"x"}"#, 0).unwrap();
        assert_eq!(no_expiry.expires_at_ms, DEFAULT_LIFETIME_SECS * 1000);
        for bad in [
            &br#"{"access_token":"secret-x","token_type":"mac"}"#[..],
            br#"{"access_token":""}"#,
            br#"<html>secret-x</html>"#,
            br#"{"access_token":"secret-x","expires_in":-5}"#,
        ] {
            let err = IssuedToken::from_answer(bad, 0).unwrap_err();
            assert!(!err.contains("secret-x"), "{err}");
        }
        assert_eq!(
            error_code(br#"{"error":"invalid_client","error_description":"bad s3cret"}"#),
            Some("invalid_client".into())
        );
        assert_eq!(error_code(br#"{"error":"s3cret value!"}"#), None);
    }
}
