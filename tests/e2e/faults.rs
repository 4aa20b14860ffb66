//! Fault injection on the local stack: nothing lost, nothing twice.
//!
//! Each scenario runs a real job (the local AWS + the mock API + the local runner's simulated containers)
//! with a fault injected, then checks from the results/, failed/ and rejected/ objects alone that
//! every input record appears exactly once, and that the summary's counts agree with them.
//!
//! With `FANOUT_FAULTS_OUT` set, each scenario appends one JSON line (scenario, records in, lost,
//! duplicated) to that file; `make test-faults` sums them into its last line.

mod fault_proxy;

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use fanout_cli::local::{self, Kills, PollerOptions, RunReport};
use fanout_core::framer::split_all;
use fanout_core::ledger::JobStatus;
use fanout_handlers::splitter::SplitOutcome;
use integration_tests::{
    MockApi, MockConfig, TestStack, mock_api_with_latency, pipeline_yaml, stack,
};
use serde_json::{Value, json};

const CSV_FIELDS: &str = "[{name: id, type: integer, required: true}, {name: name}]";

/// A CSV of `n` records; every 97th has a non-integer id (rejected). Returns the bytes and every
/// record's offset.
fn csv(n: usize, id_base: usize) -> (Vec<u8>, Vec<u64>) {
    let mut text = String::from("id,name\n");
    for i in 0..n {
        if i % 97 == 50 {
            text.push_str(&format!("bad{i},x\n"));
        } else {
            text.push_str(&format!("{},name-{i}\n", id_base + i));
        }
    }
    let data = text.into_bytes();
    let offsets = split_all(&data, 8).into_iter().map(|(o, _)| o).collect();
    (data, offsets)
}

/// A pipeline with `concurrency` calls in flight, per-attempt `timeout_ms` and `attempts`.
fn yaml(
    api: &MockApi,
    chunk_bytes: u64,
    concurrency: usize,
    timeout_ms: u64,
    attempts: u32,
) -> String {
    pipeline_yaml("csv", &api.base_url(), CSV_FIELDS, chunk_bytes, "").replace(
        "client: { concurrency: 16, timeout_ms: 5000, max_attempts: 2 }",
        &format!(
            "client: {{ concurrency: {concurrency}, timeout_ms: {timeout_ms}, max_attempts: {attempts}, backoff_base_ms: 20, backoff_max_ms: 200 }}"
        ),
    )
}

/// Shortens the manifest queue's visibility timeout, so that a message whose invocation died
/// comes back within the test. Like the template (visibility = 6 × the worker timeout) it stays
/// longer than the simulated invocation timeout, so a live invocation's message is not redelivered.
async fn set_visibility(ts: &TestStack, secs: u32) {
    aws_sdk_sqs::Client::new(&ts.config)
        .set_queue_attributes()
        .queue_url(&ts.stack.queue_url)
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            secs.to_string(),
        )
        .send()
        .await
        .expect("SetQueueAttributes");
}

async fn run(
    ts: &TestStack,
    event: aws_lambda_events::s3::S3Event,
    options: PollerOptions,
) -> RunReport {
    let run = local::run_event(
        &ts.config,
        &ts.stack,
        event,
        &options,
        Duration::from_secs(240),
        &|_| {},
    )
    .await;
    match run {
        Ok(report) => report,
        Err(e) => {
            // Where the job's messages are, to tell a stuck message from a slow job.
            let dlq = aws_sdk_sqs::Client::new(&ts.config)
                .get_queue_attributes()
                .queue_url(&ts.stack.dlq_url)
                .attribute_names(
                    aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages,
                )
                .send()
                .await
                .map(|a| format!("{:?}", a.attributes()));
            panic!(
                "local run: {e:#}; queue depth {}, DLQ {dlq:?}",
                ts.queue_depth().await
            )
        }
    }
}

fn options(workers: usize) -> PollerOptions {
    PollerOptions {
        workers,
        batch_size: 1,
        ..PollerOptions::default()
    }
}

async fn summary(ts: &TestStack, job: &str) -> Value {
    let body = ts
        .s3()
        .get_object()
        .bucket(ts.bucket())
        .key(format!("results/{job}/_SUMMARY.json"))
        .send()
        .await
        .expect("summary exists");
    serde_json::from_slice(&body.body.collect().await.unwrap().into_bytes()).unwrap()
}

