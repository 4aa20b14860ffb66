//! The container side of the fleet limit: leases tokens and releases each at its slot time.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::in_force::{InForce, OverrideWatch};
use super::{WINDOW, WindowCounter};

pub use fanout_core::ports::{RateOverrides, TokenLeaser, WindowGrant};
use fanout_core::rate_override::RateOverride;

/// Wall-clock microseconds since the epoch: windows are numbered by it across the fleet.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64)
    })
}

/// A limit as a pipeline's config sets it: what a container spends by when no override is
/// stored for the limit.
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
    /// The rate, burst and lease size new leases are made by.
    in_force: InForce,
    /// The operator's override of the limit, when the source follows one.
    overrides: Option<OverrideWatch>,
}

/// A token source spending the fleet's tokens on schedule.
pub struct FleetTokenSource {
    config: FleetLimitConfig,
    leaser: Arc<dyn TokenLeaser>,
    clock: Clock,
    state: tokio::sync::Mutex<State>,
    /// `state.in_force.rate` as f64 bits, readable without waiting for a lease in progress.
    rate_in_force: AtomicU64,
    pub stats: LimiterStats,
}

impl FleetTokenSource {
    pub fn new(config: FleetLimitConfig, leaser: Arc<dyn TokenLeaser>, clock: Clock) -> Self {
        let in_force = InForce::new(&config, None);
        Self {
            rate_in_force: AtomicU64::new(in_force.rate.to_bits()),
            config,
            leaser,
            clock,
            state: tokio::sync::Mutex::new(State {
                slots: VecDeque::new(),
                next_window: 0,
                in_force,
                overrides: None,
            }),
            stats: LimiterStats::default(),
        }
    }

    /// Follows the operator's override of the limit in `store`: read when leasing, at most once
    /// per [`super::in_force::CHECK_INTERVAL`].
    pub fn with_overrides(mut self, store: Arc<dyn RateOverrides>) -> Self {
        self.state.get_mut().overrides = Some(OverrideWatch::new(store));
        self
    }

    pub fn config(&self) -> &FleetLimitConfig {
        &self.config
    }

    /// The fleet rate this container leases new windows at: the override's while one is known,
    /// else the config's. Windows leased before a change keep the cap they were leased with.
    pub fn rate_in_force(&self) -> f64 {
        f64::from_bits(self.rate_in_force.load(Ordering::Relaxed))
    }

    /// Tokens per lease at the rate in force.
    pub async fn lease_size(&self) -> u64 {
        self.state.lock().await.in_force.lease_n
    }

