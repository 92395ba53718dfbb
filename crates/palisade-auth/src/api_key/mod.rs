//! API keys: issued once, stored only as hashes, refused on sight when
//! malformed, rotated with an overlap, revoked at once.
//!
//! ```
//! use palisade_auth::api_key::{ApiKeys, MemoryApiKeyStore, NewApiKey};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let keys = ApiKeys::builder("pal_live", MemoryApiKeyStore::new())
//!     .pepper(b"a server-side secret of 32 bytes!".to_vec())
//!     .build()?;
//! let issued = keys.issue(NewApiKey::new("ci-bot").roles(["operator"])).await?;
//! // Shown once; only `issued.record` (with its hash) is stored.
//! let principal = keys.verify(&issued.key).await.unwrap();
//! assert_eq!(principal.subject(), "ci-bot");
//! assert_eq!(principal.api_key_id(), Some(issued.record.id.as_str()));
//! // A typo is refused by the checksum, before any hashing or lookup.
//! assert!(keys.verify("pal_live_0000000000000000000000000000").await.is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! The hash is HMAC-SHA256 with a server pepper (recommended: a leaked
//! table cannot be brute-forced offline) or plain SHA-256. Keys carry 128
//! random bits, so a fast hash is enough; the stored hash is compared in
//! constant time.

mod file;
mod format;
pub(crate) mod layer;
mod memory;
mod record;
#[cfg(feature = "redis")]
mod redis;
mod store;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use palisade_core::ConfigError;
use palisade_core::clock::{Clock, SystemClock};
use palisade_core::principal::Principal;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[cfg(feature = "redis")]
pub use self::redis::RedisApiKeyStore;
pub use file::FileApiKeyStore;
pub use layer::{ApiKeyLayer, ApiKeyService, ApiKeySources};
pub use memory::MemoryApiKeyStore;
pub use record::{ApiKeyRecord, StoredKey};
pub use store::{ApiKeyStore, Found, KeyLookup};

use crate::failure::AuthFailure;
use crate::revocation::RevocationError as StoreError;

/// How keys are hashed for storage and lookup.
#[derive(Clone)]
pub enum KeyHasher {
    /// HMAC-SHA256 with a server-side pepper (at least 32 bytes). The keyed
    /// state is computed once and cloned per key: two of the four SHA-256
    /// blocks an HMAC costs.
    Pepper(Hmac<Sha256>),
    /// Plain SHA-256.
    Sha256,
}

impl fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyHasher::Pepper(_) => f.write_str("Pepper(..)"),
            KeyHasher::Sha256 => f.write_str("Sha256"),
        }
    }
}

impl KeyHasher {
    /// The hash of a key.
    pub fn hash(&self, key: &str) -> [u8; 32] {
        match self {
            KeyHasher::Pepper(keyed) => {
                let mut mac = keyed.clone();
                mac.update(key.as_bytes());
                mac.finalize().into_bytes().into()
            }
            KeyHasher::Sha256 => Sha256::digest(key.as_bytes()).into(),
        }
    }
}

/// What a new key grants.
#[derive(Clone, Debug)]
pub struct NewApiKey {
    owner: String,
    tenant: Option<String>,
    roles: Vec<String>,
    scopes: Vec<String>,
    expires_in: Option<Duration>,
    tier: Option<String>,
}

impl NewApiKey {
    /// A key acting as `owner`.
    pub fn new(owner: impl Into<String>) -> Self {
        Self {
            owner: owner.into(),
            tenant: None,
            roles: Vec::new(),
            scopes: Vec::new(),
            expires_in: None,
            tier: None,
        }
    }

    /// The tenant.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// The roles.
    pub fn roles<I: IntoIterator<Item = T>, T: Into<String>>(mut self, roles: I) -> Self {
        self.roles = roles.into_iter().map(Into::into).collect();
        self
    }

