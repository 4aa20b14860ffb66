//! [`SharedTokenStore`] on DynamoDB and KMS: the fleet's OAuth2 token, one item per token in the
//! ledger table (as the breakers and rate-limit windows are), the token encrypted with the
//! stack's KMS key.
//!
//! The item is `pk = OAUTH2#<key>`, `sk = T`, where `<key>` is the config's
//! [`token_key`](fanout_core::oauth2::OAuth2Config::token_key) (a digest, which says nothing
//! about the client):
//!
//! | attribute | type | what |
//! | --- | --- | --- |
//! | `version` | N | 1 for the first token stored, +1 for each since; absent before the first |
//! | `ciphertext` | B | KMS Encrypt of the token (its UTF-8 bytes), with the context below |
//! | `issued_at_ms`, `expires_at_ms` | N | the token's lifetime, wall clock (ms since the epoch) |
//! | `lease_holder`, `lease_until_ms` | S, N | the refresh lease, while one is taken |
//! | `expires_at` | N | the table's TTL attribute (s), set by every write (see below) |
//!
//! The token is never in the item (nor in an error, a log line or a `Debug`) in plain text. Its
//! encryption context is `{"purpose": "fanout-oauth2-token", "token_key": <key>}`, required
//! again to decrypt:
//!
//! - `purpose` ([`PURPOSE`]): the worker role may call `kms:Encrypt` on the stack key only with
//!   this context (template.yaml), so the role cannot make a ciphertext that decrypts as anything
//!   but a token: not a config's `kms_ciphertext` secret, which is decrypted without a context;
//! - `token_key`: binds a ciphertext to its item; copied into another token's item, it does not
//!   decrypt.
//!
//! Every write is one conditional UpdateItem, never read-modify-write. The `version` part of
//! each condition is `attribute_not_exists(version)` when the caller saw no token (version 0),
//! else `version = :seen`.
//!
//! - **try_lease**: `(attribute_not_exists(lease_until_ms) OR lease_until_ms <= :now) AND
//!   <version>`, setting `lease_holder`, `lease_until_ms` (and `expires_at`). The lease part
//!   lets one container refresh at a time, while an expired lease (its holder died or stalled)
//!   is free again, so a dead container blocks the others only until `until_ms`; a lease is
//!   held for `[now, until)`. The version part refuses a container that read an older token than
//!   the one stored since: it must read again and use that one, not refresh again. Before the
//!   first token, a lease creates the item, which then holds only the lease: a read still
//!   answers `(0, None)`. A holder cannot take its own lease again while it lasts (it is not
//!   free).
//! - **store**: KMS Encrypt, then `SET version = :seen + 1, ciphertext, issued_at_ms,
//!   expires_at_ms, expires_at REMOVE lease_holder, lease_until_ms IF <version>`. Only the
//!   version is a condition, not the lease: a holder whose lease expired may still store if no
//!   one stored since (its token is as fresh as any), and what must never happen, a newer token
//!   overwritten by an older one, is what the version condition refuses. The lease is removed
//!   whoever holds it: a container that took it since will have its own store refused (the
//!   version moved) and read this token. A store that loses has spent one KMS call.
//!
//! `expires_at` is [`KEEP_SECS`] after the token expires (store) or the lease ends (try_lease:
//! a lease is taken to replace the token, and the store that follows sets it again).
//!
//! A failed condition is an answer (`false`), not an error. A ciphertext KMS refuses as invalid
//! for the key or context (the key was replaced, the item was tampered with) reads as "no token"
//! at its version, with a warning, so that the fleet replaces it instead of failing until TTL
//! removes the item; any other KMS failure (e.g. access denied) is an error.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kms::primitives::Blob;

use super::dynamo::{ddb_err, is_condition_failure};
use super::secrets::sdk_error;
use fanout_core::oauth2::IssuedToken;
use fanout_core::ports::SharedTokenStore;
use fanout_core::secret::Secret;

/// The `purpose` of the tokens' encryption context; template.yaml grants the worker
/// `kms:Encrypt` with exactly this value.
pub const PURPOSE: &str = "fanout-oauth2-token";

/// An item outlives its token (or, before the first token, its lease) by this long before TTL
/// removes it. An expired token read meanwhile is harmless: the client sees its expiry and
/// refreshes it.
pub const KEEP_SECS: u64 = 24 * 3600;

type Item = HashMap<String, AttributeValue>;

