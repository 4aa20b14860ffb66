//! The innermost service: one attempt over reqwest.
//!
//! Sends the [`ApiCall`]'s request (with the auth layer's credential, replacing any header of
//! the same name), keeps at most `max_body` bytes of the response, and classifies failures:
//! [`ClientError::Connect`] when no connection was made (safe to retry: nothing was sent),
//! [`ClientError::Timeout`] for reqwest's own timeouts, [`ClientError::InvalidRequest`] for a
//! request that cannot be built, and [`ClientError::Transport`] for the rest.
//!
//! No timeout is set here: the timeout layer bounds the whole attempt, body included.

use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use tower::Service;

use super::{ApiCall, ApiResponse, CallFuture, ClientError};

/// Past this much body the rest is not read: dropping the connection is cheaper than
/// draining a runaway response to keep it for reuse.
const DRAIN_LIMIT: usize = 1 << 20;

/// One client per container: its pool keeps connections alive across calls and invocations,
/// and HTTP/2 is used when the API offers it (ALPN).
pub fn pooled_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("s3-api-fanout/", env!("CARGO_PKG_VERSION")))
        .build()
}

#[derive(Clone, Debug)]
pub struct HttpService {
    client: reqwest::Client,
    max_body: usize,
    /// The origin of the first URL this service sent to, parsed once for all the calls after.
    origin: Arc<OnceLock<ParsedOrigin>>,
}

impl HttpService {
    pub fn new(client: reqwest::Client, max_body: usize) -> Self {
        Self {
            client,
            max_body,
            origin: Arc::default(),
        }
    }
}

impl Service<ApiCall> for HttpService {
    type Response = ApiResponse;
    type Error = ClientError;
    type Future = CallFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ClientError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: ApiCall) -> CallFuture {
        let client = self.client.clone();
        let max_body = self.max_body;
        let origin = self.origin.clone();
        Box::pin(async move { send(&client, &origin, &call, max_body).await })
    }
}

/// The scheme, credentials, host and port of a URL as written (`http://api.example.com:8080`)
/// and as parsed. Every call of a pipeline usually goes to one origin: a URL that starts with it
/// is parsed as a path relative to the parsed origin, which skips parsing the host again (with
/// its IDNA mapping), a few percent of a call's CPU. The result is the same URL: a path-absolute
/// reference takes everything but its path and query from its base.
#[derive(Debug)]
struct ParsedOrigin {
    written: String,
    parsed: reqwest::Url,
}

impl ParsedOrigin {
    /// The origin of `url` (None when it has none to reuse: not parsable, or no host).
    fn of(url: &str) -> Option<Self> {
        let after_scheme = url.find("://")? + 3;
        let end = url[after_scheme..]
            .find(['/', '?', '#', '\\'])
            .map_or(url.len(), |i| after_scheme + i);
        let written = &url[..end];
        let parsed = reqwest::Url::parse(written).ok()?;
        parsed.has_host().then(|| Self {
            written: written.to_string(),
            parsed,
        })
    }

    /// `url` parsed, relative to this origin when it starts with it.
    fn parse(&self, url: &str) -> Result<reqwest::Url, url::ParseError> {
        match url.strip_prefix(self.written.as_str()) {
            // Not `//` or `/\`: those would name another host.
            Some(rest) if rest.starts_with('/') && !rest[1..].starts_with(['/', '\\']) => {
                reqwest::Url::options()
                    .base_url(Some(&self.parsed))
                    .parse(rest)
            }
            _ => reqwest::Url::parse(url),
        }
    }
}

/// `url` parsed, through the service's origin (set by the first URL that has one).
fn parse_url(origin: &OnceLock<ParsedOrigin>, url: &str) -> Result<reqwest::Url, ClientError> {
    let parsed = match origin.get() {
        Some(origin) => origin.parse(url),
        None => {
            if let Some(first) = ParsedOrigin::of(url) {
                let _ = origin.set(first);
            }
            reqwest::Url::parse(url)
        }
    };
    // The rendered URL is valid (the config's check); the error would not say why.
    parsed.map_err(|e| ClientError::InvalidRequest(format!("the request URL: {e}")))
}

