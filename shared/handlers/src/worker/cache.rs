//! The per-job response cache (`cache.enabled`): identical requests are sent once per container.
//!
//! A request's key is a SHA-256 of its method, URL, headers (the idempotency key aside: it names
//! the record, not the request) and body. The first record to make a request sends it; the
//! others that make it meanwhile wait for that answer, and later ones take it from the cache.
//! Only successes are kept, so a request that failed is sent again for the next record. The
//! cache holds one job at a time (a container works one job's manifests at a time, mostly) and
//! at most `cache.max_bytes` of bodies, the oldest answers leaving first.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use fanout_core::config::{CacheConfig, ClientConfig};
use fanout_core::ports::{ApiClient, CallOutcome};
use fanout_core::request::ApiRequest;

type Key = [u8; 32];

/// One container's cache; see the module docs.
#[derive(Debug, Default)]
pub struct ResponseCache {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    job: String,
    entries: HashMap<Key, Arc<OnceCell<CallOutcome>>>,
    /// Kept answers, oldest first, with their body sizes.
    kept: VecDeque<(Key, u64)>,
    bytes: u64,
}

/// Where a record's answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// This record's own call.
    Called,
    /// Another record's call of the same request.
    Cache,
}

impl ResponseCache {
    /// The answer to `request` for a record of `job`: sent, or another record's.
    pub async fn call(
        &self,
        job: &str,
        config: &CacheConfig,
        idempotency_header: Option<&http::HeaderName>,
        api: &dyn ApiClient,
        request: &ApiRequest,
        policy: &ClientConfig,
    ) -> (CallOutcome, Served) {
        let key = key(request, idempotency_header);
        let cell = self.cell(job, key);
        let sent = AtomicBool::new(false);
        let outcome = cell
            .get_or_init(|| async {
                sent.store(true, Ordering::Relaxed);
                api.call(request, policy).await
            })
            .await;
        if !sent.load(Ordering::Relaxed) {
            // Nothing was sent for this record: no attempts, no latency of its own.
            let mut copy = outcome.clone();
            copy.attempts = 0;
            copy.latency = std::time::Duration::ZERO;
            return (copy, Served::Cache);
        }
        let outcome = outcome.clone();
        self.settle(job, key, &cell, &outcome, config.max_bytes);
        (outcome, Served::Called)
    }

    /// The key's cell, in a cache holding `job` (another job's answers are dropped).
    fn cell(&self, job: &str, key: Key) -> Arc<OnceCell<CallOutcome>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.job != job {
            *state = State {
                job: job.to_string(),
                ..State::default()
            };
        }
        state.entries.entry(key).or_default().clone()
    }

    /// A success is kept (within `max_bytes`); a failure leaves, so the next record sends again.
    fn settle(
        &self,
        job: &str,
        key: Key,
        cell: &Arc<OnceCell<CallOutcome>>,
        outcome: &CallOutcome,
        max_bytes: u64,
    ) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let ours = state.job == job
            && state
                .entries
                .get(&key)
                .is_some_and(|c| Arc::ptr_eq(c, cell));
        if !ours {
            return;
        }
        if !outcome.succeeded() {
            state.entries.remove(&key);
            return;
        }
        let size = outcome.body.len() as u64;
        state.kept.push_back((key, size));
        state.bytes += size;
        while state.bytes > max_bytes {
            let Some((old, size)) = state.kept.pop_front() else {
                break;
            };
            state.entries.remove(&old);
            state.bytes -= size;
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.state.lock().unwrap().entries.len()
    }
}

