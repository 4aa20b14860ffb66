//! AWS adapters: the ports implemented on the real SDK clients.
//!
//! Clients honour `AWS_ENDPOINT_URL` (the SDK reads it), which is how the local stack points them
//! at the moto server; S3 then uses path-style addressing, which local emulators need.

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
    use std::sync::Arc;
    Ok(crate::splitter::SplitterDeps {
        store: Arc::new(s3::S3Store::new(s3_client(config))),
        queue: Arc::new(sqs::SqsQueue::new(
            aws_sdk_sqs::Client::new(config),
            required_env("QUEUE_URL")?,
        )),
        ledger: Arc::new(dynamo::DynamoLedger::new(
            aws_sdk_dynamodb::Client::new(config),
            required_env("TABLE_NAME")?,
        )),
    })
}

/// The worker's dependencies from its Lambda environment (`TABLE_NAME`).
pub fn worker_deps_from_env(
    config: &aws_config::SdkConfig,
) -> anyhow::Result<crate::worker::WorkerDeps> {
    use std::sync::Arc;
    Ok(crate::worker::WorkerDeps {
        store: Arc::new(s3::S3Store::new(s3_client(config))),
        ledger: Arc::new(dynamo::DynamoLedger::new(
            aws_sdk_dynamodb::Client::new(config),
            required_env("TABLE_NAME")?,
        )),
        api: Arc::new(crate::http_client::HttpApiClient::new()?),
    })
}
