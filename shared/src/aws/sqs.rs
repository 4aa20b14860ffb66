//! [`ManifestQueue`] on Amazon SQS.

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

use crate::ports::ManifestQueue;

#[derive(Clone, Debug)]
pub struct SqsQueue {
    client: Client,
    queue_url: String,
}

impl SqsQueue {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }
}

#[async_trait]
impl ManifestQueue for SqsQueue {
    async fn send_batch(&self, entries: Vec<(String, String)>) -> anyhow::Result<()> {
        anyhow::ensure!(
            entries.len() <= 10,
            "SendMessageBatch takes at most 10 entries, got {}",
            entries.len()
        );
        if entries.is_empty() {
            return Ok(());
        }
        let entries = entries
            .into_iter()
            .map(|(id, body)| {
                SendMessageBatchRequestEntry::builder()
                    .id(id)
                    .message_body(body)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "SendMessageBatch {}: {}",
                    self.queue_url,
                    aws_sdk_sqs::error::DisplayErrorContext(e)
                )
            })?;
        if let Some(failed) = out.failed().first() {
            anyhow::bail!(
                "SendMessageBatch {}: {} of the entries failed, first {}: {}",
                self.queue_url,
                out.failed().len(),
                failed.id(),
                failed.message().unwrap_or_default()
            );
        }
        Ok(())
    }
}
