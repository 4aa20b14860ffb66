//! [`SecretSource`] on AWS Secrets Manager and KMS, with a cache; and the operator's side of it
//! ([`put_secret`], [`encrypt`]), which `fanout secret` runs.
//!
//! - `{secrets_manager: NAME_OR_ARN}`: GetSecretValue; the value is the secret string. With
//!   `json_key: KEY`, the secret string is a JSON object and the value is that key's string.
//!   Binary secrets (SecretBinary) are not supported.
//! - `{kms_ciphertext: BASE64}`: KMS Decrypt of the decoded ciphertext (the key is implied by
//!   the ciphertext); the plaintext must be UTF-8.
//!
//! What a read fetched (a secret's string, a ciphertext's plaintext) is kept for the source's
//! TTL, so a container calls each service once per secret per TTL however many manifests (and
//! however many `json_key`s of one secret) ask for it. Concurrent first reads of one secret make
//! one call: the others wait for it. Failures are not kept: the next read tries again.
//!
//! Errors name the reference (the secret's name or ARN, the key; for a ciphertext only that it
//! is one) and never a value.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
// The smithy types, the same in every SDK crate.
use aws_sdk_secretsmanager::error::{DisplayErrorContext, SdkError};

use fanout_core::ports::SecretSource;
use fanout_core::secret::{Secret, SecretRef};

/// An SDK error as text, with its chain but never the raw HTTP response. The SDK's own
/// `DisplayErrorContext` of an error prints the response, body included, and a response to
/// GetSecretValue or Decrypt that could not be parsed (an "unhandled" service error) holds the
/// value.
pub(crate) fn sdk_error<E, R>(e: SdkError<E, R>) -> String
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match e {
        SdkError::ServiceError(se) => DisplayErrorContext(se.into_err()).to_string(),
        SdkError::ResponseError(_) => "the response could not be parsed".to_string(),
        other => DisplayErrorContext(other).to_string(),
    }
}

/// What one cache slot holds: a fetched value and when it was fetched.
type Slot = Arc<tokio::sync::Mutex<Option<(Instant, Secret)>>>;

/// What is fetched, hence cached: a whole secret (every `json_key` of it reads the one string),
/// or a ciphertext.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
enum Fetch {
    SecretsManager(String),
    Kms(String),
}

/// Secrets from Secrets Manager and KMS, each kept for a TTL.
pub struct AwsSecretSource {
    secrets_manager: aws_sdk_secretsmanager::Client,
    kms: aws_sdk_kms::Client,
    ttl: Duration,
    slots: Mutex<HashMap<Fetch, Slot>>,
    fetches: AtomicU64,
}

impl std::fmt::Debug for AwsSecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsSecretSource")
            .field("ttl", &self.ttl)
            .field("fetches", &self.fetches())
            .finish_non_exhaustive()
    }
}

impl AwsSecretSource {
    /// A source whose values are kept for `ttl` after each fetch (`Duration::ZERO`: every read
    /// calls the service).
    pub fn new(
        secrets_manager: aws_sdk_secretsmanager::Client,
        kms: aws_sdk_kms::Client,
        ttl: Duration,
    ) -> Self {
        Self {
            secrets_manager,
            kms,
            ttl,
            slots: Mutex::default(),
            fetches: AtomicU64::new(0),
        }
    }

    /// Calls made to Secrets Manager and KMS so far, successful or not.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The fetched value for `fetch`, from the cache while fresh.
    async fn cached(&self, fetch: Fetch, reference: &SecretRef) -> anyhow::Result<Secret> {
        let slot = self
            .slots
            .lock()
            .expect("secret cache lock")
            .entry(fetch.clone())
            .or_default()
            .clone();
        // Held across the call: a concurrent read of the same secret waits, then finds it.
        let mut slot = slot.lock().await;
        if let Some((_, value)) = slot.as_ref().filter(|(at, _)| at.elapsed() < self.ttl) {
            return Ok(value.clone());
        }
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let value = match &fetch {
            Fetch::SecretsManager(id) => self.get_secret_value(id, reference).await?,
            Fetch::Kms(ciphertext) => self.decrypt(ciphertext, reference).await?,
        };
        *slot = Some((Instant::now(), value.clone()));
        Ok(value)
    }

