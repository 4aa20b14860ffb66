//! Secrets: where a credential is kept ([`SecretRef`], what a config may hold) and the value
//! once read ([`Secret`], which never prints).
//!
//! A config names where a secret lives, never the secret itself: the config is stored in S3,
//! read by every worker and echoed in errors, so a literal value there would leak. A plain
//! string where a secret belongs is therefore a config error naming the field.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Where a secret lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum SecretRef {
    /// An AWS Secrets Manager secret (name or ARN); with `json_key`, the secret string is a JSON
    /// object and the value is that key's string.
    SecretsManager {
        secrets_manager: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        json_key: Option<String>,
    },
    /// A ciphertext made with the stack's KMS key (`aws kms encrypt`, base64 as printed).
    Kms { kms_ciphertext: String },
}

/// The YAML forms, before the checks of [`SecretRef`]'s `Deserialize`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawSecretRef {
    Ref(RefFields),
    /// Anything else: read past, never kept (it may be the secret itself).
    Literal(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefFields {
    secrets_manager: Option<String>,
    json_key: Option<String>,
    kms_ciphertext: Option<String>,
}

/// Why a value is not a secret reference. The message never repeats the value.
pub const NOT_A_REFERENCE: &str = "a secret must be a reference, never its value: \
    {secrets_manager: NAME_OR_ARN} (optionally with json_key: KEY) or {kms_ciphertext: BASE64}";

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let fields = match RawSecretRef::deserialize(d)? {
            RawSecretRef::Ref(f) => f,
            RawSecretRef::Literal(_) => return Err(D::Error::custom(NOT_A_REFERENCE)),
        };
        let nonempty = |v: Option<String>, key: &str| match v {
            Some(s) if s.trim().is_empty() => Err(D::Error::custom(format!("{key} is empty"))),
            other => Ok(other),
        };
        match (
            nonempty(fields.secrets_manager, "secrets_manager")?,
            nonempty(fields.json_key, "json_key")?,
            nonempty(fields.kms_ciphertext, "kms_ciphertext")?,
        ) {
            (Some(secrets_manager), json_key, None) => Ok(SecretRef::SecretsManager {
                secrets_manager,
                json_key,
            }),
            (None, None, Some(kms_ciphertext)) => Ok(SecretRef::Kms { kms_ciphertext }),
            _ => Err(D::Error::custom(NOT_A_REFERENCE)),
        }
    }
}

impl fmt::Display for SecretRef {
    /// Names the secret (never its value) for errors and logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::SecretsManager {
                secrets_manager,
                json_key: Some(k),
            } => write!(f, "Secrets Manager secret {secrets_manager} (key {k})"),
            SecretRef::SecretsManager {
                secrets_manager, ..
            } => write!(f, "Secrets Manager secret {secrets_manager}"),
            SecretRef::Kms { .. } => f.write_str("KMS ciphertext"),
        }
    }
}

/// A secret's value. `Debug` and `Display` are redacted, so it cannot reach a log or an error
/// by formatting; [`Secret::expose`] is the one way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<SecretRef, String> {
        serde_norway::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn references_parse() {
        assert_eq!(
            parse("{secrets_manager: prod/api, json_key: token}").unwrap(),
            SecretRef::SecretsManager {
                secrets_manager: "prod/api".into(),
                json_key: Some("token".into())
            }
        );
        assert_eq!(
            parse("{kms_ciphertext: AQICAHh}").unwrap(),
            SecretRef::Kms {
                kms_ciphertext: "AQICAHh".into()
            }
        );
    }

    #[test]
    fn a_literal_is_refused_without_repeating_it() {
        for yaml in ["sk-live-123456", "12345", "{value: sk-live-123456}"] {
            let err = parse(yaml).unwrap_err();
            assert!(err.contains("must be a reference"), "{yaml}: {err}");
            assert!(!err.contains("sk-live") && !err.contains("12345"), "{err}");
        }
    }

    #[test]
    fn mixed_or_empty_references_are_refused() {
        for yaml in [
            "{secrets_manager: a, kms_ciphertext: b}",
            "{json_key: k}",
            "{kms_ciphertext: b, json_key: k}",
            "{secrets_manager: ' '}",
            "{}",
        ] {
            assert!(parse(yaml).is_err(), "{yaml}");
        }
    }

    #[test]
    fn a_secret_never_prints() {
        let s = Secret::new("sk-live-123456");
        assert_eq!(format!("{s:?} {s}"), "Secret(<redacted>) <redacted>");
        assert_eq!(s.expose(), "sk-live-123456");
    }
}
