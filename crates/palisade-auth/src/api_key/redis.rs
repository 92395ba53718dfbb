//! API keys in Redis, shared by every instance, with a short local cache.
//!
//! Records live at `{prefix}:apikey:{<hash hex>}`, a Redis hash: the
//! record as JSON (never rewritten) and the two fields that change,
//! `revoked` and `expires_at`; an index `{prefix}:apikeyid:{<id>}` → hash. Each instance keeps what it read for
//! at most `cache_ttl` (default 2 s, found and not-found alike), so a
//! revocation reaches every instance within that bound without a Redis
//! round trip per request.

use std::sync::Arc;
use std::time::Duration;

use palisade_core::ConfigError;
use palisade_core::clock::{Clock, Nanos, SystemClock};
use palisade_core::store::{Idle, KeyedStore};
use palisade_redis::{KeyNamer, RedisConnection, RedisScript};

use super::record::{ApiKeyRecord, StoredKey, hex};
use super::store::{ApiKeyStore, KeyLookup};
use crate::revocation::{RevocationError as StoreError, StoreFuture};

/// Revokes, or moves the expiry earlier, in one step.
const EDIT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[1] == 'revoke' then
  redis.call('HSET', KEYS[1], 'revoked', '1')
else
  local current = tonumber(redis.call('HGET', KEYS[1], 'expires_at') or '')
  if current == nil or current > tonumber(ARGV[2]) then
    redis.call('HSET', KEYS[1], 'expires_at', ARGV[2])
  end
end
return 1
";

#[derive(Debug)]
struct Cached {
    hash: [u8; 32],
    until: Nanos,
    found: Option<Arc<StoredKey>>,
}

impl Idle for Cached {
    fn is_idle(&self, now: Nanos) -> bool {
        self.until <= now
    }
}

/// API keys in Redis.
#[derive(Clone)]
pub struct RedisApiKeyStore {
    connection: RedisConnection,
    names: KeyNamer,
    edit: RedisScript,
    cache: Arc<KeyedStore<Cached>>,
    cache_ttl: Duration,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for RedisApiKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisApiKeyStore")
            .field("connection", &self.connection)
            .field("cache_ttl", &self.cache_ttl)
            .finish_non_exhaustive()
    }
}

impl RedisApiKeyStore {
    /// A store on this connection, keys under `prefix`.
    pub fn new(connection: RedisConnection, prefix: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            connection,
            names: KeyNamer::new(prefix).map_err(|r| ConfigError::invalid("key_prefix", r))?,
            edit: RedisScript::new(EDIT),
            cache: Arc::new(KeyedStore::builder().capacity(100_000).build()?),
            cache_ttl: Duration::from_secs(2),
            clock: Arc::new(SystemClock),
        })
    }

    /// How long an instance trusts what it read (default 2 s; zero reads
    /// Redis on every request). This bounds how late a revocation takes
    /// effect elsewhere.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// The clock (tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn record_key(&self, hash_hex: &str) -> String {
        self.names.key("apikey", hash_hex)
    }

    fn id_key(&self, id: &str) -> String {
        self.names.key("apikeyid", id)
    }

    fn cache_address(hash: &[u8; 32]) -> u64 {
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash[..8]);
        u64::from_le_bytes(first)
    }

    /// The record at `key` with its current `revoked` and `expires_at`.
    async fn read(&self, key: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let (json, revoked, expires_at): (Option<String>, Option<String>, Option<u64>) = self
            .connection
            .query(
                redis::cmd("HMGET")
                    .arg(key)
                    .arg("json")
                    .arg("revoked")
                    .arg("expires_at"),
            )
            .await
            .map_err(unavailable)?;
        let Some(json) = json else { return Ok(None) };
        let mut record: ApiKeyRecord = serde_json::from_str(&json)
            .map_err(|_| StoreError::Unavailable("an unreadable API key record".into()))?;
        record.revoked |= revoked.as_deref() == Some("1");
        if let Some(at) = expires_at {
            record.expires_at = Some(record.expires_at.map_or(at, |own| own.min(at)));
        }
        Ok(Some(record))
    }

    async fn edit(&self, id: &str, action: &str, at: u64) -> Result<bool, StoreError> {
        let hash: Option<String> = self
            .connection
            .query(redis::cmd("GET").arg(self.id_key(id)))
            .await
            .map_err(unavailable)?;
        let Some(hash) = hash else { return Ok(false) };
        // Forget what this instance read, so the change is in force here at
        // once (elsewhere within `cache_ttl`).
        if let Some(bytes) = super::record::parse_hex(&hash) {
            let now = self.clock.now();
            let address = Self::cache_address(&bytes);
            let stale = || Cached {
                hash: bytes,
                until: now,
                found: None,
            };
            let _ = self
                .cache
                .update_hashed(address, now, stale, |entry| entry.until = now);
        }
        let done: i64 = self
            .edit
            .invoke(
                &self.connection,
                &[&self.record_key(&hash)],
                &[action.to_owned(), at.to_string()],
            )
            .await
            .map_err(unavailable)?;
        Ok(done == 1)
    }
}

