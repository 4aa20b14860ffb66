//! Result serialisation (records/s): an API answer shaped into its result line
//! ([`ResponseShaper::shape`]), then a part's lines written as JSON Lines ([`to_jsonl`]) or as CSV
//! rows ([`CsvLayout`]). Run with `make bench`.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fanout_core::config::ResponseConfig;
use fanout_core::csv_output::{ColumnSpec, CsvLayout};
use fanout_core::output::to_jsonl;
use fanout_core::ports::CallOutcome;
use fanout_core::response::{ResponseShaper, Shaped};

const LINES: usize = 1000;

/// An answer like the mock API's echo of the demo's request (about 250 bytes of JSON).
fn answers() -> Vec<CallOutcome> {
    (0..LINES)
        .map(|i| CallOutcome {
            status: Some(200),
            body: format!(
                r#"{{"ok":true,"method":"POST","path":"/v1/users/{i}/score","query":"email=user{i}%40example.com","key":"j-0123456789abcdef0123-{i}","body_len":48,"echo":{{"id":{i},"name":"Doe, Jane {i}","amount":{i}.5}}}}"#
            )
            .into(),
            latency: Duration::from_micros(1500),
            attempts: 1,
            ..CallOutcome::default()
        })
        .collect()
}

fn serialisation(c: &mut Criterion) {
    let answers = answers();
    let mut group = c.benchmark_group("results");
    group.throughput(Throughput::Elements(LINES as u64));
    for (name, yaml) in [("jsonl", "{}"), ("jsonl_keep", "{keep: /echo}")] {
        let config: ResponseConfig = serde_norway::from_str(yaml).unwrap();
        let shaper = ResponseShaper::from_config(&config);
        group.bench_function(name, |b| {
            b.iter(|| {
                let lines: Vec<_> = (answers.iter().enumerate())
                    .map(|(i, out)| match shaper.shape(i as u64, b"record", out) {
                        Shaped::Result(line) => (i as u64, line),
                        Shaped::Failed(f) => panic!("{f:?}"),
                    })
                    .collect();
                std::hint::black_box(to_jsonl(lines))
            })
        });
    }
    let shaper = ResponseShaper::default();
    let columns: Vec<ColumnSpec> =
        serde_norway::from_str("[record.id, response/echo/name, status, latency_ms]").unwrap();
    let layout = CsvLayout::new(&columns);
    group.bench_function("csv", |b| {
        b.iter(|| {
            let rows = (answers.iter().enumerate())
                .map(|(i, out)| match shaper.shape(i as u64, b"record", out) {
                    Shaped::Result(line) => (i as u64, layout.row(&line, &[i.to_string()])),
                    Shaped::Failed(f) => panic!("{f:?}"),
                })
                .collect();
            std::hint::black_box(layout.part(rows))
        })
    });
    group.finish();
}

criterion_group!(benches, serialisation);
criterion_main!(benches);
