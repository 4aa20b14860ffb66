//! Harness for the end-to-end tests: a fresh stack (bucket, queues, table) per test on the local
//! AWS that `scripts/with-stack.sh` starts, a mock API per test, and readers for the job's output.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use fanout_cli::local::{self, PollerOptions, RunReport, Stack, StackNames};
use serde_json::Value;

pub use mock_api::{MockApi, MockConfig};

pub struct TestStack {
    pub config: aws_config::SdkConfig,
    pub stack: Stack,
}

/// A new stack with names unique to this test.
pub async fn stack(test: &str) -> TestStack {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run the integration tests through `make test` (scripts/with-stack.sh starts the local AWS)"
    );
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let prefix = format!("t{}-{}-{n}", std::process::id(), test.replace('_', "-")).to_lowercase();
    let config = fanout_aws::load_config().await;
    let stack = local::ensure_stack(&config, &StackNames::with_prefix(&prefix))
        .await
        .expect("create the local stack");
    TestStack { config, stack }
}

impl TestStack {
    pub fn bucket(&self) -> &str {
        &self.stack.names.bucket
    }

    pub fn s3(&self) -> aws_sdk_s3::Client {
        fanout_aws::s3_client(&self.config)
    }

    /// Puts the pipeline config and the input (at `input/<pipeline>/<file>`), returning the event.
    pub async fn upload(
        &self,
        pipeline: &str,
        yaml: &str,
        file: &str,
        data: &[u8],
    ) -> aws_lambda_events::s3::S3Event {
        local::put_pipeline(&self.config, self.bucket(), pipeline, yaml)
            .await
            .expect("put pipeline");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(file);
        std::fs::write(&path, data).expect("write input");
        local::upload_input(
            &self.config,
            self.bucket(),
            &format!("input/{pipeline}/{file}"),
            &path,
        )
        .await
        .expect("upload input")
    }

    /// Runs the splitter on `event`, then takes every manifest it enqueued off the queue (as
    /// the event source mapping would before invoking the worker), so that a test can deliver
    /// them itself: the job id and the manifests' message bodies.
    pub async fn split_and_receive(
        &self,
        event: aws_lambda_events::s3::S3Event,
    ) -> (String, Vec<String>) {
        let deps = local::splitter_deps(&self.config, &self.stack);
        let split = fanout_handlers::splitter::handle_s3_event(event, &deps)
            .await
            .expect("split");
        let [fanout_handlers::splitter::SplitOutcome::Started { job_id, manifests }] = &split[..]
        else {
            panic!("expected one started job: {split:?}")
        };
        let sqs = aws_sdk_sqs::Client::new(&self.config);
        let mut bodies = Vec::new();
        while bodies.len() < *manifests as usize {
            let got = sqs
                .receive_message()
                .queue_url(&self.stack.queue_url)
                .max_number_of_messages(10)
                .send()
                .await
                .expect("ReceiveMessage");
            bodies.extend(got.messages().iter().map(|m| m.body().unwrap().to_string()));
        }
        (job_id.clone(), bodies)
    }

    /// Runs a job for `event` with `workers` simulated containers.
    pub async fn run(&self, event: aws_lambda_events::s3::S3Event, workers: usize) -> RunReport {
        self.run_for(event, workers, Duration::from_secs(120)).await
    }

    /// Like [`TestStack::run`], for a job that may take up to `timeout`.
    pub async fn run_for(
        &self,
        event: aws_lambda_events::s3::S3Event,
        workers: usize,
        timeout: Duration,
    ) -> RunReport {
        let options = PollerOptions {
            workers,
            batch_size: 2,
            ..PollerOptions::default()
        };
        local::run_event(&self.config, &self.stack, event, &options, timeout, &|_| {})
            .await
            .expect("local run")
    }

    /// Creates the Secrets Manager secret `name` holding `value` in the local AWS.
    pub async fn put_secret(&self, name: &str, value: &str) {
        aws_sdk_secretsmanager::Client::new(&self.config)
            .create_secret()
            .name(name)
            .secret_string(value)
            .send()
            .await
            .unwrap_or_else(|e| panic!("CreateSecret {name}: {e:?}"));
    }

    /// The report's job completed, reconciled, with `records` succeeded.
    pub fn assert_all_succeeded(report: &RunReport, records: u64) {
        let job = report.job.as_ref().expect("a job");
        assert_eq!(
            job.status,
            fanout_core::ledger::JobStatus::Completed,
            "{job:?}"
        );
        let summary = report.summary.as_ref().expect("a summary");
        assert!(summary.reconciled, "{summary:?}");
        assert_eq!(summary.succeeded, records, "{summary:?}");
    }

