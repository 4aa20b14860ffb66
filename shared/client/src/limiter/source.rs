//! The container side of the fleet limit: leases tokens and releases each at its slot time.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::{WINDOW, WindowCounter, WindowPlan, lease_size};

pub use fanout_core::ports::{TokenLeaser, WindowGrant};

/// Wall-clock microseconds since the epoch: windows are numbered by it across the fleet.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64)
    })
}

#[derive(Clone, Debug, PartialEq)]
pub struct FleetLimitConfig {
    /// The limit's name: limits with different names are independent.
    pub name: String,
    /// Requests per second for the whole fleet.
    pub rate: f64,
    /// How far behind its slot a token may still be spent, as a fraction of a second of rate
    /// (0.1 = 100 ms): the largest catch-up burst the fleet can make.
    pub burst: f64,
    /// Containers expected to share the limit (the worker's reserved concurrency).
    pub fleet_size: u32,
    pub window: Duration,
}

/// Counters for metrics and the benchmark.
#[derive(Debug, Default)]
pub struct LimiterStats {
    pub leases: AtomicU64,
    pub lease_writes: AtomicU64,
    pub tokens_leased: AtomicU64,
    pub tokens_dropped: AtomicU64,
    pub wait_us: AtomicU64,
}

struct State {
    /// Slot times (µs) of the tokens this container holds, in order.
    slots: VecDeque<u64>,
    /// The window to lease from next (never one before the current).
    next_window: u64,
}

/// A token source spending the fleet's tokens on schedule.
pub struct FleetTokenSource {
    config: FleetLimitConfig,
    plan: WindowPlan,
    lease_n: u64,
    leaser: Arc<dyn TokenLeaser>,
    clock: Clock,
    state: tokio::sync::Mutex<State>,
    pub stats: LimiterStats,
}

impl FleetTokenSource {
    pub fn new(config: FleetLimitConfig, leaser: Arc<dyn TokenLeaser>, clock: Clock) -> Self {
        let plan = WindowPlan::new(config.rate, config.window);
        let lease_n = lease_size(config.rate, config.fleet_size, config.window);
        Self {
            config,
            plan,
            lease_n,
            leaser,
            clock,
            state: tokio::sync::Mutex::new(State {
                slots: VecDeque::new(),
                next_window: 0,
            }),
            stats: LimiterStats::default(),
        }
    }

    pub fn lease_size(&self) -> u64 {
        self.lease_n
    }

    /// Waits for one token; returns how long it waited.
    pub async fn take(&self) -> anyhow::Result<Duration> {
        let started = (self.clock)();
        let slot = {
            let mut state = self.state.lock().await;
            loop {
                let now = (self.clock)();
                let oldest = now.saturating_sub((self.config.burst * 1_000_000.0) as u64);
                match state.slots.pop_front() {
                    // A token too far behind its slot would add to a burst: it is dropped.
                    Some(slot) if slot < oldest => {
                        self.stats.tokens_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(slot) => break slot,
                    None => self.refill(&mut state, now).await?,
                }
            }
        };
        let now = (self.clock)();
        if slot > now {
            tokio::time::sleep(Duration::from_micros(slot - now)).await;
        }
        let waited = Duration::from_micros((self.clock)().saturating_sub(started));
        self.stats
            .wait_us
            .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
        Ok(waited)
    }

    /// Leases from the current window or the next one with room. Each attempt is one write; a
    /// full window moves on to the next, so this never retries the same item.
    async fn refill(&self, state: &mut State, now_us: u64) -> anyhow::Result<()> {
        let mut window = state.next_window.max(self.plan.window_of(now_us / 1000));
        loop {
            self.stats.lease_writes.fetch_add(1, Ordering::Relaxed);
            let granted = self
                .leaser
                .lease(
                    &self.config.name,
                    window,
                    self.lease_n,
                    self.plan.capacity(),
                )
                .await?;
            if let Some(grant) = granted {
                // Spaced and clipped by the window's stored cap, which a container believing
                // in another rate may have fixed.
                let lease = self.plan.lease_from_grant(window, grant, self.lease_n);
                if !lease.is_empty() {
                    self.stats.leases.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .tokens_leased
                        .fetch_add(lease.len(), Ordering::Relaxed);
                    // A token whose slot had passed before it was asked for is capacity nobody
                    // used (the fleet just started, or stalled): spending it now would add to a
                    // burst the API never saw coming. Only tokens that turn late after the
                    // request (its latency, a busy container) may be spent late, within the
                    // burst allowance.
                    let slots = (lease.first..lease.end)
                        .map(|i| self.plan.slot_time_us(window, i, lease.cap));
                    let before = state.slots.len();
                    state.slots.extend(slots.filter(|&t| t >= now_us));
                    let unused = lease.len() - (state.slots.len() - before) as u64;
                    self.stats
                        .tokens_dropped
                        .fetch_add(unused, Ordering::Relaxed);
                    // A clipped lease means the window is now full.
                    state.next_window = if lease.end >= lease.cap {
                        window + 1
                    } else {
                        window
                    };
                    return Ok(());
                }
            }
            window += 1;
        }
    }
}

#[async_trait]
impl crate::rate_limit::TokenSource for FleetTokenSource {
    async fn acquire(&self) -> anyhow::Result<()> {
        self.take().await.map(drop)
    }
}

/// The fleet limits of one container: a token source per limit, all leasing from one counter
/// store and sharing one set of stats.
pub struct FleetLimits {
    leaser: Arc<dyn TokenLeaser>,
    clock: Clock,
    fleet_size: u32,
    window: Duration,
    sources: std::sync::Mutex<std::collections::HashMap<String, Arc<FleetTokenSource>>>,
}

impl FleetLimits {
    pub fn new(leaser: Arc<dyn TokenLeaser>, clock: Clock, fleet_size: u32) -> Self {
        Self {
            leaser,
            clock,
            fleet_size,
            window: WINDOW,
            sources: Default::default(),
        }
    }

