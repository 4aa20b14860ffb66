//! End-to-end tests over real sockets, with the raw client in `common`.

use std::time::{Duration, Instant};

use mock_api::{MockConfig, MockStats};
use serde_json::{Value, json};
use tokio::net::TcpStream;

mod common;
use common::{get, send, start};

#[tokio::test]
async fn echoes_request_details_with_200() {
    let api = start(MockConfig::default()).await;
    assert!(api.base_url().starts_with("http://127.0.0.1:"));
    let body = br#"{"id":7,"name":"x"}"#;
    let resp = send(
        api.addr(),
        "POST",
        "/v1/items/7?dry=1",
        &[
            ("Idempotency-Key", "k-7"),
            ("Content-Type", "application/json"),
        ],
        body,
    )
    .await;
    assert_eq!(resp.status, 200);
    let expected = json!({
        "ok": true, "method": "POST", "path": "/v1/items/7", "query": "dry=1",
        "key": "k-7", "body_len": body.len(), "echo": {"id": 7, "name": "x"},
        "content_type": "application/json",
    });
    assert_eq!(resp.json(), expected);
    assert_eq!(resp.header("x-mock-path"), Some("/v1/items/7"));
    assert_eq!(resp.header("etag"), Some(body.len().to_string().as_str()));

    let plain = send(api.addr(), "PUT", "/x", &[], b"not json").await.json();
    assert_eq!(plain["echo"], Value::Null);
    assert_eq!(plain["key"], Value::Null);
    assert_eq!(plain["query"], Value::Null);
    assert_eq!(plain["body_len"], 8);
    assert_eq!(plain["body_text"], "not json");
    assert_eq!(api.stats().status(200), 2);
    api.shutdown().await;
}

#[tokio::test]
async fn the_batch_endpoint_answers_each_item_and_fails_the_one_asked() {
    let api = start(MockConfig {
        batch_fail_index: Some(1),
        batch_reverse: true,
        ..MockConfig::default()
    })
    .await;
    let body = br#"{"items": [{"id": 1}, {"id": "b", "x": 2}, {"id": 3}]}"#;
    let answer = send(api.addr(), "POST", "/batch/users", &[], body).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.json(),
        json!({"results": [
            {"id": 3, "ok": true, "echo": {"id": 3}},
            {"id": "b", "ok": false, "error": "item 1 rejected by the mock"},
            {"id": 1, "ok": true, "echo": {"id": 1}},
        ]})
    );
    let bad = send(api.addr(), "POST", "/batch/users", &[], b"{\"a\": 1}").await;
    assert_eq!(bad.status, 400);
    let stats = api.stats();
    assert_eq!((stats.batch_calls, stats.batch_items), (1, 3));
    assert_eq!(stats.batch_failed_ids, vec![json!("b")]);
    api.shutdown().await;
}

#[tokio::test]
async fn a_path_asks_for_a_status_or_a_text_answer() {
    let api = start(MockConfig::default()).await;
    let missing = send(api.addr(), "GET", "/status/404/users/9", &[], b"").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["status"], 404);
    let created = send(api.addr(), "POST", "/status/201/x", &[], b"{\"a\":1}").await;
    assert_eq!(created.status, 201);
    assert_eq!(created.json()["echo"], json!({"a": 1}));
    let bad = send(api.addr(), "GET", "/status/abc", &[], b"").await;
    assert_eq!(bad.status, 400);
    let plain = send(api.addr(), "GET", "/plain/a", &[], b"").await;
    assert_eq!(plain.status, 200);
    assert_eq!(
        plain.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(plain.body, b"plain answer to GET /plain/a\n");
    let stats = api.stats();
    assert_eq!(
        (stats.status(404), stats.status(201), stats.status(200)),
        (1, 1, 1)
    );
    api.shutdown().await;
}

#[tokio::test]
async fn accepts_multi_megabyte_bodies() {
    let api = start(MockConfig::default()).await;
    let body = vec![b'a'; 5 * 1024 * 1024];
    let resp = send(api.addr(), "POST", "/big", &[], &body).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["body_len"], body.len());
    api.shutdown().await;
}

#[tokio::test]
async fn error_rate_one_answers_all_503() {
    let api = start(MockConfig {
        error_rate: 1.0,
        ..MockConfig::default()
    })
    .await;
    for _ in 0..20 {
        assert_eq!(get(api.addr(), "/r").await.status, 503);
    }
    let stats = api.stats();
    assert_eq!(stats.total_requests, 20);
    assert_eq!(stats.by_status, [(503, 20)].into_iter().collect());
    api.shutdown().await;
}

