//! `fanout replay JOB`: a new attempt at a finished job's failures (DLQ manifests, then failed/
//! records), under the same job id; prints the report as JSON.

use fanout_cli::local::{self, StackNames};

pub async fn run(job_id: &str, prefix: &str) -> anyhow::Result<()> {
    let config = fanout_aws::load_config().await;
    let stack = local::ensure_stack(&config, &StackNames::with_prefix(prefix)).await?;
    let report = local::replay(&config, &stack, job_id).await?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