/// DynamoDB and KMS requests made by a container's token store, successful or not.
#[derive(Debug, Default)]
pub struct TokenStoreStats {
    pub reads: AtomicU64,
    /// Conditional writes (a failed condition is still a billed write).
    pub writes: AtomicU64,
    /// Encrypt and Decrypt calls.
    pub kms_calls: AtomicU64,
}

/// The fleet's shared OAuth2 tokens, in the ledger table.
#[derive(Clone, Debug)]
pub struct DynamoTokenStore {
    ddb: aws_sdk_dynamodb::Client,
    kms: aws_sdk_kms::Client,
    table: String,
    kms_key_id: String,
    stats: Arc<TokenStoreStats>,
}

impl DynamoTokenStore {
    /// Tokens in `table`, encrypted with KMS key `kms_key_id` (id, ARN or alias).
    pub fn new(
        ddb: aws_sdk_dynamodb::Client,
        kms: aws_sdk_kms::Client,
        table: impl Into<String>,
        kms_key_id: impl Into<String>,
    ) -> Self {
        Self {
            ddb,
            kms,
            table: table.into(),
            kms_key_id: kms_key_id.into(),
            stats: Arc::default(),
        }
    }

    pub fn stats(&self) -> &TokenStoreStats {
        &self.stats
    }

    /// (reads, writes, KMS calls) made so far.
    pub fn totals(&self) -> (u64, u64, u64) {
        (
            self.stats.reads.load(Ordering::Relaxed),
            self.stats.writes.load(Ordering::Relaxed),
            self.stats.kms_calls.load(Ordering::Relaxed),
        )
    }

    async fn decrypt(&self, key: &str, ciphertext: Vec<u8>) -> anyhow::Result<Option<Secret>> {
        self.stats.kms_calls.fetch_add(1, Ordering::Relaxed);
        let out = self
            .kms
            .decrypt()
            .key_id(&self.kms_key_id)
            .ciphertext_blob(Blob::new(ciphertext))
            .set_encryption_context(Some(encryption_context(key)))
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(e)
                if e.as_service_error().is_some_and(|se| {
                    se.is_invalid_ciphertext_exception() || se.is_incorrect_key_exception()
                }) =>
            {
                tracing::warn!(
                    token_key = key,
                    kms_key = %self.kms_key_id,
                    error = %sdk_error(e),
                    "the shared OAuth2 token does not decrypt with this key and context: \
                     read as no token, to be replaced"
                );
                return Ok(None);
            }
            Err(e) => anyhow::bail!(
                "OAuth2 token {key}: KMS Decrypt with key {}: {}",
                self.kms_key_id,
                sdk_error(e)
            ),
        };
        let plaintext = out.plaintext.ok_or_else(|| {
            anyhow::anyhow!("OAuth2 token {key}: KMS Decrypt returned no plaintext")
        })?;
        match String::from_utf8(plaintext.into_inner()) {
            Ok(text) => Ok(Some(Secret::new(text))),
            Err(_) => {
                tracing::warn!(
                    token_key = key,
                    "the shared OAuth2 token is not UTF-8 text: read as no token, to be replaced"
                );
                Ok(None)
            }
        }
    }

    async fn encrypt(&self, key: &str, token: &Secret) -> anyhow::Result<Blob> {
        self.stats.kms_calls.fetch_add(1, Ordering::Relaxed);
        let out = self
            .kms
            .encrypt()
            .key_id(&self.kms_key_id)
            .plaintext(Blob::new(token.expose().as_bytes()))
            .set_encryption_context(Some(encryption_context(key)))
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "OAuth2 token {key}: KMS Encrypt with key {}: {}",
                    self.kms_key_id,
                    sdk_error(e)
                )
            })?;
        out.ciphertext_blob.ok_or_else(|| {
            anyhow::anyhow!("OAuth2 token {key}: KMS Encrypt returned no ciphertext")
        })
    }
}

/// The item's key: `pk = OAUTH2#<key>`, `sk = T`.
fn item_key(key: &str) -> Item {
    HashMap::from([
        ("pk".to_string(), AttributeValue::S(format!("OAUTH2#{key}"))),
        ("sk".to_string(), AttributeValue::S("T".into())),
    ])
}

/// The encryption context of `key`'s token (see the module's doc).
fn encryption_context(key: &str) -> HashMap<String, String> {
    HashMap::from([
        ("purpose".to_string(), PURPOSE.to_string()),
        ("token_key".to_string(), key.to_string()),
    ])
}

