//! Request and response shaping end to end (issue 16): what a pipeline sends (form and text
//! bodies, query parameters, User-Agent) arrives at the API as sent; the status lists decide what
//! succeeds, what is retried and what fails at once; `response.keep` stores only its part,
//! `response.keep_headers` the headers named; an answer that is not JSON where JSON is expected
//! fails its record with the reason, and the job goes on.

use std::collections::BTreeMap;

use fanout_cli::local::RunReport;
use fanout_core::ledger::JobStatus;
use integration_tests::{MockApi, MockConfig, TestStack, offsets, stack};
use serde_json::{Value, json};

/// Names with what form and text encodings must get right: spaces, `&`, `=`, `+`, `%`, quotes,
/// non-ASCII.
fn name(i: u64) -> String {
    [
        "Zoë O'Neil & co",
        "a+b=c",
        "100% \"sure\"",
        "plain",
        "東京 #1",
    ][i as usize % 5]
        .to_string()
        + &format!(" {i}")
}

fn jsonl(records: impl Iterator<Item = Value>) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        serde_json::to_writer(&mut out, &r).unwrap();
        out.push(b'\n');
    }
    out
}

/// Every record accounted for once: results + failed (+ rejected) = input.
fn reconciled(report: &RunReport, records: u64) -> (u64, u64) {
    let job = report.job.as_ref().expect("a job");
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    let s = report.summary.as_ref().expect("a summary");
    assert!(s.reconciled, "{s:?}");
    assert_eq!(s.input_records, records, "{s:?}");
    assert_eq!(s.succeeded + s.failed + s.rejected, records, "{s:?}");
    (s.succeeded, s.failed)
}

