//! Batch calls: records grouped `batch.size` at a time (a partial group after `batch.linger_ms`
//! or at the end of the range), one call per group, and the answer split back into one line per
//! record ([`fanout_core::batch`], [`ResponseShaper::shape_batch`]). Used by the worker's call
//! step and by replay.

use std::time::Duration;

use futures::Stream;
use serde_json::Value;
use tokio_stream::StreamExt as _;

use fanout_core::batch;
use fanout_core::config::{BatchConfig, ClientConfig};
use fanout_core::ports::{ApiClient, CallOutcome};
use fanout_core::request::ApiRequest;
use fanout_core::response::{BatchMember, ResponseShaper, Shaped};

/// `records` in groups of up to `config.size`: a group is closed when full, when its first
/// record has waited `config.linger_ms`, or when `records` ends.
pub(crate) fn groups<T, S>(records: S, config: &BatchConfig) -> impl Stream<Item = Vec<T>>
where
    S: Stream<Item = T>,
{
    records.chunks_timeout(
        config.size.max(1),
        Duration::from_millis(config.linger_ms.max(1)),
    )
}

/// One record of a group: its offset, its bytes (for failed/), its rendered request (whose
/// body is the record's item).
pub(crate) struct Member<'a> {
    pub(crate) offset: u64,
    pub(crate) raw: &'a [u8],
    pub(crate) request: &'a ApiRequest,
}

/// The call of a group: the first record's request (URL, headers and idempotency key: the
/// config allows placeholders in the body alone, so they are the same for every record but the
/// key, which is then the first record's) with the items' array as its body.
pub(crate) fn request(config: &BatchConfig, members: &[Member<'_>]) -> ApiRequest {
    let first = members[0].request;
    let items: Vec<&[u8]> = (members.iter())
        .map(|m| m.request.body.as_deref().unwrap_or(b"null"))
        .collect();
    ApiRequest {
        method: first.method.clone(),
        url: first.url.clone(),
        headers: first.headers.clone(),
        body: Some(batch::body(&items, config.wrap.as_deref())),
        records: members.len() as u32,
    }
}

/// Calls the API once for `members` (unless `drain` says the job stopped) and gives each
/// record's line, in `members`' order, with the call's outcome (for its latency).
pub(crate) async fn call(
    api: &dyn ApiClient,
    policy: &ClientConfig,
    config: &BatchConfig,
    shaper: &ResponseShaper,
    members: &[Member<'_>],
    drain: Option<&str>,
) -> (Vec<(u64, Shaped)>, CallOutcome) {
    let outcome = match drain {
        None => api.call(&request(config, members), policy).await,
        Some(reason) => CallOutcome {
            error: Some(reason.to_string()),
            ..CallOutcome::default()
        },
    };
    let ids: Vec<Option<String>> = (members.iter())
        .map(|m| {
            let field = config.id_field.as_deref()?;
            let item: Value = serde_json::from_slice(m.request.body.as_deref()?).ok()?;
            batch::item_id(&item, field)
        })
        .collect();
    let shaped_members: Vec<BatchMember<'_>> = (members.iter().zip(&ids))
        .map(|(m, id)| BatchMember {
            offset: m.offset,
            record: m.raw,
            id: id.as_deref(),
        })
        .collect();
    let lines = shaper.shape_batch(config, &shaped_members, &outcome);
    let lines = members.iter().map(|m| m.offset).zip(lines).collect();
    (lines, outcome)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_group_closes_when_full_after_the_linger_or_at_the_end() {
        let config: BatchConfig = serde_json::from_str(r#"{"size": 3, "linger_ms": 200}"#).unwrap();
        let (tx, rx) = mpsc::channel(16);
        let mut groups = std::pin::pin!(groups(ReceiverStream::new(rx), &config));
        for i in 0..4 {
            tx.send(i).await.unwrap();
        }
        assert_eq!(groups.next().await, Some(vec![0, 1, 2]), "full");
        // Record 3 waits alone: its group closes 200 ms after it came.
        let started = tokio::time::Instant::now();
        assert_eq!(groups.next().await, Some(vec![3]), "lingered");
        assert_eq!(started.elapsed(), Duration::from_millis(200));
        tx.send(4).await.unwrap();
        drop(tx);
        assert_eq!(groups.next().await, Some(vec![4]), "the end");
        assert_eq!(groups.next().await, None);
    }
}