#[tokio::test]
async fn random_429_carries_retry_after() {
    let api = start(MockConfig {
        rate_429: 1.0,
        retry_after_secs: 7,
        ..MockConfig::default()
    })
    .await;
    let resp = get(api.addr(), "/r").await;
    assert_eq!(resp.status, 429);
    assert_eq!(resp.header("retry-after"), Some("7"));
    assert_eq!(api.stats().status(429), 1);
    api.shutdown().await;
}

#[tokio::test]
async fn enforced_rate_limit_caps_successes() {
    let (rate, burst) = (50.0, 0.1);
    let api = start(MockConfig {
        rate_limit: Some(rate),
        burst,
        retry_after_secs: 3,
        ..MockConfig::default()
    })
    .await;
    let started = Instant::now();
    let requests: Vec<_> = (0..200)
        .map(|_| tokio::spawn(get(api.addr(), "/limited")))
        .collect();
    let mut ok = 0u64;
    for request in requests {
        let resp = request.await.expect("request task");
        match resp.status {
            200 => ok += 1,
            429 => assert_eq!(resp.header("retry-after"), Some("3")),
            other => panic!("unexpected status {other}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let capacity = (rate * burst).max(1.0);
    let allowed = (rate * elapsed + capacity).ceil() as u64;
    assert!(ok >= 1, "the initial burst must get through");
    assert!(
        ok <= allowed,
        "{ok} successes > {allowed} allowed in {elapsed:.3}s"
    );
    let stats = api.stats();
    assert_eq!(stats.status(429), 200 - ok);
    assert!(stats.status(429) >= 100, "most requests must be limited");
    api.shutdown().await;
}

#[tokio::test]
async fn idempotency_keys_and_duplicate_successes() {
    let api = start(MockConfig::default()).await;
    let key = [("idempotency-key", "abc")]; // header match is case-insensitive
    assert_eq!(send(api.addr(), "POST", "/a", &key, b"").await.status, 200);
    assert_eq!(send(api.addr(), "POST", "/a", &key, b"").await.status, 200);
    get(api.addr(), "/no-key").await;

    // A retry after a failure is legitimate: no duplicate success.
    api.set_config(MockConfig {
        error_rate: 1.0,
        ..MockConfig::default()
    });
    let other = [("Idempotency-Key", "def")];
    assert_eq!(
        send(api.addr(), "POST", "/b", &other, b"").await.status,
        503
    );
    api.set_config(MockConfig::default());
    assert_eq!(
        send(api.addr(), "POST", "/b", &other, b"").await.status,
        200
    );

    let stats = api.stats();
    assert_eq!(stats.keys_seen, 2);
    assert_eq!(stats.repeated_keys, 2);
    assert_eq!(stats.duplicate_successes, 1);
    assert_eq!(stats.requests_without_key, 1);
    api.shutdown().await;
}

#[tokio::test]
async fn custom_idempotency_header_is_used() {
    let api = start(MockConfig {
        idempotency_header: "X-Request-Id".into(),
        ..MockConfig::default()
    })
    .await;
    let resp = send(api.addr(), "GET", "/", &[("x-request-id", "r1")], b"").await;
    assert_eq!(resp.json()["key"], "r1");
    send(
        api.addr(),
        "GET",
        "/",
        &[("Idempotency-Key", "ignored")],
        b"",
    )
    .await;
    let stats = api.stats();
    assert_eq!(stats.keys_seen, 1);
    assert_eq!(stats.requests_without_key, 1);
    api.shutdown().await;
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn the_windows_origin_is_the_first_requests_wall_clock_time() {
    let api = start(MockConfig::default()).await;
    assert_eq!(api.stats().first_request_unix_ms, None);
    let before = unix_ms();
    get(api.addr(), "/w").await;
    let after = unix_ms();
    get(api.addr(), "/w").await;
    let first = api
        .stats()
        .first_request_unix_ms
        .expect("set by the first request");
    assert!(
        (before..=after).contains(&first),
        "{before} <= {first} <= {after}"
    );
    api.shutdown().await;
}

#[tokio::test]
async fn windows_sum_to_total() {
    let api = start(MockConfig::default()).await;
    for _ in 0..5 {
        get(api.addr(), "/w").await;
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    for _ in 0..4 {
        get(api.addr(), "/w").await;
    }
    let stats = api.stats();
    assert_eq!(stats.total_requests, 9);
    assert_eq!(stats.windows_100ms.iter().sum::<u64>(), 9);
    assert!(stats.windows_100ms.len() >= 3, "{:?}", stats.windows_100ms);
    assert_eq!(stats.windows_100ms[0], 5);
    api.shutdown().await;
}

#[tokio::test]
async fn set_config_switches_to_outage_at_runtime() {
    let api = start(MockConfig {
        latency_min_ms: 200,
        latency_max_ms: 200,
        ..MockConfig::default()
    })
    .await;
    let mut outage = api.config();
    outage.outage = true;
    api.set_config(outage.clone());
    assert_eq!(api.config(), outage);
    let started = Instant::now();
    assert_eq!(get(api.addr(), "/o").await.status, 503);
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "an outage answers without the configured latency"
    );
    api.shutdown().await;
}

#[tokio::test]
async fn control_endpoints_work_and_are_not_counted() {
    let api = start(MockConfig::default()).await;
    assert_eq!(get(api.addr(), "/x").await.status, 200);

    let stats: MockStats =
        serde_json::from_slice(&get(api.addr(), "/_mock/stats").await.body).expect("stats JSON");
    assert_eq!(stats.total_requests, 1);

    let put = send(
        api.addr(),
        "PUT",
        "/_mock/config",
        &[],
        br#"{"outage":true}"#,
    )
    .await;
    assert_eq!(put.status, 200);
    assert!(api.config().outage);
    let patch = br#"{"error_rate":0.5}"#;
    send(api.addr(), "PATCH", "/_mock/config", &[], patch).await;
    let config: MockConfig =
        serde_json::from_slice(&get(api.addr(), "/_mock/config").await.body).expect("config");
    assert!(config.outage, "PATCH keeps other fields");
    assert_eq!(config.error_rate, 0.5);
    assert_eq!(get(api.addr(), "/x").await.status, 503);

    assert_eq!(
        send(api.addr(), "POST", "/_mock/reset", &[], b"")
            .await
            .status,
        204
    );
    assert_eq!(api.stats().total_requests, 0);
    api.shutdown().await;
}

#[tokio::test]
async fn reset_zeroes_everything() {
    let api = start(MockConfig {
        rate_limit: Some(1.0),
        burst: 0.0,
        ..MockConfig::default()
    })
    .await;
    let key = [("Idempotency-Key", "k")];
    assert_eq!(send(api.addr(), "POST", "/", &key, b"").await.status, 200);
    assert_eq!(send(api.addr(), "POST", "/", &key, b"").await.status, 429);
    assert_ne!(api.stats().total_requests, 0);

    api.reset();
    assert_eq!(api.stats(), MockStats::default());
    // The bucket is refilled too, so a fresh scenario starts with its burst.
    assert_eq!(send(api.addr(), "POST", "/", &key, b"").await.status, 200);
    api.shutdown().await;
}

#[tokio::test]
async fn latency_and_hang_are_applied() {
    let api = start(MockConfig {
        latency_min_ms: 60,
        latency_max_ms: 80,
        ..MockConfig::default()
    })
    .await;
    let started = Instant::now();
    assert_eq!(get(api.addr(), "/slow").await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(60));

    api.set_config(MockConfig {
        timeout_rate: 1.0,
        hang_ms: 100,
        ..MockConfig::default()
    });
    let started = Instant::now();
    assert_eq!(get(api.addr(), "/hang").await.status, 504);
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(api.stats().status(504), 1);
    api.shutdown().await;
}

#[tokio::test]
async fn shutdown_cuts_hangs_short_and_stops_listening() {
    let api = start(MockConfig {
        timeout_rate: 1.0,
        hang_ms: 60_000,
        ..MockConfig::default()
    })
    .await;
    let addr = api.addr();
    let hung = tokio::spawn(get(addr, "/hang"));
    // Wait until the request has arrived, so it is in flight at shutdown.
    while api.stats().total_requests == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    api.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(hung.await.expect("hung request").status, 504);
    assert!(TcpStream::connect(addr).await.is_err(), "still listening");
}

#[cfg(unix)]
#[tokio::test]
async fn binary_announces_address_and_stops_on_sigterm() {
    use tokio::process::Command;

    let (mut child, addr) = common::spawn_binary(&["--latency-ms", "0-1", "--rate-429", "1"]).await;
    assert!(addr.ip().is_loopback());
    assert_eq!(get(addr, "/").await.status, 429);

    let pid = child.id().expect("pid").to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().await;
    assert!(killed.expect("run kill").success());
    let status = tokio::time::timeout(Duration::from_secs(3), child.wait())
        .await
        .expect("exits promptly")
        .expect("wait");
    assert!(status.success(), "{status:?}");
}
