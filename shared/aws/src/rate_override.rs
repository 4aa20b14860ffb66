//! [`RateOverrides`] on DynamoDB: one item per overridden limit in the ledger table,
//! `pk = LIMIT#<name>`, `sk = OVERRIDE` (the limit's windows are `pk = LIMIT#<name>#<window>`,
//! `sk = W`: the keys cannot meet), holding `rate_per_sec`, `burst` (when given) and `set_at_ms`.
//!
//! The item has no TTL: an override stays until `fanout limit clear` removes it. Workers read it
//! with a strongly consistent GetItem, at most once a second per limit and container.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use fanout_core::ports::RateOverrides;
use fanout_core::rate_override::RateOverride;

use crate::dynamo::ddb_err;

#[derive(Clone, Debug)]
pub struct DynamoRateOverrides {
    client: Client,
    table: String,
}

impl DynamoRateOverrides {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn key(limit: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (
                "pk".to_string(),
                AttributeValue::S(format!("LIMIT#{limit}")),
            ),
            ("sk".to_string(), AttributeValue::S("OVERRIDE".into())),
        ])
    }
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// An override read back, checked as one being set is: an item edited by hand into something a
/// config could not say is an error (the worker then keeps the rate it had), not a rate.
fn from_item(limit: &str, item: &HashMap<String, AttributeValue>) -> anyhow::Result<RateOverride> {
    let number = |name: &str| -> anyhow::Result<Option<u64>> {
        item.get(name)
            .map(|v| {
                v.as_n()
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| {
                        anyhow::anyhow!("rate override of {limit}: {name} is not a whole number")
                    })
            })
            .transpose()
    };
    let small = |name: &str, v: u64| {
        u32::try_from(v)
            .map_err(|_| anyhow::anyhow!("rate override of {limit}: {name} {v} is too large"))
    };
    let rate = number("rate_per_sec")?
        .ok_or_else(|| anyhow::anyhow!("rate override of {limit}: no rate_per_sec"))?;
    let rate = RateOverride {
        rate_per_sec: small("rate_per_sec", rate)?,
        burst: number("burst")?.map(|b| small("burst", b)).transpose()?,
        set_at_ms: number("set_at_ms")?.unwrap_or(0),
    };
    rate.validate()
        .map_err(|e| anyhow::anyhow!("rate override of {limit}: {e}"))?;
    Ok(rate)
}

#[async_trait]
impl RateOverrides for DynamoRateOverrides {
    async fn get(&self, limit: &str) -> anyhow::Result<Option<RateOverride>> {
        // Strongly consistent: the operator's `set` has returned, so the next read sees it.
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(limit)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| ddb_err("GetItem rate override", e))?;
        out.item().map(|item| from_item(limit, item)).transpose()
    }

    async fn set(&self, limit: &str, rate: &RateOverride) -> anyhow::Result<()> {
        rate.validate()
            .map_err(|e| anyhow::anyhow!("rate override of {limit}: {e}"))?;
        let mut item = Self::key(limit);
        item.insert("rate_per_sec".into(), n(rate.rate_per_sec));
        item.insert("set_at_ms".into(), n(rate.set_at_ms));
        if let Some(burst) = rate.burst {
            item.insert("burst".into(), n(burst));
        }
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| ddb_err("PutItem rate override", e))?;
        Ok(())
    }

    async fn clear(&self, limit: &str) -> anyhow::Result<bool> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(limit)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| ddb_err("DeleteItem rate override", e))?;
        Ok(out.attributes().is_some_and(|a| !a.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(fields: &[(&str, &str)]) -> HashMap<String, AttributeValue> {
        fields
            .iter()
            .map(|(k, v)| (k.to_string(), AttributeValue::N(v.to_string())))
            .collect()
    }

    #[test]
    fn items_read_back_as_overrides() {
        let read = from_item(
            "api",
            &item(&[
                ("rate_per_sec", "2000"),
                ("burst", "300"),
                ("set_at_ms", "7"),
            ]),
        )
        .unwrap();
        assert_eq!(read, RateOverride::new(2000, Some(300), 7).unwrap());
        let read = from_item("api", &item(&[("rate_per_sec", "2000")])).unwrap();
        assert_eq!(read.burst, None);
    }

    #[test]
    fn items_no_config_could_say_are_errors_naming_the_field() {
        for (fields, field) in [
            (vec![("rate_per_sec", "0")], "rate_per_sec"),
            (vec![("rate_per_sec", "99999999999")], "rate_per_sec"),
            (vec![("rate_per_sec", "10"), ("burst", "0")], "burst"),
            (vec![("burst", "10")], "rate_per_sec"),
        ] {
            let e = from_item("api", &item(&fields)).unwrap_err().to_string();
            assert!(e.contains(field) && e.contains("api"), "{fields:?}: {e}");
        }
    }
}