    /// The source for a pipeline's client config: one per limit name and rate.
    pub fn source_for(&self, config: &fanout_core::config::ClientConfig) -> Arc<FleetTokenSource> {
        let rate = f64::from(config.rate_limit_per_sec);
        let key = format!("{}@{rate}", config.rate_limit_name);
        let mut sources = self.sources.lock().expect("fleet limits lock");
        sources
            .entry(key)
            .or_insert_with(|| {
                let limit = FleetLimitConfig {
                    name: config.rate_limit_name.clone(),
                    rate,
                    burst: f64::from(config.rate_limit_burst) / rate,
                    fleet_size: self.fleet_size,
                    window: self.window,
                };
                Arc::new(FleetTokenSource::new(
                    limit,
                    self.leaser.clone(),
                    self.clock.clone(),
                ))
            })
            .clone()
    }

    /// Writes, leases and tokens over every limit of this container.
    pub fn totals(&self) -> (u64, u64, u64) {
        let sources = self.sources.lock().expect("fleet limits lock");
        sources.values().fold((0, 0, 0), |(w, l, t), s| {
            (
                w + s.stats.lease_writes.load(Ordering::Relaxed),
                l + s.stats.leases.load(Ordering::Relaxed),
                t + s.stats.tokens_leased.load(Ordering::Relaxed),
            )
        })
    }

