//! The HTTP floor under the worker's records per CPU-second: N calls of the demo's shape (a POST
//! with a JSON body, a query and a header, 64 in flight) against an API at `URL`, made one of two
//! ways, for `scripts/bench-cpu.py --floor` to time with wait4:
//!
//! - `reqwest`: the container's pooled client alone, one request per call;
//! - `stack`: through the whole client stack (deadline, retry, breaker, concurrency, rate limit
//!   with a local bucket at 1,000,000/s, timeout, auth, http), as the worker calls it.
//!
//! What the worker spends beyond `stack` is its own (records, rendering, results, ledger); what
//! `stack` spends beyond `reqwest` is the layers'.
//!
//! `cargo run --release -p fanout-client --example http_floor -- stack http://127.0.0.1:8080 100000`

use std::sync::Arc;

use bytes::Bytes;
use fanout_client::http::pooled_client;
use fanout_client::stack::ClientStack;
use fanout_core::config::ClientConfig;
use fanout_core::ports::ApiClient;
use fanout_core::request::ApiRequest;
use futures::StreamExt;
use http::{HeaderName, HeaderValue, Method};

// The worker's allocator: the floor is measured as the worker runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const IN_FLIGHT: usize = 64;

fn request(base: &str, i: u64) -> ApiRequest {
    ApiRequest {
        method: Method::POST,
        url: format!("{base}/v1/users/{i}/score?email=user{i}%40example.com"),
        headers: vec![
            (
                HeaderName::from_static("x-source"),
                HeaderValue::from_static("s3-api-fanout"),
            ),
            (
                HeaderName::from_static("content-type"),
                HeaderValue::from_static("application/json"),
            ),
        ],
        body: Some(Bytes::from(format!(
            r#"{{"id":"{i}","name":"User {i}","amount":"{}.25"}}"#,
            i % 1000
        ))),
        records: 1,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, base, n] = args.as_slice() else {
        anyhow::bail!("usage: http_floor reqwest|stack URL N");
    };
    let n: u64 = n.parse()?;
    let client = pooled_client()?;
    let ok = match mode.as_str() {
        "reqwest" => {
            futures::stream::iter(0..n)
                .map(|i| {
                    let client = client.clone();
                    let r = request(base, i);
                    async move {
                        let mut builder = client.request(r.method, &r.url);
                        for (name, value) in r.headers {
                            builder = builder.header(name, value);
                        }
                        let response = builder.body(r.body.unwrap_or_default()).send().await;
                        match response {
                            Ok(resp) => resp.bytes().await.is_ok(),
                            Err(_) => false,
                        }
                    }
                })
                .buffer_unordered(IN_FLIGHT)
                .filter(|ok| futures::future::ready(*ok))
                .count()
                .await
        }
        "stack" => {
            let stack = Arc::new(ClientStack::new(client));
            let config = ClientConfig {
                concurrency: IN_FLIGHT,
                rate_limit_per_sec: 1_000_000,
                rate_limit_burst: 100_000,
                ..ClientConfig::default()
            };
            futures::stream::iter(0..n)
                .map(|i| {
                    let (stack, config) = (stack.clone(), &config);
                    let r = request(base, i);
                    async move { stack.call(&r, config).await.error.is_none() }
                })
                .buffer_unordered(IN_FLIGHT)
                .filter(|ok| futures::future::ready(*ok))
                .count()
                .await
        }
        other => anyhow::bail!("unknown mode {other}: reqwest or stack"),
    };
    println!("{{\"mode\":\"{mode}\",\"calls\":{n},\"succeeded\":{ok}}}");
    anyhow::ensure!(ok as u64 == n, "{} of {n} calls failed", n - ok as u64);
    Ok(())
}
