//! Revocation in this process's memory, on core's bounded store.

use std::sync::Arc;
use std::time::Duration;

use palisade_core::clock::{Clock, Nanos, SystemClock};
use palisade_core::store::{Idle, KeyedStore};

use super::{
    RevocationCheck, RevocationError, RevocationStatus, RevocationStore, StoreFuture,
    TokenIdentity, subject_status,
};

#[derive(Debug)]
struct SubjectEntry {
    not_before: u64,
    until: Nanos,
}

impl Idle for SubjectEntry {
    fn is_idle(&self, now: Nanos) -> bool {
        self.until <= now
    }
}

/// Revocations in memory: one process, or tests. Entries leave when the
/// tokens they refuse would have expired anyway.
///
/// Entries are found by a keyed 64-bit hash of the `jti` or subject: two
/// ids sharing a hash (about one chance in 2^64 per pair, unpredictable
/// without the process's key) would refuse an extra token, never accept one.
#[derive(Clone, Debug)]
pub struct MemoryRevocationStore {
    tokens: Arc<KeyedStore<Nanos>>,
    subjects: Arc<KeyedStore<SubjectEntry>>,
    clock: Arc<dyn Clock>,
}

impl Default for MemoryRevocationStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryRevocationStore {
    /// A store holding up to a million entries of each kind.
    pub fn new() -> Self {
        Self::with_capacity(1 << 20)
    }

    /// A store holding up to `capacity` entries of each kind.
    pub fn with_capacity(capacity: usize) -> Self {
        Self::build(capacity.max(1), Arc::new(SystemClock))
    }

    /// The same store reading time from `clock` (tests).
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        Self::build(self.tokens.capacity(), clock)
    }

    fn build(capacity: usize, clock: Arc<dyn Clock>) -> Self {
        // Capacity is at least 1 and within what the store accepts, so the
        // builder cannot fail; a failure would be a store invariant broken.
        let tokens = KeyedStore::builder().capacity(capacity).build();
        let subjects = KeyedStore::builder().capacity(capacity).build();
        match (tokens, subjects) {
            (Ok(tokens), Ok(subjects)) => Self {
                tokens: Arc::new(tokens),
                subjects: Arc::new(subjects),
                clock,
            },
            _ => unreachable!("a keyed store of capacity >= 1 always builds"),
        }
    }

    fn status(&self, token: &TokenIdentity<'_>) -> RevocationStatus {
        let now = self.clock.now();
        if let Some(jti) = token.jti
            && self
                .tokens
                .get(jti, |until| until.is_some_and(|until| now < *until))
        {
            return RevocationStatus::Revoked;
        }
        let not_before = self.subjects.get(token.subject, |entry| {
            entry.filter(|e| now < e.until).map(|e| e.not_before)
        });
        subject_status(not_before, token.issued_at)
    }
}

impl RevocationStore for MemoryRevocationStore {
    fn check(&self, token: &TokenIdentity<'_>) -> RevocationCheck {
        RevocationCheck::Ready(Ok(self.status(token)))
    }

    fn revoke_token(&self, jti: &str, remaining: Duration) -> StoreFuture<()> {
        let now = self.clock.now();
        let until = now.saturating_add(remaining);
        let result = self
            .tokens
            .update(jti, now, || until, |entry| *entry = (*entry).max(until))
            .map_err(|_| RevocationError::Full);
        Box::pin(std::future::ready(result))
    }

    fn revoke_subject(&self, subject: &str, not_before: u64, retain: Duration) -> StoreFuture<()> {
        let now = self.clock.now();
        let until = now.saturating_add(retain);
        let result = self
            .subjects
            .update(
                subject,
                now,
                || SubjectEntry { not_before, until },
                |entry| {
                    entry.not_before = entry.not_before.max(not_before);
                    entry.until = entry.until.max(until);
                },
            )
            .map_err(|_| RevocationError::Full);
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::clock::ManualClock;

    fn ready(check: RevocationCheck) -> RevocationStatus {
        match check {
            RevocationCheck::Ready(result) => result.unwrap(),
            RevocationCheck::Pending(_) => unreachable!(),
        }
    }

    #[tokio::test]
    async fn revoked_ids_and_signed_out_subjects_are_refused_until_their_time_ends() {
        let clock = ManualClock::new();
        let store = MemoryRevocationStore::with_capacity(100).with_clock(Arc::new(clock.clone()));
        let token = TokenIdentity {
            jti: Some("t1"),
            subject: "u1",
            issued_at: Some(1000),
        };
        assert_eq!(ready(store.check(&token)), RevocationStatus::Valid);
        store
            .revoke_token("t1", Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(ready(store.check(&token)), RevocationStatus::Revoked);
        clock.advance(Duration::from_secs(61));
        assert_eq!(ready(store.check(&token)), RevocationStatus::Valid);

        store
            .revoke_subject("u1", 1001, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(ready(store.check(&token)), RevocationStatus::SignedOut);
        let newer = TokenIdentity {
            issued_at: Some(1001),
            ..token
        };
        assert_eq!(ready(store.check(&newer)), RevocationStatus::Valid);
        let no_iat = TokenIdentity {
            issued_at: None,
            ..token
        };
        assert_eq!(ready(store.check(&no_iat)), RevocationStatus::SignedOut);
    }
}
