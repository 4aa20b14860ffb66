//! What the test binaries share: a tiny raw HTTP/1.1 client, so the crate
//! needs no HTTP client dependency. Each binary uses a subset.
#![allow(dead_code)]

use std::net::SocketAddr;

use mock_api::{MockApi, MockConfig};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("response body is JSON")
    }
}

/// One request on a fresh `Connection: close` socket; reads until EOF.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(body).await.expect("write body");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read response");
    parse(&raw)
}

pub fn parse(raw: &[u8]) -> Resp {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = std::str::from_utf8(&raw[..split]).expect("utf8 head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Resp {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

pub async fn get(addr: SocketAddr, path: &str) -> Resp {
    send(addr, "GET", path, &[], b"").await
}

pub async fn start(config: MockConfig) -> MockApi {
    MockApi::start(config).await.expect("start mock")
}

/// Starts the `mock-api` binary on an ephemeral port with `args` and waits
/// for its announce line. Stderr is piped: read it with `stop_binary`.
#[cfg(unix)]
pub async fn spawn_binary(args: &[&str]) -> (tokio::process::Child, SocketAddr) {
    use tokio::io::AsyncBufReadExt;

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mock-api"))
        .args(["--bind", "127.0.0.1:0"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn mock-api");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    tokio::io::BufReader::new(stdout)
        .read_line(&mut line)
        .await
        .expect("read announce line");
    let addr = line
        .trim()
        .strip_prefix("mock-api listening on http://")
        .unwrap_or_else(|| panic!("announce line format: {line:?}"))
        .parse()
        .expect("announced address");
    (child, addr)
}

/// SIGTERM, then everything the binary wrote to stderr.
#[cfg(unix)]
pub async fn stop_binary(mut child: tokio::process::Child) -> String {
    let pid = child.id().expect("pid").to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await;
    assert!(killed.expect("run kill").success());
    let mut stderr = child.stderr.take().expect("stderr");
    let mut text = String::new();
    let read = stderr.read_to_string(&mut text);
    tokio::time::timeout(std::time::Duration::from_secs(3), read)
        .await
        .expect("binary exits promptly")
        .expect("read stderr");
    let status = child.wait().await.expect("wait");
    assert!(status.success(), "{status:?}");
    text
}
