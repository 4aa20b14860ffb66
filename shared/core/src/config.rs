//! Pipeline configuration: the YAML file that says how records become API requests.
//!
//! Parsing is strict (unknown keys are errors) and every error names the file and the field, so
//! a bad config fails the job at split time with a message a user can act on.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::template::{self, BodyTemplate, Template};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    #[serde(default = "defaults::version")]
    pub version: u32,
    pub input: InputConfig,
    pub request: RequestConfig,
    #[serde(default)]
    pub client: ClientConfig,
    #[serde(default)]
    pub split: SplitConfig,
    #[serde(default)]
    pub job: JobConfig,
}

/// When a job gives up on the API. See [`crate::tolerance`].
///
/// Both default to none (no limit): failed records are kept in `failed/` with their records, for
/// `fanout replay`, and the client's circuit breaker already sheds load during an outage, so by
/// default a job calls for every record. Set a limit to stop paying for calls that will not work
/// (a revoked key, a broken request template): above it the job stops calling the API and finishes
/// FAILED, with the rest of its records in `failed/` as not attempted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// Stop once more than this many records have failed.
    #[serde(default)]
    pub tolerated_failure_count: Option<u64>,
    /// Stop once more than this percentage (0..=100) of the records attempted so far have failed,
    /// judged from the first 100 attempted records on.
    #[serde(default)]
    pub tolerated_failure_percent: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    Csv,
    Jsonl,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    pub format: InputFormat,
    /// Field schema. For CSV each field must be a header column; when empty, every column is a
    /// string field. For JSON Lines, placeholders that are not declared here are required fields
    /// of any type.
    #[serde(default)]
    pub fields: Vec<FieldSpec>,
    /// CSV field delimiter (one ASCII character).
    #[serde(default = "defaults::delimiter")]
    pub delimiter: char,
    /// A record longer than this is rejected without being buffered whole.
    #[serde(default = "defaults::max_record_bytes")]
    pub max_record_bytes: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    pub name: String,
    #[serde(rename = "type", default)]
    pub ty: FieldType,
    #[serde(default)]
    pub required: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    #[default]
    String,
    Integer,
    Number,
    Boolean,
    /// Any JSON value (JSON Lines only; CSV values are strings).
    Any,
}

