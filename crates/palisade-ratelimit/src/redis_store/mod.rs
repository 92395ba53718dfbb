//! The Redis store: every policy of a request decided and charged by one Lua
//! script, so many instances enforce one limit together.

use std::sync::Arc;
use std::time::Duration;

use palisade_core::ConfigError;
use palisade_core::clock::{Clock, Nanos, SystemClock};
use palisade_core::store::KeyedStore;
use palisade_redis::{
    FailureCounts, FailurePolicy, FallbackDecision, KeyNamer, RedisConnection, RedisError,
    RedisScript,
};

use crate::gcra::{self, Decision, Quota};
use crate::memory::{Check, MemoryStore};

mod scripts;

use scripts::{GCRA_SCRIPT, REFUND_SCRIPT};

/// Where the Redis store reads the time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum TimeSource {
    /// Redis `TIME` inside the script: one clock for every instance (the
    /// default).
    #[default]
    Redis,
    /// This machine's wall clock, passed to the script, for servers that
    /// forbid `TIME` in scripts. Instances' clocks must agree closely.
    Client,
}

/// Rate-limit state in Redis, shared by every instance that uses it.
///
/// Failure handling is explicit ([`FailurePolicy`]): when Redis does not
/// answer within the per-call timeout, requests are let through, refused, or
/// decided by a local limiter at quota/N. The connection's breaker stops
/// asking a dead Redis (a dead Redis costs nothing per request; see
/// [`RedisConfig`](palisade_redis::RedisConfig)), and a key Redis refused is
/// refused locally until its retry time without asking again.
#[derive(Clone, Debug)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    connection: RedisConnection,
    names: KeyNamer,
    script: RedisScript,
    refund_script: RedisScript,
    time: TimeSource,
    failure: FailurePolicy,
    counts: FailureCounts,
    local: MemoryStore,
    refused_until: KeyedStore<Nanos>,
    clock: Arc<dyn Clock>,
}

/// Builds a [`RedisStore`].
#[derive(Debug)]
pub struct RedisStoreBuilder {
    connection: RedisConnection,
    prefix: String,
    time: TimeSource,
    failure: FailurePolicy,
    clock: Arc<dyn Clock>,
}

impl RedisStoreBuilder {
    /// The key prefix (default `palisade`).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Where the time comes from (default: Redis `TIME`).
    pub fn time_source(mut self, time: TimeSource) -> Self {
        self.time = time;
        self
    }

    /// What happens when Redis fails (default: fail closed).
    pub fn on_failure(mut self, policy: FailurePolicy) -> Self {
        self.failure = policy;
        self
    }

    /// The local clock (negative cache, local fallback).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<RedisStore, ConfigError> {
        let names = KeyNamer::new(self.prefix)
            .map_err(|reason| ConfigError::invalid("key_prefix", reason))?;
        let local = MemoryStore::builder()
            .clock(Arc::clone(&self.clock))
            .build()?;
        Ok(RedisStore {
            inner: Arc::new(Inner {
                connection: self.connection,
                names,
                script: RedisScript::new(GCRA_SCRIPT),
                refund_script: RedisScript::new(REFUND_SCRIPT),
                time: self.time,
                failure: self.failure,
                counts: FailureCounts::with_clock(Arc::clone(&self.clock)),
                local,
                refused_until: KeyedStore::builder().capacity(100_000).build()?,
                clock: self.clock,
            }),
        })
    }
}

/// The outcome of asking the Redis store.
pub(crate) enum RedisOutcome {
    /// Decided by Redis or the negative cache.
    Decided(bool),
    /// Redis failed and the local fallback decided (and charged locally).
    DecidedLocally(bool),
    /// Redis failed and the policy says let it through.
    FailOpen,
    /// Redis failed and the policy says refuse.
    FailClosed,
}

impl RedisStore {
    /// A store on this connection.
    pub fn builder(connection: RedisConnection) -> RedisStoreBuilder {
        RedisStoreBuilder {
            connection,
            prefix: "palisade".to_owned(),
            time: TimeSource::Redis,
            failure: FailurePolicy::FailClosed,
            clock: Arc::new(SystemClock),
        }
    }

    /// Decides one request of `cost` for `key` in `namespace` (a policy
    /// name) in Redis and charges it when it fits: the limiter without the
    /// layer. Redis failures are returned, not hidden behind the failure
    /// policy: the caller decides.
    pub async fn check(
        &self,
        namespace: &str,
        key: &palisade_core::key::Key,
        quota: &Quota,
        cost: u32,
    ) -> Result<Decision, RedisError> {
        let mut checks = [Check {
            hash: 0,
            quota: *quota,
            cost,
            enforced: true,
            decision: None,
        }];
        let name = self.key_name(&crate::policy::redis_namespace(namespace), key);
        self.call_one_slot(&mut checks, std::slice::from_ref(&name))
            .await?;
        checks[0]
            .decision
            .ok_or_else(|| RedisError::Config("the script returned no decision".into()))
    }

    /// Fallback decisions so far: (let through, refused, decided locally).
    pub fn fallback_counts(&self) -> (u64, u64, u64) {
        self.inner.counts.snapshot()
    }

