//! One multiplexed, reconnecting connection with per-call timeouts.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, Value};

use palisade_core::clock::{Clock, SystemClock};

use crate::breaker::Breaker;
use crate::config::{RedisConfig, RedisMode, redact_url};
use crate::error::RedisError;

/// A connection to a standalone Redis or a Redis Cluster.
///
/// Clones share one multiplexed connection (per node for a cluster), so
/// every layer and every request uses the same few sockets. A dropped
/// connection is re-established in the background; calls made meanwhile
/// fail fast with [`RedisError::Connection`] or [`RedisError::Timeout`],
/// never hang past the per-call timeout, and once a few have failed in a
/// row the connection's breaker answers [`RedisError::RecentlyUnavailable`]
/// at once (see [`RedisConfig::breaker_cooldown`]).
#[derive(Clone)]
pub struct RedisConnection {
    inner: Inner,
    call_timeout: Duration,
    description: std::sync::Arc<str>,
    /// Shared by clones: every user of the connection sees Redis as down
    /// (and stops waiting on it) together. One for the whole connection,
    /// every node of a cluster included. `None`: turned off.
    breaker: Option<std::sync::Arc<Breaker>>,
}

/// The `redis` crate's connection: what a call's future takes with it (a
/// clone of the whole connection would also take the breaker's and the
/// description's reference counts up and down on every call).
#[derive(Clone)]
pub(crate) enum Inner {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConnection")
            .field("to", &self.description)
            .field("call_timeout", &self.call_timeout)
            .finish()
    }
}

impl RedisConnection {
    /// Connects. A standalone server that is down fails this call; use
    /// [`connect_lazy`](Self::connect_lazy) to start without it.
    pub async fn connect(config: &RedisConfig) -> Result<Self, RedisError> {
        let call_timeout = validate(config)?;
        let description = describe(config);
        let inner = match config.mode {
            RedisMode::Standalone => {
                let client = standalone_client(config)?;
                let manager = tokio::time::timeout(
                    config.connect_timeout_duration(),
                    ConnectionManager::new_with_config(client, manager_config(config)),
                )
                .await
                .map_err(|_| RedisError::Timeout(config.connect_timeout_duration()))?
                .map_err(RedisError::Connection)?;
                Inner::Standalone(manager)
            }
            RedisMode::Cluster => {
                let client = cluster_client(config)?;
                // Connecting to a cluster reads its slot map from the seeds
                // as well: allow a few connect timeouts for the whole.
                let budget = config.connect_timeout_duration() * 3;
                let connection = tokio::time::timeout(budget, client.get_async_connection())
                    .await
                    .map_err(|_| RedisError::Timeout(budget))?
                    .map_err(RedisError::Connection)?;
                Inner::Cluster(connection)
            }
        };
        tracing::debug!(target: "palisade::redis", to = %description, "connected");
        Ok(Self {
            inner,
            call_timeout,
            description,
            breaker: breaker(config),
        })
    }

    /// A standalone connection made on first use, so a layer can be built
    /// while Redis is down; its calls fail (and its failure policy applies)
    /// until Redis answers. Must be called within a Tokio runtime.
    pub fn connect_lazy(config: &RedisConfig) -> Result<Self, RedisError> {
        let call_timeout = validate(config)?;
        if config.mode != RedisMode::Standalone {
            return Err(RedisError::Config(
                "lazy connections are for standalone mode; a cluster needs its slot map".into(),
            ));
        }
        let client = standalone_client(config)?;
        let manager = ConnectionManager::new_lazy_with_config(client, manager_config(config))
            .map_err(RedisError::Connection)?;
        Ok(Self {
            inner: Inner::Standalone(manager),
            call_timeout,
            description: describe(config),
            breaker: breaker(config),
        })
    }

