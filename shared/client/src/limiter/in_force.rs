//! Which rate a container spends a fleet limit at: its pipeline config's, unless an operator's
//! override is stored for the limit (`fanout limit set`). The override is read with the leases,
//! at most once per [`CHECK_INTERVAL`], never per call.

use std::sync::Arc;
use std::time::Duration;

use fanout_core::ports::RateOverrides;
use fanout_core::rate_override::RateOverride;

use super::source::FleetLimitConfig;
use super::{WindowPlan, lease_size};

/// How old the last read of a limit's override may be when a container leases: a change reaches
/// every leasing container within this and one lease of its old tokens.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The rate and burst a container spends by, and the plan and lease size they make.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InForce {
    /// Fleet-wide calls per second: the capacity this container proposes for new windows.
    pub rate: f64,
    /// How far behind its slot a token may still be spent (seconds).
    pub burst_secs: f64,
    pub plan: WindowPlan,
    /// Tokens per lease.
    pub lease_n: u64,
}

impl InForce {
    /// The override's rate when there is one, else the config's; the override's burst (in
    /// calls) when it gives one, else the config's burst in calls.
    pub fn new(config: &FleetLimitConfig, rate_override: Option<&RateOverride>) -> Self {
        let rate = rate_override.map_or(config.rate, |o| f64::from(o.rate_per_sec));
        let burst_calls = rate_override
            .and_then(|o| o.burst)
            .map_or(config.burst * config.rate, f64::from);
        Self {
            rate,
            burst_secs: burst_calls / rate,
            plan: WindowPlan::new(rate, config.window),
            lease_n: lease_size(rate, config.fleet_size, config.window),
        }
    }
}

/// A limit's override as last read from the store, read again once it is older than
/// [`CHECK_INTERVAL`]. A failed read keeps what was known (a broken store must not stop a job),
/// and is logged once per run of failures.
pub struct OverrideWatch {
    store: Arc<dyn RateOverrides>,
    /// When the store was last asked (µs since the epoch), whatever the answer.
    checked_at_us: Option<u64>,
    known: Option<RateOverride>,
    failing: bool,
}

impl OverrideWatch {
    pub fn new(store: Arc<dyn RateOverrides>) -> Self {
        Self {
            store,
            checked_at_us: None,
            known: None,
            failing: false,
        }
    }

    /// The override of `limit` in force at `now_us`, read again if the last read is due.
    pub async fn current(&mut self, limit: &str, now_us: u64) -> Option<&RateOverride> {
        let due = self
            .checked_at_us
            .is_none_or(|at| now_us.saturating_sub(at) >= CHECK_INTERVAL.as_micros() as u64);
        if due {
            self.checked_at_us = Some(now_us);
            match self.store.get(limit).await {
                Ok(read) => {
                    if self.failing {
                        tracing::info!(limit, "rate override read again");
                        self.failing = false;
                    }
                    self.known = read;
                }
                Err(e) => {
                    if !self.failing {
                        tracing::warn!(
                            limit,
                            error = format!("{e:#}"),
                            "rate override read failed: the last rate read stays in force"
                        );
                        self.failing = true;
                    }
                }
            }
        }
        self.known.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::WINDOW;
    use crate::limiter::source::MemoryRateOverrides;

    fn config() -> FleetLimitConfig {
        FleetLimitConfig {
            name: "api".into(),
            rate: 1000.0,
            burst: 0.1,
            fleet_size: 8,
            window: WINDOW,
        }
    }

    #[test]
    fn the_override_replaces_the_rate_and_the_burst_it_gives() {
        let config = config();
        let base = InForce::new(&config, None);
        assert_eq!(
            (base.rate, base.plan.capacity(), base.lease_n),
            (1000.0, 1000, 100)
        );
        assert!((base.burst_secs - 0.1).abs() < 1e-9);
        // Without a burst, the config's burst in calls (100) stays: 50 ms at 2000/s.
        let raised = InForce::new(&config, Some(&RateOverride::new(2000, None, 0).unwrap()));
        assert_eq!((raised.rate, raised.plan.capacity()), (2000.0, 2000));
        assert!((raised.burst_secs - 0.05).abs() < 1e-9);
        let with_burst = InForce::new(
            &config,
            Some(&RateOverride::new(2000, Some(400), 0).unwrap()),
        );
        assert!((with_burst.burst_secs - 0.2).abs() < 1e-9);
        let big = InForce::new(&config, Some(&RateOverride::new(100_000, None, 0).unwrap()));
        assert_eq!(big.lease_n, 3125);
    }

    /// An override store whose reads fail while `failing` is set.
    struct Flaky {
        inner: MemoryRateOverrides,
        failing: std::sync::atomic::AtomicBool,
        reads: std::sync::atomic::AtomicU32,
    }

    #[async_trait::async_trait]
    impl RateOverrides for Flaky {
        async fn get(&self, limit: &str) -> anyhow::Result<Option<RateOverride>> {
            use std::sync::atomic::Ordering;
            self.reads.fetch_add(1, Ordering::Relaxed);
            anyhow::ensure!(!self.failing.load(Ordering::Relaxed), "store unavailable");
            self.inner.get(limit).await
        }
        async fn set(&self, limit: &str, rate: &RateOverride) -> anyhow::Result<()> {
            self.inner.set(limit, rate).await
        }
        async fn clear(&self, limit: &str) -> anyhow::Result<bool> {
            self.inner.clear(limit).await
        }
    }

    #[tokio::test]
    async fn reads_at_most_once_a_second_and_keeps_the_last_known_on_errors() {
        use std::sync::atomic::Ordering;
        let store = Arc::new(Flaky {
            inner: MemoryRateOverrides::default(),
            failing: false.into(),
            reads: 0.into(),
        });
        let two = RateOverride::new(2000, None, 0).unwrap();
        store.set("api", &two).await.unwrap();
        let mut watch = OverrideWatch::new(store.clone());
        assert_eq!(watch.current("api", 10_000_000).await, Some(&two));
        // Within the interval: no read, even though the store changed.
        store.clear("api").await.unwrap();
        assert_eq!(watch.current("api", 10_999_999).await, Some(&two));
        assert_eq!(store.reads.load(Ordering::Relaxed), 1);
        // A failing store: the last known override stays, and is asked again each interval.
        store.failing.store(true, Ordering::Relaxed);
        assert_eq!(watch.current("api", 11_000_000).await, Some(&two));
        assert_eq!(watch.current("api", 12_000_000).await, Some(&two));
        assert_eq!(store.reads.load(Ordering::Relaxed), 3);
        store.failing.store(false, Ordering::Relaxed);
        assert_eq!(watch.current("api", 13_000_000).await, None);
    }
}