    /// The Redis key of a key in a policy's namespace
    /// (`policy::redis_namespace`).
    pub(crate) fn key_name(&self, namespace: &str, key: &palisade_core::key::Key) -> String {
        self.inner.names.key(namespace, key)
    }

    pub(crate) fn prefix_hasher(&self, policy: &str) -> std::hash::DefaultHasher {
        self.inner.local.prefix_hasher(policy)
    }

    /// The local fallback's store (its keys are hashed as the layer hashes
    /// them: [`prefix_hasher`](Self::prefix_hasher)).
    pub(crate) fn local(&self) -> &MemoryStore {
        &self.inner.local
    }

    /// Decides every check together in one script call.
    pub(crate) async fn decide(&self, checks: &mut [Check], keys: &[String]) -> RedisOutcome {
        let inner = &*self.inner;
        let now = inner.clock.now();
        // A key Redis refused recently is refused here until its retry time.
        for check in checks.iter_mut() {
            if !check.enforced {
                continue;
            }
            // The check's hash is already a keyed hash: no need to hash it again.
            if let Some(until) = inner.refused_until.get_hashed(check.hash, |u| u.copied())
                && until > now
            {
                // The key's arrival time as Redis last gave it (`until` is
                // when a request of cost 1 fits: that time, less the burst's
                // room for one), decided here as Redis would: the same `t`
                // as Redis's own refusal, and this request's own retry time.
                let tat = until
                    .as_u64()
                    .saturating_add(check.quota.tolerance_ns())
                    .saturating_sub(check.quota.emission_ns());
                let decision = gcra::decide(&check.quota, Some(tat), now.as_u64(), check.cost);
                if !decision.allowed {
                    check.decision = Some(decision);
                    // The other policies were not asked: they report nothing.
                    return RedisOutcome::Decided(false);
                }
            }
        }
        let error = match self.call(checks, keys).await {
            Ok(passes) => {
                for check in checks.iter() {
                    if let Some(decision) = check.decision
                        && check.enforced
                        && !decision.allowed
                    {
                        // Until a request of cost 1 fits again: caching
                        // this request's own retry time would let one
                        // costly request block the key for everyone.
                        let wait = decision
                            .reset_ns
                            .saturating_add(check.quota.emission_ns())
                            .saturating_sub(check.quota.tolerance_ns());
                        if wait > 0 {
                            let until = now.saturating_add(Duration::from_nanos(wait));
                            let _ = inner.refused_until.update_hashed(
                                check.hash,
                                now,
                                || until,
                                |u| *u = until,
                            );
                        }
                    }
                }
                return RedisOutcome::Decided(passes);
            }
            Err(error) => error,
        };
        match inner.counts.record("ratelimit", &inner.failure, &error) {
            FallbackDecision::Allow => RedisOutcome::FailOpen,
            FallbackDecision::Deny => RedisOutcome::FailClosed,
            FallbackDecision::Local => {
                let mut local: smallvec::SmallVec<[Check; 2]> = checks
                    .iter()
                    .map(|c| Check {
                        quota: local_share(&c.quota, &inner.failure),
                        ..*c
                    })
                    .collect();
                match inner.local.decide(&mut local) {
                    Ok(passes) => {
                        // Reported, and given back when a response does
                        // not match, against the quota that was applied.
                        for (check, local) in checks.iter_mut().zip(local) {
                            check.decision = local.decision;
                            check.quota = local.quota;
                        }
                        RedisOutcome::DecidedLocally(passes)
                    }
                    Err(_) => RedisOutcome::FailClosed,
                }
            }
        }
    }

    async fn call(&self, checks: &mut [Check], keys: &[String]) -> Result<bool, RedisError> {
        if checks.len() > 1
            && self.inner.connection.is_cluster()
            && keys.iter().any(|k| slot(k) != slot(&keys[0]))
        {
            return self.call_across_slots(checks, keys).await;
        }
        self.call_one_slot(checks, keys).await
    }