/// The condition that the stored version is still `seen` (0: none stored yet), and the value
/// of `:seen` it needs, if any. `#version` names `version`.
fn version_condition(seen: u64) -> (&'static str, Option<AttributeValue>) {
    if seen == 0 {
        ("attribute_not_exists(#version)", None)
    } else {
        ("#version = :seen", Some(n(seen)))
    }
}

/// The TTL (s) of an item whose token expires at `expires_at_ms`, or whose lease ends then.
fn ttl_secs(expires_at_ms: u64, now_ms: u64) -> u64 {
    expires_at_ms.max(now_ms) / 1000 + KEEP_SECS
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// What an item holds, the ciphertext still sealed.
#[derive(Debug, PartialEq, Eq)]
struct Stored {
    version: u64,
    token: Option<Sealed>,
}

#[derive(Debug, PartialEq, Eq)]
struct Sealed {
    ciphertext: Vec<u8>,
    issued_at_ms: u64,
    expires_at_ms: u64,
}

/// An item as [`Stored`]. Errors name the attribute, never a value.
fn parse_item(item: &Item) -> Result<Stored, String> {
    let number = |name: &str| -> Result<Option<u64>, String> {
        item.get(name)
            .map(|v| {
                v.as_n()
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("attribute {name} is not a whole number"))
            })
            .transpose()
    };
    let ciphertext = item
        .get("ciphertext")
        .map(|v| {
            v.as_b()
                .map(|b| b.as_ref().to_vec())
                .map_err(|_| "attribute ciphertext is not binary".to_string())
        })
        .transpose()?;
    let Some(version) = number("version")? else {
        // Only a lease was ever taken.
        return match ciphertext {
            None => Ok(Stored {
                version: 0,
                token: None,
            }),
            Some(_) => Err("the item has a ciphertext but no version".into()),
        };
    };
    let ciphertext = ciphertext.ok_or("the item has a version but no ciphertext")?;
    let (Some(issued_at_ms), Some(expires_at_ms)) =
        (number("issued_at_ms")?, number("expires_at_ms")?)
    else {
        return Err("the item has a ciphertext but not its issued_at_ms and expires_at_ms".into());
    };
    Ok(Stored {
        version,
        token: Some(Sealed {
            ciphertext,
            issued_at_ms,
            expires_at_ms,
        }),
    })
}

