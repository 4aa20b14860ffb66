//! The client's resilience on the local stack: the breaker state shared through DynamoDB (the local AWS),
//! and whole jobs through a 429 storm and through an outage of the mock API, with 8 containers
//! under the fleet limit. `make bench-limit` runs these too, with figures written to
//! FANOUT_BENCH_OUT.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use fanout_aws::breaker::DynamoBreakerStore;
use fanout_cli::local::RunReport;
use fanout_client::ClientStack;
use fanout_client::breaker::BreakerStateStore;
use fanout_core::config::ClientConfig;
use fanout_core::ledger::{JobStatus, now_ms};
use fanout_core::ports::ApiClient;
use fanout_core::request::ApiRequest;
use integration_tests::rates::{PER_SEC, per_sec, seconds};
use integration_tests::{MockApi, MockConfig, TestStack, pipeline_yaml, stack};
use mock_api::MockStats;
use serde_json::{Value, json};

const CSV_FIELDS: &str = "[{name: id, type: integer, required: true}, {name: name}]";
/// The fleet limit of the job scenarios.
const RATE: u32 = 2000;
const CONTAINERS: usize = 8;

/// The job scenarios each run 8 containers flat out: run together, they would share the machine's
/// cores and each other's timing.
static ONE_JOB_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn ddb(ts: &TestStack) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&ts.config)
}

async fn breaker_item(
    ts: &TestStack,
    name: &str,
) -> Option<std::collections::HashMap<String, AttributeValue>> {
    ddb(ts)
        .get_item()
        .table_name(&ts.stack.names.table)
        .key("pk", AttributeValue::S(format!("BREAKER#{name}")))
        .key("sk", AttributeValue::S("B".into()))
        .consistent_read(true)
        .send()
        .await
        .expect("GetItem")
        .item
}

fn number(item: &std::collections::HashMap<String, AttributeValue>, name: &str) -> u64 {
    item[name]
        .as_n()
        .expect("a number")
        .parse()
        .expect("an integer")
}

#[tokio::test]
async fn breaker_store_on_dynamodb_keeps_the_later_opening_and_clears_on_close() {
    let ts = stack("breaker_store").await;
    let store = DynamoBreakerStore::new(ddb(&ts), &ts.stack.names.table, "api-a");
    let other_api = DynamoBreakerStore::new(ddb(&ts), &ts.stack.names.table, "api-b");
    assert_eq!(store.open_until().await.unwrap(), None);

    let t = now_ms() + 60_000;
    store.publish_open(t).await.unwrap();
    assert_eq!(store.open_until().await.unwrap(), Some(t));
    // An earlier opening (a container that tripped at the same time) does not shorten it.
    store.publish_open(t - 5_000).await.unwrap();
    assert_eq!(store.open_until().await.unwrap(), Some(t));
    store.publish_open(t + 5_000).await.unwrap();
    assert_eq!(store.open_until().await.unwrap(), Some(t + 5_000));
    // Breakers of other APIs are other items.
    assert_eq!(other_api.open_until().await.unwrap(), None);

    let item = breaker_item(&ts, "api-a").await.expect("the breaker item");
    // TTL removes the item an hour after its open period.
    assert_eq!(number(&item, "expires_at"), (t + 5_000) / 1000 + 3600);

    store.publish_closed().await.unwrap();
    assert_eq!(store.open_until().await.unwrap(), None);
    let item = breaker_item(&ts, "api-a")
        .await
        .expect("the item, until TTL removes it");
    assert!(!item.contains_key("open_until_ms"), "{item:?}");
    // Closing what is closed is no error.
    store.publish_closed().await.unwrap();
    let stats = store.stats();
    assert_eq!(stats.writes.load(std::sync::atomic::Ordering::Relaxed), 5);
    assert_eq!(stats.reads.load(std::sync::atomic::Ordering::Relaxed), 5);
}

#[tokio::test]
async fn a_close_does_not_undo_an_opening_made_after_the_probe() {
    let ts = stack("breaker_reopen").await;
    let store = DynamoBreakerStore::new(ddb(&ts), &ts.stack.names.table, "api");
    // Another container reopened it after this one's probe was answered: its opened_at is
    // later than this container's now.
    let until = now_ms() + 60_000;
    ddb(&ts)
        .put_item()
        .table_name(&ts.stack.names.table)
        .item("pk", AttributeValue::S("BREAKER#api".into()))
        .item("sk", AttributeValue::S("B".into()))
        .item("open_until_ms", AttributeValue::N(until.to_string()))
        .item(
            "opened_at_ms",
            AttributeValue::N((now_ms() + 10_000).to_string()),
        )
        .send()
        .await
        .unwrap();

    store.publish_closed().await.unwrap();

    assert_eq!(store.open_until().await.unwrap(), Some(until));
}

