//! Batch calls: N records in one request, and the answer's items mapped back to their records.
//!
//! With a `batch` section, each record still renders its `request.body` (the item), and a call
//! carries up to `batch.size` items as one JSON array (or an object holding the array under
//! `batch.wrap`). The answer's array (at `batch.results`) is matched to the records by position
//! or, with `batch.id_field`, by that key of each item. An item holding something at
//! `batch.item_error` fails only its record; a call that fails (after its retries) or an answer
//! that cannot be matched fails every record of the batch, each with the reason.
//!
//! Pure: the worker forms the batches and makes the calls ([`crate::ports::ApiClient`]).

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::BatchConfig;
use crate::ports::CallOutcome;

/// What the fleet-wide rate limit counts for a batch call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateUnit {
    /// One token per call (per attempt), whatever it carries.
    #[default]
    Calls,
    /// One token per record a call carries: for APIs that meter records.
    Records,
}

/// The body of a batch call: the items' JSON, in order, as an array (or `{"<wrap>": [...]}`).
/// The items are the records' rendered `request.body`, already valid JSON.
pub fn body(items: &[&[u8]], wrap: Option<&str>) -> Bytes {
    let len: usize = items.iter().map(|i| i.len() + 1).sum();
    let mut out = BytesMut::with_capacity(len + 16);
    if let Some(key) = wrap {
        out.put_u8(b'{');
        out.put_slice(
            serde_json::to_string(key)
                .expect("a string serializes")
                .as_bytes(),
        );
        out.put_u8(b':');
    }
    out.put_u8(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(item);
    }
    out.put_u8(b']');
    if wrap.is_some() {
        out.put_u8(b'}');
    }
    out.freeze()
}

