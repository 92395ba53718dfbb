//! Revocation: a `jti` deny-list whose entries expire with their tokens, and
//! a per-subject "not before" time ("sign out everywhere").
//!
//! The verifier asks the store on every request, cached token or not. When
//! the store cannot answer, the [`RevocationFailure`] policy decides, and
//! every such decision is logged and counted.
//!
//! ```
//! use palisade_auth::revocation::{MemoryRevocationStore, RevocationStore};
//! use std::time::Duration;
//!
//! # tokio_test_block(async {
//! let store = MemoryRevocationStore::new();
//! store.revoke_token("jti-1", Duration::from_secs(600)).await?;
//! store.revoke_subject("user-42", 1_750_000_000, Duration::from_secs(86_400)).await?;
//! # Ok::<(), palisade_auth::revocation::RevocationError>(())
//! # });
//! # fn tokio_test_block<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```

mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

#[cfg(feature = "redis")]
pub use self::redis::RedisRevocationStore;
pub use memory::MemoryRevocationStore;

/// A boxed future of a revocation store.
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, RevocationError>> + Send>>;

/// The identity of a verified token, as revocation sees it.
#[derive(Clone, Copy, Debug)]
pub struct TokenIdentity<'a> {
    /// The token id, when it has one.
    pub jti: Option<&'a str>,
    /// The subject.
    pub subject: &'a str,
    /// When it was issued, in seconds since the epoch.
    pub issued_at: Option<u64>,
}

/// Whether a token still stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevocationStatus {
    /// Not revoked.
    Valid,
    /// Its `jti` is on the deny-list.
    Revoked,
    /// Its subject signed out everywhere after it was issued (or it has no
    /// `iat` and its subject signed out).
    SignedOut,
}

/// The answer of a store: at once (in memory) or later (over the network).
pub enum RevocationCheck {
    /// Answered at once.
    Ready(Result<RevocationStatus, RevocationError>),
    /// Answered when the future completes.
    Pending(StoreFuture<RevocationStatus>),
}

impl std::fmt::Debug for RevocationCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RevocationCheck::Ready(result) => f.debug_tuple("Ready").field(result).finish(),
            RevocationCheck::Pending(_) => f.write_str("Pending"),
        }
    }
}

/// A store could not answer or record.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RevocationError {
    /// The store is full; nothing was recorded.
    #[error("the revocation store is full")]
    Full,
    /// The backend did not answer in time or at all.
    #[error("the revocation backend is unavailable: {0}")]
    Unavailable(String),
}

/// What the verifier does when the store cannot answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum RevocationFailure {
    /// Refuse with 503: a revoked token never passes (the default).
    #[default]
    FailClosed,
    /// Let the token through: availability over revocation.
    FailOpen,
}

/// Where revocations live.
pub trait RevocationStore: Send + Sync + 'static {
    /// Whether `token` still stands.
    fn check(&self, token: &TokenIdentity<'_>) -> RevocationCheck;

    /// Puts a token id on the deny-list for `remaining` (the token's time
    /// left; the entry then goes).
    fn revoke_token(&self, jti: &str, remaining: Duration) -> StoreFuture<()>;

    /// Refuses every token of `subject` issued before `not_before` (seconds
    /// since the epoch), remembered for `retain` (at least the longest token
    /// lifetime).
    fn revoke_subject(&self, subject: &str, not_before: u64, retain: Duration) -> StoreFuture<()>;
}

impl<T: RevocationStore + ?Sized> RevocationStore for std::sync::Arc<T> {
    fn check(&self, token: &TokenIdentity<'_>) -> RevocationCheck {
        (**self).check(token)
    }

    fn revoke_token(&self, jti: &str, remaining: Duration) -> StoreFuture<()> {
        (**self).revoke_token(jti, remaining)
    }

    fn revoke_subject(&self, subject: &str, not_before: u64, retain: Duration) -> StoreFuture<()> {
        (**self).revoke_subject(subject, not_before, retain)
    }
}

/// The status of a token given the subject's "not before" time.
pub(crate) fn subject_status(not_before: Option<u64>, issued_at: Option<u64>) -> RevocationStatus {
    match (not_before, issued_at) {
        (None, _) => RevocationStatus::Valid,
        (Some(not_before), Some(iat)) if iat >= not_before => RevocationStatus::Valid,
        _ => RevocationStatus::SignedOut,
    }
}
