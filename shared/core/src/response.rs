//! What an API's answer means and what of it is kept.
//!
//! Two ideas, both from the pipeline config:
//! - [`StatusRules`] (`client.success_statuses`, `client.retry_statuses`,
//!   `client.permanent_statuses`): which statuses are a success, which a later attempt may fix,
//!   and which are final. The client retries by them; a status that is neither a success nor
//!   retried is a permanent failure, sent once.
//! - [`ResponseShaper`] (the `response` section): a successful answer's body checked against
//!   what the pipeline expects (JSON, text, anything), narrowed to a JSON pointer, and the
//!   response headers kept by name. A body that is not what was expected fails its record with
//!   the reason; it never stops the job.

use std::collections::BTreeMap;
use std::fmt;

use http::HeaderName;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{BatchConfig, ResponseConfig};
use crate::output::{FailedLine, ResultLine};
use crate::ports::CallOutcome;

/// One item of a status list: a code (`404`), a class (`"4xx"`) or a range (`"500-599"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StatusSpec {
    Code(u64),
    Text(String),
}

/// The statuses an HTTP status code can have.
pub const STATUS_CODES: std::ops::RangeInclusive<u16> = 100..=599;

impl StatusSpec {
    /// The codes it names, or why it names none.
    pub fn codes(&self) -> Result<std::ops::RangeInclusive<u16>, String> {
        let in_range = |c: u64| {
            u16::try_from(c)
                .ok()
                .filter(|c| STATUS_CODES.contains(c))
                .ok_or_else(|| format!("{c} is not an HTTP status (100-599)"))
        };
        match self {
            StatusSpec::Code(c) => in_range(*c).map(|c| c..=c),
            StatusSpec::Text(t) => {
                let t = t.trim();
                if let Some(class) = t
                    .strip_suffix("xx")
                    .or_else(|| t.strip_suffix("XX"))
                    .and_then(|d| d.parse::<u64>().ok())
                    .filter(|_| t.len() == 3)
                {
                    let lo = in_range(class * 100)?;
                    return Ok(lo..=lo + 99);
                }
                if let Some((lo, hi)) = t.split_once('-') {
                    let parse = |s: &str| {
                        s.trim()
                            .parse::<u64>()
                            .map_err(|_| format!("{t:?}: {s:?} is not a number"))
                    };
                    let (lo, hi) = (in_range(parse(lo)?)?, in_range(parse(hi)?)?);
                    if lo > hi {
                        return Err(format!("{t:?} is an empty range"));
                    }
                    return Ok(lo..=hi);
                }
                match t.parse::<u64>() {
                    Ok(c) => in_range(c).map(|c| c..=c),
                    Err(_) => Err(format!(
                        "{t:?} is not a status: use a code (404), a class (\"4xx\") or a range \
                         (\"500-504\")"
                    )),
                }
            }
        }
    }
}

/// A list of statuses, as written in the config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StatusSet(pub Vec<StatusSpec>);

impl StatusSet {
    /// `2xx`: the default success statuses.
    pub fn success_default() -> Self {
        Self(vec![StatusSpec::Text("2xx".into())])
    }

    /// 429, 502, 503 and 504: what a later attempt can fix (the API overloaded, a gateway that
    /// could not reach it). The default retried statuses.
    pub fn retry_default() -> Self {
        Self([429, 502, 503, 504].map(StatusSpec::Code).to_vec())
    }

    /// Each item's problem, as (index, message).
    pub fn problems(&self) -> Vec<(usize, String)> {
        (self.0.iter().enumerate())
            .filter_map(|(i, s)| s.codes().err().map(|m| (i, m)))
            .collect()
    }

    fn mask(&self) -> StatusMask {
        let mut mask = StatusMask::default();
        for codes in self.0.iter().filter_map(|s| s.codes().ok()) {
            for c in codes {
                mask.insert(c);
            }
        }
        mask
    }
}

impl fmt::Display for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = (self.0.iter())
            .map(|s| match s {
                StatusSpec::Code(c) => c.to_string(),
                StatusSpec::Text(t) => t.clone(),
            })
            .collect();
        write!(f, "[{}]", items.join(", "))
    }
}

