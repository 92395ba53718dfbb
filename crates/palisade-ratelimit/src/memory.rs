//! The in-memory store: core's bounded keyed store of theoretical arrival
//! times, every policy of a request decided under one transaction.

use std::hash::Hasher;
use std::sync::Arc;

use palisade_core::ConfigError;
use palisade_core::clock::{Clock, Nanos, SystemClock};
use palisade_core::store::{Idle, KeyedStore, StoreFull};
use smallvec::SmallVec;

use crate::gcra::{self, Decision, Quota};

/// One policy's part of a request's decision.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Check {
    pub(crate) hash: u64,
    pub(crate) quota: Quota,
    pub(crate) cost: u32,
    /// Refusals of this check refuse the request (false: shadow, or not
    /// enforced for this request).
    pub(crate) enforced: bool,
    pub(crate) decision: Option<Decision>,
}

/// A policy name hashed once; see [`MemoryStore::namespace`].
#[derive(Clone, Debug)]
pub struct Namespace {
    prefix: std::hash::DefaultHasher,
}

/// In-memory rate-limit state: one theoretical arrival time (TAT) per key,
/// kept as core's [`Nanos`], whose [`Idle`] rule is the GCRA one: a key whose
/// TAT is behind us is indistinguishable from a new key. Bounded (a hard cap on keys), idle keys
/// evicted on the request path and memory given back. Cheap to clone;
/// clones share state, so one store can serve several layers.
#[derive(Clone, Debug)]
pub struct MemoryStore {
    cells: Arc<KeyedStore<Nanos>>,
    clock: StoreClock,
}

/// The system clock is called directly (it is read on every decision and
/// inlines); any other clock through its trait object.
#[derive(Clone, Debug)]
enum StoreClock {
    System,
    Other(Arc<dyn Clock>),
}

