//! A bounded keyed store for per-key state (rate-limit cells, concurrency
//! counters, breakers).
//!
//! - **Sharded, no global lock**: keys are spread over shards by a keyed
//!   hash; each shard has its own short-held mutex, so requests for
//!   different keys rarely meet.
//! - **Hard capacity**: at most `capacity` entries (split evenly over the
//!   shards). A new key that finds its shard full after eviction is refused
//!   with [`StoreFull`]; the caller decides (a rate limiter refuses the
//!   request: failing open would let a flood of fresh keys pass).
//! - **Idle eviction that gives memory back**: a state says when it is idle
//!   ([`Idle`]): equal to a fresh state, so dropping it changes nothing. A
//!   GCRA cell whose theoretical arrival time has passed is idle. Evicted
//!   shards shrink their tables, returning memory.
//! - **Amortised cleanup**: a shard sweeps itself on the request path when
//!   it has doubled since its last sweep, when it is full, or when its sweep
//!   interval has passed; each sweep is paid for by the inserts before it.
//!   No background task is needed; [`KeyedStore::evict_idle`] lets one help.
//! - **Compact**: an entry is a 64-bit keyed hash and the state: 16 bytes for
//!   an 8-byte state. Keys are hashed with a per-store random SipHash key, so
//!   clients cannot aim collisions; with 64 bits, two of a million keys
//!   collide with probability about 3·10⁻⁸.
//!
//! ```
//! use palisade_core::clock::{Clock, ManualClock, Nanos};
//! use palisade_core::store::KeyedStore;
//! use std::time::Duration;
//!
//! let clock = ManualClock::new();
//! // State: "busy until" (like a GCRA theoretical arrival time).
//! let store: KeyedStore<Nanos> = KeyedStore::builder().capacity(1_000).build()?;
//! let until = clock.now().saturating_add(Duration::from_secs(1));
//! store.update(&"client-a", clock.now(), || Nanos::ZERO, |busy| *busy = until)?;
//! assert_eq!(store.len(), 1);
//! clock.advance(Duration::from_secs(2));
//! assert_eq!(store.evict_idle(clock.now()), 1);
//! assert!(store.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::marker::PhantomData;

use smallvec::SmallVec;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::clock::{Nanos, duration_to_nanos};
use crate::error::ConfigError;

/// A per-key state that can tell when it is idle: indistinguishable from a
/// fresh state, so the store may drop it.
pub trait Idle {
    /// Whether the state is idle at `now`.
    fn is_idle(&self, now: Nanos) -> bool;
}

/// A deadline ("busy until"): idle once it has passed.
impl Idle for Nanos {
    #[inline]
    fn is_idle(&self, now: Nanos) -> bool {
        *self <= now
    }
}

/// A new key was refused because its shard is full of live keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the keyed store is full")]
pub struct StoreFull;

/// The store; share it behind an `Arc`.
pub struct KeyedStore<S> {
    shards: Box<[Shard<S>]>,
    shard_bits: u32,
    per_shard_capacity: usize,
    sweep_interval: u64,
    hasher: RandomState,
}

// One shard per cache line pair, so two cores updating neighbouring shards do
// not contend on the same line.
#[repr(align(128))]
struct Shard<S> {
    map: Mutex<ShardMap<S>>,
}

