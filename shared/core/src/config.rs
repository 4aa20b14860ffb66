//! Pipeline configuration: the YAML file that says how records become API requests.
//!
//! Parsing is strict (unknown keys are errors) and every error names the file and the field, so
//! a bad config fails the job at split time with a message a user can act on. Validation reports
//! every problem of a file at once ([`ConfigErrors`]), so fixing a config takes one run, not one
//! run per mistake.
//!
//! Each setting of a section is declared once, in a `section!` block: name, type, default and
//! allowed range on one line. The struct field, its serde default, the `Default` impl and the
//! range check all come from that line, so they cannot drift apart.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::RangeInclusive;

use serde::{Deserialize, Deserializer, Serialize};

use crate::batch::RateUnit;
use crate::csv_output::{ColumnSpec, OutputFormat, Source};
use crate::response::{Expect, StatusRules, StatusSet};
use crate::stack_defaults::{API_BASE_URL_PLACEHOLDER, StackDefaults};
use crate::template::{self, BodyTemplate, Template};

/// Declares one section of the config: the YAML mapping named `$section` and the struct it
/// deserializes into. Each setting is one line:
///
/// ```text
/// /// doc
/// name: Type [= default] [, in range];
/// ```
///
/// * no `= default`: the key is required in YAML;
/// * `in range`: the value must lie in `range`, either `lo..=hi` or `OpenClosed(lo, hi)`;
/// * `in lo..=hi, at_most other` (or `at_least other`): also at most (least) another bounded
///   setting of the section. That relation is judged only while `other` is in its own range, so
///   a wrong value is reported once, not again through every setting compared with it.
///
/// From it come: the public struct (same field names and types as ever; other crates read them),
/// its `Serialize`, a `Deserialize` through a private mirror struct whose defaulted keys are
/// optional (serde can only name a per-field default by a string path, which a `macro_rules!`
/// cannot build), `check_bounds` and, for a section declared `: Default` (every setting has a
/// default), `impl Default` — which also lets the whole section be left out of the YAML.
macro_rules! section {
    // The mirror struct's field type: `Option<T>` when the key may be left out.
    (@raw_ty $ty:ty,) => { $ty };
    (@raw_ty $ty:ty, $default:expr) => { Option<$ty> };
    // A mirror field's value in the public struct.
    (@fill $value:expr,) => { $value };
    (@fill $value:expr, $default:expr) => {
        match $value {
            Some(v) => v,
            None => $default,
        }
    };
    // A setting's range, narrowed by its relation to another setting when there is one.
    (@range $self:ident, $range:expr) => { $range };
    (@range $self:ident, $range:expr, $relation:ident $other:ident) => {
        $relation(
            $range,
            $self.$other,
            $self.in_own_range(stringify!($other)),
        )
    };
    (
        $(#[$smeta:meta])*
        $section:ident: pub struct $name:ident: Default {
            $(
                $(#[$fmeta:meta])*
                $field:ident: $ty:ty = $default:expr
                    $(, in $range:expr $(, $relation:ident $other:ident)?)?;
            )*
        }
    ) => {
        section! {
            $(#[$smeta])*
            $section: pub struct $name {
                $(
                    $(#[$fmeta])*
                    $field: $ty = $default $(, in $range $(, $relation $other)?)?;
                )*
            }
        }
        impl Default for $name {
            fn default() -> Self {
                Self { $($field: $default),* }
            }
        }
    };
    (
        $(#[$smeta:meta])*
        $section:ident: pub struct $name:ident {
            $(
                $(#[$fmeta:meta])*
                $field:ident: $ty:ty $(= $default:expr)?
                    $(, in $range:expr $(, $relation:ident $other:ident)?)?;
            )*
        }
    ) => {
        $(#[$smeta])*
        #[derive(Clone, Debug, PartialEq, Serialize)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        /// The YAML shape of the section: the same keys, with the defaulted ones optional.
        mod $section {
            use super::*;

            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            pub(super) struct $name {
                $(
                    // The doc attribute only carries `$default` so that the serde attribute is
                    // emitted for defaulted settings alone.
                    $(
                        #[doc = stringify!($default)]
                        #[serde(default, deserialize_with = "super::present")]
                    )?
                    pub(super) $field: section!(@raw_ty $ty, $($default)?),
                )*
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = $section::$name::deserialize(d)?;
                Ok(Self { $( $field: section!(@fill raw.$field, $($default)?), )* })
            }
        }

        impl $name {
            /// Reports each setting outside its declared range, as `<section>.<setting>`.
            #[allow(unused_variables)]
            fn check_bounds(&self, errors: &mut Errors<'_>) {
                $($(
                    errors.bound(
                        concat!(stringify!($section), ".", stringify!($field)),
                        &self.$field,
                        section!(@range self, $range $(, $relation $other)?),
                    );
                )?)*
            }

            /// Whether a setting is in its own range (relations aside); true for one without.
            #[allow(dead_code)]
            fn in_own_range(&self, field: &str) -> bool {
                match field {
                    $($(stringify!($field) => admits(&self.$field, $range),)?)*
                    _ => true,
                }
            }

            /// Each bounded setting's path, with YAML values just outside its range and its
            /// edges (judged against this section's other values).
            #[cfg(test)]
            fn bounded(&self) -> Vec<BoundedSetting> {
                vec![$($(
                    bounded_setting(
                        concat!(stringify!($section), ".", stringify!($field)),
                        &self.$field,
                        section!(@range self, $range $(, $relation $other)?),
                    ),
                )?)*]
            }
        }
    };
}

/// Deserializes a key that is present: `null` stays a type error, as it was before defaulted
/// keys went through `Option`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    #[serde(default = "default_version")]
    pub version: u32,
    pub input: InputConfig,
    pub request: RequestConfig,
    #[serde(default)]
    pub client: ClientConfig,
    #[serde(default)]
    pub split: SplitConfig,
    #[serde(default)]
    pub job: JobConfig,
    #[serde(default)]
    pub response: ResponseConfig,
    /// N records per call; none: one call per record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchConfig>,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub output: OutputConfig,
}

fn default_version() -> u32 {
    1
}

section! {
    /// When a job gives up on the API. See [`crate::tolerance`].
    ///
    /// Both default to none (no limit): failed records are kept in `failed/` with their records,
    /// for `fanout replay`, and the client's circuit breaker already sheds load during an outage,
    /// so by default a job calls for every record. Set a limit to stop paying for calls that will
    /// not work (a revoked key, a broken request template): above it the job stops calling the API
    /// and finishes FAILED, with the rest of its records in `failed/` as not attempted.
    job: pub struct JobConfig: Default {
        /// Stop once more than this many records have failed.
        tolerated_failure_count: Option<u64> = None;
        /// Stop once more than this percentage (0..=100) of the records attempted so far have
        /// failed, judged from the first 100 attempted records on.
        tolerated_failure_percent: Option<f64> = None, in 0.0..=100.0;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    Csv,
    Jsonl,
}

section! {
    input: pub struct InputConfig {
        format: InputFormat;
        /// Field schema. For CSV each field must be a header column; when empty, every column is
        /// a string field. For JSON Lines, placeholders that are not declared here are required
        /// fields of any type.
        fields: Vec<FieldSpec> = Vec::new();
        /// CSV field delimiter (one ASCII character).
        delimiter: char = ',';
        /// A record longer than this is rejected without being buffered whole.
        max_record_bytes: usize = 1 << 20, in 1..=64 << 20;
        /// CSV quoting: `lenient` (Python's csv module: `a"b` is a literal, `"ab"c` is `abc`)
        /// or `strict` (RFC 4180: such records are rejected). Quoted line breaks are read in
        /// both.
        quoting: Quoting = Quoting::Lenient;
    }
}

/// How strictly CSV quotes are judged (`input.quoting`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quoting {
    #[default]
    Lenient,
    Strict,
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

section! {
    request: pub struct RequestConfig {
        method: String = "GET".into();
        /// Absolute http(s) URL with `{field}` placeholders in its path, query or fragment.
        url: String;
        headers: BTreeMap<String, String> = BTreeMap::new();
        /// JSON body template: strings holding placeholders are filled in; a string that is
        /// exactly one placeholder takes the field's typed value.
        body: Option<serde_json::Value> = None;
        /// Form body (`application/x-www-form-urlencoded`): name -> value template, encoded in
        /// name order. Instead of `body` or `text`.
        form: Option<BTreeMap<String, String>> = None;
        /// Raw text body from a template, values inserted as they are. Instead of `body` or
        /// `form`.
        text: Option<String> = None;
        /// Content-Type of a `text` body (default `text/plain; charset=utf-8`).
        content_type: Option<String> = None;
        /// Query parameters: name -> value template, percent-encoded and appended to the URL's
        /// query (after any query the URL has), in name order.
        query: BTreeMap<String, String> = BTreeMap::new();
        /// User-Agent header of every request of this pipeline (default: the HTTP client's).
        user_agent: Option<String> = None;
        /// Header that carries `<job id>-<record offset>`, the same on every retry. Empty
        /// disables it.
        idempotency_header: String = "Idempotency-Key".into();
    }
}

/// The bounds of `client.rate_limit_per_sec`, which an operator's override of a limit's rate
/// (`fanout limit set`, [`crate::rate_override`]) also keeps to.
pub const RATE_LIMIT_PER_SEC: RangeInclusive<u32> = 1..=1_000_000;
/// The bounds of `client.rate_limit_burst` (and of an override's burst).
pub const RATE_LIMIT_BURST: RangeInclusive<u32> = 1..=10_000_000;

/// Why `name` cannot name a fleet limit (`client.rate_limit_name`, `fanout limit NAME`): it is
/// part of the limit's keys in the ledger table.
pub fn rate_limit_name_problem(name: &str) -> Option<String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch));
    (!valid).then(|| format!("{name:?} must be 1-64 characters of A-Z, a-z, 0-9, '-', '_', '.'"))
}

section! {
    client: pub struct ClientConfig: Default {
        /// Requests in flight per worker container: the ceiling and starting point of the
        /// adaptive concurrency limit.
        concurrency: usize = 64, in 1..=4096;
        /// Per-attempt timeout.
        timeout_ms: u64 = 10_000, in 1..=900_000;
        /// Attempts per record, including the first.
        max_attempts: u32 = 3, in 1..=20;
        /// Response bodies are kept up to this size in results.
        max_response_bytes: usize = 16 * 1024, in 0..=1 << 20;
        /// Floor of the adaptive concurrency limit; `concurrency` is its ceiling and starting
        /// point.
        concurrency_min: usize = 1, in 1..=4096, at_most concurrency;
        /// The adaptive limit grows while an attempt's latency stays within this multiple of the
        /// lowest latency recently observed (latency rising past it means the API is queueing).
        concurrency_latency_ratio: f64 = 2.0, in 1.0..=100.0;
        /// The adaptive limit is multiplied by this on a 429 or a timeout.
        concurrency_decrease_ratio: f64 = 0.5, in 0.01..=0.99;
        /// Full-jitter backoff: the wait before retry n is uniform in
        /// [0, min(backoff_max_ms, backoff_base_ms · 2^(n-1))].
        backoff_base_ms: u64 = 100, in 1..=60_000;
        backoff_max_ms: u64 = 5_000, in 1..=600_000, at_least backoff_base_ms;
        /// A Retry-After longer than this is shortened to it.
        retry_after_max_ms: u64 = 30_000, in 1..=900_000;
        /// Retries allowed as a percentage of calls (over a 10 s window), so a failing API sees
        /// at most this much extra load instead of max_attempts times the load.
        retry_budget_percent: u32 = 20, in 0..=1_000;
        /// Retries per second allowed on top of the percentage, so a container that has made few
        /// calls can still retry.
        retry_budget_min_per_sec: u32 = 10, in 0..=100_000;
        /// The circuit breaker opens when at least this fraction (0 < r <= 1) of the calls in its
        /// window failed (connect errors, timeouts, transport errors, 5xx).
        breaker_failure_rate: f64 = 0.5, in OpenClosed(0.0, 1.0);
        /// Length of the breaker's sliding window.
        breaker_window_secs: u64 = 10, in 1..=3_600;
        /// The breaker does not judge a window with fewer calls than this.
        breaker_min_calls: u32 = 20, in 1..=1_000_000;
        /// How long the breaker stays open before it lets one probe through.
        breaker_open_secs: u64 = 5, in 1..=3_600;
        /// The fleet-wide limit this pipeline's calls count against: pipelines calling the same
        /// API share a name (and so one limit). 1-64 characters of A-Z, a-z, 0-9, '-', '_', '.'.
        rate_limit_name: String = "api".into();
        /// Attempts per second allowed by the rate limiter (every attempt, retries included).
        rate_limit_per_sec: u32 = 5_000, in RATE_LIMIT_PER_SEC;
        /// Tokens the rate limiter can hold: the largest burst above the steady rate.
        rate_limit_burst: u32 = 500, in RATE_LIMIT_BURST;
        /// How the API is authenticated; every credential is a secret reference.
        auth: crate::auth::AuthConfig = crate::auth::AuthConfig::None;
        /// Statuses that are a success: the record's result is kept. Codes (200), classes
        /// ("2xx") or ranges ("200-204").
        success_statuses: StatusSet = StatusSet::success_default();
        /// Statuses a later attempt may fix: retried up to max_attempts. Any other status that
        /// is not a success fails its record at once.
        retry_statuses: StatusSet = StatusSet::retry_default();
        /// Statuses never retried, even when retry_statuses names them (`retry_statuses:
        /// ["5xx"]`, `permanent_statuses: [501]`).
        permanent_statuses: StatusSet = StatusSet::default();
        /// What the rate limit counts: `calls` (every attempt takes a token) or `records` (an
        /// attempt takes a token per record it carries: for APIs that meter records, with
        /// `batch`).
        rate_limit_counts: RateUnit = RateUnit::Calls;
    }
}

section! {
    /// Batch calls ([`crate::batch`]): each record renders `request.body` as one item, and a call
    /// carries up to `size` items as a JSON array.
    batch: pub struct BatchConfig {
        /// Records per call.
        size: usize, in 1..=10_000;
        /// A partial batch is sent once its first record has waited this long (and when its
        /// byte range ends).
        linger_ms: u64 = 100, in 0..=60_000;
        /// The body is `{"<wrap>": [items]}`; none: the body is the array itself.
        wrap: Option<String> = None;
        /// JSON pointer (RFC 6901) to the answer's array of items; "" (the default): the answer
        /// is the array.
        results: String = String::new();
        /// Items are matched to records by this key (of each rendered item and each answer
        /// item); none: by position, and the answer must have one item per record.
        id_field: Option<String> = None;
        /// JSON pointer within an answer's item: a value other than null there fails that
        /// record (with the value as its error) and only that record.
        item_error: Option<String> = None;
    }
}

section! {
    /// The per-job response cache: identical requests (method, URL, headers and body; the
    /// idempotency key aside) are sent once, and every record gets its own result line, marked
    /// `cached`. Kept by each worker container for the job it works on: a job spread over N
    /// containers sends a repeated request at most N times. Only successes are kept: a failed
    /// request is sent again for the next record that makes it.
    cache: pub struct CacheConfig: Default {
        /// Off by default: most APIs' answers to a repeated request can change.
        enabled: bool = false;
        /// Response bytes a container keeps; the oldest answers go first past it.
        max_bytes: u64 = 64 << 20, in 1..=1 << 30;
    }
}

section! {
    /// The format of results/ parts ([`crate::csv_output`]).
    output: pub struct OutputConfig: Default {
        /// `jsonl` (the default: one JSON object per result) or `csv`.
        format: OutputFormat = OutputFormat::Jsonl;
        /// CSV only: the columns after `offset`, each `record.<field>`, `response`,
        /// `response/<JSON pointer>`, `header.<name>` (a kept header), `status`, `attempts`,
        /// `latency_ms` or `cached`, or `{name: <column name>, value: <one of those>}`.
        columns: Vec<ColumnSpec> = Vec::new();
    }
}

section! {
    /// What of a successful answer is kept in results/ ([`crate::response`]).
    response: pub struct ResponseConfig: Default {
        /// What the body must be: `any` (kept as JSON when it is JSON, else as text), `json`
        /// (anything else fails the record) or `text` (kept as text, never parsed).
        expect: Expect = Expect::Any;
        /// An RFC 6901 JSON pointer (`/data/0/id`): only that part of a JSON body is kept; a
        /// body without it fails the record. Implies a JSON body.
        keep: Option<String> = None;
        /// Response headers kept in each result, by name.
        keep_headers: Vec<String> = Vec::new();
    }
}

section! {
    split: pub struct SplitConfig: Default {
        /// Bytes of input per manifest.
        chunk_bytes: u64 = 4 << 20, in 1..=1 << 30;
    }
}

/// A value a bounded setting holds: a number, or an optional one (checked when present).
trait Setting {
    type Value: Number;
    fn value(&self) -> Option<Self::Value>;
}

/// The numbers settings are made of. The test helpers give values just outside a range.
trait Number: Copy + PartialOrd + fmt::Display {
    #[cfg(test)]
    fn below(self) -> Option<Self>;
    #[cfg(test)]
    fn above(self) -> Option<Self>;
    /// NaN, for the types that have one (YAML spells it `.nan`; no range admits it).
    #[cfg(test)]
    fn nan() -> Option<Self>;
}

macro_rules! integer_settings {
    ($($t:ty),*) => {$(
        impl Number for $t {
            #[cfg(test)]
            fn below(self) -> Option<Self> {
                self.checked_sub(1)
            }
            #[cfg(test)]
            fn above(self) -> Option<Self> {
                self.checked_add(1)
            }
            #[cfg(test)]
            fn nan() -> Option<Self> {
                None
            }
        }
        impl Setting for $t {
            type Value = $t;
            fn value(&self) -> Option<$t> {
                Some(*self)
            }
        }
    )*};
}
integer_settings!(u32, u64, usize);

impl Number for f64 {
    #[cfg(test)]
    fn below(self) -> Option<Self> {
        Some(self - 0.001 * self.abs().max(1.0))
    }
    #[cfg(test)]
    fn above(self) -> Option<Self> {
        Some(self + 0.001 * self.abs().max(1.0))
    }
    #[cfg(test)]
    fn nan() -> Option<Self> {
        Some(f64::NAN)
    }
}

impl Setting for f64 {
    type Value = f64;
    fn value(&self) -> Option<f64> {
        Some(*self)
    }
}

impl<T: Number> Setting for Option<T> {
    type Value = T;
    fn value(&self) -> Option<T> {
        *self
    }
}

/// The values a setting allows.
trait Bound<T: Number> {
    fn admits(&self, value: T) -> bool;
    /// How the range reads in an error message.
    fn describe(&self) -> String;
    /// Values just outside (each must be rejected) and at the edges (each must be accepted).
    #[cfg(test)]
    fn outside_and_edges(&self) -> (Vec<T>, Vec<T>);
}

/// `lo..=hi`. `contains` is false for NaN, which YAML can spell as `.nan`.
impl<T: Number> Bound<T> for RangeInclusive<T> {
    fn admits(&self, value: T) -> bool {
        self.contains(&value)
    }
    fn describe(&self) -> String {
        format!("{}..={}", self.start(), self.end())
    }
    #[cfg(test)]
    fn outside_and_edges(&self) -> (Vec<T>, Vec<T>) {
        let outside = [self.start().below(), self.end().above(), T::nan()];
        (
            outside.into_iter().flatten().collect(),
            vec![*self.start(), *self.end()],
        )
    }
}

/// `(lo, hi]`: above `lo`, at most `hi`.
struct OpenClosed<T>(T, T);

impl<T: Number> Bound<T> for OpenClosed<T> {
    fn admits(&self, value: T) -> bool {
        value > self.0 && value <= self.1
    }
    fn describe(&self) -> String {
        format!("({}, {}]", self.0, self.1)
    }
    #[cfg(test)]
    fn outside_and_edges(&self) -> (Vec<T>, Vec<T>) {
        let outside = [Some(self.0), self.1.above(), T::nan()];
        (outside.into_iter().flatten().collect(), vec![self.1])
    }
}

fn admits<S: Setting>(setting: &S, bound: impl Bound<S::Value>) -> bool {
    setting.value().is_none_or(|v| bound.admits(v))
}

/// `range`, and at most `other` while `other` is in its own range.
fn at_most<T: Number>(range: RangeInclusive<T>, other: T, other_ok: bool) -> RangeInclusive<T> {
    let (lo, hi) = range.into_inner();
    if other_ok && other < hi {
        lo..=other
    } else {
        lo..=hi
    }
}

/// `range`, and at least `other` while `other` is in its own range.
fn at_least<T: Number>(range: RangeInclusive<T>, other: T, other_ok: bool) -> RangeInclusive<T> {
    let (lo, hi) = range.into_inner();
    if other_ok && other > lo {
        other..=hi
    } else {
        lo..=hi
    }
}

/// A bounded setting as the tests see it: its path, and YAML values outside and at the edges.
#[cfg(test)]
struct BoundedSetting {
    path: &'static str,
    outside: Vec<String>,
    edges: Vec<String>,
}

#[cfg(test)]
fn bounded_setting<S: Setting>(
    path: &'static str,
    _: &S,
    bound: impl Bound<S::Value>,
) -> BoundedSetting {
    // Rust's `{}` for NaN is `NaN`, which YAML reads as a string.
    let yaml = |v: S::Value| match v.to_string().as_str() {
        "NaN" => ".nan".to_string(),
        s => s.to_string(),
    };
    let (outside, edges) = bound.outside_and_edges();
    BoundedSetting {
        path,
        outside: outside.into_iter().map(yaml).collect(),
        edges: edges.into_iter().map(yaml).collect(),
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

/// Every error found in a config file (never none). Displayed one error per line, each naming
/// the file and the field. A YAML syntax or schema error (unknown key, wrong type) stops parsing
/// and comes alone; the checks after parsing report all they find.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(Vec<ConfigError>);

impl ConfigErrors {
    /// The errors, in the order the config's sections are checked.
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }

    /// The first error (there is always one).
    pub fn first(&self) -> &ConfigError {
        &self.0[0]
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        Self(vec![e])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects the errors of one file while validation goes on.
struct Errors<'a> {
    file: &'a str,
    list: Vec<ConfigError>,
}

impl<'a> Errors<'a> {
    fn new(file: &'a str) -> Self {
        Self {
            file,
            list: Vec::new(),
        }
    }

    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.list.push(ConfigError {
            file: self.file.into(),
            field: field.into(),
            message: message.into(),
        });
    }

    fn bound<S: Setting>(&mut self, field: &str, setting: &S, bound: impl Bound<S::Value>) {
        if let Some(value) = setting.value()
            && !bound.admits(value)
        {
            self.push(
                field,
                format!("{value} is out of range {}", bound.describe()),
            );
        }
    }

    fn finish(self) -> Result<(), ConfigErrors> {
        if self.list.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(self.list))
        }
    }
}

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];

impl PipelineConfig {
    /// Parses and validates a config. `file` names it in errors (a path or an S3 URI).
    pub fn from_yaml(file: &str, text: &str) -> Result<Self, ConfigErrors> {
        Self::from_yaml_with(file, text, &StackDefaults::default())
    }

    /// Parses a config with the stack's defaults applied (its `{{API_BASE_URL}}` replaced, its
    /// rate limit and chunk size where the config sets none), then validates the result.
    pub fn from_yaml_with(
        file: &str,
        text: &str,
        defaults: &StackDefaults,
    ) -> Result<Self, ConfigErrors> {
        let substituted;
        let text = if text.contains(API_BASE_URL_PLACEHOLDER) {
            let Some(base) = &defaults.api_base_url else {
                return Err(ConfigErrors(vec![ConfigError {
                    file: file.to_string(),
                    field: String::new(),
                    message: format!(
                        "{API_BASE_URL_PLACEHOLDER} is used, but no API base URL is set \
                         (the stack's ApiBaseUrl parameter, API_BASE_URL)"
                    ),
                }]));
            };
            substituted = text.replace(API_BASE_URL_PLACEHOLDER, base);
            substituted.as_str()
        } else {
            text
        };
        let mut config = Self::parse(file, text)?;
        // Which keys the config sets: the typed parse has filled in the code's defaults.
        let tree: serde_norway::Value = serde_norway::from_str(text).unwrap_or_default();
        let set = |section: &str, key: &str| tree.get(section).and_then(|s| s.get(key)).is_some();
        if let Some(r) = defaults
            .rate_limit_per_sec
            .filter(|_| !set("client", "rate_limit_per_sec"))
        {
            config.client.rate_limit_per_sec = r;
        }
        if let Some(b) = defaults
            .rate_limit_burst
            .filter(|_| !set("client", "rate_limit_burst"))
        {
            config.client.rate_limit_burst = b;
        }
        if let Some(c) = defaults
            .chunk_bytes
            .filter(|_| !set("split", "chunk_bytes"))
        {
            config.split.chunk_bytes = c;
        }
        config.validate(file)?;
        Ok(config)
    }

    fn parse(file: &str, text: &str) -> Result<Self, ConfigErrors> {
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
        Ok(config)
    }

    /// Checks everything that can be checked without the input's header, and reports every
    /// error found, not just the first.
    pub fn validate(&self, file: &str) -> Result<(), ConfigErrors> {
        let mut errors = Errors::new(file);
        if self.version != 1 {
            errors.push(
                "version",
                format!("unsupported version {}, expected 1", self.version),
            );
        }

        let mut names = BTreeSet::new();
        for (i, f) in self.input.fields.iter().enumerate() {
            let field = format!("input.fields[{i}].name");
            if f.name.is_empty() || f.name.contains(['{', '}']) {
                errors.push(&field, format!("invalid field name {:?}", f.name));
            } else if !names.insert(f.name.as_str()) {
                errors.push(&field, format!("duplicate field {:?}", f.name));
            }
            if f.ty == FieldType::Any && self.input.format == InputFormat::Csv {
                errors.push(
                    format!("input.fields[{i}].type"),
                    "type 'any' is for JSON Lines only",
                );
            }
        }
        let d = self.input.delimiter;
        if !d.is_ascii() || matches!(d, '"' | '\n' | '\r') {
            errors.push(
                "input.delimiter",
                format!(
                    "{d:?} cannot be a delimiter: use one ASCII character other than quote and newline"
                ),
            );
        }
        self.input.check_bounds(&mut errors);

        if !METHODS.contains(&self.request.method.as_str()) {
            errors.push(
                "request.method",
                format!(
                    "{:?} is not one of {}",
                    self.request.method,
                    METHODS.join(", ")
                ),
            );
        }
        let mut template_errors = Vec::new();
        let referenced = self.placeholders(&mut template_errors);
        for (field, message) in template_errors {
            errors.push(field, message);
        }
        if !self.input.fields.is_empty() {
            for (field, name) in &referenced {
                if !names.contains(name.as_str()) {
                    errors.push(
                        field,
                        format!("placeholder {{{name}}} names no field of input.fields"),
                    );
                }
            }
        }
        let h = &self.request.idempotency_header;
        if !h.is_empty() && http::header::HeaderName::from_bytes(h.as_bytes()).is_err() {
            errors.push(
                "request.idempotency_header",
                format!("{h:?} is not a valid header name"),
            );
        }
        for name in self.request.headers.keys() {
            if http::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                errors.push(format!("request.headers.{name}"), "not a valid header name");
            } else if crate::auth::is_credential_header(name) {
                errors.push(
                    format!("request.headers.{name}"),
                    "carries a credential, which must not be written in the config: \
                     use client.auth with a secret reference",
                );
            }
        }
        self.check_request_body(&mut errors);
        for (field, message) in self.client.auth.problems() {
            errors.push(format!("client.auth.{field}"), message);
        }
        self.request.check_bounds(&mut errors);

        self.job.check_bounds(&mut errors);
        self.client.check_bounds(&mut errors);
        if let Some(problem) = rate_limit_name_problem(&self.client.rate_limit_name) {
            errors.push("client.rate_limit_name", problem);
        }
        self.check_statuses(&mut errors);
        self.check_response(&mut errors);
        self.check_batch(&referenced, &mut errors);
        self.check_output(&mut errors);
        self.split.check_bounds(&mut errors);
        errors.finish()
    }

    /// Every item of the status lists names statuses, and no status is both a success and
    /// retried or permanent.
    fn check_statuses(&self, errors: &mut Errors<'_>) {
        let c = &self.client;
        let mut clean = true;
        for (name, set) in [
            ("client.success_statuses", &c.success_statuses),
            ("client.retry_statuses", &c.retry_statuses),
            ("client.permanent_statuses", &c.permanent_statuses),
        ] {
            for (i, message) in set.problems() {
                clean = false;
                errors.push(format!("{name}[{i}]"), message);
            }
        }
        if c.success_statuses.0.is_empty() {
            errors.push(
                "client.success_statuses",
                "names no status: no call could succeed",
            );
        }
        if let Some((status, field)) = clean
            .then(|| StatusRules::from_config(c).contradiction())
            .flatten()
        {
            errors.push(
                field,
                format!(
                    "{status} is also in client.success_statuses: a status is one or the other"
                ),
            );
        }
    }

    /// A batch's items are `request.body` JSON, its URL, headers and query the same for every
    /// record, its pointers valid.
    fn check_batch(&self, referenced: &[(String, String)], errors: &mut Errors<'_>) {
        self.cache.check_bounds(errors);
        if self.cache.enabled && self.batch.is_some() {
            errors.push(
                "cache.enabled",
                "the cache keeps one record's answers: it does not apply to batch calls",
            );
        }
        let Some(b) = &self.batch else {
            if self.client.rate_limit_counts == RateUnit::Records {
                errors.push(
                    "client.rate_limit_counts",
                    "records is for batch calls: without batch, a call carries one record",
                );
            }
            return;
        };
        b.check_bounds(errors);
        let r = &self.request;
        if r.body.is_none() {
            errors.push(
                "batch",
                "a batch call's body is a JSON array of request.body items: set request.body",
            );
        }
        for (set, field) in [
            (r.form.is_some(), "request.form"),
            (r.text.is_some(), "request.text"),
        ] {
            if set {
                errors.push(
                    field,
                    "a batch call's body is a JSON array of request.body items",
                );
            }
        }
        let mut seen = BTreeSet::new();
        for (field, name) in referenced {
            // A form or text body is reported above, as a whole.
            let body = ["request.body", "request.form", "request.text"];
            if !body.iter().any(|b| field.starts_with(b)) && seen.insert(field.as_str()) {
                errors.push(
                    field,
                    format!(
                        "{{{name}}} would differ between the records of one call: with batch, \
                         only request.body may use placeholders"
                    ),
                );
            }
        }
        for (field, pointer) in [
            ("batch.results", Some(&b.results)),
            ("batch.item_error", b.item_error.as_ref()),
        ] {
            if let Some(problem) = pointer.and_then(|p| crate::response::pointer_problem(p)) {
                errors.push(field, problem);
            }
        }
        if b.wrap.as_deref() == Some("") {
            errors.push(
                "batch.wrap",
                "an empty key: leave wrap out for a bare array",
            );
        }
        if let Some(id) = &b.id_field {
            let has_key =
                matches!(&r.body, Some(serde_json::Value::Object(o)) if o.contains_key(id));
            if id.is_empty() || (r.body.is_some() && !has_key) {
                errors.push(
                    "batch.id_field",
                    format!("{id:?} is not a key of request.body, whose items it matches"),
                );
            }
        }
    }

    /// CSV columns: present for CSV alone, each naming a value, headers among those kept, names
    /// unique.
    fn check_output(&self, errors: &mut Errors<'_>) {
        let o = &self.output;
        o.check_bounds(errors);
        match (o.format, o.columns.is_empty()) {
            (OutputFormat::Csv, true) => {
                errors.push("output.columns", "CSV results need their columns");
            }
            (OutputFormat::Jsonl, false) => {
                errors.push("output.columns", "columns are for output.format csv");
            }
            _ => {}
        }
        let kept: BTreeSet<String> = (self.response.keep_headers.iter())
            .map(|h| h.to_ascii_lowercase())
            .collect();
        let mut names = BTreeSet::from(["offset".to_string()]);
        for (i, column) in o.columns.iter().enumerate() {
            let field = format!("output.columns[{i}]");
            match column.parse() {
                Err(problem) => errors.push(field, problem),
                Ok((name, source)) => {
                    if let Source::Header(h) = &source
                        && !kept.contains(h)
                    {
                        errors.push(
                            &field,
                            format!("header {h:?} is not kept: add it to response.keep_headers"),
                        );
                    }
                    if !names.insert(name.clone()) {
                        errors.push(field, format!("a second column named {name:?}"));
                    }
                }
            }
        }
    }

    /// The JSON pointer, its agreement with `expect`, and the header names.
    fn check_response(&self, errors: &mut Errors<'_>) {
        let r = &self.response;
        r.check_bounds(errors);
        if let Some(pointer) = &r.keep {
            if let Some(problem) = crate::response::pointer_problem(pointer) {
                errors.push("response.keep", problem);
            }
            if r.expect == Expect::Text {
                errors.push(
                    "response.keep",
                    "points into a JSON body, but response.expect is text",
                );
            }
        }
        let mut seen = BTreeSet::new();
        for (i, name) in r.keep_headers.iter().enumerate() {
            let field = format!("response.keep_headers[{i}]");
            if http::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                errors.push(field, format!("{name:?} is not a valid header name"));
            } else if !seen.insert(name.to_ascii_lowercase()) {
                errors.push(field, format!("{name:?} is named twice"));
            }
        }
    }

    /// The body keys (one at most), the text body's Content-Type, the query names and the
    /// User-Agent.
    fn check_request_body(&self, errors: &mut Errors<'_>) {
        let r = &self.request;
        let bodies: Vec<&str> = [
            ("request.body", r.body.is_some()),
            ("request.form", r.form.is_some()),
            ("request.text", r.text.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        if let [_, second, ..] = bodies.as_slice() {
            errors.push(
                *second,
                format!(
                    "a request has one body: set only one of {} (found {})",
                    "request.body, request.form, request.text",
                    bodies.join(" and ")
                ),
            );
        }
        if let Some(ct) = &r.content_type {
            if r.text.is_none() {
                errors.push(
                    "request.content_type",
                    "is the Content-Type of a request.text body; request.body is sent as \
                     application/json and request.form as application/x-www-form-urlencoded",
                );
            } else if ct.is_empty() || http::HeaderValue::from_str(ct).is_err() {
                errors.push(
                    "request.content_type",
                    format!("{ct:?} is not a valid header value"),
                );
            }
        }
        let has_header = |name: &str| r.headers.keys().any(|h| h.eq_ignore_ascii_case(name));
        if let Some(ua) = &r.user_agent {
            if ua.is_empty() || http::HeaderValue::from_str(ua).is_err() {
                errors.push(
                    "request.user_agent",
                    format!("{ua:?} is not a valid header value"),
                );
            } else if has_header("user-agent") {
                errors.push(
                    "request.user_agent",
                    "is also set in request.headers: keep one",
                );
            }
        }
        for name in r.query.keys() {
            if name.is_empty() {
                errors.push("request.query", "a query parameter needs a name");
            }
        }
        for name in r.form.iter().flat_map(BTreeMap::keys) {
            if name.is_empty() {
                errors.push("request.form", "a form field needs a name");
            }
        }
    }

    /// Every placeholder of the request, as (config field path, placeholder name).
    /// Also checks the templates' syntax and the URL's fixed parts; the first problem found is
    /// the error ([`PipelineConfig::validate`] reports them all).
    pub fn referenced_fields(&self) -> Result<Vec<(String, String)>, (String, String)> {
        let mut errors = Vec::new();
        let out = self.placeholders(&mut errors);
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// The placeholders of every template that parses; each template problem goes to `errors`
    /// as (config field path, message).
    fn placeholders(&self, errors: &mut Vec<(String, String)>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let url_field = || "request.url".to_string();
        match Template::parse(&self.request.url) {
            Ok(url) => {
                if let Err(m) = template::check_url_template(&self.request.url, &url) {
                    errors.push((url_field(), m));
                }
                out.extend(url.placeholders().map(|p| (url_field(), p.to_string())));
            }
            Err(m) => errors.push((url_field(), m)),
        }
        for (name, value) in &self.request.headers {
            let field = format!("request.headers.{name}");
            if value.contains(['\r', '\n']) {
                errors.push((field.clone(), "CR or LF in a header value".into()));
            }
            match Template::parse(value) {
                Ok(t) => out.extend(t.placeholders().map(|p| (field.clone(), p.to_string()))),
                Err(m) => errors.push((field, m)),
            }
        }
        let templates = self
            .request
            .query
            .iter()
            .map(|(name, value)| (format!("request.query.{name}"), value))
            .chain(
                self.request
                    .form
                    .iter()
                    .flatten()
                    .map(|(name, value)| (format!("request.form.{name}"), value)),
            )
            .chain(
                self.request
                    .text
                    .iter()
                    .map(|value| ("request.text".to_string(), value)),
            );
        for (field, value) in templates {
            match Template::parse(value) {
                Ok(t) => out.extend(t.placeholders().map(|p| (field.clone(), p.to_string()))),
                Err(m) => errors.push((field, m)),
            }
        }
        if let Some(body) = &self.request.body {
            match BodyTemplate::parse(body) {
                Ok(t) => out.extend(
                    t.placeholders()
                        .into_iter()
                        .map(|p| ("request.body".to_string(), p)),
                ),
                Err(m) => errors.push(("request.body".to_string(), m)),
            }
        }
        out
    }
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

    fn errors_of(yaml: &str) -> ConfigErrors {
        PipelineConfig::from_yaml("pipelines/p.yaml", yaml).expect_err("config should be rejected")
    }

    /// The one error of a config with one mistake.
    fn error_of(yaml: &str) -> ConfigError {
        let errors = errors_of(yaml);
        assert_eq!(
            errors.errors().len(),
            1,
            "expected one error, got:\n{errors}"
        );
        errors.first().clone()
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
    fn auth_takes_secret_references_and_refuses_literals() {
        let c = PipelineConfig::from_yaml(
            "p.yaml",
            &format!("{GOOD}client: {{ auth: {{ type: bearer, token: {{ secrets_manager: prod/api }} }} }}\n"),
        )
        .unwrap();
        assert!(matches!(
            c.client.auth,
            crate::auth::AuthConfig::Bearer { .. }
        ));

        let e = error_of(&format!(
            "{GOOD}client: {{ auth: {{ type: bearer, token: tok-live-42 }} }}\n"
        ));
        let text = e.to_string();
        assert!(text.contains("pipelines/p.yaml"), "{text}");
        // serde names the section and the line of the literal.
        assert!(
            text.contains("client") && text.contains("line 12"),
            "{text}"
        );
        assert!(text.contains("must be a reference"), "{text}");
        assert!(!text.contains("tok-live-42"), "{text}");

        let e = error_of(&format!(
            "{GOOD}client: {{ auth: {{ type: api_key, key: {{ secrets_manager: k }} }} }}\n"
        ));
        assert_eq!(e.field, "client.auth.header");
    }

    #[test]
    fn credentials_in_literal_headers_are_refused() {
        let yaml = GOOD.replace(
            "{ X-Source: fanout }",
            "{ X-Source: fanout, Authorization: Bearer abc }",
        );
        let e = error_of(&yaml);
        assert_eq!(e.field, "request.headers.Authorization");
        assert!(e.to_string().contains("client.auth"), "{e}");
        assert!(!e.to_string().contains("Bearer abc"), "{e}");
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
        // The duplicate leaves {email} naming no field: that is reported too.
        let dup = GOOD.replace("- { name: email }", "- { name: id }");
        let errors = errors_of(&dup);
        let fields: Vec<&str> = errors.errors().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["input.fields[1].name", "request.url", "request.body"],
            "{errors}"
        );
        let any = GOOD.replace("- { name: email }", "- { name: email, type: any }");
        assert_eq!(error_of(&any).field, "input.fields[1].type");
    }

    #[test]
    fn unbalanced_brace_in_body_names_body() {
        let e = error_of(&GOOD.replace("note: \"user {email}\"", "note: \"user {email\""));
        assert_eq!(e.field, "request.body");
    }

    /// Today's defaults, spelled out: a change to any declared default fails here.
    #[test]
    fn minimal_config_has_todays_defaults() {
        use crate::response::StatusSpec;
        let bad = "input: { format: csv, quoting: loose }\nrequest: { url: \"https://h/x\" }\n";
        let text = PipelineConfig::from_yaml("p.yaml", bad)
            .unwrap_err()
            .to_string();
        assert!(text.contains("input.quoting"), "{text}");
        assert!(
            text.contains("lenient") && text.contains("strict"),
            "{text}"
        );
        let minimal = "input: { format: jsonl }\nrequest: { url: \"https://h/x\" }\n";
        let c = PipelineConfig::from_yaml("p.yaml", minimal).unwrap();
        let expected = PipelineConfig {
            version: 1,
            input: InputConfig {
                format: InputFormat::Jsonl,
                fields: vec![],
                delimiter: ',',
                max_record_bytes: 1 << 20,
                quoting: Quoting::Lenient,
            },
            request: RequestConfig {
                method: "GET".into(),
                url: "https://h/x".into(),
                headers: BTreeMap::new(),
                body: None,
                form: None,
                text: None,
                content_type: None,
                query: BTreeMap::new(),
                user_agent: None,
                idempotency_header: "Idempotency-Key".into(),
            },
            client: ClientConfig {
                concurrency: 64,
                timeout_ms: 10_000,
                max_attempts: 3,
                max_response_bytes: 16 * 1024,
                concurrency_min: 1,
                concurrency_latency_ratio: 2.0,
                concurrency_decrease_ratio: 0.5,
                backoff_base_ms: 100,
                backoff_max_ms: 5_000,
                retry_after_max_ms: 30_000,
                retry_budget_percent: 20,
                retry_budget_min_per_sec: 10,
                breaker_failure_rate: 0.5,
                breaker_window_secs: 10,
                breaker_min_calls: 20,
                breaker_open_secs: 5,
                rate_limit_name: "api".into(),
                rate_limit_per_sec: 5_000,
                rate_limit_burst: 500,
                auth: crate::auth::AuthConfig::None,
                success_statuses: StatusSet(vec![StatusSpec::Text("2xx".into())]),
                retry_statuses: StatusSet([429, 502, 503, 504].map(StatusSpec::Code).to_vec()),
                permanent_statuses: StatusSet(vec![]),
                rate_limit_counts: RateUnit::Calls,
            },
            split: SplitConfig {
                chunk_bytes: 4 << 20,
            },
            job: JobConfig {
                tolerated_failure_count: None,
                tolerated_failure_percent: None,
            },
            response: ResponseConfig {
                expect: Expect::Any,
                keep: None,
                keep_headers: vec![],
            },
            batch: None,
            cache: CacheConfig {
                enabled: false,
                max_bytes: 64 << 20,
            },
            output: OutputConfig {
                format: OutputFormat::Jsonl,
                columns: vec![],
            },
        };
        assert_eq!(c, expected);
        assert_eq!(c.client, ClientConfig::default());
        assert_eq!(c.split, SplitConfig::default());
        assert_eq!(c.job, JobConfig::default());
    }

    #[test]
    fn config_with_three_mistakes_reports_all_three() {
        let yaml = GOOD
            .replace("method: POST", "method: FETCH")
            .replace("email={email}", "email={mail}");
        let yaml = format!("{yaml}client: {{ concurrency: 0 }}\n");
        let errors = errors_of(&yaml);
        let fields: Vec<&str> = errors.errors().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["request.method", "request.url", "client.concurrency"],
            "{errors}"
        );
        assert!(errors.errors().iter().all(|e| e.file == "pipelines/p.yaml"));
        assert_eq!(
            errors.to_string(),
            "pipelines/p.yaml: request.method: \"FETCH\" is not one of GET, POST, PUT, PATCH, DELETE, HEAD\n\
             pipelines/p.yaml: request.url: placeholder {mail} names no field of input.fields\n\
             pipelines/p.yaml: client.concurrency: 0 is out of range 1..=4096"
        );
    }

    #[test]
    fn template_and_header_problems_are_all_reported() {
        let yaml = GOOD
            .replace(
                "https://api.example.com/users/{id}",
                "https://{id}.example.com/users",
            )
            .replace("X-Source: fanout", "\"Bad Header\": x, X-Ok: \"{nope}\"")
            .replace("note: \"user {email}\"", "note: \"user {email\"");
        let errors = errors_of(&format!(
            "{yaml}job: {{ tolerated_failure_percent: -1 }}\nsplit: {{ chunk_bytes: 0 }}\n"
        ));
        let fields: BTreeSet<&str> = errors.errors().iter().map(|e| e.field.as_str()).collect();
        let expected = BTreeSet::from([
            "request.url",
            "request.headers.Bad Header",
            "request.headers.X-Ok",
            "request.body",
            "job.tolerated_failure_percent",
            "split.chunk_bytes",
        ]);
        assert_eq!(fields, expected, "{errors}");
        assert_eq!(errors.to_string().lines().count(), errors.errors().len());
    }

    #[test]
    fn relation_is_not_reported_again_when_its_other_setting_is_out_of_range() {
        // concurrency_min is at most concurrency, backoff_max_ms at least backoff_base_ms: with
        // concurrency or backoff_base_ms out of range, only that setting is wrong.
        let e = error_of(&format!("{GOOD}client: {{ concurrency: 0 }}\n"));
        assert_eq!(e.field, "client.concurrency");
        let e = error_of(&format!("{GOOD}client: {{ backoff_base_ms: 60001 }}\n"));
        assert_eq!(e.field, "client.backoff_base_ms");
        // The static range still holds when the other setting is wrong.
        let errors = errors_of(&format!(
            "{GOOD}client: {{ concurrency: 0, concurrency_min: 5000 }}\n"
        ));
        let fields: Vec<&str> = errors.errors().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["client.concurrency", "client.concurrency_min"]);
        assert_eq!(errors.errors()[1].message, "5000 is out of range 1..=4096");
        // And the relation reads as today's range.
        let e = error_of(&format!(
            "{GOOD}client: {{ concurrency: 8, concurrency_min: 9 }}\n"
        ));
        assert_eq!(e.message, "9 is out of range 1..=8");
    }

    /// Every setting declared with a range: values just outside it are rejected, each with one
    /// error naming the file and the setting's path; its edges are accepted. A setting declared
    /// with a range is covered without touching this test.
    #[test]
    fn every_bounded_setting_rejects_values_outside_its_range() {
        let good = PipelineConfig::from_yaml("p.yaml", GOOD).unwrap();
        let settings: Vec<BoundedSetting> = [
            good.input.bounded(),
            good.request.bounded(),
            good.client.bounded(),
            good.split.bounded(),
            good.job.bounded(),
            good.response.bounded(),
            good.cache.bounded(),
            good.output.bounded(),
        ]
        .into_iter()
        .flatten()
        .collect();
        let paths: Vec<&str> = settings.iter().map(|s| s.path).collect();
        for expected in [
            "input.max_record_bytes",
            "client.concurrency",
            "client.concurrency_min",
            "client.breaker_failure_rate",
            "client.rate_limit_burst",
            "split.chunk_bytes",
            "job.tolerated_failure_percent",
        ] {
            assert!(paths.contains(&expected), "{expected} not in {paths:?}");
        }
        check_bounded_settings(&good, &settings);
        // The batch section, in a config that batches (its URL the same for every record).
        let batching = PipelineConfig::from_yaml(
            "p.yaml",
            "input: {format: jsonl}\nrequest: {method: POST, url: 'http://h/x', body: {id: '{id}'}}\n\
             batch: {size: 10}\n",
        )
        .unwrap();
        let settings = batching.batch.as_ref().unwrap().bounded();
        let paths: Vec<&str> = settings.iter().map(|s| s.path).collect();
        assert_eq!(paths, ["batch.size", "batch.linger_ms"]);
        check_bounded_settings(&batching, &settings);
    }

    fn check_bounded_settings(good: &PipelineConfig, settings: &[BoundedSetting]) {
        let good_yaml: serde_norway::Value = serde_norway::to_value(good).unwrap();
        let with = |path: &str, value: &str| {
            let (section, key) = path.split_once('.').unwrap();
            let mut doc = good_yaml.clone();
            doc[section][key] = serde_norway::from_str(value).unwrap();
            serde_norway::to_string(&doc).unwrap()
        };
        for s in settings {
            assert!(!s.outside.is_empty(), "{}", s.path);
            for value in &s.outside {
                let e = error_of(&with(s.path, value));
                assert_eq!(e.field, s.path, "{value}: {e}");
                assert!(
                    e.to_string()
                        .starts_with(&format!("pipelines/p.yaml: {}: ", s.path)),
                    "{e}"
                );
                assert!(e.message.contains("is out of range"), "{e}");
            }
            // An edge is admitted by the setting's own range (another setting related to it may
            // then be out of its range: backoff_base_ms = 60000 with backoff_max_ms = 5000).
            for value in &s.edges {
                if let Err(errors) = PipelineConfig::from_yaml("p.yaml", &with(s.path, value)) {
                    assert!(
                        errors.errors().iter().all(|e| e.field != s.path),
                        "{} = {value} should be accepted: {errors}",
                        s.path
                    );
                }
            }
        }
    }

    #[test]
    fn defaulted_key_set_to_null_is_still_a_type_error() {
        let e = error_of(&format!("{GOOD}client: {{ concurrency: ~ }}\n"));
        assert!(e.message.contains("invalid type"), "{e}");
    }

    #[test]
    fn stack_defaults_fill_what_the_config_leaves_out() {
        let defaults = StackDefaults {
            api_base_url: Some("https://api.test/v1".into()),
            rate_limit_per_sec: Some(100),
            rate_limit_burst: Some(7),
            chunk_bytes: Some(65_536),
        };
        let yaml = "input: {format: jsonl}\nrequest: {url: '{{API_BASE_URL}}/items/{id}'}\n";
        let c = PipelineConfig::from_yaml_with("p.yaml", yaml, &defaults).unwrap();
        let request = serde_json::to_string(&c.request).unwrap();
        assert!(request.contains("https://api.test/v1/items/"), "{request}");
        assert_eq!(
            (
                c.client.rate_limit_per_sec,
                c.client.rate_limit_burst,
                c.split.chunk_bytes
            ),
            (100, 7, 65_536)
        );
        // What the config sets wins.
        let own =
            format!("{yaml}client: {{rate_limit_per_sec: 40}}\nsplit: {{chunk_bytes: 1000}}\n");
        let c = PipelineConfig::from_yaml_with("p.yaml", &own, &defaults).unwrap();
        assert_eq!(
            (
                c.client.rate_limit_per_sec,
                c.client.rate_limit_burst,
                c.split.chunk_bytes
            ),
            (40, 7, 1000)
        );
        // Without stack defaults: the code's, and the placeholder is an error that says why.
        let err = PipelineConfig::from_yaml("p.yaml", yaml)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("p.yaml") && err.contains("ApiBaseUrl"),
            "{err}"
        );
        let c = PipelineConfig::from_yaml("p.yaml", &own.replace("{{API_BASE_URL}}", "http://h"))
            .unwrap();
        assert_eq!(c.client.rate_limit_burst, 500);
        // The result is validated after substitution: a base URL that makes the URL invalid.
        let bad = StackDefaults {
            api_base_url: Some("not a url".into()),
            ..StackDefaults::default()
        };
        let err = PipelineConfig::from_yaml_with("p.yaml", yaml, &bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("request.url"), "{err}");
    }

    #[test]
    fn request_body_kinds_are_exclusive_and_new_keys_name_their_field() {
        let e = PipelineConfig::from_yaml(
            "p.yaml",
            "input: {format: jsonl}\nrequest: {url: 'http://h/x', body: {a: 1}, text: 'x', \
             user_agent: \"bad\\nua\", content_type: \"\", query: {q: '{'}}\n",
        )
        .unwrap_err();
        let text = e.to_string();
        for field in [
            "request.text",
            "request.user_agent",
            "request.content_type",
            "request.query.q",
        ] {
            assert!(text.contains(field), "{field} missing from {text}");
        }
        let e = PipelineConfig::from_yaml(
            "p.yaml",
            "input: {format: jsonl}\nrequest: {url: 'http://h/x', form: {a: '{v}'}, content_type: text/csv}\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("request.content_type"), "{e}");
    }

    #[test]
    fn status_lists_and_response_keys_name_their_field() {
        let base = "input: {format: jsonl}\nrequest: {url: 'http://h/x'}\n";
        let e = errors_of(&format!(
            "{base}client: {{success_statuses: [2xx, 700], retry_statuses: [5xx, nope], \
             permanent_statuses: ['500-4']}}\nresponse: {{keep: data, keep_headers: [ETag, etag, 'bad name']}}\n"
        ));
        let fields: Vec<&str> = e.errors().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "client.success_statuses[1]",
                "client.retry_statuses[1]",
                "client.permanent_statuses[0]",
                "response.keep",
                "response.keep_headers[1]",
                "response.keep_headers[2]",
            ],
            "{e}"
        );
        let e = error_of(&format!(
            "{base}client: {{success_statuses: ['200-404'], retry_statuses: [429, 404]}}\n"
        ));
        assert_eq!(e.field, "client.retry_statuses");
        assert!(
            e.message.contains("404 is also in client.success_statuses"),
            "{e}"
        );
        let e = error_of(&format!("{base}response: {{expect: text, keep: /a}}\n"));
        assert_eq!(e.field, "response.keep");
        let e = error_of(&format!("{base}client: {{success_statuses: []}}\n"));
        assert_eq!(e.field, "client.success_statuses");
        let e = errors_of(&format!("{base}response: {{expect: xml}}\n"));
        assert!(e.to_string().contains("expect"), "{e}");
        let ok = PipelineConfig::from_yaml(
            "p.yaml",
            &format!(
                "{base}client: {{success_statuses: [200, '202-204'], retry_statuses: [5xx], \
                 permanent_statuses: [501]}}\nresponse: {{expect: json, keep: /data/0, keep_headers: [ETag]}}\n"
            ),
        )
        .unwrap();
        let rules = StatusRules::from_config(&ok.client);
        assert!(rules.is_success(203) && !rules.is_success(201));
        assert!(rules.is_retried(500) && !rules.is_retried(501) && !rules.is_retried(429));
        // The config round-trips through JSON (the ledger keeps a job's config so).
        let json = serde_json::to_string(&ok).unwrap();
        assert_eq!(serde_json::from_str::<PipelineConfig>(&json).unwrap(), ok);
    }

    #[test]
    fn a_batch_needs_a_json_body_and_one_url_for_all_its_records() {
        let e = errors_of(
            "input: {format: jsonl}\nrequest: {method: POST, url: 'http://h/x/{id}', \
             query: {q: '{name}'}, form: {a: '{id}'}}\n\
             batch: {size: 0, results: data, id_field: id, wrap: ''}\nclient: {rate_limit_counts: records}\n",
        );
        let fields: Vec<&str> = e.errors().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "batch.size",
                "batch",
                "request.form",
                "request.url",
                "request.query.q",
                "batch.results",
                "batch.wrap",
            ],
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("only request.body may use placeholders"),
            "{e}"
        );
        let e = error_of(
            "input: {format: jsonl}\nrequest: {method: POST, url: 'http://h/x', body: {n: '{id}'}}\n\
             batch: {size: 5, id_field: id}\n",
        );
        assert_eq!(e.field, "batch.id_field");
        let e = error_of(
            "input: {format: jsonl}\nrequest: {url: 'http://h/x/{id}'}\nclient: {rate_limit_counts: records}\n",
        );
        assert_eq!(e.field, "client.rate_limit_counts");
        let ok = PipelineConfig::from_yaml(
            "p.yaml",
            "input: {format: jsonl}\nrequest: {method: POST, url: 'http://h/x', body: {id: '{id}'}}\n\
             batch: {size: 25, wrap: items, results: /results, id_field: id, item_error: /error}\n\
             client: {rate_limit_counts: records}\n",
        )
        .unwrap();
        let b = ok.batch.as_ref().unwrap();
        assert_eq!(
            (b.size, b.linger_ms, b.wrap.as_deref()),
            (25, 100, Some("items"))
        );
        let json = serde_json::to_string(&ok).unwrap();
        assert_eq!(serde_json::from_str::<PipelineConfig>(&json).unwrap(), ok);
    }
}
