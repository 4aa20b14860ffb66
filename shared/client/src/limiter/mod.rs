//! The fleet-wide rate limit: a token bucket kept in DynamoDB, spent locally.
//!
//! Time is cut into windows (1 s). Window `w` holds `cap = R · W` tokens, numbered `0..cap`, and
//! token `i` may be spent at `start(w) + i · W / cap`: the fleet's tokens are evenly spaced at R
//! per second, so spending them on time can never burst, however many containers hold them. A
//! container leases `n` tokens of a future window with one conditional `UpdateItem`
//! (`ADD granted :n IF granted < cap`), learns from the returned counter which indices are its
//! own, and spends each at its slot time. The window's first lease fixes its `cap` in the item,
//! and every container spaces and clips the window's tokens by that stored cap, not by the rate
//! it believes in: while a rate change (`fanout limit set`) reaches the fleet, two containers may
//! believe in different rates, yet one window's tokens are still spaced one way and never number
//! more than its cap. The last lease of a window may be clipped at `cap`; a full window makes
//! the container lease from the next one. See docs/rate-limit.md.

pub mod in_force;
pub mod source;

use std::time::Duration;

pub use fanout_core::ports::WindowGrant;

/// The length of a rate-limit window, the same for every container and limit (windows are
/// numbered by it: window `w` starts at `w · WINDOW` since the epoch).
pub const WINDOW: Duration = Duration::from_secs(1);

/// One lease: token indices `[first, end)` of `window`, already clipped to the window's capacity
/// `cap` (the one stored with the window, which spaces its slots).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenLease {
    pub window: u64,
    pub first: u64,
    pub end: u64,
    pub cap: u64,
}

/// The arithmetic of windows and slots for one limit at one rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowPlan {
    /// Fleet-wide requests per second: the capacity this container proposes for a window.
    pub rate: f64,
    pub window: Duration,
}

impl WindowPlan {
    pub fn new(rate: f64, window: Duration) -> Self {
        assert!(rate > 0.0 && rate.is_finite(), "rate must be positive");
        assert!(!window.is_zero(), "window must be positive");
        Self { rate, window }
    }

    fn window_ms(&self) -> u64 {
        self.window.as_millis().max(1) as u64
    }

    /// Tokens in one window at this plan's rate (at least one): what a window's first lease
    /// stores as its capacity.
    pub fn capacity(&self) -> u64 {
        ((self.rate * self.window.as_secs_f64()).floor() as u64).max(1)
    }

    /// The window that contains `t_ms` (milliseconds since the epoch).
    pub fn window_of(&self, t_ms: u64) -> u64 {
        t_ms / self.window_ms()
    }

    pub fn window_start_ms(&self, window: u64) -> u64 {
        window * self.window_ms()
    }

    /// When token `index` of `window` may be spent, in microseconds since the epoch, for a
    /// window of capacity `cap` (the stored one, which may not be this plan's).
    pub fn slot_time_us(&self, window: u64, index: u64, cap: u64) -> u64 {
        let spacing_us = self.window_ms() as f64 * 1000.0 / cap.max(1) as f64;
        self.window_start_ms(window) * 1000 + (index as f64 * spacing_us) as u64
    }

    /// The lease a counter update gave, for `n` tokens asked. Indices at or past the window's
    /// capacity are not tokens (the window overflowed) and are dropped.
    pub fn lease_from_grant(&self, window: u64, grant: WindowGrant, n: u64) -> TokenLease {
        let cap = grant.cap;
        TokenLease {
            window,
            first: grant.granted_after.saturating_sub(n).min(cap),
            end: grant.granted_after.min(cap),
            cap,
        }
    }
}

/// Lease size from the limit and the fleet size: large enough that DynamoDB sees at most about
/// 2 writes per 100 calls at full rate, small enough that every container gets several leases per
/// window (so a dead container strands at most one lease, and the load spreads evenly).
pub fn lease_size(rate: f64, fleet: u32, window: Duration) -> u64 {
    let cap = (rate * window.as_secs_f64()).max(1.0);
    // Four leases per container per window...
    let share = cap / (f64::from(fleet.max(1)) * 4.0);
    // ...but at least 100 tokens when the window holds that many: one lease write, plus the
    // failed probe of a window that others filled, stays under 2 writes per 100 calls.
    share.max(100.0_f64.min(cap)).min(cap).ceil() as u64
}

