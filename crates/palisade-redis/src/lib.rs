//! Shared Redis plumbing of the Palisade layers.
//!
//! The rate-limit, API-key, revocation and WebSocket-ticket stores of the
//! other Palisade crates run on one machine in memory, or on many machines
//! with Redis. This crate is what they share for the second case:
//!
//! - [`RedisConnection`]: one multiplexed, reconnecting connection to a
//!   standalone Redis or a Redis Cluster, cheap to clone, with a per-call
//!   timeout (default 50 ms) so a slow or dead Redis never holds a request.
//!   Behind a breaker: after three calls in a row found Redis
//!   unavailable, calls fail at once for a cooldown, so a dead Redis costs
//!   requests nothing but their failure policy.
//! - [`RedisScript`]: a Lua script run with `EVALSHA`, loaded again when the
//!   server answers `NOSCRIPT` (after a restart or `SCRIPT FLUSH`).
//! - [`KeyNamer`]: key names with a configurable prefix and a hash tag around
//!   the per-client part, so every key of one client lands in one Cluster
//!   slot and multi-key scripts work.
//! - [`FailurePolicy`]: what a layer does when Redis fails (fail open, fail
//!   closed, or a local in-memory fallback), explicit in configuration.
//! - `testing` (feature `test-support`): real `redis-server` processes on
//!   free loopback ports, single or a 3-node cluster, stopped on drop.
//!
//! ```no_run
//! use palisade_redis::{KeyNamer, RedisConfig, RedisConnection, RedisScript};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = RedisConfig::standalone("redis://127.0.0.1:6379");
//! let connection = RedisConnection::connect(&config).await?;
//! let names = KeyNamer::new("palisade")?;
//! let key = names.key("rl", "ip:192.0.2.1"); // "palisade:rl:{ip:192.0.2.1}"
//! let incr = RedisScript::new("return redis.call('INCRBY', KEYS[1], ARGV[1])");
//! let count: i64 = incr.invoke(&connection, &[key.as_str()], &[1]).await?;
//! # let _ = count;
//! # Ok(()) }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

mod breaker;
mod config;
mod connection;
mod error;
mod failure;
mod keys;
mod script;
#[cfg(feature = "test-support")]
pub mod testing;

pub use config::{RedisConfig, RedisMode};
pub use connection::RedisConnection;
pub use error::RedisError;
pub use failure::{FailureCounts, FailurePolicy, FallbackDecision};
pub use keys::{KeyNamer, MAX_CLIENT_LEN};
pub use script::RedisScript;

/// The `redis` crate this one is built on, for values and commands.
pub use redis;
