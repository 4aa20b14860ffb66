//! CSV records whose quoted fields hold line breaks, cut into ranges whose boundaries fall inside
//! them: every record reaches the API once with its exact values (see docs/CSV.md).

use std::collections::BTreeMap;
use std::time::Duration;

use fanout_core::ledger::JobStatus;
use integration_tests::{MockApi, MockConfig, offsets, stack};
use serde_json::Value;

const RECORDS: usize = 100_000;
const CHUNK: u64 = 24_000;

/// A quoted note with line breaks (LF and CRLF), a doubled quote and a delimiter; the offsets in
/// the record (after its `"`) of the places a range boundary is put on.
const NOTE: &str = "first line\nsecond, \"\"quoted\"\"\r\nthird";
fn boundary_targets() -> [usize; 5] {
    let after_lf = NOTE.find('\n').unwrap() + 1;
    let at_cr = NOTE.find('\r').unwrap();
    [
        0,              // right after the opening quote
        after_lf,       // right after a quoted LF
        at_cr,          // on the CR of a quoted CRLF
        at_cr + 1,      // on the LF of a quoted CRLF
        NOTE.len() - 2, // inside the last line, before the closing quote
    ]
}

/// 100,000 records (`id,name,note`), 5% with a multi-line note, plus one at every range boundary
/// placed so that the boundary falls inside its quoted note (at one of [`boundary_targets`] in
/// turn). Deterministic: the same bytes every run.
fn multiline_csv() -> (Vec<u8>, u64) {
    let mut data = b"id,name,note\n".to_vec();
    let data_start = data.len() as u64;
    let mut next_boundary = data_start + CHUNK;
    let mut turn = 0;
    for i in 0..RECORDS {
        let cur = data.len() as u64;
        let name_and_open = format!("{i},n,\"");
        let targets = boundary_targets();
        let t0 = (name_and_open.len() + targets[turn % targets.len()]) as u64;
        let gap = next_boundary as i64 - cur as i64;
        let record = if gap >= t0 as i64 && gap <= t0 as i64 + 100 {
            // Pad the name so that the boundary falls on the target inside the note.
            let pad = (gap - t0 as i64) as usize;
            turn += 1;
            next_boundary += CHUNK;
            format!("{i},n{},\"{NOTE}\"", "m".repeat(pad))
        } else {
            match i % 20 {
                7 => format!("{i},\"Doe, J {i}\",\"{NOTE} {i}\""),
                3 | 11 => format!("{i},\"Roe, {i}\",plain"),
                _ => format!("{i},name-{i},note {i}"),
            }
        };
        data.extend_from_slice(record.as_bytes());
        data.extend_from_slice(if i % 3 == 0 { b"\r\n" } else { b"\n" });
    }
    (data, data_start)
}

