//! `fanout report JOB`: the job's HTML report, written next to its summary in S3 and to a local
//! file.

use std::path::PathBuf;

use fanout_aws::dynamo::DynamoLedger;

pub async fn run(job: &str, table: &str, out: Option<PathBuf>) -> anyhow::Result<()> {
    let config = fanout_aws::load_config().await;
    let ledger = DynamoLedger::new(aws_sdk_dynamodb::Client::new(&config), table);
    let s3 = fanout_aws::s3_client(&config);
    let html = fanout_cli::report::write(job, &ledger, &s3).await?;
    let path = out.unwrap_or_else(|| PathBuf::from(format!("{job}_REPORT.html")));
    std::fs::write(&path, html)?;
    eprintln!(
        "report: {} (and {} in the job's bucket)",
        path.display(),
        fanout_cli::report::report_key(job)
    );
    Ok(())
}