/// A set of status codes, one bit each: looked up on every attempt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct StatusMask([u64; 10]);

impl StatusMask {
    fn insert(&mut self, code: u16) {
        if let Some(word) = self.0.get_mut(usize::from(code / 64)) {
            *word |= 1 << (code % 64);
        }
    }

    fn contains(&self, code: u16) -> bool {
        (self.0.get(usize::from(code / 64))).is_some_and(|w| w & (1 << (code % 64)) != 0)
    }

    fn intersects(&self, other: &StatusMask) -> Option<u16> {
        STATUS_CODES
            .clone()
            .find(|&c| self.contains(c) && other.contains(c))
    }
}

/// What a status means to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusClass {
    Success,
    /// A later attempt may get another answer.
    Retry,
    /// Final: the record fails without another attempt.
    Permanent,
}

/// The status lists of a pipeline, ready to classify any status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusRules {
    success: StatusMask,
    retry: StatusMask,
    permanent: StatusMask,
}

impl Default for StatusRules {
    fn default() -> Self {
        Self::new(
            &StatusSet::success_default(),
            &StatusSet::retry_default(),
            &StatusSet::default(),
        )
    }
}

impl StatusRules {
    /// `permanent` carves statuses out of `retry` (`retry: ["5xx"]`, `permanent: [501]`).
    pub fn new(success: &StatusSet, retry: &StatusSet, permanent: &StatusSet) -> Self {
        Self {
            success: success.mask(),
            retry: retry.mask(),
            permanent: permanent.mask(),
        }
    }

    pub fn from_config(c: &crate::config::ClientConfig) -> Self {
        Self::new(
            &c.success_statuses,
            &c.retry_statuses,
            &c.permanent_statuses,
        )
    }

    pub fn class(&self, status: u16) -> StatusClass {
        if self.success.contains(status) {
            StatusClass::Success
        } else if self.retry.contains(status) && !self.permanent.contains(status) {
            StatusClass::Retry
        } else {
            StatusClass::Permanent
        }
    }

    pub fn is_success(&self, status: u16) -> bool {
        self.class(status) == StatusClass::Success
    }

    pub fn is_retried(&self, status: u16) -> bool {
        self.class(status) == StatusClass::Retry
    }

    /// A status that is both a success and retried or permanent: the lists contradict.
    pub fn contradiction(&self) -> Option<(u16, &'static str)> {
        (self
            .success
            .intersects(&self.retry)
            .map(|c| (c, "client.retry_statuses")))
        .or_else(|| {
            (self.success.intersects(&self.permanent)).map(|c| (c, "client.permanent_statuses"))
        })
    }
}

/// What a successful response's body must be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// Kept as JSON when it is JSON, else as text (the default).
    #[default]
    Any,
    /// Must be JSON; anything else fails the record.
    Json,
    /// Kept as text (UTF-8); never parsed.
    Text,
}

/// Why `pointer` is not an RFC 6901 JSON pointer.
pub fn pointer_problem(pointer: &str) -> Option<String> {
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return Some(format!(
            "{pointer:?} is not a JSON pointer (RFC 6901): it starts with '/', e.g. \"/data/0/id\""
        ));
    }
    let mut chars = pointer.chars();
    while let Some(ch) = chars.next() {
        if ch == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Some(format!(
                "{pointer:?}: '~' is written ~0 and '/' inside a name ~1 (RFC 6901)"
            ));
        }
    }
    None
}

/// A pipeline's `response` section, ready to apply to every outcome.
#[derive(Clone, Debug, Default)]
pub struct ResponseShaper {
    expect: Expect,
    keep: Option<String>,
    keep_headers: Vec<HeaderName>,
}

impl ResponseShaper {
    /// From a validated config (a header name that does not parse is skipped: validation
    /// reported it).
    pub fn from_config(c: &ResponseConfig) -> Self {
        Self {
            expect: c.expect,
            keep: c.keep.clone(),
            keep_headers: (c.keep_headers.iter())
                .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                .collect(),
        }
    }