async fn lines_by_offset(ts: &TestStack, prefix: &str) -> BTreeMap<u64, Value> {
    let lines = ts.lines(prefix).await;
    let by: BTreeMap<u64, Value> = offsets(&lines).into_iter().zip(lines).collect();
    by
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_and_text_bodies_arrive_as_sent_and_headers_are_kept() {
    let ts = stack("shaping_bodies").await;
    let api = MockApi::start(MockConfig::default()).await.unwrap();
    let base = api.base_url();
    let records = 40u64;
    let data = jsonl((0..records).map(|i| json!({"id": i, "name": name(i)})));

    // A form body, query parameters and a User-Agent; the whole echo kept, with two headers.
    let form = format!(
        "input: {{format: jsonl}}\n\
         request:\n  method: POST\n  url: \"{base}/form/{{id}}\"\n  \
         form: {{name: \"{{name}}\", note: \"id={{id}}&more\"}}\n  \
         query: {{who: \"{{name}}\", src: e2e}}\n  user_agent: shaping-test/1.0\n\
         response: {{expect: json, keep_headers: [ETag, X-Mock-Path]}}\n\
         split: {{chunk_bytes: 400}}\n"
    );
    let report = ts
        .run(ts.upload("form", &form, "in.jsonl", &data).await, 2)
        .await;
    assert_eq!(reconciled(&report, records), (records, 0));
    let job = report.job_id.clone().unwrap();
    let results = lines_by_offset(&ts, &format!("results/{job}/part-")).await;
    assert_eq!(results.len() as u64, records);
    for (i, line) in results.values().enumerate() {
        let i = i as u64;
        let echo = &line["response"];
        let sent = echo["body_text"].as_str().expect("a form body is not JSON");
        let fields: BTreeMap<String, String> = url::form_urlencoded::parse(sent.as_bytes())
            .into_owned()
            .collect();
        let want: BTreeMap<String, String> = [
            ("name".to_string(), name(i)),
            ("note".to_string(), format!("id={i}&more")),
        ]
        .into();
        assert_eq!(fields, want, "record {i}: {sent}");
        assert_eq!(echo["content_type"], "application/x-www-form-urlencoded");
        assert_eq!(echo["user_agent"], "shaping-test/1.0");
        assert_eq!(echo["path"], format!("/form/{i}"));
        let query: BTreeMap<String, String> =
            url::form_urlencoded::parse(echo["query"].as_str().unwrap().as_bytes())
                .into_owned()
                .collect();
        assert_eq!(query["who"], name(i), "{echo}");
        assert_eq!(query["src"], "e2e");
        // The headers kept, and only those.
        let headers = line["headers"].as_object().expect("kept headers");
        assert_eq!(headers.len(), 2, "{line}");
        assert_eq!(headers["etag"], sent.len().to_string());
        assert_eq!(headers["x-mock-path"], format!("/form/{i}"));
    }

    // A text body with its Content-Type; the pointer keeps only what the API saw.
    let text = format!(
        "input: {{format: jsonl}}\n\
         request:\n  method: PUT\n  url: \"{base}/text/{{id}}\"\n  \
         text: \"{{id}};{{name}};end\\n\"\n  content_type: text/csv\n\
         response: {{keep: /body_text}}\n\
         split: {{chunk_bytes: 400}}\n"
    );
    let report = ts
        .run(ts.upload("text", &text, "in.jsonl", &data).await, 2)
        .await;
    assert_eq!(reconciled(&report, records), (records, 0));
    let job = report.job_id.clone().unwrap();
    let results = lines_by_offset(&ts, &format!("results/{job}/part-")).await;
    for (i, line) in results.values().enumerate() {
        assert_eq!(
            line["response"],
            format!("{i};{};end\n", name(i as u64)),
            "{line}"
        );
        assert!(line.get("headers").is_none(), "{line}");
    }
    assert_eq!(
        api.stats().total_requests,
        2 * records,
        "one call per record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_decide_success_retry_and_final_failure() {
    let ts = stack("shaping_statuses").await;
    let api = MockApi::start(MockConfig::default()).await.unwrap();
    let base = api.base_url();
    // Six statuses, ten records each. 200 succeeds; 201 is not in success_statuses and not
    // retried; 404 and 422 are final by default; 500 is retried (5xx), 501 carved out.
    let codes = [200u16, 201, 404, 422, 500, 501];
    let records = 60u64;
    let data = jsonl((0..records).map(|i| json!({"id": i, "code": codes[i as usize % 6]})));
    let yaml = format!(
        "input: {{format: jsonl}}\n\
         request: {{method: POST, url: \"{base}/status/{{code}}/items/{{id}}\", body: {{id: \"{{id}}\"}}}}\n\
         client: {{max_attempts: 3, backoff_base_ms: 1, backoff_max_ms: 5, \
           retry_budget_percent: 1000, retry_budget_min_per_sec: 1000, \
           breaker_failure_rate: 1.0, breaker_min_calls: 1000000, \
           success_statuses: [200], retry_statuses: [5xx], permanent_statuses: [501]}}\n\
         response: {{keep: /echo/id}}\n\
         split: {{chunk_bytes: 300}}\n"
    );
    let report = ts
        .run(ts.upload("statuses", &yaml, "in.jsonl", &data).await, 2)
        .await;
    assert_eq!(reconciled(&report, records), (10, 50));
    let job = report.job_id.clone().unwrap();

    // The mock counted one attempt per final status and three per retried one.
    let stats = api.stats();
    let by_status: BTreeMap<u16, u64> = codes.iter().map(|c| (*c, stats.status(*c))).collect();
    let want: BTreeMap<u16, u64> = [
        (200, 10),
        (201, 10),
        (404, 10),
        (422, 10),
        (500, 30),
        (501, 10),
    ]
    .into();
    assert_eq!(by_status, want);
    assert_eq!(stats.total_requests, 80);

    let results = lines_by_offset(&ts, &format!("results/{job}/part-")).await;
    assert_eq!(results.len(), 10);
    // Only the part the pointer names: the id the API echoed, of the records sent to /status/200.
    let ids: Vec<u64> = (results.values())
        .map(|l| {
            assert_eq!(l["status"], 200);
            l["response"].as_u64().unwrap_or_else(|| panic!("{l}"))
        })
        .collect();
    assert_eq!(ids, (0..records).step_by(6).collect::<Vec<_>>());
    let failed = ts.lines(&format!("failed/{job}/")).await;
    assert_eq!(failed.len(), 50);
    for line in &failed {
        let record: Value = serde_json::from_str(line["record"].as_str().unwrap()).unwrap();
        let code = record["code"].as_u64().unwrap();
        assert_eq!(line["status"], code, "{line}");
        assert_eq!(line["error"], format!("HTTP {code}"), "{line}");
        let attempts = if code == 500 { 3 } else { 1 };
        assert_eq!(line["attempts"], attempts, "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_is_not_json_fails_its_record_with_the_reason() {
    let ts = stack("shaping_not_json").await;
    let api = MockApi::start(MockConfig::default()).await.unwrap();
    let base = api.base_url();
    // Every third record's path answers text/plain; the others echo JSON, of which the pointer
    // keeps the id; every fifth record's body has no `id`, so the pointer finds nothing.
    let records = 30u64;
    let data = jsonl((0..records).map(|i| {
        let kind = if i % 3 == 0 { "plain" } else { "items" };
        let body_key = if i % 5 == 0 { "other" } else { "id" };
        json!({"id": i, "kind": kind, "key": body_key})
    }));
    let yaml = format!(
        "input: {{format: jsonl}}\n\
         request: {{method: POST, url: \"{base}/{{kind}}/{{id}}\", text: '{{{{\"{{key}}\": {{id}}}}}}', \
           content_type: application/json}}\n\
         client: {{max_attempts: 3}}\n\
         response: {{expect: json, keep: /echo/id}}\n\
         split: {{chunk_bytes: 250}}\n"
    );
    let report = ts
        .run(ts.upload("notjson", &yaml, "in.jsonl", &data).await, 2)
        .await;
    let plain = (0..records).filter(|i| i % 3 == 0).count() as u64;
    let no_id = (0..records).filter(|i| i % 3 != 0 && i % 5 == 0).count() as u64;
    let (succeeded, failed) = reconciled(&report, records);
    assert_eq!(
        (succeeded, failed),
        (records - plain - no_id, plain + no_id)
    );
    // A 200 that is not what was expected is not retried: one call per record.
    assert_eq!(api.stats().total_requests, records);

    let job = report.job_id.clone().unwrap();
    for line in ts.lines(&format!("failed/{job}/")).await {
        let record: Value = serde_json::from_str(line["record"].as_str().unwrap()).unwrap();
        let error = line["error"].as_str().unwrap();
        if record["kind"] == "plain" {
            assert!(
                error.starts_with(
                    "the response is not JSON (Content-Type text/plain; charset=utf-8): "
                ),
                "{line}"
            );
            assert!(
                line["response_text"]
                    .as_str()
                    .unwrap()
                    .starts_with("plain answer")
            );
        } else {
            assert_eq!(
                error,
                "the response has nothing at \"/echo/id\" (response.keep)"
            );
        }
        assert_eq!(line["status"], 200);
        assert_eq!(line["attempts"], 1);
    }
    let results = lines_by_offset(&ts, &format!("results/{job}/part-")).await;
    let ids: Vec<u64> = results
        .values()
        .map(|l| l["response"].as_u64().unwrap())
        .collect();
    let want: Vec<u64> = (0..records).filter(|i| i % 3 != 0 && i % 5 != 0).collect();
    assert_eq!(ids, want);
}

/// The records' ids, by their offset in the input (results and failed lines name the offset).
fn ids_by_offset(data: &[u8]) -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::new();
    let mut offset = 0u64;
    for line in data.split_inclusive(|b| *b == b'\n') {
        let record: Value = serde_json::from_slice(line).unwrap();
        out.insert(offset, record["id"].as_u64().unwrap());
        offset += line.len() as u64;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_job_of_10000_records_at_25_per_call_makes_400_calls() {
    let ts = stack("shaping_batch").await;
    let api = MockApi::start(MockConfig::default()).await.unwrap();
    let base = api.base_url();
    let records = 10_000u64;
    let data = jsonl((0..records).map(|i| json!({"id": i, "name": format!("n{i}")})));
    // One manifest (the default 4 MiB chunk), and a linger no read stalls for: every call full.
    let yaml = format!(
        "input: {{format: jsonl}}\n\
         request: {{method: POST, url: \"{base}/batch/users\", body: {{id: \"{{id}}\", name: \"{{name}}\"}}}}\n\
         batch: {{size: 25, wrap: items, results: /results, linger_ms: 60000}}\n\
         client: {{max_response_bytes: 1048576}}\n\
         response: {{keep: /echo}}\n"
    );
    let report = ts
        .run(ts.upload("batch", &yaml, "in.jsonl", &data).await, 2)
        .await;
    assert_eq!(reconciled(&report, records), (records, 0));
    let stats = api.stats();
    assert_eq!(stats.total_requests, 400, "10,000 records at 25 per call");
    assert_eq!((stats.batch_calls, stats.batch_items), (400, records));

    // Each record's result is its own item of its call's answer.
    let job = report.job_id.clone().unwrap();
    let ids = ids_by_offset(&data);
    let results = lines_by_offset(&ts, &format!("results/{job}/part-")).await;
    assert_eq!(results.len() as u64, records);
    for (offset, line) in &results {
        let id = ids[offset];
        assert_eq!(
            line["response"],
            json!({"id": id, "name": format!("n{id}")}),
            "{line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_error_fails_only_its_record_and_records_are_metered() {
    let ts = stack("shaping_batch_items").await;
    // The fourth item of every batch fails; the answers come back in reverse order, so only
    // matching by id puts each item with its record.
    let api = MockApi::start(MockConfig {
        batch_fail_index: Some(3),
        batch_reverse: true,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let base = api.base_url();
    let records = 2_000u64;
    let data = jsonl((0..records).map(|i| json!({"id": i})));
    // Several manifests (so some batches are partial, at the ends of ranges), and a rate limit
    // of 1,000 records/s with a burst of 100.
    let yaml = format!(
        "input: {{format: jsonl}}\n\
         request: {{method: POST, url: \"{base}/batch/users\", body: {{id: \"{{id}}\"}}}}\n\
         batch: {{size: 25, id_field: id, results: /results, item_error: /error}}\n\
         client: {{max_response_bytes: 1048576, rate_limit_counts: records, \
           rate_limit_per_sec: 1000, rate_limit_burst: 100}}\n\
         split: {{chunk_bytes: 6000}}\n"
    );
    let report = ts
        .run(ts.upload("items", &yaml, "in.jsonl", &data).await, 2)
        .await;
    let (succeeded, failed) = reconciled(&report, records);
    let stats = api.stats();
    assert!(report.summary.as_ref().unwrap().manifests > 1);
    assert_eq!(stats.total_requests, stats.batch_calls);
    assert_eq!(stats.batch_items, records, "each record sent once");
    assert_eq!(failed, stats.batch_failed_ids.len() as u64);
    assert!(failed > 0 && succeeded + failed == records);

    let job = report.job_id.clone().unwrap();
    let ids = ids_by_offset(&data);
    let failed_lines = lines_by_offset(&ts, &format!("failed/{job}/part-")).await;
    let failed_ids: Vec<u64> = failed_lines.keys().map(|o| ids[o]).collect();
    let mut mock_failed: Vec<u64> = (stats.batch_failed_ids.iter())
        .map(|v| v.as_u64().unwrap())
        .collect();
    mock_failed.sort_unstable();
    assert_eq!(failed_ids, mock_failed, "exactly the items the API failed");
    for line in failed_lines.values() {
        assert!(
            line["error"]
                .as_str()
                .unwrap()
                .starts_with("the API failed this item: item 3 rejected by the mock"),
            "{line}"
        );
    }
    for (offset, line) in lines_by_offset(&ts, &format!("results/{job}/part-")).await {
        assert_eq!(line["response"]["echo"]["id"], ids[&offset], "{line}");
    }
    // Metered by record: one process's tokens are spaced 1/R apart and spent at most b = 0.1 s
    // late, so no 1 s interval holds more than R · (1 + b) = 1,100 of them (docs/rate-limit.md):
    // 2,000 records' calls span more than 1 s (ten 100 ms windows). Counted as calls, the 80
    // calls would fit in one burst.
    let windows = &stats.windows_100ms;
    let first = windows.iter().position(|w| *w > 0).unwrap();
    let last = windows.iter().rposition(|w| *w > 0).unwrap();
    assert!(
        last - first >= 10,
        "calls spread over {} windows of 100 ms",
        last - first
    );

    // A replay sends the failed records in batches too, and they succeed once the API does.
    api.set_config(MockConfig::default());
    let before = api.stats().batch_calls;
    let replayed = fanout_cli::local::replay(&ts.config, &ts.stack, &job)
        .await
        .unwrap();
    assert_eq!(
        (replayed.replayed, replayed.now_succeeded),
        (failed, failed),
        "{replayed:?}"
    );
    // Replay works a manifest's failed records at a time: full batches within each.
    let per_unit: u64 = (failed_lines.keys())
        .fold(BTreeMap::<u64, u64>::new(), |mut units, offset| {
            let manifest = offset / 6000;
            *units.entry(manifest).or_default() += 1;
            units
        })
        .values()
        .map(|n| n.div_ceil(25))
        .sum();
    assert_eq!(api.stats().batch_calls - before, per_unit);
    assert!(ts.lines(&format!("failed/{job}/part-")).await.is_empty());
    let results = lines_by_offset(&ts, &format!("results/{job}/part-")).await;
    assert_eq!(results.len() as u64, records);
    for (offset, line) in results {
        assert_eq!(line["response"]["echo"]["id"], ids[&offset], "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_cache_on_repeated_requests_are_sent_once() {
    let ts = stack("shaping_cache").await;
    let api = MockApi::start(MockConfig::default()).await.unwrap();
    let base = api.base_url();
    // 2,000 records, 1,000 distinct requests: each key twice, far apart, in several manifests.
    let records = 2_000u64;
    let key = |i: u64| (i * 7919) % 1000;
    let data = jsonl((0..records).map(|i| json!({"id": i, "k": key(i)})));
    let yaml = format!(
        "input: {{format: jsonl}}\n\
         request: {{url: \"{base}/items/{{k}}\"}}\n\
         cache: {{enabled: true}}\n\
         split: {{chunk_bytes: 8000}}\n"
    );
    // One container: the cache is a container's (a job over N containers sends a repeated
    // request at most N times).
    let report = ts
        .run(ts.upload("cache", &yaml, "in.jsonl", &data).await, 1)
        .await;
    assert_eq!(reconciled(&report, records), (records, 0));
    assert!(report.summary.as_ref().unwrap().manifests > 2);
    assert_eq!(api.stats().total_requests, 1000, "half the calls");

    let job = report.job_id.clone().unwrap();
    let ids = ids_by_offset(&data);
    let results = lines_by_offset(&ts, &format!("results/{job}/part-")).await;
    let mut cached = 0;
    for (offset, line) in &results {
        // Each record's line is the answer to its own request, whoever sent it.
        let k = key(ids[offset]);
        assert_eq!(line["response"]["path"], format!("/items/{k}"), "{line}");
        if line["cached"] == true {
            cached += 1;
            assert_eq!(line["attempts"], 0, "{line}");
        } else {
            assert!(
                line.get("cached").is_none() && line["attempts"] == 1,
                "{line}"
            );
        }
    }
    assert_eq!(cached, 1000);
}

/// Python's csv module's reading of `part`: its header, then each row as a list of cells.
fn python_csv(part: &[u8]) -> Vec<Vec<String>> {
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            "import csv, io, json, sys\n\
             print(json.dumps(list(csv.reader(io.StringIO(sys.stdin.read(), newline='')))))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(part).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python3 csv: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_results_load_in_pythons_csv_module_also_after_a_replay() {
    let ts = stack("shaping_csv").await;
    // Every record's first and only attempt fails one time in four; the replay finishes them.
    let api = MockApi::start(MockConfig {
        error_rate: 0.25,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let base = api.base_url();
    let records = 300u64;
    let note = |i: u64| match i % 3 {
        0 => "two\nlines, \"quoted\"".to_string(),
        1 => String::new(),
        _ => format!("n{i}"),
    };
    let data = jsonl((0..records).map(|i| json!({"id": i, "name": name(i), "note": note(i)})));
    let yaml = format!(
        "input: {{format: jsonl}}\n\
         request: {{method: POST, url: \"{base}/items/{{id}}\", body: {{id: \"{{id}}\", name: \"{{name}}\"}}}}\n\
         client: {{max_attempts: 1}}\n\
         response: {{keep_headers: [ETag]}}\n\
         output:\n  format: csv\n  columns: [record.id, record.name, record.note, \
           {{name: echoed, value: response/echo/name}}, status, header.etag]\n\
         split: {{chunk_bytes: 4000}}\n"
    );
    let report = ts
        .run(ts.upload("csv", &yaml, "in.jsonl", &data).await, 2)
        .await;
    let (succeeded, failed) = reconciled(&report, records);
    assert!(failed > 0, "the mock failed some calls");
    let job = report.job_id.clone().unwrap();

    let check = |rows_seen: &mut u64, part: &[u8]| {
        let rows = python_csv(part);
        assert_eq!(
            rows[0],
            ["offset", "id", "name", "note", "echoed", "status", "etag"],
        );
        let ids = ids_by_offset(&data);
        for row in &rows[1..] {
            let offset: u64 = row[0].parse().unwrap();
            let id = ids[&offset];
            assert_eq!(row[1], id.to_string());
            assert_eq!(row[2], name(id));
            assert_eq!(row[3], note(id));
            assert_eq!(row[4], name(id), "the API's echo of the name");
            assert_eq!(row[5], "200");
            assert!(row[6].parse::<u64>().unwrap() > 0, "{row:?}");
            *rows_seen += 1;
        }
    };
    let parts = ts.keys(&format!("results/{job}/part-")).await;
    assert!(
        parts.len() > 2 && parts.iter().all(|k| k.ends_with(".csv")),
        "{parts:?}"
    );
    let mut rows = 0;
    for key in &parts {
        check(&mut rows, &ts.object(key).await);
    }
    assert_eq!(rows, succeeded);

    // The replay adds the rest as rows of the same parts.
    api.set_config(MockConfig::default());
    let replayed = fanout_cli::local::replay(&ts.config, &ts.stack, &job)
        .await
        .unwrap();
    assert_eq!(replayed.now_succeeded, failed, "{replayed:?}");
    let mut rows = 0;
    for key in ts.keys(&format!("results/{job}/part-")).await {
        check(&mut rows, &ts.object(&key).await);
    }
    assert_eq!(rows, records);
}
