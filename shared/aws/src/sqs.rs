//! [`ManifestQueue`] and [`DeadLetterQueue`] on Amazon SQS.

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

use fanout_core::ports::{DeadLetterQueue, ManifestQueue, QueuedMessage};

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
            .map_err(|e| sqs_err("SendMessageBatch", &self.queue_url, e))?;
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

/// An SQS SDK error with its whole chain, after the operation and the queue.
fn sqs_err<E>(what: &str, queue_url: &str, e: aws_sdk_sqs::error::SdkError<E>) -> anyhow::Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    anyhow::anyhow!(
        "{what} {queue_url}: {}",
        aws_sdk_sqs::error::DisplayErrorContext(e)
    )
}

/// The same queue type read as a dead-letter queue (by a replay).
#[async_trait]
impl DeadLetterQueue for SqsQueue {
    async fn receive(&self) -> anyhow::Result<Vec<QueuedMessage>> {
        let received = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .map_err(|e| sqs_err("ReceiveMessage", &self.queue_url, e))?;
        Ok(received
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| QueuedMessage {
                id: m.message_id.unwrap_or_default(),
                receipt: m.receipt_handle.unwrap_or_default(),
                body: m.body.unwrap_or_default(),
            })
            .collect())
    }

    async fn delete(&self, receipt: &str) -> anyhow::Result<()> {
        self.client
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .send()
            .await
            .map(drop)
            .map_err(|e| sqs_err("DeleteMessage", &self.queue_url, e))
    }

    async fn release(&self, receipt: &str) -> anyhow::Result<()> {
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(0)
            .send()
            .await
            .map(drop)
            .map_err(|e| sqs_err("ChangeMessageVisibility", &self.queue_url, e))
    }
}