    /// The scopes.
    pub fn scopes<I: IntoIterator<Item = T>, T: Into<String>>(mut self, scopes: I) -> Self {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Expires after this long.
    pub fn expires_in(mut self, lifetime: Duration) -> Self {
        self.expires_in = Some(lifetime);
        self
    }

    /// The rate-limit tier.
    pub fn tier(mut self, tier: impl Into<String>) -> Self {
        self.tier = Some(tier.into());
        self
    }
}

/// A key just issued: the key itself (show it once, never store it) and the
/// record to store.
#[derive(Clone)]
pub struct IssuedKey {
    /// The key. Give it to its owner; it is not kept anywhere.
    pub key: String,
    /// The record, with the key's hash.
    pub record: ApiKeyRecord,
}

impl fmt::Debug for IssuedKey {
    /// The key is left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedKey")
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

/// Why a key could not be issued, rotated or revoked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiKeyError {
    /// No key has this id.
    #[error("no API key has the id {0:?}")]
    UnknownId(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The OS random source failed.
    #[error("the OS random source failed")]
    Random,
    /// The key is revoked: it cannot be rotated into a live one.
    #[error("the API key {0:?} is revoked")]
    Revoked(String),
    /// The key has expired: it cannot be rotated into a live one.
    #[error("the API key {0:?} has expired")]
    Expired(String),
    /// The new key was issued but the old key's expiry could not be set;
    /// the old key still works until this is retried.
    #[error("the new key was issued but the old key's overlap was not set: {error}")]
    OverlapNotSet {
        /// The new key.
        issued: Box<IssuedKey>,
        /// Why the old key's expiry failed.
        error: StoreError,
    },
}

struct Inner {
    prefix: String,
    hasher: KeyHasher,
    store: Arc<dyn ApiKeyStore>,
    clock: Arc<dyn Clock>,
}

/// Issues, verifies, rotates and revokes API keys of one prefix. Cheap to
/// clone.
#[derive(Clone)]
pub struct ApiKeys {
    inner: Arc<Inner>,
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeys")
            .field("prefix", &self.inner.prefix)
            .field("hasher", &self.inner.hasher)
            .finish_non_exhaustive()
    }
}

/// Builds [`ApiKeys`].
pub struct ApiKeysBuilder {
    prefix: String,
    hasher: KeyHasher,
    pepper_error: Option<ConfigError>,
    store: Arc<dyn ApiKeyStore>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for ApiKeysBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeysBuilder")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl ApiKeysBuilder {
    /// Hashes with HMAC-SHA256 under this pepper (at least 32 bytes; keep it
    /// out of the key store).
    pub fn pepper(mut self, pepper: impl Into<Vec<u8>>) -> Self {
        let pepper = pepper.into();
        if pepper.len() < 32 {
            self.pepper_error = Some(ConfigError::invalid("pepper", "needs at least 32 bytes"));
        }
        match Hmac::<Sha256>::new_from_slice(&pepper) {
            Ok(keyed) => self.hasher = KeyHasher::Pepper(keyed),
            // HMAC takes keys of any length; kept as an error, not a panic.
            Err(_) => self.pepper_error = Some(ConfigError::invalid("pepper", "unusable")),
        }
        self
    }