#[async_trait]
impl SharedTokenStore for DynamoTokenStore {
    async fn read(&self, key: &str) -> anyhow::Result<(u64, Option<IssuedToken>)> {
        self.stats.reads.fetch_add(1, Ordering::Relaxed);
        let out = self
            .ddb
            .get_item()
            .table_name(&self.table)
            .set_key(Some(item_key(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| ddb_err("GetItem OAuth2 token", e))?;
        let Some(item) = out.item() else {
            return Ok((0, None));
        };
        let stored = parse_item(item).map_err(|e| anyhow::anyhow!("OAuth2 token {key}: {e}"))?;
        let Some(sealed) = stored.token else {
            return Ok((stored.version, None));
        };
        let token = self
            .decrypt(key, sealed.ciphertext)
            .await?
            .map(|token| IssuedToken {
                token,
                issued_at_ms: sealed.issued_at_ms,
                expires_at_ms: sealed.expires_at_ms,
            });
        Ok((stored.version, token))
    }

    async fn try_lease(
        &self,
        key: &str,
        holder: &str,
        seen_version: u64,
        now_ms: u64,
        until_ms: u64,
    ) -> anyhow::Result<bool> {
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        let (version, seen) = version_condition(seen_version);
        let mut values = HashMap::from([
            (":holder".to_string(), AttributeValue::S(holder.to_string())),
            (":until".to_string(), n(until_ms)),
            (":now".to_string(), n(now_ms)),
            (":ttl".to_string(), n(ttl_secs(until_ms, now_ms))),
        ]);
        values.extend(seen.map(|v| (":seen".to_string(), v)));
        let result = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .set_key(Some(item_key(key)))
            .update_expression(
                "SET lease_holder = :holder, lease_until_ms = :until, expires_at = :ttl",
            )
            .condition_expression(format!(
                "(attribute_not_exists(lease_until_ms) OR lease_until_ms <= :now) AND {version}"
            ))
            .expression_attribute_names("#version", "version")
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            // Leased by another container, or a newer token is stored.
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(ddb_err("UpdateItem OAuth2 token lease", e)),
        }
    }

    async fn store(
        &self,
        key: &str,
        holder: &str,
        seen_version: u64,
        token: &IssuedToken,
    ) -> anyhow::Result<bool> {
        let ciphertext = self.encrypt(key, &token.token).await?;
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        let (version, seen) = version_condition(seen_version);
        let mut values = HashMap::from([
            (":next".to_string(), n(seen_version + 1)),
            (":ciphertext".to_string(), AttributeValue::B(ciphertext)),
            (":issued".to_string(), n(token.issued_at_ms)),
            (":expires".to_string(), n(token.expires_at_ms)),
            (
                ":ttl".to_string(),
                n(ttl_secs(token.expires_at_ms, fanout_core::ledger::now_ms())),
            ),
        ]);
        values.extend(seen.map(|v| (":seen".to_string(), v)));
        let result = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .set_key(Some(item_key(key)))
            .update_expression(
                "SET #version = :next, ciphertext = :ciphertext, issued_at_ms = :issued, \
                 expires_at_ms = :expires, expires_at = :ttl \
                 REMOVE lease_holder, lease_until_ms",
            )
            .condition_expression(version)
            .expression_attribute_names("#version", "version")
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => {
                tracing::debug!(
                    token_key = key,
                    holder,
                    seen_version,
                    "a newer OAuth2 token is stored: this one is not"
                );
                Ok(false)
            }
            Err(e) => Err(ddb_err("UpdateItem OAuth2 token store", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The pure parts, and the requests the store makes, on SDK clients whose HTTP layer is a
    //! fake (a closure). DynamoDB and KMS themselves: tests/e2e/token_store.rs.
    use super::*;
    use aws_smithy_http_client::test_util::infallible_client_fn;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use serde_json::{Value, json};
    use std::sync::Mutex;

    const TOKEN: &str = "eyJ-access-token-DO-NOT-PRINT";
    const SEALED: &[u8] = b"opaque KMS ciphertext";

    /// A fake service: (its `X-Amz-Target` operation, the JSON request) → (status, JSON body).
    type Fake = Arc<dyn Fn(&str, &Value) -> (u16, Value) + Send + Sync>;
    /// The requests the fakes received: (operation, JSON request).
    type Requests = Arc<Mutex<Vec<(String, Value)>>>;

    /// A store on fake DynamoDB and KMS endpoints; every request is also recorded.
    fn fake_store(ddb: Fake, kms: Fake) -> (DynamoTokenStore, Requests) {
        let seen: Requests = Arc::default();
        let http = |fake: Fake, seen: Requests| {
            infallible_client_fn(move |req| {
                let target = req
                    .headers()
                    .get("x-amz-target")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .rsplit('.')
                    .next()
                    .unwrap()
                    .to_string();
                let body: Value = serde_json::from_slice(req.body().bytes().unwrap()).unwrap();
                let (status, answer) = fake(&target, &body);
                seen.lock().unwrap().push((target, body));
                http::Response::builder()
                    .status(status)
                    .body(answer.to_string().into_bytes())
                    .unwrap()
            })
        };
        let ddb = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::for_tests())
            .http_client(http(ddb, seen.clone()))
            .build();
        let kms = aws_sdk_kms::Config::builder()
            .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
            .region(aws_sdk_kms::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_kms::config::Credentials::for_tests())
            .http_client(http(kms, seen.clone()))
            .build();
        let store = DynamoTokenStore::new(
            aws_sdk_dynamodb::Client::from_conf(ddb),
            aws_sdk_kms::Client::from_conf(kms),
            "ledger",
            "key-1",
        );
        (store, seen)
    }

    fn no_service() -> Fake {
        Arc::new(|op, _| panic!("unexpected call {op}"))
    }

    fn condition_failed() -> (u16, Value) {
        (
            400,
            json!({"__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException",
                   "message": "The conditional request failed"}),
        )
    }

    fn token() -> IssuedToken {
        IssuedToken {
            token: Secret::new(TOKEN),
            issued_at_ms: 1_000_000,
            expires_at_ms: 4_600_000,
        }
    }

    /// A stored item as DynamoDB's JSON answers it.
    fn stored_item(version: u64) -> Value {
        json!({"Item": {
            "pk": {"S": "OAUTH2#k1"}, "sk": {"S": "T"},
            "version": {"N": version.to_string()},
            "ciphertext": {"B": BASE64.encode(SEALED)},
            "issued_at_ms": {"N": "1000000"}, "expires_at_ms": {"N": "4600000"},
            "expires_at": {"N": "90000"}
        }})
    }

    #[test]
    fn the_version_condition_depends_on_whether_a_token_was_seen() {
        assert_eq!(
            version_condition(0),
            ("attribute_not_exists(#version)", None)
        );
        assert_eq!(
            version_condition(7),
            ("#version = :seen", Some(AttributeValue::N("7".into())))
        );
    }

    #[test]
    fn the_item_outlives_the_token_or_the_lease() {
        assert_eq!(ttl_secs(4_600_000, 1_000_000), 4_600 + KEEP_SECS);
        // A token that expired already: counted from now.
        assert_eq!(ttl_secs(1_000, 9_000_000), 9_000 + KEEP_SECS);
        assert_eq!(
            item_key("k1"),
            HashMap::from([
                ("pk".to_string(), AttributeValue::S("OAUTH2#k1".into())),
                ("sk".to_string(), AttributeValue::S("T".into())),
            ])
        );
        assert_eq!(encryption_context("k1")["purpose"], PURPOSE);
        assert_eq!(encryption_context("k1")["token_key"], "k1");
    }

    #[test]
    fn items_parse_into_their_version_and_sealed_token() {
        let n = |v: &str| AttributeValue::N(v.into());
        let lease_only: Item = HashMap::from([
            ("lease_holder".into(), AttributeValue::S("c1".into())),
            ("lease_until_ms".into(), n("5")),
        ]);
        assert_eq!(
            parse_item(&lease_only),
            Ok(Stored {
                version: 0,
                token: None
            })
        );
        let mut full = lease_only.clone();
        full.extend([
            ("version".to_string(), n("3")),
            (
                "ciphertext".to_string(),
                AttributeValue::B(Blob::new(SEALED)),
            ),
            ("issued_at_ms".to_string(), n("10")),
            ("expires_at_ms".to_string(), n("20")),
        ]);
        assert_eq!(
            parse_item(&full),
            Ok(Stored {
                version: 3,
                token: Some(Sealed {
                    ciphertext: SEALED.to_vec(),
                    issued_at_ms: 10,
                    expires_at_ms: 20
                })
            })
        );
        let without = |name: &str| {
            let mut item = full.clone();
            item.remove(name);
            parse_item(&item).unwrap_err()
        };
        assert!(without("ciphertext").contains("no ciphertext"));
        assert!(without("version").contains("no version"));
        assert!(without("expires_at_ms").contains("expires_at_ms"));
        let mut bad = full.clone();
        bad.insert("version".into(), AttributeValue::S("three".into()));
        assert!(
            parse_item(&bad)
                .unwrap_err()
                .contains("version is not a whole number")
        );
    }

    #[tokio::test]
    async fn read_is_consistent_and_decrypts_with_the_key_and_context() {
        let (store, seen) = fake_store(
            Arc::new(|op, _| match op {
                "GetItem" => (200, stored_item(3)),
                other => panic!("unexpected {other}"),
            }),
            Arc::new(|op, _| {
                assert_eq!(op, "Decrypt");
                (
                    200,
                    json!({"KeyId": "key-1", "Plaintext": BASE64.encode(TOKEN)}),
                )
            }),
        );
        let (version, read) = store.read("k1").await.unwrap();
        assert_eq!((version, read.as_ref()), (3, Some(&token())));
        assert!(!format!("{read:?} {store:?}").contains(TOKEN));
        let seen = seen.lock().unwrap();
        let get = &seen[0].1;
        assert_eq!(get["ConsistentRead"], true);
        assert_eq!(get["Key"]["pk"]["S"], "OAUTH2#k1");
        let decrypt = &seen[1].1;
        assert_eq!(decrypt["KeyId"], "key-1");
        assert_eq!(decrypt["CiphertextBlob"], BASE64.encode(SEALED));
        assert_eq!(
            decrypt["EncryptionContext"],
            json!({"purpose": PURPOSE, "token_key": "k1"})
        );
        assert_eq!(store.totals(), (1, 0, 1));
    }

    #[tokio::test]
    async fn no_item_or_a_lease_alone_is_no_token_and_makes_no_kms_call() {
        for answer in [
            json!({}),
            json!({"Item": {"pk": {"S": "OAUTH2#k1"}, "sk": {"S": "T"},
                            "lease_holder": {"S": "c1"}, "lease_until_ms": {"N": "9"}}}),
        ] {
            let (store, _) = fake_store(Arc::new(move |_, _| (200, answer.clone())), no_service());
            assert_eq!(store.read("k1").await.unwrap(), (0, None));
            assert_eq!(store.totals(), (1, 0, 0));
        }
    }

    #[tokio::test]
    async fn a_ciphertext_kms_refuses_is_no_token_and_other_kms_failures_are_errors() {
        for (kms_error, readable) in [
            ("InvalidCiphertextException", false),
            ("IncorrectKeyException", false),
            ("AccessDeniedException", true),
        ] {
            let (store, _) = fake_store(
                Arc::new(|_, _| (200, stored_item(4))),
                Arc::new(move |_, _| (400, json!({"__type": kms_error, "message": "no"}))),
            );
            let read = store.read("k1").await;
            if readable {
                let err = format!("{:#}", read.unwrap_err());
                assert!(
                    err.contains("OAuth2 token k1: KMS Decrypt with key key-1")
                        && err.contains(kms_error),
                    "{err}"
                );
            } else {
                assert_eq!(read.unwrap(), (4, None), "{kms_error}");
            }
        }
    }

    #[tokio::test]
    async fn store_writes_only_the_ciphertext_under_the_version_condition() {
        for (seen_version, condition) in [
            (0, "attribute_not_exists(#version)"),
            (5, "#version = :seen"),
        ] {
            let (store, seen) = fake_store(
                Arc::new(|_, _| (200, json!({}))),
                Arc::new(|_, _| {
                    (
                        200,
                        json!({"KeyId": "key-1", "CiphertextBlob": BASE64.encode(SEALED)}),
                    )
                }),
            );
            assert!(
                store
                    .store("k1", "c1", seen_version, &token())
                    .await
                    .unwrap()
            );
            assert_eq!(store.totals(), (0, 1, 1));
            let seen = seen.lock().unwrap();
            let (encrypt, update) = (&seen[0], &seen[1]);
            assert_eq!(encrypt.0, "Encrypt");
            assert_eq!(encrypt.1["KeyId"], "key-1");
            assert_eq!(
                encrypt.1["EncryptionContext"],
                json!({"purpose": PURPOSE, "token_key": "k1"})
            );
            assert_eq!(update.0, "UpdateItem");
            let body = update.1.to_string();
            assert!(
                !body.contains(TOKEN) && !body.contains(&BASE64.encode(TOKEN)),
                "{body}"
            );
            let values = &update.1["ExpressionAttributeValues"];
            assert_eq!(values[":ciphertext"]["B"], BASE64.encode(SEALED));
            assert_eq!(values[":next"]["N"], (seen_version + 1).to_string());
            assert_eq!(values[":expires"]["N"], "4600000");
            assert_eq!(update.1["ConditionExpression"], condition);
            assert_eq!(values.get(":seen").is_some(), seen_version > 0);
            assert!(
                update.1["UpdateExpression"]
                    .as_str()
                    .unwrap()
                    .ends_with("REMOVE lease_holder, lease_until_ms")
            );
        }
    }

    #[tokio::test]
    async fn failed_conditions_are_false_and_errors_never_hold_the_token() {
        let (store, seen) = fake_store(
            Arc::new(|_, _| condition_failed()),
            Arc::new(|_, _| {
                (
                    200,
                    json!({"KeyId": "key-1", "CiphertextBlob": BASE64.encode(SEALED)}),
                )
            }),
        );
        assert!(!store.store("k1", "c1", 2, &token()).await.unwrap());
        assert!(!store.try_lease("k1", "c1", 2, 100, 200).await.unwrap());
        let lease = seen.lock().unwrap()[2].1.clone();
        assert_eq!(
            lease["ConditionExpression"],
            "(attribute_not_exists(lease_until_ms) OR lease_until_ms <= :now) AND #version = :seen"
        );
        assert_eq!(lease["ExpressionAttributeValues"][":now"]["N"], "100");
        assert_eq!(lease["ExpressionAttributeValues"][":until"]["N"], "200");
        assert_eq!(lease["ExpressionAttributeValues"][":holder"]["S"], "c1");

        // Encrypt refused: nothing written, and the error names the key, not the token.
        let (store, seen) = fake_store(
            no_service(),
            Arc::new(|_, _| {
                (
                    400,
                    json!({"__type": "AccessDeniedException", "message": "no"}),
                )
            }),
        );
        let err = format!(
            "{:#}",
            store.store("k1", "c1", 0, &token()).await.unwrap_err()
        );
        assert!(err.contains("KMS Encrypt with key key-1"), "{err}");
        assert!(!err.contains(TOKEN), "{err}");
        assert_eq!(seen.lock().unwrap().len(), 1);
    }
}
