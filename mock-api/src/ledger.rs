//! Request bookkeeping: counters, 100 ms windows, idempotency keys and the
//! token bucket. Everything that must be mutually consistent lives behind one
//! short-lived mutex so a single lock per arrival is enough.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::MockStats;

/// Width of one throughput window in `MockStats::windows_100ms`.
const WINDOW: Duration = Duration::from_millis(100);

/// One slot per possible status code, so recording a status is one atomic add
/// and never takes a lock.
const STATUS_SLOTS: usize = 1000;

/// What we know about one idempotency key.
#[derive(Debug, Default)]
struct KeyState {
    succeeded: bool,
}

/// Classic token bucket. Starts full the first time it is used.
#[derive(Debug, Default)]
pub(crate) struct TokenBucket {
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// Takes one token if available. `rate` is tokens per second; capacity is
    /// `rate * burst` but never below one token, so a tiny burst still lets
    /// traffic through at the configured rate.
    pub(crate) fn try_take(&mut self, now: Instant, rate: f64, burst: f64) -> bool {
        if rate.is_nan() || rate <= 0.0 {
            return false; // A zero (or nonsense) limit admits nothing.
        }
        if rate.is_infinite() {
            return true;
        }
        let capacity = (rate * burst).max(1.0);
        self.tokens = match self.last {
            None => capacity,
            // `now` is sampled before the lock is taken, so it can be slightly
            // older than `last`; saturate rather than panic.
            Some(last) => {
                let refill = now.saturating_duration_since(last).as_secs_f64() * rate;
                (self.tokens + refill).min(capacity)
            }
        };
        self.last = Some(self.last.map_or(now, |last| last.max(now)));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What the stats keep of the last token request (credentials left out).
#[derive(Debug, Default, Clone)]
pub(crate) struct TokenRequestSeen {
    pub(crate) grant_type: Option<String>,
    pub(crate) scope: Option<String>,
    pub(crate) audience: Option<String>,
    pub(crate) extra: BTreeMap<String, String>,
}

/// Credential checks and token endpoint traffic.
#[derive(Debug, Default)]
struct AuthTally {
    accepted: u64,
    refused: u64,
    token_requests: u64,
    tokens_issued: u64,
    last_token_request: TokenRequestSeen,
}

/// State guarded by the ledger mutex.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    total: u64,
    first: Option<Instant>,
    /// The first request's wall-clock time, ms since the epoch (the windows' origin, for a
    /// caller that times its own start against it).
    first_unix_ms: Option<u64>,
    windows: Vec<u64>,
    /// 2xx answers per 100 ms window (by answer time, on the same origin as `windows`).
    served: Vec<u64>,
    keys: HashMap<String, KeyState>,
    repeated_keys: u64,
    duplicate_successes: u64,
    requests_without_key: u64,
    auth: AuthTally,
    pub(crate) bucket: TokenBucket,
    batch_calls: u64,
    batch_items: u64,
    batch_failed_ids: Vec<serde_json::Value>,
}

impl Ledger {
    /// Counts an arriving request: total, its 100 ms window and its key.
    pub(crate) fn count_arrival(&mut self, now: Instant, key: Option<&str>) {
        self.total += 1;
        self.count_window(now);
        self.count_key(key);
    }

    fn count_window(&mut self, now: Instant) {
        let index = self.window_index(now);
        bump(&mut self.windows, index);
    }

    fn window_index(&mut self, now: Instant) -> usize {
        let first = *self.first.get_or_insert_with(|| {
            self.first_unix_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_millis() as u64);
            now
        });
        let elapsed = now.saturating_duration_since(first);
        (elapsed.as_millis() / WINDOW.as_millis()) as usize
    }

    /// Counts a 2xx answer in its window: what the API actually served, as opposed to what
    /// arrived (which includes the 429s and 503s).
    pub(crate) fn count_served(&mut self, now: Instant) {
        let index = self.window_index(now);
        bump(&mut self.served, index);
    }

    fn count_key(&mut self, key: Option<&str>) {
        let Some(key) = key else {
            self.requests_without_key += 1;
            return;
        };
        if self.keys.contains_key(key) {
            self.repeated_keys += 1;
        } else {
            self.keys.insert(key.to_owned(), KeyState::default());
        }
    }

    /// Marks a 2xx answer for `key`; a second success for the same key is a
    /// duplicate side effect that a correct client must never cause.
    fn count_success(&mut self, key: &str) {
        // The key may be missing if `reset` ran while the request was in
        // flight; treat that as a fresh key.
        let state = self.keys.entry(key.to_owned()).or_default();
        if state.succeeded {
            self.duplicate_successes += 1;
        } else {
            state.succeeded = true;
        }
    }
}

fn bump(windows: &mut Vec<u64>, index: usize) {
    if windows.len() <= index {
        windows.resize(index + 1, 0);
    }
    windows[index] += 1;
}