    /// The clock (tests).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Checks the configuration.
    pub fn build(self) -> Result<ApiKeys, ConfigError> {
        if let Some(error) = self.pepper_error {
            return Err(error);
        }
        if matches!(self.hasher, KeyHasher::Sha256) {
            tracing::warn!(
                prefix = %self.prefix,
                "API keys hashed with plain SHA-256: anyone who can write to the key store can add a key; set a pepper"
            );
        }
        if !format::valid_prefix(&self.prefix) {
            return Err(ConfigError::invalid(
                "prefix",
                "1 to 32 letters, digits and `_`, starting with a letter",
            ));
        }
        Ok(ApiKeys {
            inner: Arc::new(Inner {
                prefix: self.prefix,
                hasher: self.hasher,
                store: self.store,
                clock: self.clock,
            }),
        })
    }
}

/// A key's verification: at once, or waiting for a remote store.
pub(crate) enum KeyCheck {
    Done(Result<Principal, AuthFailure>),
    Pending(
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Principal, AuthFailure>> + Send>>,
    ),
}

impl ApiKeys {
    /// Keys `<prefix>_…` in `store`, hashed with SHA-256 unless a pepper is
    /// set.
    pub fn builder(prefix: impl Into<String>, store: impl ApiKeyStore) -> ApiKeysBuilder {
        ApiKeysBuilder {
            prefix: prefix.into(),
            hasher: KeyHasher::Sha256,
            pepper_error: None,
            store: Arc::new(store),
            clock: Arc::new(SystemClock),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The hasher.
    pub fn hasher(&self) -> &KeyHasher {
        &self.inner.hasher
    }

    /// Whether `key` has our shape and a valid checksum (no store lookup).
    pub fn is_well_formed(&self, key: &str) -> bool {
        format::well_formed(key, &self.inner.prefix)
    }

    /// Makes a key and its record without storing it (the CLI prints the
    /// record for a store it does not reach).
    pub fn mint(&self, new: NewApiKey) -> Result<IssuedKey, ApiKeyError> {
        let mut random = [0u8; 16];
        getrandom::fill(&mut random).map_err(|_| ApiKeyError::Random)?;
        let mut id_bytes = [0u8; 9];
        getrandom::fill(&mut id_bytes).map_err(|_| ApiKeyError::Random)?;
        let key = format::compose(&self.inner.prefix, random);
        let (display_prefix, last4) = format::display(&key, &self.inner.prefix);
        let now = self.inner.clock.unix_time().as_secs();
        let record = ApiKeyRecord {
            id: format!("key_{}", id_text(&id_bytes)),
            hash: record::hex(&self.inner.hasher.hash(&key)),
            display_prefix,
            last4,
            owner: new.owner,
            tenant: new.tenant,
            roles: new.roles,
            scopes: new.scopes,
            created_at: now,
            expires_at: new.expires_in.map(|d| now.saturating_add(d.as_secs())),
            tier: new.tier,
            revoked: false,
        };
        Ok(IssuedKey { key, record })
    }

    /// Issues and stores a key.
    pub async fn issue(&self, new: NewApiKey) -> Result<IssuedKey, ApiKeyError> {
        let issued = self.mint(new)?;
        self.inner.store.insert(issued.record.clone()).await?;
        Ok(issued)
    }

    /// Issues a key with the same grants as key `id`, and lets `id` work
    /// only for `overlap` more (while clients switch).
    pub async fn rotate(&self, id: &str, overlap: Duration) -> Result<IssuedKey, ApiKeyError> {
        let old = self
            .inner
            .store
            .get(id)
            .await?
            .ok_or_else(|| ApiKeyError::UnknownId(id.to_owned()))?;
        let now = self.inner.clock.unix_time().as_secs();
        // A revoked or expired key's grants are not handed out again.
        if old.revoked {
            return Err(ApiKeyError::Revoked(id.to_owned()));
        }
        if old.expires_at.is_some_and(|at| at <= now) {
            return Err(ApiKeyError::Expired(id.to_owned()));
        }
        let mut new = NewApiKey::new(old.owner.clone())
            .roles(old.roles.clone())
            .scopes(old.scopes.clone());
        new.tenant = old.tenant.clone();
        new.tier = old.tier.clone();
        new.expires_in = old
            .expires_at
            .map(|at| Duration::from_secs(at.saturating_sub(old.created_at)));
        let issued = self.issue(new).await?;
        if let Err(error) = self
            .inner
            .store
            .expire(id, now.saturating_add(overlap.as_secs()))
            .await
        {
            // The new key exists: hand it over with the failure, so it is
            // not lost and the old key's expiry can be retried.
            return Err(ApiKeyError::OverlapNotSet {
                issued: Box::new(issued),
                error,
            });
        }
        Ok(issued)
    }

    /// Revokes key `id` at once.
    pub async fn revoke(&self, id: &str) -> Result<(), ApiKeyError> {
        if self.inner.store.revoke(id).await? {
            Ok(())
        } else {
            Err(ApiKeyError::UnknownId(id.to_owned()))
        }
    }

    /// Verifies a key, waiting for the store when it is remote.
    pub async fn verify(&self, key: &str) -> Result<Principal, AuthFailure> {
        match self.check(key) {
            KeyCheck::Done(result) => result,
            KeyCheck::Pending(future) => future.await,
        }
    }

    pub(crate) fn check(&self, key: &str) -> KeyCheck {
        // Shape and checksum first: garbage never costs a hash or a lookup.
        if !format::well_formed(key, &self.inner.prefix) {
            return KeyCheck::Done(Err(AuthFailure::Malformed));
        }
        let hash = self.inner.hasher.hash(key);
        match self.inner.store.find(&hash) {
            KeyLookup::Ready(found) => KeyCheck::Done(self.judge(found, &hash)),
            KeyLookup::Pending(future) => {
                let this = self.clone();
                KeyCheck::Pending(Box::pin(async move { this.judge(future.await, &hash) }))
            }
        }
    }

    fn judge(
        &self,
        found: Result<Option<Arc<StoredKey>>, StoreError>,
        hash: &[u8; 32],
    ) -> Result<Principal, AuthFailure> {
        let stored = match found {
            Ok(Some(stored)) => stored,
            Ok(None) => return Err(AuthFailure::UnknownApiKey),
            Err(error) => {
                tracing::warn!(target: palisade_core::audit::TARGET, %error, "API key store unavailable; key refused");
                return Err(AuthFailure::RevocationUnavailable);
            }
        };
        let matches = stored
            .hash()
            .is_some_and(|stored| bool::from(stored.ct_eq(hash)));
        if !matches {
            return Err(AuthFailure::UnknownApiKey);
        }
        let record = stored.record();
        if record.revoked {
            return Err(AuthFailure::Revoked);
        }
        if let Some(expires_at) = record.expires_at
            && self.inner.clock.unix_time().as_secs() >= expires_at
        {
            return Err(AuthFailure::Expired);
        }
        Ok(stored.principal())
    }
}

/// A key from fixed random bytes, for the fuzz harness.
#[doc(hidden)]
pub fn format_for_fuzzing(prefix: &str, random: [u8; 16]) -> String {
    format::compose(prefix, random)
}

/// Hex of a hash, for the fuzz harness.
#[doc(hidden)]
pub fn hex_for_fuzzing(hash: &[u8; 32]) -> String {
    record::hex(hash)
}

/// 12 base62-ish characters for an id (72 bits: ids need to be unique, not
/// secret).
fn id_text(bytes: &[u8; 9]) -> String {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut value = u128::from_le_bytes({
        let mut wide = [0u8; 16];
        wide[..9].copy_from_slice(bytes);
        wide
    });
    let mut out = String::with_capacity(12);
    for _ in 0..12 {
        out.push(char::from(ALPHABET[(value % 62) as usize]));
        value /= 62;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::clock::ManualClock;

    #[tokio::test]
    async fn issued_keys_verify_until_revoked_or_expired_and_rotation_overlaps() {
        let clock = ManualClock::new();
        let keys = ApiKeys::builder("pal_test", MemoryApiKeyStore::new())
            .pepper([9u8; 32].to_vec())
            .clock(clock.clone())
            .build()
            .unwrap();
        let issued = keys
            .issue(
                NewApiKey::new("bot")
                    .tenant("acme")
                    .roles(["viewer"])
                    .tier("pro"),
            )
            .await
            .unwrap();
        assert!(!format!("{issued:?}").contains(&issued.key));
        let principal = keys.verify(&issued.key).await.unwrap();
        assert_eq!(
            (principal.subject(), principal.tenant()),
            ("bot", Some("acme"))
        );
        assert_eq!(principal.claims().unwrap()["tier"], "pro");

        let rotated = keys
            .rotate(&issued.record.id, Duration::from_secs(60))
            .await
            .unwrap();
        assert!(keys.verify(&issued.key).await.is_ok(), "inside the overlap");
        assert!(keys.verify(&rotated.key).await.is_ok());
        clock.advance(Duration::from_secs(60));
        assert_eq!(keys.verify(&issued.key).await, Err(AuthFailure::Expired));
        assert!(keys.verify(&rotated.key).await.is_ok());

        keys.revoke(&rotated.record.id).await.unwrap();
        assert_eq!(keys.verify(&rotated.key).await, Err(AuthFailure::Revoked));
        // A revoked or expired key cannot be rotated back to life.
        assert!(matches!(
            keys.rotate(&rotated.record.id, Duration::from_secs(60))
                .await,
            Err(ApiKeyError::Revoked(_))
        ));
        assert!(matches!(
            keys.rotate(&issued.record.id, Duration::from_secs(60))
                .await,
            Err(ApiKeyError::Expired(_))
        ));
        assert!(matches!(
            keys.revoke("key_nope").await,
            Err(ApiKeyError::UnknownId(_))
        ));

        // Well-formed but never issued.
        let stranger = keys.mint(NewApiKey::new("x")).unwrap();
        assert_eq!(
            keys.verify(&stranger.key).await,
            Err(AuthFailure::UnknownApiKey)
        );
    }

    #[test]
    fn short_peppers_and_bad_prefixes_are_refused() {
        assert!(
            ApiKeys::builder("pal", MemoryApiKeyStore::new())
                .pepper(b"short".to_vec())
                .build()
                .is_err()
        );
        assert!(
            ApiKeys::builder("9pal", MemoryApiKeyStore::new())
                .build()
                .is_err()
        );
        assert!(
            ApiKeys::builder("pal-live", MemoryApiKeyStore::new())
                .build()
                .is_err()
        );
    }
}
