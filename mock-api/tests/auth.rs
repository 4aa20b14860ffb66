//! Authentication on the API routes and the OAuth2 token endpoint, over real
//! sockets with the raw client in `common`.
//!
//! Expiry is tested on the mock's token clock (`advance_token_clock`), which
//! gives margins of seconds both ways; the one real-time test only checks
//! that a token is refused after its lifetime, which no scheduling delay can
//! make false.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use mock_api::{MockAuth, MockConfig, MockStats, OAuth2Config};
use serde_json::{Value, json};

mod common;
use common::{Resp, get, send, start};

const CLIENT_ID: &str = "client-1";
/// Characters that must be encoded in a form, to check the decoding.
const CLIENT_SECRET: &str = "s3cr+t/=";
const CLIENT_SECRET_FORM: &str = "s3cr%2Bt%2F%3D";
const USERNAME: &str = "alice";
const PASSWORD: &str = "wonder land";

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

fn with_auth(auth: MockAuth) -> MockConfig {
    MockConfig {
        auth,
        ..MockConfig::default()
    }
}

fn oauth2(token_lifetime_secs: u64) -> MockConfig {
    with_auth(MockAuth::OAuth2(OAuth2Config {
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        username: Some(USERNAME.into()),
        password: Some(PASSWORD.into()),
        token_lifetime_secs,
    }))
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

async fn get_with(addr: SocketAddr, path: &str, name: &str, value: &str) -> Resp {
    send(addr, "GET", path, &[(name, value)], b"").await
}

/// An API call with `Authorization: Bearer token`.
async fn call(addr: SocketAddr, token: &str) -> Resp {
    get_with(
        addr,
        "/v1/items",
        "Authorization",
        &format!("Bearer {token}"),
    )
    .await
}

async fn token_request(addr: SocketAddr, headers: &[(&str, &str)], form: &str) -> Resp {
    let mut all = vec![FORM];
    all.extend_from_slice(headers);
    send(addr, "POST", "/oauth2/token", &all, form.as_bytes()).await
}

/// A token by the client credentials grant, client authenticated in the form.
async fn client_token(addr: SocketAddr) -> String {
    let form = format!(
        "grant_type=client_credentials&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET_FORM}"
    );
    let resp = token_request(addr, &[], &form).await;
    assert_eq!(resp.status, 200, "{:?}", resp.json());
    resp.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

/// A 401 from the API routes: JSON body with the reason, and a challenge.
fn assert_refused(resp: &Resp, reason: &str, challenge_starts: &str) {
    assert_eq!(resp.status, 401);
    assert_eq!(
        resp.json(),
        json!({ "ok": false, "error": "unauthorized", "reason": reason })
    );
    let challenge = resp.header("www-authenticate").expect("WWW-Authenticate");
    assert!(
        challenge.starts_with(challenge_starts),
        "{challenge:?} should start with {challenge_starts:?}"
    );
}

/// An RFC 6749 §5.2 error from the token endpoint.
fn assert_oauth_error(resp: &Resp, status: u16, error: &str) {
    assert_eq!(resp.status, status, "{:?}", resp.json());
    assert_eq!(resp.json()["error"], error);
    assert!(resp.json()["error_description"].is_string());
    assert_eq!(resp.header("cache-control"), Some("no-store"));
}

// ---------------------------------------------------------------- strategies

#[tokio::test]
async fn no_auth_configured_counts_nothing_new() {
    let api = start(MockConfig::default()).await;
    assert_eq!(api.config().auth, MockAuth::None);
    assert_eq!(get(api.addr(), "/x").await.status, 200);
    // Without OAuth2 the /oauth2 paths are ordinary API paths.
    let resp = token_request(api.addr(), &[], "grant_type=client_credentials").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["path"], "/oauth2/token");
    let stats = api.stats();
    assert_eq!(stats.total_requests, 2);
    assert_eq!((stats.accepted_auth, stats.refused_auth), (0, 0));
    assert_eq!((stats.token_requests, stats.tokens_issued), (0, 0));
    api.shutdown().await;
}

#[tokio::test]
async fn api_key_header_auth() {
    let api = start(with_auth(MockAuth::ApiKeyHeader {
        header: "X-Api-Key".into(),
        key: "k-123".into(),
    }))
    .await;
    let addr = api.addr();
    // The name is matched case-insensitively, the value exactly.
    assert_eq!(get_with(addr, "/a", "x-api-key", "k-123").await.status, 200);
    let challenge = r#"ApiKey realm="mock-api", header="X-Api-Key""#;
    assert_refused(&get(addr, "/a").await, "missing credentials", challenge);
    let wrong = get_with(addr, "/a", "X-Api-Key", "K-123").await;
    assert_refused(&wrong, "wrong credentials", challenge);
    let elsewhere = get_with(addr, "/a", "Authorization", "Bearer k-123").await;
    assert_refused(&elsewhere, "missing credentials", challenge);

    let stats = api.stats();
    assert_eq!((stats.accepted_auth, stats.refused_auth), (1, 3));
    // Refused calls are not API calls: only the accepted one is counted.
    assert_eq!(stats.total_requests, 1);
    assert_eq!(stats.by_status, [(200, 1)].into_iter().collect());
    assert_eq!(stats.windows_100ms.iter().sum::<u64>(), 1);
    api.shutdown().await;
}

#[tokio::test]
async fn api_key_query_auth() {
    let api = start(with_auth(MockAuth::ApiKeyQuery {
        param: "api_key".into(),
        key: "k+/=1".into(),
    }))
    .await;
    let addr = api.addr();
    let resp = get(addr, "/a?x=1&api_key=k%2B%2F%3D1").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["path"], "/a");
    let challenge = r#"ApiKey realm="mock-api", param="api_key""#;
    assert_refused(&get(addr, "/a?x=1").await, "missing credentials", challenge);
    assert_refused(&get(addr, "/a").await, "missing credentials", challenge);
    // `+` in a query means a space, so the unencoded key is a different key.
    let unencoded = get(addr, "/a?api_key=k+/=1").await;
    assert_refused(&unencoded, "wrong credentials", challenge);
    let header = get_with(addr, "/a", "api_key", "k+/=1").await;
    assert_refused(&header, "missing credentials", challenge);
    let stats = api.stats();
    assert_eq!((stats.accepted_auth, stats.refused_auth), (1, 4));
    api.shutdown().await;
}