impl FieldType {
    pub fn name(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Integer => "integer",
            FieldType::Number => "number",
            FieldType::Boolean => "boolean",
            FieldType::Any => "any",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestConfig {
    #[serde(default = "defaults::method")]
    pub method: String,
    /// Absolute http(s) URL with `{field}` placeholders in its path, query or fragment.
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// JSON body template: strings holding placeholders are filled in; a string that is exactly one
    /// placeholder takes the field's typed value.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// Header that carries `<job id>-<record offset>`, the same on every retry. Empty disables it.
    #[serde(default = "defaults::idempotency_header")]
    pub idempotency_header: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Requests in flight per worker container: the ceiling and starting point of the adaptive
    /// concurrency limit.
    #[serde(default = "defaults::concurrency")]
    pub concurrency: usize,
    /// Per-attempt timeout.
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts per record, including the first.
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
    /// Response bodies are kept up to this size in results.
    #[serde(default = "defaults::max_response_bytes")]
    pub max_response_bytes: usize,
    /// Floor of the adaptive concurrency limit; `concurrency` is its ceiling and starting point.
    #[serde(default = "defaults::concurrency_min")]
    pub concurrency_min: usize,
    /// The adaptive limit grows while an attempt's latency stays within this multiple of the
    /// lowest latency recently observed (latency rising past it means the API is queueing).
    #[serde(default = "defaults::concurrency_latency_ratio")]
    pub concurrency_latency_ratio: f64,
    /// The adaptive limit is multiplied by this on a 429 or a timeout.
    #[serde(default = "defaults::concurrency_decrease_ratio")]
    pub concurrency_decrease_ratio: f64,
    /// Full-jitter backoff: the wait before retry n is uniform in
    /// [0, min(backoff_max_ms, backoff_base_ms · 2^(n-1))].
    #[serde(default = "defaults::backoff_base_ms")]
    pub backoff_base_ms: u64,
    #[serde(default = "defaults::backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// A Retry-After longer than this is shortened to it.
    #[serde(default = "defaults::retry_after_max_ms")]
    pub retry_after_max_ms: u64,
    /// Retries allowed as a percentage of calls (over a 10 s window), so a failing API sees at
    /// most this much extra load instead of max_attempts times the load.
    #[serde(default = "defaults::retry_budget_percent")]
    pub retry_budget_percent: u32,
    /// Retries per second allowed on top of the percentage, so a container that has made few
    /// calls can still retry.
    #[serde(default = "defaults::retry_budget_min_per_sec")]
    pub retry_budget_min_per_sec: u32,
    /// The circuit breaker opens when at least this fraction (0 < r <= 1) of the calls in its
    /// window failed (connect errors, timeouts, transport errors, 5xx).
    #[serde(default = "defaults::breaker_failure_rate")]
    pub breaker_failure_rate: f64,
    /// Length of the breaker's sliding window.
    #[serde(default = "defaults::breaker_window_secs")]
    pub breaker_window_secs: u64,
    /// The breaker does not judge a window with fewer calls than this.
    #[serde(default = "defaults::breaker_min_calls")]
    pub breaker_min_calls: u32,
    /// How long the breaker stays open before it lets one probe through.
    #[serde(default = "defaults::breaker_open_secs")]
    pub breaker_open_secs: u64,
    /// Attempts per second allowed by the rate limiter (every attempt, retries included).
    /// The fleet-wide limit this pipeline's calls count against: pipelines calling the same
    /// API share a name (and so one limit).
    #[serde(default = "defaults::rate_limit_name")]
    pub rate_limit_name: String,
    #[serde(default = "defaults::rate_limit_per_sec")]
    pub rate_limit_per_sec: u32,
    /// Tokens the rate limiter can hold: the largest burst above the steady rate.
    #[serde(default = "defaults::rate_limit_burst")]
    pub rate_limit_burst: u32,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            concurrency: defaults::concurrency(),
            timeout_ms: defaults::timeout_ms(),
            max_attempts: defaults::max_attempts(),
            max_response_bytes: defaults::max_response_bytes(),
            concurrency_min: defaults::concurrency_min(),
            concurrency_latency_ratio: defaults::concurrency_latency_ratio(),
            concurrency_decrease_ratio: defaults::concurrency_decrease_ratio(),
            backoff_base_ms: defaults::backoff_base_ms(),
            backoff_max_ms: defaults::backoff_max_ms(),
            retry_after_max_ms: defaults::retry_after_max_ms(),
            retry_budget_percent: defaults::retry_budget_percent(),
            retry_budget_min_per_sec: defaults::retry_budget_min_per_sec(),
            breaker_failure_rate: defaults::breaker_failure_rate(),
            breaker_window_secs: defaults::breaker_window_secs(),
            breaker_min_calls: defaults::breaker_min_calls(),
            breaker_open_secs: defaults::breaker_open_secs(),
            rate_limit_name: defaults::rate_limit_name(),
            rate_limit_per_sec: defaults::rate_limit_per_sec(),
            rate_limit_burst: defaults::rate_limit_burst(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitConfig {
    /// Bytes of input per manifest.
    #[serde(default = "defaults::chunk_bytes")]
    pub chunk_bytes: u64,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self {
            chunk_bytes: defaults::chunk_bytes(),
        }
    }
}

mod defaults {
    pub fn version() -> u32 {
        1
    }
    pub fn delimiter() -> char {
        ','
    }
    pub fn max_record_bytes() -> usize {
        1 << 20
    }
    pub fn method() -> String {
        "GET".into()
    }
    pub fn idempotency_header() -> String {
        "Idempotency-Key".into()
    }
    pub fn concurrency() -> usize {
        64
    }
    pub fn timeout_ms() -> u64 {
        10_000
    }
    pub fn max_attempts() -> u32 {
        3
    }
    pub fn max_response_bytes() -> usize {
        16 * 1024
    }
    pub fn concurrency_min() -> usize {
        1
    }
    pub fn concurrency_latency_ratio() -> f64 {
        2.0
    }
    pub fn concurrency_decrease_ratio() -> f64 {
        0.5
    }
    pub fn backoff_base_ms() -> u64 {
        100
    }
    pub fn backoff_max_ms() -> u64 {
        5_000
    }
    pub fn retry_after_max_ms() -> u64 {
        30_000
    }
    pub fn retry_budget_percent() -> u32 {
        20
    }
    pub fn retry_budget_min_per_sec() -> u32 {
        10
    }
    pub fn breaker_failure_rate() -> f64 {
        0.5
    }
    pub fn breaker_window_secs() -> u64 {
        10
    }
    pub fn breaker_min_calls() -> u32 {
        20
    }
    pub fn breaker_open_secs() -> u64 {
        5
    }
    pub fn rate_limit_name() -> String {
        "api".into()
    }
    pub fn rate_limit_per_sec() -> u32 {
        5_000
    }
    pub fn rate_limit_burst() -> u32 {
        500
    }
    pub fn chunk_bytes() -> u64 {
        4 << 20
    }
}

/// A configuration error: which file, which field, what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.field, self.message)
        }
    }
}

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];

