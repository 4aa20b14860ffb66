//! The splitter's wiring: its Lambda environment → the AWS adapters → the handler's deps.
//! The local runner (`fanout local run`) builds its splitter through the same function.

use std::sync::Arc;

use fanout_aws::{cloudwatch, dynamo, required_env, s3, sqs};
use fanout_core::metrics::{DimensionSets, JobMetrics};
use fanout_handlers::splitter::SplitterDeps;

/// The splitter's dependencies from its Lambda environment (`QUEUE_URL`, `TABLE_NAME`).
pub fn deps_from_env(config: &aws_config::SdkConfig) -> anyhow::Result<SplitterDeps> {
    Ok(deps(
        config,
        &required_env("QUEUE_URL")?,
        &required_env("TABLE_NAME")?,
        DimensionSets::PipelineAndAggregate,
    ))
}

/// The splitter's dependencies: S3, the manifest queue, the ledger and job metrics published
/// with `sets`.
pub fn deps(
    config: &aws_config::SdkConfig,
    queue_url: &str,
    table: &str,
    sets: DimensionSets,
) -> SplitterDeps {
    SplitterDeps {
        store: Arc::new(s3::S3Store::new(fanout_aws::s3_client(config))),
        queue: Arc::new(sqs::SqsQueue::new(
            fanout_aws::sqs_client(config),
            queue_url,
        )),
        ledger: Arc::new(dynamo::DynamoLedger::new(
            fanout_aws::dynamodb_client(config),
            table,
        )),
        metrics: JobMetrics::new(
            Arc::new(cloudwatch::CloudWatchSink::new(
                fanout_aws::cloudwatch_client(config),
            )),
            sets,
        ),
    }
}