async fn send(
    client: &reqwest::Client,
    origin: &OnceLock<ParsedOrigin>,
    call: &ApiCall,
    max_body: usize,
) -> Result<ApiResponse, ClientError> {
    let req = &call.request;
    let mut headers = HeaderMap::with_capacity(req.headers.len() + 1);
    for (name, value) in &req.headers {
        headers.append(name.clone(), value.clone());
    }
    let query = call.credential.as_ref().and_then(|c| c.apply(&mut headers));
    let mut url = parse_url(origin, &req.url)?;
    if let Some((name, value)) = query {
        url.query_pairs_mut().append_pair(name, value);
    }
    let mut builder = client.request(req.method.clone(), url).headers(headers);
    if let Some(body) = &req.body {
        builder = builder.body(body.clone());
    }
    let mut response = builder.send().await.map_err(classify)?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let mut body = BytesMut::new();
    let mut seen = 0usize;
    while let Some(chunk) = response.chunk().await.map_err(classify)? {
        seen += chunk.len();
        let room = max_body.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if seen > DRAIN_LIMIT {
            break;
        }
    }
    let truncated = seen > body.len();
    // Taken, not copied: `response.keep_headers` picks from them later.
    let mut headers = std::mem::take(response.headers_mut());
    let body = match &call.credential {
        Some(c) => {
            c.scrub_headers(&mut headers);
            c.scrub(body.freeze())
        }
        None => body.freeze(),
    };
    Ok(ApiResponse {
        status,
        truncated,
        body,
        retry_after,
        credential_renewed: false,
        headers,
    })
}

/// Retry-After in seconds. The HTTP-date form is not supported: the call then falls back to
/// its own backoff, which is still bounded.
fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

