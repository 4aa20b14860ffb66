//! The job report: one self-contained HTML file (inline SVG, no scripts, no CDN) written next to
//! the summary as `results/<job>/_REPORT.html`. [`render`] is pure; [`gather`] reads its inputs
//! from the ledger and the bucket.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::charts::{self, Series, esc};
use fanout_core::latency::{self, Percentiles};
use fanout_core::ledger::{Counts, ManifestRecord};
use fanout_core::summary::JobSummary;

/// When one manifest ran, and what it did.
#[derive(Clone, Debug)]
pub struct ManifestTiming {
    pub seq: u32,
    /// When its output was written (milliseconds since the epoch).
    pub finished_at_ms: u64,
    pub duration_ms: u64,
    pub counts: Counts,
    /// Its API latency histogram (µs), V2-serialized as in the ledger.
    pub latency_histogram: Vec<u8>,
}

pub struct ReportInput {
    pub summary: JobSummary,
    pub manifests: Vec<ManifestTiming>,
    pub rate_limit_per_sec: Option<f64>,
    /// Failed calls by final status ("no response" when none came back).
    pub failed_by_status: BTreeMap<String, u64>,
    /// The most frequent error messages of failed/ and rejected/, most frequent first.
    pub top_errors: Vec<(String, u64)>,
}

/// API calls per second over the job: each manifest's calls spread evenly over the time it ran,
/// in `buckets` equal slices of the job's span. x is seconds since the first manifest started.
pub fn throughput(manifests: &[ManifestTiming], buckets: usize) -> Vec<(f64, f64)> {
    let spans: Vec<(f64, f64, f64)> = manifests
        .iter()
        .map(|m| {
            let end = m.finished_at_ms as f64 / 1000.0;
            let start = end - (m.duration_ms.max(1) as f64 / 1000.0);
            (start, end, (m.counts.succeeded + m.counts.failed) as f64)
        })
        .collect();
    let Some(t0) = spans.iter().map(|s| s.0).reduce(f64::min) else {
        return Vec::new();
    };
    let t1 = spans.iter().map(|s| s.1).fold(t0, f64::max).max(t0 + 1e-3);
    let width = (t1 - t0) / buckets.max(1) as f64;
    let mut calls = vec![0.0; buckets.max(1)];
    for (start, end, n) in spans {
        for (i, c) in calls.iter_mut().enumerate() {
            let (b0, b1) = (t0 + width * i as f64, t0 + width * (i + 1) as f64);
            let overlap = (end.min(b1) - start.max(b0)).max(0.0);
            *c += n * overlap / (end - start);
        }
    }
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| (round2(width * (i as f64 + 0.5)), round2(c / width)))
        .collect()
}

/// p50/p95/p99 (ms) of the manifests that finished in each of `buckets` slices of the job.
pub fn latency_over_time(
    manifests: &[ManifestTiming],
    buckets: usize,
) -> anyhow::Result<[Vec<(f64, f64)>; 3]> {
    let mut out: [Vec<(f64, f64)>; 3] = Default::default();
    let Some(t0) = manifests
        .iter()
        .map(|m| m.finished_at_ms.saturating_sub(m.duration_ms))
        .min()
    else {
        return Ok(out);
    };
    let t1 = manifests
        .iter()
        .map(|m| m.finished_at_ms)
        .max()
        .unwrap_or(t0);
    let width = ((t1 - t0) as f64 / buckets.max(1) as f64).max(1.0);
    let mut merged: BTreeMap<usize, hdrhistogram::Histogram<u64>> = BTreeMap::new();
    for m in manifests {
        let i = (((m.finished_at_ms - t0) as f64 / width) as usize).min(buckets.max(1) - 1);
        let h = merged.entry(i).or_insert_with(latency::new_histogram);
        h.add(latency::decode(&m.latency_histogram)?)?;
    }
    for (i, h) in merged.iter().filter(|(_, h)| !h.is_empty()) {
        let x = round2(width * (*i as f64 + 1.0) / 1000.0);
        let p = Percentiles::of(h);
        out[0].push((x, p.p50_ms));
        out[1].push((x, p.p95_ms));
        out[2].push((x, p.p99_ms));
    }
    Ok(out)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fff}\
