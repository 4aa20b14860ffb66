//! The fleet-wide rate limit: a token bucket kept in DynamoDB, spent locally.
//!
//! Time is cut into windows (1 s by default). Window `w` holds `cap = R · W` tokens, numbered
//! `0..cap`, and token `i` may be spent at `start(w) + i · W / cap`: the fleet's tokens are evenly
//! spaced at R per second, so spending them on time can never burst, however many containers hold
//! them. A container leases `n` tokens of a future window with one conditional `UpdateItem`
//! (`ADD granted :n IF granted < :cap`), learns from the returned counter which indices are its
//! own, and spends each at its slot time. The last lease of a window may be clipped at `cap`; a
//! full window makes the container lease from the next one. See docs/rate-limit.md.

pub mod source;

use std::time::Duration;

/// One lease: token indices `[first, end)` of `window`, already clipped to the window's capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenLease {
    pub window: u64,
    pub first: u64,
    pub end: u64,
}

/// The arithmetic of windows and slots for one limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowPlan {
    /// Fleet-wide requests per second.
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

    /// Tokens in one window (at least one).
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

    /// When token `index` of `window` may be spent, in microseconds since the epoch.
    pub fn slot_time_us(&self, window: u64, index: u64) -> u64 {
        let spacing_us = self.window_ms() as f64 * 1000.0 / self.capacity() as f64;
        self.window_start_ms(window) * 1000 + (index as f64 * spacing_us) as u64
    }

    /// The lease a counter update gave: `granted_after` is the counter's value after adding `n`.
    /// Indices at or past the capacity are not tokens (the window overflowed) and are dropped.
    pub fn lease_from_counter(&self, window: u64, granted_after: u64, n: u64) -> TokenLease {
        let cap = self.capacity();
        let first = granted_after.saturating_sub(n).min(cap);
        TokenLease {
            window,
            first,
            end: granted_after.min(cap),
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn slots_are_evenly_spaced() {
        let plan = WindowPlan::new(2000.0, Duration::from_secs(1));
        assert_eq!(plan.capacity(), 2000);
        assert_eq!(plan.slot_time_us(10, 0), 10_000_000);
        assert_eq!(plan.slot_time_us(10, 1000), 10_500_000);
        assert_eq!(plan.window_of(10_999), 10);
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
            plan.lease_from_counter(3, 120, 50),
            TokenLease {
                window: 3,
                first: 70,
                end: 100
            }
        );
        assert!(plan.lease_from_counter(3, 200, 50).is_empty());
    }

    proptest! {
        /// However leases interleave, a window's tokens are handed out once each, none past the
        /// capacity, and all of them once the window is saturated.
        #[test]
        fn leases_partition_a_window(rate in 1.0f64..5000.0, sizes in proptest::collection::vec(1u64..300, 1..80)) {
            let plan = WindowPlan::new(rate, Duration::from_secs(1));
            let cap = plan.capacity();
            let mut counter = 0u64;
            let mut seen = vec![false; cap as usize];
            for n in sizes {
                // The conditional update: ADD :n only while granted < cap.
                if counter >= cap { break; }
                counter += n;
                let lease = plan.lease_from_counter(0, counter, n);
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
            let first = plan.window_of(start);
            let mut times: Vec<u64> = (first..first + windows)
                .flat_map(|w| (0..plan.capacity()).map(move |i| plan.slot_time_us(w, i)))
                .collect();
            times.sort_unstable();
            let mut lo = 0;
            for hi in 0..times.len() {
                while times[hi] - times[lo] >= 1_000_000 { lo += 1; }
                prop_assert!((hi - lo + 1) as f64 <= rate.floor().max(1.0) + 1.0);
            }
        }
    }
}