/// Ledger plus the lock-free per-status counters.
pub(crate) struct Counters {
    ledger: Mutex<Ledger>,
    by_status: Box<[AtomicU64]>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            ledger: Mutex::new(Ledger::default()),
            by_status: (0..STATUS_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Counters {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().expect("mock-api ledger lock poisoned")
    }

    /// Records the status a request was answered with.
    pub(crate) fn record_status(&self, status: u16, key: Option<&str>) {
        if let Some(slot) = self.by_status.get(usize::from(status)) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
        if (200..300).contains(&status) {
            let mut ledger = self.lock();
            ledger.count_served(Instant::now());
            if let Some(key) = key {
                ledger.count_success(key);
            }
        }
    }

    /// An API call whose credentials were checked (only when auth is on).
    pub(crate) fn count_auth(&self, accepted: bool) {
        let mut ledger = self.lock();
        if accepted {
            ledger.auth.accepted += 1;
        } else {
            ledger.auth.refused += 1;
        }
    }

    /// A batch call answered: its items, and the ids of those answered with an error.
    pub(crate) fn count_batch(&self, items: usize, failed_ids: Vec<serde_json::Value>) {
        let mut ledger = self.lock();
        ledger.batch_calls += 1;
        ledger.batch_items += items as u64;
        ledger.batch_failed_ids.extend(failed_ids);
    }

    pub(crate) fn count_token_request(&self) {
        self.lock().auth.token_requests += 1;
    }

    pub(crate) fn record_token_form(&self, seen: TokenRequestSeen) {
        self.lock().auth.last_token_request = seen;
    }

    pub(crate) fn count_token_issued(&self) {
        self.lock().auth.tokens_issued += 1;
    }

    /// Consistent snapshot: the ledger lock is held while reading the atomics
    /// so that `reset` cannot interleave.
    pub(crate) fn snapshot(&self) -> MockStats {
        let ledger = self.lock();
        MockStats {
            total_requests: ledger.total,
            by_status: self.status_map(),
            windows_100ms: ledger.windows.clone(),
            first_request_unix_ms: ledger.first_unix_ms,
            served_100ms: ledger.served.clone(),
            keys_seen: ledger.keys.len() as u64,
            repeated_keys: ledger.repeated_keys,
            duplicate_successes: ledger.duplicate_successes,
            requests_without_key: ledger.requests_without_key,
            accepted_auth: ledger.auth.accepted,
            refused_auth: ledger.auth.refused,
            token_requests: ledger.auth.token_requests,
            tokens_issued: ledger.auth.tokens_issued,
            last_token_grant_type: ledger.auth.last_token_request.grant_type.clone(),
            last_token_scope: ledger.auth.last_token_request.scope.clone(),
            last_token_audience: ledger.auth.last_token_request.audience.clone(),
            last_token_extra_params: ledger.auth.last_token_request.extra.clone(),
            batch_calls: ledger.batch_calls,
            batch_items: ledger.batch_items,
            batch_failed_ids: ledger.batch_failed_ids.clone(),
        }
    }

    fn status_map(&self) -> BTreeMap<u16, u64> {
        self.by_status
            .iter()
            .enumerate()
            .filter_map(|(status, slot)| {
                let count = slot.load(Ordering::Relaxed);
                (count > 0).then_some((status as u16, count))
            })
            .collect()
    }

    /// Zeroes everything, including the token bucket (a reset starts a fresh
    /// scenario, which should begin with a full burst).
    pub(crate) fn reset(&self) {
        let mut ledger = self.lock();
        *ledger = Ledger::default();
        for slot in self.by_status.iter() {
            slot.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_capacity_then_refills_at_rate() {
        let mut bucket = TokenBucket::default();
        let t0 = Instant::now();
        // rate 100/s, burst 0.05 -> capacity 5.
        let granted = (0..20).filter(|_| bucket.try_take(t0, 100.0, 0.05)).count();
        assert_eq!(granted, 5);
        // 50 ms later, 5 more tokens have accrued.
        let t1 = t0 + Duration::from_millis(50);
        let granted = (0..20).filter(|_| bucket.try_take(t1, 100.0, 0.05)).count();
        assert_eq!(granted, 5);
    }

    #[test]
    fn bucket_capacity_is_at_least_one() {
        let mut bucket = TokenBucket::default();
        let t0 = Instant::now();
        assert!(bucket.try_take(t0, 1.0, 0.0));
        assert!(!bucket.try_take(t0, 1.0, 0.0));
        assert!(!TokenBucket::default().try_take(t0, 0.0, 1.0));
    }

    #[test]
    fn windows_and_keys_are_counted() {
        let mut ledger = Ledger::default();
        let t0 = Instant::now();
        ledger.count_arrival(t0, Some("a"));
        ledger.count_arrival(t0 + Duration::from_millis(250), Some("a"));
        ledger.count_arrival(t0 + Duration::from_millis(260), None);
        assert_eq!(ledger.windows, vec![1, 0, 2]);
        ledger.count_served(t0 + Duration::from_millis(120));
        assert_eq!(ledger.served, vec![0, 1]);
        assert_eq!(ledger.keys.len(), 1);
        assert_eq!(ledger.repeated_keys, 1);
        assert_eq!(ledger.requests_without_key, 1);
        ledger.count_success("a");
        ledger.count_success("a");
        assert_eq!(ledger.duplicate_successes, 1);
    }
}
