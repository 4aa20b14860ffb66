//! The fleet limiter's bookkeeping in one process (ns per call): a token spent from a lease the
//! container holds, and the accounting of a lease when it is renewed (the window's counter
//! update, the grant clipped to the window's cap, its tokens' slot times queued). The DynamoDB
//! port (`TokenLeaser`) is an in-memory counter and the clock a virtual one that moves at the
//! tokens' pace, so no call ever sleeps: what is measured is the limiter's own work per call,
//! not the wait for a slot nor DynamoDB's round trip. Run with `make bench`, or
//! `cargo bench -p fanout-client --bench limiter`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fanout_client::limiter::WindowCounter;
use fanout_client::limiter::source::{
    Clock, FleetLimitConfig, FleetTokenSource, TokenLeaser, WindowGrant, system_clock,
};
use fanout_client::rate_limit::TokenSource;

/// A window start (µs since the epoch): the virtual clock's first reading.
const EPOCH_US: u64 = 1_800_000_000_000_000;

/// The DynamoDB port in memory: the counter of the window being leased (the benchmark's windows
/// only move forward, so one is enough), updated as the adapter's conditional write does.
#[derive(Default)]
struct CounterLeaser {
    window: Mutex<(u64, WindowCounter)>,
}

#[async_trait]
impl TokenLeaser for CounterLeaser {
    async fn lease(
        &self,
        _limit: &str,
        window: u64,
        n: u64,
        cap: u64,
    ) -> anyhow::Result<Option<WindowGrant>> {
        let mut held = self.window.lock().expect("lock");
        if held.0 != window {
            *held = (window, WindowCounter::default());
        }
        Ok(held.1.lease(n, cap))
    }
}

/// A token source for a fleet limit of `rate`/s and one container (so a lease is a quarter of a
/// window, at least 100 tokens), on a virtual clock the caller moves.
fn source(rate: f64) -> (Arc<FleetTokenSource>, Arc<AtomicU64>) {
    let now = Arc::new(AtomicU64::new(EPOCH_US));
    let read = now.clone();
    let clock: Clock = Arc::new(move || read.load(Ordering::Relaxed));
    let config = FleetLimitConfig {
        name: "bench".into(),
        rate,
        burst: 1.0,
        fleet_size: 1,
        window: Duration::from_secs(1),
    };
    let leaser: Arc<dyn TokenLeaser> = Arc::new(CounterLeaser::default());
    (Arc::new(FleetTokenSource::new(config, leaser, clock)), now)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

fn limiter(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("limiter");
    group.throughput(Throughput::Elements(1));

    // A token from a held lease: 1,000,000/s, leases of 250,000 tokens, the clock moving 1 µs
    // (one slot) per call. One call in 250,000 renews the lease (in the figure, amortised).
    let (held, now) = source(1_000_000.0);
    group.bench_function("acquire_held_lease", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    held.acquire().await.expect("token");
                    now.fetch_add(1, Ordering::Relaxed);
                }
                started.elapsed()
            })
        })
    });
    assert_eq!(held.stats.tokens_dropped.load(Ordering::Relaxed), 0);

    // Every call renews: 1/s, so a window holds one token and a lease is that token; the clock
    // moves a window per call. The counter update, the grant, its one slot, and the token spent.
    let (renews, now) = source(1.0);
    group.bench_function("acquire_renewing_every_call", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    renews.acquire().await.expect("token");
                    now.fetch_add(1_000_000, Ordering::Relaxed);
                }
                started.elapsed()
            })
        })
    });
    assert_eq!(
        renews.stats.leases.load(Ordering::Relaxed),
        renews.stats.tokens_leased.load(Ordering::Relaxed)
    );
    group.finish();

    // The renewal of a lease of n tokens: the call that finds no token held and leases (timed),
    // then the lease's other n - 1 tokens spent (not timed). Throughput: per token leased.
    let mut group = c.benchmark_group("limiter_renewal");
    for rate in [400.0, 10_000.0] {
        let (renewing, now) = source(rate);
        let n = rt.block_on(renewing.lease_size());
        let spacing = 1_000_000 / rate as u64;
        group.throughput(Throughput::Elements(n));
        group.bench_with_input(BenchmarkId::new("lease_of", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        let started = Instant::now();
                        renewing.acquire().await.expect("token");
                        timed += started.elapsed();
                        now.fetch_add(spacing, Ordering::Relaxed);
                        for _ in 1..n {
                            renewing.acquire().await.expect("token");
                            now.fetch_add(spacing, Ordering::Relaxed);
                        }
                    }
                    timed
                })
            })
        });
        let leases = renewing.stats.leases.load(Ordering::Relaxed);
        let tokens = renewing.stats.tokens_leased.load(Ordering::Relaxed);
        assert_eq!(tokens, leases * n, "every lease was whole");
        assert_eq!(renewing.stats.tokens_dropped.load(Ordering::Relaxed), 0);
    }
    group.finish();

    // For scale: the production clock (wall time, µs), which a call reads three or four times.
    let clock = system_clock();
    c.bench_function("limiter_clock/system_clock", |b| {
        b.iter(|| std::hint::black_box(clock()))
    });
}

criterion_group!(benches, limiter);
criterion_main!(benches);
