//! Large output parts on the local S3: a part past the part writer's threshold is a real
//! multipart upload, and reads back as the single PUT of the same lines would.

use fanout_aws::s3::S3Store;
use fanout_core::ports::ObjectStore;
use fanout_handlers::part_writer::{PART_BYTES, PartWriter};
use integration_tests::{MockApi, MockConfig, TestStack, stack};
use serde_json::{Value, json};

/// `n` JSON lines of about `len` bytes each.
fn lines(n: usize, len: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut line = serde_json::to_vec(&json!({"i": i, "pad": "p".repeat(len)})).unwrap();
            line.push(b'\n');
            line
        })
        .collect()
}

async fn etag(ts: &TestStack, key: &str) -> String {
    let head = ts
        .s3()
        .head_object()
        .bucket(ts.bucket())
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("head {key}: {e}"));
    head.e_tag().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_past_the_threshold_is_uploaded_in_parts_and_reads_back_as_one_put() {
    let ts = stack("multipart_writer").await;
    let store = S3Store::new(ts.s3());
    // Two and a half parts' worth.
    let lines = lines(PART_BYTES * 5 / 2 / (64 << 10), 64 << 10);
    let mut parts = PartWriter::new(
        &store,
        ts.bucket(),
        "results/j/multi.jsonl".into(),
        "application/x-ndjson",
    );
    for line in &lines {
        parts.append(line).await.unwrap();
    }
    parts.finish().await.unwrap();
    let whole = lines.concat();
    store
        .put(
            ts.bucket(),
            "results/j/single.jsonl",
            whole.clone(),
            "application/x-ndjson",
        )
        .await
        .unwrap();
    let (multi, single) = (
        ts.object("results/j/multi.jsonl").await,
        ts.object("results/j/single.jsonl").await,
    );
    assert_eq!(multi.len(), whole.len());
    assert!(
        multi == single,
        "the multipart object differs from the single PUT"
    );
    // S3 tells a multipart object by its ETag: the parts' digest, a dash, their count.
    let tag = etag(&ts, "results/j/multi.jsonl").await;
    assert!(tag.trim_matches('"').ends_with("-3"), "not 3 parts: {tag}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_upload_leaves_nothing_and_errors_name_the_key() {
    let ts = stack("multipart_abort").await;
    let store = S3Store::new(ts.s3());
    let key = "results/j/aborted.jsonl";
    let mut parts = PartWriter::new(&store, ts.bucket(), key.into(), "application/x-ndjson");
    for line in lines(PART_BYTES / (64 << 10) + 1, 64 << 10) {
        parts.append(&line).await.unwrap();
    }
    parts.abort().await;
    assert!(
        ts.keys(key).await.is_empty(),
        "an aborted upload is not an object"
    );
    let uploads = ts
        .s3()
        .list_multipart_uploads()
        .bucket(ts.bucket())
        .send()
        .await
        .unwrap();
    assert!(uploads.uploads().is_empty(), "{:?}", uploads.uploads());
    let err = store
        .upload_part(ts.bucket(), key, "no-such-upload", 1, b"x".to_vec())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("s3://{}/{key}", ts.bucket())),
        "{err}"
    );
}

/// A job of one manifest whose results part is about 1.5 parts: the worker streams it as a
/// multipart upload, sorted, complete, reconciled with the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_streams_a_large_results_part_sorted_and_complete() {
    let ts = stack("multipart_job").await;
    let api = MockApi::start(MockConfig::default()).await.unwrap();
    let base = api.base_url();
    // Records of 96 KiB, each echoed whole in its result.
    let (records, blob) = (PART_BYTES * 3 / 2 / (96 << 10), 96 << 10);
    let mut data = Vec::new();
    for i in 0..records {
        serde_json::to_writer(&mut data, &json!({"id": i, "blob": "b".repeat(blob)})).unwrap();
        data.push(b'\n');
    }
    let yaml = format!(
        "input: {{format: jsonl}}\n\
         request: {{method: POST, url: \"{base}/items/{{id}}\", body: {{id: \"{{id}}\", blob: \"{{blob}}\"}}}}\n\
         client: {{concurrency: 16, max_response_bytes: 1048576}}\n\
         response: {{keep: /echo}}\n\
         split: {{chunk_bytes: {}}}\n",
        data.len() + 1
    );
    let report = ts
        .run(ts.upload("big", &yaml, "in.jsonl", &data).await, 1)
        .await;
    TestStack::assert_all_succeeded(&report, records as u64);
    let job = report.job.expect("a job").job_id;
    let keys = ts.keys(&format!("results/{job}/part-")).await;
    assert_eq!(keys.len(), 1, "one manifest, one part: {keys:?}");
    let body = ts.object(&keys[0]).await;
    assert!(
        body.len() > PART_BYTES,
        "{} bytes: not past a part",
        body.len()
    );
    let tag = etag(&ts, &keys[0]).await;
    assert!(tag.trim_matches('"').ends_with("-2"), "not 2 parts: {tag}");
    // Every record once, in offset order, each line whole (a part boundary never splits one).
    let mut offset = 0u64;
    let mut seen = 0usize;
    for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let v: Value = serde_json::from_slice(line).expect("a whole JSON line");
        assert_eq!(v["offset"].as_u64(), Some(offset), "sorted and complete");
        let id = v["response"]["id"].to_string();
        assert_eq!(id.trim_matches('"'), seen.to_string(), "{id}");
        assert_eq!(v["response"]["blob"].as_str().map(str::len), Some(blob));
        offset += record_len(&data, offset);
        seen += 1;
    }
    assert_eq!(seen, records);
    assert!(body.ends_with(b"\n"));
}

/// The length of the record at `offset` of `data`, its newline included.
fn record_len(data: &[u8], offset: u64) -> u64 {
    let rest = &data[offset as usize..];
    rest.iter()
        .position(|b| *b == b'\n')
        .map_or(rest.len(), |p| p + 1) as u64
}