impl PipelineConfig {
    /// Parses and validates a config. `file` names it in errors (a path or an S3 URI).
    pub fn from_yaml(file: &str, text: &str) -> Result<Self, ConfigError> {
        let config: PipelineConfig = serde_norway::from_str(text).map_err(|e| {
            let location = e
                .location()
                .map(|l| format!(" (line {}, column {})", l.line(), l.column()));
            ConfigError {
                file: file.to_string(),
                field: String::new(),
                message: format!(
                    "{e}{}",
                    location
                        .filter(|_| !e.to_string().contains(" at line "))
                        .unwrap_or_default()
                ),
            }
        })?;
        config.validate(file)?;
        Ok(config)
    }

    /// Checks everything that can be checked without the input's header.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let err = |field: &str, message: String| ConfigError {
            file: file.into(),
            field: field.into(),
            message,
        };
        if self.version != 1 {
            return Err(err(
                "version",
                format!("unsupported version {}, expected 1", self.version),
            ));
        }
        let mut names = BTreeSet::new();
        for (i, f) in self.input.fields.iter().enumerate() {
            let field = format!("input.fields[{i}].name");
            if f.name.is_empty() || f.name.contains(['{', '}']) {
                return Err(err(&field, format!("invalid field name {:?}", f.name)));
            }
            if !names.insert(f.name.as_str()) {
                return Err(err(&field, format!("duplicate field {:?}", f.name)));
            }
            if f.ty == FieldType::Any && self.input.format == InputFormat::Csv {
                return Err(err(
                    &format!("input.fields[{i}].type"),
                    "type 'any' is for JSON Lines only".into(),
                ));
            }
        }
        let d = self.input.delimiter;
        if !d.is_ascii() || matches!(d, '"' | '\n' | '\r') {
            return Err(err(
                "input.delimiter",
                format!(
                    "{d:?} cannot be a delimiter: use one ASCII character other than quote and newline"
                ),
            ));
        }
        check_range(
            &err,
            "input.max_record_bytes",
            self.input.max_record_bytes as u64,
            1,
            64 << 20,
        )?;
        if !METHODS.contains(&self.request.method.as_str()) {
            return Err(err(
                "request.method",
                format!(
                    "{:?} is not one of {}",
                    self.request.method,
                    METHODS.join(", ")
                ),
            ));
        }
        let referenced = self
            .referenced_fields()
            .map_err(|(field, message)| err(&field, message))?;
        if !self.input.fields.is_empty() {
            for (field, name) in &referenced {
                if !names.contains(name.as_str()) {
                    return Err(err(
                        field,
                        format!("placeholder {{{name}}} names no field of input.fields"),
                    ));
                }
            }
        }
        let h = &self.request.idempotency_header;
        if !h.is_empty() && http::header::HeaderName::from_bytes(h.as_bytes()).is_err() {
            return Err(err(
                "request.idempotency_header",
                format!("{h:?} is not a valid header name"),
            ));
        }
        for name in self.request.headers.keys() {
            if http::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(err(
                    &format!("request.headers.{name}"),
                    "not a valid header name".into(),
                ));
            }
        }
        if let Some(p) = self.job.tolerated_failure_percent
            && !(0.0..=100.0).contains(&p)
        {
            return Err(err(
                "job.tolerated_failure_percent",
                format!("{p} is out of range 0..=100"),
            ));
        }
        check_range(
            &err,
            "client.concurrency",
            self.client.concurrency as u64,
            1,
            4096,
        )?;
        check_range(
            &err,
            "client.timeout_ms",
            self.client.timeout_ms,
            1,
            900_000,
        )?;
        check_range(
            &err,
            "client.max_attempts",
            self.client.max_attempts.into(),
            1,
            20,
        )?;
        check_range(
            &err,
            "client.max_response_bytes",
            self.client.max_response_bytes as u64,
            0,
            1 << 20,
        )?;
        let c = &self.client;
        check_range(
            &err,
            "client.concurrency_min",
            c.concurrency_min as u64,
            1,
            c.concurrency as u64,
        )?;
        // `contains` is false for NaN, which YAML can spell as `.nan`.
        if !(1.0..=100.0).contains(&c.concurrency_latency_ratio) {
            return Err(err(
                "client.concurrency_latency_ratio",
                format!("{} is out of range 1..=100", c.concurrency_latency_ratio),
            ));
        }
        if !(0.01..=0.99).contains(&c.concurrency_decrease_ratio) {
            return Err(err(
                "client.concurrency_decrease_ratio",
                format!(
                    "{} is out of range 0.01..=0.99",
                    c.concurrency_decrease_ratio
                ),
            ));
        }
        check_range(&err, "client.backoff_base_ms", c.backoff_base_ms, 1, 60_000)?;
        check_range(
            &err,
            "client.backoff_max_ms",
            c.backoff_max_ms,
            c.backoff_base_ms,
            600_000,
        )?;
        check_range(
            &err,
            "client.retry_after_max_ms",
            c.retry_after_max_ms,
            1,
            900_000,
        )?;
        check_range(
            &err,
            "client.retry_budget_percent",
            c.retry_budget_percent.into(),
            0,
            1_000,
        )?;
        check_range(
            &err,
            "client.retry_budget_min_per_sec",
            c.retry_budget_min_per_sec.into(),
            0,
            100_000,
        )?;
        if !(c.breaker_failure_rate > 0.0 && c.breaker_failure_rate <= 1.0) {
            return Err(err(
                "client.breaker_failure_rate",
                format!("{} is out of range (0, 1]", c.breaker_failure_rate),
            ));
        }
        check_range(
            &err,
            "client.breaker_window_secs",
            c.breaker_window_secs,
            1,
            3_600,
        )?;
        check_range(
            &err,
            "client.breaker_min_calls",
            c.breaker_min_calls.into(),
            1,
            1_000_000,
        )?;
        check_range(
            &err,
            "client.breaker_open_secs",
            c.breaker_open_secs,
            1,
            3_600,
        )?;
        let name = &c.rate_limit_name;
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
        {
            return Err(err(
                "client.rate_limit_name",
                format!("{name:?} must be 1-64 characters of A-Z, a-z, 0-9, '-', '_', '.'"),
            ));
        }
        check_range(
            &err,
            "client.rate_limit_per_sec",
            c.rate_limit_per_sec.into(),
            1,
            1_000_000,
        )?;
        check_range(
            &err,
            "client.rate_limit_burst",
            c.rate_limit_burst.into(),
            1,
            10_000_000,
        )?;
        check_range(
            &err,
            "split.chunk_bytes",
            self.split.chunk_bytes,
            1,
            1 << 30,
        )?;
        Ok(())
    }

    /// Every placeholder of the request, as (config field path, placeholder name).
    /// Also checks the templates' syntax and the URL's fixed parts.
    pub fn referenced_fields(&self) -> Result<Vec<(String, String)>, (String, String)> {
        let mut out = Vec::new();
        let url = Template::parse(&self.request.url).map_err(|m| ("request.url".to_string(), m))?;
        template::check_url_template(&self.request.url, &url)
            .map_err(|m| ("request.url".to_string(), m))?;
        out.extend(
            url.placeholders()
                .map(|p| ("request.url".to_string(), p.to_string())),
        );
        for (name, value) in &self.request.headers {
            let field = format!("request.headers.{name}");
            if value.contains(['\r', '\n']) {
                return Err((field, "CR or LF in a header value".into()));
            }
            let t = Template::parse(value).map_err(|m| (field.clone(), m))?;
            out.extend(t.placeholders().map(|p| (field.clone(), p.to_string())));
        }
        if let Some(body) = &self.request.body {
            let t = BodyTemplate::parse(body).map_err(|m| ("request.body".to_string(), m))?;
            out.extend(
                t.placeholders()
                    .into_iter()
                    .map(|p| ("request.body".to_string(), p)),
            );
        }
        Ok(out)
    }
}

