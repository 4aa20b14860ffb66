//! The fleet-wide rate limit on the local stack: 8 worker containers share one limit kept in
//! DynamoDB (the local AWS), against the mock API enforcing the same limit with a 10% burst allowance.
//! `make bench-limit` runs these with figures written to FANOUT_BENCH_OUT.

use std::time::Duration;

use fanout_aws::leaser::DynamoLeaser;
use fanout_aws::rate_override::DynamoRateOverrides;
use fanout_core::ledger::now_ms;
use fanout_core::ports::{RateOverrides, TokenLeaser, WindowGrant};
use fanout_core::rate_override::RateOverride;
use integration_tests::rates::{self, PER_SEC};
use integration_tests::{MockApi, MockConfig, TestStack, pipeline_yaml, stack};
use serde_json::json;

const CSV_FIELDS: &str = "[{name: id, type: integer, required: true}, {name: name}]";

/// Each test runs 8 containers flat out: run together, they would share the machine's cores and
/// each other's timing.
static ONE_JOB_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `records` CSV records of one length (so that every manifest holds as many), and the chunk
/// size that makes two manifests per container of an 8-container fleet.
fn even_csv(records: u32) -> (String, u64) {
    let mut csv = String::from("id,name\n");
    for i in 0..records {
        csv.push_str(&format!("{i:06},n{i:06}\n"));
    }
    let chunk = csv.len().div_ceil(16) as u64;
    (csv, chunk)
}

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
    let _one = ONE_JOB_AT_A_TIME.lock().await;
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
    // Records of one length, so that every manifest holds as many and all 8 containers stay
    // busy to the end (with ids of 1 to 5 digits, records of 11 bytes against 13 later on, the
    // first manifests held more records, and the run ended with two containers left working).
    let (csv, chunk) = even_csv(records);
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
    emit(&line);
}

