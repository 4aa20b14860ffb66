//! CSV results (`output.format: csv`): the columns a pipeline selects, one row per result.
//!
//! Each results part is a CSV file of its own (RFC 4180: a header row, CRLF-free `\n` rows,
//! fields quoted when they hold a comma, a quote or a line break), so every part loads alone into
//! a spreadsheet, Python's csv module or a warehouse. The first column is always `offset`, the
//! record's identity within the job: replay finds a part's done records by it, and keys and the
//! exactly-once rules are those of JSON Lines results. failed/ and rejected/ stay JSON Lines (they
//! carry the record for replay).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::output::{Json, ResultLine};

/// The format of results/ parts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    #[default]
    Jsonl,
    Csv,
}

impl OutputFormat {
    /// The Content-Type of a results part in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            OutputFormat::Jsonl => crate::output::JSONL_CONTENT_TYPE,
            OutputFormat::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// One column as the config writes it: `"record.id"`, or `{name: id, value: record.id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ColumnSpec {
    Value(String),
    Named { name: String, value: String },
}

/// Where a column's values come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `record.<field>`: a field of the record (text as it is, other values as JSON).
    Record(String),
    /// `status`, `attempts`, `latency_ms`, `cached`.
    Status,
    Attempts,
    LatencyMs,
    Cached,
    /// `response`: the kept response (JSON text, or the text kept); `response/<pointer>`: the
    /// part at that JSON pointer (empty when it has none).
    Response(String),
    /// `header.<name>`: a header kept by `response.keep_headers`.
    Header(String),
}

impl ColumnSpec {
    fn value(&self) -> &str {
        match self {
            ColumnSpec::Value(v) | ColumnSpec::Named { value: v, .. } => v,
        }
    }

    /// The column's name and source, or why its value names nothing.
    pub fn parse(&self) -> Result<(String, Source), String> {
        let value = self.value();
        let source = if let Some(field) = value.strip_prefix("record.") {
            (!field.is_empty()).then(|| Source::Record(field.to_string()))
        } else if let Some(name) = value.strip_prefix("header.") {
            (!name.is_empty()).then(|| Source::Header(name.to_ascii_lowercase()))
        } else if value == "response" || value.starts_with("response/") {
            Some(Source::Response(value["response".len()..].to_string()))
        } else {
            match value {
                "status" => Some(Source::Status),
                "attempts" => Some(Source::Attempts),
                "latency_ms" => Some(Source::LatencyMs),
                "cached" => Some(Source::Cached),
                _ => None,
            }
        };
        let source = source.ok_or_else(|| {
            format!(
                "{value:?} names no value: use record.<field>, response, response/<JSON pointer>, \
                 header.<name>, status, attempts, latency_ms or cached"
            )
        })?;
        if let Source::Response(pointer) = &source
            && let Some(problem) = crate::response::pointer_problem(pointer)
        {
            return Err(problem);
        }
        let name = match self {
            ColumnSpec::Named { name, .. } => name.clone(),
            ColumnSpec::Value(v) => v
                .rsplit(['.', '/'])
                .next()
                .filter(|n| !n.is_empty())
                .unwrap_or(v)
                .to_string(),
        };
        Ok((name, source))
    }
}

/// The columns of CSV results, ready to write rows.
#[derive(Clone, Debug)]
pub struct CsvLayout {
    columns: Vec<(String, Source)>,
    /// The record fields the columns use, in order: what the reader keeps of each record.
    record_fields: Vec<String>,
}

impl CsvLayout {
    /// From validated columns (a column that does not parse is skipped: validation said why).
    pub fn new(columns: &[ColumnSpec]) -> Self {
        let columns: Vec<(String, Source)> =
            columns.iter().filter_map(|c| c.parse().ok()).collect();
        let mut record_fields = Vec::new();
        for (_, source) in &columns {
            if let Source::Record(f) = source
                && !record_fields.contains(f)
            {
                record_fields.push(f.clone());
            }
        }
        Self {
            columns,
            record_fields,
        }
    }

