//! Turning one framed line into typed field values, or a reason to reject it.

use serde_json::{Map, Value};

use crate::config::{FieldType, InputFormat, Quoting};

/// Where a schema field's value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    CsvColumn(usize),
    JsonKey(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaField {
    pub name: String,
    pub ty: FieldType,
    pub required: bool,
    pub source: Source,
}

/// Parses records of one input against a field schema. Holds a CSV reader so that parsing does
/// not rebuild it per record.
#[derive(Debug)]
pub struct RecordParser {
    format: InputFormat,
    fields: Vec<SchemaField>,
    csv: csv_core::Reader,
    delimiter: u8,
    quoting: Quoting,
    columns: usize,
    /// Scratch buffers reused across CSV records.
    out: Vec<u8>,
    ends: Vec<usize>,
}

impl RecordParser {
    /// `columns` is the CSV header's width (ignored for JSON Lines).
    pub fn new(
        format: InputFormat,
        fields: Vec<SchemaField>,
        delimiter: u8,
        columns: usize,
    ) -> Self {
        let csv = csv_core::ReaderBuilder::new().delimiter(delimiter).build();
        Self {
            format,
            fields,
            csv,
            delimiter,
            quoting: Quoting::Lenient,
            columns,
            out: Vec::new(),
            ends: Vec::new(),
        }
    }

    /// Judges CSV quotes strictly (RFC 4180) instead of as Python's csv module does.
    pub fn with_quoting(mut self, quoting: Quoting) -> Self {
        self.quoting = quoting;
        self
    }

    pub fn fields(&self) -> &[SchemaField] {
        &self.fields
    }

    /// Parses one record (without its line terminator) into one value per schema field.
    pub fn parse(&mut self, line: &[u8]) -> Result<Vec<Value>, String> {
        let text = std::str::from_utf8(line)
            .map_err(|e| format!("invalid UTF-8 at byte {} of the record", e.valid_up_to()))?;
        match self.format {
            InputFormat::Csv => self.parse_csv(text),
            InputFormat::Jsonl => self.parse_json(text),
        }
    }

    fn parse_csv(&mut self, text: &str) -> Result<Vec<Value>, String> {
        if self.quoting == Quoting::Strict {
            strict_quotes(text.as_bytes(), self.delimiter)?;
        }
        let columns = split_csv_line(
            &mut self.csv,
            text.as_bytes(),
            &mut self.out,
            &mut self.ends,
        )?;
        if columns.len() != self.columns {
            return Err(format!(
                "expected {} columns, found {}",
                self.columns,
                columns.len()
            ));
        }
        let mut values = Vec::with_capacity(self.fields.len());
        for f in &self.fields {
            let Source::CsvColumn(i) = f.source else {
                unreachable!("CSV schema with a JSON source")
            };
            values.push(typed_from_text(f, columns[i])?);
        }
        Ok(values)
    }

    fn parse_json(&self, text: &str) -> Result<Vec<Value>, String> {
        let object: Map<String, Value> = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            Ok(other) => {
                return Err(format!(
                    "expected a JSON object, found {}",
                    json_type(&other)
                ));
            }
            Err(e) => return Err(format!("invalid JSON: {e}")),
        };
        self.fields
            .iter()
            .map(|f| {
                let Source::JsonKey(key) = &f.source else {
                    unreachable!("JSON schema with a CSV source")
                };
                typed_from_json(f, object.get(key))
            })
            .collect()
    }
}

/// Checks one CSV record's quotes as RFC 4180 does (`input.quoting: strict`): a quote only opens
/// a field, a closing quote is followed by a delimiter or the record's end, and every quoted
/// field is closed.
fn strict_quotes(record: &[u8], delim: u8) -> Result<(), String> {
    use crate::quote::{QState, step};
    if memchr::memchr(b'"', record).is_none() {
        return Ok(());
    }
    let mut s = QState::Record;
    for (i, &b) in record.iter().enumerate() {
        let next = step(s, b, delim);
        match s {
            QState::Unquoted if b == b'"' => {
                return Err(format!(
                    "quote inside an unquoted field at byte {i} of the record (input.quoting: strict)"
                ));
            }
            QState::QuoteInQuoted if next == QState::Unquoted => {
                return Err(format!(
                    "{:?} after a closing quote at byte {i} of the record (input.quoting: strict)",
                    b as char
                ));
            }
            _ => {}
        }
        s = next;
    }
    if s == QState::Quoted {
        return Err("unterminated quoted field (input.quoting: strict)".into());
    }
    Ok(())
}

