//! The verified-token cache: a repeated token costs a SHA-256 and a lookup,
//! not a signature check.
//!
//! Entries are keyed by the token's SHA-256: 64 bits address the bounded
//! store, 128 more are kept and compared on a hit, so two tokens never share
//! an entry. An entry lives no longer than its token's `exp` (without the
//! leeway), and only while its issuer's key set is the one that verified it:
//! a key removed from a JWKS takes its cached tokens with it. Revocation is
//! checked on every hit by the verifier, not here.

use std::sync::Arc;

use palisade_core::ConfigError;
use palisade_core::clock::Nanos;
use palisade_core::principal::Principal;
use palisade_core::store::{Idle, KeyedStore};
use sha2::{Digest, Sha256};

/// A token's cache address and the fingerprint that confirms it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TokenDigest {
    hash: u64,
    fingerprint: [u8; 16],
}

impl TokenDigest {
    pub(crate) fn of(token: &str) -> Self {
        let digest = Sha256::digest(token.as_bytes());
        let mut hash = [0u8; 8];
        hash.copy_from_slice(&digest[..8]);
        let mut fingerprint = [0u8; 16];
        fingerprint.copy_from_slice(&digest[8..24]);
        Self {
            hash: u64::from_le_bytes(hash),
            fingerprint,
        }
    }
}

/// What a hit gives back: enough to re-check revocation.
#[derive(Clone, Debug)]
pub(crate) struct Verified {
    pub(crate) principal: Principal,
    pub(crate) jti: Option<Arc<str>>,
    pub(crate) issued_at: Option<u64>,
}

#[derive(Debug)]
struct Entry {
    fingerprint: [u8; 16],
    deadline: Nanos,
    issuer: u32,
    generation: u64,
    verified: Verified,
}

impl Idle for Entry {
    #[inline]
    fn is_idle(&self, now: Nanos) -> bool {
        self.deadline <= now
    }
}

#[derive(Debug)]
pub(crate) struct TokenCache {
    store: KeyedStore<Entry>,
}

impl TokenCache {
    pub(crate) fn new(capacity: usize) -> Result<Self, ConfigError> {
        Ok(Self {
            store: KeyedStore::builder().capacity(capacity).build()?,
        })
    }

    /// The cached verification of a token, if still valid at `now` for
    /// `issuer`'s current key `generation`.
    pub(crate) fn get(
        &self,
        digest: &TokenDigest,
        now: Nanos,
        generation_of: impl Fn(u32) -> u64,
    ) -> Option<Verified> {
        self.store.get_hashed(digest.hash, |entry| {
            let entry = entry?;
            let fresh = entry.fingerprint == digest.fingerprint
                && now < entry.deadline
                && generation_of(entry.issuer) == entry.generation;
            fresh.then(|| entry.verified.clone())
        })
    }

    /// Remembers a verification until `deadline`. A full cache simply does
    /// not remember: the next request verifies again.
    pub(crate) fn insert(
        &self,
        digest: &TokenDigest,
        now: Nanos,
        deadline: Nanos,
        issuer: u32,
        generation: u64,
        verified: &Verified,
    ) {
        let make = || Entry {
            fingerprint: digest.fingerprint,
            deadline,
            issuer,
            generation,
            verified: verified.clone(),
        };
        let _ = self.store.update_hashed(digest.hash, now, make, |entry| {
            *entry = make();
        });
    }

    pub(crate) fn len(&self) -> usize {
        self.store.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(subject: &str) -> Verified {
        Verified {
            principal: Principal::builder(subject).build(),
            jti: None,
            issued_at: None,
        }
    }

    #[test]
    fn entries_end_at_their_deadline_and_with_their_key_generation() {
        let cache = TokenCache::new(1000).unwrap();
        let digest = TokenDigest::of("a.b.c");
        cache.insert(&digest, Nanos(0), Nanos(100), 0, 7, &verified("u"));
        assert!(cache.get(&digest, Nanos(99), |_| 7).is_some());
        assert!(cache.get(&digest, Nanos(100), |_| 7).is_none());
        assert!(cache.get(&digest, Nanos(50), |_| 8).is_none());
        assert!(
            cache
                .get(&TokenDigest::of("a.b.d"), Nanos(1), |_| 7)
                .is_none()
        );
    }

    #[test]
    fn a_colliding_address_with_another_fingerprint_misses() {
        let cache = TokenCache::new(1000).unwrap();
        let digest = TokenDigest::of("x.y.z");
        cache.insert(&digest, Nanos(0), Nanos(100), 0, 0, &verified("u"));
        let forged = TokenDigest {
            hash: digest.hash,
            fingerprint: [0; 16],
        };
        assert!(cache.get(&forged, Nanos(1), |_| 0).is_none());
    }
}
