//! Refresh tokens with rotation and reuse detection.
//!
//! A refresh token is `rt_<family>.<secret>`. Each use returns a new token
//! of the same family and retires the old one; presenting a retired token
//! (a stolen copy being replayed, or the victim after the thief) revokes the
//! whole family, so neither party can refresh again (RFC 9700 §4.14.2).
//! Only a SHA-256 of the secret is stored.
//!
//! ```
//! use palisade_auth::refresh::{MemoryRefreshStore, RefreshError, RefreshTokens};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let tokens = RefreshTokens::new(MemoryRefreshStore::new());
//! let first = tokens.issue("user-42").await?;
//! let rotated = tokens.rotate(&first).await?;
//! assert_eq!(rotated.subject, "user-42");
//! // The old token again: the family is revoked.
//! assert!(matches!(tokens.rotate(&first).await, Err(RefreshError::Reused { .. })));
//! assert_eq!(tokens.rotate(&rotated.refresh_token).await.unwrap_err(), RefreshError::Invalid);
//! # Ok::<(), RefreshError>(())
//! # }).unwrap();
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::clock::{Clock, Nanos, SystemClock};
use palisade_core::store::{Idle, KeyedStore};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::revocation::RevocationError as StoreError;
use crate::revocation::StoreFuture;

/// Why a refresh was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RefreshError {
    /// Unknown, malformed, expired or revoked.
    #[error("the refresh token is invalid")]
    Invalid,
    /// A retired token was presented: its family is now revoked. The
    /// subject is given so the application can go further (sign it out
    /// everywhere).
    #[error("the refresh token was already used; its family is revoked")]
    Reused {
        /// The family's subject.
        subject: String,
    },
    /// The store did not answer.
    #[error("the refresh store is unavailable")]
    Unavailable,
}

impl From<StoreError> for RefreshError {
    fn from(_: StoreError) -> Self {
        RefreshError::Unavailable
    }
}

/// The stored state of one family.
#[derive(Clone, Debug)]
pub struct FamilyRecord {
    /// The subject the family belongs to.
    pub subject: String,
    /// SHA-256 of the current secret.
    pub current: [u8; 32],
    /// When the family ends, in seconds since the epoch.
    pub expires_at: u64,
    /// When the family began, in seconds since the epoch: a "sign out
    /// everywhere" after it ends the family.
    pub created_at: u64,
}

/// What a rotation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RotateOutcome {
    /// The presented secret was current; `next` is current now.
    Rotated {
        /// The family's subject.
        subject: String,
        /// When the family began.
        created_at: u64,
    },
    /// The presented secret was retired: the family is revoked.
    Reused {
        /// The family's subject.
        subject: String,
    },
    /// No such live family.
    Invalid,
}

/// Where families live.
pub trait RefreshStore: Send + Sync + 'static {
    /// Stores a new family.
    fn create(&self, family: &str, record: FamilyRecord, ttl: Duration) -> StoreFuture<()>;
    /// Atomically: if `presented` is the current secret, replaces it with
    /// `next`; if not, revokes the family.
    fn rotate(
        &self,
        family: &str,
        presented: [u8; 32],
        next: [u8; 32],
    ) -> StoreFuture<RotateOutcome>;
    /// Revokes a family: when `presented` is given, only if it is the
    /// current secret. Returns whether a live family was revoked.
    fn revoke(&self, family: &str, presented: Option<[u8; 32]>) -> StoreFuture<bool>;
}

/// A rotated refresh token.
#[derive(Clone)]
pub struct Rotated {
    /// The subject to mint a new access token for.
    pub subject: String,
    /// The new refresh token; the presented one is retired.
    pub refresh_token: String,
}

impl fmt::Debug for Rotated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rotated")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// Issues and rotates refresh tokens.
#[derive(Clone)]
pub struct RefreshTokens {
    store: Arc<dyn RefreshStore>,
    ttl: Duration,
    clock: Arc<dyn Clock>,
    revocation: Option<Arc<dyn crate::revocation::RevocationStore>>,
}

impl fmt::Debug for RefreshTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshTokens")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

const PREFIX: &str = "rt_";

fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn secret() -> Result<String, RefreshError> {
    crate::issue::random_id().map_err(|_| RefreshError::Unavailable)
}

impl RefreshTokens {
    /// Refresh tokens in `store`, living 30 days unless rotated.
    pub fn new(store: impl RefreshStore) -> Self {
        Self {
            store: Arc::new(store),
            ttl: Duration::from_secs(30 * 24 * 3600),
            clock: Arc::new(SystemClock),
            revocation: None,
        }
    }

    /// Ends a family on rotation when its subject signed out everywhere
    /// after the family began (the same store the verifier uses).
    pub fn revocation(mut self, store: impl crate::revocation::RevocationStore) -> Self {
        self.revocation = Some(Arc::new(store));
        self
    }

