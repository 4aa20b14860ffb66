//! The pure core of s3-api-fanout: what a job is, planned and accounted for, without I/O.
//!
//! | module | idea |
//! | --- | --- |
//! | [`config`] | the pipeline config: its schema, defaults and validation |
//! | [`auth`] | how a pipeline authenticates to its API (strategies, secret references) |
//! | [`batch`] | N records per call: the array body, the answer's items back to their records |
//! | [`template`] | `{field}` placeholders in URLs, headers and bodies |
//! | [`range`], [`framer`] | byte ranges of an object and the records that start in them |
//! | [`ranged_body`] | the exact bytes of a ranged GET, whether the server sent 206 or 200 |
//! | [`record`] | a framed record parsed into fields (CSV, JSON Lines) |
//! | [`quote`] | CSV quote state across byte ranges: transition functions, the start guess, redo |
//! | [`request`] | a record rendered into an HTTP request |
//! | [`response`] | what a status means (success, retry, final) and what of an answer is kept |
//! | [`secret`] | where a secret lives (a config's reference) and its value, which never prints |
//! | [`check`] | the verdict on one record: send, reject (with its reason) or blank |
//! | [`manifest`] | a unit of work on the queue, and every object key of a job |
//! | [`continuation`] | cutting a manifest at a deadline, and the stop times of an invocation |
//! | [`release`] | outcomes finished in any order, handed on in offset order (a worker's memory bound) |
//! | [`claims`] | manifest claims: outcomes and lengths |
//! | [`ledger`] | job and manifest records, counts, statuses |
//! | [`tolerance`] | when a job's failures stop it |
//! | [`output`] | result, failed and rejected lines |
//! | [`csv_output`] | CSV results: the columns a pipeline selects, one row per result |
//! | [`summary`] | the job summary, built from the ledger |
//! | [`latency`] | latency histograms and percentiles |
//! | [`metrics`] | metric names, datums and their batching |
//! | [`rate_override`] | an operator's override of a fleet limit's rate (`fanout limit set`) |
//! | [`ports`] | one small trait per external capability; adapters implement them |
//!
//! Nothing here links an AWS SDK or an HTTP client: the adapters (`fanout-aws`), the API client
//! (`fanout-client`) and the handlers (`fanout-handlers`) depend on this crate, never the
//! other way round.

pub mod auth;
pub mod batch;
pub mod check;
pub mod claims;
pub mod config;
pub mod continuation;
pub mod csv_output;
pub mod framer;
#[doc(hidden)]
pub mod fuzzing;
pub mod latency;
pub mod ledger;
pub mod manifest;
pub mod metrics;
pub mod oauth2;
pub mod output;
pub mod ports;
pub mod quote;
pub mod range;
pub mod ranged_body;
pub mod rate_override;
pub mod record;
pub mod release;
pub mod request;
pub mod response;
pub mod secret;
pub mod stack_defaults;
pub mod summary;
pub mod template;
pub mod tolerance;