#[tokio::test]
async fn basic_auth() {
    let api = start(with_auth(MockAuth::Basic {
        username: "bob".into(),
        password: "pa:ss".into(),
    }))
    .await;
    let addr = api.addr();
    let right = basic("bob", "pa:ss");
    assert_eq!(
        get_with(addr, "/b", "Authorization", &right).await.status,
        200
    );
    // The scheme is case-insensitive (RFC 9110 §11.1).
    let lower = right.replacen("Basic", "basic", 1);
    assert_eq!(
        get_with(addr, "/b", "Authorization", &lower).await.status,
        200
    );

    let challenge = r#"Basic realm="mock-api""#;
    assert_refused(&get(addr, "/b").await, "missing credentials", challenge);
    let wrong = get_with(addr, "/b", "Authorization", &basic("bob", "pa:sS")).await;
    assert_refused(&wrong, "wrong credentials", challenge);
    let user = get_with(addr, "/b", "Authorization", &basic("bobby", "pa:ss")).await;
    assert_refused(&user, "wrong credentials", challenge);
    let garbage = get_with(addr, "/b", "Authorization", "Basic not*base64").await;
    assert_refused(&garbage, "malformed credentials", challenge);
    let bearer = get_with(addr, "/b", "Authorization", "Bearer bob").await;
    assert_refused(&bearer, "missing credentials", challenge);
    let stats = api.stats();
    assert_eq!((stats.accepted_auth, stats.refused_auth), (2, 5));
    api.shutdown().await;
}

