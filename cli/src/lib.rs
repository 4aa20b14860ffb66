//! The `fanout` CLI's library: local tooling that never ships in a Lambda binary.
//!
//! | module | what |
//! | --- | --- |
//! | [`local`] | the local stack (queues, table, bucket on the local AWS) and the local runner: the splitter invoked with an S3 event, simulated worker containers polling SQS as Lambda's event source mapping does |
//! | [`deployed`] | a stack deployed from template.yaml, found by name (`--stack`): its resources and pipeline defaults from CloudFormation |
//! | [`plan`] | the capacity and cost model of `fanout plan` (pricing table in `cli/pricing/`) |
//! | [`progress`] | a job's progress from the ledger (`fanout status`) |
//! | [`limit`] | a fleet limit's override and leased rate (`fanout limit`) |
//! | [`report`] | the HTML job report (`fanout report`) |
//! | [`dashboard`] | the template's dashboard drawn from GetMetricData (`fanout dashboard`) |
//! | [`charts`] | SVG charts for the report and the dashboard |
//!
//! The Lambda binaries (`functions/`) do not depend on this crate; `infra/check-deps.sh` fails
//! `make test` if their dependency graph ever reaches it.

pub mod charts;
pub mod dashboard;
pub mod deployed;
pub mod limit;
pub mod local;
pub mod plan;
pub mod progress;
pub mod report;