impl StoreClock {
    #[inline]
    fn now(&self) -> Nanos {
        match self {
            StoreClock::System => SystemClock.now(),
            StoreClock::Other(clock) => clock.now(),
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::builder()
            .build()
            .unwrap_or_else(|_| unreachable!("the default configuration is valid"))
    }
}

/// Builds a [`MemoryStore`].
#[derive(Debug)]
pub struct MemoryStoreBuilder {
    capacity: usize,
    clock: StoreClock,
}

impl MemoryStoreBuilder {
    /// The most keys held at once (default 1,000,000, about 36 MB). New keys
    /// beyond it are refused (503) while every held key is live.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// The clock (default: the system clock); tests use a manual one.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = StoreClock::Other(Arc::new(clock));
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<MemoryStore, ConfigError> {
        Ok(MemoryStore {
            cells: Arc::new(KeyedStore::builder().capacity(self.capacity).build()?),
            clock: self.clock,
        })
    }
}

impl MemoryStore {
    /// A builder with the defaults.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder {
            capacity: 1_000_000,
            clock: StoreClock::System,
        }
    }

    /// The number of keys held (idle ones not yet swept included).
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// Decides one request of `cost` for `key` in `namespace` (a policy
    /// name) and charges it when it fits: the limiter without the layer, for
    /// limits decided inside a handler or a background job.
    ///
    /// ```
    /// use palisade_ratelimit::{MemoryStore, Quota};
    ///
    /// let store = MemoryStore::default();
    /// let quota = Quota::per_minute(2);
    /// assert!(store.check("exports", b"tenant-7", &quota, 1)?.allowed);
    /// assert!(store.check("exports", b"tenant-7", &quota, 1)?.allowed);
    /// assert!(!store.check("exports", b"tenant-7", &quota, 1)?.allowed);
    /// # Ok::<(), palisade_core::store::StoreFull>(())
    /// ```
    pub fn check(
        &self,
        namespace: &str,
        key: &[u8],
        quota: &Quota,
        cost: u32,
    ) -> Result<Decision, StoreFull> {
        self.check_hashed(self.hash(namespace, key), quota, cost)
    }

    /// A namespace whose name is hashed once, for [`check_in`](Self::check_in)
    /// on a hot path.
    pub fn namespace(&self, name: &str) -> Namespace {
        Namespace {
            prefix: self.prefix_hasher(name),
        }
    }

    /// [`check`](Self::check) in a namespace made by
    /// [`namespace`](Self::namespace): only the key's bytes are hashed.
    ///
    /// ```
    /// use palisade_ratelimit::{MemoryStore, Quota};
    ///
    /// let store = MemoryStore::default();
    /// let exports = store.namespace("exports");
    /// let quota = Quota::per_minute(1);
    /// assert!(store.check_in(&exports, b"tenant-7", &quota, 1)?.allowed);
    /// assert!(!store.check_in(&exports, b"tenant-7", &quota, 1)?.allowed);
    /// assert!(!store.check("exports", b"tenant-7", &quota, 1)?.allowed, "the same keys");
    /// # Ok::<(), palisade_core::store::StoreFull>(())
    /// ```
    #[inline]
    pub fn check_in(
        &self,
        namespace: &Namespace,
        key: &[u8],
        quota: &Quota,
        cost: u32,
    ) -> Result<Decision, StoreFull> {
        let mut hasher = namespace.prefix.clone();
        hasher.write(key);
        self.check_hashed(hasher.finish(), quota, cost)
    }

    #[inline]
    fn check_hashed(&self, hash: u64, quota: &Quota, cost: u32) -> Result<Decision, StoreFull> {
        self.check_at(hash, quota, cost, self.clock.now())
    }

    /// Decides one key under its shard's lock and charges it when it fits.
    /// A new key starts as a full bucket (an idle TAT reads as none), and its
    /// TAT is stored only when the request fits.
    #[inline]
    fn check_at(
        &self,
        hash: u64,
        quota: &Quota,
        cost: u32,
        now: Nanos,
    ) -> Result<Decision, StoreFull> {
        self.cells.update_hashed(
            hash,
            now,
            || Nanos::ZERO,
            |tat| {
                let stored = (!tat.is_idle(now)).then_some(tat.as_u64());
                let decision = gcra::decide(quota, stored, now.as_u64(), cost);
                if decision.allowed {
                    *tat = Nanos(decision.tat);
                }
                decision
            },
        )
    }

    pub(crate) fn hash(&self, policy: &str, key: &[u8]) -> u64 {
        let mut hasher = self.prefix_hasher(policy);
        hasher.write(key);
        hasher.finish()
    }

    /// The hash state after a policy's name, cloned per request by the
    /// layer so that only the key's bytes are hashed on the request path.
    pub(crate) fn prefix_hasher(&self, policy: &str) -> std::hash::DefaultHasher {
        let mut hasher = self.cells.build_hasher();
        hasher.write(policy.as_bytes());
        // A separator no name contains (0xff is never in UTF-8), so name and
        // key cannot run together; repeated to a multiple of 8 bytes, so the
        // key's bytes start a new word of the hash (none is carried over and
        // merged byte by byte on every request).
        let pad = 8 - policy.len() % 8;
        hasher.write(&[0xff; 8][..pad]);
        hasher
    }

    /// Decides one check, [`decide`](Self::decide) for a single policy: one
    /// shard, one lock, no transaction to set up.
    ///
    /// A full store refuses only an enforced check: one that refuses
    /// nothing (shadow, or not enforced for this request) goes undecided
    /// instead, so it can never make a request fail.
    #[inline]
    pub(crate) fn decide_one(&self, check: &mut Check) -> Result<bool, StoreFull> {
        match self.check_at(check.hash, &check.quota, check.cost, self.clock.now()) {
            Ok(decision) => {
                check.decision = Some(decision);
                Ok(decision.allowed || !check.enforced)
            }
            Err(full) if check.enforced => Err(full),
            Err(_) => {
                check.decision = None;
                Ok(true)
            }
        }
    }

    /// Decides every check together: the request passes only if every
    /// enforced check fits, and only then is anything charged. Returns
    /// whether it passes.
    pub(crate) fn decide(&self, checks: &mut [Check]) -> Result<bool, StoreFull> {
        if let [check] = checks {
            return self.decide_one(check);
        }
        let now = self.clock.now();
        let hashes: SmallVec<[u64; 4]> = checks.iter().map(|c| c.hash).collect();
        self.cells.transact(&hashes, now, |tx| {
            let mut passes = true;
            for (i, check) in checks.iter_mut().enumerate() {
                let tat = tx.get(i).map(|t| t.as_u64());
                let decision = gcra::decide(&check.quota, tat, now.as_u64(), check.cost);
                passes &= decision.allowed || !check.enforced;
                check.decision = Some(decision);
            }
            if !passes {
                // Nothing is charged: report the policies that had room as
                // they stand, not as if this request had been charged.
                for (i, check) in checks.iter_mut().enumerate() {
                    if check.decision.is_some_and(|d| d.allowed) {
                        let tat = tx.get(i).map(|t| t.as_u64());
                        check.decision = Some(gcra::decide(&check.quota, tat, now.as_u64(), 0));
                    }
                }
            } else {
                // Every allowed check is charged now, response-dependent
                // ones included (they are given back afterwards when the
                // response does not match): charging after the response
                // would let a burst of parallel requests all pass.
                tx.set_all(checks.iter().enumerate().filter_map(|(i, check)| {
                    let decision = check.decision?;
                    (decision.allowed && check.enforced).then_some((i, Nanos(decision.tat)))
                }))?;
                // Checks that refuse nothing are charged where there is
                // room; a full store leaves them undecided, never refuses
                // the request for them (new keys of a shadow policy must
                // not crowd out enforced ones into 503s).
                for (i, check) in checks.iter_mut().enumerate() {
                    if let Some(decision) = check.decision
                        && decision.allowed
                        && !check.enforced
                        && tx.set(i, Nanos(decision.tat)).is_err()
                    {
                        check.decision = None;
                    }
                }
            }
            Ok(passes)
        })
    }

    /// Gives back what a response-dependent check was charged, when its
    /// response did not match (a successful login).
    pub(crate) fn refund(&self, check: &Check) {
        let now = self.clock.now().as_u64();
        let increment = check
            .quota
            .emission_ns()
            .saturating_mul(u64::from(check.cost));
        let _ = self.cells.update_hashed(
            check.hash,
            Nanos(now),
            || Nanos(now),
            |tat| *tat = Nanos(tat.as_u64().saturating_sub(increment).max(now)),
        );
    }
}

