//! Each auth strategy end to end on the local stack: the secret stored in the local AWS (Secrets
//! Manager, or a KMS ciphertext), the pipeline's `client.auth` naming it, the job run through the
//! worker containers as Lambda wires them, and the mock API demanding the credential. Every
//! record must reach the API authenticated, and the secret must appear in none of the job's
//! outputs. A config with a literal secret fails the job before anything is enqueued.

use aws_sdk_kms::primitives::Blob;
use base64::Engine;
use fanout_core::ledger::JobStatus;
use integration_tests::{MockApi, MockConfig, TestStack, pipeline_yaml, stack};
use mock_api::MockAuth;

const CSV_FIELDS: &str = "[{name: id, type: integer, required: true}, {name: name}]";
const RECORDS: usize = 300;

fn csv() -> Vec<u8> {
    let mut text = String::from("id,name\n");
    for i in 0..RECORDS {
        text.push_str(&format!("{i},name-{i}\n"));
    }
    text.into_bytes()
}

/// Stores `value` as a Secrets Manager secret; returns the YAML reference to it.
async fn stored_secret(ts: &TestStack, name: &str, value: &str, json_key: Option<&str>) -> String {
    let string = match json_key {
        Some(k) => serde_json::json!({ k: value, "other": "x" }).to_string(),
        None => value.to_string(),
    };
    ts.put_secret(name, &string).await;
    match json_key {
        Some(k) => format!("{{secrets_manager: {name}, json_key: {k}}}"),
        None => format!("{{secrets_manager: {name}}}"),
    }
}

/// Encrypts `value` with a new KMS key; returns the YAML reference to the ciphertext.
async fn kms_secret(ts: &TestStack, value: &str) -> String {
    let kms = aws_sdk_kms::Client::new(&ts.config);
    let key = kms.create_key().send().await.expect("CreateKey");
    let key_id = key.key_metadata().unwrap().key_id().to_string();
    let out = kms
        .encrypt()
        .key_id(key_id)
        .plaintext(Blob::new(value.as_bytes()))
        .send()
        .await
        .expect("Encrypt");
    let b64 = base64::engine::general_purpose::STANDARD.encode(out.ciphertext_blob().unwrap());
    format!("{{kms_ciphertext: '{b64}'}}")
}

