//! `mock-api` binary: runs the mock REST API until SIGINT/SIGTERM.
//!
//! Prints exactly one line, `mock-api listening on http://ADDR`, to stdout once
//! bound so that scripts can wait for it. Final stats go to stderr on exit.

use std::io::Write;
use std::net::SocketAddr;
use std::str::FromStr;

use anyhow::Context;
use clap::Parser;
use mock_api::{MockApi, MockConfig};

/// Mock rate-limited REST API: injects latency, 429s, 503s and hangs, and
/// counts what clients do. Control endpoints: GET /_mock/stats,
/// GET|PUT|PATCH /_mock/config, POST /_mock/reset.
#[derive(Debug, Parser)]
#[command(name = "mock-api", version)]
struct Args {
    /// Address to bind (only this address is ever bound).
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: SocketAddr,

    /// Per-request latency in ms: a fixed `N` or a uniform range `MIN-MAX`.
    #[arg(long, value_name = "MIN-MAX", default_value = "0")]
    latency_ms: LatencyRange,

    /// Fraction (0..1) of requests answered 503.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,

    /// Fraction (0..1) of requests answered 429 with Retry-After.
    #[arg(long, default_value_t = 0.0)]
    rate_429: f64,

    /// Retry-After value (seconds) sent with every 429.
    #[arg(long, default_value_t = 1)]
    retry_after_secs: u64,

    /// Enforced limit in requests/second (token bucket); off when omitted.
    #[arg(long, value_name = "RPS")]
    rate_limit: Option<f64>,

    /// Bucket capacity as a fraction of --rate-limit (minimum one request).
    #[arg(long, default_value_t = 0.1)]
    burst: f64,

    /// Fraction (0..1) of requests that hang for --hang-ms, then get 504.
    #[arg(long, default_value_t = 0.0)]
    timeout_rate: f64,

    /// How long a "timed out" request hangs before its 504, in ms.
    #[arg(long, default_value_t = 30_000)]
    hang_ms: u64,

    /// Start in outage mode: every request gets 503 immediately.
    #[arg(long)]
    outage: bool,

    /// Header carrying the idempotency key.
    #[arg(long, default_value = "Idempotency-Key")]
    idempotency_header: String,
}

/// `N` or `MIN-MAX` milliseconds.
#[derive(Debug, Clone, Copy)]
struct LatencyRange {
    min: u64,
    max: u64,
}

impl FromStr for LatencyRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parse = |v: &str| {
            v.trim()
                .parse::<u64>()
                .map_err(|e| format!("bad latency {v:?}: {e}"))
        };
        let (min, max) = match s.split_once('-') {
            Some((min, max)) => (parse(min)?, parse(max)?),
            None => {
                let n = parse(s)?;
                (n, n)
            }
        };
        if min > max {
            return Err(format!("latency range {s:?} has MIN > MAX"));
        }
        Ok(LatencyRange { min, max })
    }
}

impl Args {
    fn config(&self) -> MockConfig {
        MockConfig {
            latency_min_ms: self.latency_ms.min,
            latency_max_ms: self.latency_ms.max,
            error_rate: self.error_rate,
            rate_429: self.rate_429,
            retry_after_secs: self.retry_after_secs,
            rate_limit: self.rate_limit,
            burst: self.burst,
            timeout_rate: self.timeout_rate,
            hang_ms: self.hang_ms,
            outage: self.outage,
            idempotency_header: self.idempotency_header.clone(),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let api = MockApi::start_on(args.bind, args.config())
        .await
        .with_context(|| format!("binding {}", args.bind))?;
    announce(&api)?;
    wait_for_signal().await?;
    let stats = api.stats();
    api.shutdown().await;
    eprintln!(
        "mock-api stopped; stats: {}",
        serde_json::to_string(&stats)?
    );
    Ok(())
}

/// The one stdout line scripts wait for; flushed because stdout is
/// block-buffered when piped.
fn announce(api: &MockApi) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "mock-api listening on {}", api.base_url())?;
    out.flush()?;
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_signal() -> anyhow::Result<()> {
    tokio::signal::ctrl_c().await?;
    Ok(())
}
