//! s3-api-fanout: call a rate-limited REST API once per record of a big S3 object.
//!
//! Pure planning and parsing ([`range`], [`framer`], [`config`], [`template`], [`record`],
//! [`request`]) is kept apart from I/O; handlers ([`splitter`], [`worker`]) depend on the
//! [`ports`], which the [`aws`] adapters and the [`client`] stack implement.

pub mod aws;
pub mod charts;
pub mod check;
pub mod claims;
pub mod client;
pub mod config;
pub mod continuation;
pub mod dashboard;
pub mod framer;
#[doc(hidden)]
pub mod fuzzing;
pub mod latency;
pub mod ledger;
pub mod limiter;
pub mod local;
pub mod manifest;
pub mod metrics;
pub mod output;
pub mod ports;
pub mod progress;
pub mod range;
pub mod record;
pub mod replay;
pub mod report;
pub mod request;
pub mod splitter;
pub mod summary;
pub mod telemetry;
pub mod template;
pub mod tolerance;
pub mod worker;