    async fn get_secret_value(&self, id: &str, reference: &SecretRef) -> anyhow::Result<Secret> {
        let out = self
            .secrets_manager
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| {
                if e.as_service_error()
                    .is_some_and(|se| se.is_resource_not_found_exception())
                {
                    anyhow::anyhow!(
                        "{reference}: no such secret (GetSecretValue: {})",
                        sdk_error(e)
                    )
                } else {
                    anyhow::anyhow!("{reference}: GetSecretValue: {}", sdk_error(e))
                }
            })?;
        match (out.secret_string(), out.secret_binary()) {
            (Some(s), _) => Ok(Secret::new(s)),
            (None, Some(_)) => anyhow::bail!(
                "{reference}: the secret holds a binary value (SecretBinary), which is not \
                 supported: store it as a string (`fanout secret put`)"
            ),
            (None, None) => anyhow::bail!("{reference}: the secret has no value"),
        }
    }

    async fn decrypt(&self, ciphertext: &str, reference: &SecretRef) -> anyhow::Result<Secret> {
        let blob = BASE64
            .decode(ciphertext.trim())
            .map_err(|e| anyhow::anyhow!("{reference}: not valid base64: {e}"))?;
        let out = self
            .kms
            .decrypt()
            .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(blob))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{reference}: KMS Decrypt: {}", sdk_error(e)))?;
        let plaintext = out
            .plaintext()
            .ok_or_else(|| anyhow::anyhow!("{reference}: KMS Decrypt returned no plaintext"))?;
        let text = std::str::from_utf8(plaintext.as_ref())
            .map_err(|_| anyhow::anyhow!("{reference}: the plaintext is not UTF-8 text"))?;
        Ok(Secret::new(text))
    }
}

/// `json_key`'s string in the JSON object `secret`. Errors name the reference and the key and
/// what kind of JSON was found, never a value.
fn json_field(secret: &Secret, key: &str, reference: &SecretRef) -> anyhow::Result<Secret> {
    // A parse error is not quoted: serde_json's messages can repeat part of the input.
    let Ok(serde_json::Value::Object(mut object)) =
        serde_json::from_str::<serde_json::Value>(secret.expose())
    else {
        anyhow::bail!(
            "{reference}: json_key is given but the secret string is not a JSON object \
             (without json_key the whole string is the value)"
        );
    };
    match object.remove(key) {
        Some(serde_json::Value::String(s)) => Ok(Secret::new(s)),
        Some(other) => anyhow::bail!(
            "{reference}: the value of {key:?} is {}, not a string",
            json_kind(&other)
        ),
        None => {
            let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
            keys.sort_unstable();
            anyhow::bail!(
                "{reference}: the secret's JSON object has no key {key:?} (its keys: {})",
                if keys.is_empty() {
                    "none".to_string()
                } else {
                    keys.join(", ")
                }
            )
        }
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[async_trait]
impl SecretSource for AwsSecretSource {
    async fn secret(&self, reference: &SecretRef) -> anyhow::Result<Secret> {
        match reference {
            SecretRef::SecretsManager {
                secrets_manager,
                json_key,
            } => {
                let whole = self
                    .cached(Fetch::SecretsManager(secrets_manager.clone()), reference)
                    .await?;
                match json_key {
                    Some(key) => json_field(&whole, key, reference),
                    None => Ok(whole),
                }
            }
            SecretRef::Kms { kms_ciphertext } => {
                self.cached(Fetch::Kms(kms_ciphertext.trim().to_string()), reference)
                    .await
            }
        }
    }
}

/// What [`put_secret`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutSecret {
    /// The secret's ARN.
    pub arn: String,
    /// True when the secret was created, false when an existing one got a new value.
    pub created: bool,
}

/// Stores `value` as secret `name`'s string: CreateSecret, or, if the secret exists, a new
/// current version of it (with `description`/`kms_key_id`, UpdateSecret also sets those; else
/// PutSecretValue). Errors name the secret, never the value.
pub async fn put_secret(
    client: &aws_sdk_secretsmanager::Client,
    name: &str,
    value: &Secret,
    description: Option<&str>,
    kms_key_id: Option<&str>,
) -> anyhow::Result<PutSecret> {
    let created = client
        .create_secret()
        .name(name)
        .secret_string(value.expose())
        .set_description(description.map(str::to_string))
        .set_kms_key_id(kms_key_id.map(str::to_string))
        .send()
        .await;
    let err = match created {
        Ok(out) => {
            return Ok(PutSecret {
                arn: out.arn().unwrap_or_default().to_string(),
                created: true,
            });
        }
        Err(e) => e,
    };
    if !err
        .as_service_error()
        .is_some_and(|se| se.is_resource_exists_exception())
    {
        anyhow::bail!(
            "Secrets Manager secret {name}: CreateSecret: {}",
            sdk_error(err)
        );
    }
    let arn = if description.is_some() || kms_key_id.is_some() {
        client
            .update_secret()
            .secret_id(name)
            .secret_string(value.expose())
            .set_description(description.map(str::to_string))
            .set_kms_key_id(kms_key_id.map(str::to_string))
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "Secrets Manager secret {name}: UpdateSecret: {}",
                    sdk_error(e)
                )
            })?
            .arn
    } else {
        client
            .put_secret_value()
            .secret_id(name)
            .secret_string(value.expose())
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "Secrets Manager secret {name}: PutSecretValue: {}",
                    sdk_error(e)
                )
            })?
            .arn
    };
    Ok(PutSecret {
        arn: arn.unwrap_or_default(),
        created: false,
    })
}

