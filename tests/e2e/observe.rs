//! Seeing a job on the local stack: the metrics the workers publish (CloudWatch on the emulator), the
//! status, the report and the dashboard all add up to the job's summary. (That the API credential
//! never shows is tests/secrets.rs.)

use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
use fanout_core::metrics;
use integration_tests::{
    MockApi, MockConfig, TestStack, csv_every_tenth_rejected as csv, pipeline_yaml, stack,
};
use serde_json::Value;

const CSV_FIELDS: &str = "[{name: id, type: integer, required: true}, {name: name}]";

/// A finished job of a pipeline named after the test's stack (metrics are per pipeline, and the
/// local AWS is shared by every test).
async fn finished_job(ts: &TestStack, api: &MockApi, records: usize) -> (String, Value) {
    let pipeline = ts.stack.names.table.replace("-ledger", "");
    let yaml = pipeline_yaml("csv", &api.base_url(), CSV_FIELDS, 2000, "");
    let event = ts.upload(&pipeline, &yaml, "in.csv", &csv(records)).await;
    let report = ts.run(event, 2).await;
    let job = report.job.expect("a job");
    assert_eq!(job.status, fanout_core::ledger::JobStatus::Completed);
    let summary = serde_json::to_value(report.summary.expect("a summary")).unwrap();
    (pipeline, summary)
}

/// A statistic of a metric of `pipeline`, summed over every 60 s period of the last 15 minutes.
async fn metric_total(ts: &TestStack, pipeline: &str, name: &str, stat: &str) -> f64 {
    metric_values(ts, pipeline, name, stat).await.iter().sum()
}

