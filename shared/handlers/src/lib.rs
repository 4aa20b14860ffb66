//! The handlers of s3-api-fanout: they adapt events (S3 uploads, SQS batches, a replay request)
//! to the core, through the ports, with the API client.
//!
//! | module | handles |
//! | --- | --- |
//! | [`splitter`] | an S3 upload: plan the ranges, enqueue the manifests, open the job |
//! | [`worker`] | an SQS batch of manifests: read → call → write → commit → after |
//! | [`part_writer`] | an output object written as its lines come: one PUT, or a multipart upload |
//! | [`replay`] | a finished job's dead letters and failed records, sent again |
//! | [`events`] | Lambda events built from their parts (the local runner, tests) |
//! | [`telemetry`] | JSON logs for Lambda, text for a terminal |
//! | [`fakes`] | in-memory fakes of every port, shared by the handlers' unit tests |
//!
//! No AWS SDK here: the function binaries (`functions/`) wire the AWS adapters into the deps.

pub mod events;
#[cfg(any(test, feature = "fakes"))]
pub mod fakes;
pub mod part_writer;
pub mod replay;
pub mod splitter;
pub mod telemetry;
pub mod worker;

#[cfg(test)]
mod summary_tests;
