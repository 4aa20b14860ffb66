//! `mock-api` binary: runs the mock REST API until SIGINT/SIGTERM.
//!
//! Prints exactly one line, `mock-api listening on http://ADDR`, to stdout once
//! bound so that scripts can wait for it. Final stats go to stderr on exit.
//! Credentials given by flag are never printed: only the strategy's name.

use std::io::Write;
use std::net::SocketAddr;
use std::str::FromStr;

use anyhow::Context;
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, ValueEnum};
use mock_api::{MockApi, MockAuth, MockConfig, OAuth2Config};

/// Mock rate-limited REST API: injects latency, 429s, 503s and hangs, can
/// require credentials, and counts what clients do. Control endpoints: GET
/// /_mock/stats, GET|PUT|PATCH /_mock/config, POST /_mock/reset, POST
/// /_mock/advance-token-clock {"secs":N}. With --auth oauth2 also POST
/// /oauth2/token (client_credentials and password grants) and POST
/// /oauth2/revoke-all.
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

    /// On /batch/…: answer the item at this index of every batch with an error.
    #[arg(long)]
    batch_fail_index: Option<usize>,

    /// On /batch/…: answer the items in reverse order.
    #[arg(long)]
    batch_reverse: bool,

    /// Header carrying the idempotency key.
    #[arg(long, default_value = "Idempotency-Key")]
    idempotency_header: String,

    /// Credentials the API routes require; a call without them gets 401.
    /// Each strategy takes the flags below marked with its name; a flag that
    /// does not belong to the chosen strategy is an error.
    #[arg(long, value_enum, default_value_t = AuthKind::None, help_heading = "Authentication")]
    auth: AuthKind,

    /// api-key-header: header carrying the key [default: X-Api-Key].
    #[arg(long, value_name = "NAME", help_heading = "Authentication")]
    auth_header: Option<String>,

    /// api-key-query: query parameter carrying the key [default: api_key].
    #[arg(long, value_name = "NAME", help_heading = "Authentication")]
    auth_query_param: Option<String>,

    /// api-key-header, api-key-query: the key.
    #[arg(long, value_name = "KEY", help_heading = "Authentication")]
    auth_key: Option<String>,

    /// bearer: the one static token accepted.
    #[arg(long, value_name = "TOKEN", help_heading = "Authentication")]
    auth_token: Option<String>,

    /// basic: the username; oauth2: the resource owner's username, which
    /// enables the password grant (with --auth-password).
    #[arg(long, value_name = "USER", help_heading = "Authentication")]
    auth_username: Option<String>,

    /// basic: the password; oauth2: the resource owner's password.
    #[arg(long, value_name = "PASSWORD", help_heading = "Authentication")]
    auth_password: Option<String>,

    /// oauth2: the client's id (HTTP Basic or form client authentication).
    #[arg(long, value_name = "ID", help_heading = "Authentication")]
    client_id: Option<String>,

    /// oauth2: the client's secret.
    #[arg(long, value_name = "SECRET", help_heading = "Authentication")]
    client_secret: Option<String>,

    /// oauth2: expires_in of issued tokens, in seconds [default: 3600].
    #[arg(long, value_name = "SECS", help_heading = "Authentication")]
    token_lifetime_secs: Option<u64>,
}

/// `--auth`: one per `MockAuth` strategy.
#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
enum AuthKind {
    None,
    ApiKeyHeader,
    ApiKeyQuery,
    Basic,
    Bearer,
    #[value(name = "oauth2")]
    OAuth2,
}

