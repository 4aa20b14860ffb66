//! The splitter's wiring: its Lambda environment → the AWS adapters → the handler's deps.
//! The local runner (`fanout local run`) builds its splitter through the same function.

use std::sync::Arc;

use fanout_aws::{cloudwatch, dynamo, required_env, s3, sqs};
use fanout_core::metrics::{DimensionSets, JobMetrics};
use fanout_core::stack_defaults::StackDefaults;
use fanout_handlers::splitter::SplitterDeps;

/// The splitter's dependencies from its Lambda environment: `QUEUE_URL`, `TABLE_NAME`, and the
/// stack's defaults for pipelines (`API_BASE_URL`, `RATE_LIMIT_PER_SECOND`, `RATE_LIMIT_BURST`,
/// `CHUNK_BYTES`: [`StackDefaults`]). A bad value fails the cold start, naming the variable.
pub fn deps_from_env(config: &aws_config::SdkConfig) -> anyhow::Result<SplitterDeps> {
    let defaults = StackDefaults::from_vars(|name| std::env::var(name).ok())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(SplitterDeps {
        defaults,
        ..deps(
            config,
            &required_env("QUEUE_URL")?,
            &required_env("TABLE_NAME")?,
            DimensionSets::PipelineAndAggregate,
        )
    })
}

/// The splitter's dependencies: S3, the manifest queue, the ledger and job metrics published
/// with `sets`; no stack defaults (set `defaults` for them).
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
        defaults: StackDefaults::default(),
    }
}
