//! Errors of Redis calls.

use std::time::Duration;

/// A Redis call that did not give an answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// No answer within the per-call timeout.
    #[error("redis call timed out after {0:?}")]
    Timeout(Duration),
    /// The connection is down or could not be made.
    #[error("redis connection failed: {0}")]
    Connection(#[source] redis::RedisError),
    /// Redis answered with an error, or with a value of the wrong type.
    #[error("redis command failed: {0}")]
    Command(#[source] redis::RedisError),
    /// The configuration cannot work.
    #[error("invalid redis configuration: {0}")]
    Config(String),
    /// Not asked: calls found Redis unavailable just now, and the
    /// connection's breaker fails calls at once until its cooldown ends.
    #[error("redis not asked: unavailable just now")]
    RecentlyUnavailable,
}

impl RedisError {
    /// Whether the error means Redis is unreachable (timeout, connection,
    /// or a breaker open after either), as opposed to a command Redis
    /// refused.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            RedisError::Timeout(_) | RedisError::Connection(_) | RedisError::RecentlyUnavailable
        )
    }
}

impl RedisError {
    /// Sorts an error of the `redis` crate; `timeout` is the per-call timeout
    /// in force.
    pub(crate) fn from_redis(error: redis::RedisError, timeout: Duration) -> Self {
        use redis::{ErrorKind, ServerErrorKind};
        // A server that is loading, failing over, read-only or without a
        // cluster quorum is unavailable for our purpose, like a dead one:
        // the failure policy must apply.
        let transient = matches!(
            error.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ReadOnly
            )
        );
        if error.is_timeout() {
            RedisError::Timeout(timeout)
        } else if transient
            || error.is_io_error()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
            || error.is_unrecoverable_error()
        {
            RedisError::Connection(error)
        } else {
            RedisError::Command(error)
        }
    }
}
