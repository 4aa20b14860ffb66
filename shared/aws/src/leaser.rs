//! [`TokenLeaser`] on DynamoDB: one item per limit and window, `pk = LIMIT#<name>#<window>`.
//!
//! Each window is its own partition key, so the per-key write ceiling (about 1,000 writes/s)
//! applies to one window's leases only; items expire through the table's TTL attribute.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use fanout_core::ports::TokenLeaser;

/// Window items are kept for an hour, for inspection; then TTL removes them.
const KEEP_SECS: u64 = 3600;

#[derive(Clone, Debug)]
pub struct DynamoLeaser {
    client: Client,
    table: String,
}

impl DynamoLeaser {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

#[async_trait]
impl TokenLeaser for DynamoLeaser {
    async fn lease(
        &self,
        limit: &str,
        window: u64,
        n: u64,
        cap: u64,
    ) -> anyhow::Result<Option<u64>> {
        let expires = fanout_core::ledger::now_ms() / 1000 + KEEP_SECS;
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(format!("LIMIT#{limit}#{window}")))
            .key("sk", AttributeValue::S("W".into()))
            .update_expression("ADD granted :n SET expires_at = :exp")
            .condition_expression("attribute_not_exists(granted) OR granted < :cap")
            .expression_attribute_values(":n", AttributeValue::N(n.to_string()))
            .expression_attribute_values(":cap", AttributeValue::N(cap.to_string()))
            .expression_attribute_values(":exp", AttributeValue::N(expires.to_string()))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await;
        match result {
            Ok(out) => {
                let granted = out
                    .attributes()
                    .and_then(|a| a.get("granted"))
                    .and_then(|v| v.as_n().ok())
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| {
                        anyhow::anyhow!("UpdateItem limit window returned no counter")
                    })?;
                Ok(Some(granted))
            }
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                Ok(None)
            }
            Err(e) => Err(crate::dynamo::ddb_err("UpdateItem limit window", e)),
        }
    }
}
