//! The keyed store beside governor's keyed (DashMap) state, in one run:
//! a GCRA-style update of one key, of one key among 1,000,000, and of a new
//! key (insert).
//!
//! ```text
//! cargo bench -p palisade-benches --bench store
//! ```

use std::hint::black_box;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use governor::{Quota, RateLimiter};
use palisade_benches::client_ip;
use palisade_core::clock::{Clock, Nanos, SystemClock};
use palisade_core::store::KeyedStore;

const MANY: u64 = 1_000_000;
/// A generous quota, so the benchmark measures the allowed path.
const PER_SECOND: u32 = 1_000_000_000;

fn quota() -> Quota {
    Quota::per_second(NonZeroU32::new(PER_SECOND).unwrap_or(NonZeroU32::MAX))
}

fn our_store() -> KeyedStore<Nanos> {
    KeyedStore::builder()
        .capacity(4_000_000)
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The work governor does per check: read the clock, move the theoretical
/// arrival time (a GCRA update of an 8-byte state).
#[inline]
fn gcra_update(store: &KeyedStore<Nanos>, key: &IpAddr) -> bool {
    let now = SystemClock.now();
    let emission = Duration::from_nanos(1);
    store
        .update(
            key,
            now,
            || now,
            |tat| {
                let next = (*tat).max(now).saturating_add(emission);
                *tat = next;
                true
            },
        )
        .unwrap_or(false)
}

fn bench_store(c: &mut Criterion) {
    let mut group = c.benchmark_group("keyed_store");
    group.measurement_time(Duration::from_secs(3));

    // One hot key.
    let ours = our_store();
    let theirs = RateLimiter::<IpAddr, _, _>::keyed(quota());
    let key = client_ip(7);
    group.bench_function(BenchmarkId::new("palisade", "1 key"), |b| {
        b.iter(|| black_box(gcra_update(&ours, black_box(&key))))
    });
    group.bench_function(BenchmarkId::new("governor", "1 key"), |b| {
        b.iter(|| black_box(theirs.check_key(black_box(&key)).is_ok()))
    });

    // One key among 1,000,000, visited in a scattered order.
    let ours = our_store();
    let theirs = RateLimiter::<IpAddr, _, _>::keyed(quota());
    for n in 0..MANY {
        gcra_update(&ours, &client_ip(n));
        let _ = theirs.check_key(&client_ip(n));
    }
    let mut n = 0u64;
    group.bench_function(BenchmarkId::new("palisade", "1M keys"), |b| {
        b.iter(|| {
            n = (n + 7_919) % MANY;
            black_box(gcra_update(&ours, &client_ip(n)))
        })
    });
    let mut n = 0u64;
    group.bench_function(BenchmarkId::new("governor", "1M keys"), |b| {
        b.iter(|| {
            n = (n + 7_919) % MANY;
            black_box(theirs.check_key(&client_ip(n)).is_ok())
        })
    });
    drop((ours, theirs));

    // New keys: every iteration inserts one; each sample starts empty.
    group.bench_function(BenchmarkId::new("palisade", "insert"), |b| {
        b.iter_custom(|iters| {
            let store = our_store();
            let start = Instant::now();
            for n in 0..iters {
                black_box(gcra_update(&store, &client_ip(n)));
            }
            start.elapsed()
        })
    });
    group.bench_function(BenchmarkId::new("governor", "insert"), |b| {
        b.iter_custom(|iters| {
            let limiter = RateLimiter::<IpAddr, _, _>::keyed(quota());
            let start = Instant::now();
            for n in 0..iters {
                black_box(limiter.check_key(&client_ip(n)).is_ok());
            }
            start.elapsed()
        })
    });
    group.finish();
}

criterion_group!(benches, bench_store);
criterion_main!(benches);
