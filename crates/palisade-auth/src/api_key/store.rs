//! Where API key records live.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::record::{ApiKeyRecord, StoredKey};
use crate::revocation::{RevocationError as StoreError, StoreFuture};

/// What a lookup finds: the stored key, nothing, or a store failure.
pub type Found = Result<Option<Arc<StoredKey>>, StoreError>;

/// The answer of a lookup: at once (memory, file) or later (Redis).
pub enum KeyLookup {
    /// Answered at once.
    Ready(Found),
    /// Answered when the future completes.
    Pending(Pin<Box<dyn Future<Output = Found> + Send>>),
}

impl std::fmt::Debug for KeyLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyLookup::Ready(result) => f.debug_tuple("Ready").field(result).finish(),
            KeyLookup::Pending(_) => f.write_str("Pending"),
        }
    }
}

/// API key records, found by the key's hash.
pub trait ApiKeyStore: Send + Sync + 'static {
    /// The record whose hash is `hash`.
    fn find(&self, hash: &[u8; 32]) -> KeyLookup;
    /// Stores a new record.
    fn insert(&self, record: ApiKeyRecord) -> StoreFuture<()>;
    /// Marks a key revoked; whether it existed.
    fn revoke(&self, id: &str) -> StoreFuture<bool>;
    /// Makes a key expire at `at` (seconds since the epoch) unless it
    /// expires sooner; whether it existed.
    fn expire(&self, id: &str, at: u64) -> StoreFuture<bool>;
    /// The record of a key by id.
    fn get(&self, id: &str) -> StoreFuture<Option<ApiKeyRecord>>;
}

impl<T: ApiKeyStore + ?Sized> ApiKeyStore for Arc<T> {
    fn find(&self, hash: &[u8; 32]) -> KeyLookup {
        (**self).find(hash)
    }
    fn insert(&self, record: ApiKeyRecord) -> StoreFuture<()> {
        (**self).insert(record)
    }
    fn revoke(&self, id: &str) -> StoreFuture<bool> {
        (**self).revoke(id)
    }
    fn expire(&self, id: &str, at: u64) -> StoreFuture<bool> {
        (**self).expire(id, at)
    }
    fn get(&self, id: &str) -> StoreFuture<Option<ApiKeyRecord>> {
        (**self).get(id)
    }
}
