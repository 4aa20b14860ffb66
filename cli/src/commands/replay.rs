//! `fanout replay JOB`: a new attempt at a finished job's failures (DLQ manifests, then failed/
//! records), under the same job id, on the stack the job ran on; prints the report as JSON.

use fanout_cli::local::{self, Stack};

pub async fn run(
    config: &aws_config::SdkConfig,
    stack: &Stack,
    job_id: &str,
) -> anyhow::Result<()> {
    let report = local::replay(config, stack, job_id).await?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