/// The id of an item (`batch.id_field` of the rendered body, or of an answer's item) as the
/// match compares it: a string as it is, any other value as its JSON text.
pub fn item_id(item: &Value, field: &str) -> Option<String> {
    match item.get(field)? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Each record's share of a batch answer, in the records' order: its item, or why it has none.
/// `ids` are the records' item ids (used with `batch.id_field`). `outcome` is a call that
/// succeeded; a failed call fails the records without coming here.
pub fn split_answer(
    config: &BatchConfig,
    ids: &[Option<String>],
    outcome: &CallOutcome,
) -> Vec<Result<Value, String>> {
    let all = |reason: String| ids.iter().map(|_| Err(reason.clone())).collect();
    if outcome.body_truncated {
        return all(format!(
            "the batch answer is longer than client.max_response_bytes ({} bytes kept): raise it",
            outcome.body.len()
        ));
    }
    let mut answer: Value = match serde_json::from_slice(&outcome.body) {
        Ok(v) => v,
        Err(e) => return all(format!("the batch answer is not JSON: {e}")),
    };
    let pointer = config.results.as_str();
    let items = match answer.pointer_mut(pointer).map(Value::take) {
        Some(Value::Array(items)) => items,
        _ => {
            return all(format!(
                "the batch answer has no array at {pointer:?} (batch.results)"
            ));
        }
    };
    let matched: Vec<Result<Value, String>> = match &config.id_field {
        None if items.len() != ids.len() => {
            return all(format!(
                "the batch answer has {} items for {} records (matched by position)",
                items.len(),
                ids.len()
            ));
        }
        None => items.into_iter().map(Ok).collect(),
        Some(field) => {
            let mut by_id: HashMap<String, Value> = HashMap::with_capacity(items.len());
            for item in items {
                if let Some(id) = item_id(&item, field) {
                    by_id.entry(id).or_insert(item);
                }
            }
            ids.iter()
                .map(|id| match id {
                    None => Err(format!(
                        "the record's item has no {field:?} (batch.id_field)"
                    )),
                    Some(id) => by_id
                        .remove(id)
                        .ok_or_else(|| format!("the batch answer has no item with {field} {id:?}")),
                })
                .collect()
        }
    };
    matched
        .into_iter()
        .map(|item| {
            let item = item?;
            match (config.item_error.as_deref()).and_then(|p| item.pointer(p)) {
                None | Some(Value::Null) => Ok(item),
                Some(Value::String(e)) => Err(format!("the API failed this item: {e}")),
                Some(e) => Err(format!("the API failed this item: {e}")),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config(yaml: &str) -> BatchConfig {
        serde_norway::from_str(yaml).unwrap()
    }

    fn answer(body: Value) -> CallOutcome {
        CallOutcome {
            status: Some(200),
            body: body.to_string().into(),
            ..CallOutcome::default()
        }
    }

    #[test]
    fn the_body_is_the_items_in_order_wrapped_or_not() {
        let items: [&[u8]; 3] = [br#"{"id":1}"#, b"2", br#""x""#];
        assert_eq!(&body(&items, None)[..], br#"[{"id":1},2,"x"]"#);
        assert_eq!(
            &body(&items, Some("it\"ems"))[..],
            br#"{"it\"ems":[{"id":1},2,"x"]}"#
        );
        let parsed: Value = serde_json::from_slice(&body(&items[..1], Some("a"))).unwrap();
        assert_eq!(parsed, json!({"a": [{"id": 1}]}));
    }

    #[test]
    fn items_match_by_position_and_item_errors_fail_only_their_record() {
        let c = config("{size: 3, results: /results, item_error: /error}");
        let ids = [None, None, None];
        let out =
            answer(json!({"results": [{"v": 0}, {"error": "bad email"}, {"v": 2, "error": null}]}));
        let split = split_answer(&c, &ids, &out);
        assert_eq!(split[0], Ok(json!({"v": 0})));
        assert_eq!(split[1], Err("the API failed this item: bad email".into()));
        assert_eq!(split[2], Ok(json!({"v": 2, "error": null})));
        // One item short: nothing can be matched by position.
        let short = answer(json!({"results": [{"v": 0}, {"v": 1}]}));
        for r in split_answer(&c, &ids, &short) {
            assert_eq!(
                r,
                Err("the batch answer has 2 items for 3 records (matched by position)".into())
            );
        }
    }

    #[test]
    fn items_match_by_id_in_any_order() {
        let c = config("{size: 3, id_field: id, item_error: /error/message}");
        let ids = [Some("7".to_string()), Some("a".into()), Some("9".into())];
        let out = answer(json!([
            {"id": "a", "ok": true},
            {"id": 9, "error": {"message": "over quota"}},
            {"id": 7, "ok": true},
            {"id": 8, "ok": true},
        ]));
        let split = split_answer(&c, &ids, &out);
        assert_eq!(split[0], Ok(json!({"id": 7, "ok": true})));
        assert_eq!(split[1], Ok(json!({"id": "a", "ok": true})));
        assert_eq!(split[2], Err("the API failed this item: over quota".into()));
        let missing = split_answer(&c, &[Some("5".into()), None], &out);
        assert_eq!(
            missing[0],
            Err("the batch answer has no item with id \"5\"".into())
        );
        assert!(missing[1].as_ref().unwrap_err().contains("batch.id_field"));
    }

    #[test]
    fn an_answer_without_the_array_fails_every_record_with_the_reason() {
        let c = config("{size: 2, results: /data}");
        let ids = [None, None];
        let reasons: Vec<String> = [
            answer(json!({"results": []})),
            CallOutcome {
                status: Some(200),
                body: "<html>".into(),
                ..CallOutcome::default()
            },
            CallOutcome {
                status: Some(200),
                body: "[1".into(),
                body_truncated: true,
                ..CallOutcome::default()
            },
        ]
        .iter()
        .map(|out| {
            let split = split_answer(&c, &ids, out);
            assert_eq!(split.len(), 2);
            assert_eq!(split[0], split[1]);
            split[0].clone().unwrap_err()
        })
        .collect();
        assert!(reasons[0].contains("no array at \"/data\""), "{reasons:?}");
        assert!(reasons[1].contains("not JSON"), "{reasons:?}");
        assert!(reasons[2].contains("max_response_bytes"), "{reasons:?}");
    }

    #[test]
    fn ids_compare_as_text() {
        let item = json!({"id": 12, "s": "12", "n": null});
        assert_eq!(item_id(&item, "id").as_deref(), Some("12"));
        assert_eq!(item_id(&item, "s").as_deref(), Some("12"));
        assert_eq!(item_id(&item, "n"), None);
        assert_eq!(item_id(&item, "absent"), None);
    }
}