    /// On a Cluster, the keys of one request's policies live in different
    /// slots, which one script cannot take together. Each key is decided,
    /// and charged when it fits, by its own script, all in one concurrent
    /// round (the cluster connection pipelines per node): an allowed request
    /// costs one round trip per node. A refusal by any enforced key refuses
    /// the request, whatever the other nodes did; a node failing for a check
    /// that refuses nothing leaves that check undecided; a node failing for
    /// an enforced one hands the request to the failure policy. When the
    /// request does not pass, its charges are given back in a second round,
    /// best effort (a node that timed out after its script ran, or behind
    /// an open breaker, keeps the charge: the safe side). No request is
    /// admitted over a limit.
    async fn call_across_slots(
        &self,
        checks: &mut [Check],
        keys: &[String],
    ) -> Result<bool, RedisError> {
        let results =
            futures_util::future::join_all(checks.iter_mut().zip(keys).map(|(check, key)| {
                self.call_one_slot(std::slice::from_mut(check), std::slice::from_ref(key))
            }))
            .await;
        let mut passes = true;
        let mut failure = None;
        for (check, result) in checks.iter().zip(results) {
            match result {
                Ok(_) => passes &= check.decision.is_some_and(|d| d.allowed) || !check.enforced,
                Err(error) if check.enforced => {
                    failure.get_or_insert(error);
                }
                Err(_) => {}
            }
        }
        if passes && failure.is_none() {
            return Ok(true);
        }
        let mut refunds: smallvec::SmallVec<[_; 4]> = smallvec::SmallVec::new();
        for (check, key) in checks.iter_mut().zip(keys) {
            let Some(decision) = check.decision.as_mut().filter(|d| d.allowed) else {
                continue;
            };
            // Reported as the key stands without this request, as a single
            // script reports a request it does not charge.
            let charge = check
                .quota
                .emission_ns()
                .saturating_mul(u64::from(check.cost));
            decision.headroom_ns = decision.headroom_ns.saturating_add(charge);
            decision.reset_ns = decision.reset_ns.saturating_sub(charge);
            refunds.push(self.refund(check, key));
        }
        futures_util::future::join_all(refunds).await;
        match failure {
            Some(error) if passes => Err(error),
            _ => Ok(false),
        }
    }

    async fn call_one_slot(
        &self,
        checks: &mut [Check],
        keys: &[String],
    ) -> Result<bool, RedisError> {
        let inner = &*self.inner;
        // Numbers, written into the command by the redis crate: no string
        // is made per argument.
        let mut args: smallvec::SmallVec<[u64; 9]> = smallvec::SmallVec::new();
        args.push(self.now_arg());
        for check in checks.iter() {
            args.push(emission_us(&check.quota));
            args.push(u64::from(check.quota.burst_size()));
            args.push(u64::from(check.cost));
            args.push(u64::from(check.enforced));
        }
        let key_refs: smallvec::SmallVec<[&str; 4]> = keys.iter().map(String::as_str).collect();
        let reply: Vec<i64> = inner
            .script
            .invoke(&inner.connection, &key_refs, &args)
            .await?;
        let passes = reply.first().copied() == Some(1);
        for (i, check) in checks.iter_mut().enumerate() {
            let at = 1 + i * 4;
            let field = |k: usize| reply.get(at + k).copied().unwrap_or(0).max(0) as u64;
            check.decision = Some(Decision {
                allowed: field(0) == 1,
                tat: 0,
                headroom_ns: field(1).saturating_mul(check.quota.emission_ns()),
                emission_ns: check.quota.emission_ns(),
                reset_ns: field(2).saturating_mul(1_000),
                retry_after_ns: field(3).saturating_mul(1_000),
            });
        }
        Ok(passes)
    }

    /// The script's time argument: 0 to read Redis `TIME`, or this
    /// machine's wall clock in microseconds.
    fn now_arg(&self) -> u64 {
        match self.inner.time {
            TimeSource::Redis => 0,
            TimeSource::Client => {
                u64::try_from(self.inner.clock.unix_time().as_micros()).unwrap_or(u64::MAX)
            }
        }
    }

    /// Gives back what a check was charged. Best effort: a refund that
    /// cannot be made (Redis down, or its breaker open) leaves the charge,
    /// the safe side.
    pub(crate) async fn refund(&self, check: &Check, key: &str) {
        let inner = &*self.inner;
        let back = emission_us(&check.quota).saturating_mul(u64::from(check.cost));
        let _: Result<i64, RedisError> = inner
            .refund_script
            .invoke(&inner.connection, &[key], &[self.now_arg(), back])
            .await;
    }
}

/// The Cluster slot of a key: CRC16 (XMODEM) of its hash tag, modulo 16384,
/// as Redis computes it. Written here because the redis crate keeps its own
/// private; used only to tell whether one script can take all of a
/// request's keys.
fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let close = bytes[open + 1..].iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &bytes[open + 1..open + 1 + close])
        })
        .unwrap_or(bytes);
    let mut crc: u16 = 0;
    for &byte in tagged {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16_384
}

/// A quota's emission interval in the script's unit, microseconds (at most
/// a million requests per second per key), rounded up: rounding down would
/// let a faster rate through.
fn emission_us(quota: &Quota) -> u64 {
    quota.emission_ns().div_ceil(1_000).max(1)
}

/// This instance's share of a quota under the local fallback (the failure
/// policy's share of its count and of its burst).
fn local_share(quota: &Quota, failure: &FailurePolicy) -> Quota {
    let share = |n: u32| {
        failure
            .local_share(u64::from(n))
            .map_or(n, |share| u32::try_from(share).unwrap_or(n))
    };
    Quota::new(share(quota.count()), quota.period())
        .burst(share(quota.burst_size()))
        .unwrap_or(*quota)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_hash_tag_as_redis_computes_them() {
        // Values from `CLUSTER KEYSLOT`.
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        assert_eq!(slot("a:{tag}:x"), slot("tag"));
        assert_eq!(
            slot("a{}b"),
            slot("a{}b"),
            "an empty tag hashes the whole key"
        );
    }
}
