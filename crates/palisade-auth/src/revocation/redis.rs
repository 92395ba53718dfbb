//! Revocation in Redis, shared by every instance: a revoked token is refused
//! everywhere on the next request.

use std::time::Duration;

use palisade_redis::{KeyNamer, RedisConnection, RedisScript};

use super::{
    RevocationCheck, RevocationError, RevocationStatus, RevocationStore, StoreFuture,
    TokenIdentity, subject_status,
};

/// Keeps the later of two "not before" times (written back as the integer
/// text it came as, never as a Lua float) and the longer retention.
const SIGN_OUT: &str = r"
local current = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local ttl = tonumber(ARGV[2])
local remaining = redis.call('PTTL', KEYS[1])
if remaining > ttl then ttl = remaining end
if current > tonumber(ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ttl)
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
end
return 1
";

/// Sign-out times past this (year 2255) are refused: Lua compares them as
/// doubles, exact only below 2^53.
const MAX_NOT_BEFORE: u64 = 1 << 33;

/// Revocations in Redis. Keys: `{prefix}:jti:{<jti>}` with the token's
/// remaining lifetime as TTL, and `{prefix}:signout:{<subject>}` holding the
/// "not before" time. A check is one pipelined round trip within the
/// connection's call timeout.
#[derive(Clone, Debug)]
pub struct RedisRevocationStore {
    connection: RedisConnection,
    names: KeyNamer,
    sign_out: RedisScript,
}

impl RedisRevocationStore {
    /// A store on this connection, keys under `prefix` (e.g. `palisade`).
    pub fn new(
        connection: RedisConnection,
        prefix: &str,
    ) -> Result<Self, palisade_core::ConfigError> {
        let names = KeyNamer::new(prefix)
            .map_err(|reason| palisade_core::ConfigError::invalid("key_prefix", reason))?;
        Ok(Self {
            connection,
            names,
            sign_out: RedisScript::new(SIGN_OUT),
        })
    }
}

fn unavailable(error: palisade_redis::RedisError) -> RevocationError {
    RevocationError::Unavailable(error.to_string())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl RevocationStore for RedisRevocationStore {
    fn check(&self, token: &TokenIdentity<'_>) -> RevocationCheck {
        let mut pipeline = redis::pipe();
        match token.jti {
            Some(jti) => pipeline.cmd("EXISTS").arg(self.names.key("jti", jti)),
            None => pipeline.cmd("ECHO").arg(0),
        };
        pipeline
            .cmd("GET")
            .arg(self.names.key("signout", token.subject));
        let connection = self.connection.clone();
        let issued_at = token.issued_at;
        RevocationCheck::Pending(Box::pin(async move {
            let (revoked, not_before): (u8, Option<String>) = connection
                .query_pipeline(&pipeline)
                .await
                .map_err(unavailable)?;
            if revoked > 0 {
                return Ok(RevocationStatus::Revoked);
            }
            match not_before.map(|text| text.parse::<u64>()) {
                None => Ok(RevocationStatus::Valid),
                Some(Ok(not_before)) => Ok(subject_status(Some(not_before), issued_at)),
                // A sign-out record we cannot read still means signed out.
                Some(Err(_)) => Ok(RevocationStatus::SignedOut),
            }
        }))
    }

    fn revoke_token(&self, jti: &str, remaining: Duration) -> StoreFuture<()> {
        let mut command = redis::cmd("SET");
        command
            .arg(self.names.key("jti", jti))
            .arg(1)
            .arg("PX")
            .arg(millis(remaining));
        let connection = self.connection.clone();
        Box::pin(async move {
            let _: () = connection.query(&command).await.map_err(unavailable)?;
            Ok(())
        })
    }

    fn revoke_subject(&self, subject: &str, not_before: u64, retain: Duration) -> StoreFuture<()> {
        if not_before > MAX_NOT_BEFORE {
            return Box::pin(std::future::ready(Err(RevocationError::Unavailable(
                "a sign-out time past 2^33 seconds cannot be stored".into(),
            ))));
        }
        let key = self.names.key("signout", subject);
        let connection = self.connection.clone();
        let script = self.sign_out.clone();
        Box::pin(async move {
            let _: i64 = script
                .invoke(&connection, &[&key], &[not_before, millis(retain)])
                .await
                .map_err(unavailable)?;
            Ok(())
        })
    }
}