h1{font-size:22px}h2{font-size:17px;margin-top:28px}table{border-collapse:collapse}\
td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}th{background:#f2f2f2}\
td.l,th.l{text-align:left}.ok{color:#007a3d;font-weight:bold}.bad{color:#b00020;font-weight:bold}\
.charts{display:flex;flex-wrap:wrap;gap:16px}.chart{border:1px solid #ddd;background:#fafafa}";

/// The whole page.
pub fn render(input: &ReportInput) -> anyhow::Result<String> {
    let s = &input.summary;
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Job {id}</title><style>{STYLE}</style></head><body>\
<h1>Job <code>{id}</code></h1><p>Pipeline <b>{p}</b>, input <code>s3://{b}/{k}</code>, status <b id=\"status\">{st}</b>, {m} manifests.</p>",
        id = esc(&s.job_id),
        p = esc(&s.pipeline),
        b = esc(&s.bucket),
        k = esc(&s.key),
        st = s.status.as_str(),
        m = s.manifests
    );

    // Totals and reconciliation.
    let sum = s.succeeded + s.failed + s.rejected;
    let _ = write!(
        html,
        "<h2>Totals</h2><table id=\"totals\"><tr><th class=\"l\">what</th><th>count</th></tr>\
<tr><td class=\"l\">input records</td><td id=\"input_records\">{}</td></tr>\
<tr><td class=\"l\">succeeded</td><td id=\"succeeded\">{}</td></tr>\
<tr><td class=\"l\">failed</td><td id=\"failed\">{}</td></tr>\
<tr><td class=\"l\">rejected</td><td id=\"rejected\">{}</td></tr>\
<tr><td class=\"l\">blank lines (not records)</td><td id=\"blank_lines\">{}</td></tr>\
<tr><td class=\"l\">bytes read</td><td id=\"bytes_read\">{}</td></tr></table>\
<p id=\"reconciliation\">Reconciliation: succeeded + failed + rejected = {} + {} + {} = {sum}, input records {}: \
<span class=\"{}\">{}</span></p>",
        s.input_records,
        s.succeeded,
        s.failed,
        s.rejected,
        s.blank_lines,
        s.bytes_read,
        s.succeeded,
        s.failed,
        s.rejected,
        s.input_records,
        if s.reconciled && sum == s.input_records {
            "ok"
        } else {
            "bad"
        },
        if s.reconciled && sum == s.input_records {
            "every record accounted for once"
        } else {
            "MISMATCH"
        },
    );
    let l = &s.latency;
    let _ = write!(
        html,
        "<p>API latency (ms): p50 {} · p95 {} · p99 {} · max {} · mean {}</p>",
        l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms, l.mean_ms
    );
    if let Some(e) = &s.error {
        let _ = write!(html, "<p class=\"bad\">Job error: {}</p>", esc(e));
    }

    // Charts.
    html.push_str("<h2>Over time</h2><div class=\"charts\">");
    let buckets = (input.manifests.len()).clamp(1, 40);
    html.push_str(&charts::line_chart(
        "API calls/s against the limit",
        "seconds since the first manifest started",
        "calls/s",
        &[Series {
            label: "API calls/s".into(),
            points: throughput(&input.manifests, buckets),
        }],
        input.rate_limit_per_sec.map(|r| ("rate limit", r)),
    ));
    let [p50, p95, p99] = latency_over_time(&input.manifests, buckets)?;
    html.push_str(&charts::line_chart(
        "API latency (ms) by manifests finished",
        "seconds since the first manifest started",
        "ms",
        &[
            Series {
                label: "p50".into(),
                points: p50,
            },
            Series {
                label: "p95".into(),
                points: p95,
            },
            Series {
                label: "p99".into(),
                points: p99,
            },
        ],
        None,
    ));
    let mut bars = vec![("succeeded (2xx)".to_string(), s.succeeded as f64)];
    for (status, n) in &input.failed_by_status {
        bars.push((format!("failed: {status}"), *n as f64));
    }
    bars.push(("rejected (not sent)".to_string(), s.rejected as f64));
    html.push_str(&charts::bar_chart("Records by outcome", &bars));
    html.push_str("</div>");

    // Errors.
    html.push_str("<h2>Top errors</h2>");
    if input.top_errors.is_empty() {
        html.push_str("<p id=\"no-errors\">No failed or rejected records.</p>");
    } else {
        html.push_str("<table id=\"errors\"><tr><th class=\"l\">message</th><th>records</th></tr>");
        for (msg, n) in &input.top_errors {
            let _ = write!(
                html,
                "<tr><td class=\"l\">{}</td><td>{n}</td></tr>",
                esc(msg)
            );
        }
        html.push_str("</table>");
    }
    html.push_str("</body></html>\n");
    Ok(html)
}

/// Counts each distinct message, most frequent first (ties by message), at most `n`.
pub fn top_messages(messages: impl IntoIterator<Item = String>, n: usize) -> Vec<(String, u64)> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for m in messages {
        *counts.entry(m).or_default() += 1;
    }
    let mut v: Vec<(String, u64)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

/// Pairs the ledger's manifest records with when their output was written.
pub fn timings(
    records: Vec<ManifestRecord>,
    finished_at_ms: &BTreeMap<u32, u64>,
) -> Vec<ManifestTiming> {
    records
        .into_iter()
        .filter_map(|r| {
            finished_at_ms.get(&r.seq).map(|t| ManifestTiming {
                seq: r.seq,
                finished_at_ms: *t,
                duration_ms: r.duration_ms,
                counts: r.counts,
                latency_histogram: r.latency_histogram,
            })
        })
        .collect()
}

/// The report's key: next to the summary.
pub fn report_key(job_id: &str) -> String {
    format!("results/{job_id}/_REPORT.html")
}

/// Failed and rejected lines read for the error table, at most (a report need not read a huge
/// failed/ prefix to name the top errors).
const MAX_ERROR_LINES: usize = 100_000;

/// Reads everything the report shows: the summary (or, before the job is complete, one built
/// from the ledger), the manifest records, when each manifest's output was written, the
/// pipeline's limit and the failed/ and rejected/ lines.
pub async fn gather(
    job_id: &str,
    ledger: &dyn fanout_core::ports::JobLedger,
    s3: &aws_sdk_s3::Client,
) -> anyhow::Result<ReportInput> {
    let job = ledger
        .get_job(job_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("job {job_id} not found in the ledger"))?;
    let bucket = job.bucket.as_str();
    let summary = match get(s3, bucket, &fanout_core::manifest::keys::summary(job_id)).await? {
        Some(body) => serde_json::from_slice(&body)?,
        None => fanout_core::summary::build_summary(job_id, ledger).await?,
    };
    let mut finished: BTreeMap<u32, u64> = BTreeMap::new();
    let (mut messages, mut failed_by_status) = (Vec::new(), BTreeMap::new());
    for prefix in ["results", "failed", "rejected"] {
        for (key, modified_ms) in list(s3, bucket, &format!("{prefix}/{job_id}/part-")).await? {
            let Some(seq) = key.rsplit("part-").next().and_then(|rest| {
                (rest.trim_end_matches(".jsonl").trim_end_matches(".csv"))
                    .parse::<u32>()
                    .ok()
            }) else {
                continue;
            };
            let t = finished.entry(seq).or_default();
            *t = (*t).max(modified_ms);
            if prefix == "results" || messages.len() >= MAX_ERROR_LINES {
                continue;
            }
            let body = get(s3, bucket, &key).await?.unwrap_or_default();
            for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let v: serde_json::Value = serde_json::from_slice(line)?;
                if prefix == "failed" {
                    let status = v["status"]
                        .as_u64()
                        .map_or("no response".to_string(), |s| format!("HTTP {s}"));
                    *failed_by_status.entry(status).or_insert(0u64) += 1;
                    messages.push(format!("failed: {}", v["error"].as_str().unwrap_or("?")));
                } else {
                    messages.push(format!("rejected: {}", v["reason"].as_str().unwrap_or("?")));
                }
            }
        }
    }
    // The rate the job ran with (its config as the splitter resolved it), not what the stored
    // config says today.
    let rate_limit_per_sec = job
        .config
        .as_ref()
        .map(|c| f64::from(c.client.rate_limit_per_sec));
    Ok(ReportInput {
        summary,
        manifests: timings(ledger.manifests(job_id).await?, &finished),
        rate_limit_per_sec,
        failed_by_status,
        top_errors: top_messages(messages, 10),
    })
}

async fn get(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
    match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => Ok(Some(out.body.collect().await?.into_bytes().to_vec())),
        Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => Ok(None),
        Err(e) => Err(anyhow::anyhow!(
            "GetObject s3://{bucket}/{key}: {}",
            aws_sdk_s3::error::DisplayErrorContext(e)
        )),
    }
}