#[tokio::test]
async fn static_bearer() {
    let api = start(with_auth(MockAuth::Bearer {
        token: "tok-1".into(),
    }))
    .await;
    let addr = api.addr();
    assert_eq!(call(addr, "tok-1").await.status, 200);
    // RFC 6750 §3.1: no error code when no token was presented.
    let missing = get(addr, "/v1/items").await;
    assert_refused(
        &missing,
        "missing credentials",
        r#"Bearer realm="mock-api""#,
    );
    assert_eq!(
        missing.header("www-authenticate"),
        Some(r#"Bearer realm="mock-api""#)
    );
    let wrong = call(addr, "tok-2").await;
    let invalid = r#"Bearer realm="mock-api", error="invalid_token""#;
    assert_refused(&wrong, "wrong credentials", invalid);
    let other_scheme = get_with(addr, "/v1/items", "Authorization", &basic("tok-1", "")).await;
    assert_refused(
        &other_scheme,
        "missing credentials",
        r#"Bearer realm="mock-api""#,
    );
    let stats = api.stats();
    assert_eq!((stats.accepted_auth, stats.refused_auth), (1, 3));
    api.shutdown().await;
}

#[tokio::test]
async fn refused_calls_spend_no_rate_limit_and_no_idempotency_key() {
    let api = start(MockConfig {
        rate_limit: Some(1.0),
        burst: 0.0, // capacity 1: one admitted call empties the bucket
        auth: MockAuth::Bearer {
            token: "tok".into(),
        },
        ..MockConfig::default()
    })
    .await;
    let addr = api.addr();
    for _ in 0..5 {
        let headers = [("Authorization", "Bearer nope"), ("Idempotency-Key", "k")];
        assert_eq!(send(addr, "POST", "/p", &headers, b"").await.status, 401);
    }
    // The bucket is still full and the key unseen.
    let headers = [("Authorization", "Bearer tok"), ("Idempotency-Key", "k")];
    assert_eq!(send(addr, "POST", "/p", &headers, b"").await.status, 200);
    let stats = api.stats();
    assert_eq!((stats.keys_seen, stats.repeated_keys), (1, 0));
    assert_eq!((stats.accepted_auth, stats.refused_auth), (1, 5));
    // An accepted call still meets the other gates.
    assert_eq!(send(addr, "POST", "/p", &headers, b"").await.status, 429);
    assert_eq!(api.stats().repeated_keys, 1);
    api.shutdown().await;
}

#[tokio::test]
async fn auth_is_switched_at_runtime_and_by_patch() {
    let api = start(MockConfig::default()).await;
    let addr = api.addr();
    let patch = br#"{"auth":{"kind":"api_key_header","header":"X-Key","key":"k"}}"#;
    let resp = send(addr, "PATCH", "/_mock/config", &[], patch).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["auth"]["kind"], "api_key_header");
    assert_eq!(get(addr, "/x").await.status, 401);
    assert_eq!(get_with(addr, "/x", "X-Key", "k").await.status, 200);
    // PATCH of another field keeps the auth (the JSON round-trips the key).
    send(
        addr,
        "PATCH",
        "/_mock/config",
        &[],
        br#"{"latency_max_ms":1}"#,
    )
    .await;
    assert_eq!(get_with(addr, "/x", "X-Key", "k").await.status, 200);

    let oauth = br#"{"auth":{"kind":"oauth2","client_id":"c","client_secret":"s"}}"#;
    send(addr, "PATCH", "/_mock/config", &[], oauth).await;
    let MockAuth::OAuth2(config) = api.config().auth else {
        panic!("oauth2 expected, got {:?}", api.config().auth);
    };
    assert_eq!(config.token_lifetime_secs, 3600, "default lifetime");
    assert_eq!(config.username, None);
    api.set_config(MockConfig::default());
    assert_eq!(get(addr, "/x").await.status, 200);
    api.shutdown().await;
}

// ---------------------------------------------------------------- token endpoint