    /// The line of a record whose call ended with `outcome`: a result, or a failure that says
    /// why (the call's own failure, or a body that is not what the pipeline expects).
    pub fn shape(&self, offset: u64, record: &[u8], outcome: &CallOutcome) -> Shaped {
        if !outcome.succeeded() {
            return Shaped::Failed(FailedLine::new(offset, record, outcome));
        }
        match self.kept(outcome) {
            Ok(body) => Shaped::Result(ResultLine::with_body(
                offset,
                outcome,
                body,
                self.headers(outcome),
            )),
            Err(reason) => {
                let mut line = FailedLine::new(offset, record, outcome);
                line.error = reason;
                Shaped::Failed(line)
            }
        }
    }

    fn kept(&self, out: &CallOutcome) -> Result<KeptBody, String> {
        let limit = || {
            format!(
                "the response is longer than client.max_response_bytes ({} bytes kept): \
                 it cannot be checked as JSON; raise the limit",
                out.body.len()
            )
        };
        match self.expect {
            Expect::Any if self.keep.is_none() => Ok(KeptBody::as_received(out)),
            Expect::Text => match std::str::from_utf8(&out.body) {
                Ok(text) if !text.is_empty() => Ok(KeptBody::Text(text.to_string())),
                Ok(_) => Ok(KeptBody::Empty),
                Err(e) => Err(format!(
                    "the response is not UTF-8 text (response.expect: text): {e}"
                )),
            },
            Expect::Any | Expect::Json => {
                if out.body_truncated {
                    return Err(limit());
                }
                let not_json = |e: serde_json::Error| {
                    let ct = (out.headers.get(http::header::CONTENT_TYPE))
                        .and_then(|v| v.to_str().ok())
                        .map(|ct| format!(" (Content-Type {ct})"))
                        .unwrap_or_default();
                    format!("the response is not JSON{ct}: {e}")
                };
                if self.keep.is_none() {
                    return KeptBody::whole_json(&out.body).map_err(not_json);
                }
                let value: Value = serde_json::from_slice(&out.body).map_err(not_json)?;
                self.kept_json(value)
            }
        }
    }

    /// The part of a JSON value that `keep` points at (all of it without `keep`).
    fn kept_json(&self, mut value: Value) -> Result<KeptBody, String> {
        match &self.keep {
            None => Ok(KeptBody::Json(value)),
            Some(pointer) => match value.pointer_mut(pointer) {
                Some(part) => Ok(KeptBody::Json(part.take())),
                None => Err(format!(
                    "the response has nothing at {pointer:?} (response.keep)"
                )),
            },
        }
    }

    /// The lines of the records of one batch call ([`crate::batch`]), in `members`' order:
    /// each record's item of the answer, shaped as a whole answer would be (`keep` points into
    /// the item; `expect: text` keeps it as text), or the reason it has none. A failed call
    /// fails every record with the call's error.
    pub fn shape_batch(
        &self,
        config: &BatchConfig,
        members: &[BatchMember<'_>],
        outcome: &CallOutcome,
    ) -> Vec<Shaped> {
        if !outcome.succeeded() {
            return (members.iter())
                .map(|m| Shaped::Failed(FailedLine::new(m.offset, m.record, outcome)))
                .collect();
        }
        let ids: Vec<Option<String>> = members.iter().map(|m| m.id.map(str::to_string)).collect();
        let headers = self.headers(outcome);
        let items = crate::batch::split_answer(config, &ids, outcome);
        (members.iter().zip(items))
            .map(|(m, item)| {
                let kept = item.and_then(|item| match (self.expect, item) {
                    (Expect::Text, Value::String(s)) => Ok(KeptBody::Text(s)),
                    (Expect::Text, other) => Ok(KeptBody::Text(other.to_string())),
                    (_, item) => self.kept_json(item),
                });
                match kept {
                    Ok(body) => Shaped::Result(ResultLine::with_body(
                        m.offset,
                        outcome,
                        body,
                        headers.clone(),
                    )),
                    Err(reason) => {
                        let mut line = FailedLine::new(m.offset, m.record, outcome);
                        line.error = reason;
                        // The whole answer is not this record's.
                        line.response_text = None;
                        Shaped::Failed(line)
                    }
                }
            })
            .collect()
    }

    fn headers(&self, out: &CallOutcome) -> BTreeMap<String, String> {
        let mut kept = BTreeMap::new();
        for name in &self.keep_headers {
            let values: Vec<String> = (out.headers.get_all(name).iter())
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            if !values.is_empty() {
                kept.insert(name.as_str().to_string(), values.join(", "));
            }
        }
        kept
    }
}

/// A record of a batch call, as its lines need it.
#[derive(Debug, Clone, Copy)]
pub struct BatchMember<'a> {
    pub offset: u64,
    pub record: &'a [u8],
    /// Its item's `batch.id_field`, when items are matched by id.
    pub id: Option<&'a str>,
}

