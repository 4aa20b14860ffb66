//! HTTP side: the `/_mock/*` control endpoints and the catch-all "API" (the
//! `/oauth2/*` endpoints live in `oauth`).

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use rand::Rng;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::auth::{self, Verdict};
use crate::ledger::Counters;
use crate::oauth::{self, TokenStore};
use crate::{MockConfig, MockStats};

/// Request bodies up to a few MB must be accepted; axum's default is 2 MiB.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// State shared by the handlers and the `MockApi` handle.
pub(crate) struct Shared {
    config: RwLock<Arc<MockConfig>>,
    pub(crate) counters: Counters,
    pub(crate) tokens: TokenStore,
    /// Flips to `true` on shutdown so hanging requests end early.
    shutdown: watch::Receiver<bool>,
}

impl Shared {
    pub(crate) fn new(config: MockConfig, shutdown: watch::Receiver<bool>) -> Self {
        Shared {
            config: RwLock::new(Arc::new(config)),
            counters: Counters::default(),
            tokens: TokenStore::default(),
            shutdown,
        }
    }

    /// Cheap per-request read: clones an `Arc`, not the config.
    pub(crate) fn config(&self) -> Arc<MockConfig> {
        Arc::clone(&self.config.read().expect("mock-api config lock poisoned"))
    }

    pub(crate) fn set_config(&self, config: MockConfig) {
        *self.config.write().expect("mock-api config lock poisoned") = Arc::new(config);
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/_mock/stats", get(get_stats))
        .route(
            "/_mock/config",
            get(get_config).put(put_config).patch(patch_config),
        )
        .route("/_mock/reset", post(post_reset))
        .route("/_mock/advance-token-clock", post(post_advance_token_clock))
        // `any`: these fall back to the API when OAuth2 is off, whatever the method.
        .route("/oauth2/token", any(oauth::token))
        .route("/oauth2/revoke-all", any(oauth::revoke_all))
        .fallback(api)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared)
}

// ---------------------------------------------------------------- control

async fn get_stats(State(shared): State<Arc<Shared>>) -> Json<MockStats> {
    Json(shared.counters.snapshot())
}

async fn get_config(State(shared): State<Arc<Shared>>) -> Json<MockConfig> {
    Json((*shared.config()).clone())
}

/// Replaces the whole config; fields missing from the JSON take their defaults.
/// The body is parsed regardless of `Content-Type` so plain `curl -d` works.
async fn put_config(State(shared): State<Arc<Shared>>, body: Bytes) -> ConfigReply {
    let config: MockConfig = serde_json::from_slice(&body).map_err(bad_config)?;
    shared.set_config(config.clone());
    Ok(Json(config))
}

/// Merges the given fields into the current config (handy from curl:
/// `{"outage":true}` then `{"outage":false}` keeps everything else).
async fn patch_config(State(shared): State<Arc<Shared>>, body: Bytes) -> ConfigReply {
    let patch: Value = serde_json::from_slice(&body).map_err(bad_config)?;
    let merged = merge_config(&shared.config(), patch).map_err(bad_config)?;
    shared.set_config(merged.clone());
    Ok(Json(merged))
}

type ConfigReply = Result<Json<MockConfig>, (StatusCode, String)>;

fn bad_config(err: serde_json::Error) -> (StatusCode, String) {
    (
        StatusCode::BAD_REQUEST,
        format!("invalid mock config: {err}"),
    )
}

fn merge_config(current: &MockConfig, patch: Value) -> serde_json::Result<MockConfig> {
    let mut value = serde_json::to_value(current)?;
    if let (Value::Object(base), Value::Object(fields)) = (&mut value, patch) {
        base.extend(fields);
    }
    serde_json::from_value(value)
}