impl TokenLease {
    pub fn len(&self) -> u64 {
        self.end - self.first
    }

    pub fn is_empty(&self) -> bool {
        self.first >= self.end
    }
}

/// One window's shared item: what [`fanout_core::ports::TokenLeaser::lease`] does to it, the
/// conditional update of the DynamoDB adapter, in memory (the in-memory leaser and the property
/// tests use it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowCounter {
    granted: u64,
    /// Fixed by the first lease.
    cap: Option<u64>,
}

impl WindowCounter {
    /// `ADD granted :n, SET cap = if_not_exists(cap, :cap)` if the window is not full yet.
    pub fn lease(&mut self, n: u64, cap: u64) -> Option<WindowGrant> {
        let cap = *self.cap.get_or_insert(cap);
        if self.granted >= cap {
            return None;
        }
        self.granted += n;
        Some(WindowGrant {
            granted_after: self.granted,
            cap,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn grant(granted_after: u64, cap: u64) -> WindowGrant {
        WindowGrant { granted_after, cap }
    }

    /// Every 1 s sliding interval of sorted slot times (µs): the largest count, and where.
    fn max_in_one_second(times: &[u64]) -> impl Iterator<Item = (usize, usize)> + '_ {
        let mut lo = 0;
        (0..times.len()).map(move |hi| {
            while times[hi] - times[lo] >= 1_000_000 {
                lo += 1;
            }
            (lo, hi)
        })
    }

    #[test]
    fn slots_are_evenly_spaced() {
        let plan = WindowPlan::new(2000.0, Duration::from_secs(1));
        assert_eq!(plan.capacity(), 2000);
        assert_eq!(plan.slot_time_us(10, 0, 2000), 10_000_000);
        assert_eq!(plan.slot_time_us(10, 1000, 2000), 10_500_000);
        assert_eq!(plan.window_of(10_999), 10);
    }

    #[test]
    fn slots_follow_the_windows_cap_not_the_plans() {
        let plan = WindowPlan::new(2000.0, Duration::from_secs(1));
        assert_eq!(plan.slot_time_us(10, 500, 1000), 10_500_000);
        let lease = plan.lease_from_grant(10, grant(1100, 1000), 200);
        assert_eq!((lease.first, lease.end, lease.cap), (900, 1000, 1000));
    }

    #[test]
    fn lease_size_bounds() {
        let w = Duration::from_secs(1);
        assert_eq!(lease_size(2000.0, 8, w), 100);
        assert_eq!(lease_size(5000.0, 100, w), 100);
        assert_eq!(lease_size(20_000.0, 8, w), 625);
        assert_eq!(lease_size(10.0, 8, w), 10);
        assert_eq!(lease_size(100_000.0, 10, w), 2500);
    }

    #[test]
    fn overflowing_lease_is_clipped() {
        let plan = WindowPlan::new(100.0, Duration::from_secs(1));
        assert_eq!(
            plan.lease_from_grant(3, grant(120, 100), 50),
            TokenLease {
                window: 3,
                first: 70,
                end: 100,
                cap: 100,
            }
        );
        assert!(plan.lease_from_grant(3, grant(200, 100), 50).is_empty());
    }

    #[test]
    fn the_first_lease_fixes_the_windows_cap() {
        let mut item = WindowCounter::default();
        assert_eq!(item.lease(60, 100), Some(grant(60, 100)));
        // A container that believes in a higher rate gets the stored cap back...
        assert_eq!(item.lease(60, 1000), Some(grant(120, 100)));
        // ...and the window is full at the stored cap, not at its own.
        assert_eq!(item.lease(60, 1000), None);
    }

    proptest! {
        /// However leases interleave, a window's tokens are handed out once each, none past the
        /// capacity, and all of them once the window is saturated.
        #[test]
        fn leases_partition_a_window(rate in 1.0f64..5000.0, sizes in proptest::collection::vec(1u64..300, 1..80)) {
            let plan = WindowPlan::new(rate, Duration::from_secs(1));
            let cap = plan.capacity();
            let mut item = WindowCounter::default();
            let mut seen = vec![false; cap as usize];
            let mut counter = 0;
            for n in sizes {
                let Some(g) = item.lease(n, cap) else { break };
                counter = g.granted_after;
                let lease = plan.lease_from_grant(0, g, n);
                for i in lease.first..lease.end {
                    prop_assert!(!seen[i as usize], "token {} granted twice", i);
                    seen[i as usize] = true;
                }
            }
            let granted = seen.iter().filter(|s| **s).count() as u64;
            prop_assert_eq!(granted, counter.min(cap));
        }

        /// Spending every token at its slot never puts more than R (+1) calls in any 1 s window.
        #[test]
        fn slot_schedule_never_exceeds_the_rate(rate in 1.0f64..3000.0, start in 0u64..10_000_000, windows in 1u64..4) {
            let plan = WindowPlan::new(rate, Duration::from_secs(1));
            let (first, cap) = (plan.window_of(start), plan.capacity());
            let mut times: Vec<u64> = (first..first + windows)
                .flat_map(|w| (0..cap).map(move |i| plan.slot_time_us(w, i, cap)))
                .collect();
            times.sort_unstable();
            for (lo, hi) in max_in_one_second(&times) {
                prop_assert!((hi - lo + 1) as f64 <= rate.floor().max(1.0) + 1.0);
            }
        }

        /// Containers that believe in different rates (a rate change on its way through the
        /// fleet) lease the same windows in any order, each until the window is full, then the
        /// next: each window's tokens are granted once, none past the cap its first lease fixed,
        /// and spent at their slots they never put more than the larger cap (+1) of the windows
        /// an interval touches in any 1 s sliding interval.
        #[test]
        fn containers_with_different_rates_share_windows(
            rates in proptest::collection::vec(1u32..3000, 2..5),
            turns in proptest::collection::vec((0usize..4, 1u64..400), 1..120),
            start in 0u64..10_000,
        ) {
            let plans: Vec<WindowPlan> = rates
                .iter()
                .map(|&r| WindowPlan::new(f64::from(r), Duration::from_secs(1)))
                .collect();
            let mut items: std::collections::BTreeMap<u64, WindowCounter> = Default::default();
            let mut next_window = vec![start; plans.len()];
            let mut seen: std::collections::BTreeMap<u64, Vec<bool>> = Default::default();
            let mut times = Vec::new();
            for (who, n) in turns {
                let who = who % plans.len();
                let plan = plans[who];
                loop {
                    let w = next_window[who];
                    let Some(g) = items.entry(w).or_default().lease(n, plan.capacity()) else {
                        next_window[who] += 1;
                        continue;
                    };
                    let lease = plan.lease_from_grant(w, g, n);
                    let marks = seen.entry(w).or_insert_with(|| vec![false; g.cap as usize]);
                    prop_assert_eq!(marks.len() as u64, g.cap, "window {} changed its cap", w);
                    for i in lease.first..lease.end {
                        prop_assert!(!marks[i as usize], "token {} of window {} granted twice", i, w);
                        marks[i as usize] = true;
                        times.push(plan.slot_time_us(w, i, lease.cap));
                    }
                    if lease.end >= lease.cap {
                        next_window[who] += 1;
                    }
                    break;
                }
            }
            times.sort_unstable();
            let cap_of = |t: u64| seen[&(t / 1_000_000)].len() as u64;
            for (lo, hi) in max_in_one_second(&times) {
                let bound = cap_of(times[lo]).max(cap_of(times[hi])) + 1;
                prop_assert!(
                    (hi - lo + 1) as u64 <= bound,
                    "{} calls in 1 s from {} µs, caps {:?}",
                    hi - lo + 1,
                    times[lo],
                    seen.values().map(Vec::len).collect::<Vec<_>>()
                );
            }
        }
    }
}