/// `value` encrypted with KMS key `key_id` (id, ARN or alias), base64 as a config's
/// `kms_ciphertext` takes it. Errors name the key, never the value.
pub async fn encrypt(
    client: &aws_sdk_kms::Client,
    key_id: &str,
    value: &Secret,
) -> anyhow::Result<String> {
    let out = client
        .encrypt()
        .key_id(key_id)
        .plaintext(aws_sdk_kms::primitives::Blob::new(
            value.expose().as_bytes(),
        ))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("KMS key {key_id}: Encrypt: {}", sdk_error(e)))?;
    let blob = out
        .ciphertext_blob()
        .ok_or_else(|| anyhow::anyhow!("KMS key {key_id}: Encrypt returned no ciphertext"))?;
    Ok(BASE64.encode(blob.as_ref()))
}

#[cfg(test)]
mod tests {
    //! The source on SDK clients whose HTTP layer is a fake (a closure): the cache, and what
    //! each answer becomes. The services themselves: tests/e2e/secret_source.rs.
    use super::*;
    use aws_smithy_http_client::test_util::infallible_client_fn;

    const VALUE: &str = "sk-live-9c2e-DO-NOT-PRINT";

    /// A source on a fake Secrets Manager answering `answer(secret_id)` (status, JSON body) and a
    /// fake KMS answering every Decrypt with `kms` (status, JSON body).
    fn source(
        answer: impl Fn(&str) -> (u16, String) + Send + Sync + 'static,
        kms: (u16, String),
        ttl: Duration,
    ) -> AwsSecretSource {
        let sm_http = infallible_client_fn(move |req| {
            let body: serde_json::Value =
                serde_json::from_slice(req.body().bytes().unwrap()).unwrap();
            let (status, body) = answer(body["SecretId"].as_str().unwrap());
            http::Response::builder()
                .status(status)
                .body(body.into_bytes())
                .unwrap()
        });
        let kms_http = infallible_client_fn(move |_| {
            http::Response::builder()
                .status(kms.0)
                .body(kms.1.clone().into_bytes())
                .unwrap()
        });
        let sm = aws_sdk_secretsmanager::Config::builder()
            .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
            .region(aws_sdk_secretsmanager::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_secretsmanager::config::Credentials::for_tests())
            .http_client(sm_http)
            .build();
        let kms = aws_sdk_kms::Config::builder()
            .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
            .region(aws_sdk_kms::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_kms::config::Credentials::for_tests())
            .http_client(kms_http)
            .build();
        AwsSecretSource::new(
            aws_sdk_secretsmanager::Client::from_conf(sm),
            aws_sdk_kms::Client::from_conf(kms),
            ttl,
        )
    }

    fn string_secret(s: &str) -> (u16, String) {
        (
            200,
            serde_json::json!({"ARN": "arn:x", "Name": "n", "SecretString": s}).to_string(),
        )
    }

    fn sm(name: &str, key: Option<&str>) -> SecretRef {
        SecretRef::SecretsManager {
            secrets_manager: name.into(),
            json_key: key.map(str::to_string),
        }
    }

    fn no_kms() -> (u16, String) {
        (500, String::new())
    }

    #[tokio::test]
    async fn one_fetch_per_secret_per_ttl_whatever_the_key_or_concurrency() {
        let json = serde_json::json!({"user": "u", "token": VALUE}).to_string();
        let src = source(
            move |_| string_secret(&json),
            no_kms(),
            Duration::from_secs(60),
        );
        let refs = [sm("api", Some("token")), sm("api", Some("user"))];
        let reads = (0..16).map(|i| src.secret(&refs[i % 2]));
        let values = futures::future::join_all(reads).await;
        for (i, v) in values.into_iter().enumerate() {
            let expected = if i % 2 == 0 { VALUE } else { "u" };
            assert_eq!(v.unwrap().expose(), expected);
        }
        assert_eq!(src.fetches(), 1);
        // Another secret is another fetch; a zero TTL fetches on every read.
        src.secret(&sm("other", Some("user"))).await.unwrap();
        assert_eq!(src.fetches(), 2);
        let json = serde_json::json!({"token": VALUE}).to_string();
        let uncached = source(move |_| string_secret(&json), no_kms(), Duration::ZERO);
        for _ in 0..3 {
            uncached.secret(&sm("api", Some("token"))).await.unwrap();
        }
        assert_eq!(uncached.fetches(), 3);
    }