fn check_range(
    err: &impl Fn(&str, String) -> ConfigError,
    field: &str,
    value: u64,
    min: u64,
    max: u64,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(err(field, format!("{value} is out of range {min}..={max}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
input:
  format: csv
  fields:
    - { name: id, type: integer, required: true }
    - { name: email }
request:
  method: POST
  url: "https://api.example.com/users/{id}?email={email}"
  headers: { X-Source: fanout }
  body: { id: "{id}", note: "user {email}" }
"#;

    fn error_of(yaml: &str) -> ConfigError {
        PipelineConfig::from_yaml("pipelines/p.yaml", yaml).expect_err("config should be rejected")
    }

    #[test]
    fn good_config_parses_with_defaults() {
        let c = PipelineConfig::from_yaml("p.yaml", GOOD).unwrap();
        assert_eq!(c.client.concurrency, 64);
        assert_eq!(c.request.idempotency_header, "Idempotency-Key");
        assert_eq!(c.split.chunk_bytes, 4 << 20);
        assert_eq!(c.job, JobConfig::default());
    }

    #[test]
    fn failure_tolerance_is_checked() {
        let c = PipelineConfig::from_yaml(
            "p.yaml",
            &format!(
                "{GOOD}job: {{ tolerated_failure_count: 10, tolerated_failure_percent: 2.5 }}\n"
            ),
        )
        .unwrap();
        assert_eq!(c.job.tolerated_failure_count, Some(10));
        assert_eq!(c.job.tolerated_failure_percent, Some(2.5));
        let e = error_of(&format!(
            "{GOOD}job: {{ tolerated_failure_percent: 120 }}\n"
        ));
        assert_eq!(
            e.to_string(),
            "pipelines/p.yaml: job.tolerated_failure_percent: 120 is out of range 0..=100"
        );
        let e = error_of(&format!("{GOOD}job: {{ tolerated_failures: 3 }}\n"));
        assert!(
            e.to_string().contains("unknown field `tolerated_failures`"),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let e = error_of(&GOOD.replace("  method: POST", "  method: POST\n  retries: 3"));
        let text = e.to_string();
        assert!(text.starts_with("pipelines/p.yaml: "), "{text}");
        assert!(text.contains("unknown field `retries`"), "{text}");
        assert!(text.contains("line"), "{text}");
    }

    #[test]
    fn placeholder_naming_no_field_is_rejected() {
        let e = error_of(&GOOD.replace("email={email}", "email={mail}"));
        assert_eq!(e.field, "request.url");
        assert!(e.message.contains("{mail}"), "{e}");
    }

    #[test]
    fn relative_or_non_http_url_is_rejected() {
        for url in ["/users/{id}", "ftp://h/{id}", "users"] {
            let e =
                error_of(&GOOD.replace("https://api.example.com/users/{id}?email={email}", url));
            assert_eq!(e.field, "request.url", "{url}: {e}");
        }
    }

    #[test]
    fn placeholder_in_host_is_rejected() {
        let e = error_of(&GOOD.replace(
            "https://api.example.com/users/{id}",
            "https://{id}.example.com/users",
        ));
        assert_eq!(e.field, "request.url");
        assert!(e.message.contains("host"), "{e}");
    }

    #[test]
    fn bad_method_header_and_limits_name_their_field() {
        assert_eq!(
            error_of(&GOOD.replace("method: POST", "method: FETCH")).field,
            "request.method"
        );
        assert_eq!(
            error_of(&GOOD.replace("X-Source: fanout", "\"Bad Header\": x")).field,
            "request.headers.Bad Header"
        );
        let with_client = format!("{GOOD}client: {{ concurrency: 0 }}\n");
        assert_eq!(error_of(&with_client).field, "client.concurrency");
        let with_split = format!("{GOOD}split: {{ chunk_bytes: 0 }}\n");
        assert_eq!(error_of(&with_split).field, "split.chunk_bytes");
    }

    #[test]
    fn client_resilience_knobs_have_defaults() {
        let c = PipelineConfig::from_yaml("p.yaml", GOOD).unwrap().client;
        assert_eq!(c, ClientConfig::default());
        assert_eq!(c.concurrency_min, 1);
        assert_eq!(c.retry_budget_percent, 20);
        assert_eq!(c.breaker_open_secs, 5);
        assert_eq!(c.rate_limit_per_sec, 5_000);
    }

    #[test]
    fn each_client_resilience_knob_is_validated_by_name() {
        let cases = [
            (
                "concurrency: 8, concurrency_min: 9",
                "client.concurrency_min",
            ),
            ("concurrency_min: 0", "client.concurrency_min"),
            (
                "concurrency_latency_ratio: 0.5",
                "client.concurrency_latency_ratio",
            ),
            (
                "concurrency_latency_ratio: .nan",
                "client.concurrency_latency_ratio",
            ),
            (
                "concurrency_decrease_ratio: 1.0",
                "client.concurrency_decrease_ratio",
            ),
            (
                "concurrency_decrease_ratio: 0",
                "client.concurrency_decrease_ratio",
            ),
            ("backoff_base_ms: 0", "client.backoff_base_ms"),
            (
                "backoff_base_ms: 500, backoff_max_ms: 400",
                "client.backoff_max_ms",
            ),
            ("retry_after_max_ms: 0", "client.retry_after_max_ms"),
            ("retry_budget_percent: 1001", "client.retry_budget_percent"),
            (
                "retry_budget_min_per_sec: 100001",
                "client.retry_budget_min_per_sec",
            ),
            ("breaker_failure_rate: 0", "client.breaker_failure_rate"),
            ("breaker_failure_rate: 1.5", "client.breaker_failure_rate"),
            ("breaker_window_secs: 0", "client.breaker_window_secs"),
            ("breaker_min_calls: 0", "client.breaker_min_calls"),
            ("breaker_open_secs: 0", "client.breaker_open_secs"),
            ("rate_limit_per_sec: 0", "client.rate_limit_per_sec"),
            ("rate_limit_burst: 0", "client.rate_limit_burst"),
        ];
        for (client, field) in cases {
            let e = error_of(&format!("{GOOD}client: {{ {client} }}\n"));
            assert_eq!(e.field, field, "{client}: {e}");
        }
        let edges = "client: { concurrency: 8, concurrency_min: 8, breaker_failure_rate: 1.0, \
                     retry_budget_percent: 0, backoff_base_ms: 50, backoff_max_ms: 50 }";
        PipelineConfig::from_yaml("p.yaml", &format!("{GOOD}{edges}\n")).unwrap();
    }

    #[test]
    fn duplicate_field_and_any_type_in_csv_are_rejected() {
        let dup = GOOD.replace("- { name: email }", "- { name: id }");
        assert_eq!(error_of(&dup).field, "input.fields[1].name");
        let any = GOOD.replace("- { name: email }", "- { name: email, type: any }");
        assert_eq!(error_of(&any).field, "input.fields[1].type");
    }

    #[test]
    fn unbalanced_brace_in_body_names_body() {
        let e = error_of(&GOOD.replace("note: \"user {email}\"", "note: \"user {email\""));
        assert_eq!(e.field, "request.body");
    }
}