/// What the output says about the input, read from the objects alone.
struct Audit {
    results: Vec<Value>,
    failed: Vec<Value>,
    rejected: Vec<Value>,
}

/// Checks that every input record appears exactly once over results/, failed/ and rejected/, and
/// that the summary agrees; appends the scenario's figures to `FANOUT_FAULTS_OUT` first, so a
/// failing scenario is reported too.
async fn audit(ts: &TestStack, scenario: &str, job_id: &str, input: &[u64]) -> Audit {
    audit_as(ts, scenario, job_id, input, "COMPLETED").await
}

async fn audit_as(
    ts: &TestStack,
    scenario: &str,
    job_id: &str,
    input: &[u64],
    status: &str,
) -> Audit {
    let results = ts.lines(&format!("results/{job_id}/part-")).await;
    let failed = ts.lines(&format!("failed/{job_id}/")).await;
    let rejected = ts.lines(&format!("rejected/{job_id}/")).await;
    let mut seen: BTreeMap<u64, u64> = BTreeMap::new();
    for line in results.iter().chain(&failed).chain(&rejected) {
        *seen
            .entry(line["offset"].as_u64().expect("offset"))
            .or_default() += 1;
    }
    let lost: Vec<u64> = input
        .iter()
        .filter(|o| !seen.contains_key(o))
        .copied()
        .collect();
    // A record twice counts once per extra copy; an offset that is no input record counts too.
    let duplicated: u64 = seen
        .iter()
        .map(|(o, n)| {
            if input.binary_search(o).is_ok() {
                n - 1
            } else {
                *n
            }
        })
        .sum();
    if let Some(path) = std::env::var_os("FANOUT_FAULTS_OUT") {
        let line = json!({"scenario": scenario, "records_in": input.len(), "records_lost": lost.len(), "records_duplicated": duplicated});
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open FANOUT_FAULTS_OUT");
        writeln!(f, "{line}").expect("write FANOUT_FAULTS_OUT");
    }
    assert!(
        lost.is_empty(),
        "{scenario}: {} records lost, first {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert_eq!(duplicated, 0, "{scenario}: records duplicated");
    let s = summary(ts, job_id).await;
    assert_eq!(s["status"], status, "{scenario}: {s}");
    assert_eq!(s["input_records"], input.len() as u64, "{scenario}: {s}");
    assert_eq!(s["succeeded"], results.len() as u64, "{scenario}: {s}");
    assert_eq!(s["failed"], failed.len() as u64, "{scenario}: {s}");
    assert_eq!(s["rejected"], rejected.len() as u64, "{scenario}: {s}");
    assert_eq!(s["reconciled"], true, "{scenario}: {s}");
    Audit {
        results,
        failed,
        rejected,
    }
}

/// The job a run started.
fn job_of(report: &RunReport) -> String {
    let job = report.job.as_ref().expect("job");
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    job.job_id.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_5xx_and_timeouts() {
    let ts = stack("f_5xx").await;
    let api = MockApi::start(MockConfig {
        error_rate: 0.2,
        timeout_rate: 0.05,
        hang_ms: 2_000,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let (data, input) = csv(1200, 0);
    let event = ts
        .upload("p", &yaml(&api, 4_000, 16, 300, 2), "in.csv", &data)
        .await;
    let report = run(&ts, event, options(4)).await;
    let a = audit(&ts, "api_5xx_20pct_timeouts_5pct", &job_of(&report), &input).await;
    // The faults did happen, and each is visible in failed/ with its record.
    assert!(!a.failed.is_empty() && !a.results.is_empty());
    assert!(
        a.failed
            .iter()
            .all(|f| f["record"].as_str().is_some_and(|r| !r.is_empty()))
    );
    let stats = api.stats();
    assert!(stats.status(503) > 0 && stats.status(504) + stats.status(503) > 0);
    assert_eq!(stats.duplicate_successes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deadline_cuts_manifests_into_continuations() {
    let ts = stack("f_deadline").await;
    set_visibility(&ts, 12).await;
    // ~4 calls in flight at 20–40 ms: ~130 records/s, so a 1500-record manifest needs several
    // 6 s invocations.
    let api = mock_api_with_latency(20, 40).await;
    let (data, input) = csv(3000, 0);
    let event = ts
        .upload("p", &yaml(&api, 24_000, 4, 2_000, 2), "in.csv", &data)
        .await;
    let report = run(
        &ts,
        event,
        PollerOptions {
            invocation_timeout: Some(Duration::from_secs(6)),
            ..options(2)
        },
    )
    .await;
    let job_id = job_of(&report);
    let a = audit(&ts, "deadline_continuations", &job_id, &input).await;
    assert!(
        a.failed.is_empty(),
        "{:?}",
        &a.failed[..a.failed.len().min(3)]
    );
    let job = report.job.unwrap();
    let planned = 2;
    assert!(
        job.manifests_total > planned,
        "expected continuations, manifests_total = {}",
        job.manifests_total
    );
    assert_eq!(job.manifests_done, job.manifests_total);
    let parts = ts.keys(&format!("results/{job_id}/part-")).await;
    assert!(parts.iter().any(|k| k.ends_with(".001.jsonl")), "{parts:?}");
    // Each record's call succeeded once; a record abandoned at a hard stop may have been sent
    // again, with its idempotency key.
    let stats = api.stats();
    assert_eq!(stats.keys_seen, a.results.len() as u64);
    assert_eq!(stats.duplicate_successes, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn containers_killed_mid_manifest() {
    let ts = stack("f_kill").await;
    set_visibility(&ts, 8).await;
    // ~500 records per manifest at ~500 records/s: each invocation outlives a kill at 700 ms.
    let api = mock_api_with_latency(10, 20).await;
    let (data, input) = csv(2000, 0);
    let event = ts
        .upload("p", &yaml(&api, 6_000, 8, 2_000, 2), "in.csv", &data)
        .await;
    let report = run(
        &ts,
        event,
        PollerOptions {
            invocation_timeout: Some(Duration::from_secs(6)),
            kills: Some(Kills {
                count: 4,
                after: Duration::from_millis(700),
            }),
            ..options(3)
        },
    )
    .await;
    assert_eq!(report.pollers.killed, 4, "{:?}", report.pollers);
    let a = audit(&ts, "containers_killed", &job_of(&report), &input).await;
    assert!(a.failed.is_empty());
    let stats = api.stats();
    // Killed invocations' calls were repeated by whoever took the claim over, with the same keys.
    assert!(stats.repeated_keys > 0, "{stats:?}");
    assert_eq!(stats.keys_seen, a.results.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_s3_event_twice_concurrently() {
    let ts = stack("f_dup_event").await;
    let api = MockApi::start(MockConfig::default()).await.unwrap();
    let (data, input) = csv(900, 0);
    let event = ts
        .upload("p", &yaml(&api, 3_000, 8, 2_000, 2), "in.csv", &data)
        .await;
    // Two splitter invocations for one event at once: both may enqueue every manifest.
    let deps = local::splitter_deps(&ts.config, &ts.stack);
    let (a, b) = tokio::join!(
        fanout_handlers::splitter::handle_s3_event(event.clone(), &deps),
        fanout_handlers::splitter::handle_s3_event(event.clone(), &deps)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let job_id = match (&a[0], &b[0]) {
        (SplitOutcome::Started { job_id, .. }, _) | (_, SplitOutcome::Started { job_id, .. }) => {
            job_id.clone()
        }
        other => panic!("{other:?}"),
    };
    // And the event a third time, through the runner, which also drains the queue.
    let report = run(&ts, event, options(4)).await;
    assert_eq!(report.job_id.as_deref(), Some(job_id.as_str()));
    let audit = audit(&ts, "same_s3_event_thrice", &job_id, &input).await;
    let stats = api.stats();
    assert_eq!(
        stats.total_requests,
        audit.results.len() as u64,
        "a manifest enqueued twice is worked once: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_sqs_message_delivered_twice_concurrently() {
    use fanout_handlers::worker::handle_sqs_event;
    let ts = stack("f_dup_msg").await;
    let api = mock_api_with_latency(2, 5).await;
    let (data, input) = csv(600, 0);
    let event = ts
        .upload("p", &yaml(&api, 2_000, 8, 2_000, 2), "in.csv", &data)
        .await;
    let (job_id, bodies) = ts.split_and_receive(event).await;
    let job_id = &job_id;
    // Two containers get the same messages at the same time; whatever each returns as failed is
    // delivered again, as SQS would, until nothing is returned.
    let (w1, w2) = (
        local::worker_deps(&ts.config, &ts.stack, 2).unwrap(),
        local::worker_deps(&ts.config, &ts.stack, 2).unwrap(),
    );
    let event_of = |ids: &[usize], copy: usize| -> aws_lambda_events::sqs::SqsEvent {
        let records: Vec<Value> = ids
            .iter()
            .map(|i| json!({"messageId": format!("m{i}-{copy}"), "body": bodies[*i]}))
            .collect();
        serde_json::from_value(json!({ "Records": records })).unwrap()
    };
    let all: Vec<usize> = (0..bodies.len()).collect();
    let (r1, r2) = tokio::join!(
        handle_sqs_event(event_of(&all, 1), &w1),
        handle_sqs_event(event_of(&all, 2), &w2)
    );
    let mut pending: Vec<usize> = r1
        .batch_item_failures
        .iter()
        .chain(&r2.batch_item_failures)
        .map(|f| {
            f.item_identifier[1..]
                .split('-')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    let mut rounds = 0;
    while !pending.is_empty() {
        rounds += 1;
        assert!(rounds < 20, "messages still returned: {pending:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = handle_sqs_event(event_of(&pending, 3), &w1).await;
        pending = r
            .batch_item_failures
            .iter()
            .map(|f| {
                f.item_identifier[1..]
                    .split('-')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
    }
    let a = audit(&ts, "same_sqs_message_twice_concurrently", job_id, &input).await;
    let stats = api.stats();
    assert_eq!(
        stats.total_requests,
        a.results.len() as u64,
        "each manifest worked once: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn object_overwritten_while_its_job_runs() {
    let ts = stack("f_overwrite").await;
    let api = mock_api_with_latency(2, 6).await;
    let (v1, input) = csv(1500, 0);
    let (v2, _) = csv(1800, 500_000);
    let event = ts
        .upload("p", &yaml(&api, 3_000, 4, 2_000, 2), "in.csv", &v1)
        .await;
    let overwrite = async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        ts.s3()
            .put_object()
            .bucket(ts.bucket())
            .key("input/p/in.csv")
            .body(v2.clone().into())
            .send()
            .await
            .expect("overwrite");
    };
    let (report, ()) = tokio::join!(run(&ts, event, options(2)), overwrite);
    let a = audit(&ts, "object_overwritten_mid_job", &job_of(&report), &input).await;
    // Every call was made from the pinned first version: no id from the second one.
    assert!(
        a.results.iter().all(|r| r["response"]["echo"]["id"]
            .as_u64()
            .is_some_and(|id| id < 500_000)),
        "a record of the overwriting version was sent"
    );
    let bad = (0..1500).filter(|i| i % 97 == 50).count();
    assert_eq!(a.rejected.len(), bad);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_outage_mid_job() {
    let ts = stack("f_outage").await;
    let api = mock_api_with_latency(2, 6).await;
    let (data, input) = csv(2500, 0);
    let event = ts
        .upload("p", &yaml(&api, 3_000, 4, 1_000, 3), "in.csv", &data)
        .await;
    let outage = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        api.set_config(MockConfig {
            outage: true,
            ..api.config()
        });
        tokio::time::sleep(Duration::from_secs(10)).await;
        api.set_config(MockConfig {
            outage: false,
            ..api.config()
        });
    };
    let (report, ()) = tokio::join!(run(&ts, event, options(2)), outage);
    let a = audit(&ts, "api_outage_10s", &job_of(&report), &input).await;
    assert!(api.stats().status(503) > 0, "the outage was seen");
    assert_eq!(api.stats().duplicate_successes, 0);
    assert!(!a.results.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_429_storm_with_retry_after() {
    let ts = stack("f_429").await;
    let api = MockApi::start(MockConfig {
        rate_429: 0.4,
        retry_after_secs: 1,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let (data, input) = csv(800, 0);
    let event = ts
        .upload("p", &yaml(&api, 4_000, 8, 2_000, 4), "in.csv", &data)
        .await;
    let report = run(&ts, event, options(2)).await;
    let a = audit(&ts, "api_429_storm", &job_of(&report), &input).await;
    let stats = api.stats();
    assert!(stats.status(429) > 0);
    assert_eq!(stats.duplicate_successes, 0);
    assert_eq!(stats.keys_seen as usize, a.results.len() + a.failed.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failure_tolerance_stops_the_job_and_drains_the_rest() {
    let ts = stack("f_tolerance").await;
    let api = MockApi::start(MockConfig {
        error_rate: 0.5,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let (data, input) = csv(3000, 0);
    let yaml = yaml(&api, 1_500, 4, 2_000, 1) + "job: { tolerated_failure_count: 20 }\n";
    let event = ts.upload("p", &yaml, "in.csv", &data).await;
    let report = run(&ts, event, options(2)).await;
    let job = report.job.expect("job");
    assert_eq!(job.status, JobStatus::Failed, "{job:?}");
    let reason = job.error.clone().unwrap();
    assert!(
        reason.starts_with("job stopped: failure tolerance exceeded")
            && reason.contains("job.tolerated_failure_count is 20"),
        "{reason}"
    );
    let a = audit_as(
        &ts,
        "failure_tolerance_exceeded",
        &job.job_id,
        &input,
        "FAILED",
    )
    .await;
    let drained: Vec<&Value> = a
        .failed
        .iter()
        .filter(|f| {
            f["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("job stopped"))
        })
        .collect();
    assert!(
        !drained.is_empty(),
        "records after the stop are drained to failed/"
    );
    assert!(
        drained.iter().all(|f| f["error"] == reason.as_str()
            && f["attempts"] == 0
            && f["record"].as_str().is_some()),
        "{:?}",
        drained.iter().find(|f| f["error"] != reason.as_str())
    );
    let s = summary(&ts, &job.job_id).await;
    assert_eq!(s["error"], reason.as_str());
    // No drained record was sent (one attempt each: a record sent is a key seen), and the API
    // stopped being called: far fewer calls than records.
    let attempted = a
        .results
        .iter()
        .chain(&a.failed)
        .filter(|l| l["attempts"] != 0)
        .count();
    let stats = api.stats();
    assert_eq!(stats.keys_seen as usize, attempted, "{stats:?}");
    assert!(attempted < input.len() / 2, "{attempted} records sent");
}

/// A service-config loader that finds no setting in the environment.
#[derive(Debug)]
struct NoServiceConfig;

impl aws_types::service_config::LoadServiceConfig for NoServiceConfig {
    fn load_config(&self, _: aws_types::service_config::ServiceConfigKey<'_>) -> Option<String> {
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aws_errors_for_a_while() {
    let ts = stack("f_aws").await;
    set_visibility(&ts, 15).await;
    let api = mock_api_with_latency(3, 8).await;
    let (data, input) = csv(1500, 0);
    let event = ts
        .upload("p", &yaml(&api, 2_000, 8, 2_000, 2), "in.csv", &data)
        .await;
    let proxy = fault_proxy::FaultProxy::start(&std::env::var("AWS_ENDPOINT_URL").unwrap()).await;
    // Every S3, SQS and DynamoDB call of the splitter and the workers goes through the proxy.
    // The clients prefer AWS_ENDPOINT_URL (the emulator itself, read through the config's service-config
    // loader) to the config's endpoint, so this config gets a loader that finds nothing.
    let faulty = ts
        .config
        .to_builder()
        .endpoint_url(proxy.url())
        .service_config(NoServiceConfig)
        .build();
    proxy.fail(0.3);
    let faults_end = async {
        tokio::time::sleep(Duration::from_secs(6)).await;
        proxy.fail(0.0);
    };
    let job = async {
        // Lambda tries an asynchronous invocation (the S3 event) three times.
        let deps = local::splitter_deps(&faulty, &ts.stack);
        let mut tries = 0;
        let split = loop {
            tries += 1;
            match fanout_handlers::splitter::handle_s3_event(event.clone(), &deps).await {
                Ok(split) => break split,
                Err(e) if tries < 3 => eprintln!("splitter failed, retried: {e:#}"),
                Err(e) => panic!("splitter failed three times: {e:#}"),
            }
        };
        let job_id = match &split[0] {
            SplitOutcome::Started { job_id, .. } => job_id.clone(),
            other => panic!("{other:?}"),
        };
        let pollers = local::Pollers::start(
            &faulty,
            &ts.stack,
            &PollerOptions {
                invocation_timeout: Some(Duration::from_secs(10)),
                ..options(3)
            },
        )
        .unwrap();
        let ledger = local::splitter_deps(&ts.config, &ts.stack).ledger;
        let started = std::time::Instant::now();
        let job = loop {
            let job = ledger.get_job(&job_id).await.unwrap().unwrap();
            if job.status.is_final() {
                break job;
            }
            assert!(started.elapsed() < Duration::from_secs(180), "{job:?}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        pollers.stop().await.unwrap();
        job
    };
    let (job, ()) = tokio::join!(job, faults_end);
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    let (forwarded, failed) = proxy.counts();
    assert!(
        failed > 5,
        "faults were injected: {failed} of {}",
        forwarded + failed
    );
    let a = audit(&ts, "aws_errors_30pct_for_6s", &job.job_id, &input).await;
    // A call whose rate-limit lease (a DynamoDB write) failed after the SDK's retries fails
    // its record, which is then in failed/ once, with the record, for replay.
    assert!(a.failed.iter().all(|f| f["record"].as_str().is_some()));
    // When a write after the calls fails (S3, DynamoDB), the unit is worked again and its
    // records are sent again: the API can see a success twice, always under the record's
    // idempotency key (one key per record), which is what lets it answer the repeat as such.
    let stats = api.stats();
    assert_eq!(stats.requests_without_key, 0);
    assert!(stats.keys_seen as usize <= input.len(), "{stats:?}");
    eprintln!(
        "aws_errors: {} API successes repeated after lost work",
        stats.duplicate_successes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_stop_leaves_only_recorded_output_and_resumes() {
    let ts = stack("f_sigterm").await;
    let api = mock_api_with_latency(10, 20).await;
    let (data, input) = csv(3000, 0);
    let event = ts
        .upload("p", &yaml(&api, 8_000, 4, 2_000, 2), "in.csv", &data)
        .await;
    let interrupt = fanout_core::continuation::Interrupt::default();
    let sigterm = {
        let interrupt = interrupt.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            interrupt.trigger();
        }
    };
    let stopping = run(
        &ts,
        event.clone(),
        PollerOptions {
            interrupt: Some(interrupt),
            ..options(2)
        },
    );
    let (report, ()) = tokio::join!(stopping, sigterm);
    assert!(report.interrupted);
    let job = report.job.clone().unwrap();
    assert_eq!(job.status, JobStatus::Running, "{job:?}");
    assert!(
        job.manifests_done > 0 && job.manifests_done < job.manifests_total,
        "{job:?}"
    );

    // Every object written belongs to a recorded unit and holds exactly its counted lines.
    let ledger = local::splitter_deps(&ts.config, &ts.stack).ledger;
    let recorded = ledger.manifests(&job.job_id).await.unwrap();
    let mut written = 0;
    for (dir, count) in [
        (
            "results",
            (|c: &fanout_core::ledger::Counts| c.succeeded) as fn(&_) -> u64,
        ),
        ("failed", |c| c.failed),
        ("rejected", |c| c.rejected),
    ] {
        for key in ts.keys(&format!("{dir}/{}/part-", job.job_id)).await {
            let unit = key
                .rsplit("part-")
                .next()
                .unwrap()
                .trim_end_matches(".jsonl");
            let m = recorded
                .iter()
                .find(|m| fanout_core::manifest::keys::unit(m.seq, m.part) == unit)
                .unwrap_or_else(|| panic!("{key} belongs to no recorded manifest"));
            let lines = ts.lines(&key).await.len() as u64;
            assert_eq!(lines, count(&m.counts), "{key}");
            written += 1;
        }
    }
    assert!(written > 0);
    assert!(ts.queue_depth().await > 0, "the rest is queued");

    // The next run's pollers finish the job.
    let resumed = run(&ts, event, options(2)).await;
    assert!(matches!(
        resumed.split.as_slice(),
        [SplitOutcome::Duplicate {
            status: JobStatus::Running,
            ..
        }]
    ));
    let a = audit(&ts, "graceful_stop_and_resume", &job_of(&resumed), &input).await;
    assert_eq!(api.stats().duplicate_successes, 0);
    assert!(a.failed.is_empty());
}