async fn post_reset(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.counters.reset();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct Advance {
    secs: u64,
}

/// `{"secs": N}`: `MockApi::advance_token_clock` for the binary.
async fn post_advance_token_clock(
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> Result<StatusCode, (StatusCode, String)> {
    let advance: Advance = serde_json::from_slice(&body).map_err(|err| {
        (
            StatusCode::BAD_REQUEST,
            format!("expected {{\"secs\": N}}: {err}"),
        )
    })?;
    shared
        .tokens
        .advance_clock(Duration::from_secs(advance.secs));
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- the API

/// How a request will be answered, decided up front so that the (non-`Send`)
/// thread RNG is never held across an `.await`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fate {
    Outage,
    RateLimited,
    Random429,
    Random503,
    Hang,
    Ok,
}

pub(crate) async fn api(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let config = shared.config();
    // Before any other gate: a refused call is no API call at all, so it must
    // not touch the idempotency keys, the windows or the rate-limit bucket.
    match auth::check(&config.auth, &headers, &uri, &shared.tokens) {
        Verdict::Open => {}
        Verdict::Accepted => shared.counters.count_auth(true),
        Verdict::Refused(refusal) => {
            shared.counters.count_auth(false);
            return auth::refuse(&config.auth, refusal);
        }
    }
    let key = idempotency_key(&headers, &config.idempotency_header);
    let fate = admit(&shared, &config, key.as_deref());
    let request = Asked {
        method: &method,
        uri: &uri,
        headers: &headers,
        key: key.as_deref(),
        body: &body,
    };
    let response = answer(&shared, &config, fate, &request).await;
    shared
        .counters
        .record_status(response.status().as_u16(), key.as_deref());
    response
}

fn idempotency_key(headers: &HeaderMap, name: &str) -> Option<String> {
    // `HeaderMap::get(&str)` matches case-insensitively and yields `None`
    // for a name that is not a valid header name.
    let value = headers.get(name)?;
    Some(String::from_utf8_lossy(value.as_bytes()).into_owned())
}

/// Counts the request and applies the deterministic gates (outage, enforced
/// rate limit) under the ledger lock, then rolls the random outcomes.
fn admit(shared: &Shared, config: &MockConfig, key: Option<&str>) -> Fate {
    let now = Instant::now();
    let gate = {
        let mut ledger = shared.counters.lock();
        ledger.count_arrival(now, key);
        if config.outage {
            Some(Fate::Outage)
        } else {
            // Outages do not consume tokens: the bucket models the API's
            // capacity, which an outage does not use.
            let limited = config
                .rate_limit
                .is_some_and(|rate| !ledger.bucket.try_take(now, rate, config.burst));
            limited.then_some(Fate::RateLimited)
        }
    };
    gate.unwrap_or_else(|| roll_fate(config))
}

fn roll_fate(config: &MockConfig) -> Fate {
    let mut rng = rand::rng();
    // Comparisons against NaN are false, so a nonsense rate means "never".
    if rng.random::<f64>() < config.rate_429 {
        Fate::Random429
    } else if rng.random::<f64>() < config.error_rate {
        Fate::Random503
    } else if rng.random::<f64>() < config.timeout_rate {
        Fate::Hang
    } else {
        Fate::Ok
    }
}

fn sample_latency(config: &MockConfig) -> Duration {
    let (min, max) = (config.latency_min_ms, config.latency_max_ms);
    let ms = if max > min {
        rand::rng().random_range(min..=max)
    } else {
        min // max <= min: fixed latency, never a panicking empty range.
    };
    Duration::from_millis(ms)
}

/// What a request to the API asked, as the answer needs it.
struct Asked<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    key: Option<&'a str>,
    body: &'a Bytes,
}

async fn answer(shared: &Shared, config: &MockConfig, fate: Fate, request: &Asked<'_>) -> Response {
    match fate {
        // An outage is a dead dependency: answer at once, no latency.
        Fate::Outage => error(StatusCode::SERVICE_UNAVAILABLE, "outage"),
        Fate::Hang => {
            hang(shared, config.hang_ms).await;
            error(StatusCode::GATEWAY_TIMEOUT, "upstream timeout")
        }
        _ => {
            // Errors and 429s carry the normal latency too, like a real API.
            tokio::time::sleep(sample_latency(config)).await;
            match fate {
                Fate::RateLimited => too_many(config.retry_after_secs, "rate limit exceeded"),
                Fate::Random429 => too_many(config.retry_after_secs, "throttled"),
                Fate::Random503 => error(StatusCode::SERVICE_UNAVAILABLE, "injected error"),
                _ => by_path(shared, config, request),
            }
        }
    }
}

/// Sleeps `hang_ms`, but returns early on shutdown so a hung request never
/// holds up a graceful stop.
async fn hang(shared: &Shared, hang_ms: u64) {
    let mut shutdown = shared.shutdown.clone();
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(hang_ms)) => {}
        _ = shutdown.wait_for(|stopping| *stopping) => {}
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "ok": false, "error": message }))).into_response()
}