    /// The record fields a row needs, in the order [`CsvLayout::row`] takes their values.
    pub fn record_fields(&self) -> &[String] {
        &self.record_fields
    }

    /// A record field's value as a CSV cell: text as it is, null as nothing, anything else as
    /// its JSON.
    pub fn cell(value: &Value) -> String {
        match value {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }

    pub fn header(&self) -> Vec<u8> {
        let mut out = Vec::new();
        write_row(
            &mut out,
            std::iter::once("offset").chain(self.columns.iter().map(|(n, _)| n.as_str())),
        );
        out
    }

    /// One result's row; `fields` are its record's values of [`CsvLayout::record_fields`].
    pub fn row(&self, line: &ResultLine, fields: &[String]) -> Vec<u8> {
        let cells: Vec<String> = std::iter::once(line.offset.to_string())
            .chain(self.columns.iter().map(|(_, source)| {
                match source {
                    Source::Record(f) => (self.record_fields.iter().position(|r| r == f))
                        .and_then(|i| fields.get(i).cloned())
                        .unwrap_or_default(),
                    Source::Status => line.status.to_string(),
                    Source::Attempts => line.attempts.to_string(),
                    Source::LatencyMs => line.latency_ms.to_string(),
                    Source::Cached => line.cached.to_string(),
                    Source::Header(name) => line.headers.get(name).cloned().unwrap_or_default(),
                    Source::Response(pointer) => match (&line.response, &line.response_text) {
                        (Some(Json::Raw(raw)), _) if pointer.is_empty() => raw.get().to_string(),
                        (Some(v), _) => (v.to_value().pointer(pointer))
                            .map(Self::cell)
                            .unwrap_or_default(),
                        (None, Some(text)) if pointer.is_empty() => text.clone(),
                        _ => String::new(),
                    },
                }
            }))
            .collect();
        let mut out = Vec::new();
        write_row(&mut out, cells.iter().map(String::as_str));
        out
    }

    /// A results part: the header, then the rows by offset.
    pub fn part(&self, mut rows: Vec<(u64, Vec<u8>)>) -> Vec<u8> {
        if rows.is_empty() {
            return Vec::new();
        }
        rows.sort_by_key(|(offset, _)| *offset);
        let mut out = self.header();
        for (_, row) in rows {
            out.extend_from_slice(&row);
        }
        out
    }
}

/// The rows of a CSV results part (header skipped), each with its offset (its first field) and
/// its bytes as written, so a replay can write them back unchanged.
pub fn rows_of_part(body: &[u8]) -> Result<Vec<(u64, Vec<u8>)>, String> {
    let mut reader = csv_core::Reader::new();
    let (mut rows, mut at, mut first) = (Vec::new(), 0usize, true);
    let (mut out, mut ends) = (vec![0u8; 4096], vec![0usize; 64]);
    while at < body.len() {
        let start = at;
        let (mut out_len, mut fields) = (0usize, 0usize);
        loop {
            let (result, read, written, ended) =
                reader.read_record(&body[at..], &mut out[out_len..], &mut ends[fields..]);
            at += read;
            out_len += written;
            fields += ended;
            match result {
                csv_core::ReadRecordResult::OutputFull => out.resize(out.len() * 2, 0),
                csv_core::ReadRecordResult::OutputEndsFull => ends.resize(ends.len() * 2, 0),
                csv_core::ReadRecordResult::InputEmpty if at < body.len() => {}
                _ => break,
            }
        }
        if fields == 0 {
            continue;
        }
        let offset_text = std::str::from_utf8(&out[..ends[0]]).unwrap_or_default();
        if std::mem::take(&mut first) {
            if offset_text != "offset" {
                return Err(format!(
                    "the header's first column is {offset_text:?}, not offset"
                ));
            }
            continue;
        }
        let offset = offset_text
            .parse::<u64>()
            .map_err(|_| format!("a row's offset is {offset_text:?}"))?;
        rows.push((offset, body[start..at].to_vec()));
    }
    Ok(rows)
}

/// Writes cells as one CSV row, quoting a cell that holds a comma, a quote, CR or LF.
fn write_row<'a>(out: &mut Vec<u8>, cells: impl Iterator<Item = &'a str>) {
    for (i, cell) in cells.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if cell.contains([',', '"', '\r', '\n']) {
            out.push(b'"');
            for b in cell.bytes() {
                if b == b'"' {
                    out.push(b'"');
                }
                out.push(b);
            }
            out.push(b'"');
        } else {
            out.extend_from_slice(cell.as_bytes());
        }
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    fn layout(yaml: &str) -> CsvLayout {
        let specs: Vec<ColumnSpec> = serde_norway::from_str(yaml).unwrap();
        CsvLayout::new(&specs)
    }

    fn line(offset: u64, response: Option<Value>, text: Option<&str>) -> ResultLine {
        ResultLine {
            offset,
            status: 200,
            latency_ms: 12.5,
            attempts: 2,
            response: response.map(Json::Value),
            response_text: text.map(str::to_string),
            response_truncated: false,
            headers: BTreeMap::from([("etag".to_string(), "\"v1\"".to_string())]),
            cached: false,
            fields: Vec::new(),
        }
    }

    #[test]
    fn columns_name_their_values() {
        let l = layout(
            "[record.id, {name: full name, value: record.name}, response/data/score, \
             header.ETag, status, attempts, latency_ms, cached, response]",
        );
        assert_eq!(
            String::from_utf8(l.header()).unwrap(),
            "offset,id,full name,score,ETag,status,attempts,latency_ms,cached,response\n"
        );
        assert_eq!(l.record_fields(), ["id", "name"]);
        let row = l.row(
            &line(40, Some(json!({"data": {"score": 0.5}})), None),
            &["7".into(), "O'Neil, \"Jo\"\nJr".into()],
        );
        assert_eq!(
            String::from_utf8(row).unwrap(),
            "40,7,\"O'Neil, \"\"Jo\"\"\nJr\",0.5,\"\"\"v1\"\"\",200,2,12.5,false,\"{\"\"data\"\":{\"\"score\"\":0.5}}\"\n"
        );
        // A text answer: the whole response as text, nothing at a pointer.
        let row = l.row(&line(41, None, Some("plain")), &["8".into(), "x".into()]);
        assert!(String::from_utf8(row).unwrap().ends_with(",plain\n"));
    }

    #[test]
    fn a_value_naming_nothing_says_what_may_be_named() {
        for bad in ["record.", "body", "response.x", "header.", "response/a~2"] {
            let spec = ColumnSpec::Value(bad.into());
            assert!(spec.parse().is_err(), "{bad}");
        }
        assert!(
            ColumnSpec::Value("body".into())
                .parse()
                .unwrap_err()
                .contains("record.<field>")
        );
    }

    #[test]
    fn a_part_reads_back_row_by_row_with_its_offsets() {
        let l = layout("[record.name, response]");
        let rows = vec![
            (
                90,
                l.row(&line(90, Some(json!("b")), None), &["two\nlines".into()]),
            ),
            (
                3,
                l.row(&line(3, Some(json!({"a": "x,y"})), None), &["one".into()]),
            ),
        ];
        let part = l.part(rows.clone());
        assert!(part.starts_with(b"offset,name,response\n"));
        let back = rows_of_part(&part).unwrap();
        assert_eq!(back.iter().map(|(o, _)| *o).collect::<Vec<_>>(), [3, 90]);
        // Written back unchanged.
        let mut again = l.header();
        for (_, row) in &back {
            again.extend_from_slice(row);
        }
        assert_eq!(again, part);
        assert!(l.part(Vec::new()).is_empty());
        assert!(
            rows_of_part(b"id,x\n1,2\n")
                .unwrap_err()
                .contains("not offset")
        );
    }
}