fn unavailable(error: palisade_redis::RedisError) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

impl ApiKeyStore for RedisApiKeyStore {
    fn find(&self, hash: &[u8; 32]) -> KeyLookup {
        let now = self.clock.now();
        let address = Self::cache_address(hash);
        if !self.cache_ttl.is_zero() {
            let cached = self.cache.get_hashed(address, |entry| {
                entry
                    .filter(|e| e.hash == *hash && now < e.until)
                    .map(|e| e.found.clone())
            });
            if let Some(found) = cached {
                return KeyLookup::Ready(Ok(found));
            }
        }
        let this = self.clone();
        let hash = *hash;
        KeyLookup::Pending(Box::pin(async move {
            let found = this
                .read(&this.record_key(&hex(&hash)))
                .await?
                .map(StoredKey::new);
            if !this.cache_ttl.is_zero() {
                let now = this.clock.now();
                let until = now.saturating_add(this.cache_ttl);
                let make = || Cached {
                    hash,
                    until,
                    found: found.clone(),
                };
                let _ = this
                    .cache
                    .update_hashed(address, now, make, |entry| *entry = make());
            }
            Ok(found)
        }))
    }

    fn insert(&self, record: ApiKeyRecord) -> StoreFuture<()> {
        let this = self.clone();
        Box::pin(async move {
            let mut record = record;
            // One spelling of the hash, the one lookups use.
            record.hash = record
                .hash_bytes()
                .map(|bytes| hex(&bytes))
                .ok_or_else(|| StoreError::Unavailable("malformed key hash".into()))?;
            let json = serde_json::to_string(&record)
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            let mut set_record = redis::cmd("HSET");
            set_record
                .arg(this.record_key(&record.hash))
                .arg("json")
                .arg(json)
                .arg("revoked")
                .arg(if record.revoked { "1" } else { "0" });
            let mut set_id = redis::cmd("SET");
            set_id.arg(this.id_key(&record.id)).arg(&record.hash);
            // Two keys in two slots: two commands (a pipeline would need
            // one slot on a cluster). The record first: an id pointing
            // nowhere is harmless, the reverse would hide a live key.
            let _: i64 = this
                .connection
                .query(&set_record)
                .await
                .map_err(unavailable)?;
            let _: () = this.connection.query(&set_id).await.map_err(unavailable)?;
            Ok(())
        })
    }

    fn revoke(&self, id: &str) -> StoreFuture<bool> {
        let this = self.clone();
        let id = id.to_owned();
        Box::pin(async move { this.edit(&id, "revoke", 0).await })
    }

    fn expire(&self, id: &str, at: u64) -> StoreFuture<bool> {
        let this = self.clone();
        let id = id.to_owned();
        Box::pin(async move { this.edit(&id, "expire", at).await })
    }

    fn get(&self, id: &str) -> StoreFuture<Option<ApiKeyRecord>> {
        let this = self.clone();
        let id = id.to_owned();
        Box::pin(async move {
            let hash: Option<String> = this
                .connection
                .query(redis::cmd("GET").arg(this.id_key(&id)))
                .await
                .map_err(unavailable)?;
            let Some(hash) = hash else { return Ok(None) };
            this.read(&this.record_key(&hash)).await
        })
    }
}