fn request(url: String) -> ApiRequest {
    ApiRequest {
        method: reqwest::Method::POST,
        url,
        headers: Vec::new(),
        body: None,
        records: 1,
    }
}

/// A container's client as the worker builds it: its own breaker, sharing only the table.
fn container_client(ts: &TestStack) -> ClientStack {
    let stores = std::sync::Arc::new(fanout_aws::breaker::DynamoBreakerStores::new(
        fanout_aws::dynamodb_client(&ts.config),
        &ts.stack.names.table,
    ));
    ClientStack::builder()
        .breaker_stores(worker_lambda::breaker_stores(&stores))
        .build(fanout_client::http::pooled_client().unwrap())
}

#[tokio::test]
async fn a_breaker_opened_in_one_container_makes_another_fail_fast() {
    let ts = stack("breaker_fleet").await;
    let api = MockApi::start(MockConfig {
        outage: true,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let config = ClientConfig {
        rate_limit_name: "fleet-breaker".into(),
        breaker_min_calls: 4,
        breaker_open_secs: 2,
        max_attempts: 1,
        ..ClientConfig::default()
    };
    let (a, b) = (container_client(&ts), container_client(&ts));
    let call = request(format!("{}/items/1", api.base_url()));

    // Four failed calls in a row open a's breaker, which publishes it.
    for _ in 0..4 {
        assert_eq!(a.call(&call, &config).await.status, Some(503));
    }
    assert_eq!(a.counters().snapshot().breaker_opened, 1);
    assert!(breaker_item(&ts, "fleet-breaker").await.is_some());

    // b never saw a failure, yet turns its call away without sending it.
    let out = b.call(&call, &config).await;
    assert_eq!(out.attempts, 0, "{out:?}");
    assert!(
        out.error
            .as_deref()
            .unwrap_or_default()
            .contains("circuit breaker open"),
        "{out:?}"
    );
    assert_eq!(api.stats().total_requests, 4);
    assert_eq!(b.counters().snapshot().breaker_opened, 0);

    // Once the open period is over, b's probe finds the API back and clears the shared state.
    api.set_config(MockConfig::default());
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let out = b.call(&call, &config).await;
    assert!(out.succeeded(), "{out:?}");
    let item = breaker_item(&ts, "fleet-breaker").await.unwrap_or_default();
    assert!(!item.contains_key("open_until_ms"), "{item:?}");
    assert_eq!(api.stats().total_requests, 5);
}

/// A job of `records` records with the mock's config switched to `during` for `length`, from
/// `start` after the API's first request.
struct Scenario {
    name: &'static str,
    records: u32,
    normal: MockConfig,
    during: MockConfig,
    start: Duration,
    length: Duration,
    /// Extra settings of the pipeline's `client:`.
    client: &'static str,
}

struct Observed {
    report: RunReport,
    stats: MockStats,
    /// Indices of the phase's first and first-after 100 ms windows in the mock's stats.
    from: usize,
    to: usize,
    /// The job's failed/ lines (each names the record and why it failed).
    failed_lines: Vec<Value>,
}

async fn run_scenario(s: Scenario) -> Observed {
    let _one = ONE_JOB_AT_A_TIME.lock().await;
    let ts = stack(s.name).await;
    let api = MockApi::start(s.normal.clone()).await.unwrap();
    let mut csv = String::from("id,name\n");
    for i in 0..s.records {
        csv.push_str(&format!("{i},n{i}\n"));
    }
    // Two manifests per container, as in tests/limit.rs.
    let chunk = (csv.len() / (2 * CONTAINERS)).max(1) as u64;
    let yaml = pipeline_yaml("csv", &api.base_url(), CSV_FIELDS, chunk, "").replace(
        "client: { concurrency: 16, timeout_ms: 5000, max_attempts: 2 }",
        &format!(
            "client: {{ concurrency: 64, timeout_ms: 5000, max_attempts: 5, rate_limit_name: {}, rate_limit_per_sec: {RATE}, rate_limit_burst: {}, {} }}",
            s.name,
            RATE / 10,
            s.client
        ),
    );
    let event = ts.upload(s.name, &yaml, "in.csv", csv.as_bytes()).await;
    let control = async {
        // The mock's windows count from its first request.
        while api.stats().total_requests == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let first = tokio::time::Instant::now();
        tokio::time::sleep_until(first + s.start).await;
        api.set_config(s.during.clone());
        tokio::time::sleep_until(first + s.start + s.length).await;
        api.set_config(s.normal.clone());
    };
    let (report, ()) = tokio::join!(ts.run(event, CONTAINERS), control);
    let stats = api.stats();
    let job = report.job.as_ref().expect("a job");
    let failed_lines = ts.lines(&format!("failed/{}/", job.job_id)).await;
    let window = |d: Duration| (d.as_millis() / 100) as usize;
    Observed {
        from: window(s.start),
        to: window(s.start + s.length),
        report,
        stats,
        failed_lines,
    }
}

/// Every record succeeded, the job completed and reconciled, nothing in failed/.
fn assert_nothing_lost(o: &Observed, records: u32) {
    let job = o.report.job.as_ref().expect("a job");
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    let summary = o.report.summary.as_ref().expect("a summary");
    assert!(summary.reconciled, "{summary:?}");
    assert_eq!(summary.input_records, u64::from(records), "{summary:?}");
    assert_eq!(
        summary.failed, 0,
        "{summary:?}\nfailed: {:?}",
        o.failed_lines
    );
    assert!(o.failed_lines.is_empty(), "{:?}", o.failed_lines);
    assert_eq!(summary.succeeded, u64::from(records), "{summary:?}");
    // Idempotency keys: no record's call took effect twice.
    assert_eq!(o.stats.duplicate_successes, 0);
}

/// DynamoDB writes of the API clients (leases and breaker state) per 1000 API calls.
fn ddb_writes_per_1000(o: &Observed) -> f64 {
    o.report.pollers.client_ddb_writes() as f64 * 1000.0 / o.stats.total_requests.max(1) as f64
}

fn report(line: Value) {
    eprintln!("{line}");
    if let Ok(path) = std::env::var("FANOUT_BENCH_OUT") {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("bench output");
        writeln!(file, "{line}").expect("write bench output");
    }
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_slows_the_fleet_and_loses_nothing() {
    let normal = MockConfig {
        latency_min_ms: 20,
        latency_max_ms: 80,
        rate_limit: Some(f64::from(RATE)),
        burst: 0.1,
        ..MockConfig::default()
    };
    let storm = MockConfig {
        rate_limit: Some(f64::from(RATE) / 4.0),
        ..normal.clone()
    };
    // 8 s at R, 20 s at R/4, then about 12 s at R.
    let records = RATE * 8 + RATE / 4 * 20 + RATE * 12;
    let o = run_scenario(Scenario {
        name: "storm",
        records,
        normal,
        during: storm,
        start: Duration::from_secs(8),
        length: Duration::from_secs(20),
        // The mock's latency spreads over 4x (20-80 ms) when it is not queueing at all: a lower
        // ratio would read most successes as queueing and barely regrow the concurrency limit
        // after the storm.
        client: "concurrency_latency_ratio: 4",
    })
    .await;

    let rate = f64::from(RATE);
    let served = &o.stats.served_100ms;
    let arrived = &o.stats.windows_100ms;
    // The storm without its first second (the fleet finding the new rate).
    let storm_served = per_sec(served, o.from + PER_SEC, o.to) / (rate / 4.0);
    let storm_sent = per_sec(arrived, o.from + PER_SEC, o.to) / rate;
    // After the storm: the 5 s that follow 3 s of recovery (calls told to come back in 1 s
    // return, and the concurrency limits regrow from the few slots that R/4 left them).
    let after_from = o.to + 3 * PER_SEC;
    let after_to = after_from + 5 * PER_SEC;
    let after_served = per_sec(served, after_from, after_to) / rate;
    let rejected = o.stats.status(429);
    report(json!({
        "scenario": "storm",
        "limit_per_sec": RATE,
        "storm_limit_per_sec": RATE / 4,
        "storm_served_over_storm_limit": round(storm_served, 3),
        "storm_sent_over_limit": round(storm_sent, 3),
        "after_served_over_limit": round(after_served, 3),
        "rejected_429": rejected,
        "api_calls": o.stats.total_requests,
        "ddb_writes_per_1000_calls": round(ddb_writes_per_1000(&o), 1),
        "wall_seconds": round(o.report.wall_seconds, 1),
        "served_per_sec": seconds(served),
        "sent_per_sec": seconds(arrived),
    }));

    assert_nothing_lost(&o, records);
    assert!(
        arrived.len() >= after_to,
        "the job ended {} s after the storm",
        (arrived.len().saturating_sub(o.to)) / PER_SEC
    );
    // The API served what it allowed during the storm: the fleet kept it busy, no more.
    assert!(
        (0.85..=1.1).contains(&storm_served),
        "served {storm_served:.3} of R/4 during the storm"
    );
    // The fleet slowed down: it did not keep sending at R and collecting 429s.
    assert!(
        storm_sent <= 0.5,
        "the fleet sent {storm_sent:.3} of R during the storm"
    );
    // And it came back. Not to the steady test's 0.95: the concurrency limits are still growing
    // in the first of these seconds, and this machine's load shows in single seconds (the
    // steady part before the storm dips to 0.8 R at times).
    assert!(
        after_served >= 0.75,
        "served {after_served:.3} of R after the storm"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30_s_outage_is_waited_out_with_probes_only() {
    let normal = MockConfig {
        latency_min_ms: 20,
        latency_max_ms: 80,
        rate_limit: Some(f64::from(RATE)),
        burst: 0.1,
        ..MockConfig::default()
    };
    let outage = MockConfig {
        outage: true,
        ..normal.clone()
    };
    // The breaker of the pipeline below, spelled out because the bounds derive from it.
    let (min_calls, open_secs, concurrency) = (20u64, 5u64, 64u64);
    let outage_secs = 30;
    // 8 s at R, the outage, then about 12 s at R.
    let records = RATE * 20;
    let o = run_scenario(Scenario {
        name: "outage",
        records,
        normal,
        during: outage,
        start: Duration::from_secs(8),
        length: Duration::from_secs(outage_secs),
        client: "breaker_min_calls: 20, breaker_open_secs: 5, breaker_window_secs: 10, breaker_failure_rate: 0.5, concurrency_latency_ratio: 4",
    })
    .await;

    let fleet = CONTAINERS as u64;
    // Every request that arrived during the outage was answered 503 (no other source of 503s).
    let outage_calls = o.stats.status(503);
    // Once open, the breakers let one probe per container through per open period.
    let settle = 2 * PER_SEC;
    let probe_calls: u64 = o.stats.windows_100ms[o.from + settle..o.to].iter().sum();
    let probe_bound = fleet * ((outage_secs - 2).div_ceil(open_secs) + 1);
    // Before that, each container's breaker opens after min_calls failures in a row, and the
    // attempts already admitted (at most the concurrency limit) still go out.
    let outage_bound = fleet * (min_calls + concurrency) + probe_bound;
    let served = &o.stats.served_100ms;
    // From the API's return to the first second the fleet is served half of R again.
    let back_after = (o.to..served.len().saturating_sub(PER_SEC))
        .find(|&w| served[w..w + PER_SEC].iter().sum::<u64>() >= u64::from(RATE / 2))
        .map(|w| (w - o.to) as f64 / PER_SEC as f64);
    report(json!({
        "scenario": "outage",
        "limit_per_sec": RATE,
        "outage_seconds": outage_secs,
        "outage_calls": outage_calls,
        "outage_calls_bound": outage_bound,
        "probe_calls": probe_calls,
        "probe_calls_bound": probe_bound,
        "seconds_to_half_rate_after": back_after,
        "api_calls": o.stats.total_requests,
        "ddb_writes_per_1000_calls": round(ddb_writes_per_1000(&o), 1),
        "breaker_reads": o.report.pollers.breaker_reads,
        "breaker_writes": o.report.pollers.breaker_writes,
        "wall_seconds": round(o.report.wall_seconds, 1),
        "served_per_sec": seconds(served),
        "sent_per_sec": seconds(&o.stats.windows_100ms),
    }));

    assert_nothing_lost(&o, records);
    assert!(
        outage_calls <= outage_bound,
        "{outage_calls} calls during the outage, bound {outage_bound}"
    );
    assert!(
        probe_calls <= probe_bound,
        "{probe_calls} calls after the breakers opened, bound {probe_bound}"
    );
    // The fleet found the API back within an open period (and a sync interval) of its return.
    let back_after = back_after.expect("the fleet never got back to half of R");
    assert!(
        back_after <= (open_secs + 2) as f64,
        "half of R only {back_after} s after the API returned"
    );
}