    /// The bytes of the object at `key` in the stack's bucket.
    pub async fn object(&self, key: &str) -> bytes::Bytes {
        self.s3()
            .get_object()
            .bucket(self.bucket())
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("get {key}: {e}"))
            .body
            .collect()
            .await
            .unwrap_or_else(|e| panic!("read {key}: {e}"))
            .into_bytes()
    }

    /// Every JSON line of every object under `prefix`.
    pub async fn lines(&self, prefix: &str) -> Vec<Value> {
        let mut out = Vec::new();
        for key in self.keys(prefix).await {
            let body = self.object(&key).await;
            for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                out.push(
                    serde_json::from_slice(line)
                        .unwrap_or_else(|e| panic!("{key}: bad JSON line: {e}")),
                );
            }
        }
        out
    }

    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let listed = self
            .s3()
            .list_objects_v2()
            .bucket(self.bucket())
            .prefix(prefix)
            .send()
            .await
            .expect("list");
        listed
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect()
    }

    pub async fn queue_depth(&self) -> u64 {
        let sqs = aws_sdk_sqs::Client::new(&self.config);
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(&self.stack.queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
            .send()
            .await
            .expect("queue attributes");
        let attrs = attrs.attributes().cloned().unwrap_or_default();
        [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
        ]
        .iter()
        .map(|n| {
            attrs
                .get(&aws_sdk_sqs::types::QueueAttributeName::from(*n))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_default()
        })
        .sum()
    }
}

/// A pipeline config for `format` that POSTs to the mock API.
pub fn pipeline_yaml(
    format: &str,
    base_url: &str,
    fields: &str,
    chunk_bytes: u64,
    extra: &str,
) -> String {
    format!(
        "input:\n  format: {format}\n  fields: {fields}\nrequest:\n  method: POST\n  url: \"{base_url}/items/{{id}}?name={{name}}\"\n  body: {{ id: \"{{id}}\", name: \"{{name}}\" }}\nclient: {{ concurrency: 16, timeout_ms: 5000, max_attempts: 2 }}\nsplit: {{ chunk_bytes: {chunk_bytes} }}\n{extra}"
    )
}

/// Rates from the mock API's counts per 100 ms window (`Stats::windows_100ms`).
pub mod rates {
    /// 100 ms windows per second.
    pub const PER_SEC: usize = 10;

    /// The mean rate per second over windows `from..to` (0 when empty).
    pub fn per_sec(windows: &[u64], from: usize, to: usize) -> f64 {
        let to = to.min(windows.len());
        if to <= from {
            return 0.0;
        }
        windows[from..to].iter().sum::<u64>() as f64 / ((to - from) as f64 / PER_SEC as f64)
    }

    /// Counts per whole second.
    pub fn seconds(windows: &[u64]) -> Vec<u64> {
        windows.chunks(PER_SEC).map(|c| c.iter().sum()).collect()
    }

    /// The largest count in any 1 s sliding window (10 consecutive 100 ms windows).
    pub fn max_one_second(windows: &[u64]) -> u64 {
        windows
            .windows(PER_SEC)
            .map(|s| s.iter().sum())
            .max()
            .unwrap_or(0)
    }
}

/// A mock API answering 200 after a latency drawn from `min_ms..=max_ms`.
pub async fn mock_api_with_latency(min_ms: u64, max_ms: u64) -> MockApi {
    MockApi::start(MockConfig {
        latency_min_ms: min_ms,
        latency_max_ms: max_ms,
        ..MockConfig::default()
    })
    .await
    .expect("mock API")
}

/// Offsets of the records that `lines` (results, failed or rejected lines) name.
pub fn offsets(lines: &[Value]) -> Vec<u64> {
    let mut v: Vec<u64> = lines
        .iter()
        .map(|l| l["offset"].as_u64().expect("offset"))
        .collect();
    v.sort_unstable();
    v
}

/// `records` CSV records (`id,name`), every 10th one with a non-integer id (rejected by a
/// pipeline whose `id` field is an integer).
pub fn csv_every_tenth_rejected(records: usize) -> Vec<u8> {
    let mut text = String::from("id,name\n");
    for i in 0..records {
        if i % 10 == 9 {
            text.push_str(&format!("x{i},bad\n"));
        } else {
            text.push_str(&format!("{i},name-{i}\n"));
        }
    }
    text.into_bytes()
}
