//! The fleet-wide rate limit on the local stack: 8 worker containers share one limit kept in
//! DynamoDB (the local AWS), against the mock API enforcing the same limit with a 10% burst allowance.
//! `make bench-limit` runs these with figures written to FANOUT_BENCH_OUT.

use integration_tests::rates::{self, PER_SEC};
use integration_tests::{MockApi, MockConfig, pipeline_yaml, stack};
use serde_json::json;

const CSV_FIELDS: &str = "[{name: id, type: integer, required: true}, {name: name}]";

struct Figures {
    achieved_over_limit: f64,
    max_window_over_limit: f64,
    rejected_429: u64,
    calls: u64,
    ddb_writes_per_1000_calls: f64,
    /// Reads of the shared breaker state (GetItem, one per container per second).
    ddb_reads_per_1000_calls: f64,
}

async fn steady_run(rate: u32, seconds: u32) -> Figures {
    let ts = stack("limit").await;
    let api = MockApi::start(MockConfig {
        latency_min_ms: 20,
        latency_max_ms: 80,
        rate_limit: Some(f64::from(rate)),
        burst: 0.1,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let records = rate * seconds;
    let mut csv = String::from("id,name\n");
    // Records of one length, so that every manifest holds as many and all 8 containers stay
    // busy to the end (with ids of 1 to 5 digits, records of 11 bytes against 13 later on, the
    // first manifests held more records, and the run ended with two containers left working).
    for i in 0..records {
        csv.push_str(&format!("{i:06},n{i:06}\n"));
    }
    // Two manifests per container.
    let chunk = csv.len().div_ceil(16) as u64;
    let yaml = pipeline_yaml("csv", &api.base_url(), CSV_FIELDS, chunk, "").replace(
        "client: { concurrency: 16, timeout_ms: 5000, max_attempts: 2 }",
        &format!("client: {{ concurrency: 64, timeout_ms: 5000, max_attempts: 5, rate_limit_name: bench, rate_limit_per_sec: {rate}, rate_limit_burst: {} }}", rate / 10),
    );
    let event = ts.upload("limit", &yaml, "in.csv", csv.as_bytes()).await;
    let report = ts.run(event, 8).await;
    let summary = report.summary.expect("summary");
    assert_eq!(
        summary.succeeded,
        u64::from(records),
        "every record succeeds: {summary:?}"
    );

    let stats = api.stats();
    let windows = &stats.windows_100ms;
    assert!(
        windows.len() > 40,
        "run too short: {} windows",
        windows.len()
    );
    // The steady part: without the first and last second (ramp-up, the tail of the last manifests).
    let achieved = rates::per_sec(windows, PER_SEC, windows.len() - PER_SEC) / f64::from(rate);
    let max_window = rates::max_one_second(windows) as f64 / f64::from(rate);
    let calls = stats.total_requests;
    Figures {
        achieved_over_limit: achieved,
        max_window_over_limit: max_window,
        rejected_429: stats.by_status.get(&429).copied().unwrap_or(0),
        calls,
        // Leases and breaker-state writes: every write the API clients make.
        ddb_writes_per_1000_calls: report.pollers.client_ddb_writes() as f64 * 1000.0
            / calls as f64,
        ddb_reads_per_1000_calls: report.pollers.breaker_reads as f64 * 1000.0 / calls as f64,
    }
}

fn report(name: &str, f: &Figures, rate: u32) {
    let line = json!({
        "scenario": name,
        "limit_per_sec": rate,
        "achieved_over_limit": (f.achieved_over_limit * 1000.0).round() / 1000.0,
        "max_window_over_limit": (f.max_window_over_limit * 1000.0).round() / 1000.0,
        "rejected_429": f.rejected_429,
        "api_calls": f.calls,
        "ddb_writes_per_1000_calls": (f.ddb_writes_per_1000_calls * 10.0).round() / 10.0,
        "ddb_reads_per_1000_calls": (f.ddb_reads_per_1000_calls * 10.0).round() / 10.0,
    });
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_containers_share_one_limit() {
    let rate = 2000;
    let f = steady_run(rate, 20).await;
    report("steady", &f, rate);
    assert!(
        f.achieved_over_limit >= 0.95,
        "sustained {:.3} of the limit",
        f.achieved_over_limit
    );
    assert!(
        f.max_window_over_limit <= 1.1,
        "a 1 s window reached {:.3} of the limit",
        f.max_window_over_limit
    );
    assert!(
        f.rejected_429 as f64 <= 0.001 * f.calls as f64,
        "{} 429s of {} calls",
        f.rejected_429,
        f.calls
    );
    assert!(
        f.ddb_writes_per_1000_calls <= 20.0,
        "{:.1} DynamoDB writes per 1000 calls",
        f.ddb_writes_per_1000_calls
    );
}
