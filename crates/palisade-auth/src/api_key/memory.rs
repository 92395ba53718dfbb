//! API keys in this process's memory: lock-free reads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::record::{ApiKeyRecord, StoredKey};
use super::store::{ApiKeyStore, KeyLookup};
use crate::revocation::{RevocationError as StoreError, StoreFuture};

type Table = HashMap<[u8; 32], Arc<StoredKey>>;

/// API keys in memory. Lookups read an immutable table through `ArcSwap`
/// (no lock); writes (issue, revoke, rotate) copy the table under a mutex,
/// which suits keys that change rarely.
#[derive(Clone, Default)]
pub struct MemoryApiKeyStore {
    table: Arc<ArcSwap<Table>>,
    writer: Arc<Mutex<()>>,
}

impl std::fmt::Debug for MemoryApiKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryApiKeyStore")
            .field("keys", &self.table.load().len())
            .finish()
    }
}

impl MemoryApiKeyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding these records (records with a malformed hash are
    /// skipped with a warning).
    pub fn from_records(records: impl IntoIterator<Item = ApiKeyRecord>) -> Self {
        let store = Self::new();
        store.replace_all(records);
        store
    }

    /// Replaces every record at once (a file reload).
    pub fn replace_all(&self, records: impl IntoIterator<Item = ApiKeyRecord>) {
        let mut table = Table::new();
        for record in records {
            let stored = StoredKey::new(record);
            match stored.hash().copied() {
                Some(hash) => {
                    table.insert(hash, stored);
                }
                None => {
                    tracing::warn!(id = %stored.record().id, "skipping an API key record with a malformed hash");
                }
            }
        }
        let _guard = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.table.store(Arc::new(table));
    }

    /// Every record.
    pub fn records(&self) -> Vec<ApiKeyRecord> {
        self.table
            .load()
            .values()
            .map(|k| k.record().clone())
            .collect()
    }

    fn edit(&self, f: impl FnOnce(&mut Table) -> bool) -> bool {
        let _guard = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut table = Table::clone(&self.table.load());
        let changed = f(&mut table);
        if changed {
            self.table.store(Arc::new(table));
        }
        changed
    }

    fn edit_by_id(&self, id: &str, f: impl Fn(&mut ApiKeyRecord)) -> bool {
        self.edit(|table| {
            let Some((hash, stored)) = table
                .iter()
                .find(|(_, stored)| stored.record().id == id)
                .map(|(hash, stored)| (*hash, stored.clone()))
            else {
                return false;
            };
            let mut record = stored.record().clone();
            f(&mut record);
            table.insert(hash, StoredKey::new(record));
            true
        })
    }
}

impl ApiKeyStore for MemoryApiKeyStore {
    #[inline]
    fn find(&self, hash: &[u8; 32]) -> KeyLookup {
        KeyLookup::Ready(Ok(self.table.load().get(hash).cloned()))
    }

    fn insert(&self, record: ApiKeyRecord) -> StoreFuture<()> {
        let stored = StoredKey::new(record);
        let result = match stored.hash().copied() {
            Some(hash) => {
                self.edit(|table| {
                    table.insert(hash, stored);
                    true
                });
                Ok(())
            }
            None => Err(StoreError::Unavailable("malformed key hash".into())),
        };
        Box::pin(std::future::ready(result))
    }

    fn revoke(&self, id: &str) -> StoreFuture<bool> {
        let found = self.edit_by_id(id, |record| record.revoked = true);
        Box::pin(std::future::ready(Ok(found)))
    }

    fn expire(&self, id: &str, at: u64) -> StoreFuture<bool> {
        let found = self.edit_by_id(id, |record| {
            record.expires_at = Some(record.expires_at.map_or(at, |current| current.min(at)));
        });
        Box::pin(std::future::ready(Ok(found)))
    }

    fn get(&self, id: &str) -> StoreFuture<Option<ApiKeyRecord>> {
        let found = self
            .table
            .load()
            .values()
            .find(|stored| stored.record().id == id)
            .map(|stored| stored.record().clone());
        Box::pin(std::future::ready(Ok(found)))
    }
}
