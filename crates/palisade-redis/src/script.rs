//! Lua scripts run with `EVALSHA`.

use redis::{FromRedisValue, Script, ToRedisArgs};

use crate::connection::RedisConnection;
use crate::error::RedisError;

/// A Lua script, sent by its SHA-1 (`EVALSHA`). When the server does not
/// know it (`NOSCRIPT`: after a restart, a failover or `SCRIPT FLUSH`) it is
/// loaded with `SCRIPT LOAD` and run again, within the same per-call
/// timeout. On a cluster, the script is loaded on the node owning its keys.
#[derive(Clone, Debug)]
pub struct RedisScript {
    script: Script,
}

impl RedisScript {
    /// A script from its source; the hash is computed once, here.
    pub fn new(source: &str) -> Self {
        Self {
            script: Script::new(source),
        }
    }

    /// The script's SHA-1, as sent with `EVALSHA`.
    pub fn hash(&self) -> &str {
        self.script.get_hash()
    }

    /// Runs the script with these keys and arguments, within the per-call
    /// timeout. On a cluster, all keys must hash to one slot (use
    /// [`KeyNamer`](crate::KeyNamer) hash tags).
    pub async fn invoke<T, A>(
        &self,
        connection: &RedisConnection,
        keys: &[&str],
        args: &[A],
    ) -> Result<T, RedisError>
    where
        T: FromRedisValue,
        A: ToRedisArgs,
    {
        let mut invocation = self.script.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        for arg in args {
            invocation.arg(arg);
        }
        connection
            .within_timeout(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await
    }
}