impl<S> Shard<S> {
    /// Locks the shard. A poisoned lock (a caller's closure panicked while
    /// it held the lock) is taken over: the map itself is consistent, since
    /// closures only ever touch one state, which may be left half-updated;
    /// for the small `Copy` states the layers keep, that is a state a
    /// request could have produced. Closures must not call back into the
    /// store: the shard's lock is not reentrant.
    #[inline]
    fn lock(&self) -> MutexGuard<'_, ShardMap<S>> {
        self.map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

struct ShardMap<S> {
    entries: HashMap<u64, S, BuildHasherDefault<PreHashed>>,
    /// Sweep when the shard grows to this many entries.
    sweep_at_len: usize,
    /// Sweep when time reaches this point.
    sweep_at_time: Nanos,
    /// After a sweep that left the shard full of live entries, new keys are
    /// refused without sweeping again until this point, so a flood of new
    /// keys cannot make every request scan the shard.
    full_until: Nanos,
}

/// The store's keys are already keyed SipHash outputs, uniform in every bit;
/// hashing them again would only cost time. (The shard index takes bits the
/// table does not use, see `KeyedStore::shard`.)
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are ever hashed; fold anything else anyway.
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    #[inline]
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// Smallest size a shard sweeps at, so small shards do not sweep constantly.
const MIN_SWEEP_LEN: usize = 64;

/// How long a shard found full of live entries refuses new keys before it
/// looks for idle ones again.
const FULL_BACKOFF: Duration = Duration::from_millis(100);

/// The fewest entries per shard the default shard count allows; fewer
/// entries per shard would refuse new keys well below the capacity when
/// keys spread unevenly.
const MIN_PER_SHARD: usize = 256;

impl<S> fmt::Debug for KeyedStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedStore")
            .field("shards", &self.shards.len())
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .finish()
    }
}

/// Builds a [`KeyedStore`].
pub struct KeyedStoreBuilder<S> {
    capacity: usize,
    shards: Option<usize>,
    sweep_interval: Duration,
    state: PhantomData<fn() -> S>,
}

impl<S> fmt::Debug for KeyedStoreBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedStoreBuilder")
            .field("capacity", &self.capacity)
            .field("shards", &self.shards)
            .field("sweep_interval", &self.sweep_interval)
            .finish()
    }
}

impl<S> Default for KeyedStoreBuilder<S> {
    fn default() -> Self {
        Self {
            capacity: 100_000,
            shards: None,
            sweep_interval: Duration::from_secs(30),
            state: PhantomData,
        }
    }
}

impl<S> KeyedStoreBuilder<S> {
    /// The most entries the store holds (default 100,000).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// The number of shards, a power of two (default: four per CPU, between 4
    /// and 256, and fewer for small capacities so that each shard holds at
    /// least 256 entries).
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// How often each shard sweeps idle entries on its own, at the latest
    /// (default 30 s).
    pub fn sweep_interval(mut self, interval: Duration) -> Self {
        self.sweep_interval = interval;
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<KeyedStore<S>, ConfigError> {
        let shards = match self.shards {
            Some(shards) => shards,
            None => {
                let by_cpus = std::thread::available_parallelism()
                    .map_or(4, |n| n.get() * 4)
                    .next_power_of_two()
                    .clamp(4, 256);
                let by_capacity = (self.capacity / MIN_PER_SHARD).max(1);
                // The largest power of two not above by_capacity.
                let by_capacity = 1usize << by_capacity.ilog2();
                by_cpus.min(by_capacity)
            }
        };
        if !shards.is_power_of_two() || shards > 65_536 {
            return Err(ConfigError::invalid(
                "shards",
                "must be a power of two, at most 65536",
            ));
        }
        if self.capacity == 0 {
            return Err(ConfigError::invalid("capacity", "must be at least 1"));
        }
        if self.sweep_interval.is_zero() {
            return Err(ConfigError::invalid("sweep_interval", "must not be zero"));
        }
        let per_shard_capacity = self.capacity.div_ceil(shards);
        Ok(KeyedStore {
            shards: (0..shards)
                .map(|_| Shard {
                    map: Mutex::new(ShardMap {
                        entries: HashMap::default(),
                        sweep_at_len: MIN_SWEEP_LEN.min(per_shard_capacity),
                        sweep_at_time: Nanos(duration_to_nanos(self.sweep_interval)),
                        full_until: Nanos::ZERO,
                    }),
                })
                .collect(),
            shard_bits: shards.trailing_zeros(),
            per_shard_capacity,
            sweep_interval: duration_to_nanos(self.sweep_interval),
            hasher: RandomState::new(),
        })
    }
}

impl<S> KeyedStore<S> {
    /// A builder with the defaults.
    pub fn builder() -> KeyedStoreBuilder<S> {
        KeyedStoreBuilder::default()
    }