/// Prints a figures line, and appends it to FANOUT_BENCH_OUT when set (`make bench-limit`).
fn emit(line: &serde_json::Value) {
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

/// Issue 15: a job started at 1000/s is raised to 2000/s mid-job with `fanout limit set` (the
/// library function the command calls). The mock API enforces the limit in force (1000/s, then
/// 2000/s from the moment the override is written, each with a 20% burst), and its per-100 ms
/// arrival counts are the evidence:
///
/// (a) some whole 1 s interval starting within 5 s of the set carries at least 0.95 × 2000;
/// (b) every 1 s interval ending before the set carries at most 1.1 × 1000, every later one at
///     most 1.1 × 2000;
/// (c) every record succeeds, and the mock refused nothing (no 429).
///
/// The propagation this allows for: each container reads the override with its next lease once
/// its last read is 1 s old (1000/s over 8 containers, 100-token leases: a lease every 0.8 s),
/// and windows it leased before keep their 1000-token caps: the fleet runs up to about 1.3 s
/// ahead (64 calls waiting for a token and 100 queued per container). So the new rate holds from
/// about 1 + 0.8 + 1.3 s after the set, plus the rest of a window: about 4 s at worst, 1 s inside
/// (a)'s 5 s. Where a loaded 2-core machine shows (single seconds dipping below the rate), (a)
/// takes the best interval of those starting up to 5 s after the set, not a fixed one; the
/// sustained rates are printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_raised_mid_job_reaches_the_fleet_within_5_s() {
    const LIMIT: &str = "raised-mid-job";
    const BEFORE: u32 = 1000;
    const AFTER: u32 = 2000;
    const SET_AFTER: Duration = Duration::from_secs(8);
    let _one = ONE_JOB_AT_A_TIME.lock().await;
    let ts = stack("limit_raise").await;
    let enforcing = |rate: u32| MockConfig {
        latency_min_ms: 20,
        latency_max_ms: 80,
        rate_limit: Some(f64::from(rate)),
        // Twice the client's own burst allowance (`rate_limit_burst`, 10%): with the mock's
        // bucket at the same 10%, tokens spent late within that allowance beside on-time ones
        // reach the bucket's edge, and scheduling jitter on a loaded 2-core machine pushed 18 of
        // 30,018 calls over it in one fresh-clone run (2026-12-03). (c) is about the fleet
        // running ahead of the limit in force, not about the machine's scheduler.
        burst: 0.2,
        ..MockConfig::default()
    };
    let api = MockApi::start(enforcing(BEFORE)).await.unwrap();
    // 8 s at 1000/s, then about 11 s at 2000/s.
    let records = 30_000;
    let (csv, chunk) = even_csv(records);
    let yaml = pipeline_yaml("csv", &api.base_url(), CSV_FIELDS, chunk, "").replace(
        "client: { concurrency: 16, timeout_ms: 5000, max_attempts: 2 }",
        &format!(
            "client: {{ concurrency: 64, timeout_ms: 5000, max_attempts: 5, rate_limit_name: {LIMIT}, rate_limit_per_sec: {BEFORE}, rate_limit_burst: {} }}",
            BEFORE / 10
        ),
    );
    let event = ts.upload("raise", &yaml, "in.csv", csv.as_bytes()).await;
    let ddb = fanout_aws::dynamodb_client(&ts.config);
    let table = ts.stack.names.table.clone();
    let operator = async {
        // The mock's windows count from its first request.
        while api.stats().total_requests == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let first = tokio::time::Instant::now();
        tokio::time::sleep_until(first + SET_AFTER).await;
        // From the moment the fleet may use the new rate, the API allows it.
        api.set_config(enforcing(AFTER));
        let set_at = first.elapsed();
        let stored = fanout_cli::limit::set(&ddb, &table, LIMIT, AFTER, None, now_ms())
            .await
            .expect("fanout limit set");
        let written_after = first.elapsed() - set_at;
        // What `fanout limit get` shows 6 s later: the override, and the leased rate over the
        // last 10 s (4 of them before the set).
        tokio::time::sleep_until(first + SET_AFTER + Duration::from_secs(6)).await;
        let view = fanout_cli::limit::view(&ddb, &table, LIMIT, now_ms())
            .await
            .expect("fanout limit get");
        (set_at, written_after, stored, view)
    };
    let (report, (set_at, written_after, stored, view)) = tokio::join!(ts.run(event, 8), operator);
    TestStack::assert_all_succeeded(&report, u64::from(records));

    let stats = api.stats();
    let windows = &stats.windows_100ms;
    // Our clock starts within a few ms after the mock's first request, so mock window k ends
    // before our (k + 1) · 100 ms: the windows before `set_window` all ended before the set.
    let set_ms = set_at.as_millis() as usize;
    let set_window = set_ms / 100;
    let last_start_within_5_s = (set_ms + 5000) / 100;
    assert!(
        windows.len() >= last_start_within_5_s + PER_SEC,
        "the job ended {:.1} s after the set",
        (windows.len() * 100).saturating_sub(set_ms) as f64 / 1000.0
    );
    // Calls in each 1 s sliding interval: interval i is windows i..i+10.
    let sums: Vec<u64> = windows.windows(PER_SEC).map(|s| s.iter().sum()).collect();
    let (ending_before, ending_after) = sums.split_at(set_window + 1 - PER_SEC);
    let max_before = *ending_before.iter().max().unwrap() as f64 / f64::from(BEFORE);
    let max_after = *ending_after.iter().max().unwrap() as f64 / f64::from(AFTER);
    let within_5_s = &sums[set_window..=last_start_within_5_s];
    let best_within_5_s = *within_5_s.iter().max().unwrap() as f64 / f64::from(AFTER);
    let reached_after_s = within_5_s
        .iter()
        .position(|&c| c as f64 >= 0.95 * f64::from(AFTER))
        .map(|i| ((set_window + i) * 100).saturating_sub(set_ms) as f64 / 1000.0);
    // Sustained rates: before the set (without the first second), and from 5 s after it to
    // the last second of the job.
    let before_mean = rates::per_sec(windows, PER_SEC, set_window) / f64::from(BEFORE);
    let after_mean =
        rates::per_sec(windows, last_start_within_5_s, windows.len() - PER_SEC) / f64::from(AFTER);
    let rejected = stats.status(429);
    emit(&json!({
        "scenario": "raise",
        "limit_before": BEFORE,
        "limit_after": AFTER,
        "set_at_s": set_ms as f64 / 1000.0,
        "override_written_ms": written_after.as_millis(),
        "before_mean_over_limit": (before_mean * 1000.0).round() / 1000.0,
        "max_window_before_over_limit": (max_before * 1000.0).round() / 1000.0,
        "reached_new_rate_after_s": reached_after_s,
        "best_window_within_5_s_over_new_limit": (best_within_5_s * 1000.0).round() / 1000.0,
        "after_mean_over_new_limit": (after_mean * 1000.0).round() / 1000.0,
        "max_window_after_over_new_limit": (max_after * 1000.0).round() / 1000.0,
        "rejected_429": rejected,
        "api_calls": stats.total_requests,
        "limit_get_6_s_after": view,
        "per_sec": rates::seconds(windows),
    }));

    assert_eq!(view.rate_override.as_ref(), Some(&stored), "{view:?}");
    assert!(
        view.measured.per_sec > 0.0 && view.measured.per_sec <= f64::from(AFTER),
        "{view:?}"
    );
    // The fleet was at its limit before the set, so the bound after it means something.
    assert!(
        before_mean >= 0.9,
        "sustained {before_mean:.3} of {BEFORE}/s before the set"
    );
    // (a)
    assert!(
        best_within_5_s >= 0.95,
        "within 5 s of the set, the best 1 s interval carried {best_within_5_s:.3} of {AFTER}/s"
    );
    // (b)
    assert!(
        max_before <= 1.1,
        "a 1 s interval before the set carried {max_before:.3} of {BEFORE}/s"
    );
    assert!(
        max_after <= 1.1,
        "a 1 s interval after the set carried {max_after:.3} of {AFTER}/s"
    );
    // (c)
    assert_eq!(rejected, 0, "the mock refused {rejected} calls");
}

