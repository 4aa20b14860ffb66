//! `fanout dashboard`: the template's CloudWatch dashboard, its metrics fetched with
//! GetMetricData and drawn as an HTML page of SVG charts, for review on the local stack.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use fanout_cli::dashboard;
use fanout_cli::local::StackNames;

pub struct DashboardArgs {
    pub template: PathBuf,
    pub prefix: String,
    pub pipeline: Option<String>,
    pub minutes: u64,
    pub out: PathBuf,
}

pub async fn run(args: DashboardArgs) -> anyhow::Result<()> {
    let yaml = std::fs::read_to_string(&args.template)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", args.template.display()))?;
    let config = fanout_aws::load_config().await;
    let names = StackNames::with_prefix(&args.prefix);
    let region = config
        .region()
        .map_or("us-east-1".to_string(), |r| r.to_string());
    let subs = dashboard::substitutions(
        &yaml,
        &args.prefix,
        &region,
        &[
            ("ManifestQueue.QueueName", &names.queue),
            ("ManifestDeadLetterQueue.QueueName", &names.dlq),
            ("LedgerTable", &names.table),
        ],
    )?;
    let mut widgets = dashboard::widgets(&dashboard::dashboard_body(&yaml, &subs)?);
    if let Some(p) = &args.pipeline {
        dashboard::for_pipeline(&mut widgets, fanout_core::metrics::NAMESPACE, p);
    }
    let end = SystemTime::now() + Duration::from_secs(60);
    let start = end - Duration::from_secs(args.minutes * 60 + 60);
    // Two attempts: an endpoint that cannot answer a statistic (an emulator without percentiles)
    // fails fast, and its note says so.
    let cw = aws_sdk_cloudwatch::Client::from_conf(
        aws_sdk_cloudwatch::config::Builder::from(&config)
            .retry_config(
                aws_sdk_cloudwatch::config::retry::RetryConfig::standard().with_max_attempts(2),
            )
            .build(),
    );
    let fetched = dashboard::fetch(&cw, widgets, start, end).await;
    let title = match &args.pipeline {
        Some(p) => format!(
            "{} dashboard, pipeline {p}, last {} min",
            args.prefix, args.minutes
        ),
        None => format!("{} dashboard, last {} min", args.prefix, args.minutes),
    };
    std::fs::write(&args.out, dashboard::render(&title, &fetched))?;
    eprintln!("dashboard: {}", args.out.display());
    Ok(())
}