    #[tokio::test]
    async fn failures_are_not_cached() {
        let calls = Arc::new(AtomicU64::new(0));
        let seen = calls.clone();
        let src = source(
            move |_| {
                if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                    // Not yet created (a 5xx would be retried by the SDK itself).
                    (
                        400,
                        r#"{"__type":"ResourceNotFoundException","message":"not found"}"#.into(),
                    )
                } else {
                    string_secret(VALUE)
                }
            },
            no_kms(),
            Duration::from_secs(60),
        );
        let err = src.secret(&sm("api", None)).await.unwrap_err().to_string();
        assert!(err.contains("Secrets Manager secret api"), "{err}");
        assert_eq!(src.secret(&sm("api", None)).await.unwrap().expose(), VALUE);
        assert_eq!(src.secret(&sm("api", None)).await.unwrap().expose(), VALUE);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn each_unusable_answer_is_an_error_naming_the_secret_and_never_the_value() {
        let src = source(
            |id| {
                match id {
                "missing" => (
                    400,
                    r#"{"__type":"ResourceNotFoundException","message":"Secrets Manager can't find the specified secret."}"#
                        .into(),
                ),
                "plain" => string_secret(VALUE),
                "array" => string_secret(&serde_json::json!([VALUE]).to_string()),
                "json" => string_secret(
                    &serde_json::json!({"token": VALUE, "port": 5432, "nested": {"a": VALUE}})
                        .to_string(),
                ),
                "binary" => (
                    200,
                    serde_json::json!({"ARN": "arn:x", "Name": "binary", "SecretBinary": BASE64.encode(VALUE)})
                        .to_string(),
                ),
                // A response the SDK cannot parse: its body must not reach the error.
                "garbled" => (200, format!(r#"{{"Name": "garbled", "SecretString": "{VALUE}", "#)),
                other => panic!("unexpected secret {other}"),
            }
            },
            no_kms(),
            Duration::from_secs(60),
        );
        for (reference, expected) in [
            (sm("missing", None), "no such secret"),
            (sm("plain", Some("token")), "not a JSON object"),
            (sm("array", Some("token")), "not a JSON object"),
            (sm("json", Some("password")), "no key \"password\""),
            (
                sm("json", Some("port")),
                "\"port\" is a number, not a string",
            ),
            (
                sm("json", Some("nested")),
                "\"nested\" is an object, not a string",
            ),
            (sm("binary", None), "binary value"),
            // The SDK's error for it holds the response body, which holds the value.
            (sm("garbled", None), "GetSecretValue: unhandled error"),
        ] {
            let err = format!("{:#}", src.secret(&reference).await.unwrap_err());
            assert!(err.contains(&reference.to_string()), "{err}");
            assert!(err.contains(expected), "{reference}: {err}");
            assert!(!err.contains(VALUE) && !err.contains("sk-live"), "{err}");
        }
        // The keys are listed, for a typo; the values are not.
        let err = src
            .secret(&sm("json", Some("tokn")))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("its keys: nested, port, token"), "{err}");
    }

    #[tokio::test]
    async fn a_kms_ciphertext_is_decoded_decrypted_and_checked_for_utf8() {
        let ok = source(
            |_| panic!("no Secrets Manager call"),
            (
                200,
                serde_json::json!({"KeyId": "k", "Plaintext": BASE64.encode(VALUE)}).to_string(),
            ),
            Duration::from_secs(60),
        );
        let reference = SecretRef::Kms {
            kms_ciphertext: BASE64.encode(b"opaque ciphertext"),
        };
        assert_eq!(ok.secret(&reference).await.unwrap().expose(), VALUE);
        assert_eq!(ok.secret(&reference).await.unwrap().expose(), VALUE);
        assert_eq!(ok.fetches(), 1);

        let bad = SecretRef::Kms {
            kms_ciphertext: "not*base64!".into(),
        };
        let err = ok.secret(&bad).await.unwrap_err().to_string();
        assert!(err.contains("KMS ciphertext: not valid base64"), "{err}");

        let binary = source(
            |_| panic!("no Secrets Manager call"),
            (
                200,
                serde_json::json!({"KeyId": "k", "Plaintext": BASE64.encode([0xff, 0xfe, 0x00])})
                    .to_string(),
            ),
            Duration::from_secs(60),
        );
        let err = binary.secret(&reference).await.unwrap_err().to_string();
        assert!(err.contains("not UTF-8"), "{err}");

        let refused = source(
            |_| panic!("no Secrets Manager call"),
            (
                400,
                r#"{"__type":"InvalidCiphertextException","message":"bad"}"#.into(),
            ),
            Duration::from_secs(60),
        );
        let err = refused.secret(&reference).await.unwrap_err().to_string();
        assert!(
            err.contains("KMS ciphertext: KMS Decrypt") && err.contains("InvalidCiphertext"),
            "{err}"
        );
    }
}
