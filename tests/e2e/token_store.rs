//! The shared OAuth2 token store (`fanout_aws::token_store::DynamoTokenStore`) on the local AWS's
//! DynamoDB and KMS, with the ledger table and key of a fresh local stack: the lease (one holder
//! at a time, free again when it expires, refused over a stale version), the versioned store,
//! and the item, which never holds the token in plain text.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine as _;
use fanout_aws::token_store::{DynamoTokenStore, PURPOSE};
use fanout_core::oauth2::IssuedToken;
use fanout_core::ports::SharedTokenStore;
use fanout_core::secret::Secret;
use integration_tests::TestStack;

const KEY: &str = "0123456789abcdef0123456789abcdef";
const TOKEN: &str = "at-5c1d9e-DO-NOT-PRINT";

fn store(ts: &TestStack) -> DynamoTokenStore {
    DynamoTokenStore::new(
        fanout_aws::dynamodb_client(&ts.config),
        fanout_aws::kms_client(&ts.config),
        &ts.stack.names.table,
        ts.stack
            .kms_key_id
            .as_deref()
            .expect("the local stack's key"),
    )
}

fn token(value: &str, issued_at_ms: u64) -> IssuedToken {
    IssuedToken {
        token: Secret::new(value),
        issued_at_ms,
        expires_at_ms: issued_at_ms + 3_600_000,
    }
}

/// The item of token `key` as DynamoDB holds it.
async fn raw_item(ts: &TestStack, key: &str) -> HashMap<String, AttributeValue> {
    fanout_aws::dynamodb_client(&ts.config)
        .get_item()
        .table_name(&ts.stack.names.table)
        .key("pk", AttributeValue::S(format!("OAUTH2#{key}")))
        .key("sk", AttributeValue::S("T".into()))
        .consistent_read(true)
        .send()
        .await
        .expect("GetItem")
        .item
        .expect("the token's item")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn a_stored_token_round_trips_and_the_item_holds_only_its_ciphertext() {
    let ts = integration_tests::stack("token_store_round_trip").await;
    let store = store(&ts);
    assert_eq!(store.read(KEY).await.unwrap(), (0, None));

    let now = fanout_core::ledger::now_ms();
    let issued = token(TOKEN, now);
    assert!(store.store(KEY, "c1", 0, &issued).await.unwrap());
    let (version, read) = store.read(KEY).await.unwrap();
    assert_eq!((version, read.as_ref()), (1, Some(&issued)));
    assert!(!format!("{read:?} {store:?}").contains(TOKEN));
    // Two reads, one write; one Encrypt and one Decrypt.
    assert_eq!(store.totals(), (2, 1, 2));

    let item = raw_item(&ts, KEY).await;
    let mut names: Vec<&str> = item.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "ciphertext",
            "expires_at",
            "expires_at_ms",
            "issued_at_ms",
            "pk",
            "sk",
            "version"
        ]
    );
    let encoded = base64::engine::general_purpose::STANDARD.encode(TOKEN);
    for (name, value) in &item {
        let bytes: &[u8] = match value {
            AttributeValue::S(s) | AttributeValue::N(s) => s.as_bytes(),
            AttributeValue::B(b) => b.as_ref(),
            other => panic!("{name}: unexpected {other:?}"),
        };
        assert!(
            !contains(bytes, TOKEN.as_bytes()) && !contains(bytes, encoded.as_bytes()),
            "{name} holds the token"
        );
    }
    // The table's TTL keeps the item past the token's expiry.
    let number = |name: &str| -> u64 { item[name].as_n().unwrap().parse().unwrap() };
    assert_eq!(number("expires_at_ms"), issued.expires_at_ms);
    assert!(number("expires_at") > issued.expires_at_ms / 1000);

    // The ciphertext is bound to its encryption context: KMS refuses it without.
    let ciphertext = item["ciphertext"].as_b().unwrap().clone();
    let kms = fanout_aws::kms_client(&ts.config);
    let without = kms
        .decrypt()
        .ciphertext_blob(ciphertext.clone())
        .send()
        .await;
    assert!(without.is_err(), "decrypted without its context");
    let with = kms
        .decrypt()
        .ciphertext_blob(ciphertext)
        .encryption_context("purpose", PURPOSE)
        .encryption_context("token_key", KEY)
        .send()
        .await
        .expect("Decrypt with the context");
    assert_eq!(with.plaintext.unwrap().as_ref(), TOKEN.as_bytes());
}