fn classify(e: reqwest::Error) -> ClientError {
    // Without the URL: it may carry an API key (client.auth with query_param), and this text
    // goes into failed records and logs.
    let e = e.without_url();
    let text = error_chain(&e);
    if e.is_builder() {
        ClientError::InvalidRequest(text)
    } else if e.is_connect() {
        ClientError::Connect(text)
    } else if e.is_timeout() {
        ClientError::Timeout { after: None }
    } else {
        ClientError::Transport(text)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use tokio::net::TcpListener;
    use tower::ServiceExt;

    use super::*;
    use crate::auth::Credential;
    use crate::testing::{reply, serve};
    use fanout_core::request::ApiRequest;

    fn call_to(url: &str, headers: &[(&str, &str)]) -> ApiCall {
        ApiCall::new(ApiRequest {
            method: reqwest::Method::GET,
            url: url.into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.parse().unwrap(), v.parse().unwrap()))
                .collect(),
            body: None,
            records: 1,
        })
    }

    #[tokio::test]
    async fn reads_status_body_and_retry_after() {
        let (url, _) = serve(reply(
            "429 Too Many Requests",
            "retry-after: 3\r\n",
            "slow down",
        ))
        .await;
        let svc = HttpService::new(reqwest::Client::new(), 1024);

        let r = svc.oneshot(call_to(&url, &[])).await.unwrap();

        assert_eq!(r.status, 429);
        assert_eq!(&r.body[..], b"slow down");
        assert!(!r.truncated);
        assert_eq!(r.retry_after, Some(Duration::from_secs(3)));
    }

    #[tokio::test]
    async fn caps_the_body_and_says_so() {
        let (url, _) = serve(reply("200 OK", "", &"x".repeat(5000))).await;
        let svc = HttpService::new(reqwest::Client::new(), 100);

        let r = svc.oneshot(call_to(&url, &[])).await.unwrap();

        assert_eq!(r.body.len(), 100);
        assert!(r.truncated);
        assert_eq!(r.retry_after, None);
    }

    #[tokio::test]
    async fn the_credential_replaces_a_header_of_the_same_name() {
        let (url, mut requests) = serve(reply("200 OK", "", "")).await;
        let svc = HttpService::new(reqwest::Client::new(), 100);
        let mut call = call_to(&url, &[("authorization", "stale"), ("x-source", "fanout")]);
        call.credential = Some(Credential::bearer("fresh").unwrap());

        svc.oneshot(call).await.unwrap();

        let request = requests.recv().await.unwrap().to_ascii_lowercase();
        assert!(
            request.contains("authorization: bearer fresh\r\n"),
            "{request}"
        );
        assert!(!request.contains("stale"), "{request}");
        assert!(request.contains("x-source: fanout\r\n"), "{request}");
    }

    /// A loopback address nothing listens on: bound, then dropped.
    async fn free_addr() -> std::net::SocketAddr {
        TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
    }

    #[tokio::test]
    async fn a_query_credential_is_added_to_the_url_and_kept_out_of_errors() {
        let (url, mut requests) = serve(reply("200 OK", "", "")).await;
        let svc = HttpService::new(reqwest::Client::new(), 100);
        let mut call = call_to(&format!("{url}?id=7"), &[]);
        call.credential = Some(Credential::query("api_key", "k&y=1"));
        svc.oneshot(call).await.unwrap();
        let request = requests.recv().await.unwrap();
        assert!(request.contains("?id=7&api_key=k%26y%3D1 "), "{request}");

        // Nothing listens here: the connect error must not carry the URL with its key.
        let addr = free_addr().await;
        let svc = HttpService::new(reqwest::Client::new(), 100);
        let mut call = call_to(&format!("http://{addr}/x"), &[]);
        call.credential = Some(Credential::query("api_key", "KEY-DO-NOT-LOG"));
        let err = svc.oneshot(call).await.unwrap_err().to_string();
        assert!(!err.contains("KEY-DO-NOT-LOG"), "{err}");
    }

    #[tokio::test]
    async fn refused_connection_is_a_connect_error() {
        let addr = free_addr().await;
        let svc = HttpService::new(reqwest::Client::new(), 100);

        let result = svc.oneshot(call_to(&format!("http://{addr}/"), &[])).await;

        assert!(matches!(result, Err(ClientError::Connect(_))), "{result:?}");
    }

    #[tokio::test]
    async fn a_connection_dropped_mid_body_is_a_transport_error() {
        let (url, _) = serve(
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\nconnection: close\r\n\r\npartial".to_vec(),
        )
        .await;
        let svc = HttpService::new(reqwest::Client::new(), 1024);

        let result = svc.oneshot(call_to(&url, &[])).await;

        assert!(
            matches!(result, Err(ClientError::Transport(_))),
            "{result:?}"
        );
        assert!(!result.unwrap_err().to_string().is_empty());
    }

    #[tokio::test]
    async fn an_unbuildable_request_is_invalid() {
        let svc = HttpService::new(reqwest::Client::new(), 100);
        let result = svc.oneshot(call_to("not a url", &[])).await;
        assert!(
            matches!(result, Err(ClientError::InvalidRequest(_))),
            "{result:?}"
        );
    }

    #[test]
    fn retry_after_in_seconds_only() {
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn pooled_client_builds() {
        pooled_client().unwrap();
    }

    /// Through an origin parsed from the first URL, or parsed whole: the same URL, or the same
    /// error.
    fn both_ways(first: &str, url: &str) -> (Result<String, String>, Result<String, String>) {
        let origin = OnceLock::new();
        parse_url(&origin, first).unwrap();
        let through = origin.get().expect("an origin").parse(url);
        let whole = reqwest::Url::parse(url);
        let show = |r: Result<reqwest::Url, url::ParseError>| {
            r.map(|u| u.to_string()).map_err(|e| e.to_string())
        };
        (show(through), show(whole))
    }

    #[test]
    fn a_url_of_the_first_origin_parses_as_if_whole() {
        for (first, url) in [
            (
                "http://127.0.0.1:8080/a",
                "http://127.0.0.1:8080/v1/users/7/score?email=a%40b.c",
            ),
            (
                "https://API.Example.com/x",
                "https://API.Example.com/a/./b/../c?q=1 2#frag",
            ),
            (
                "https://user:pw@h.example/",
                "https://user:pw@h.example/p?x=é&y=%zz",
            ),
            ("http://h:80/", "http://h:80/p\\q"),
        ] {
            let (through, whole) = both_ways(first, url);
            assert_eq!(through, whole, "{url}");
        }
    }

    #[test]
    fn a_url_that_names_another_host_is_parsed_whole() {
        let origin = OnceLock::new();
        parse_url(&origin, "http://a.example/x").unwrap();
        for url in [
            "http://a.example//b.example/p",
            "http://a.example/\\b.example/p",
            "http://a.example.evil/p",
            "http://a.example:81/p",
        ] {
            assert_eq!(
                parse_url(&origin, url).unwrap(),
                reqwest::Url::parse(url).unwrap(),
                "{url}"
            );
        }
        assert_eq!(
            parse_url(&origin, "http://a.example.evil/p")
                .unwrap()
                .host_str(),
            Some("a.example.evil")
        );
    }

    proptest! {
        /// Any path, query and fragment after the first URL's origin parses the same both ways.
        #[test]
        fn paths_after_the_origin_parse_as_if_whole(
            origin in prop::sample::select(vec![
                "http://127.0.0.1:8080", "https://api.example.com", "http://Bücher.example:8000",
                "https://u:p@h.example",
            ]),
            rest in "/[a-zA-Z0-9%./?#=&@:;+ \\\\é\t{}|^`\\[\\]-]{0,40}",
        ) {
            let (through, whole) = both_ways(&format!("{origin}/first"), &format!("{origin}{rest}"));
            prop_assert_eq!(through, whole);
        }
    }
}