    /// The token-source factory for [`crate::stack::ClientStackBuilder::token_sources`].
    pub fn factory(self: &Arc<Self>) -> crate::stack::TokenSourceFactory {
        let limits = self.clone();
        Arc::new(move |config| limits.source_for(config) as Arc<dyn crate::rate_limit::TokenSource>)
    }
}

/// An in-memory counter: the fleet's shared state for tests and single-process runs.
#[derive(Default)]
pub struct MemoryLeaser {
    windows: std::sync::Mutex<std::collections::HashMap<(String, u64), WindowCounter>>,
}

#[async_trait]
impl TokenLeaser for MemoryLeaser {
    async fn lease(
        &self,
        limit: &str,
        window: u64,
        n: u64,
        cap: u64,
    ) -> anyhow::Result<Option<WindowGrant>> {
        let mut windows = self.windows.lock().expect("lock");
        Ok(windows
            .entry((limit.to_string(), window))
            .or_default()
            .lease(n, cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock that follows tokio's (paused) time from a fixed epoch offset.
    fn tokio_clock(epoch_us: u64) -> Clock {
        let base = tokio::time::Instant::now();
        Arc::new(move || epoch_us + base.elapsed().as_micros() as u64)
    }

    fn config(rate: f64, fleet: u32) -> FleetLimitConfig {
        FleetLimitConfig {
            name: "api".into(),
            rate,
            burst: 0.1,
            fleet_size: fleet,
            window: Duration::from_secs(1),
        }
    }

    /// 8 containers, each calling as fast as it can: the fleet's calls stay at the rate, in every
    /// 1 s window, and DynamoDB sees about one write per lease.
    #[tokio::test(start_paused = true)]
    async fn fleet_stays_at_the_rate() {
        let leaser: Arc<dyn TokenLeaser> = Arc::new(MemoryLeaser::default());
        let clock = tokio_clock(1_000_000_123_456);
        let rate = 2000.0;
        let sources: Vec<Arc<FleetTokenSource>> = (0..8)
            .map(|_| {
                Arc::new(FleetTokenSource::new(
                    config(rate, 8),
                    leaser.clone(),
                    clock.clone(),
                ))
            })
            .collect();
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for source in &sources {
            for _ in 0..16 {
                let (source, calls, clock) = (source.clone(), calls.clone(), clock.clone());
                tasks.push(tokio::spawn(async move {
                    let end = clock() + 5_000_000;
                    while clock() < end {
                        source.take().await.unwrap();
                        calls.lock().unwrap().push(clock());
                    }
                }));
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut times = calls.lock().unwrap().clone();
        times.sort_unstable();
        // The steady part: without the first and the last half second (start, tail).
        let (from, to) = (times[0] + 500_000, times[0] + 4_500_000);
        let steady = times.iter().filter(|&&t| t >= from && t < to).count();
        let achieved = steady as f64 / 4.0;
        assert!(
            achieved >= 0.95 * rate && achieved <= 1.02 * rate,
            "achieved {achieved}/s in the steady 4 s"
        );
        let mut lo = 0;
        let mut max_window = 0;
        for hi in 0..times.len() {
            while times[hi] - times[lo] >= 1_000_000 {
                lo += 1;
            }
            max_window = max_window.max(hi - lo + 1);
        }
        assert!(
            max_window as f64 <= 1.1 * rate,
            "max 1 s window {max_window}"
        );
        let writes: u64 = sources
            .iter()
            .map(|s| s.stats.lease_writes.load(Ordering::Relaxed))
            .sum();
        let per_1000 = writes as f64 * 1000.0 / times.len() as f64;
        assert!(per_1000 <= 20.0, "{per_1000} writes per 1000 calls");
    }

    /// A container that stops holding tokens strands at most one lease.
    #[tokio::test(start_paused = true)]
    async fn a_dead_container_strands_at_most_one_lease() {
        let leaser: Arc<dyn TokenLeaser> = Arc::new(MemoryLeaser::default());
        let clock = tokio_clock(5_000_000_000);
        let dead = FleetTokenSource::new(config(1000.0, 4), leaser.clone(), clock.clone());
        dead.take().await.unwrap();
        let held = dead.state.lock().await.slots.len() as u64;
        assert!(held < dead.lease_size(), "held {held}");
        assert_eq!(dead.stats.leases.load(Ordering::Relaxed), 1);
    }

    /// A container starting in the middle of a window spends none of the tokens whose slots had
    /// passed: its first second holds at most the rate, not the rate and the burst allowance.
    #[tokio::test(start_paused = true)]
    async fn tokens_already_past_when_leased_are_not_spent() {
        let leaser: Arc<dyn TokenLeaser> = Arc::new(MemoryLeaser::default());
        // Half a second into window 7000.
        let clock = tokio_clock(7_000_500_000);
        let source = FleetTokenSource::new(config(1000.0, 1), leaser, clock.clone());
        let start = clock();
        let mut in_first_second = 0;
        while clock() < start + 1_000_000 {
            source.take().await.unwrap();
            in_first_second += u64::from(clock() < start + 1_000_000);
        }
        assert!(
            in_first_second <= 1001,
            "{in_first_second} calls in the first second at 1000/s"
        );
        assert!(in_first_second >= 990, "{in_first_second} calls");
    }

    /// Tokens whose slot passed more than the burst allowance ago are not spent late.
    #[tokio::test(start_paused = true)]
    async fn stale_tokens_are_dropped() {
        let leaser: Arc<dyn TokenLeaser> = Arc::new(MemoryLeaser::default());
        let clock = tokio_clock(9_000_000_000);
        let source = FleetTokenSource::new(config(1000.0, 1), leaser, clock.clone());
        source.take().await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = clock();
        source.take().await.unwrap();
        assert!(source.stats.tokens_dropped.load(Ordering::Relaxed) > 0);
        assert!(
            clock() - before < 200_000,
            "a fresh lease is served without a long wait"
        );
    }
}