#[tokio::test]
async fn client_credentials_with_form_client_auth() {
    let api = start(oauth2(60)).await;
    let addr = api.addr();
    let form = format!(
        "grant_type=client_credentials&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET_FORM}\
         &scope=read+write&audience=https%3A%2F%2Fapi.example&resource=r1"
    );
    let resp = token_request(addr, &[], &form).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    let body = resp.json();
    let token = body["access_token"].as_str().expect("token").to_owned();
    assert!(token.len() >= 32, "unguessable: {token}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 60);
    assert_eq!(body["scope"], "read write");

    assert_eq!(call(addr, &token).await.status, 200);
    let stats = api.stats();
    assert_eq!((stats.token_requests, stats.tokens_issued), (1, 1));
    assert_eq!(
        stats.last_token_grant_type.as_deref(),
        Some("client_credentials")
    );
    assert_eq!(stats.last_token_scope.as_deref(), Some("read write"));
    assert_eq!(
        stats.last_token_audience.as_deref(),
        Some("https://api.example")
    );
    let extra = [("resource".to_owned(), "r1".to_owned())];
    assert_eq!(stats.last_token_extra_params, extra.into_iter().collect());
    // The token endpoint is not an API call.
    assert_eq!((stats.total_requests, stats.accepted_auth), (1, 1));
    api.shutdown().await;
}

#[tokio::test]
async fn client_credentials_with_basic_client_auth() {
    let api = start(oauth2(60)).await;
    let addr = api.addr();
    // Raw id:secret, as most clients send it...
    let raw = basic(CLIENT_ID, CLIENT_SECRET);
    let resp = token_request(
        addr,
        &[("Authorization", &raw)],
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(resp.status, 200, "{:?}", resp.json());
    assert_eq!(
        resp.json().get("scope"),
        None,
        "no scope asked, none echoed"
    );
    let first = resp.json()["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    // ...and form-encoded first, as RFC 6749 §2.3.1 says.
    let encoded = basic(CLIENT_ID, CLIENT_SECRET_FORM);
    let resp = token_request(
        addr,
        &[("Authorization", &encoded)],
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(resp.status, 200, "{:?}", resp.json());
    let second = resp.json()["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_ne!(first, second);
    assert_eq!(call(addr, &first).await.status, 200);
    assert_eq!(call(addr, &second).await.status, 200);
    let stats = api.stats();
    assert_eq!((stats.token_requests, stats.tokens_issued), (2, 2));
    assert_eq!(stats.last_token_scope, None);
    assert!(stats.last_token_extra_params.is_empty());
    api.shutdown().await;
}

#[tokio::test]
async fn password_grant() {
    let api = start(oauth2(60)).await;
    let addr = api.addr();
    let client = basic(CLIENT_ID, CLIENT_SECRET);
    let auth = [("Authorization", client.as_str())];
    let form = "grant_type=password&username=alice&password=wonder+land&scope=s";
    let resp = token_request(addr, &auth, form).await;
    assert_eq!(resp.status, 200, "{:?}", resp.json());
    let token = resp.json()["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(call(addr, &token).await.status, 200);
    let stats = api.stats();
    assert_eq!(stats.last_token_grant_type.as_deref(), Some("password"));
    assert!(
        stats.last_token_extra_params.is_empty(),
        "credentials are never recorded: {:?}",
        stats.last_token_extra_params
    );

    let wrong = "grant_type=password&username=alice&password=wonderland";
    assert_oauth_error(
        &token_request(addr, &auth, wrong).await,
        400,
        "invalid_grant",
    );
    let nobody = "grant_type=password&username=eve&password=wonder+land";
    assert_oauth_error(
        &token_request(addr, &auth, nobody).await,
        400,
        "invalid_grant",
    );
    let partial = "grant_type=password&username=alice";
    assert_oauth_error(
        &token_request(addr, &auth, partial).await,
        400,
        "invalid_request",
    );
    // A client that authenticated in the form may use the grant too.
    let form = format!(
        "grant_type=password&username=alice&password=wonder%20land\
         &client_id={CLIENT_ID}&client_secret={CLIENT_SECRET_FORM}"
    );
    assert_eq!(token_request(addr, &[], &form).await.status, 200);
    // The client must authenticate whatever the grant.
    let anonymous = "grant_type=password&username=alice&password=wonder+land";
    assert_oauth_error(
        &token_request(addr, &[], anonymous).await,
        401,
        "invalid_client",
    );
    let stats = api.stats();
    assert_eq!((stats.token_requests, stats.tokens_issued), (6, 2));
    api.shutdown().await;
}

#[tokio::test]
async fn password_grant_needs_a_configured_resource_owner() {
    let api = start(with_auth(MockAuth::OAuth2(OAuth2Config {
        client_id: CLIENT_ID.into(),
        client_secret: "s".into(),
        ..OAuth2Config::default()
    })))
    .await;
    let client = basic(CLIENT_ID, "s");
    let form = "grant_type=password&username=alice&password=x";
    let resp = token_request(api.addr(), &[("Authorization", &client)], form).await;
    assert_oauth_error(&resp, 400, "unauthorized_client");
    api.shutdown().await;
}

#[tokio::test]
async fn token_endpoint_errors() {
    let api = start(oauth2(60)).await;
    let addr = api.addr();
    let client = basic(CLIENT_ID, CLIENT_SECRET);
    let auth = [("Authorization", client.as_str())];
    let cc = "grant_type=client_credentials";

    // invalid_client (401, with a Basic challenge).
    let wrong_secret = basic(CLIENT_ID, "nope");
    let resp = token_request(addr, &[("Authorization", &wrong_secret)], cc).await;
    assert_oauth_error(&resp, 401, "invalid_client");
    assert_eq!(
        resp.header("www-authenticate"),
        Some(r#"Basic realm="mock-api""#)
    );
    let wrong_id = format!("{cc}&client_id=other&client_secret={CLIENT_SECRET_FORM}");
    assert_oauth_error(
        &token_request(addr, &[], &wrong_id).await,
        401,
        "invalid_client",
    );
    let wrong_form_secret = format!("{cc}&client_id={CLIENT_ID}&client_secret=nope");
    let resp = token_request(addr, &[], &wrong_form_secret).await;
    assert_oauth_error(&resp, 401, "invalid_client");
    assert_oauth_error(&token_request(addr, &[], cc).await, 401, "invalid_client");
    let id_only = format!("{cc}&client_id={CLIENT_ID}");
    assert_oauth_error(
        &token_request(addr, &[], &id_only).await,
        401,
        "invalid_client",
    );
    let garbage = [("Authorization", "Basic ***")];
    assert_oauth_error(
        &token_request(addr, &garbage, cc).await,
        401,
        "invalid_client",
    );

    // unsupported_grant_type and invalid_request (400).
    let code = "grant_type=authorization_code&code=abc";
    assert_oauth_error(
        &token_request(addr, &auth, code).await,
        400,
        "unsupported_grant_type",
    );
    assert_oauth_error(
        &token_request(addr, &auth, "scope=x").await,
        400,
        "invalid_request",
    );
    let twice = "grant_type=client_credentials&grant_type=client_credentials";
    assert_oauth_error(
        &token_request(addr, &auth, twice).await,
        400,
        "invalid_request",
    );
    let both = format!("{cc}&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET_FORM}");
    assert_oauth_error(
        &token_request(addr, &auth, &both).await,
        400,
        "invalid_request",
    );
    let json_body = [("Content-Type", "application/json"), auth[0]];
    let resp = send(
        addr,
        "POST",
        "/oauth2/token",
        &json_body,
        br#"{"grant_type":"client_credentials"}"#,
    )
    .await;
    assert_oauth_error(&resp, 400, "invalid_request");
    let resp = send(addr, "GET", "/oauth2/token", &auth, b"").await;
    assert_eq!(resp.status, 405);
    assert_eq!(resp.header("allow"), Some("POST"));

    let stats = api.stats();
    assert_eq!((stats.token_requests, stats.tokens_issued), (12, 0));
    assert_eq!(
        stats.last_token_grant_type.as_deref(),
        Some("client_credentials")
    );
    // None of this was an API call.
    assert_eq!(
        (
            stats.total_requests,
            stats.accepted_auth,
            stats.refused_auth
        ),
        (0, 0, 0)
    );
    api.shutdown().await;
}

// ---------------------------------------------------------------- token life

#[tokio::test]
async fn guessed_and_other_scheme_tokens_are_refused() {
    let api = start(oauth2(60)).await;
    let addr = api.addr();
    let token = client_token(addr).await;
    let invalid = r#"Bearer realm="mock-api", error="invalid_token""#;
    assert_refused(&call(addr, "guess").await, "unknown token", invalid);
    let longer = format!("{token}x");
    assert_refused(&call(addr, &longer).await, "unknown token", invalid);
    let client = basic(CLIENT_ID, CLIENT_SECRET);
    let other_scheme = get_with(addr, "/v1/items", "Authorization", &client).await;
    assert_refused(
        &other_scheme,
        "missing credentials",
        r#"Bearer realm="mock-api""#,
    );
    // The client's own credentials are not an access token.
    assert_refused(&call(addr, CLIENT_SECRET).await, "unknown token", invalid);
    assert_eq!(call(addr, &token).await.status, 200);
    let stats = api.stats();
    assert_eq!((stats.accepted_auth, stats.refused_auth), (1, 4));
    api.shutdown().await;
}

#[tokio::test]
async fn tokens_expire_on_the_token_clock() {
    let api = start(oauth2(600)).await;
    let addr = api.addr();
    let token = client_token(addr).await;
    api.advance_token_clock(Duration::from_secs(590));
    assert_eq!(call(addr, &token).await.status, 200, "10 s before expiry");
    api.advance_token_clock(Duration::from_secs(20));
    let expired = call(addr, &token).await;
    let invalid = r#"Bearer realm="mock-api", error="invalid_token""#;
    assert_refused(&expired, "expired token", invalid);
    assert!(
        expired
            .header("www-authenticate")
            .expect("challenge")
            .contains("expired token"),
        "the challenge says why"
    );
    // A new token lives its full lifetime from the (advanced) clock.
    let fresh = client_token(addr).await;
    assert_eq!(call(addr, &fresh).await.status, 200);

    // The same over HTTP, for the binary.
    let advance = send(
        addr,
        "POST",
        "/_mock/advance-token-clock",
        &[],
        br#"{"secs":601}"#,
    )
    .await;
    assert_eq!(advance.status, 204);
    assert_eq!(call(addr, &fresh).await.status, 401);
    let bad = send(addr, "POST", "/_mock/advance-token-clock", &[], b"60").await;
    assert_eq!(bad.status, 400);
    let stats = api.stats();
    assert_eq!((stats.accepted_auth, stats.refused_auth), (2, 2));
    api.shutdown().await;
}

#[tokio::test]
async fn tokens_expire_in_real_time() {
    let api = start(oauth2(1)).await;
    let token = client_token(api.addr()).await;
    // Issued before the answer arrived, so after this sleep the token is at
    // least 1.2 s old whatever the scheduling: refused without any luck.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let resp = call(api.addr(), &token).await;
    assert_refused(&resp, "expired token", "Bearer");
    api.shutdown().await;
}

#[tokio::test]
async fn lifetime_changes_at_runtime_for_new_tokens_only() {
    let api = start(oauth2(600)).await;
    let addr = api.addr();
    let long = client_token(addr).await;
    let mut config = api.config();
    let MockAuth::OAuth2(oauth) = &mut config.auth else {
        unreachable!("configured above")
    };
    oauth.token_lifetime_secs = 5;
    api.set_config(config);
    let cc = format!(
        "grant_type=client_credentials&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET_FORM}"
    );
    let resp = token_request(addr, &[], &cc).await;
    assert_eq!(resp.json()["expires_in"], 5);
    let short = resp.json()["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(call(addr, &short).await.status, 200);
    api.advance_token_clock(Duration::from_secs(60));
    assert_eq!(call(addr, &short).await.status, 401);
    assert_eq!(call(addr, &long).await.status, 200, "kept its 600 s");

    // Lifetime 0: born expired.
    let zero = br#"{"auth":{"kind":"oauth2","client_id":"client-1","client_secret":"s3cr+t/=","token_lifetime_secs":0}}"#;
    send(addr, "PATCH", "/_mock/config", &[], zero).await;
    let resp = token_request(addr, &[], &cc).await;
    assert_eq!(resp.json()["expires_in"], 0);
    let dead = resp.json()["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_refused(&call(addr, &dead).await, "expired token", "Bearer");
    api.shutdown().await;
}

#[tokio::test]
async fn revocation_refuses_old_tokens_and_accepts_new_ones() {
    let api = start(oauth2(600)).await;
    let addr = api.addr();
    let (a, b) = (client_token(addr).await, client_token(addr).await);
    assert_eq!(api.revoke_tokens(), 2);
    let invalid = r#"Bearer realm="mock-api", error="invalid_token""#;
    assert_refused(&call(addr, &a).await, "revoked token", invalid);
    assert_refused(&call(addr, &b).await, "revoked token", invalid);
    let c = client_token(addr).await;
    assert_eq!(call(addr, &c).await.status, 200);

    // Over HTTP, for the binary; it counts only tokens not revoked yet.
    let resp = send(addr, "POST", "/oauth2/revoke-all", &[], b"").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json(), json!({ "revoked": 1 }));
    assert_eq!(call(addr, &c).await.status, 401);
    assert_eq!(api.revoke_tokens(), 0);
    let d = client_token(addr).await;
    assert_eq!(call(addr, &d).await.status, 200);

    let stats = api.stats();
    assert_eq!((stats.token_requests, stats.tokens_issued), (4, 4));
    assert_eq!((stats.accepted_auth, stats.refused_auth), (2, 3));
    assert_eq!(stats.total_requests, 2);
    api.shutdown().await;
}

#[tokio::test]
async fn reset_zeroes_auth_counters_but_keeps_tokens() {
    let api = start(oauth2(600)).await;
    let addr = api.addr();
    let token = client_token(addr).await;
    assert_eq!(call(addr, &token).await.status, 200);
    assert_eq!(call(addr, "nope").await.status, 401);
    api.reset();
    assert_eq!(api.stats(), MockStats::default());
    assert_eq!(call(addr, &token).await.status, 200);
    let stats: MockStats =
        serde_json::from_slice(&get(addr, "/_mock/stats").await.body).expect("stats JSON");
    assert_eq!(stats.accepted_auth, 1);
    assert_eq!(stats.tokens_issued, 0);
    api.shutdown().await;
}

// ---------------------------------------------------------------- the binary

#[cfg(unix)]
#[tokio::test]
async fn binary_static_bearer_never_prints_the_token() {
    let secret = "Sekr1t-bearer-value";
    let (child, addr) = common::spawn_binary(&["--auth", "bearer", "--auth-token", secret]).await;
    assert_eq!(get(addr, "/").await.status, 401);
    assert_eq!(call(addr, secret).await.status, 200);
    let stderr = common::stop_binary(child).await;
    assert!(stderr.contains("mock-api auth: bearer"), "{stderr}");
    assert!(stderr.contains(r#""refused_auth":1"#), "{stderr}");
    assert!(!stderr.contains(secret), "secret in stderr: {stderr}");
}

#[cfg(unix)]
#[tokio::test]
async fn binary_api_keys_and_basic() {
    let (child, addr) = common::spawn_binary(&[
        "--auth",
        "api-key-header",
        "--auth-header",
        "X-Key",
        "--auth-key",
        "k1",
    ])
    .await;
    assert_eq!(get_with(addr, "/", "X-Key", "k1").await.status, 200);
    assert_eq!(get_with(addr, "/", "X-Api-Key", "k1").await.status, 401);
    common::stop_binary(child).await;

    let (child, addr) =
        common::spawn_binary(&["--auth", "api-key-query", "--auth-key", "k2"]).await;
    assert_eq!(get(addr, "/?api_key=k2").await.status, 200, "default param");
    common::stop_binary(child).await;

    let args = [
        "--auth",
        "basic",
        "--auth-username",
        "u",
        "--auth-password",
        "p",
    ];
    let (child, addr) = common::spawn_binary(&args).await;
    assert_eq!(
        get_with(addr, "/", "Authorization", &basic("u", "p"))
            .await
            .status,
        200
    );
    assert_eq!(
        get_with(addr, "/", "Authorization", &basic("u", "q"))
            .await
            .status,
        401
    );
    common::stop_binary(child).await;
}

#[cfg(unix)]
#[tokio::test]
async fn binary_oauth2_token_expiry_and_revocation() {
    let secret = "Client-Sekr1t";
    let (child, addr) = common::spawn_binary(&[
        "--auth",
        "oauth2",
        "--client-id",
        "cid",
        "--client-secret",
        secret,
        "--auth-username",
        "alice",
        "--auth-password",
        "Owner-Passw0rd",
        "--token-lifetime-secs",
        "60",
    ])
    .await;
    let client = basic("cid", secret);
    let auth = [("Authorization", client.as_str())];
    let resp = token_request(addr, &auth, "grant_type=client_credentials").await;
    assert_eq!(resp.json()["expires_in"], 60);
    let first = resp.json()["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let form = "grant_type=password&username=alice&password=Owner-Passw0rd";
    let resp = token_request(addr, &auth, form).await;
    assert_eq!(resp.status, 200);
    let second = resp.json()["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(call(addr, &first).await.status, 200);

    let resp = send(addr, "POST", "/oauth2/revoke-all", &[], b"").await;
    assert_eq!(resp.json(), json!({ "revoked": 2 }));
    assert_eq!(call(addr, &second).await.status, 401);
    let resp = token_request(addr, &auth, "grant_type=client_credentials").await;
    let third = resp.json()["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(call(addr, &third).await.status, 200);
    send(
        addr,
        "POST",
        "/_mock/advance-token-clock",
        &[],
        br#"{"secs":61}"#,
    )
    .await;
    assert_eq!(call(addr, &third).await.status, 401);

    let config: Value = get(addr, "/_mock/config").await.json();
    assert_eq!(config["auth"]["kind"], "oauth2");
    assert_eq!(config["auth"]["token_lifetime_secs"], 60);
    let stderr = common::stop_binary(child).await;
    assert!(stderr.contains("mock-api auth: oauth2"), "{stderr}");
    for secret in [secret, "Owner-Passw0rd", &first, &third] {
        assert!(!stderr.contains(secret), "secret in stderr: {stderr}");
    }
}

#[cfg(unix)]
#[tokio::test]
async fn binary_refuses_inconsistent_auth_flags_without_echoing_them() {
    let cases: [&[&str]; 4] = [
        &["--auth-token", "Sekr1t"],
        &["--auth", "bearer"],
        &[
            "--auth",
            "basic",
            "--auth-username",
            "u",
            "--client-secret",
            "Sekr1t",
        ],
        &[
            "--auth",
            "oauth2",
            "--client-id",
            "c",
            "--client-secret",
            "Sekr1t",
            "--auth-username",
            "u",
        ],
    ];
    for args in cases {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_mock-api"))
            .args(["--bind", "127.0.0.1:0"])
            .args(args)
            .output()
            .await
            .expect("run mock-api");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?} must not start");
        assert!(stderr.contains("--"), "names the flag: {stderr}");
        assert!(!stderr.contains("Sekr1t"), "{args:?}: {stderr}");
    }
}