/// A record's line, by where it goes.
#[derive(Debug)]
pub enum Shaped {
    Result(ResultLine),
    Failed(FailedLine),
}

/// The part of a response body a result keeps.
#[derive(Debug, Clone)]
pub enum KeptBody {
    Empty,
    Json(Value),
    /// A whole body that is JSON, as it came.
    Raw(Box<serde_json::value::RawValue>),
    Text(String),
    /// Cut at the cap: kept as text, marked truncated.
    Truncated(String),
}

impl KeptBody {
    /// Today's rule: JSON when the whole body is JSON, else text.
    pub fn as_received(out: &CallOutcome) -> Self {
        if out.body.is_empty() {
            return KeptBody::Empty;
        }
        if out.body_truncated {
            return KeptBody::Truncated(String::from_utf8_lossy(&out.body).into_owned());
        }
        KeptBody::whole_json(&out.body)
            .unwrap_or_else(|_| KeptBody::Text(String::from_utf8_lossy(&out.body).into_owned()))
    }

    /// A whole body that is JSON: checked without building a tree and kept as it came, unless
    /// it spans lines (pretty-printed), which a JSON Lines result cannot hold: then re-written
    /// compact.
    pub fn whole_json(body: &[u8]) -> Result<Self, serde_json::Error> {
        if memchr::memchr2(b'\n', b'\r', body).is_some() {
            return serde_json::from_slice(body).map(KeptBody::Json);
        }
        serde_json::from_slice::<Box<serde_json::value::RawValue>>(body).map(KeptBody::Raw)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn rules(success: &[&str], retry: &[&str], permanent: &[&str]) -> StatusRules {
        let set = |items: &[&str]| {
            StatusSet(
                (items.iter())
                    .map(|s| StatusSpec::Text(s.to_string()))
                    .collect(),
            )
        };
        StatusRules::new(&set(success), &set(retry), &set(permanent))
    }

    #[test]
    fn the_default_rules_are_todays() {
        let r = StatusRules::default();
        for s in [200, 201, 204, 299] {
            assert_eq!(r.class(s), StatusClass::Success, "{s}");
        }
        for s in [429, 502, 503, 504] {
            assert_eq!(r.class(s), StatusClass::Retry, "{s}");
        }
        for s in [100, 301, 400, 401, 404, 422, 500, 501, 505, 599] {
            assert_eq!(r.class(s), StatusClass::Permanent, "{s}");
        }
    }

    #[test]
    fn classes_ranges_and_carve_outs() {
        let r = rules(&["200", "202-204"], &["5xx", "429"], &["501"]);
        assert_eq!(r.class(200), StatusClass::Success);
        assert_eq!(r.class(201), StatusClass::Permanent);
        assert_eq!(r.class(203), StatusClass::Success);
        assert_eq!(r.class(500), StatusClass::Retry);
        assert_eq!(r.class(501), StatusClass::Permanent);
        assert_eq!(r.class(599), StatusClass::Retry);
        assert_eq!(r.class(429), StatusClass::Retry);
        assert_eq!(r.contradiction(), None);
        assert_eq!(
            rules(&["2xx", "404"], &["4xx"], &[]).contradiction(),
            Some((404, "client.retry_statuses"))
        );
    }

    #[test]
    fn a_bad_status_item_says_what_is_wrong() {
        let set = StatusSet(vec![
            StatusSpec::Code(404),
            StatusSpec::Code(700),
            StatusSpec::Text("6xx".into()),
            StatusSpec::Text("500-4".into()),
            StatusSpec::Text("504-500".into()),
            StatusSpec::Text("teapot".into()),
            StatusSpec::Text("4xx".into()),
        ]);
        let problems = set.problems();
        let indexes: Vec<usize> = problems.iter().map(|(i, _)| *i).collect();
        assert_eq!(indexes, vec![1, 2, 3, 4, 5], "{problems:?}");
        assert!(problems[0].1.contains("700 is not an HTTP status"));
        assert!(problems[3].1.contains("empty range"));
        assert!(problems[4].1.contains("a class (\"4xx\")"));
    }

    #[test]
    fn pointers_follow_rfc_6901() {
        assert_eq!(pointer_problem(""), None);
        assert_eq!(pointer_problem("/data/0/a~1b~0c"), None);
        assert!(pointer_problem("data").unwrap().contains("starts with '/'"));
        assert!(pointer_problem("/a~2").unwrap().contains("~0"));
        assert!(pointer_problem("/a~").unwrap().contains("~0"));
    }

    fn outcome(status: u16, body: &str, headers: &[(&str, &str)]) -> CallOutcome {
        let mut map = http::HeaderMap::new();
        for (n, v) in headers {
            map.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        CallOutcome {
            status: Some(status),
            body: bytes::Bytes::from(body.to_string()),
            body_truncated: false,
            latency: Duration::from_millis(5),
            attempts: 1,
            error: None,
            headers: map,
        }
    }

    fn shaper(yaml: &str) -> ResponseShaper {
        let config: ResponseConfig = serde_norway::from_str(yaml).unwrap();
        ResponseShaper::from_config(&config)
    }

    fn result(s: Shaped) -> ResultLine {
        match s {
            Shaped::Result(r) => r,
            Shaped::Failed(f) => panic!("failed: {f:?}"),
        }
    }

    fn failed(s: Shaped) -> FailedLine {
        match s {
            Shaped::Failed(f) => f,
            Shaped::Result(r) => panic!("a result: {r:?}"),
        }
    }

    #[test]
    fn a_pointer_keeps_only_its_part() {
        let s = shaper("keep: /data/items/1\n");
        let body = r#"{"data": {"items": [{"id": 1}, {"id": 2, "x": [true]}]}, "noise": "n"}"#;
        let line = result(s.shape(7, b"r", &outcome(200, body, &[])));
        assert_eq!(
            line.response_value(),
            Some(serde_json::json!({"id": 2, "x": [true]}))
        );
        assert_eq!(line.response_text, None);
        let missing = failed(s.shape(7, b"rec", &outcome(200, r#"{"data": {}}"#, &[])));
        assert!(
            missing.error.contains("nothing at \"/data/items/1\""),
            "{}",
            missing.error
        );
        assert_eq!(missing.record, "rec");
        assert_eq!(missing.response_text.as_deref(), Some(r#"{"data": {}}"#));
    }

    #[test]
    fn expected_json_that_is_not_json_fails_with_its_reason() {
        let s = shaper("expect: json\n");
        let html = outcome(
            200,
            "<html>maintenance</html>",
            &[("content-type", "text/html")],
        );
        let line = failed(s.shape(3, b"r", &html));
        assert!(
            line.error
                .starts_with("the response is not JSON (Content-Type text/html): "),
            "{}",
            line.error
        );
        assert_eq!(line.status, Some(200));
        // Without expect, the same answer is kept as text.
        let kept = result(shaper("{}").shape(3, b"r", &html));
        assert_eq!(
            kept.response_text.as_deref(),
            Some("<html>maintenance</html>")
        );
        // A truncated body cannot be judged JSON.
        let mut long = outcome(200, r#"{"a": "#, &[]);
        long.body_truncated = true;
        assert!(
            failed(s.shape(3, b"r", &long))
                .error
                .contains("max_response_bytes")
        );
    }

    #[test]
    fn expected_text_is_kept_as_text_even_when_it_parses() {
        let line = result(shaper("expect: text\n").shape(1, b"r", &outcome(200, "42", &[])));
        assert_eq!(line.response_value(), None);
        assert_eq!(line.response_text.as_deref(), Some("42"));
        let mut bad = outcome(200, "", &[]);
        bad.body = bytes::Bytes::from_static(b"\xff\xfe");
        assert!(
            failed(shaper("expect: text\n").shape(1, b"r", &bad))
                .error
                .contains("UTF-8")
        );
    }

    #[test]
    fn headers_are_kept_by_name_whatever_their_case() {
        let s = shaper("keep_headers: [ETag, X-Request-Id, X-Absent]\n");
        let out = outcome(
            201,
            "{}",
            &[
                ("etag", "\"v1\""),
                ("x-request-id", "a"),
                ("x-request-id", "b"),
                ("x-other", "o"),
            ],
        );
        let line = result(s.shape(1, b"r", &out));
        let expected: BTreeMap<String, String> = [
            ("etag".to_string(), "\"v1\"".to_string()),
            ("x-request-id".to_string(), "a, b".to_string()),
        ]
        .into();
        assert_eq!(line.headers, expected);
        let json = serde_json::to_value(&line).unwrap();
        assert_eq!(json["headers"]["etag"], "\"v1\"");
    }

    #[test]
    fn a_failed_call_stays_failed_whatever_the_shaping() {
        let mut out = outcome(404, r#"{"error": "no such user"}"#, &[]);
        out.error = Some("HTTP 404".into());
        let line = failed(shaper("keep: /x\n").shape(9, b"rec", &out));
        assert_eq!(line.error, "HTTP 404");
        assert_eq!(line.status, Some(404));
    }

    #[test]
    fn a_batch_answer_becomes_one_line_per_record() {
        let batch: BatchConfig = serde_norway::from_str(
            "{size: 3, results: /results, id_field: id, item_error: /error}",
        )
        .unwrap();
        let members = [
            BatchMember {
                offset: 0,
                record: b"r0",
                id: Some("a"),
            },
            BatchMember {
                offset: 9,
                record: b"r9",
                id: Some("b"),
            },
            BatchMember {
                offset: 20,
                record: b"r20",
                id: Some("c"),
            },
        ];
        let body = r#"{"results": [{"id": "c", "v": {"x": 3}}, {"id": "a", "v": {"x": 1}},
                       {"id": "b", "error": "invalid email"}]}"#;
        let out = outcome(200, body, &[("etag", "e")]);
        let s = shaper("keep: /v/x\nkeep_headers: [etag]\n");
        let lines = s.shape_batch(&batch, &members, &out);
        assert_eq!(lines.len(), 3);
        let mut lines = lines.into_iter();
        let first = result(lines.next().unwrap());
        assert_eq!(
            (first.offset, first.response_value()),
            (0, Some(serde_json::json!(1)))
        );
        assert_eq!(first.headers["etag"], "e");
        let second = failed(lines.next().unwrap());
        assert_eq!((second.offset, second.record.as_str()), (9, "r9"));
        assert_eq!(second.error, "the API failed this item: invalid email");
        assert_eq!(second.response_text, None);
        assert_eq!(
            result(lines.next().unwrap()).response_value(),
            Some(serde_json::json!(3))
        );

        let mut down = outcome(503, "busy", &[]);
        down.error = Some("HTTP 503".into());
        for line in s.shape_batch(&batch, &members, &down) {
            let line = failed(line);
            assert_eq!((line.error.as_str(), line.status), ("HTTP 503", Some(503)));
        }
    }

    #[test]
    fn a_whole_json_answer_is_kept_as_it_came_on_one_line() {
        let s = ResponseShaper::default();
        let line = result(s.shape(0, b"r", &outcome(200, r#" {"b":1,"a":[1, 2]} "#, &[])));
        let jsonl = String::from_utf8(crate::output::to_jsonl(vec![(0, line)])).unwrap();
        assert!(
            jsonl.contains(r#""response":{"b":1,"a":[1, 2]}"#),
            "{jsonl}"
        );
        // Pretty-printed: written compact, so the result stays one line.
        let line = result(s.shape(0, b"r", &outcome(200, "{\n  \"a\": \"x\\ny\"\n}\r\n", &[])));
        let jsonl = String::from_utf8(crate::output::to_jsonl(vec![(0, line)])).unwrap();
        assert_eq!(jsonl.lines().count(), 1, "{jsonl}");
        assert!(jsonl.contains(r#""response":{"a":"x\ny"}"#), "{jsonl}");
    }
}