#[tokio::test]
async fn one_holder_at_a_time_until_the_lease_expires() {
    let ts = integration_tests::stack("token_store_lease").await;
    let store = store(&ts);
    let now = fanout_core::ledger::now_ms();

    // Eight containers at once: one lease.
    let mut tries = tokio::task::JoinSet::new();
    for i in 0..8 {
        let store = store.clone();
        tries.spawn(async move {
            store
                .try_lease(KEY, &format!("c{i}"), 0, now, now + 1_000)
                .await
                .unwrap()
        });
    }
    let won = tries.join_all().await.into_iter().filter(|w| *w).count();
    assert_eq!(won, 1, "one lease among eight containers");
    let holder = raw_item(&ts, KEY).await["lease_holder"]
        .as_s()
        .unwrap()
        .clone();

    // Refused while it lasts, to another holder and to the holder itself.
    assert!(
        !store
            .try_lease(KEY, "other", 0, now + 999, now + 2_000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .try_lease(KEY, &holder, 0, now + 10, now + 2_000)
            .await
            .unwrap()
    );
    // A lease alone is no token.
    assert_eq!(store.read(KEY).await.unwrap(), (0, None));
    // Free again when it expires.
    assert!(
        store
            .try_lease(KEY, "other", 0, now + 1_000, now + 2_000)
            .await
            .unwrap()
    );
    let item = raw_item(&ts, KEY).await;
    assert_eq!(item["lease_holder"].as_s().unwrap(), "other");
    assert_eq!(
        item["lease_until_ms"].as_n().unwrap(),
        &(now + 2_000).to_string()
    );
    assert!(!item.contains_key("version"));
}

#[tokio::test]
async fn a_store_bumps_the_version_and_frees_the_lease() {
    let ts = integration_tests::stack("token_store_store").await;
    let store = store(&ts);
    let now = fanout_core::ledger::now_ms();

    assert!(
        store
            .try_lease(KEY, "c1", 0, now, now + 60_000)
            .await
            .unwrap()
    );
    assert!(
        store
            .store(KEY, "c1", 0, &token("first", now))
            .await
            .unwrap()
    );
    let item = raw_item(&ts, KEY).await;
    assert!(!item.contains_key("lease_holder") && !item.contains_key("lease_until_ms"));
    assert_eq!(store.read(KEY).await.unwrap().0, 1);

    // The lease is free at once (c1's would have lasted a minute), for whoever saw version 1.
    assert!(
        store
            .try_lease(KEY, "c2", 1, now + 1, now + 60_000)
            .await
            .unwrap()
    );
    assert!(
        store
            .store(KEY, "c2", 1, &token("second", now + 1))
            .await
            .unwrap()
    );
    let (version, read) = store.read(KEY).await.unwrap();
    assert_eq!(version, 2);
    assert_eq!(read.unwrap().token.expose(), "second");
}

#[tokio::test]
async fn a_lease_over_a_stale_version_is_refused() {
    let ts = integration_tests::stack("token_store_stale_lease").await;
    let store = store(&ts);
    let now = fanout_core::ledger::now_ms();

    assert!(
        store
            .store(KEY, "c1", 0, &token("first", now))
            .await
            .unwrap()
    );
    // c2 read before that store: it must use the stored token, not refresh again.
    assert!(
        !store
            .try_lease(KEY, "c2", 0, now, now + 1_000)
            .await
            .unwrap()
    );
    assert!(
        store
            .store(KEY, "c1", 1, &token("second", now))
            .await
            .unwrap()
    );
    assert!(
        !store
            .try_lease(KEY, "c2", 1, now, now + 1_000)
            .await
            .unwrap()
    );
    // A version that does not exist yet is stale too (the other way round).
    assert!(
        !store
            .try_lease(KEY, "c2", 3, now, now + 1_000)
            .await
            .unwrap()
    );
    assert!(
        store
            .try_lease(KEY, "c2", 2, now, now + 1_000)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_store_over_a_newer_version_is_refused() {
    let ts = integration_tests::stack("token_store_stale_store").await;
    let store = store(&ts);
    let now = fanout_core::ledger::now_ms();

    // c1's lease expires before it stores; c2 takes over and stores first.
    assert!(
        store
            .try_lease(KEY, "c1", 0, now, now + 1_000)
            .await
            .unwrap()
    );
    assert!(
        store
            .try_lease(KEY, "c2", 0, now + 1_000, now + 2_000)
            .await
            .unwrap()
    );
    assert!(
        store
            .store(KEY, "c2", 0, &token("from-c2", now + 1_500))
            .await
            .unwrap()
    );
    assert!(
        !store
            .store(KEY, "c1", 0, &token("from-c1", now + 1_600))
            .await
            .unwrap()
    );
    // A store over any version but the stored one is refused too.
    for seen in [2, 5] {
        assert!(
            !store
                .store(KEY, "c1", seen, &token("later", now))
                .await
                .unwrap()
        );
    }
    let (version, read) = store.read(KEY).await.unwrap();
    assert_eq!(version, 1);
    assert_eq!(read.unwrap().token.expose(), "from-c2");
}

/// A ciphertext is bound to its token's key: copied into another token's item, it does not
/// decrypt, and reads as no token at that version, which the next store replaces.
#[tokio::test]
async fn a_ciphertext_copied_to_another_token_reads_as_none_and_is_replaced() {
    let ts = integration_tests::stack("token_store_moved").await;
    let store = store(&ts);
    let now = fanout_core::ledger::now_ms();
    assert!(store.store(KEY, "c1", 0, &token(TOKEN, now)).await.unwrap());

    let mut item = raw_item(&ts, KEY).await;
    let other = "fedcba9876543210fedcba9876543210";
    item.insert("pk".into(), AttributeValue::S(format!("OAUTH2#{other}")));
    fanout_aws::dynamodb_client(&ts.config)
        .put_item()
        .table_name(&ts.stack.names.table)
        .set_item(Some(item))
        .send()
        .await
        .expect("PutItem");
    assert_eq!(store.read(other).await.unwrap(), (1, None));
    assert!(
        store
            .store(other, "c2", 1, &token("fresh", now))
            .await
            .unwrap()
    );
    let (version, read) = store.read(other).await.unwrap();
    assert_eq!((version, read.unwrap().token.expose()), (2, "fresh"));
}