    /// How long a family lives from its first token.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The clock (tests).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Starts a family for `subject` and returns its first token.
    pub async fn issue(&self, subject: &str) -> Result<String, RefreshError> {
        let family = secret()?;
        let current = secret()?;
        let now = self.clock.unix_time().as_secs();
        let record = FamilyRecord {
            subject: subject.to_owned(),
            current: hash(&current),
            expires_at: now.saturating_add(self.ttl.as_secs()),
            created_at: now,
        };
        self.store.create(&family, record, self.ttl).await?;
        Ok(format!("{PREFIX}{family}.{current}"))
    }

    /// Exchanges a refresh token for the next one of its family.
    pub async fn rotate(&self, presented: &str) -> Result<Rotated, RefreshError> {
        let (family, current) = parse(presented).ok_or(RefreshError::Invalid)?;
        let next = secret()?;
        match self
            .store
            .rotate(family, hash(current), hash(&next))
            .await?
        {
            RotateOutcome::Rotated {
                subject,
                created_at,
            } => {
                if self.signed_out_since(&subject, created_at).await? {
                    let _ = self.store.revoke(family, None).await;
                    return Err(RefreshError::Invalid);
                }
                Ok(Rotated {
                    subject,
                    refresh_token: format!("{PREFIX}{family}.{next}"),
                })
            }
            RotateOutcome::Reused { subject } => {
                palisade_core::audit::AuditEvent::state_changed("jwt", "refresh_token_reused")
                    .emit();
                Err(RefreshError::Reused { subject })
            }
            RotateOutcome::Invalid => Err(RefreshError::Invalid),
        }
    }

    async fn signed_out_since(&self, subject: &str, created_at: u64) -> Result<bool, RefreshError> {
        use crate::revocation::{RevocationCheck, RevocationStatus, TokenIdentity};
        let Some(store) = &self.revocation else {
            return Ok(false);
        };
        let identity = TokenIdentity {
            jti: None,
            subject,
            issued_at: Some(created_at),
        };
        let status = match store.check(&identity) {
            RevocationCheck::Ready(result) => result,
            RevocationCheck::Pending(future) => future.await,
        };
        match status {
            Ok(RevocationStatus::SignedOut) => Ok(true),
            Ok(_) => Ok(false),
            Err(_) => Err(RefreshError::Unavailable),
        }
    }

    /// Revokes the family of a token (logout). The token must be the
    /// family's current one: knowing a family id is not enough.
    pub async fn revoke(&self, presented: &str) -> Result<(), RefreshError> {
        let (family, current) = parse(presented).ok_or(RefreshError::Invalid)?;
        if self.store.revoke(family, Some(hash(current))).await? {
            Ok(())
        } else {
            Err(RefreshError::Invalid)
        }
    }
}

/// `rt_<22 base64url>.<22 base64url>` into family and secret.
fn parse(presented: &str) -> Option<(&str, &str)> {
    let (family, secret) = presented.strip_prefix(PREFIX)?.split_once('.')?;
    let well_formed = |part: &str| {
        part.len() == 22
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    (well_formed(family) && well_formed(secret)).then_some((family, secret))
}

#[derive(Debug)]
struct Family {
    id: Box<str>,
    record: FamilyRecord,
    revoked: bool,
    until: Nanos,
}

impl Idle for Family {
    fn is_idle(&self, now: Nanos) -> bool {
        self.until <= now
    }
}

/// Families in memory (one process, tests).
#[derive(Clone, Debug)]
pub struct MemoryRefreshStore {
    families: Arc<KeyedStore<Family>>,
    clock: Arc<dyn Clock>,
}

impl Default for MemoryRefreshStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryRefreshStore {
    /// Up to a million families.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// The same store on `clock` (tests).
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        let families = match KeyedStore::builder().capacity(1 << 20).build() {
            Ok(store) => store,
            Err(_) => unreachable!("a keyed store of a million entries always builds"),
        };
        Self {
            families: Arc::new(families),
            clock,
        }
    }
}

impl RefreshStore for MemoryRefreshStore {
    fn create(&self, family: &str, record: FamilyRecord, ttl: Duration) -> StoreFuture<()> {
        let now = self.clock.now();
        let make = || Family {
            id: family.into(),
            record: record.clone(),
            revoked: false,
            until: now.saturating_add(ttl),
        };
        let result = self
            .families
            .update(family, now, make, |entry| *entry = make())
            .map_err(|_| StoreError::Full);
        Box::pin(std::future::ready(result))
    }