#[cfg(test)]
mod tests {
    use palisade_core::clock::ManualClock;

    use super::*;

    fn check(store: &MemoryStore, key: u32, enforced: bool) -> Check {
        Check {
            hash: store.hash("p", &key.to_be_bytes()),
            quota: Quota::per_hour(10),
            cost: 1,
            enforced,
            decision: None,
        }
    }

    #[test]
    fn a_full_store_refuses_enforced_checks_only() {
        let store = MemoryStore::builder()
            .capacity(64)
            .clock(ManualClock::new())
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        // Live keys (an hour from idle) until every shard is full.
        let held: Vec<u32> = (0..10_000u32)
            .filter(|&key| store.decide_one(&mut check(&store, key, true)).is_ok())
            .collect();
        assert!(held.len() <= 64, "the cap holds: {}", held.len());
        let new = 1_000_000;
        assert_eq!(
            store.decide_one(&mut check(&store, new, true)),
            Err(StoreFull),
            "an enforced new key is refused"
        );

        // A shadow (or not enforced) new key goes undecided; the request
        // passes, alone or beside an enforced key that has room.
        let mut shadow = check(&store, new, false);
        assert_eq!(store.decide_one(&mut shadow), Ok(true));
        assert_eq!(shadow.decision, None);
        let mut both = [check(&store, held[0], true), check(&store, new, false)];
        assert_eq!(store.decide(&mut both), Ok(true));
        assert!(
            both[0]
                .decision
                .is_some_and(|d| d.allowed && d.remaining() == 8)
        );
        assert_eq!(both[1].decision, None);
        // An enforced new key beside it still refuses the request whole.
        let mut both = [check(&store, held[0], true), check(&store, new, true)];
        assert_eq!(store.decide(&mut both), Err(StoreFull));
        let mut again = check(&store, held[0], true);
        assert_eq!(store.decide_one(&mut again), Ok(true));
        assert!(
            again.decision.is_some_and(|d| d.remaining() == 7),
            "nothing was charged by the refused request"
        );
    }
}
