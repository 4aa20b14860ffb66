//! End to end on the local stack: real S3, SQS and DynamoDB APIs (the local AWS), the mock API, and
//! the same splitter and worker handlers as the Lambda binaries.

use std::collections::BTreeSet;

use fanout_core::framer::split_all;
use fanout_core::ledger::JobStatus;
use fanout_handlers::splitter::SplitOutcome;
use integration_tests::{MockApi, MockConfig, TestStack, offsets, pipeline_yaml, stack};
use serde_json::Value;

const CSV_FIELDS: &str = "[{name: id, type: integer, required: true}, {name: name}]";

/// A CSV with quoting, unicode, CRLF, blank lines and bad records. Returns (bytes, good offsets,
/// bad offsets).
fn messy_csv(records: usize, crlf: bool) -> (Vec<u8>, Vec<u64>, Vec<u64>) {
    let eol = if crlf { "\r\n" } else { "\n" };
    let mut text = format!("id,name,extra{eol}");
    for i in 0..records {
        let line = match i % 50 {
            7 => format!("{i},only-two"),             // wrong column count
            13 => format!("x{i},bad id,"),            // not an integer
            21 => format!("{i},a \"quoted\" word,z"), // a literal quote (lenient)
            29 => String::new(),                      // blank line
            33 => format!("{i},\"comma, \"\"quote\"\" é/?#\",z"), // hard but valid
            _ => format!("{i},name-{i},{}", "x".repeat(i % 17)),
        };
        text.push_str(&line);
        text.push_str(eol);
    }
    let data = text.into_bytes();
    let header_end = data.iter().position(|b| *b == b'\n').unwrap() + 1;
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for (offset, line) in split_all(&data, header_end) {
        let s = String::from_utf8(line).unwrap();
        if s.is_empty() {
            continue;
        }
        if s.contains("only-two") || s.starts_with('x') {
            bad.push(offset)
        } else {
            good.push(offset)
        }
    }
    (data, good, bad)
}

