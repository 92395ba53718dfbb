//! Reports the memory per key of Palisade's keyed store and of governor's
//! keyed (DashMap) state, each at 1,000,000 client addresses with an 8-byte
//! state, and whether the memory is given back after eviction.
//!
//! ```text
//! cargo run --release -p palisade-benches --bin bytes_per_key
//! ```
//!
//! Each store is measured in a child process of its own, so one's freed
//! memory cannot hide the other's growth.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::process::Command;
use std::time::Duration;

use governor::{Quota, RateLimiter};
use palisade_benches::{client_ip, resident_bytes};
use palisade_core::clock::{Clock, ManualClock, Nanos};
use palisade_core::store::KeyedStore;

const KEYS: u64 = 1_000_000;

fn palisade() -> Result<(), String> {
    let clock = ManualClock::new();
    let store: KeyedStore<Nanos> = KeyedStore::builder()
        .capacity(2_000_000)
        .build()
        .map_err(|e| e.to_string())?;
    let before = resident_bytes().ok_or("no /proc/self/statm")?;
    let until = clock.now().saturating_add(Duration::from_secs(1));
    for n in 0..KEYS {
        store
            .update(&client_ip(n), clock.now(), || until, |_| ())
            .map_err(|e| e.to_string())?;
    }
    let filled = resident_bytes().ok_or("no statm")?;
    let tables = store.allocated_bytes();
    clock.advance(Duration::from_secs(2));
    let evicted = store.evict_idle(clock.now());
    let after = resident_bytes().ok_or("no statm")?;
    black_box(&store);
    report(
        "palisade KeyedStore<Nanos>",
        before,
        filled,
        after,
        evicted as u64,
        Some(tables as u64),
    );
    Ok(())
}

fn governor() -> Result<(), String> {
    // One cell per second. governor keeps a key until two emission
    // intervals after its last check (its `retain_recent` subtracts one from
    // now), so the wait below is over two seconds.
    let quota = Quota::per_second(NonZeroU32::MIN);
    let limiter = RateLimiter::<std::net::IpAddr, _, _>::keyed(quota);
    let before = resident_bytes().ok_or("no /proc/self/statm")?;
    for n in 0..KEYS {
        let _ = black_box(limiter.check_key(&client_ip(n)));
    }
    let filled = resident_bytes().ok_or("no statm")?;
    let len = limiter.len() as u64;
    std::thread::sleep(Duration::from_millis(2_200));
    limiter.retain_recent();
    limiter.shrink_to_fit();
    let evicted = len - limiter.len() as u64;
    let after = resident_bytes().ok_or("no statm")?;
    black_box(&limiter);
    report(
        "governor keyed (DashMap)",
        before,
        filled,
        after,
        evicted,
        None,
    );
    Ok(())
}

fn report(name: &str, before: u64, filled: u64, after: u64, evicted: u64, tables: Option<u64>) {
    let per_key = (filled.saturating_sub(before)) as f64 / KEYS as f64;
    let tables = tables.map_or_else(String::new, |t| {
        format!(" (tables {:.1} B/key)", t as f64 / KEYS as f64)
    });
    println!(
        "{name:<28} {per_key:>6.1} B/key RSS{tables}; RSS {:.1} MiB -> {:.1} MiB filled -> {:.1} MiB after evicting {evicted} keys",
        before as f64 / 1048576.0,
        filled as f64 / 1048576.0,
        after as f64 / 1048576.0,
    );
}

fn main() -> Result<(), String> {
    match std::env::args().nth(1).as_deref() {
        Some("palisade") => palisade(),
        Some("governor") => governor(),
        _ => {
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            println!(
                "{KEYS} client addresses, 8-byte state per key, each store in its own process:"
            );
            for which in ["palisade", "governor"] {
                let status = Command::new(&exe)
                    .arg(which)
                    .status()
                    .map_err(|e| e.to_string())?;
                if !status.success() {
                    return Err(format!("{which} measurement failed: {status}"));
                }
            }
            Ok(())
        }
    }
}
