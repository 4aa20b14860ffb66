//! Reader throughput (framing + parsing, MB/s) for CSV and JSON Lines, and request rendering
//! (records/s). Run with `make bench`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fanout_core::config::PipelineConfig;
use fanout_core::framer::{Frame, RecordFramer};
use fanout_core::quote::QState;
use fanout_core::range::ByteRange;
use fanout_core::request::compile;

const RECORDS: usize = 20_000;

fn csv_input() -> Vec<u8> {
    let mut s = String::from("id,email,name,amount\n");
    for i in 0..RECORDS {
        s.push_str(&format!(
            "{i},user{i}@example.com,\"Doe, Jane {i}\",{}.{:02}\n",
            i % 1000,
            i % 100
        ));
    }
    s.into_bytes()
}

fn jsonl_input() -> Vec<u8> {
    let mut s = String::new();
    for i in 0..RECORDS {
        s.push_str(&format!("{{\"id\":{i},\"email\":\"user{i}@example.com\",\"name\":\"Doe, Jane {i}\",\"amount\":{}.5}}\n", i % 1000));
    }
    s.into_bytes()
}

fn config(format: &str) -> PipelineConfig {
    let yaml = format!(
        "input:\n  format: {format}\n  fields: [{{name: id, type: integer, required: true}}, {{name: email}}, {{name: name}}, {{name: amount, type: number}}]\nrequest:\n  method: POST\n  url: 'https://api.example.com/v1/users/{{id}}?email={{email}}'\n  headers: {{X-Source: bench}}\n  body: {{id: '{{id}}', name: '{{name}}', amount: '{{amount}}'}}\n"
    );
    PipelineConfig::from_yaml("bench.yaml", &yaml).expect("bench config")
}

/// Frames and parses the whole input in 64 KiB chunks, as the worker does with an S3 stream.
fn read_all(data: &[u8], data_start: u64, format: &str) -> usize {
    let header: Option<Vec<String>> =
        (format == "csv").then(|| ["id", "email", "name", "amount"].map(String::from).to_vec());
    let (mut parser, _) = compile(&config(format), header.as_deref(), "bench.yaml").unwrap();
    let range = ByteRange::new(data_start, data.len() as u64);
    // CSV is framed quote-aware (tracking the range's quote transitions), as the worker does.
    let mut framer = if format == "csv" {
        RecordFramer::new_csv(range, data_start, 1 << 20, b',', QState::Record)
    } else {
        RecordFramer::new(range, data_start, 1 << 20)
    };
    let mut frames = Vec::new();
    let mut parsed = 0;
    for chunk in data[data_start as usize..].chunks(64 * 1024) {
        framer.push(chunk, &mut frames);
        for f in frames.drain(..) {
            if let Frame::Record { bytes, .. } = f {
                parsed += usize::from(parser.parse(&bytes).is_ok());
            }
        }
    }
    framer.finish(&mut frames);
    parsed + frames.len()
}

fn reader(c: &mut Criterion) {
    let mut group = c.benchmark_group("reader");
    let csv = csv_input();
    let header_end = csv.iter().position(|b| *b == b'\n').unwrap() as u64 + 1;
    let jsonl = jsonl_input();
    group.throughput(Throughput::Bytes(csv.len() as u64));
    group.bench_function(BenchmarkId::new("csv", RECORDS), |b| {
        b.iter(|| assert_eq!(read_all(&csv, header_end, "csv"), RECORDS))
    });
    group.throughput(Throughput::Bytes(jsonl.len() as u64));
    group.bench_function(BenchmarkId::new("jsonl", RECORDS), |b| {
        b.iter(|| assert_eq!(read_all(&jsonl, 0, "jsonl"), RECORDS))
    });
    group.finish();
}

fn rendering(c: &mut Criterion) {
    let header = ["id", "email", "name", "amount"].map(String::from).to_vec();
    let (mut parser, renderer) = compile(&config("csv"), Some(&header), "bench.yaml").unwrap();
    let values: Vec<_> = (0..1000)
        .map(|i| {
            parser
                .parse(format!("{i},u{i}@example.com,\"Doe, J / ?#\",{i}.5").as_bytes())
                .unwrap()
        })
        .collect();
    let mut group = c.benchmark_group("render");
    group.throughput(Throughput::Elements(values.len() as u64));
    group.bench_function("request", |b| {
        b.iter(|| {
            for (i, v) in values.iter().enumerate() {
                std::hint::black_box(
                    renderer
                        .render(v, "j-0123456789abcdef0123", i as u64)
                        .unwrap(),
                );
            }
        })
    });
    group.finish();
}

criterion_group!(benches, reader, rendering);
criterion_main!(benches);