/// Splits one CSV record into its unescaped fields, as Python's csv module does: quoted fields may
/// hold delimiters, doubled quotes and line breaks; a quote inside an unquoted field is a literal.
fn split_csv_line<'a>(
    reader: &mut csv_core::Reader,
    line: &[u8],
    out: &'a mut Vec<u8>,
    ends: &mut Vec<usize>,
) -> Result<Vec<&'a str>, String> {
    reader.reset();
    out.clear();
    out.resize(line.len() + 1, 0);
    ends.clear();
    ends.resize(line.len() + 1, 0);
    let (mut input, mut nout, mut nend) = (line, 0, 0);
    loop {
        let (result, read, written, ended) =
            reader.read_record(input, &mut out[nout..], &mut ends[nend..]);
        input = &input[read..];
        nout += written;
        nend += ended;
        match result {
            // Feeding an empty slice tells the reader the record ends here.
            csv_core::ReadRecordResult::InputEmpty => {}
            csv_core::ReadRecordResult::Record | csv_core::ReadRecordResult::End => break,
            other => return Err(format!("CSV parser error: {other:?}")),
        }
    }
    let text = std::str::from_utf8(&out[..nout]).map_err(|_| "invalid UTF-8".to_string())?;
    let mut fields = Vec::with_capacity(nend.max(1));
    let mut start = 0;
    for &end in &ends[..nend] {
        fields.push(&text[start..end]);
        start = end;
    }
    if fields.is_empty() {
        fields.push("");
    }
    Ok(fields)
}

/// The UTF-8 byte order mark, skipped before the first record or header.
pub const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Finds the header row in an object's first bytes: the line (without BOM and line terminator) and
/// the offset of the first data byte. None when `prefix` holds no complete line and is not the
/// whole object (the caller reads more, or gives up at its limit).
pub fn header_line(prefix: &[u8], whole_object: bool) -> Option<(&[u8], u64)> {
    let bom = if prefix.starts_with(BOM) {
        BOM.len()
    } else {
        0
    };
    let body = &prefix[bom..];
    let (line, data_start) = match memchr::memchr(b'\n', body) {
        Some(i) => (&body[..i], (bom + i + 1) as u64),
        None if whole_object => (body, prefix.len() as u64),
        None => return None,
    };
    Some((line.strip_suffix(b"\r").unwrap_or(line), data_start))
}

/// Parses a CSV header line into column names.
pub fn parse_csv_header(line: &[u8], delimiter: u8) -> Result<Vec<String>, String> {
    let text = std::str::from_utf8(line)
        .map_err(|e| format!("header: invalid UTF-8 at byte {}", e.valid_up_to()))?;
    let mut reader = csv_core::ReaderBuilder::new().delimiter(delimiter).build();
    let (mut out, mut ends) = (Vec::new(), Vec::new());
    let names: Vec<String> = split_csv_line(&mut reader, text.as_bytes(), &mut out, &mut ends)
        .map_err(|e| format!("header: {e}"))?
        .into_iter()
        .map(str::to_string)
        .collect();
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            return Err(format!("header: duplicate column {n:?}"));
        }
    }
    Ok(names)
}

fn typed_from_text(f: &SchemaField, raw: &str) -> Result<Value, String> {
    if raw.is_empty() {
        return match (f.required, f.ty) {
            (true, _) => Err(format!("missing required field {:?}", f.name)),
            (false, FieldType::String) => Ok(Value::String(String::new())),
            (false, _) => Ok(Value::Null),
        };
    }
    let wrong = |what: &str| format!("field {:?}: expected {what}, found {raw:?}", f.name);
    Ok(match f.ty {
        FieldType::String | FieldType::Any => Value::String(raw.to_string()),
        FieldType::Integer => {
            Value::from(raw.trim().parse::<i64>().map_err(|_| wrong("an integer"))?)
        }
        FieldType::Number => {
            let n: f64 = raw.trim().parse().map_err(|_| wrong("a number"))?;
            Value::from(serde_json::Number::from_f64(n).ok_or_else(|| wrong("a finite number"))?)
        }
        FieldType::Boolean => match raw.trim().to_ascii_lowercase().as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(wrong("true or false")),
        },
    })
}

