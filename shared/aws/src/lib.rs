//! AWS adapters: the core's ports implemented on the real SDK clients. Depends on the core
//! alone; the function binaries (`functions/`) wire these into the handlers' deps.
//!
//! | module | port | service |
//! | --- | --- | --- |
//! | [`s3`] | `ObjectStore` | S3 |
//! | [`sqs`] | `ManifestQueue`, `DeadLetterQueue` | SQS |
//! | [`dynamo`] | `JobLedger`, `LedgerRepair`, `ManifestClaims` | DynamoDB (the ledger table) |
//! | [`leaser`] | `TokenLeaser` | DynamoDB (rate-limit windows in the ledger table) |
//! | [`rate_override`] | `RateOverrides` | DynamoDB (operators' rate overrides in the ledger table) |
//! | [`breaker`] | `BreakerStateStore` | DynamoDB (breaker items in the ledger table) |
//! | [`cloudwatch`] | `MetricsSink` | CloudWatch |
//! | [`secrets`] | `SecretSource` | Secrets Manager, KMS |
//! | [`token_store`] | `SharedTokenStore` | DynamoDB (OAuth2 token items in the ledger table), KMS |
//!
//! Clients honour `AWS_ENDPOINT_URL` (the SDK reads it), which is how the local stack points them
//! at the local AWS; S3 then uses path-style addressing, which local emulators need.

pub mod breaker;
pub mod cloudwatch;
pub mod dynamo;
pub mod leaser;
pub mod rate_override;
pub mod s3;
pub mod secrets;
pub mod sqs;
pub mod token_store;

use aws_config::BehaviorVersion;

pub use aws_config::SdkConfig;

/// The shared SDK configuration, loaded once per cold start.
pub async fn load_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

pub fn s3_client(config: &SdkConfig) -> aws_sdk_s3::Client {
    let path_style =
        config.endpoint_url().is_some() || std::env::var_os("FANOUT_S3_PATH_STYLE").is_some();
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(config)
            .force_path_style(path_style)
            .build(),
    )
}

pub fn sqs_client(config: &SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(config)
}

pub fn dynamodb_client(config: &SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(config)
}

pub fn cloudwatch_client(config: &SdkConfig) -> aws_sdk_cloudwatch::Client {
    aws_sdk_cloudwatch::Client::new(config)
}

pub fn secretsmanager_client(config: &SdkConfig) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(config)
}

pub fn kms_client(config: &SdkConfig) -> aws_sdk_kms::Client {
    aws_sdk_kms::Client::new(config)
}

/// The environment variable's value, or an error naming it.
pub fn required_env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).map_err(|_| anyhow::anyhow!("environment variable {name} is not set"))
}
