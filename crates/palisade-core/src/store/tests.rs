//! Tests of the keyed store.
use super::*;
use crate::clock::{Clock, ManualClock};

fn store(capacity: usize, shards: usize) -> KeyedStore<Nanos> {
    KeyedStore::builder()
        .capacity(capacity)
        .shards(shards)
        .sweep_interval(Duration::from_secs(10))
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn busy_for(clock: &ManualClock, secs: u64) -> Nanos {
    clock.now().saturating_add(Duration::from_secs(secs))
}

#[test]
fn update_creates_then_reuses_the_entry() {
    let clock = ManualClock::new();
    let store = store(100, 4);
    let until = busy_for(&clock, 5);
    assert_eq!(
        store.update(
            &1u32,
            clock.now(),
            || Nanos::ZERO,
            |s| {
                *s = until;
                1
            }
        ),
        Ok(1)
    );
    assert_eq!(
        store.update(&1u32, clock.now(), || Nanos::ZERO, |s| *s),
        Ok(until)
    );
    assert_eq!(store.len(), 1);
    assert_eq!(store.get(&1u32, |s| s.copied()), Some(until));
    assert_eq!(store.remove(&1u32), Some(until));
    assert!(store.is_empty());
}

#[test]
fn capacity_is_a_hard_cap_while_keys_are_live() {
    let clock = ManualClock::new();
    let store = store(64, 1);
    let until = busy_for(&clock, 60);
    for key in 0..64u32 {
        assert!(store.update(&key, clock.now(), || until, |_| ()).is_ok());
    }
    assert_eq!(
        store.update(&1000u32, clock.now(), || until, |_| ()),
        Err(StoreFull)
    );
    assert_eq!(store.len(), 64);
    // Existing keys still work when full.
    assert!(store.update(&5u32, clock.now(), || until, |_| ()).is_ok());
}

#[test]
fn a_full_shard_refuses_new_keys_without_rescanning_until_its_backoff_passes() {
    let clock = ManualClock::new();
    let store = store(64, 1);
    let soon = clock.now().saturating_add(Duration::from_millis(50));
    for key in 0..64u32 {
        assert!(store.update(&key, clock.now(), || soon, |_| ()).is_ok());
    }
    assert_eq!(
        store.update(&100u32, clock.now(), || soon, |_| ()),
        Err(StoreFull)
    );
    // The keys are idle now, but the shard waits out its backoff...
    clock.advance(Duration::from_millis(60));
    assert_eq!(
        store.update(&101u32, clock.now(), || soon, |_| ()),
        Err(StoreFull)
    );
    assert_eq!(store.len(), 64, "no sweep during the backoff");
    // ...then sweeps and takes the new key.
    clock.advance(Duration::from_millis(100));
    assert!(store.update(&102u32, clock.now(), || soon, |_| ()).is_ok());
    assert_eq!(store.len(), 1);
}

#[test]
fn small_capacities_get_fewer_shards() {
    let small: KeyedStore<Nanos> = KeyedStore::builder()
        .capacity(300)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(small.capacity(), 300, "one shard holds it all");
    let large: KeyedStore<Nanos> = KeyedStore::builder()
        .capacity(1 << 20)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(large.shards.len() >= 4);
}

#[test]
fn a_full_store_makes_room_by_evicting_idle_keys() {
    let clock = ManualClock::new();
    let store = store(64, 1);
    let soon = busy_for(&clock, 1);
    for key in 0..64u32 {
        assert!(store.update(&key, clock.now(), || soon, |_| ()).is_ok());
    }
    clock.advance(Duration::from_secs(2));
    assert!(
        store
            .update(&1000u32, clock.now(), || Nanos::ZERO, |_| ())
            .is_ok()
    );
    assert_eq!(
        store.len(),
        1,
        "the 64 idle keys were swept on the request path"
    );
}

#[test]
fn shards_sweep_on_their_interval_without_a_background_task() {
    let clock = ManualClock::new();
    let store = store(10_000, 1);
    let soon = busy_for(&clock, 1);
    for key in 0..10u32 {
        assert!(store.update(&key, clock.now(), || soon, |_| ()).is_ok());
    }
    clock.advance(Duration::from_secs(11));
    // Touching any key of the shard after the interval sweeps it.
    assert!(
        store
            .update(&3u32, clock.now(), || Nanos::ZERO, |_| ())
            .is_ok()
    );
    assert_eq!(store.len(), 1);
}

#[test]
fn eviction_gives_memory_back() {
    let clock = ManualClock::new();
    let store = store(1_000_000, 4);
    let soon = busy_for(&clock, 1);
    for key in 0..100_000u32 {
        assert!(store.update(&key, clock.now(), || soon, |_| ()).is_ok());
    }
    let full = store.allocated_bytes();
    assert!(full >= 100_000 * 16, "{full}");
    clock.advance(Duration::from_secs(2));
    assert_eq!(store.evict_idle(clock.now()), 100_000);
    assert!(
        store.allocated_bytes() < full / 100,
        "{}",
        store.allocated_bytes()
    );
}

#[test]
fn a_transaction_reads_and_writes_several_keys_under_their_locks() {
    let clock = ManualClock::new();
    let store = store(1_000, 8);
    let hashes: Vec<u64> = (0..5u32).map(|k| store.hash_key(&k)).collect();
    let until = busy_for(&clock, 5);
    store.transact(&hashes, clock.now(), |tx| {
        for i in 0..5 {
            assert_eq!(tx.get(i), None);
            assert_eq!(tx.set(i, until), Ok(()));
        }
    });
    assert_eq!(store.len(), 5);
    for k in 0..5u32 {
        assert_eq!(store.get(&k, |s| s.copied()), Some(until));
    }
    // Idle states read as absent.
    clock.advance(Duration::from_secs(6));
    store.transact(&hashes[..2], clock.now(), |tx| assert_eq!(tx.get(0), None));
    // The same key twice in one transaction is fine.
    let twice = [hashes[0], hashes[0]];
    store.transact(&twice, clock.now(), |tx| {
        assert_eq!(tx.set(0, busy_for(&clock, 1)), Ok(()));
        assert!(tx.get(1).is_some());
    });
}

#[test]
fn set_all_stores_everything_or_nothing() {
    let clock = ManualClock::new();
    let store = store(64, 1);
    let live = busy_for(&clock, 60);
    for key in 0..63u32 {
        assert!(store.update(&key, clock.now(), || live, |_| ()).is_ok());
    }
    let hashes: Vec<u64> = [5u32, 1000, 1001]
        .iter()
        .map(|k| store.hash_key(k))
        .collect();
    let later = busy_for(&clock, 90);
    // Key 5 exists; 1000 fits (the 64th entry); 1001 does not.
    let result = store.transact(&hashes, clock.now(), |tx| {
        tx.set_all([(0, later), (1, later), (2, later)])
    });
    assert_eq!(result, Err(StoreFull));
    assert_eq!(
        store.get(&5u32, |s| s.copied()),
        Some(live),
        "existing key untouched"
    );
    assert_eq!(
        store.get(&1000u32, |s| s.copied()),
        None,
        "new key rolled back"
    );
    assert_eq!(store.len(), 63);
}

#[test]
fn bad_configuration_is_refused() {
    assert!(KeyedStore::<Nanos>::builder().shards(3).build().is_err());
    assert!(KeyedStore::<Nanos>::builder().capacity(0).build().is_err());
    assert!(
        KeyedStore::<Nanos>::builder()
            .sweep_interval(Duration::ZERO)
            .build()
            .is_err()
    );
}

#[test]
fn concurrent_updates_from_many_threads_are_all_counted() {
    #[derive(Default)]
    struct Count(u64);
    impl Idle for Count {
        fn is_idle(&self, _: Nanos) -> bool {
            false
        }
    }
    let store: std::sync::Arc<KeyedStore<Count>> = std::sync::Arc::new(
        KeyedStore::builder()
            .capacity(1_000)
            .build()
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..10_000u64 {
                    let _ = store.update(&(i % 100), Nanos::ZERO, Count::default, |c| c.0 += 1);
                }
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
    let total: u64 = (0..100u64)
        .map(|k| store.get(&k, |c| c.map_or(0, |c| c.0)))
        .sum();
    assert_eq!(total, 40_000);
}