    /// The per-call timeout.
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// Whether this is a cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner, Inner::Cluster(_))
    }

    /// Runs a command within the per-call timeout.
    pub async fn query<T: FromRedisValue>(&self, command: &Cmd) -> Result<T, RedisError> {
        self.within_timeout(
            |mut connection| async move { command.query_async(&mut connection).await },
        )
        .await
    }

    /// Runs a pipeline within the per-call timeout (one round trip on a
    /// standalone server).
    pub async fn query_pipeline<T: FromRedisValue>(
        &self,
        pipeline: &Pipeline,
    ) -> Result<T, RedisError> {
        self.within_timeout(
            |mut connection| async move { pipeline.query_async(&mut connection).await },
        )
        .await
    }

    /// `PING`, within the per-call timeout.
    pub async fn ping(&self) -> Result<(), RedisError> {
        let pong: String = self.query(&redis::cmd("PING")).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(RedisError::Config(format!(
                "unexpected PING answer {pong:?}"
            )))
        }
    }

    /// Whether the connection's breaker is open: calls found Redis
    /// unavailable and fail at once with [`RedisError::RecentlyUnavailable`].
    /// It stays open past its cooldown until a probing call succeeds (with
    /// no calls, it stays open).
    pub fn is_breaker_open(&self) -> bool {
        self.breaker.as_deref().is_some_and(Breaker::is_open)
    }

    /// Runs a call through the breaker and within the per-call timeout.
    /// The call gets its own handle on the `redis` crate's connection (a
    /// call's future owns what it uses), made only once the breaker lets
    /// the call through: a refused call costs nothing more.
    pub(crate) async fn within_timeout<T, F>(
        &self,
        call: impl FnOnce(Inner) -> F,
    ) -> Result<T, RedisError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let permit = match &self.breaker {
            Some(breaker) => match breaker.admit(|| SystemClock.now()) {
                Some(permit) => Some(permit),
                None => return Err(RedisError::RecentlyUnavailable),
            },
            None => None,
        };
        let call = call(self.inner.clone());
        let result = match tokio::time::timeout(self.call_timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(RedisError::from_redis(error, self.call_timeout)),
            Err(_) => Err(RedisError::Timeout(self.call_timeout)),
        };
        if let Some(permit) = permit {
            match &result {
                Err(error) if error.is_unavailable() => permit.failure(SystemClock.now()),
                _ => permit.success(),
            }
        }
        result
    }
}

/// Lets the `redis` crate's own commands and scripts run on this
/// connection (without the per-call timeout or the breaker, which neither
/// refuses these calls nor counts them: use the methods above on the
/// request path).
impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.inner.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.inner.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

impl ConnectionLike for Inner {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Inner::Standalone(c) => c.req_packed_command(cmd),
            Inner::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Inner::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Inner::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Inner::Standalone(c) => c.get_db(),
            Inner::Cluster(c) => c.get_db(),
        }
    }
}

fn breaker(config: &RedisConfig) -> Option<std::sync::Arc<Breaker>> {
    let cooldown = config.breaker_cooldown_duration();
    (!cooldown.is_zero()).then(|| std::sync::Arc::new(Breaker::new(cooldown)))
}

/// The longest breaker cooldown accepted: one hour.
const MAX_BREAKER_COOLDOWN_MS: u64 = 3_600_000;

fn validate(config: &RedisConfig) -> Result<Duration, RedisError> {
    if config.urls.is_empty() {
        return Err(RedisError::Config("no Redis URL".into()));
    }
    if config.mode == RedisMode::Standalone && config.urls.len() != 1 {
        return Err(RedisError::Config(
            "standalone mode takes exactly one URL".into(),
        ));
    }
    if config.call_timeout_ms == 0 || config.connect_timeout_ms == 0 {
        return Err(RedisError::Config("timeouts must be positive".into()));
    }
    if config.breaker_cooldown_ms > MAX_BREAKER_COOLDOWN_MS {
        // Far beyond any useful cooldown, and near the end of the clock a
        // breaker would never reopen.
        return Err(RedisError::Config(
            "breaker_cooldown_ms must be at most one hour".into(),
        ));
    }
    crate::keys::validate_prefix(&config.key_prefix).map_err(RedisError::Config)?;
    Ok(config.call_timeout_duration())
}

fn describe(config: &RedisConfig) -> std::sync::Arc<str> {
    let urls: Vec<String> = config.urls.iter().map(|u| redact_url(u)).collect();
    urls.join(",").into()
}

fn standalone_client(config: &RedisConfig) -> Result<redis::Client, RedisError> {
    redis::Client::open(config.urls[0].as_str())
        .map_err(|e| RedisError::Config(format!("bad URL {}: {e}", redact_url(&config.urls[0]))))
}

fn manager_config(config: &RedisConfig) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.connect_timeout_duration()))
        .set_response_timeout(Some(config.call_timeout_duration()))
        // Reconnect quickly after a restart, and keep trying: each failed
        // call triggers another attempt.
        .set_number_of_retries(3)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(1_000))
}

fn cluster_client(config: &RedisConfig) -> Result<ClusterClient, RedisError> {
    ClusterClient::builder(config.urls.iter().map(String::as_str))
        .connection_timeout(config.connect_timeout_duration())
        .response_timeout(config.call_timeout_duration())
        .retries(2)
        .min_retry_wait(10)
        .max_retry_wait(200)
        .build()
        .map_err(|e| RedisError::Config(format!("bad cluster configuration: {e}")))
}