/// Keys under `prefix` with their last-modified times (ms since the epoch).
async fn list(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> anyhow::Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    let mut pages = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            anyhow::anyhow!(
                "ListObjectsV2 s3://{bucket}/{prefix}: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        })?;
        for o in page.contents() {
            let modified = o
                .last_modified()
                .and_then(|t| t.to_millis().ok())
                .unwrap_or(0)
                .max(0) as u64;
            out.extend(o.key().map(|k| (k.to_string(), modified)));
        }
    }
    Ok(out)
}

/// Renders the report and writes it next to the summary; returns the page.
pub async fn write(
    job_id: &str,
    ledger: &dyn fanout_core::ports::JobLedger,
    s3: &aws_sdk_s3::Client,
) -> anyhow::Result<String> {
    let input = gather(job_id, ledger, s3).await?;
    let html = render(&input)?;
    s3.put_object()
        .bucket(&input.summary.bucket)
        .key(report_key(job_id))
        .content_type("text/html; charset=utf-8")
        .body(html.clone().into_bytes().into())
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "PutObject {}: {}",
                report_key(job_id),
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        })?;
    Ok(html)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fanout_core::ledger::JobStatus;

    fn timing(seq: u32, end_s: u64, dur_ms: u64, calls: u64, lat_ms: u64) -> ManifestTiming {
        let mut h = latency::new_histogram();
        for _ in 0..calls {
            h.record(lat_ms * 1000).unwrap();
        }
        ManifestTiming {
            seq,
            finished_at_ms: end_s * 1000,
            duration_ms: dur_ms,
            counts: Counts {
                records: calls,
                succeeded: calls,
                ..Default::default()
            },
            latency_histogram: latency::encode(&h),
        }
    }

    #[test]
    fn throughput_spreads_each_manifest_over_its_run() {
        // Two back-to-back manifests of 100 calls over 1 s each: 100 calls/s throughout.
        let t = throughput(
            &[timing(0, 101, 1000, 100, 5), timing(1, 102, 1000, 100, 5)],
            4,
        );
        assert_eq!(t.len(), 4);
        assert!(t.iter().all(|(_, r)| (*r - 100.0).abs() < 1e-6), "{t:?}");
        let total: f64 = t.iter().map(|(_, r)| r * 0.5).sum();
        assert!((total - 200.0).abs() < 1e-6);
        assert!(throughput(&[], 4).is_empty());
    }

    #[test]
    fn the_page_holds_totals_charts_and_errors() {
        let summary = JobSummary {
            job_id: "job<1>".into(),
            status: JobStatus::Completed,
            bucket: "b".into(),
            key: "input/p/x.csv".into(),
            version_id: None,
            pipeline: "p".into(),
            manifests: 2,
            input_records: 210,
            succeeded: 200,
            failed: 4,
            rejected: 6,
            blank_lines: 1,
            bytes_read: 9999,
            reconciled: true,
            latency: Percentiles::default(),
            created_at_ms: 0,
            finished_at_ms: None,
            error: None,
        };
        let html = render(&ReportInput {
            summary,
            manifests: vec![timing(0, 101, 1000, 100, 5), timing(1, 102, 1000, 100, 50)],
            rate_limit_per_sec: Some(150.0),
            failed_by_status: BTreeMap::from([("HTTP 503".into(), 4)]),
            top_errors: top_messages(
                [
                    "HTTP 503", "HTTP 503", "bad id", "HTTP 503", "HTTP 503", "bad id",
                ]
                .map(String::from),
                10,
            ),
        })
        .unwrap();
        assert!(html.contains("job&lt;1&gt;"));
        assert!(html.contains(r#"<td id="succeeded">200</td>"#));
        assert!(html.contains("every record accounted for once"));
        assert_eq!(html.matches("<svg").count(), 3);
        assert!(html.contains(r#"class="ref""#), "the limit line");
        assert!(html.contains("<td class=\"l\">HTTP 503</td><td>4</td>"));
        // Self-contained: nothing to fetch, nothing to run.
        for outside in ["<script", "src=", "href=", "url("] {
            assert!(!html.contains(outside), "{outside}");
        }
    }
}
