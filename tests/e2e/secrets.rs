//! The API credential reaches the API and nothing else: not the logs, results, failed or rejected
//! objects; with OAuth2, neither the client secret nor any token issued. Alone in its binary
//! because it installs the process-wide log subscriber.

use integration_tests::{TestStack, csv_every_tenth_rejected as csv, pipeline_yaml, stack};
use mock_api::{MockApi, MockAuth, MockConfig};
use serde_json::Value;

const CSV_FIELDS: &str = "[{name: id, type: integer, required: true}, {name: name}]";

/// Log lines captured in memory.
#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An API that demands `Authorization: Bearer <token>`, answers every 7th id 503 (so records fail
/// and errors are logged; few enough that the circuit breaker stays closed) and the rest 200, and counts the requests that carried the token.
async fn authenticated_api(
    token: &'static str,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use axum::extract::Path;
    use axum::http::{HeaderMap, StatusCode};
    let authorized = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = authorized.clone();
    let app = axum::Router::new().route(
        "/items/{id}",
        axum::routing::post(move |Path(id): Path<u64>, headers: HeaderMap| {
            let seen = seen.clone();
            async move {
                let expected = format!("Bearer {token}");
                if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&expected) {
                    return (StatusCode::UNAUTHORIZED, "no credential".to_string());
                }
                seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if id % 7 == 3 {
                    (StatusCode::SERVICE_UNAVAILABLE, "try later".to_string())
                } else {
                    (StatusCode::OK, format!("{{\"id\":{id}}}"))
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, authorized)
}

/// Drains the queue through the worker handler, one message per invocation, as Lambda would;
/// `after(n)` runs after the n-th message (from 1).
async fn drain<F, Fut>(ts: &TestStack, deps: &fanout_handlers::worker::WorkerDeps, mut after: F)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let sqs = aws_sdk_sqs::Client::new(&ts.config);
    let started = std::time::Instant::now();
    let mut n = 0;
    while ts.queue_depth().await > 0 {
        assert!(started.elapsed().as_secs() < 60, "the queue did not drain");
        let received = sqs
            .receive_message()
            .queue_url(&ts.stack.queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        for m in received.messages() {
            let event: aws_lambda_events::sqs::SqsEvent = serde_json::from_value(serde_json::json!({
                "Records": [{"messageId": m.message_id(), "receiptHandle": m.receipt_handle(), "body": m.body(), "eventSource": "aws:sqs"}]
            }))
            .unwrap();
            let response = fanout_handlers::worker::handle_sqs_event(event, deps).await;
            assert!(response.batch_item_failures.is_empty());
            sqs.delete_message()
                .queue_url(&ts.stack.queue_url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
            n += 1;
            after(n).await;
        }
    }
}

/// A job whose pipeline authenticates with a bearer token kept in Secrets Manager, run through
/// the worker handler (wired as Lambda wires it) with its logs (every level of this crate)
/// captured: the token reaches the API and nothing else — not the logs, results, failed or
/// rejected objects.
#[tokio::test(flavor = "current_thread")]
async fn the_api_credential_never_reaches_logs_or_outputs() {
    const TOKEN: &str = "tok-3f9a1c-DO-NOT-LOG";

    let logs = LogBuffer::default();
    let writer = logs.clone();
    // The process-wide subscriber: this test is alone in its binary, so every line the run
    // logs, on any thread, is captured. (A thread-local default is not enough when other tests
    // run in the same process: tracing caches each call site's interest process-wide, and a
    // site first reached from another test's thread can stay disabled for this one.)
    tracing::subscriber::set_global_default(fanout_handlers::telemetry::json_subscriber(
        tracing_subscriber::EnvFilter::new("info,fanout=trace"),
        move || writer.clone(),
    ))
    .expect("the only subscriber of this test binary");

    let ts = stack("secrets").await;
    let (url, authorized) = authenticated_api(TOKEN).await;
    // The token is in the local Secrets Manager; the pipeline names it (client.auth), and the
    // worker, wired as Lambda wires it, reads it through its secret source.
    ts.put_secret("secrets-test/api-token", TOKEN).await;
    let yaml = pipeline_yaml("csv", &url, CSV_FIELDS, 1000, "").replace(
        "max_attempts: 2 }",
        "max_attempts: 2, auth: {type: bearer, token: {secrets_manager: secrets-test/api-token}} }",
    );
    let event = ts.upload("secrets", &yaml, "in.csv", &csv(200)).await;
    let splitter = fanout_cli::local::splitter_deps(&ts.config, &ts.stack);
    let split = fanout_handlers::splitter::handle_s3_event(event, &splitter)
        .await
        .unwrap();
    let job = match &split[..] {
        [fanout_handlers::splitter::SplitOutcome::Started { job_id, .. }] => job_id.clone(),
        other => panic!("{other:?}"),
    };
    // The worker's wiring, as Lambda's (its secret source included).
    let deps = fanout_cli::local::worker_deps(&ts.config, &ts.stack, 1).unwrap();
    drain(&ts, &deps, |_| async {}).await;
    // The token was used: every sent record carried it.
    let results = ts.lines(&format!("results/{job}/part-")).await;
    let failed = ts.lines(&format!("failed/{job}/")).await;
    let rejected = ts.lines(&format!("rejected/{job}/")).await;
    assert!(!results.is_empty() && !failed.is_empty() && !rejected.is_empty());
    let answered = failed.iter().filter(|f| f["status"].is_u64()).count();
    assert!(
        authorized.load(std::sync::atomic::Ordering::Relaxed) >= (results.len() + answered) as u64,
        "the API saw the token on every call: {} authorized, {} results, failed: {:?}",
        authorized.load(std::sync::atomic::Ordering::Relaxed),
        results.len(),
        failed
            .iter()
            .map(|f| (f["status"].clone(), f["error"].clone()))
            .take(5)
            .collect::<Vec<_>>()
    );
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    // The logs are there, and carry the manifest's span fields.
    let done: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "manifest done")
        .collect();
    assert!(
        !done.is_empty(),
        "no 'manifest done' line in {} lines",
        lines.len()
    );
    assert!(
        done.iter()
            .all(|l| l["span"]["job_id"].is_string() && l["span"]["seq"].is_u64())
    );
    for (what, body) in [
        ("logs", text.clone()),
        ("results", serde_json::to_string(&results).unwrap()),
        ("failed", serde_json::to_string(&failed).unwrap()),
        ("rejected", serde_json::to_string(&rejected).unwrap()),
    ] {
        assert!(!body.contains(TOKEN), "the token is in the {what}");
        assert!(
            !body.contains("3f9a1c"),
            "part of the token is in the {what}"
        );
    }

    // OAuth2 on the same stack and log: the client secret and every token issued stay out of
    // the logs and outputs, also through a revocation and the refresh it causes.
    const CLIENT_SECRET: &str = "cs-8d2e70-DO-NOT-LOG";
    let api = MockApi::start(MockConfig {
        // One attempt per record, 30% of answers 503 and a breaker that never judges: of the
        // ~180 records sent, some fail and some succeed whatever the draw (no failure at all has
        // odds 0.7^180, about 1e-28).
        error_rate: 0.3,
        auth: MockAuth::OAuth2(mock_api::OAuth2Config {
            client_id: "secrets-app".into(),
            client_secret: CLIENT_SECRET.into(),
            username: None,
            password: None,
            token_lifetime_secs: 3600,
        }),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    ts.put_secret("secrets-test/oauth-client", CLIENT_SECRET)
        .await;
    let auth = format!(
        "max_attempts: 1, breaker_min_calls: 1000000, auth: {{type: oauth2, token_url: '{}/oauth2/token', \
         client_id: secrets-app, client_secret: {{secrets_manager: secrets-test/oauth-client}}}} }}",
        api.base_url()
    );
    let yaml = pipeline_yaml("csv", &api.base_url(), CSV_FIELDS, 1000, "")
        .replace("max_attempts: 2 }", &auth);
    let event = ts.upload("secrets-oauth", &yaml, "in.csv", &csv(200)).await;
    let split = fanout_handlers::splitter::handle_s3_event(event, &splitter)
        .await
        .unwrap();
    let job = match &split[..] {
        [fanout_handlers::splitter::SplitOutcome::Started { job_id, .. }] => job_id.clone(),
        other => panic!("{other:?}"),
    };
    let before = logs.0.lock().unwrap().len();
    let deps = fanout_cli::local::worker_deps(&ts.config, &ts.stack, 1).unwrap();
    drain(&ts, &deps, |n| {
        let api = &api;
        async move {
            if n == 1 {
                // Older than the 5 s under which a refused token is not refreshed again.
                tokio::time::sleep(std::time::Duration::from_millis(5500)).await;
                assert_eq!(api.revoke_tokens(), 1);
            }
        }
    })
    .await;
    let stats = api.stats();
    assert_eq!(stats.tokens_issued, 2, "{stats:?}");
    assert!(stats.refused_auth >= 1, "{stats:?}");
    let results = ts.lines(&format!("results/{job}/part-")).await;
    let failed = ts.lines(&format!("failed/{job}/")).await;
    let rejected = ts.lines(&format!("rejected/{job}/")).await;
    assert!(!results.is_empty() && !failed.is_empty() && !rejected.is_empty());
    assert!(
        failed.iter().all(|f| f["status"] != 401),
        "a record failed on the revoked token: {failed:?}"
    );
    let text = String::from_utf8(logs.0.lock().unwrap()[before..].to_vec()).unwrap();
    assert!(
        text.contains("the API refused the OAuth2 token"),
        "no line about the refused token"
    );
    let mut needles = api.issued_tokens();
    assert_eq!(needles.len(), 2);
    needles.push(CLIENT_SECRET.to_string());
    for (what, body) in [
        ("logs", text),
        ("results", serde_json::to_string(&results).unwrap()),
        ("failed", serde_json::to_string(&failed).unwrap()),
        ("rejected", serde_json::to_string(&rejected).unwrap()),
    ] {
        for needle in &needles {
            assert!(
                !body.contains(needle.as_str()),
                "an OAuth2 secret is in the {what}"
            );
        }
    }
}