impl AuthKind {
    fn name(self) -> String {
        self.to_possible_value()
            .map(|value| value.get_name().to_owned())
            .unwrap_or_default()
    }
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
    /// The strategy from `--auth` and its flags, or a usage error that names
    /// flags, never their values.
    fn auth(&self) -> Result<MockAuth, String> {
        self.reject_foreign_flags()?;
        let kind = self.auth.name();
        let need = |value: &Option<String>, flag: &str| {
            value
                .clone()
                .ok_or_else(|| format!("--auth {kind} needs {flag}"))
        };
        let auth = match self.auth {
            AuthKind::None => MockAuth::None,
            AuthKind::ApiKeyHeader => MockAuth::ApiKeyHeader {
                header: self
                    .auth_header
                    .clone()
                    .unwrap_or_else(|| "X-Api-Key".into()),
                key: need(&self.auth_key, "--auth-key")?,
            },
            AuthKind::ApiKeyQuery => MockAuth::ApiKeyQuery {
                param: self
                    .auth_query_param
                    .clone()
                    .unwrap_or_else(|| "api_key".into()),
                key: need(&self.auth_key, "--auth-key")?,
            },
            AuthKind::Basic => MockAuth::Basic {
                username: need(&self.auth_username, "--auth-username")?,
                password: need(&self.auth_password, "--auth-password")?,
            },
            AuthKind::Bearer => MockAuth::Bearer {
                token: need(&self.auth_token, "--auth-token")?,
            },
            AuthKind::OAuth2 => {
                if self.auth_username.is_some() != self.auth_password.is_some() {
                    return Err(format!(
                        "--auth {kind}: give both --auth-username and --auth-password (password grant) or neither"
                    ));
                }
                let defaults = OAuth2Config::default();
                MockAuth::OAuth2(OAuth2Config {
                    client_id: need(&self.client_id, "--client-id")?,
                    client_secret: need(&self.client_secret, "--client-secret")?,
                    username: self.auth_username.clone(),
                    password: self.auth_password.clone(),
                    token_lifetime_secs: self
                        .token_lifetime_secs
                        .unwrap_or(defaults.token_lifetime_secs),
                })
            }
        };
        Ok(auth)
    }

    /// A credential flag meant for another strategy is most likely a mistake
    /// (a forgotten `--auth`), and silently running an open API would let a
    /// test of the client's auth pass without testing anything.
    fn reject_foreign_flags(&self) -> Result<(), String> {
        use AuthKind::{ApiKeyHeader, ApiKeyQuery, Basic, Bearer, OAuth2};
        let flags: [(&str, bool, &[AuthKind]); 9] = [
            ("--auth-header", self.auth_header.is_some(), &[ApiKeyHeader]),
            (
                "--auth-query-param",
                self.auth_query_param.is_some(),
                &[ApiKeyQuery],
            ),
            (
                "--auth-key",
                self.auth_key.is_some(),
                &[ApiKeyHeader, ApiKeyQuery],
            ),
            ("--auth-token", self.auth_token.is_some(), &[Bearer]),
            (
                "--auth-username",
                self.auth_username.is_some(),
                &[Basic, OAuth2],
            ),
            (
                "--auth-password",
                self.auth_password.is_some(),
                &[Basic, OAuth2],
            ),
            ("--client-id", self.client_id.is_some(), &[OAuth2]),
            ("--client-secret", self.client_secret.is_some(), &[OAuth2]),
            (
                "--token-lifetime-secs",
                self.token_lifetime_secs.is_some(),
                &[OAuth2],
            ),
        ];
        for (flag, given, strategies) in flags {
            if given && !strategies.contains(&self.auth) {
                return Err(format!(
                    "{flag} does not apply to --auth {}",
                    self.auth.name()
                ));
            }
        }
        Ok(())
    }

    fn config(&self, auth: MockAuth) -> MockConfig {
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
            auth,
            batch_fail_index: self.batch_fail_index,
            batch_reverse: self.batch_reverse,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let auth = args.auth().unwrap_or_else(|message| {
        Args::command()
            .error(ErrorKind::ArgumentConflict, message)
            .exit()
    });
    let config = args.config(auth);
    let api = MockApi::start_on(args.bind, config.clone())
        .await
        .with_context(|| format!("binding {}", args.bind))?;
    if config.auth != MockAuth::None {
        // The strategy's name only: its flags are secrets.
        eprintln!("mock-api auth: {}", config.auth.kind());
    }
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