    /// Waits for one token; returns how long it waited.
    pub async fn take(&self) -> anyhow::Result<Duration> {
        let started = (self.clock)();
        let slot = {
            let mut state = self.state.lock().await;
            loop {
                let now = (self.clock)();
                let late = (state.in_force.burst_secs * 1_000_000.0) as u64;
                let oldest = now.saturating_sub(late);
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

    /// Adopts the override's rate if one is due to be read and changed. Tokens already held
    /// stay: their windows' caps spaced them.
    async fn follow_override(&self, state: &mut State, now_us: u64) {
        let Some(watch) = state.overrides.as_mut() else {
            return;
        };
        let rate_override = watch.current(&self.config.name, now_us).await.cloned();
        let in_force = InForce::new(&self.config, rate_override.as_ref());
        if in_force != state.in_force {
            tracing::info!(
                limit = self.config.name,
                from = state.in_force.rate,
                to = in_force.rate,
                overridden = rate_override.is_some(),
                "fleet limit: new rate in force"
            );
            self.rate_in_force
                .store(in_force.rate.to_bits(), Ordering::Relaxed);
            state.in_force = in_force;
        }
    }

    /// Leases from the current window or the next one with room. Each attempt is one write; a
    /// full window moves on to the next, so this never retries the same item.
    async fn refill(&self, state: &mut State, now_us: u64) -> anyhow::Result<()> {
        self.follow_override(state, now_us).await;
        let InForce { plan, lease_n, .. } = state.in_force;
        let mut window = state.next_window.max(plan.window_of(now_us / 1000));
        loop {
            self.stats.lease_writes.fetch_add(1, Ordering::Relaxed);
            let granted = self
                .leaser
                .lease(&self.config.name, window, lease_n, plan.capacity())
                .await?;
            if let Some(grant) = granted {
                // Spaced and clipped by the window's stored cap, which a container believing
                // in another rate may have fixed.
                let lease = plan.lease_from_grant(window, grant, lease_n);
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
                    let slots =
                        (lease.first..lease.end).map(|i| plan.slot_time_us(window, i, lease.cap));
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
/// store (and following one override store), sharing one set of stats.
pub struct FleetLimits {
    leaser: Arc<dyn TokenLeaser>,
    overrides: Option<Arc<dyn RateOverrides>>,
    clock: Clock,
    fleet_size: u32,
    window: Duration,
    sources: std::sync::Mutex<std::collections::HashMap<String, Arc<FleetTokenSource>>>,
}

impl FleetLimits {
    pub fn new(leaser: Arc<dyn TokenLeaser>, clock: Clock, fleet_size: u32) -> Self {
        Self {
            leaser,
            overrides: None,
            clock,
            fleet_size,
            window: WINDOW,
            sources: Default::default(),
        }
    }

    /// Every source follows the operator's overrides of its limit in `store`.
    pub fn with_overrides(mut self, store: Arc<dyn RateOverrides>) -> Self {
        self.overrides = Some(store);
        self
    }

    /// The source for a pipeline's client config: one per limit name and configured rate (with
    /// an override in force, all the sources of one name spend at its rate).
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
                let source = FleetTokenSource::new(limit, self.leaser.clone(), self.clock.clone());
                Arc::new(match &self.overrides {
                    Some(store) => source.with_overrides(store.clone()),
                    None => source,
                })
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

/// In-memory rate overrides: the operator's side for tests and single-process runs.
#[derive(Default)]
pub struct MemoryRateOverrides {
    overrides: std::sync::Mutex<std::collections::HashMap<String, RateOverride>>,
}

#[async_trait]
impl RateOverrides for MemoryRateOverrides {
    async fn get(&self, limit: &str) -> anyhow::Result<Option<RateOverride>> {
        Ok(self.overrides.lock().expect("lock").get(limit).cloned())
    }

    async fn set(&self, limit: &str, rate: &RateOverride) -> anyhow::Result<()> {
        self.overrides
            .lock()
            .expect("lock")
            .insert(limit.to_string(), rate.clone());
        Ok(())
    }

    async fn clear(&self, limit: &str) -> anyhow::Result<bool> {
        Ok(self.overrides.lock().expect("lock").remove(limit).is_some())
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
        assert!(held < dead.lease_size().await, "held {held}");
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

    /// A fleet run through a rate change: every call's time, and when each container adopted
    /// the new rate.
    struct ChangeRun {
        set_at: u64,
        calls: Vec<u64>,
        adopted_at: Vec<Option<u64>>,
    }

    /// The moments of the set tried, after the run's start (itself 0.456789 s into a window):
    /// early, middle and late in a window, and before or after the containers' reads.
    const SET_AFTER_US: [u64; 3] = [5_000_000, 5_300_000, 5_750_000];

    /// 8 containers whose config says `from`/s, 16 tasks each calling as fast as they can for
    /// 12 s; `set_after_us` in, the operator's override sets the limit to `to`/s.
    async fn fleet_through_a_change(from: f64, to: u32, set_after_us: u64) -> ChangeRun {
        let leaser: Arc<dyn TokenLeaser> = Arc::new(MemoryLeaser::default());
        let overrides = Arc::new(MemoryRateOverrides::default());
        let clock = tokio_clock(2_000_000_456_789);
        let start = clock();
        let sources: Vec<Arc<FleetTokenSource>> = (0..8)
            .map(|_| {
                Arc::new(
                    FleetTokenSource::new(config(from, 8), leaser.clone(), clock.clone())
                        .with_overrides(overrides.clone()),
                )
            })
            .collect();
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for source in &sources {
            for _ in 0..16 {
                let (source, calls, clock) = (source.clone(), calls.clone(), clock.clone());
                tasks.push(tokio::spawn(async move {
                    while clock() < start + 12_000_000 {
                        source.take().await.unwrap();
                        calls.lock().unwrap().push(clock());
                    }
                }));
            }
        }
        let set_at = start + set_after_us;
        let operator = {
            let clock = clock.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_micros(set_at - clock())).await;
                let rate = RateOverride::new(to, None, set_at / 1000).unwrap();
                overrides.set("api", &rate).await.unwrap();
            })
        };
        // When each container's rate in force turned `to`, seen every 10 ms.
        let watcher = {
            let (sources, clock) = (sources.clone(), clock.clone());
            tokio::spawn(async move {
                let mut adopted_at = vec![None; sources.len()];
                while clock() < start + 12_000_000 {
                    for (at, source) in adopted_at.iter_mut().zip(&sources) {
                        if at.is_none() && source.rate_in_force() == f64::from(to) {
                            *at = Some(clock());
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                adopted_at
            })
        };
        for t in tasks {
            t.await.unwrap();
        }
        operator.await.unwrap();
        let adopted_at = watcher.await.unwrap();
        let mut calls = calls.lock().unwrap().clone();
        calls.sort_unstable();
        ChangeRun {
            set_at,
            calls,
            adopted_at,
        }
    }

    /// Every 1 s sliding interval of sorted call times: (start, end, calls), start and end
    /// being the first and last call's times.
    fn one_second_intervals(times: &[u64]) -> Vec<(u64, u64, usize)> {
        let mut lo = 0;
        (0..times.len())
            .map(|hi| {
                while times[hi] - times[lo] >= 1_000_000 {
                    lo += 1;
                }
                (times[lo], times[hi], hi - lo + 1)
            })
            .collect()
    }

    /// The calls in `[from, from + 1 s)`.
    fn calls_in_second(times: &[u64], from: u64) -> usize {
        times
            .iter()
            .filter(|&&t| t >= from && t < from + 1_000_000)
            .count()
    }

    /// How long after the set every container had adopted the new rate (µs).
    fn propagation(run: &ChangeRun) -> u64 {
        run.adopted_at
            .iter()
            .map(|at| at.expect("every container adopted the new rate") - run.set_at)
            .max()
            .unwrap()
    }

    /// A job at 1000/s raised to 2000/s by an override: every container leases at the new rate
    /// within 3 s, the fleet is at it within 3 s too, and no 1 s interval carries more than 1.1
    /// times the limit in force (1000 until the set, then 2000).
    #[tokio::test(start_paused = true)]
    async fn a_raised_rate_reaches_the_fleet_within_seconds() {
        for set_after_us in SET_AFTER_US {
            a_raised_rate_reaches_the_fleet(set_after_us).await;
        }
    }

    async fn a_raised_rate_reaches_the_fleet(set_after_us: u64) {
        let run = fleet_through_a_change(1000.0, 2000, set_after_us).await;
        let propagation = propagation(&run);
        assert!(propagation <= 3_000_000, "adopted after {propagation} µs");
        let before = calls_in_second(&run.calls, run.set_at - 2_000_000);
        let after = calls_in_second(&run.calls, run.set_at + 4_000_000);
        let reached = one_second_intervals(&run.calls)
            .into_iter()
            .find(|&(from, _, calls)| from >= run.set_at && calls >= 1900)
            .map(|(from, ..)| from - run.set_at);
        eprintln!(
            "raise at {set_after_us} µs: adopted within {propagation} µs; {before} calls in a \
             second before; a second of 1900+ from {reached:?} µs after the set; {after} in the \
             5th second after"
        );
        assert!(before >= 950, "{before} calls per second before the set");
        assert!(
            reached.is_some_and(|r| r <= 3_000_000),
            "a second of 1900 calls began {reached:?} µs after the set"
        );
        assert!(
            after >= 1900,
            "{after} calls in the 5th second after the set"
        );
        for (from, to, calls) in one_second_intervals(&run.calls) {
            let in_force = if to < run.set_at { 1000.0 } else { 2000.0 };
            assert!(
                calls as f64 <= 1.1 * in_force,
                "{calls} calls in the second {from}..={to} µs (set at {})",
                run.set_at
            );
        }
    }

    /// The reverse: 2000/s lowered to 1000/s. Windows leased before every container saw the
    /// change keep their cap; after the propagation allowance, no 1 s interval carries more than
    /// 1.1 times the new limit.
    #[tokio::test(start_paused = true)]
    async fn a_lowered_rate_holds_after_the_propagation_allowance() {
        for set_after_us in SET_AFTER_US {
            a_lowered_rate_holds(set_after_us).await;
        }
    }

    async fn a_lowered_rate_holds(set_after_us: u64) {
        let run = fleet_through_a_change(2000.0, 1000, set_after_us).await;
        let propagation = propagation(&run);
        assert!(propagation <= 3_000_000, "adopted after {propagation} µs");
        let allowance = 3_000_000;
        let mut max_after = 0;
        for (from, to, calls) in one_second_intervals(&run.calls) {
            let in_force = if to < run.set_at + allowance {
                2000.0
            } else {
                max_after = max_after.max(calls);
                1000.0
            };
            assert!(
                calls as f64 <= 1.1 * in_force,
                "{calls} calls in the second {from}..={to} µs (set at {})",
                run.set_at
            );
        }
        let after = calls_in_second(&run.calls, run.set_at + 4_000_000);
        let held_from = one_second_intervals(&run.calls)
            .into_iter()
            .filter(|&(_, _, calls)| calls > 1100)
            .map(|(_, to, _)| to.saturating_sub(run.set_at))
            .max();
        eprintln!(
            "lower at {set_after_us} µs: adopted within {propagation} µs; the last second above 1100 ended {held_from:?} \
             µs after the set; at most {max_after} calls per second after the allowance, {after} \
             in the 5th second"
        );
        assert!(
            after >= 950,
            "{after} calls in the 5th second after the set"
        );
    }

    /// An override store that cannot be read does not stop the calls: the rate stays the last
    /// one known (here, the config's).
    #[tokio::test(start_paused = true)]
    async fn an_unreadable_override_keeps_the_rate() {
        struct Broken;
        #[async_trait]
        impl RateOverrides for Broken {
            async fn get(&self, _: &str) -> anyhow::Result<Option<RateOverride>> {
                anyhow::bail!("GetItem failed")
            }
            async fn set(&self, _: &str, _: &RateOverride) -> anyhow::Result<()> {
                anyhow::bail!("PutItem failed")
            }
            async fn clear(&self, _: &str) -> anyhow::Result<bool> {
                anyhow::bail!("DeleteItem failed")
            }
        }
        let leaser: Arc<dyn TokenLeaser> = Arc::new(MemoryLeaser::default());
        let clock = tokio_clock(3_000_000_000_000);
        let source = FleetTokenSource::new(config(500.0, 1), leaser, clock.clone())
            .with_overrides(Arc::new(Broken));
        let start = clock();
        let mut calls = 0;
        while clock() < start + 3_000_000 {
            source.take().await.unwrap();
            calls += 1;
        }
        assert_eq!(source.rate_in_force(), 500.0);
        assert!(
            (1450..=1510).contains(&calls),
            "{calls} calls in 3 s at 500/s"
        );
    }
}
