//! Several keys locked together, for all-or-nothing decisions.

use std::fmt;
use std::sync::MutexGuard;

use smallvec::SmallVec;

use super::{FULL_BACKOFF, Idle, KeyedStore, ShardMap, StoreFull};
use crate::clock::Nanos;

/// Several keys of a [`KeyedStore`], locked together; see
/// [`KeyedStore::transact`].
pub struct Transaction<'a, S> {
    pub(super) store: &'a KeyedStore<S>,
    pub(super) hashes: &'a [u64],
    pub(super) guards: SmallVec<[(usize, MutexGuard<'a, ShardMap<S>>); 4]>,
    pub(super) now: Nanos,
}

impl<S> fmt::Debug for Transaction<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction")
            .field("keys", &self.hashes.len())
            .field("shards", &self.guards.len())
            .finish()
    }
}

impl<S: Idle> Transaction<'_, S> {
    fn guard(&mut self, i: usize) -> &mut ShardMap<S> {
        let index = self.store.shard_index(self.hashes[i]);
        // Every hash's shard was locked when the transaction began.
        match self.guards.iter_mut().find(|(shard, _)| *shard == index) {
            Some((_, guard)) => guard,
            None => unreachable!("the shard of every key is locked"),
        }
    }

    /// The state of key `i`, if present and not idle.
    pub fn get(&mut self, i: usize) -> Option<&S> {
        let now = self.now;
        let hash = self.hashes[i];
        self.guard(i)
            .entries
            .get(&hash)
            .filter(|state| !state.is_idle(now))
    }

    /// Stores several states at once, or none: when a new key finds its
    /// shard full of live entries, the new keys already stored by this call
    /// are removed again and [`StoreFull`] is returned, with no existing
    /// key changed.
    pub fn set_all(&mut self, items: impl IntoIterator<Item = (usize, S)>) -> Result<(), StoreFull>
    where
        S: Copy,
    {
        let items: SmallVec<[(usize, S); 4]> = items.into_iter().collect();
        let mut inserted: SmallVec<[usize; 4]> = SmallVec::new();
        // New keys first: the only writes that can fail.
        for &(i, state) in &items {
            let hash = self.hashes[i];
            if self.guard(i).entries.contains_key(&hash) {
                continue;
            }
            if let Err(full) = self.set(i, state) {
                for &j in &inserted {
                    let hash = self.hashes[j];
                    self.guard(j).entries.remove(&hash);
                }
                return Err(full);
            }
            inserted.push(i);
        }
        for &(i, state) in &items {
            if !inserted.contains(&i) {
                self.set(i, state)?;
            }
        }
        Ok(())
    }

    /// Stores the state of key `i`. A new key is refused with [`StoreFull`]
    /// when its shard is full of live entries.
    pub fn set(&mut self, i: usize, state: S) -> Result<(), StoreFull> {
        let now = self.now;
        let hash = self.hashes[i];
        let capacity = self.store.per_shard_capacity;
        let store = self.store;
        let shard = self.guard(i);
        if let Some(existing) = shard.entries.get_mut(&hash) {
            *existing = state;
            return Ok(());
        }
        if shard.entries.len() >= capacity {
            if now < shard.full_until {
                return Err(StoreFull);
            }
            store.sweep(shard, now);
            if shard.entries.len() >= capacity {
                shard.full_until = now.saturating_add(FULL_BACKOFF);
                return Err(StoreFull);
            }
        }
        shard.entries.insert(hash, state);
        Ok(())
    }
}
