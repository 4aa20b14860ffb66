//! What becomes of one record before any call: blank, rejected (with the reason written to
//! `rejected/`), or a request to send. The worker and `fanout validate --sample` both judge
//! records here, so validate reports exactly the messages a job would.

use crate::config::{InputFormat, PipelineConfig};
use crate::csv_output::CsvLayout;
use crate::framer::{Frame, RecordFramer};
use crate::range::ByteRange;
use crate::record::{BOM, RecordParser, header_line, parse_csv_header};
use crate::request::{ApiRequest, RequestRenderer, compile};

pub enum Verdict {
    /// A line of whitespace only: not a record.
    Blank,
    Reject(String),
    /// The request, and the record's values of the fields `keep` named (as CSV cells).
    Send(ApiRequest, Vec<String>),
}

/// The reason for a record longer than `input.max_record_bytes`.
pub fn oversized(len: u64, max_record_bytes: usize) -> String {
    format!("record of {len} bytes exceeds input.max_record_bytes ({max_record_bytes})")
}

/// Parses and renders one record (without its line terminator) at `offset` of the input.
/// `keep` are the schema slots whose values the caller wants back (CSV results' record
/// columns).
pub fn judge(
    raw: &[u8],
    parser: &mut RecordParser,
    renderer: &RequestRenderer,
    job_id: &str,
    offset: u64,
    keep: &[usize],
) -> Verdict {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Verdict::Blank;
    }
    let values = match parser.parse(raw) {
        Ok(values) => values,
        Err(reason) => return Verdict::Reject(reason),
    };
    match renderer.render(&values, job_id, offset) {
        Ok(request) => Verdict::Send(
            request,
            (keep.iter())
                .map(|&slot| values.get(slot).map(CsvLayout::cell).unwrap_or_default())
                .collect(),
        ),
        Err(reason) => Verdict::Reject(reason),
    }
}

/// The schema slots of the record fields that CSV results show, in
/// [`CsvLayout::record_fields`]' order ([`crate::request::compile`] checked they exist).
pub fn kept_slots(config: &PipelineConfig, parser: &RecordParser) -> Vec<usize> {
    CsvLayout::new(&config.output.columns)
        .record_fields()
        .iter()
        .filter_map(|name| parser.fields().iter().position(|f| &f.name == name))
        .collect()
}

/// A record of a sample that a job would reject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SampleReject {
    /// 1-based line of the file.
    pub line: u64,
    pub offset: u64,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SampleCheck {
    /// Records (blank lines excluded), rejected ones included.
    pub records: u64,
    pub blank_lines: u64,
    pub rejected: Vec<SampleReject>,
}

/// Judges every record of a whole input file as a job would. The error is about the file as a
/// whole (its CSV header) or the config against it.
pub fn check_sample(
    config: &PipelineConfig,
    data: &[u8],
    config_source: &str,
) -> Result<SampleCheck, String> {
    let (data_start, header) = match config.input.format {
        InputFormat::Jsonl => (
            if data.starts_with(BOM) { BOM.len() } else { 0 } as u64,
            None,
        ),
        InputFormat::Csv => {
            let (line, start) = header_line(data, true)
                .ok_or_else(|| "CSV header: no complete line".to_string())?;
            let header = if line.is_empty() {
                Vec::new()
            } else {
                parse_csv_header(line, config.input.delimiter as u8)?
            };
            (start, Some(header))
        }
    };
    let mut check = SampleCheck::default();
    if data_start >= data.len() as u64 {
        return Ok(check);
    }
    let (mut parser, renderer) =
        compile(config, header.as_deref(), config_source).map_err(|e| e.to_string())?;
    let max = config.input.max_record_bytes;
    let range = ByteRange::new(data_start, data.len() as u64);
    let mut framer = match config.input.format {
        InputFormat::Jsonl => RecordFramer::new(range, data_start, max),
        InputFormat::Csv => RecordFramer::new_csv(
            range,
            data_start,
            max,
            config.input.delimiter as u8,
            crate::quote::QState::Record,
        ),
    };
    let mut frames = Vec::new();
    framer.push(&data[framer.read_from() as usize..], &mut frames);
    framer.finish(&mut frames);
    let (mut line, mut counted_to) = (1u64, 0usize);
    for frame in frames {
        let offset = frame.offset();
        line += memchr::memchr_iter(b'\n', &data[counted_to..offset as usize]).count() as u64;
        counted_to = offset as usize;
        let reason = match frame {
            Frame::Oversized { len, .. } => Some(oversized(len, max)),
            Frame::Record { bytes, .. } => {
                match judge(&bytes, &mut parser, &renderer, "validate", offset, &[]) {
                    Verdict::Blank => {
                        check.blank_lines += 1;
                        continue;
                    }
                    Verdict::Reject(reason) => Some(reason),
                    Verdict::Send(..) => None,
                }
            }
        };
        check.records += 1;
        if let Some(reason) = reason {
            check.rejected.push(SampleReject {
                line,
                offset,
                reason,
            });
        }
    }
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(format: &str, fields: &str) -> PipelineConfig {
        PipelineConfig::from_yaml(
            "p.yaml",
            &format!(
                "input: {{format: {format}, max_record_bytes: 40, fields: {fields}}}\nrequest: {{url: 'http://h/x/{{id}}'}}\n"
            ),
        )
        .unwrap()
    }

    #[test]
    fn every_kind_of_bad_csv_record_is_named_with_its_line() {
        let c = config(
            "csv",
            "[{name: id, type: integer, required: true}, {name: name}]",
        );
        let data = b"id,name\n1,a\n2\n3,\"x\"y,z\n\n4,b\xff\nx,y\n,z\n5,aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n6,ok\r\n";
        let check = check_sample(&c, data, "p.yaml").unwrap();
        let got: Vec<(u64, &str)> = check
            .rejected
            .iter()
            .map(|r| (r.line, r.reason.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (3, "expected 2 columns, found 1"),
                (4, "expected 2 columns, found 3"),
                (6, "invalid UTF-8 at byte 3 of the record"),
                (7, "field \"id\": expected an integer, found \"x\""),
                (8, "missing required field \"id\""),
                (9, "record of 51 bytes exceeds input.max_record_bytes (40)"),
            ]
        );
        assert_eq!((check.records, check.blank_lines), (8, 1));
    }

    #[test]
    fn every_kind_of_bad_json_record_is_named_with_its_line() {
        let c = config(
            "jsonl",
            "[{name: id, type: integer, required: true}, {name: name, type: string}]",
        );
        let data = b"\xEF\xBB\xBF{\"id\": 1}\n{\"id\": 2,\n\n{\"id\": \"3\"}\n[4]\n{\"name\": \"x\"}\n{\"id\": 5, \"name\": \"\xc3\"}\n";
        let check = check_sample(&c, data, "p.yaml").unwrap();
        let got: Vec<(u64, String)> = check
            .rejected
            .iter()
            .map(|r| (r.line, r.reason.clone()))
            .collect();
        assert_eq!(got.len(), 5, "{got:?}");
        assert_eq!(got[0].0, 2);
        assert!(
            got[0].1.starts_with("invalid JSON: EOF while parsing"),
            "{got:?}"
        );
        assert_eq!(
            got[1],
            (4, "field \"id\": expected integer, found string".into())
        );
        assert_eq!(got[2], (5, "expected a JSON object, found array".into()));
        assert_eq!(got[3], (6, "missing required field \"id\"".into()));
        assert_eq!(got[4], (7, "invalid UTF-8 at byte 19 of the record".into()));
        assert_eq!((check.records, check.blank_lines), (6, 1));
    }
}
