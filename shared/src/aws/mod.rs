//! AWS adapters: the ports implemented on the real SDK clients.
//!
//! Clients honour `AWS_ENDPOINT_URL` (the SDK reads it), which is how the local stack points them
//! at the moto server; S3 then uses path-style addressing, which local emulators need.

pub mod breaker;
pub mod cloudwatch;
pub mod dynamo;
pub mod s3;
pub mod sqs;

use aws_config::BehaviorVersion;

/// The shared SDK configuration, loaded once per cold start.
pub async fn load_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

pub fn s3_client(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let path_style =
        config.endpoint_url().is_some() || std::env::var_os("FANOUT_S3_PATH_STYLE").is_some();
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(config)
            .force_path_style(path_style)
            .build(),
    )
}

/// The environment variable's value, or an error naming it.
pub fn required_env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).map_err(|_| anyhow::anyhow!("environment variable {name} is not set"))
}

/// The splitter's dependencies from its Lambda environment (`QUEUE_URL`, `TABLE_NAME`).
pub fn splitter_deps_from_env(
    config: &aws_config::SdkConfig,
) -> anyhow::Result<crate::splitter::SplitterDeps> {
    Ok(splitter_deps(
        config,
        &required_env("QUEUE_URL")?,
        &required_env("TABLE_NAME")?,
    ))
}

/// The splitter's dependencies: S3, the manifest queue and the ledger.
pub fn splitter_deps(
    config: &aws_config::SdkConfig,
    queue_url: &str,
    table: &str,
) -> crate::splitter::SplitterDeps {
    use std::sync::Arc;
    crate::splitter::SplitterDeps {
        store: Arc::new(s3::S3Store::new(s3_client(config))),
        queue: Arc::new(sqs::SqsQueue::new(
            aws_sdk_sqs::Client::new(config),
            queue_url,
        )),
        ledger: Arc::new(dynamo::DynamoLedger::new(
            aws_sdk_dynamodb::Client::new(config),
            table,
        )),
        metrics: Some(crate::metrics::JobMetrics::new(
            Arc::new(cloudwatch::CloudWatchSink::new(
                aws_sdk_cloudwatch::Client::new(config),
            )),
            crate::metrics::DimensionSets::PipelineAndAggregate,
        )),
    }
}

/// The worker's dependencies from its Lambda environment: `TABLE_NAME` (the ledger, which also
/// holds the rate-limit windows and manifest claims), `QUEUE_URL` (for continuations) and
/// `FLEET_SIZE` (the worker's reserved concurrency, which sizes
/// rate-limit leases).
pub fn worker_deps_from_env(
    config: &aws_config::SdkConfig,
) -> anyhow::Result<crate::worker::WorkerDeps> {
    let fleet_size = match std::env::var("FLEET_SIZE") {
        Ok(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("FLEET_SIZE={v:?} is not a whole number"))?,
        Err(_) => 1,
    };
    worker_deps(
        config,
        &required_env("TABLE_NAME")?,
        &required_env("QUEUE_URL")?,
        fleet_size,
    )
}

/// What a worker container's API client shares beyond itself: with the handler, the deadline
/// of the current invocation (the handler sets it); with the fleet, the breakers' open state.
#[derive(Clone, Debug)]
pub struct WorkerClientShared {
    pub deadline: crate::client::deadline::DeadlineHandle,
    pub breakers: std::sync::Arc<breaker::DynamoBreakerStores>,
}

impl WorkerClientShared {
    /// A fresh deadline handle and the breaker items of `table`.
    pub fn new(config: &aws_config::SdkConfig, table: &str) -> Self {
        Self {
            deadline: Default::default(),
            breakers: std::sync::Arc::new(breaker::DynamoBreakerStores::new(
                aws_sdk_dynamodb::Client::new(config),
                table,
            )),
        }
    }
}

/// A worker container's dependencies: S3, the ledger, and the API client stack whose rate limit
/// and breaker state are the fleet-wide ones kept in the ledger table.
pub fn worker_deps(
    config: &aws_config::SdkConfig,
    table: &str,
    queue_url: &str,
    fleet_size: u32,
) -> anyhow::Result<crate::worker::WorkerDeps> {
    worker_deps_with(
        config,
        table,
        queue_url,
        fleet_size,
        WorkerClientShared::new(config, table),
    )
}

/// [`worker_deps`] with the deadline handle and breaker stores given, so that the caller can set
/// the deadline per invocation and read the stores' counters.
pub fn worker_deps_with(
    config: &aws_config::SdkConfig,
    table: &str,
    queue_url: &str,
    fleet_size: u32,
    shared: WorkerClientShared,
) -> anyhow::Result<crate::worker::WorkerDeps> {
    use crate::limiter::{dynamo::DynamoLeaser, source::FleetLimits, source::system_clock};
    use std::sync::Arc;
    let ddb = aws_sdk_dynamodb::Client::new(config);
    let limits = Arc::new(FleetLimits::new(
        Arc::new(DynamoLeaser::new(ddb.clone(), table)),
        system_clock(),
        fleet_size,
    ));
    let api = crate::client::ClientStack::builder()
        .deadline(shared.deadline)
        .token_sources(limits.factory())
        .breaker_stores(shared.breakers.factory())
        .build(crate::client::http::pooled_client()?);
    let ledger = Arc::new(dynamo::DynamoLedger::new(ddb, table));
    let metrics = crate::metrics::WorkerMetrics::new(
        Arc::new(cloudwatch::CloudWatchSink::new(
            aws_sdk_cloudwatch::Client::new(config),
        )),
        crate::metrics::DimensionSets::PipelineAndAggregate,
        api.counters().clone(),
        Some(limits.clone()),
    );
    Ok(crate::worker::WorkerDeps {
        store: Arc::new(s3::S3Store::new(s3_client(config))),
        ledger: ledger.clone(),
        claims: ledger,
        queue: Arc::new(sqs::SqsQueue::new(
            aws_sdk_sqs::Client::new(config),
            queue_url,
        )),
        deadline: Some(api.deadline().clone()),
        api: Arc::new(api),
        limits: Some(limits),
        metrics: Some(Arc::new(metrics)),
    })
}
