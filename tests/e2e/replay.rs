//! `fanout replay` end to end: a job with failed records and a manifest in the DLQ is finished by
//! a replay, each record once, and a second replay changes nothing.

use std::time::Duration;

use fanout_cli::local::{self, PollerOptions};
use fanout_core::framer::split_all;
use fanout_core::ledger::JobStatus;
use fanout_handlers::splitter::SplitOutcome;
use integration_tests::{MockApi, MockConfig, offsets, pipeline_yaml, stack};

const CSV_FIELDS: &str = "[{name: id, type: integer, required: true}, {name: name}]";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_finishes_dlq_manifests_and_replaces_failures_with_successes() {
    let ts = stack("replay").await;
    let api = MockApi::start(MockConfig {
        error_rate: 0.3,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let mut text = String::from("id,name\n");
    for i in 0..600 {
        text.push_str(&format!("{i},name-{i}\n"));
    }
    let data = text.into_bytes();
    let input: Vec<u64> = split_all(&data, 8).into_iter().map(|(o, _)| o).collect();
    let yaml = pipeline_yaml("csv", &api.base_url(), CSV_FIELDS, 1_500, "")
        .replace("max_attempts: 2", "max_attempts: 1");
    let event = ts.upload("p", &yaml, "in.csv", &data).await;
    let split = fanout_handlers::splitter::handle_s3_event(
        event,
        &local::splitter_deps(&ts.config, &ts.stack),
    )
    .await
    .unwrap();
    let SplitOutcome::Started { job_id, manifests } = split[0].clone() else {
        panic!("{split:?}")
    };

    // One manifest ends in the DLQ, as SQS's redrive would put it after five failed receives.
    let sqs = aws_sdk_sqs::Client::new(&ts.config);
    let got = sqs
        .receive_message()
        .queue_url(&ts.stack.queue_url)
        .send()
        .await
        .unwrap();
    let dead = got.messages()[0].clone();
    sqs.send_message()
        .queue_url(&ts.stack.dlq_url)
        .message_body(dead.body().unwrap())
        .send()
        .await
        .unwrap();
    sqs.delete_message()
        .queue_url(&ts.stack.queue_url)
        .receipt_handle(dead.receipt_handle().unwrap())
        .send()
        .await
        .unwrap();

    // The rest is worked; the job cannot complete without the dead manifest.
    let pollers = local::Pollers::start(
        &ts.config,
        &ts.stack,
        &PollerOptions {
            workers: 2,
            ..PollerOptions::default()
        },
    )
    .unwrap();
    let ledger = local::splitter_deps(&ts.config, &ts.stack).ledger;
    let started = std::time::Instant::now();
    loop {
        let job = ledger.get_job(&job_id).await.unwrap().unwrap();
        if job.manifests_done + 1 == manifests {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{job:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pollers.stop().await.unwrap();
    let job = ledger.get_job(&job_id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Running);
    let failed_before = ts.lines(&format!("failed/{job_id}/")).await.len();
    assert!(failed_before > 0);

    // The API recovers; the replay finishes the job.
    api.set_config(MockConfig::default());
    let report = local::replay(&ts.config, &ts.stack, &job_id).await.unwrap();
    assert_eq!(
        (report.dlq_manifests, report.dlq_left),
        (1, 0),
        "{report:?}"
    );
    assert_eq!(report.still_failed, 0, "{report:?}");
    assert!(report.now_succeeded >= failed_before as u64, "{report:?}");
    assert_eq!(ts.queue_depth().await, 0);

    let results = ts.lines(&format!("results/{job_id}/part-")).await;
    assert_eq!(
        offsets(&results),
        input,
        "every record once, now all succeeded"
    );
    assert!(ts.lines(&format!("failed/{job_id}/")).await.is_empty());
    let summary: serde_json::Value =
        serde_json::from_slice(&ts.object(&format!("results/{job_id}/_SUMMARY.json")).await)
            .unwrap();
    assert_eq!(summary["status"], "COMPLETED", "{summary}");
    assert_eq!(summary["succeeded"], input.len() as u64, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["reconciled"], true);
    let stats = api.stats();
    assert_eq!(stats.duplicate_successes, 0, "{stats:?}");

    // A second replay finds nothing to do and changes nothing.
    let again = local::replay(&ts.config, &ts.stack, &job_id).await.unwrap();
    assert_eq!((again.replayed, again.dlq_manifests), (0, 0), "{again:?}");
    assert_eq!(
        offsets(&ts.lines(&format!("results/{job_id}/part-")).await),
        input
    );
}