    fn rotate(
        &self,
        family: &str,
        presented: [u8; 32],
        next: [u8; 32],
    ) -> StoreFuture<RotateOutcome> {
        let now = self.clock.now();
        let result = self
            .families
            .update(
                family,
                now,
                || Family {
                    id: "".into(),
                    record: FamilyRecord {
                        subject: String::new(),
                        current: [0; 32],
                        expires_at: 0,
                        created_at: 0,
                    },
                    revoked: true,
                    until: now,
                },
                |entry| {
                    if entry.revoked || *entry.id != *family || entry.until <= now {
                        return RotateOutcome::Invalid;
                    }
                    if bool::from(entry.record.current.ct_eq(&presented)) {
                        entry.record.current = next;
                        RotateOutcome::Rotated {
                            subject: entry.record.subject.clone(),
                            created_at: entry.record.created_at,
                        }
                    } else {
                        entry.revoked = true;
                        RotateOutcome::Reused {
                            subject: entry.record.subject.clone(),
                        }
                    }
                },
            )
            .unwrap_or(RotateOutcome::Invalid);
        Box::pin(std::future::ready(Ok(result)))
    }

    fn revoke(&self, family: &str, presented: Option<[u8; 32]>) -> StoreFuture<bool> {
        let now = self.clock.now();
        // Only an existing family is touched: a revocation of nothing
        // leaves nothing behind.
        let revoked = self.families.get(family, |entry| entry.is_some())
            && self
                .families
                .update(
                    family,
                    now,
                    || Family {
                        id: "".into(),
                        record: FamilyRecord {
                            subject: String::new(),
                            current: [0; 32],
                            expires_at: 0,
                            created_at: 0,
                        },
                        revoked: true,
                        until: now,
                    },
                    |entry| {
                        let live = !entry.revoked && *entry.id == *family && entry.until > now;
                        let allowed = presented
                            .is_none_or(|hash| bool::from(entry.record.current.ct_eq(&hash)));
                        if live && allowed {
                            entry.revoked = true;
                            true
                        } else {
                            false
                        }
                    },
                )
                .unwrap_or(false);
        Box::pin(std::future::ready(Ok(revoked)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::clock::ManualClock;

    #[tokio::test]
    async fn rotation_chains_and_reuse_revokes_the_family_for_everyone() {
        let tokens = RefreshTokens::new(MemoryRefreshStore::new());
        let first = tokens.issue("u").await.unwrap();
        let second = tokens.rotate(&first).await.unwrap().refresh_token;
        let third = tokens.rotate(&second).await.unwrap().refresh_token;
        // The thief replays `second`: the family dies, `third` with it.
        assert_eq!(
            tokens.rotate(&second).await.unwrap_err(),
            RefreshError::Reused {
                subject: "u".into()
            }
        );
        assert_eq!(
            tokens.rotate(&third).await.unwrap_err(),
            RefreshError::Invalid
        );
        // Another family is untouched.
        let other = tokens.issue("v").await.unwrap();
        assert!(tokens.rotate(&other).await.is_ok());
    }

    #[tokio::test]
    async fn signing_out_everywhere_ends_refresh_families_begun_before() {
        use crate::revocation::{MemoryRevocationStore, RevocationStore};
        let clock = ManualClock::new();
        let revocation = MemoryRevocationStore::new().with_clock(Arc::new(clock.clone()));
        let tokens = RefreshTokens::new(MemoryRefreshStore::with_clock(Arc::new(clock.clone())))
            .clock(clock.clone())
            .revocation(revocation.clone());
        let stolen = tokens.issue("u").await.unwrap();
        clock.advance(Duration::from_secs(10));
        let now = palisade_core::clock::Clock::unix_time(&clock).as_secs();
        revocation
            .revoke_subject("u", now, Duration::from_secs(3600))
            .await
            .unwrap();
        assert_eq!(
            tokens.rotate(&stolen).await.unwrap_err(),
            RefreshError::Invalid
        );
        clock.advance(Duration::from_secs(1));
        let fresh = tokens.issue("u").await.unwrap();
        assert!(tokens.rotate(&fresh).await.is_ok());
    }

    #[tokio::test]
    async fn expired_unknown_malformed_and_revoked_tokens_are_invalid() {
        let clock = ManualClock::new();
        let tokens = RefreshTokens::new(MemoryRefreshStore::with_clock(Arc::new(clock.clone())))
            .ttl(Duration::from_secs(60))
            .clock(clock.clone());
        let token = tokens.issue("u").await.unwrap();
        clock.advance(Duration::from_secs(61));
        assert_eq!(
            tokens.rotate(&token).await.unwrap_err(),
            RefreshError::Invalid
        );
        for bad in [
            "",
            "rt_",
            "rt_a.b",
            "xx_aaaaaaaaaaaaaaaaaaaaaa.bbbbbbbbbbbbbbbbbbbbbb",
            "rt_aaaaaaaaaaaaaaaaaaaaaa.bbbbbbbbbbbbbbbbbbbbbb",
        ] {
            assert_eq!(
                tokens.rotate(bad).await.unwrap_err(),
                RefreshError::Invalid,
                "{bad}"
            );
        }
        let live = tokens.issue("u").await.unwrap();
        tokens.revoke(&live).await.unwrap();
        assert_eq!(
            tokens.rotate(&live).await.unwrap_err(),
            RefreshError::Invalid
        );
    }
}
