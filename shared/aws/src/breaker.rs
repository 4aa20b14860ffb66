//! [`BreakerStateStore`] on DynamoDB: one item per breaker, `pk = BREAKER#<name>`, `sk = B`, in
//! the ledger table (as the rate-limit windows are).
//!
//! The item holds `open_until_ms` (wall clock, ms since the epoch), `opened_at_ms` (when the
//! writer published it) and `expires_at` (the table's TTL attribute). Both writes are single
//! conditional writes, never read-modify-write:
//!
//! - opening keeps the later time: `SET … IF attribute_not_exists(open_until_ms) OR
//!   open_until_ms < :until`; a failed condition means a later opening is stored already;
//! - closing (a probe succeeded) removes the open time only if it was published before the
//!   probe's answer (`REMOVE … IF opened_at_ms <= :now`): a container that reopened it since, on
//!   fresher evidence, is not overruled. An UpdateItem, not a DeleteItem, so the worker needs no
//!   permission beyond the ledger's; TTL removes the item.
//!
//! The breaker reads the item at most once per [`SYNC_INTERVAL`] per container.
//!
//! [`SYNC_INTERVAL`]: fanout_client::breaker::SYNC_INTERVAL

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;

use super::dynamo::{ddb_err, is_condition_failure};
use fanout_core::config::ClientConfig;
use fanout_core::ports::BreakerStateStore;

/// An item outlives its open period by this much before TTL removes it, for inspection. An
/// expired item is harmless anyway: its time is in the past, which reads as closed.
const KEEP_SECS: u64 = 3600;

/// DynamoDB requests made by a container's breaker stores, for the benchmark's accounting.
#[derive(Debug, Default)]
pub struct BreakerStoreStats {
    pub reads: AtomicU64,
    /// Conditional writes, successful or not (a failed condition is still a billed write).
    pub writes: AtomicU64,
}

/// The shared open state of one breaker.
#[derive(Clone, Debug)]
pub struct DynamoBreakerStore {
    client: Client,
    table: String,
    name: String,
    stats: Arc<BreakerStoreStats>,
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

impl DynamoBreakerStore {
    pub fn new(client: Client, table: impl Into<String>, name: impl Into<String>) -> Self {
        Self::with_stats(client, table, name, Arc::default())
    }

    fn with_stats(
        client: Client,
        table: impl Into<String>,
        name: impl Into<String>,
        stats: Arc<BreakerStoreStats>,
    ) -> Self {
        Self {
            client,
            table: table.into(),
            name: name.into(),
            stats,
        }
    }

    pub fn stats(&self) -> &BreakerStoreStats {
        &self.stats
    }

    /// The breaker's item key: `pk = BREAKER#<name>`, `sk = B`.
    fn key(&self) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (
                "pk".to_string(),
                AttributeValue::S(format!("BREAKER#{}", self.name)),
            ),
            ("sk".to_string(), AttributeValue::S("B".into())),
        ])
    }
}

#[async_trait]
impl BreakerStateStore for DynamoBreakerStore {
    async fn open_until(&self) -> anyhow::Result<Option<u64>> {
        self.stats.reads.fetch_add(1, Ordering::Relaxed);
        // An eventually consistent read: a container learning a fraction of a second later
        // changes nothing, since it only reads once per second anyway.
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(self.key()))
            .projection_expression("open_until_ms")
            .send()
            .await
            .map_err(|e| ddb_err("GetItem breaker", e))?;
        Ok(out
            .item()
            .and_then(|i| i.get("open_until_ms"))
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok()))
    }

    async fn publish_open(&self, until_ms: u64) -> anyhow::Result<()> {
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key()))
            .update_expression("SET open_until_ms = :until, opened_at_ms = :now, expires_at = :exp")
            .condition_expression("attribute_not_exists(open_until_ms) OR open_until_ms < :until")
            .expression_attribute_values(":until", n(until_ms))
            .expression_attribute_values(":now", n(fanout_core::ledger::now_ms()))
            .expression_attribute_values(":exp", n(until_ms / 1000 + KEEP_SECS))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // A later opening is stored: it stands.
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(ddb_err("UpdateItem breaker open", e)),
        }
    }

    async fn publish_closed(&self) -> anyhow::Result<()> {
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key()))
            .update_expression("REMOVE open_until_ms, opened_at_ms")
            .condition_expression("opened_at_ms <= :now")
            .expression_attribute_values(":now", n(fanout_core::ledger::now_ms()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Already closed, or reopened since the probe was sent.
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(ddb_err("UpdateItem breaker close", e)),
        }
    }
}

/// A container's breaker stores: one per breaker name (the config's `rate_limit_name`, which
/// names the API the calls go to), all counting into one [`BreakerStoreStats`].
#[derive(Debug)]
pub struct DynamoBreakerStores {
    client: Client,
    table: String,
    stats: Arc<BreakerStoreStats>,
    stores: Mutex<HashMap<String, Arc<DynamoBreakerStore>>>,
}

impl DynamoBreakerStores {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            stats: Arc::default(),
            stores: Mutex::default(),
        }
    }

    /// The store for a config's breaker: pipelines calling the same API share one breaker.
    pub fn store_for(&self, config: &ClientConfig) -> Arc<DynamoBreakerStore> {
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        stores
            .entry(config.rate_limit_name.clone())
            .or_insert_with(|| {
                Arc::new(DynamoBreakerStore::with_stats(
                    self.client.clone(),
                    &self.table,
                    &config.rate_limit_name,
                    self.stats.clone(),
                ))
            })
            .clone()
    }

    /// (reads, writes) made so far.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.stats.reads.load(Ordering::Relaxed),
            self.stats.writes.load(Ordering::Relaxed),
        )
    }
}
