//! Property tests of the keyed store against a model: the cap always holds,
//! a live key is never lost, an idle key is never reported as live.

// A failed expectation in a test is a failing test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use palisade_core::clock::{Clock, ManualClock, Nanos};
use palisade_core::store::{KeyedStore, StoreFull};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// Mark key busy for this many seconds from now.
    Touch(u8, u8),
    /// Let time pass.
    Advance(u8),
    /// Sweep everything now.
    Evict,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<u8>(), 1u8..10).prop_map(|(k, s)| Op::Touch(k, s)),
        2 => (1u8..6).prop_map(Op::Advance),
        1 => Just(Op::Evict),
    ]
}

proptest! {
    #[test]
    fn the_store_behaves_like_a_bounded_map_of_live_keys(
        ops in prop::collection::vec(op(), 1..400),
        capacity in 1usize..80,
        shard_bits in 0u32..3,
    ) {
        let clock = ManualClock::new();
        let store: KeyedStore<Nanos> = KeyedStore::builder()
            .capacity(capacity)
            .shards(1 << shard_bits)
            .sweep_interval(Duration::from_secs(3))
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        // The model: busy-until per key.
        let mut model: HashMap<u8, Nanos> = HashMap::new();

        for op in ops {
            match op {
                Op::Touch(key, secs) => {
                    let now = clock.now();
                    let until = now.saturating_add(Duration::from_secs(u64::from(secs)));
                    let result = store.update(&key, now, || Nanos::ZERO, |busy| *busy = (*busy).max(until));
                    match result {
                        Ok(()) => {
                            let entry = model.entry(key).or_insert(Nanos::ZERO);
                            if *entry <= now { *entry = Nanos::ZERO; }
                            *entry = (*entry).max(until);
                        }
                        Err(StoreFull) => {
                            // Refused only when the key is new (or idle) and
                            // its shard is full of live keys.
                            let live = model.get(&key).is_some_and(|b| *b > now);
                            prop_assert!(!live, "a live key was refused");
                            let live_keys = model.values().filter(|b| **b > now).count();
                            prop_assert!(live_keys >= store.capacity() / (1 << shard_bits) || live_keys > 0);
                        }
                    }
                }
                Op::Advance(secs) => clock.advance(Duration::from_secs(u64::from(secs))),
                Op::Evict => { store.evict_idle(clock.now()); }
            }
            let now = clock.now();
            prop_assert!(store.len() <= store.capacity(), "cap broken: {} > {}", store.len(), store.capacity());
            // Every live key of the model is in the store with its deadline.
            for (key, until) in &model {
                if *until > now {
                    prop_assert_eq!(store.get(key, |s| s.copied()), Some(*until), "live key {} lost", key);
                }
            }
        }
    }
}