fn key(request: &ApiRequest, idempotency_header: Option<&http::HeaderName>) -> Key {
    let mut hash = Sha256::new();
    let mut part = |bytes: &[u8]| {
        // Length-prefixed, so parts cannot run into each other.
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    part(request.method.as_str().as_bytes());
    part(request.url.as_bytes());
    for (name, value) in &request.headers {
        if Some(name) != idempotency_header {
            part(name.as_str().as_bytes());
            part(value.as_bytes());
        }
    }
    part(request.body.as_deref().unwrap_or_default());
    hash.finalize().into()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    use async_trait::async_trait;
    use http::{HeaderName, HeaderValue};

    use super::*;

    /// Answers after 10 ms: 200 with the URL, or 503 for URLs ending in "/fail".
    #[derive(Default)]
    struct Api(AtomicU32);

    #[async_trait]
    impl ApiClient for Api {
        async fn call(&self, request: &ApiRequest, _: &ClientConfig) -> CallOutcome {
            self.0.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            let failing = request.url.ends_with("/fail");
            CallOutcome {
                status: Some(if failing { 503 } else { 200 }),
                body: request.url.clone().into(),
                error: failing.then(|| "HTTP 503".to_string()),
                attempts: 1,
                latency: Duration::from_millis(10),
                ..CallOutcome::default()
            }
        }
    }

    fn request(url: &str, key: &str) -> ApiRequest {
        ApiRequest {
            method: http::Method::POST,
            url: url.into(),
            headers: vec![(
                HeaderName::from_static("idempotency-key"),
                HeaderValue::from_str(key).unwrap(),
            )],
            body: Some("{}".into()),
            records: 1,
        }
    }

    const IDEMPOTENCY: HeaderName = HeaderName::from_static("idempotency-key");

    #[tokio::test(start_paused = true)]
    async fn identical_requests_are_sent_once_even_when_made_together() {
        let (cache, api, config) = (
            ResponseCache::default(),
            Api::default(),
            CacheConfig::default(),
        );
        let policy = ClientConfig::default();
        let call = |url: &'static str, record: &'static str| {
            let (cache, api, config, policy) = (&cache, &api, &config, &policy);
            async move {
                cache
                    .call(
                        "j1",
                        config,
                        Some(&IDEMPOTENCY),
                        api,
                        &request(url, record),
                        policy,
                    )
                    .await
            }
        };
        let answers = futures::future::join_all([
            call("http://a/1", "j1-0"),
            call("http://a/1", "j1-9"),
            call("http://a/2", "j1-20"),
        ])
        .await;
        assert_eq!(api.0.load(Ordering::SeqCst), 2, "/1 once, /2 once");
        let served: Vec<Served> = answers.iter().map(|(_, s)| *s).collect();
        assert_eq!(served, [Served::Called, Served::Cache, Served::Called]);
        assert_eq!(&answers[1].0.body[..], b"http://a/1");
        assert_eq!((answers[1].0.attempts, answers[0].0.attempts), (0, 1));
        // Later, from the cache.
        let (later, served) = call("http://a/2", "j1-30").await;
        assert_eq!((served, later.status), (Served::Cache, Some(200)));
        assert_eq!(api.0.load(Ordering::SeqCst), 2);
        // Another job starts afresh.
        let (_, served) = cache
            .call(
                "j2",
                &config,
                Some(&IDEMPOTENCY),
                &api,
                &request("http://a/2", "j2-0"),
                &policy,
            )
            .await;
        assert_eq!(served, Served::Called);
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_not_kept_and_the_oldest_answers_leave_first() {
        let (cache, api) = (ResponseCache::default(), Api::default());
        let policy = ClientConfig::default();
        let config = CacheConfig {
            enabled: true,
            max_bytes: 20,
        };
        let call = |url: &'static str| {
            let (cache, api, config, policy) = (&cache, &api, &config, &policy);
            async move {
                cache
                    .call(
                        "j",
                        config,
                        Some(&IDEMPOTENCY),
                        api,
                        &request(url, "k"),
                        policy,
                    )
                    .await
                    .1
            }
        };
        assert_eq!(call("http://a/fail").await, Served::Called);
        assert_eq!(call("http://a/fail").await, Served::Called, "sent again");
        // Bodies of 10 bytes each: the third pushes the first out.
        for url in ["http://a/1", "http://a/2", "http://a/3"] {
            assert_eq!(call(url).await, Served::Called);
        }
        assert_eq!(call("http://a/3").await, Served::Cache);
        assert_eq!(call("http://a/2").await, Served::Cache);
        assert_eq!(call("http://a/1").await, Served::Called, "evicted");
    }

    #[test]
    fn the_key_ignores_the_idempotency_key_and_nothing_else() {
        let base = request("http://a/1", "j-1");
        let same = request("http://a/1", "j-2");
        assert_eq!(
            key(&base, Some(&IDEMPOTENCY)),
            key(&same, Some(&IDEMPOTENCY))
        );
        assert_ne!(key(&base, None), key(&same, None));
        let mut body = base.clone();
        body.body = Some("{\"a\":1}".into());
        let mut method = base.clone();
        method.method = http::Method::PUT;
        let mut header = base.clone();
        header.headers.push((
            HeaderName::from_static("accept-language"),
            HeaderValue::from_static("fr"),
        ));
        for other in [body, method, header, request("http://a/2", "j-1")] {
            assert_ne!(
                key(&base, Some(&IDEMPOTENCY)),
                key(&other, Some(&IDEMPOTENCY))
            );
        }
    }
}