fn typed_from_json(f: &SchemaField, value: Option<&Value>) -> Result<Value, String> {
    let value = match value {
        None | Some(Value::Null) if f.required => {
            return Err(format!("missing required field {:?}", f.name));
        }
        None | Some(Value::Null) => return Ok(Value::Null),
        Some(v) => v,
    };
    let ok = match f.ty {
        FieldType::Any => true,
        FieldType::String => value.is_string(),
        FieldType::Integer => value.is_i64() || value.is_u64(),
        FieldType::Number => value.is_number(),
        FieldType::Boolean => value.is_boolean(),
    };
    if !ok {
        return Err(format!(
            "field {:?}: expected {}, found {}",
            f.name,
            f.ty.name(),
            json_type(value)
        ));
    }
    Ok(value.clone())
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn csv_parser() -> RecordParser {
        let fields = vec![
            SchemaField {
                name: "id".into(),
                ty: FieldType::Integer,
                required: true,
                source: Source::CsvColumn(0),
            },
            SchemaField {
                name: "name".into(),
                ty: FieldType::String,
                required: false,
                source: Source::CsvColumn(2),
            },
        ];
        RecordParser::new(InputFormat::Csv, fields, b',', 3)
    }

    fn json_parser() -> RecordParser {
        let fields = vec![
            SchemaField {
                name: "id".into(),
                ty: FieldType::Integer,
                required: true,
                source: Source::JsonKey("id".into()),
            },
            SchemaField {
                name: "tags".into(),
                ty: FieldType::Any,
                required: false,
                source: Source::JsonKey("tags".into()),
            },
        ];
        RecordParser::new(InputFormat::Jsonl, fields, b',', 0)
    }

    #[test]
    fn csv_quoting_and_types() {
        let mut p = csv_parser();
        assert_eq!(
            p.parse(r#"7,x,"Doe, ""J"" é""#.as_bytes()).unwrap(),
            vec![json!(7), json!(r#"Doe, "J" é"#)]
        );
        assert_eq!(p.parse(b"8,,").unwrap(), vec![json!(8), json!("")]);
    }

    #[test]
    fn csv_rejections_say_why() {
        let mut p = csv_parser();
        assert_eq!(p.parse(b"1,2").unwrap_err(), "expected 3 columns, found 2");
        assert_eq!(
            p.parse(b"abc,1,2").unwrap_err(),
            "field \"id\": expected an integer, found \"abc\""
        );
        assert_eq!(
            p.parse(b",1,2").unwrap_err(),
            "missing required field \"id\""
        );
        // Lenient: an open quote runs to the record's end, `a"b` is a literal.
        assert_eq!(
            p.parse(b"1,\"open,2").unwrap_err(),
            "expected 3 columns, found 2"
        );
        assert_eq!(
            p.parse(b"1,a\"b,\"c\nd\"e").unwrap(),
            vec![json!(1), json!("c\nde")]
        );
        let mut strict = csv_parser().with_quoting(Quoting::Strict);
        assert_eq!(
            strict.parse(b"1,\"open,2").unwrap_err(),
            "unterminated quoted field (input.quoting: strict)"
        );
        assert_eq!(
            strict.parse(b"1,a\"b,c").unwrap_err(),
            "quote inside an unquoted field at byte 3 of the record (input.quoting: strict)"
        );
        assert_eq!(
            strict.parse(b"1,\"a\"b,c").unwrap_err(),
            "'b' after a closing quote at byte 5 of the record (input.quoting: strict)"
        );
        assert_eq!(
            strict.parse(b"1,\"a\r\n\"\"b\",c").unwrap(),
            vec![json!(1), json!("c")]
        );
        assert_eq!(
            p.parse(b"1,\xff,2").unwrap_err(),
            "invalid UTF-8 at byte 2 of the record"
        );
    }

    #[test]
    fn json_records() {
        let mut p = json_parser();
        assert_eq!(
            p.parse(br#"{"id": 3, "tags": ["a"]}"#).unwrap(),
            vec![json!(3), json!(["a"])]
        );
        assert_eq!(
            p.parse(br#"{"id": 3}"#).unwrap(),
            vec![json!(3), Value::Null]
        );
        assert!(
            p.parse(br#"{"id": 3"#)
                .unwrap_err()
                .starts_with("invalid JSON")
        );
        assert_eq!(
            p.parse(br#"[1]"#).unwrap_err(),
            "expected a JSON object, found array"
        );
        assert_eq!(
            p.parse(br#"{"tags": 1}"#).unwrap_err(),
            "missing required field \"id\""
        );
        assert_eq!(
            p.parse(br#"{"id": "x"}"#).unwrap_err(),
            "field \"id\": expected integer, found string"
        );
    }

    #[test]
    fn header_line_skips_bom_and_crlf() {
        assert_eq!(
            header_line(b"\xEF\xBB\xBFa,b\r\n1,2\n", false),
            Some((&b"a,b"[..], 8))
        );
        assert_eq!(header_line(b"a,b", true), Some((&b"a,b"[..], 3)));
        assert_eq!(header_line(b"a,b", false), None);
    }

    #[test]
    fn header_parsing() {
        assert_eq!(
            parse_csv_header(b"a,\"b,c\",d", b',').unwrap(),
            vec!["a", "b,c", "d"]
        );
        assert_eq!(parse_csv_header(b"a;b", b';').unwrap(), vec!["a", "b"]);
        assert!(
            parse_csv_header(b"a,a", b',')
                .unwrap_err()
                .contains("duplicate column")
        );
    }
}