    /// The most entries the store holds (rounded up to a multiple of the
    /// number of shards).
    pub fn capacity(&self) -> usize {
        self.per_shard_capacity * self.shards.len()
    }

    /// The 64-bit keyed hash under which `key` is stored.
    #[inline]
    pub fn hash_key<K: Hash + ?Sized>(&self, key: &K) -> u64 {
        self.hasher.hash_one(key)
    }

    /// A hasher with the store's secret key, for callers that hash a fixed
    /// prefix once and then clone the state per request. Its `finish()` is a
    /// valid hash for [`update_hashed`](Self::update_hashed).
    #[inline]
    pub fn build_hasher(&self) -> std::hash::DefaultHasher {
        self.hasher.build_hasher()
    }

    #[inline]
    fn shard_index(&self, hash: u64) -> usize {
        // Middle bits: the table uses the low bits for its position and the
        // top seven for its tags, so the shard index takes neither.
        ((hash >> 32) as usize) & ((1usize << self.shard_bits) - 1)
    }

    #[inline]
    fn shard(&self, hash: u64) -> MutexGuard<'_, ShardMap<S>> {
        self.shards[self.shard_index(hash)].lock()
    }

    /// Reads the state of `key`, if present.
    pub fn get<K, R>(&self, key: &K, f: impl FnOnce(Option<&S>) -> R) -> R
    where
        K: Hash + ?Sized,
    {
        let hash = self.hash_key(key);
        let shard = self.shard(hash);
        f(shard.entries.get(&hash))
    }

    /// [`get`](Self::get) with a hash from [`hash_key`](Self::hash_key)
    /// (or any uniformly distributed 64-bit hash the caller already has).
    pub fn get_hashed<R>(&self, hash: u64, f: impl FnOnce(Option<&S>) -> R) -> R {
        f(self.shard(hash).entries.get(&hash))
    }

    /// Removes `key`, returning its state.
    pub fn remove<K: Hash + ?Sized>(&self, key: &K) -> Option<S> {
        let hash = self.hash_key(key);
        self.shard(hash).entries.remove(&hash)
    }

    /// The number of entries (idle ones not yet swept included).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().entries.len())
            .sum()
    }

    /// Whether the store holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes the store's tables hold (entries, control bytes and spare
    /// capacity), for memory reports.
    pub fn allocated_bytes(&self) -> usize {
        let slot = std::mem::size_of::<(u64, S)>() + 1;
        self.shards
            .iter()
            .map(|shard| {
                let shard = shard.lock();
                // hashbrown keeps buckets = capacity * 8 / 7 rounded to a power of two.
                let capacity = shard.entries.capacity();
                if capacity == 0 {
                    0
                } else {
                    (capacity * 8 / 7).next_power_of_two() * slot
                }
            })
            .sum()
    }
}

impl<S: Idle> KeyedStore<S> {
    /// Runs `f` on the state of `key`, created with `init` when absent (or
    /// evicted). Returns [`StoreFull`] when the key is new and its shard is
    /// full of live entries.
    #[inline]
    pub fn update<K, R>(
        &self,
        key: &K,
        now: Nanos,
        init: impl FnOnce() -> S,
        f: impl FnOnce(&mut S) -> R,
    ) -> Result<R, StoreFull>
    where
        K: Hash + ?Sized,
    {
        self.update_hashed(self.hash_key(key), now, init, f)
    }