/// The window items on the local AWS: the first lease of a window fixes its cap, which every
/// later lease is judged and answered by; each limit and window is its own item.
#[tokio::test]
async fn a_windows_first_lease_fixes_its_cap() {
    let ts = stack("limit_windows").await;
    let leaser = DynamoLeaser::new(
        fanout_aws::dynamodb_client(&ts.config),
        &ts.stack.names.table,
    );
    let grant = |granted_after, cap| Some(WindowGrant { granted_after, cap });
    let w = 1_700_000_000;
    assert_eq!(leaser.lease("a", w, 60, 100).await.unwrap(), grant(60, 100));
    // A container believing in 1000/s is answered with the window's cap, and the window is
    // full at it.
    assert_eq!(
        leaser.lease("a", w, 60, 1000).await.unwrap(),
        grant(120, 100)
    );
    assert_eq!(leaser.lease("a", w, 60, 1000).await.unwrap(), None);
    assert_eq!(
        leaser.lease("a", w + 1, 60, 1000).await.unwrap(),
        grant(60, 1000)
    );
    assert_eq!(leaser.lease("b", w, 10, 50).await.unwrap(), grant(10, 50));
    assert_eq!(
        leaser.window_grants("a", w - 1..w + 2).await.unwrap(),
        vec![None, grant(120, 100), grant(60, 1000)]
    );
}

/// The override item on the local AWS: set, read back (strongly consistent), replaced and
/// cleared, beside the limit's window items without touching them.
#[tokio::test]
async fn rate_overrides_round_trip_beside_the_windows() {
    let ts = stack("limit_overrides").await;
    let ddb = fanout_aws::dynamodb_client(&ts.config);
    let table = &ts.stack.names.table;
    let store = DynamoRateOverrides::new(ddb.clone(), table);
    let leaser = DynamoLeaser::new(ddb, table);
    let w = 1_700_000_000;
    leaser.lease("api", w, 10, 100).await.unwrap();
    assert_eq!(store.get("api").await.unwrap(), None);

    let first = RateOverride::new(2000, Some(300), 1).unwrap();
    store.set("api", &first).await.unwrap();
    assert_eq!(store.get("api").await.unwrap(), Some(first));
    let second = RateOverride::new(500, None, 2).unwrap();
    store.set("api", &second).await.unwrap();
    assert_eq!(store.get("api").await.unwrap(), Some(second));
    assert_eq!(store.get("other").await.unwrap(), None);
    // An override one could not set is not written.
    let bad = RateOverride {
        rate_per_sec: 0,
        burst: None,
        set_at_ms: 3,
    };
    assert!(store.set("api", &bad).await.is_err());
    assert_eq!(store.get("api").await.unwrap().unwrap().rate_per_sec, 500);
    // The window item is untouched.
    assert_eq!(
        leaser.window_grants("api", w..w + 1).await.unwrap(),
        vec![Some(WindowGrant {
            granted_after: 10,
            cap: 100
        })]
    );

    assert!(store.clear("api").await.unwrap());
    assert_eq!(store.get("api").await.unwrap(), None);
    assert!(!store.clear("api").await.unwrap());
}