/// A statistic of a metric of `pipeline`, one value per 60 s period of the last 15 minutes that
/// has data.
async fn metric_values(ts: &TestStack, pipeline: &str, name: &str, stat: &str) -> Vec<f64> {
    let cw = aws_sdk_cloudwatch::Client::new(&ts.config);
    let now = std::time::SystemTime::now();
    let query = MetricDataQuery::builder()
        .id("m")
        .metric_stat(
            MetricStat::builder()
                .metric(
                    Metric::builder()
                        .namespace(metrics::NAMESPACE)
                        .metric_name(name)
                        .dimensions(
                            Dimension::builder()
                                .name(metrics::DIMENSION_PIPELINE)
                                .value(pipeline)
                                .build(),
                        )
                        .build(),
                )
                .period(60)
                .stat(stat)
                .build(),
        )
        .build();
    let out = cw
        .get_metric_data()
        .metric_data_queries(query)
        .start_time((now - std::time::Duration::from_secs(900)).into())
        .end_time((now + std::time::Duration::from_secs(60)).into())
        .send()
        .await
        .expect("GetMetricData");
    out.metric_data_results()
        .iter()
        .flat_map(|r| r.values())
        .copied()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn published_metrics_add_up_to_the_summary() {
    let ts = stack("metrics").await;
    let api = MockApi::start(MockConfig::default()).await.unwrap();
    let (pipeline, s) = finished_job(&ts, &api, 600).await;
    let n = |k: &str| s[k].as_u64().unwrap() as f64;
    assert_eq!(n("rejected"), 60.0);
    assert!(n("manifests") > 1.0, "{s}");
    let total = |name: &'static str, stat: &'static str| metric_total(&ts, &pipeline, name, stat);

    assert_eq!(
        total(metrics::RECORDS_SUCCEEDED, "Sum").await,
        n("succeeded")
    );
    assert_eq!(total(metrics::RECORDS_FAILED, "Sum").await, n("failed"));
    assert_eq!(total(metrics::RECORDS_REJECTED, "Sum").await, n("rejected"));
    assert_eq!(total(metrics::BYTES_READ, "Sum").await, n("bytes_read"));
    // The mock answers every call 200 at once: one attempt per sent record, no retries.
    let sent = n("succeeded") + n("failed");
    assert_eq!(total(metrics::API_CALLS, "Sum").await, sent);
    assert_eq!(total(metrics::STATUS_2XX, "Sum").await, sent);
    assert_eq!(total(metrics::RETRIES, "Sum").await, 0.0);
    assert_eq!(total(metrics::STATUS_429, "Sum").await, 0.0);
    // Latency went as a distribution (Values/Counts): one sample per call.
    assert_eq!(total(metrics::API_LATENCY, "SampleCount").await, sent);
    // One duration sample per manifest.
    assert_eq!(
        total(metrics::MANIFEST_DURATION, "SampleCount").await,
        n("manifests")
    );
    assert!(total(metrics::TOKENS_LEASED, "Sum").await >= sent);
    assert_eq!(total(metrics::JOBS_FAILED, "Sum").await, 0.0);
}

/// The latency distribution the workers publish gives CloudWatch's percentiles: with the mock
/// answering in 20-80 ms, each minute's p50, p90 and p99 lie within what the job measured, in
/// order, and p50 sits well below p99 (a distribution, not one value per manifest).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn latency_percentiles_come_from_the_published_distribution() {
    let ts = stack("percentiles").await;
    let api = MockApi::start(MockConfig {
        latency_min_ms: 20,
        latency_max_ms: 80,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let (pipeline, s) = finished_job(&ts, &api, 600).await;
    let max_ms = s["latency"]["max_ms"].as_f64().unwrap();
    let p = |stat: &'static str| metric_values(&ts, &pipeline, metrics::API_LATENCY, stat);
    let (p50, p90, p99) = (p("p50").await, p("p90").await, p("p99").await);
    assert!(!p50.is_empty(), "no p50 of {}", metrics::API_LATENCY);
    assert_eq!((p50.len(), p90.len()), (p99.len(), p99.len()));
    for ((p50, p90), p99) in p50.iter().zip(&p90).zip(&p99) {
        // Values go out within 1% of the measured latency (metrics::latency_value_ms).
        assert!(*p50 >= 20.0 * 0.99, "p50 {p50} below the mock's 20 ms");
        assert!(p50 <= p90 && p90 <= p99, "p50 {p50}, p90 {p90}, p99 {p99}");
        assert!(
            *p99 <= max_ms * 1.01,
            "p99 {p99} above the job's max {max_ms} ms"
        );
    }
    // In the minute with most of the calls (at least half of them), a spread like the mock's:
    // p50 near the middle of 20-80 ms, p99 near its top.
    let counts = p("SampleCount").await;
    assert_eq!(counts.len(), p50.len());
    let busiest = (0..counts.len())
        .max_by(|&a, &b| counts[a].total_cmp(&counts[b]))
        .unwrap();
    assert!(
        p99[busiest] >= p50[busiest] * 1.2,
        "p50 {}, p99 {} over {} calls",
        p50[busiest],
        p99[busiest],
        counts[busiest]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_that_fails_at_split_time_is_counted_once() {
    let ts = stack("jobs_failed").await;
    let pipeline = "broken";
    // The placeholder names no CSV column: the splitter fails the job before enqueueing anything.
    let yaml = "input: {format: csv}\nrequest: {url: 'http://127.0.0.1:9/items/{identifier}'}\n";
    let event = ts.upload(pipeline, yaml, "in.csv", &csv(20)).await;
    let job = ts.run(event.clone(), 1).await.job.expect("a job");
    assert_eq!(job.status, fanout_core::ledger::JobStatus::Failed);
    assert_eq!(
        metric_total(&ts, pipeline, metrics::JOBS_FAILED, "Sum").await,
        1.0
    );
    // The same S3 event again (at-least-once delivery) is the same job: not counted twice.
    let again = ts.run(event, 1).await;
    assert_eq!(again.job.map(|j| j.job_id), Some(job.job_id));
    assert_eq!(
        metric_total(&ts, pipeline, metrics::JOBS_FAILED, "Sum").await,
        1.0
    );
}

// ------------------------------------------------------------------------------ status, report

fn ledger(ts: &TestStack) -> fanout_aws::dynamo::DynamoLedger {
    fanout_aws::dynamo::DynamoLedger::new(
        aws_sdk_dynamodb::Client::new(&ts.config),
        &ts.stack.names.table,
    )
}

/// Headless Chromium on `html`: the DOM after load and a 1200×1600 screenshot (PNG bytes).
fn chromium(html: &std::path::Path) -> (String, Vec<u8>) {
    let bin = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&bin).exists(),
        "{bin} is missing: run scripts/setup.sh (it installs Debian's chromium package)"
    );
    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("shot.png");
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(&bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--window-size=1200,1600",
            ])
            .arg(format!(
                "--user-data-dir={}",
                dir.path().join("profile").display()
            ))
            .args(extra)
            .arg(html)
            .output()
            .expect("run chromium");
        assert!(
            out.status.success(),
            "chromium: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let dom = String::from_utf8(run(&["--dump-dom"])).unwrap();
    run(&[&format!("--screenshot={}", shot.display())]);
    (dom, std::fs::read(&shot).expect("screenshot written"))
}

/// Distinct colours and the share of non-white pixels of a PNG.
fn pixel_variety(png_bytes: &[u8]) -> (u32, u32, usize, f64) {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let channels = info.color_type.samples();
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(channels).collect();
    let colours: std::collections::HashSet<&[u8]> = pixels.iter().copied().collect();
    let inked = pixels
        .iter()
        .filter(|p| p[..3].iter().any(|c| *c < 235))
        .count();
    (
        info.width,
        info.height,
        colours.len(),
        inked as f64 / pixels.len() as f64,
    )
}

/// The number in the element with `id` of a dumped DOM.
fn dom_number(dom: &str, id: &str) -> u64 {
    let start = dom
        .find(&format!("id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no #{id} in the DOM"))
        + id.len()
        + 6;
    dom[start..]
        .split('<')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("#{id}: {e}"))
}

/// One job with failures and rejections, seen five ways: the summary, `fanout status`'s JSON, the
/// HTML report as Chromium renders it, the template's dashboard drawn from the published metrics,
/// and the metrics themselves. All agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn summary_status_report_and_metrics_agree() {
    let ts = stack("agree").await;
    let api = MockApi::start(MockConfig {
        error_rate: 0.15,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let (pipeline, s) = finished_job(&ts, &api, 500).await;
    let job = s["job_id"].as_str().unwrap().to_string();
    let n = |k: &str| s[k].as_u64().unwrap();
    assert!(n("failed") > 0 && n("rejected") > 0, "{s}");

    // Status (what `fanout status --json` prints).
    let store = fanout_aws::s3::S3Store::new(ts.s3());
    let status = fanout_cli::progress::read(&job, &ledger(&ts), &store, None)
        .await
        .unwrap();
    let status = serde_json::to_value(&status).unwrap();
    assert_eq!(status["status"], "COMPLETED");
    assert_eq!(status["manifests_done"], status["manifests_total"]);
    assert_eq!(status["manifests_total"], s["manifests"]);
    for k in [
        "succeeded",
        "failed",
        "rejected",
        "blank_lines",
        "bytes_read",
    ] {
        assert_eq!(status[k], s[k], "status {k}");
    }
    assert_eq!(status["records"], s["input_records"]);
    assert!(status["rate_limit_per_sec"].as_f64().unwrap() > 0.0);
    assert_eq!(status["eta_secs"], Value::Null);

    // The report, next to the summary and rendered by Chromium.
    let html = fanout_cli::report::write(&job, &ledger(&ts), &ts.s3())
        .await
        .unwrap();
    let next_to_it = ts.keys(&format!("results/{job}/_")).await;
    assert_eq!(
        next_to_it,
        [
            fanout_cli::report::report_key(&job),
            fanout_core::manifest::keys::summary(&job)
        ],
        "the report is next to the summary"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.html");
    std::fs::write(&file, &html).unwrap();
    let (dom, shot) = chromium(&file);
    for (id, key) in [
        ("input_records", "input_records"),
        ("succeeded", "succeeded"),
        ("failed", "failed"),
        ("rejected", "rejected"),
        ("bytes_read", "bytes_read"),
    ] {
        assert_eq!(dom_number(&dom, id), n(key), "report #{id}");
    }
    assert!(dom.contains("every record accounted for once"));
    assert_eq!(dom.matches("<svg").count(), 3, "three charts");
    let points = dom.matches("class=\"pt\"").count();
    assert!(points >= 5, "charts with data points: {points}");
    assert!(dom.contains("class=\"ref\""), "the rate limit line");
    assert!(dom.contains("failed: HTTP 503"), "the top error");
    let (w, h, colours, inked) = pixel_variety(&shot);
    assert_eq!((w, h), (1200, 1600));
    assert!(colours >= 20, "{colours} colours: a blank page?");
    assert!(inked > 0.01, "{inked} of the pixels are not white");
    std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("report.png"),
        &shot,
    )
    .unwrap();

    // The template's dashboard, narrowed to this pipeline (the local AWS is shared by every
    // test) and drawn from the published metrics.
    let template = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml"),
    )
    .unwrap();
    let subs = fanout_cli::dashboard::substitutions(&template, "local", "us-east-1", &[]).unwrap();
    let mut widgets = fanout_cli::dashboard::widgets(
        &fanout_cli::dashboard::dashboard_body(&template, &subs).unwrap(),
    );
    fanout_cli::dashboard::for_pipeline(&mut widgets, metrics::NAMESPACE, &pipeline);
    let now = std::time::SystemTime::now();
    let fetched = fanout_cli::dashboard::fetch(
        &aws_sdk_cloudwatch::Client::new(&ts.config),
        widgets,
        now - std::time::Duration::from_secs(900),
        now + std::time::Duration::from_secs(60),
    )
    .await;
    let page = fanout_cli::dashboard::render("dashboard", &fetched);
    let series_total = |series: &str| -> f64 {
        let marker = format!("data-series=\"{series}\" data-total=\"");
        let at = page
            .find(&marker)
            .unwrap_or_else(|| panic!("no {series} total"))
            + marker.len();
        page[at..]
            .split('"')
            .next()
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    let total = |series: &str| series_total(series) as u64;
    assert_eq!(total("succeeded"), n("succeeded"), "dashboard succeeded");
    assert_eq!(total("failed"), n("failed"), "dashboard failed");
    assert_eq!(total("rejected"), n("rejected"), "dashboard rejected");
    // The per-pipeline SEARCH widget finds this pipeline's series too.
    assert_eq!(total(&pipeline), n("succeeded"), "dashboard by pipeline");
    // The latency widget's percentiles have data, as on the deployed dashboard.
    for p in ["p50", "p90", "p99"] {
        assert!(series_total(p) > 0.0, "dashboard latency {p} is empty");
    }

    // Metrics.
    for (name, key) in [
        (metrics::RECORDS_SUCCEEDED, "succeeded"),
        (metrics::RECORDS_FAILED, "failed"),
        (metrics::RECORDS_REJECTED, "rejected"),
    ] {
        assert_eq!(
            metric_total(&ts, &pipeline, name, "Sum").await,
            n(key) as f64,
            "metric {name}"
        );
    }
}