fn too_many(retry_after_secs: u64, message: &str) -> Response {
    let mut response = error(StatusCode::TOO_MANY_REQUESTS, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    response
}

/// The answer a path asks for (see the crate's docs): `/status/<code>/…` that status,
/// `/plain/…` a text answer, anything else the echo.
fn by_path(shared: &Shared, config: &MockConfig, request: &Asked<'_>) -> Response {
    let path = request.uri.path();
    if path.starts_with("/batch/") {
        return batch(shared, config, request.body);
    }
    if let Some(rest) = path.strip_prefix("/status/") {
        let code = rest.split('/').next().unwrap_or_default();
        return match code.parse::<u16>().ok().and_then(|c| StatusCode::from_u16(c).ok()) {
            Some(status) if status.is_success() => {
                let mut response = echo(request);
                *response.status_mut() = status;
                response
            }
            Some(status) => (
                status,
                Json(json!({ "ok": false, "error": "the status the path asked for", "status": status.as_u16() })),
            )
                .into_response(),
            None => error(StatusCode::BAD_REQUEST, "/status/<code>: not a status code"),
        };
    }
    if path.starts_with("/plain/") {
        let text = format!("plain answer to {} {path}\n", request.method);
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            text,
        )
            .into_response();
    }
    echo(request)
}

/// A batch endpoint: one answer item per item sent (see the crate's docs).
fn batch(shared: &Shared, config: &MockConfig, body: &Bytes) -> Response {
    let items = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(items)) => items,
        Ok(Value::Object(object)) => match object.into_iter().find_map(|(_, v)| match v {
            Value::Array(items) => Some(items),
            _ => None,
        }) {
            Some(items) => items,
            None => return error(StatusCode::BAD_REQUEST, "batch: no array in the body"),
        },
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "batch: the body is not a JSON array",
            );
        }
    };
    let count = items.len();
    let mut failed = Vec::new();
    let mut results: Vec<Value> = (items.into_iter().enumerate())
        .map(|(i, item)| {
            let id = item.get("id").cloned().unwrap_or(Value::Null);
            if config.batch_fail_index == Some(i) {
                failed.push(id.clone());
                json!({ "id": id, "ok": false, "error": format!("item {i} rejected by the mock") })
            } else {
                json!({ "id": id, "ok": true, "echo": item })
            }
        })
        .collect();
    if config.batch_reverse {
        results.reverse();
    }
    shared.counters.count_batch(count, failed);
    (StatusCode::OK, Json(json!({ "results": results }))).into_response()
}

/// 200 with what the request was: method, path, query, idempotency key, body (as JSON when it
/// is JSON, else as text), Content-Type and User-Agent; headers `X-Mock-Path` and an `ETag` of
/// the body's length, for clients that keep response headers.
fn echo(request: &Asked<'_>) -> Response {
    let body = request.body;
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let mut payload = json!({
        "ok": true,
        "method": request.method.as_str(),
        "path": request.uri.path(),
        "query": request.uri.query(),
        "key": request.key,
        "body_len": body.len(),
        "echo": parsed,
    });
    let text = |name| {
        (request.headers.get(name))
            .map(|v| Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
    };
    if let Some(ct) = text(header::CONTENT_TYPE) {
        payload["content_type"] = ct;
    }
    if let Some(ua) = text(header::USER_AGENT) {
        payload["user_agent"] = ua;
    }
    if payload["echo"].is_null() && !body.is_empty() {
        payload["body_text"] = Value::String(String::from_utf8_lossy(body).into_owned());
    }
    let mut response = (StatusCode::OK, Json(payload)).into_response();
    let headers = response.headers_mut();
    if let Ok(path) = HeaderValue::from_str(request.uri.path()) {
        headers.insert("x-mock-path", path);
    }
    headers.insert(header::ETAG, HeaderValue::from(body.len()));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_unmentioned_fields() {
        let current = MockConfig {
            latency_max_ms: 7,
            ..MockConfig::default()
        };
        let merged = merge_config(&current, json!({ "outage": true })).expect("merge");
        assert!(merged.outage);
        assert_eq!(merged.latency_max_ms, 7);
    }

    #[test]
    fn latency_with_inverted_range_is_fixed() {
        let config = MockConfig {
            latency_min_ms: 5,
            latency_max_ms: 1,
            ..MockConfig::default()
        };
        assert_eq!(sample_latency(&config), Duration::from_millis(5));
    }
}
