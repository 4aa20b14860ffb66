//! `fanout dashboard`: the template's CloudWatch dashboard, its metrics fetched with
//! GetMetricData and drawn as an HTML page of SVG charts, for review on the local stack.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use fanout_cli::local::Stack;
use fanout_cli::{dashboard, deployed};

pub struct DashboardArgs {
    pub template: PathBuf,
    pub stack: Stack,
    pub pipeline: Option<String>,
    pub minutes: u64,
    pub out: PathBuf,
}

pub async fn run(args: DashboardArgs) -> anyhow::Result<()> {
    let yaml = std::fs::read_to_string(&args.template)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", args.template.display()))?;
    let config = fanout_aws::load_config().await;
    let names = &args.stack.names;
    let region = config
        .region()
        .map_or("us-east-1".to_string(), |r| r.to_string());
    // A deployed stack: its resources' physical names and the parameter values it was deployed
    // with (the limit line is its RateLimitPerSecond, not the template's default). The local
    // stack: the names its prefix gives.
    let (stack_name, names): (String, Vec<(String, String)>) = match &args.stack.deployed {
        Some(d) => (d.stack_name.clone(), deployed::dashboard_names(d)),
        None => (
            names.prefix.clone(),
            vec![
                ("ManifestQueue.QueueName".into(), names.queue.clone()),
                (
                    "ManifestDeadLetterQueue.QueueName".into(),
                    names.dlq.clone(),
                ),
                ("LedgerTable".into(), names.table.clone()),
            ],
        ),
    };
    let names: Vec<(&str, &str)> = names
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let subs = dashboard::substitutions(&yaml, &stack_name, &region, &names)?;
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
            "{stack_name} dashboard, pipeline {p}, last {} min",
            args.minutes
        ),
        None => format!("{stack_name} dashboard, last {} min", args.minutes),
    };
    std::fs::write(&args.out, dashboard::render(&title, &fetched))?;
    eprintln!("dashboard: {}", args.out.display());
    Ok(())
}
