//! The lines written to results/, failed/ and rejected/, and their JSON Lines files.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::ports::CallOutcome;
use crate::response::KeptBody;

/// A record whose call succeeded (a status of `client.success_statuses`, 2xx by default).
#[derive(Debug, Serialize)]
pub struct ResultLine {
    /// Byte offset of the record in the input object: its identity within the job.
    pub offset: u64,
    pub status: u16,
    pub latency_ms: f64,
    pub attempts: u32,
    /// The response body as JSON when it is JSON (and complete), otherwise as text; only the
    /// part `response.keep` points at when it is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_text: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub response_truncated: bool,
    /// The response headers of `response.keep_headers` that the answer had (lowercase names;
    /// repeated headers joined with ", ").
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Served from the job's response cache (`cache.enabled`): an identical request of another
    /// record was sent, and this is its answer.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
    /// The record's values of the record fields that CSV results show
    /// ([`crate::csv_output::CsvLayout::record_fields`]); empty otherwise, never serialized.
    #[serde(skip)]
    pub fields: Vec<String>,
}

/// A record whose call failed after all attempts; carries the record for replay.
#[derive(Debug, Serialize)]
pub struct FailedLine {
    pub offset: u64,
    pub record: String,
    pub status: Option<u16>,
    pub error: String,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_text: Option<String>,
}

/// A JSON value a result keeps: the answer's own bytes when it is kept whole (checked to be JSON,
/// written back as they came: no tree is built for the most common case), or a part of it.
#[derive(Debug, Clone)]
pub enum Json {
    Raw(Box<RawValue>),
    Value(Value),
}

impl Json {
    /// As a value (parsed again when raw).
    pub fn to_value(&self) -> Value {
        match self {
            Json::Value(v) => v.clone(),
            Json::Raw(raw) => serde_json::from_str(raw.get()).unwrap_or(Value::Null),
        }
    }
}

impl PartialEq<Value> for Json {
    fn eq(&self, other: &Value) -> bool {
        &self.to_value() == other
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Raw(raw) => raw.serialize(s),
            Json::Value(v) => v.serialize(s),
        }
    }
}

/// A record that was never sent: it could not be parsed or rendered.
#[derive(Debug, Serialize)]
pub struct RejectedLine {
    pub offset: u64,
    pub reason: String,
    /// The record as text (invalid UTF-8 replaced); None when it was too long to keep.
    pub record: Option<String>,
    pub record_bytes: u64,
}

fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 100_000.0).round() / 100.0
}

impl ResultLine {
    /// The kept response as a value (parsed again when kept raw).
    pub fn response_value(&self) -> Option<Value> {
        self.response.as_ref().map(Json::to_value)
    }

    /// The whole response as received (see [`KeptBody::as_received`]).
    pub fn new(offset: u64, out: &CallOutcome) -> Self {
        Self::with_body(offset, out, KeptBody::as_received(out), BTreeMap::new())
    }

    /// With the part of the body and the headers that the pipeline keeps
    /// ([`crate::response::ResponseShaper`]).
    pub fn with_body(
        offset: u64,
        out: &CallOutcome,
        body: KeptBody,
        headers: BTreeMap<String, String>,
    ) -> Self {
        let (response, response_text, response_truncated) = match body {
            KeptBody::Empty => (None, None, false),
            KeptBody::Json(v) => (Some(Json::Value(v)), None, false),
            KeptBody::Raw(raw) => (Some(Json::Raw(raw)), None, false),
            KeptBody::Text(t) => (None, Some(t), false),
            KeptBody::Truncated(t) => (None, Some(t), true),
        };
        Self {
            offset,
            status: out.status.unwrap_or_default(),
            latency_ms: ms(out.latency),
            attempts: out.attempts,
            response,
            response_text,
            response_truncated,
            headers,
            cached: false,
            fields: Vec::new(),
        }
    }
}

impl FailedLine {
    pub fn new(offset: u64, record: &[u8], out: &CallOutcome) -> Self {
        Self {
            offset,
            record: String::from_utf8_lossy(record).into_owned(),
            status: out.status,
            error: out
                .error
                .clone()
                .unwrap_or_else(|| format!("HTTP {}", out.status.unwrap_or_default())),
            attempts: out.attempts,
            response_text: (!out.body.is_empty())
                .then(|| String::from_utf8_lossy(&out.body).into_owned()),
        }
    }
}

/// The Content-Type of a JSON Lines part (results, failed, rejected).
pub const JSONL_CONTENT_TYPE: &str = "application/x-ndjson";

/// Serializes lines sorted by offset into a JSON Lines body: deterministic for a given input.
pub fn to_jsonl<T: Serialize>(mut lines: Vec<(u64, T)>) -> Vec<u8> {
    lines.sort_by_key(|(offset, _)| *offset);
    let mut out = Vec::new();
    for (_, line) in lines {
        serde_json::to_writer(&mut out, &line).expect("output lines serialize");
        out.push(b'\n');
    }
    out
}
