//! The metrics sink on CloudWatch: PutMetricData with Values/Counts, so CloudWatch computes
//! percentiles from the distributions the worker aggregated.

use async_trait::async_trait;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};

use fanout_core::metrics::{self, Datum, Unit};
use fanout_core::ports::MetricsSink;

pub struct CloudWatchSink {
    client: aws_sdk_cloudwatch::Client,
}

impl CloudWatchSink {
    pub fn new(client: aws_sdk_cloudwatch::Client) -> Self {
        Self { client }
    }
}

fn sdk_datum(d: &Datum) -> MetricDatum {
    let unit = match d.unit {
        Unit::Count => StandardUnit::Count,
        Unit::Milliseconds => StandardUnit::Milliseconds,
        Unit::Bytes => StandardUnit::Bytes,
    };
    let dimensions = d
        .dimensions
        .iter()
        .map(|(name, value)| Dimension::builder().name(*name).value(value).build())
        .collect();
    MetricDatum::builder()
        .metric_name(d.name)
        .unit(unit)
        .set_dimensions(Some(dimensions))
        .set_values(Some(d.values.clone()))
        .set_counts(Some(d.counts.clone()))
        .build()
}

#[async_trait]
impl MetricsSink for CloudWatchSink {
    async fn publish(&self, namespace: &str, datums: &[Datum]) -> anyhow::Result<()> {
        for call in metrics::calls(datums) {
            let data = call.iter().map(sdk_datum).collect();
            self.client
                .put_metric_data()
                .namespace(namespace)
                .set_metric_data(Some(data))
                .send()
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "PutMetricData ({} datums): {}",
                        call.len(),
                        aws_sdk_cloudwatch::error::DisplayErrorContext(e)
                    )
                })?;
        }
        Ok(())
    }
}
