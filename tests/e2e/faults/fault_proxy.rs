//! A fault proxy in front of the local AWS: forwards every request to the emulator, and while a
//! fault is set, answers a fraction of them with 500 or 503 instead (before they reach it, so nothing
//! happens behind a failed call; the AWS SDK's retries and the pipeline's must cope).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

#[derive(Default)]
struct Shared {
    /// Requests to fail, per thousand.
    fail_per_mille: AtomicU32,
    forwarded: AtomicU64,
    failed: AtomicU64,
}

pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

struct Ctx {
    shared: Arc<Shared>,
    upstream: String,
    client: reqwest::Client,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (e.g. `http://127.0.0.1:5000`) on a free loopback port.
    pub async fn start(upstream: &str) -> FaultProxy {
        let shared = Arc::new(Shared::default());
        let ctx = Arc::new(Ctx {
            shared: shared.clone(),
            upstream: upstream.trim_end_matches('/').to_string(),
            client: reqwest::Client::new(),
        });
        let app = axum::Router::new().fallback(forward).with_state(ctx);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FaultProxy { addr, shared, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Fails this fraction (0..=1) of requests from now on.
    pub fn fail(&self, fraction: f64) {
        self.shared
            .fail_per_mille
            .store((fraction * 1000.0).round() as u32, Ordering::SeqCst);
    }

    /// (requests forwarded, requests failed).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.shared.forwarded.load(Ordering::SeqCst),
            self.shared.failed.load(Ordering::SeqCst),
        )
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(State(ctx): State<Arc<Ctx>>, request: Request) -> Response {
    let per_mille = ctx.shared.fail_per_mille.load(Ordering::SeqCst);
    if per_mille > 0 && rand::random_range(0..1000) < per_mille {
        let n = ctx.shared.failed.fetch_add(1, Ordering::SeqCst);
        return injected(n % 2 == 0, request.headers().contains_key("x-amz-target"));
    }
    ctx.shared.forwarded.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            headers.append(name.clone(), value.clone());
        }
    }
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).unwrap();
    let upstream = ctx
        .client
        .request(method, format!("{}{path}", ctx.upstream))
        .headers(to_reqwest(&headers))
        .body(body)
        .send()
        .await;
    let upstream = match upstream {
        Ok(r) => r,
        Err(e) => {
            return Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .body(Body::from(e.to_string()))
                .unwrap();
        }
    };
    let mut response = Response::builder().status(upstream.status().as_u16());
    for (name, value) in upstream.headers() {
        // Content-Length stays: a HEAD's is the object's size.
        if name != "transfer-encoding" && name != "connection" {
            response = response.header(name.as_str(), value.as_bytes());
        }
    }
    let bytes = upstream.bytes().await.unwrap_or_default();
    response.body(Body::from(bytes)).unwrap()
}

/// A 500 or 503 in the service's own error format, as the SDKs parse and classify it (transient,
/// so retried): JSON for the `X-Amz-Target` protocols (DynamoDB, SQS), XML for S3.
fn injected(internal: bool, json: bool) -> Response {
    let (status, json_type, s3_code) = if internal {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "InternalError",
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "ServiceUnavailable",
        )
    };
    let (content_type, body) = if json {
        (
            "application/x-amz-json-1.0",
            format!(r#"{{"__type":"{json_type}","message":"injected fault"}}"#),
        )
    } else {
        (
            "application/xml",
            format!("<Error><Code>{s3_code}</Code><Message>injected fault</Message></Error>"),
        )
    };
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("x-amzn-query-error", format!("{json_type};Receiver"))
        .body(Body::from(body))
        .unwrap()
}

fn to_reqwest(headers: &HeaderMap) -> reqwest::header::HeaderMap {
    let mut out = reqwest::header::HeaderMap::new();
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            reqwest::header::HeaderName::from_bytes(name.as_str().as_bytes()),
            reqwest::header::HeaderValue::from_bytes(value.as_bytes()),
        ) {
            out.append(n, v);
        }
    }
    out
}
