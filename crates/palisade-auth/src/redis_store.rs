//! Refresh-token families and WebSocket tickets in Redis, shared by every
//! instance. Revocation lists live in
//! [`RedisRevocationStore`](crate::revocation::RedisRevocationStore).

use std::time::Duration;

use palisade_core::ConfigError;
use palisade_redis::{KeyNamer, RedisConnection, RedisScript};

use crate::refresh::{FamilyRecord, RefreshStore, RotateOutcome};
use crate::revocation::{RevocationError as StoreError, StoreFuture};
use crate::ticket::{TicketPrincipal, TicketStore};

fn unavailable(error: palisade_redis::RedisError) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Rotate atomically: the current secret moves on, any other revokes.
/// Replies `{outcome, subject, created_at}`.
const ROTATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, '', ''} end
if redis.call('HGET', KEYS[1], 'revoked') == '1' then return {0, '', ''} end
local subject = redis.call('HGET', KEYS[1], 'subject')
if redis.call('HGET', KEYS[1], 'current') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'current', ARGV[2])
  return {1, subject, redis.call('HGET', KEYS[1], 'created')}
end
redis.call('HSET', KEYS[1], 'revoked', '1')
return {2, subject, ''}
";

/// Revoke an existing family, only with its current secret when one is
/// given; a missing family leaves no key behind.
const REVOKE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HGET', KEYS[1], 'revoked') == '1' then return 0 end
if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], 'current') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'revoked', '1')
return 1
";

/// Refresh-token families in Redis: one hash per family
/// (`{prefix}:rt:{<family>}`), rotated by a script so two instances cannot
/// both accept one token.
#[derive(Clone, Debug)]
pub struct RedisRefreshStore {
    connection: RedisConnection,
    names: KeyNamer,
    rotate: RedisScript,
    revoke: RedisScript,
}

impl RedisRefreshStore {
    /// A store on this connection, keys under `prefix`.
    pub fn new(connection: RedisConnection, prefix: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            connection,
            names: KeyNamer::new(prefix).map_err(|r| ConfigError::invalid("key_prefix", r))?,
            rotate: RedisScript::new(ROTATE),
            revoke: RedisScript::new(REVOKE),
        })
    }
}

impl RefreshStore for RedisRefreshStore {
    fn create(&self, family: &str, record: FamilyRecord, ttl: Duration) -> StoreFuture<()> {
        let key = self.names.key("rt", family);
        let mut pipeline = redis::pipe();
        pipeline
            .atomic()
            .cmd("HSET")
            .arg(&key)
            .arg("subject")
            .arg(&record.subject)
            .arg("current")
            .arg(hex(&record.current))
            .arg("revoked")
            .arg("0")
            .arg("created")
            .arg(record.created_at)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(millis(ttl))
            .ignore();
        let connection = self.connection.clone();
        Box::pin(async move {
            let _: () = connection
                .query_pipeline(&pipeline)
                .await
                .map_err(unavailable)?;
            Ok(())
        })
    }

    fn rotate(
        &self,
        family: &str,
        presented: [u8; 32],
        next: [u8; 32],
    ) -> StoreFuture<RotateOutcome> {
        let key = self.names.key("rt", family);
        let connection = self.connection.clone();
        let script = self.rotate.clone();
        Box::pin(async move {
            let reply: (u8, String, String) = script
                .invoke(&connection, &[&key], &[hex(&presented), hex(&next)])
                .await
                .map_err(unavailable)?;
            Ok(match reply {
                (1, subject, created) if !subject.is_empty() => RotateOutcome::Rotated {
                    subject,
                    // Unreadable: as old as can be, so any sign-out ends it.
                    created_at: created.parse().unwrap_or(0),
                },
                (2, subject, _) => RotateOutcome::Reused { subject },
                _ => RotateOutcome::Invalid,
            })
        })
    }

    fn revoke(&self, family: &str, presented: Option<[u8; 32]>) -> StoreFuture<bool> {
        let key = self.names.key("rt", family);
        let connection = self.connection.clone();
        let script = self.revoke.clone();
        let presented = presented.map(|hash| hex(&hash)).unwrap_or_default();
        Box::pin(async move {
            let revoked: i64 = script
                .invoke(&connection, &[&key], &[presented])
                .await
                .map_err(unavailable)?;
            Ok(revoked == 1)
        })
    }
}

/// WebSocket tickets in Redis (`{prefix}:wst:{<sha256>}`), redeemed with
/// `GETDEL` so a ticket works once across all instances.
#[derive(Clone, Debug)]
pub struct RedisTicketStore {
    connection: RedisConnection,
    names: KeyNamer,
}

impl RedisTicketStore {
    /// A store on this connection, keys under `prefix`.
    pub fn new(connection: RedisConnection, prefix: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            connection,
            names: KeyNamer::new(prefix).map_err(|r| ConfigError::invalid("key_prefix", r))?,
        })
    }
}

impl TicketStore for RedisTicketStore {
    fn put(&self, hash: [u8; 32], principal: TicketPrincipal, ttl: Duration) -> StoreFuture<()> {
        let key = self.names.key("wst", hex(&hash));
        let connection = self.connection.clone();
        Box::pin(async move {
            let value = serde_json::to_string(&principal)
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            let mut command = redis::cmd("SET");
            command.arg(&key).arg(value).arg("PX").arg(millis(ttl));
            let _: () = connection.query(&command).await.map_err(unavailable)?;
            Ok(())
        })
    }

    fn take(&self, hash: [u8; 32]) -> StoreFuture<Option<TicketPrincipal>> {
        let mut command = redis::cmd("GETDEL");
        command.arg(self.names.key("wst", hex(&hash)));
        let connection = self.connection.clone();
        Box::pin(async move {
            let value: Option<String> = connection.query(&command).await.map_err(unavailable)?;
            Ok(value.and_then(|json| serde_json::from_str(&json).ok()))
        })
    }
}