/// Runs a job with `client.auth` = `auth` (YAML) against a mock requiring `mock_auth`, and
/// checks that every record reached the API with the credential and `secret` is in no output.
/// Returns the mock, still running, for more checks.
async fn job_with(
    ts: &TestStack,
    pipeline: &str,
    mock_auth: MockAuth,
    auth: &str,
    secret: &str,
) -> MockApi {
    let api = MockApi::start(MockConfig {
        auth: mock_auth,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let yaml = pipeline_yaml("csv", &api.base_url(), CSV_FIELDS, 2000, "").replace(
        "max_attempts: 2 }",
        &format!(
            "max_attempts: 2, auth: {} }}",
            auth.replace("{base}", &api.base_url())
        ),
    );
    let event = ts.upload(pipeline, &yaml, "in.csv", &csv()).await;
    let report = ts.run(event, 2).await;
    TestStack::assert_all_succeeded(&report, RECORDS as u64);
    let stats = api.stats();
    assert_eq!(stats.refused_auth, 0, "{stats:?}");
    assert_eq!(stats.accepted_auth, RECORDS as u64, "{stats:?}");
    assert_absent(ts, secret).await;
    api
}

/// `needle` is in no object the job wrote (results, summary, failed, rejected, the pipeline's
/// config), nor anywhere in the ledger table.
pub(crate) async fn assert_absent(ts: &TestStack, needle: &str) {
    let keys = ts.keys("").await;
    assert!(keys.iter().any(|k| k.starts_with("results/")), "{keys:?}");
    for key in keys {
        let body = ts.object(&key).await;
        assert!(
            !String::from_utf8_lossy(&body).contains(needle),
            "a secret is in s3://{}/{key}",
            ts.bucket()
        );
    }
    let items = aws_sdk_dynamodb::Client::new(&ts.config)
        .scan()
        .table_name(&ts.stack.names.table)
        .send()
        .await
        .unwrap();
    assert!(!items.items().is_empty());
    assert!(
        !format!("{:?}", items.items()).contains(needle),
        "a secret is in the ledger"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bearer_token_from_secrets_manager() {
    const TOKEN: &str = "tok-bearer-7c1e-DO-NOT-LEAK";
    let ts = stack("auth_bearer").await;
    let reference = stored_secret(&ts, "auth-bearer/token", TOKEN, None).await;
    let mock = MockAuth::Bearer {
        token: TOKEN.into(),
    };
    let auth = format!("{{type: bearer, token: {reference}}}");
    job_with(&ts, "bearer", mock, &auth, TOKEN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_key_header_from_a_json_secret() {
    const KEY: &str = "key-hdr-42aa-DO-NOT-LEAK";
    let ts = stack("auth_key_header").await;
    let reference = stored_secret(&ts, "auth-key/json", KEY, Some("api_key")).await;
    let mock = MockAuth::ApiKeyHeader {
        header: "X-Api-Key".into(),
        key: KEY.into(),
    };
    let auth = format!("{{type: api_key, header: X-Api-Key, key: {reference}}}");
    job_with(&ts, "keyheader", mock, &auth, KEY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_key_query_parameter_from_a_kms_ciphertext() {
    const KEY: &str = "key-qry-9f3b-DO-NOT-LEAK";
    let ts = stack("auth_key_query").await;
    let reference = kms_secret(&ts, KEY).await;
    let mock = MockAuth::ApiKeyQuery {
        param: "api_key".into(),
        key: KEY.into(),
    };
    let auth = format!("{{type: api_key, query_param: api_key, key: {reference}}}");
    job_with(&ts, "keyquery", mock, &auth, KEY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn basic_with_a_kms_encrypted_password() {
    const PASSWORD: &str = "pw-basic-51d0-DO-NOT-LEAK";
    let ts = stack("auth_basic").await;
    let reference = kms_secret(&ts, PASSWORD).await;
    let mock = MockAuth::Basic {
        username: "fanout".into(),
        password: PASSWORD.into(),
    };
    let auth = format!("{{type: basic, username: fanout, password: {reference}}}");
    job_with(&ts, "basic", mock, &auth, PASSWORD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_literal_secret_fails_the_job_before_anything_is_enqueued() {
    const TOKEN: &str = "tok-literal-0b7d-DO-NOT-LEAK";
    let ts = stack("auth_literal").await;
    let yaml = pipeline_yaml("csv", "http://127.0.0.1:9", CSV_FIELDS, 2000, "").replace(
        "max_attempts: 2 }",
        &format!("max_attempts: 2, auth: {{type: bearer, token: {TOKEN}}} }}"),
    );
    let event = ts.upload("literal", &yaml, "in.csv", &csv()).await;
    let report = ts.run(event, 1).await;
    let job = report.job.expect("a job");
    assert_eq!(job.status, JobStatus::Failed, "{job:?}");
    let error = job.error.clone().unwrap_or_default();
    assert!(error.contains("must be a reference"), "{error}");
    assert!(!error.contains(TOKEN), "{error}");
    assert_eq!(ts.queue_depth().await, 0);
    assert!(
        ts.keys("results/")
            .await
            .iter()
            .all(|k| !k.contains("part-"))
    );
}

/// The mock's OAuth2 server for the grants below.
fn oauth_mock(client_secret: &str, password: Option<&str>) -> MockAuth {
    MockAuth::OAuth2(mock_api::OAuth2Config {
        client_id: "fanout-app".into(),
        client_secret: client_secret.into(),
        username: password.map(|_| "svc-owner".into()),
        password: password.map(Into::into),
        token_lifetime_secs: 600,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oauth2_client_credentials_with_a_secret_from_secrets_manager() {
    const CLIENT_SECRET: &str = "cs-oauth-3e8a-DO-NOT-LEAK";
    let ts = stack("auth_oauth_cc").await;
    let reference = stored_secret(&ts, "auth-oauth/client", CLIENT_SECRET, None).await;
    let auth = format!(
        "{{type: oauth2, token_url: '{{base}}/oauth2/token', client_id: fanout-app, \
         client_secret: {reference}, scopes: [orders.read]}}"
    );
    let api = job_with(
        &ts,
        "oauthcc",
        oauth_mock(CLIENT_SECRET, None),
        &auth,
        CLIENT_SECRET,
    )
    .await;
    let stats = api.stats();
    assert_eq!(stats.tokens_issued, 1, "{stats:?}");
    assert_eq!(
        stats.last_token_grant_type.as_deref(),
        Some("client_credentials")
    );
    for token in api.issued_tokens() {
        assert_absent(&ts, &token).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oauth2_password_grant_with_kms_ciphertexts_in_the_body() {
    const CLIENT_SECRET: &str = "cs-oauth-pw-77c2-DO-NOT-LEAK";
    const PASSWORD: &str = "pw-owner-0d4f-DO-NOT-LEAK";
    let ts = stack("auth_oauth_pw").await;
    let secret = kms_secret(&ts, CLIENT_SECRET).await;
    let password = kms_secret(&ts, PASSWORD).await;
    let auth = format!(
        "{{type: oauth2, token_url: '{{base}}/oauth2/token', grant: password, \
         client_id: fanout-app, client_auth: body, client_secret: {secret}, \
         username: svc-owner, password: {password}}}"
    );
    let mock = oauth_mock(CLIENT_SECRET, Some(PASSWORD));
    let api = job_with(&ts, "oauthpw", mock, &auth, PASSWORD).await;
    assert_absent(&ts, CLIENT_SECRET).await;
    let stats = api.stats();
    assert_eq!(stats.tokens_issued, 1, "{stats:?}");
    assert_eq!(stats.last_token_grant_type.as_deref(), Some("password"));
    for token in api.issued_tokens() {
        assert_absent(&ts, &token).await;
    }
}