async fn summary(ts: &TestStack, job: &str) -> Value {
    let body = ts
        .s3()
        .get_object()
        .bucket(ts.bucket())
        .key(format!("results/{job}/_SUMMARY.json"))
        .send()
        .await
        .unwrap();
    serde_json::from_slice(&body.body.collect().await.unwrap().into_bytes()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn csv_across_many_manifests_accounts_for_every_record() {
    let ts = stack("csv_many").await;
    let api = MockApi::start(MockConfig::default()).await.unwrap();
    let (data, good, bad) = messy_csv(1500, false);
    let yaml = pipeline_yaml("csv", &api.base_url(), CSV_FIELDS, 997, "");
    let event = ts.upload("users", &yaml, "users.csv", &data).await;
    let report = ts.run(event, 4).await;

    let job = report.job.expect("job");
    assert_eq!(job.status, JobStatus::Completed);
    assert!(
        job.manifests_total > 20,
        "expected many manifests, got {}",
        job.manifests_total
    );
    let results = ts.lines(&format!("results/{}/part-", job.job_id)).await;
    let rejected = ts.lines(&format!("rejected/{}/", job.job_id)).await;
    assert!(
        ts.lines(&format!("failed/{}/", job.job_id))
            .await
            .is_empty()
    );
    // Each record exactly once, in the right place.
    assert_eq!(offsets(&results), good);
    assert_eq!(offsets(&rejected), bad);
    assert!(
        results
            .iter()
            .all(|r| r["status"] == 200 && r["attempts"] == 1)
    );
    let reasons: BTreeSet<String> = rejected
        .iter()
        .map(|r| r["reason"].as_str().unwrap().to_string())
        .collect();
    assert!(
        reasons.contains("expected 3 columns, found 2"),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("field \"id\": expected an integer")),
        "{reasons:?}"
    );

    let s = summary(&ts, &job.job_id).await;
    assert_eq!(s["input_records"], (good.len() + bad.len()) as u64);
    assert_eq!(s["succeeded"], good.len() as u64);
    assert_eq!(s["rejected"], bad.len() as u64);
    assert_eq!(s["failed"], 0);
    assert_eq!(s["blank_lines"], 30);
    assert_eq!(s["reconciled"], true);

    // The API saw each good record once, with its idempotency key, and the escaped values intact.
    let stats = api.stats();
    assert_eq!(stats.keys_seen, good.len() as u64);
    assert_eq!(stats.duplicate_successes, 0);
    let hard = results
        .iter()
        .find(|r| {
            r["response"]["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/items/33"))
        })
        .unwrap();
    assert_eq!(hard["response"]["echo"]["name"], "comma, \"quote\" é/?#");
    assert!(
        hard["response"]["query"]
            .as_str()
            .unwrap()
            .contains("name=comma%2C%20%22quote%22%20%C3%A9%2F%3F%23"),
        "{hard}"
    );
    assert_eq!(hard["response"]["echo"]["id"], 33);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonl_with_bom_and_crlf_in_one_manifest() {
    let ts = stack("jsonl_bom").await;
    let api = MockApi::start(MockConfig::default()).await.unwrap();
    let mut data = b"\xEF\xBB\xBF".to_vec();
    data.extend_from_slice(b"{\"id\": 1, \"name\": \"a\"}\r\n{\"id\": 2, \"name\": \"b\"\r\n{\"id\": \"3\", \"name\": \"c\"}\r\n\r\n[4]\r\n{\"name\": \"no id\"}\r\n{\"id\": 7, \"name\": \"\\u00e9\\n\"}");
    let fields = "[{name: id, type: integer, required: true}, {name: name, type: string}]";
    let yaml = pipeline_yaml("jsonl", &api.base_url(), fields, 1 << 20, "");
    let event = ts.upload("events", &yaml, "e.jsonl", &data).await;
    let report = ts.run(event, 1).await;
    let job = report.job.unwrap();
    assert_eq!(job.manifests_total, 1);
    let results = ts.lines(&format!("results/{}/part-", job.job_id)).await;
    let rejected = ts.lines(&format!("rejected/{}/", job.job_id)).await;
    // The BOM is skipped: the first record parses, at offset 3.
    let last = data.windows(8).position(|w| w == b"{\"id\": 7").unwrap() as u64;
    assert_eq!(offsets(&results), vec![3, last]);
    assert_eq!(results[1]["response"]["echo"]["name"], "é\n");
    let reasons: Vec<&str> = rejected
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(reasons[0].starts_with("invalid JSON"), "{reasons:?}");
    assert_eq!(reasons[1], "field \"id\": expected integer, found string");
    assert_eq!(reasons[2], "expected a JSON object, found array");
    assert_eq!(reasons[3], "missing required field \"id\"");
    let s = summary(&ts, &job.job_id).await;
    assert_eq!(
        (s["input_records"].as_u64(), s["blank_lines"].as_u64()),
        (Some(6), Some(1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_header_only_files_complete_with_zero_records() {
    let ts = stack("empty").await;
    let api = MockApi::start(MockConfig::default()).await.unwrap();
    let yaml = pipeline_yaml("csv", &api.base_url(), "[]", 100, "");
    for (file, data) in [
        ("empty.csv", &b""[..]),
        ("header.csv", &b"id,name\r\n"[..]),
        ("bom-header.csv", &b"\xEF\xBB\xBFid,name"[..]),
    ] {
        let event = ts.upload("p", &yaml, file, data).await;
        let report = ts.run(event, 1).await;
        let job = report.job.unwrap_or_else(|| panic!("{file}: no job"));
        assert_eq!(job.status, JobStatus::Completed, "{file}: {job:?}");
        assert_eq!(job.manifests_total, 0, "{file}");
        let s = summary(&ts, &job.job_id).await;
        assert_eq!(s["input_records"], 0, "{file}");
        assert_eq!(s["reconciled"], true, "{file}");
    }
    assert_eq!(api.stats().total_requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_s3_event_starts_one_job() {
    let ts = stack("dup_event").await;
    let api = MockApi::start(MockConfig::default()).await.unwrap();
    let (data, good, _) = messy_csv(200, true);
    let yaml = pipeline_yaml("csv", &api.base_url(), CSV_FIELDS, 500, "");
    let event = ts.upload("p", &yaml, "in.csv", &data).await;
    let first = ts.run(event.clone(), 2).await;
    let second = ts.run(event, 2).await;
    assert_eq!(first.job_id, second.job_id);
    assert!(
        matches!(
            second.split.as_slice(),
            [SplitOutcome::Duplicate {
                status: JobStatus::Completed,
                ..
            }]
        ),
        "{:?}",
        second.split
    );
    assert_eq!(
        api.stats().total_requests,
        good.len() as u64,
        "the duplicate event must not call the API again"
    );
    assert_eq!(ts.queue_depth().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_manifest_does_not_duplicate_results() {
    use fanout_handlers::worker::handle_sqs_event;
    let ts = stack("redeliver").await;
    let api = MockApi::start(MockConfig::default()).await.unwrap();
    let (data, good, bad) = messy_csv(120, false);
    let yaml = pipeline_yaml("csv", &api.base_url(), CSV_FIELDS, 600, "");
    let event = ts.upload("p", &yaml, "in.csv", &data).await;
    // Receive every manifest, then deliver each one twice (in one batch, and again later).
    let (job_id, bodies) = ts.split_and_receive(event).await;
    let job_id = &job_id;
    let worker = fanout_cli::local::worker_deps(&ts.config, &ts.stack, 1).unwrap();
    let records = |copies: usize| -> Value {
        let records: Vec<Value> = bodies
            .iter()
            .enumerate()
            .flat_map(|(i, b)| {
                (0..copies)
                    .map(move |c| serde_json::json!({"messageId": format!("m{i}-{c}"), "body": b}))
            })
            .collect();
        serde_json::json!({ "Records": records })
    };
    let response = handle_sqs_event(serde_json::from_value(records(2)).unwrap(), &worker).await;
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    let response = handle_sqs_event(serde_json::from_value(records(1)).unwrap(), &worker).await;
    assert!(response.batch_item_failures.is_empty());

    let results = ts.lines(&format!("results/{job_id}/part-")).await;
    assert_eq!(offsets(&results), good, "each record once in the results");
    assert_eq!(
        offsets(&ts.lines(&format!("rejected/{job_id}/")).await),
        bad
    );
    let s = summary(&ts, job_id).await;
    assert_eq!(
        s["succeeded"],
        good.len() as u64,
        "ledger counted each manifest once"
    );
    assert_eq!(s["input_records"], (good.len() + bad.len()) as u64);
    // Redeliveries of a completed manifest are acknowledged without work (its claim is
    // COMPLETED): the API saw each record once.
    let stats = api.stats();
    assert_eq!(stats.keys_seen, good.len() as u64);
    assert_eq!(stats.total_requests, good.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_fails_the_job_before_anything_is_enqueued() {
    let ts = stack("bad_config").await;
    let (data, _, _) = messy_csv(10, false);
    // The placeholder names no CSV column: only the header can tell.
    let yaml = "input: {format: csv}\nrequest: {url: 'http://127.0.0.1:9/items/{identifier}'}\n";
    let event = ts.upload("p", yaml, "in.csv", &data).await;
    let report = ts.run(event, 1).await;
    let job = report.job.unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    let error = job.error.unwrap();
    assert!(
        error.contains(
            "pipelines/p.yaml: request.url: placeholder {identifier} names no CSV column"
        ),
        "{error}"
    );
    assert_eq!(ts.queue_depth().await, 0);

    // An unknown key is caught too, with its line.
    let event = ts
        .upload(
            "q",
            "input: {format: csv}\nrequest: {url: 'http://h/x', retries: 3}\n",
            "in.csv",
            &data,
        )
        .await;
    let job = ts.run(event, 1).await.job.unwrap();
    assert!(
        job.error
            .as_deref()
            .unwrap()
            .contains("unknown field `retries`"),
        "{job:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_outside_input_are_ignored() {
    let ts = stack("ignored").await;
    let event = fanout_cli::local::s3_put_event(
        ts.bucket(),
        "results/x/part-000000.jsonl",
        10,
        "etag",
        None,
    );
    let report = ts.run(event, 1).await;
    assert!(report.job_id.is_none());
    assert!(
        matches!(report.split.as_slice(), [SplitOutcome::Ignored { .. }]),
        "{:?}",
        report.split
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_api_calls_are_kept_with_their_records() {
    let ts = stack("api_fail").await;
    let api = MockApi::start(MockConfig {
        error_rate: 0.3,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let (data, good, bad) = messy_csv(300, false);
    let yaml = pipeline_yaml("csv", &api.base_url(), CSV_FIELDS, 2000, "")
        .replace("max_attempts: 2", "max_attempts: 1");
    let event = ts.upload("p", &yaml, "in.csv", &data).await;
    let job = ts.run(event, 2).await.job.unwrap();
    let results = ts.lines(&format!("results/{}/part-", job.job_id)).await;
    let failed = ts.lines(&format!("failed/{}/", job.job_id)).await;
    assert!(!failed.is_empty() && !results.is_empty());
    let mut all = offsets(&results);
    all.extend(offsets(&failed));
    all.sort_unstable();
    assert_eq!(
        all, good,
        "every good record is either a result or a failure, once"
    );
    assert!(
        failed
            .iter()
            .all(|f| f["status"] == 503 && f["record"].as_str().is_some_and(|r| !r.is_empty()))
    );
    let s = summary(&ts, &job.job_id).await;
    assert_eq!(s["failed"], failed.len() as u64);
    assert_eq!(s["input_records"], (good.len() + bad.len()) as u64);
    assert_eq!(s["reconciled"], true);
}

/// The stack's defaults take effect (a deployed stack's ApiBaseUrl, RateLimitPerSecond,
/// RateLimitBurst and ChunkBytes): `{{API_BASE_URL}}` becomes the stack's, and a pipeline that sets
/// no rate limit and no chunk size runs at the stack's. Without them the job would run at the
/// code's 5,000/s in one manifest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pipeline_without_a_rate_runs_at_the_stack_default() {
    const RECORDS: usize = 600;
    const RATE: u32 = 100;
    const BURST: u32 = 10;
    let mut ts = stack("stack_defaults").await;
    let api = MockApi::start(MockConfig::default()).await.unwrap();
    ts.stack.defaults = fanout_core::stack_defaults::StackDefaults {
        api_base_url: Some(api.base_url()),
        rate_limit_per_sec: Some(RATE),
        rate_limit_burst: Some(BURST),
        chunk_bytes: Some(2_000),
    };
    let yaml = pipeline_yaml("csv", "{{API_BASE_URL}}", CSV_FIELDS, 1, "")
        .replace("split: { chunk_bytes: 1 }\n", "");
    assert!(
        !yaml.contains("rate_limit") && !yaml.contains("chunk_bytes"),
        "{yaml}"
    );
    let mut csv = String::from("id,name\n");
    for i in 0..RECORDS {
        csv.push_str(&format!("{i},n{i}\n"));
    }
    let event = ts.upload("defaults", &yaml, "in.csv", csv.as_bytes()).await;
    let report = ts.run(event, 4).await;
    let job = report.job.expect("a job");
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    // The ledger (DynamoDB) holds the config the job ran with, defaults applied: what
    // `fanout status`, `report` and `replay` read.
    let config = job.config.as_ref().expect("the job's config");
    assert_eq!(
        (
            config.client.rate_limit_per_sec,
            config.client.rate_limit_burst,
            config.split.chunk_bytes,
            config.request.url.starts_with(&api.base_url())
        ),
        (RATE, BURST, 2_000, true)
    );
    let summary = report.summary.expect("a summary");
    assert_eq!(summary.succeeded, RECORDS as u64, "{summary:?}");
    match &report.split[..] {
        [SplitOutcome::Started { manifests, .. }] => {
            assert_eq!(
                *manifests as usize,
                (csv.len() - "id,name\n".len()).div_ceil(2_000),
                "ChunkBytes' size"
            )
        }
        other => panic!("{other:?}"),
    }
    let stats = api.stats();
    assert_eq!(stats.total_requests, RECORDS as u64, "{stats:?}");
    // At RATE/s after a burst of BURST, the calls take at least (RECORDS - BURST) / RATE s.
    let span = stats.windows_100ms.len() as f64 / 10.0;
    let floor = (RECORDS - BURST as usize) as f64 / RATE as f64;
    assert!(
        span >= floor - 0.2,
        "{span} s for {RECORDS} calls at {RATE}/s"
    );
    let peak = integration_tests::rates::max_one_second(&stats.windows_100ms);
    assert!(
        peak as f64 <= 1.1 * RATE as f64 + BURST as f64,
        "{peak} calls in one second at {RATE}/s"
    );
}