/// The records a whole-file CSV reader finds: offset → (id, name, note).
fn oracle(data: &[u8]) -> BTreeMap<u64, (String, String, String)> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(data);
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            let mut at = r.position().unwrap().byte();
            while matches!(data.get(at as usize), Some(b'\n' | b'\r')) {
                at += 1;
            }
            (at, (r[0].to_string(), r[1].to_string(), r[2].to_string()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quoted_line_breaks_across_range_boundaries_reach_the_api_once() {
    let (data, data_start) = multiline_csv();
    let expected = oracle(&data);
    assert_eq!(expected.len(), RECORDS);
    let multiline = expected
        .values()
        .filter(|(_, _, n)| n.contains('\n'))
        .count();
    assert!(multiline >= RECORDS / 20, "{multiline} multi-line records");
    // Every range boundary falls inside a quoted note.
    let boundaries = (data.len() as u64 - data_start) / CHUNK;
    let starts: Vec<u64> = expected.keys().copied().collect();
    let inside = (1..=boundaries)
        .map(|k| data_start + k * CHUNK)
        .filter(|b| {
            let i = starts.partition_point(|s| s < b);
            let record = &expected[&starts[i - 1]];
            record.2.contains('\n') && !starts.contains(b)
        })
        .count() as u64;
    assert_eq!(inside, boundaries, "boundaries inside a quoted field");

    let ts = stack("csv_multiline").await;
    let api = MockApi::start(MockConfig::default()).await.unwrap();
    let yaml = format!(
        "input:\n  format: csv\n  fields: [{{name: id, type: integer, required: true}}, {{name: name}}, {{name: note}}]\nrequest:\n  method: POST\n  url: \"{}/items/{{id}}\"\n  body: {{ id: \"{{id}}\", name: \"{{name}}\", note: \"{{note}}\" }}\nclient: {{ concurrency: 64, timeout_ms: 5000, max_attempts: 2, rate_limit_per_sec: 50000 }}\nsplit: {{ chunk_bytes: {CHUNK} }}\n",
        api.base_url()
    );
    let event = ts.upload("notes", &yaml, "notes.csv", &data).await;
    let report = ts.run_for(event, 4, Duration::from_secs(180)).await;
    let job = report.job.as_ref().expect("job");
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    // No range guessed its start state wrong: nothing was redone, no call was wasted.
    assert_eq!(job.redo, None);
    assert!(job.manifests_total as u64 > boundaries);

    let results = ts.lines(&format!("results/{}/part-", job.job_id)).await;
    assert!(
        ts.lines(&format!("rejected/{}/", job.job_id))
            .await
            .is_empty()
    );
    assert_eq!(
        offsets(&results),
        expected.keys().copied().collect::<Vec<_>>()
    );
    for r in &results {
        let (id, name, note) = &expected[&r["offset"].as_u64().unwrap()];
        let echo: &Value = &r["response"]["echo"];
        assert_eq!(echo["id"].to_string().trim_matches('"'), id, "{r}");
        assert_eq!(echo["name"], name.as_str(), "{r}");
        assert_eq!(echo["note"], note.as_str(), "{r}");
    }
    assert_eq!(
        api.stats().total_requests,
        RECORDS as u64,
        "each record once"
    );
    let summary = report.summary.as_ref().expect("summary");
    assert_eq!(summary.input_records, RECORDS as u64);
    assert!(summary.reconciled);
    eprintln!(
        "csv_multiline: {} records ({multiline} multi-line), {} manifests, {:.1} s",
        RECORDS, job.manifests_total, report.wall_seconds
    );
}

/// A quoted field that looks like records from inside (`x,b` lines, 80 KB) spans two range
/// boundaries: both ranges guess "unquoted", wrongly. Once all three ranges are recorded, the job
/// is not completed but redone for those two ranges from their true state: their output and
/// ledger counts are replaced, and the job ends with each record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_that_guess_wrong_are_redone_and_replaced() {
    let mut data = b"id,name\n1,\"x\n".to_vec();
    for _ in 0..20_000 {
        data.extend_from_slice(b"x,b\n");
    }
    data.extend_from_slice(b"\"\n3,c\n");
    let expected: Vec<u64> = {
        let mut reader = csv::ReaderBuilder::new().from_reader(&data[..]);
        reader
            .records()
            .map(|r| r.unwrap().position().unwrap().byte())
            .collect()
    };
    assert_eq!(expected, [8, data.len() as u64 - 4]);

    let ts = stack("csv_redo").await;
    let api = MockApi::start(MockConfig::default()).await.unwrap();
    let yaml = format!(
        "input:\n  format: csv\n  fields: [{{name: id, type: integer, required: true}}, {{name: name}}]\nrequest:\n  method: POST\n  url: \"{}/items/{{id}}\"\n  body: {{ id: \"{{id}}\", name: \"{{name}}\" }}\nsplit: {{ chunk_bytes: 40000 }}\n",
        api.base_url()
    );
    let event = ts.upload("redo", &yaml, "in.csv", &data).await;
    let report = ts.run(event, 2).await;
    let job = report.job.as_ref().expect("job");
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    let redo: Vec<u32> = job.redo.iter().flatten().map(|r| r.seq).collect();
    assert_eq!(redo, [1, 2], "{job:?}");
    // Three ranges and two redos.
    assert_eq!(job.manifests_total, 5);

    let results = ts.lines(&format!("results/{}/part-", job.job_id)).await;
    assert_eq!(offsets(&results), expected);
    // What the wrong guesses rejected (the `x,b` lines) went with their ranges' output.
    assert!(
        ts.lines(&format!("rejected/{}/", job.job_id))
            .await
            .is_empty()
    );
    let summary = report.summary.as_ref().expect("summary");
    assert_eq!(summary.input_records, 2, "{summary:?}");
    assert_eq!(summary.rejected, 0, "{summary:?}");
    assert!(summary.reconciled, "{summary:?}");
    assert_eq!(api.stats().total_requests, 2);
}