    /// [`update`](Self::update) with a hash from [`hash_key`](Self::hash_key).
    ///
    /// Inlined: a held key costs a lock, one probe and `f`, with no call
    /// and no result copied out; sweeping and inserting are out of line.
    #[inline]
    pub fn update_hashed<R>(
        &self,
        hash: u64,
        now: Nanos,
        init: impl FnOnce() -> S,
        f: impl FnOnce(&mut S) -> R,
    ) -> Result<R, StoreFull> {
        let mut shard = self.shard(hash);
        if now >= shard.sweep_at_time {
            self.sweep(&mut shard, now);
        }
        if let Some(state) = shard.entries.get_mut(&hash) {
            return Ok(f(state));
        }
        self.insert_new(&mut shard, hash, now, init, f)
    }

    /// A key not held: created with `init` when its shard has room (after a
    /// sweep when it looks full).
    #[inline(never)]
    fn insert_new<R>(
        &self,
        shard: &mut ShardMap<S>,
        hash: u64,
        now: Nanos,
        init: impl FnOnce() -> S,
        f: impl FnOnce(&mut S) -> R,
    ) -> Result<R, StoreFull> {
        if shard.entries.len() >= self.per_shard_capacity && now < shard.full_until {
            return Err(StoreFull);
        }
        if shard.entries.len() >= shard.sweep_at_len {
            self.sweep(shard, now);
            if shard.entries.len() >= self.per_shard_capacity {
                shard.full_until = now.saturating_add(FULL_BACKOFF);
                return Err(StoreFull);
            }
        }
        let mut state = init();
        let result = f(&mut state);
        shard.entries.insert(hash, state);
        Ok(result)
    }

    /// Runs `f` with the states of several keys at once, every shard they
    /// live in locked for the whole call (in shard order, so concurrent
    /// transactions cannot deadlock). This is what makes an all-or-nothing
    /// decision over several keys exact: nothing can change any of them
    /// between reading and writing.
    ///
    /// `hashes` come from [`hash_key`](Self::hash_key); the transaction's
    /// `get(i)`/`set(i, ..)` address `hashes[i]`.
    pub fn transact<R>(
        &self,
        hashes: &[u64],
        now: Nanos,
        f: impl FnOnce(&mut Transaction<'_, S>) -> R,
    ) -> R {
        let mut shards: SmallVec<[usize; 4]> =
            hashes.iter().map(|&h| self.shard_index(h)).collect();
        shards.sort_unstable();
        shards.dedup();
        let mut guards: SmallVec<[(usize, MutexGuard<'_, ShardMap<S>>); 4]> = SmallVec::new();
        for index in shards {
            let mut guard = self.shards[index].lock();
            if now >= guard.sweep_at_time {
                self.sweep(&mut guard, now);
            }
            guards.push((index, guard));
        }
        let mut transaction = Transaction {
            store: self,
            hashes,
            guards,
            now,
        };
        f(&mut transaction)
    }

    /// Sweeps every shard now, dropping idle entries and returning memory;
    /// for an optional background task. Returns how many were dropped.
    pub fn evict_idle(&self, now: Nanos) -> usize {
        self.shards
            .iter()
            .map(|shard| self.sweep(&mut shard.lock(), now))
            .sum()
    }

    #[cold]
    #[inline(never)]
    fn sweep(&self, shard: &mut ShardMap<S>, now: Nanos) -> usize {
        let before = shard.entries.len();
        shard.entries.retain(|_, state| !state.is_idle(now));
        let after = shard.entries.len();
        // Give memory back once the table is mostly empty; keep room to grow
        // to twice the live entries without reallocating.
        if shard.entries.capacity() > 4 * after.max(MIN_SWEEP_LEN) {
            shard.entries.shrink_to(2 * after);
        }
        shard.sweep_at_len = (2 * after).max(MIN_SWEEP_LEN).min(self.per_shard_capacity);
        shard.sweep_at_time = now.saturating_add(Duration::from_nanos(self.sweep_interval));
        shard.full_until = Nanos::ZERO;
        before - after
    }
}

mod transaction;
pub use transaction::Transaction;

#[cfg(test)]
mod tests;
