//! Bad input end to end: each kind of bad record is rejected with a clear reason while the job
//! goes on, and `fanout validate --sample` (fanout_core::check::check_sample) reports the same reasons.

use std::collections::BTreeMap;

use fanout_core::config::PipelineConfig;
use fanout_core::ledger::JobStatus;
use integration_tests::{MockApi, MockConfig, offsets, stack};

fn yaml(format: &str, base: &str, fields: &str) -> String {
    format!(
        "input: {{format: {format}, max_record_bytes: 64, fields: {fields}}}\nrequest: {{method: POST, url: \"{base}/items/{{id}}\", body: {{id: \"{{id}}\"}}}}\nsplit: {{chunk_bytes: 60}}\n"
    )
}

/// Runs a job on `data` and checks its rejected/ against `expected` (line → reason prefix) and
/// against what validate reports.
async fn run_and_compare(format: &str, fields: &str, data: Vec<u8>, expected: &[(u64, &str)]) {
    let ts = stack(&format!("bad_{format}")).await;
    let api = MockApi::start(MockConfig::default()).await.unwrap();
    let yaml = yaml(format, &api.base_url(), fields);
    let event = ts.upload("p", &yaml, &format!("in.{format}"), &data).await;
    let report = ts.run(event, 2).await;
    let job = report.job.expect("job");
    assert_eq!(job.status, JobStatus::Completed, "the job goes on: {job:?}");
    assert!(
        job.manifests_total >= 3,
        "bad records spread over manifests"
    );

    let config = PipelineConfig::from_yaml("pipelines/p.yaml", &yaml).unwrap();
    let check = fanout_core::check::check_sample(&config, &data, "pipelines/p.yaml").unwrap();
    let validated: BTreeMap<u64, (u64, String)> = check
        .rejected
        .iter()
        .map(|r| (r.offset, (r.line, r.reason.clone())))
        .collect();
    let rejected = ts.lines(&format!("rejected/{}/", job.job_id)).await;
    let in_job: BTreeMap<u64, String> = rejected
        .iter()
        .map(|r| {
            (
                r["offset"].as_u64().unwrap(),
                r["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // The same records, with the same reasons.
    assert_eq!(
        in_job,
        validated
            .iter()
            .map(|(o, (_, r))| (*o, r.clone()))
            .collect::<BTreeMap<_, _>>()
    );
    let by_line: Vec<(u64, &str)> = validated.values().map(|(l, r)| (*l, r.as_str())).collect();
    assert_eq!(by_line.len(), expected.len(), "{by_line:?}");
    for ((line, reason), (want_line, want)) in by_line.iter().zip(expected) {
        assert_eq!(line, want_line, "{by_line:?}");
        assert!(
            reason.starts_with(want),
            "line {line}: {reason:?} is not {want:?}"
        );
    }
    let results = ts.lines(&format!("results/{}/part-", job.job_id)).await;
    assert_eq!(
        results.len() as u64,
        check.records - check.rejected.len() as u64
    );
    let mut all = offsets(&results);
    all.extend(offsets(&rejected));
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len() as u64, check.records, "every record once");
    assert_eq!(api.stats().total_requests, results.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_csv_records_are_rejected_with_their_reasons() {
    let mut data = b"id,name\n1,a\n2\n3,\"x\"y,z\n\n4,b".to_vec();
    data.extend_from_slice(b"\xff\nx,y\n,z\n5,");
    data.extend_from_slice(&[b'a'; 100]);
    data.extend_from_slice(b"\n6,ok\r\n\r\n7,\"quoted, fine\"\n");
    run_and_compare(
        "csv",
        "[{name: id, type: integer, required: true}, {name: name}]",
        data,
        &[
            (3, "expected 2 columns, found 1"),
            (4, "expected 2 columns, found 3"),
            (6, "invalid UTF-8 at byte 3 of the record"),
            (7, "field \"id\": expected an integer"),
            (8, "missing required field \"id\""),
            (9, "record of 102 bytes exceeds input.max_record_bytes (64)"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_json_records_are_rejected_with_their_reasons() {
    let mut data =
        b"{\"id\": 1}\n{\"id\": 2,\n\n{\"id\": \"3\"}\n[4]\n{\"name\": \"x\"}\n".to_vec();
    data.extend_from_slice(b"{\"id\": 5, \"name\": \"\xc3\"}\n{\"id\": 6, \"name\": \"");
    data.extend_from_slice(&[b'a'; 100]);
    data.extend_from_slice(b"\"}\n   \n{\"id\": 7}");
    run_and_compare(
        "jsonl",
        "[{name: id, type: integer, required: true}, {name: name, type: string}]",
        data,
        &[
            (2, "invalid JSON: EOF while parsing"),
            (4, "field \"id\": expected integer, found string"),
            (5, "expected a JSON object, found array"),
            (6, "missing required field \"id\""),
            (7, "invalid UTF-8 at byte 19 of the record"),
            (8, "record of 121 bytes exceeds input.max_record_bytes (64)"),
        ],
    )
    .await;
}
