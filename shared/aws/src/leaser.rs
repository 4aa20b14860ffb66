//! [`TokenLeaser`] on DynamoDB: one item per limit and window, `pk = LIMIT#<name>#<window>`,
//! `sk = W`, holding the tokens granted so far (`granted`) and the window's capacity (`cap`, fixed
//! by the window's first lease).
//!
//! Each window is its own partition key, so the per-key write ceiling (about 1,000 writes/s)
//! applies to one window's leases only; items expire through the table's TTL attribute.

use std::collections::HashMap;
use std::ops::Range;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use fanout_core::ports::{TokenLeaser, WindowGrant};

/// Window items are kept for an hour, for inspection (`fanout limit get` reads the last few);
/// then TTL removes them.
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

    fn key(limit: &str, window: u64) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (
                "pk".to_string(),
                AttributeValue::S(format!("LIMIT#{limit}#{window}")),
            ),
            ("sk".to_string(), AttributeValue::S("W".into())),
        ])
    }

    /// What each of `windows` of `limit` has granted, with its capacity: None for a window
    /// nobody leased from (or whose item has expired). For the operator's view of the rate the
    /// fleet leases (`fanout limit get`); one eventually consistent GetItem per window.
    pub async fn window_grants(
        &self,
        limit: &str,
        windows: Range<u64>,
    ) -> anyhow::Result<Vec<Option<WindowGrant>>> {
        let reads = windows.map(|window| async move {
            let out = self
                .client
                .get_item()
                .table_name(&self.table)
                .set_key(Some(Self::key(limit, window)))
                .projection_expression("granted, cap")
                .send()
                .await
                .map_err(|e| crate::dynamo::ddb_err("GetItem limit window", e))?;
            Ok::<_, anyhow::Error>(out.item().and_then(|item| {
                Some(WindowGrant {
                    granted_after: number(item, "granted")?,
                    // An item from before windows stored their cap holds no cap: its counter
                    // alone is what it granted, at most.
                    cap: number(item, "cap").unwrap_or(u64::MAX),
                })
            }))
        });
        futures::future::try_join_all(reads).await
    }
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Option<u64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

#[async_trait]
impl TokenLeaser for DynamoLeaser {
    async fn lease(
        &self,
        limit: &str,
        window: u64,
        n: u64,
        cap: u64,
    ) -> anyhow::Result<Option<WindowGrant>> {
        let expires = fanout_core::ledger::now_ms() / 1000 + KEEP_SECS;
        // The first lease stores its cap; every later one is judged, and spaces its tokens, by
        // the stored one. (An item without a cap, from before caps were stored, reads as full:
        // the container moves on to the next window, which is safe.)
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(limit, window)))
            .update_expression(
                "ADD granted :n SET expires_at = :exp, cap = if_not_exists(cap, :cap)",
            )
            .condition_expression("attribute_not_exists(granted) OR granted < cap")
            .expression_attribute_values(":n", AttributeValue::N(n.to_string()))
            .expression_attribute_values(":cap", AttributeValue::N(cap.to_string()))
            .expression_attribute_values(":exp", AttributeValue::N(expires.to_string()))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => {
                let item = out.attributes().ok_or_else(|| {
                    anyhow::anyhow!("UpdateItem limit window returned no attributes")
                })?;
                let (Some(granted_after), Some(cap)) =
                    (number(item, "granted"), number(item, "cap"))
                else {
                    anyhow::bail!("UpdateItem limit window returned no counter or no cap");
                };
                Ok(Some(WindowGrant { granted_after, cap }))
            }
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                Ok(None)
            }
            Err(e) => Err(crate::dynamo::ddb_err("UpdateItem limit window", e)),
        }
    }
}
