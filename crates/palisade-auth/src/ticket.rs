//! WebSocket tickets: browsers cannot set an `Authorization` header on a
//! WebSocket upgrade, so an authenticated request mints a short-lived,
//! single-use ticket bound to its principal, and the upgrade redeems it.
//!
//! A ticket is 128 random bits; only its SHA-256 is stored. Redeeming
//! removes it atomically (in Redis, `GETDEL`), so a ticket that leaks into
//! a log after use is worthless, and one never used expires (default 30 s).
//!
//! ```
//! use palisade_auth::ticket::{MemoryTicketStore, WsTickets};
//! use palisade_core::principal::{AuthMethod, Principal};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let tickets = WsTickets::new(MemoryTicketStore::new());
//! let principal = Principal::builder("user-42")
//!     .roles(["viewer"])
//!     .method(AuthMethod::Jwt { issuer: "https://id.example.com".into(), kid: None })
//!     .build();
//! let ticket = tickets.mint(&principal).await.unwrap();
//! let principal = tickets.redeem(&ticket).await.unwrap();
//! assert_eq!(principal.subject(), "user-42");
//! assert!(tickets.redeem(&ticket).await.is_err(), "single use");
//! # });
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::clock::{Clock, Nanos, SystemClock};
use palisade_core::principal::{AuthMethod, Principal};
use palisade_core::store::{Idle, KeyedStore};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::failure::AuthFailure;
use crate::revocation::{
    RevocationCheck, RevocationError as StoreError, RevocationStatus, RevocationStore, StoreFuture,
    TokenIdentity,
};

/// How the principal behind a ticket authenticated, kept across the
/// redemption.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum TicketMethod {
    /// A JWT of this issuer.
    Jwt {
        /// The issuer.
        issuer: String,
        /// The key id.
        kid: Option<String>,
    },
    /// An API key.
    ApiKey {
        /// The key's id.
        id: String,
    },
    /// A client certificate.
    Mtls {
        /// The SPIFFE id.
        spiffe_id: Option<String>,
        /// The certificate subject.
        subject: String,
    },
    /// Development mode.
    Development,
}

impl TicketMethod {
    fn of(method: &AuthMethod) -> Option<Self> {
        Some(match method {
            AuthMethod::Jwt { issuer, kid } => TicketMethod::Jwt {
                issuer: issuer.clone(),
                kid: kid.clone(),
            },
            AuthMethod::ApiKey { id } => TicketMethod::ApiKey { id: id.clone() },
            AuthMethod::Mtls { spiffe_id, subject } => TicketMethod::Mtls {
                spiffe_id: spiffe_id.clone(),
                subject: subject.clone(),
            },
            AuthMethod::Development => TicketMethod::Development,
            _ => return None,
        })
    }

    fn into_method(self) -> AuthMethod {
        match self {
            TicketMethod::Jwt { issuer, kid } => AuthMethod::Jwt { issuer, kid },
            TicketMethod::ApiKey { id } => AuthMethod::ApiKey { id },
            TicketMethod::Mtls { spiffe_id, subject } => AuthMethod::Mtls { spiffe_id, subject },
            TicketMethod::Development => AuthMethod::Development,
        }
    }
}

/// What a ticket carries: the principal's identity, never its token.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TicketPrincipal {
    /// The subject.
    pub subject: String,
    /// The tenant.
    pub tenant: Option<String>,
    /// The roles.
    pub roles: Vec<String>,
    /// The scopes.
    pub scopes: Vec<String>,
    /// When the credential that minted the ticket expires (seconds since the
    /// epoch): the socket should close then.
    pub expires_at: Option<u64>,
    /// How the principal authenticated.
    pub method: TicketMethod,
    /// The minting token's `jti`, for revocation checks on redemption.
    pub jti: Option<String>,
    /// The minting token's `iat`, for "sign out everywhere" checks.
    pub issued_at: Option<u64>,
}

impl TicketPrincipal {
    fn of(principal: &Principal) -> Option<Self> {
        let claim = |name: &str| principal.claims().and_then(|claims| claims.get(name));
        Some(Self {
            method: TicketMethod::of(principal.method())?,
            jti: claim("jti").and_then(|v| v.as_str()).map(str::to_owned),
            issued_at: claim("iat").and_then(serde_json::Value::as_u64),
            subject: principal.subject().to_owned(),
            tenant: principal.tenant().map(str::to_owned),
            roles: principal.roles().to_vec(),
            scopes: principal.scopes().to_vec(),
            expires_at: principal.expires_at().map(|at| at.as_secs()),
        })
    }

    fn into_principal(self) -> Principal {
        let mut builder = Principal::builder(self.subject)
            .roles(self.roles)
            .scopes(self.scopes)
            .method(self.method.into_method());
        if let Some(tenant) = self.tenant {
            builder = builder.tenant(tenant);
        }
        if let Some(at) = self.expires_at {
            builder = builder.expires_at(Duration::from_secs(at));
        }
        builder.build()
    }
}

/// Where tickets live until redeemed.
pub trait TicketStore: Send + Sync + 'static {
    /// Stores a ticket (by hash) for `ttl`.
    fn put(&self, hash: [u8; 32], principal: TicketPrincipal, ttl: Duration) -> StoreFuture<()>;
    /// Removes and returns a ticket, if present and unexpired.
    fn take(&self, hash: [u8; 32]) -> StoreFuture<Option<TicketPrincipal>>;
}

/// Why a ticket could not be minted.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TicketError {
    /// Tickets are for authenticated principals only.
    #[error("an anonymous principal cannot mint a ticket")]
    Anonymous,
    /// The principal's credential has expired.
    #[error("the credential has expired")]
    Expired,
    /// The store could not record it.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Mints and redeems WebSocket tickets.
#[derive(Clone)]
pub struct WsTickets {
    store: Arc<dyn TicketStore>,
    ttl: Duration,
    clock: Arc<dyn Clock>,
    revocation: Option<Arc<dyn RevocationStore>>,
}

impl fmt::Debug for WsTickets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsTickets")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

fn hash(ticket: &str) -> [u8; 32] {
    Sha256::digest(ticket.as_bytes()).into()
}

impl WsTickets {
    /// Tickets in `store`, valid for 30 seconds.
    pub fn new(store: impl TicketStore) -> Self {
        Self {
            store: Arc::new(store),
            ttl: Duration::from_secs(30),
            clock: Arc::new(SystemClock),
            revocation: None,
        }
    }

    /// Checks the minting token's revocation again on redemption, so a
    /// ticket minted just before a logout does not outlive it.
    pub fn revocation(mut self, store: impl RevocationStore) -> Self {
        self.revocation = Some(Arc::new(store));
        self
    }

    /// The clock (tests).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// How long a ticket waits to be redeemed.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// A ticket for `principal`, valid for the ticket lifetime or what is
    /// left of the principal's credential, whichever is shorter.
    pub async fn mint(&self, principal: &Principal) -> Result<String, TicketError> {
        if principal.is_anonymous() {
            return Err(TicketError::Anonymous);
        }
        let carried = TicketPrincipal::of(principal).ok_or(TicketError::Anonymous)?;
        let ttl = match principal.expires_at() {
            Some(expires_at) => {
                let left = expires_at.saturating_sub(self.clock.unix_time());
                if left < Duration::from_secs(1) {
                    return Err(TicketError::Expired);
                }
                self.ttl.min(left)
            }
            None => self.ttl,
        };
        let ticket = crate::issue::random_id()
            .map_err(|_| StoreError::Unavailable("the OS random source failed".into()))?;
        self.store.put(hash(&ticket), carried, ttl).await?;
        Ok(ticket)
    }

    /// The principal of a ticket, which is used up; unknown, used and
    /// expired tickets are refused alike.
    pub async fn redeem(&self, ticket: &str) -> Result<Principal, AuthFailure> {
        if ticket.len() != 22 {
            return Err(AuthFailure::InvalidTicket);
        }
        let carried = match self.store.take(hash(ticket)).await {
            Ok(Some(carried)) => carried,
            Ok(None) => return Err(AuthFailure::InvalidTicket),
            Err(_) => return Err(AuthFailure::RevocationUnavailable),
        };
        if carried
            .expires_at
            .is_some_and(|at| at <= self.clock.unix_time().as_secs())
        {
            return Err(AuthFailure::InvalidTicket);
        }
        if let Some(store) = &self.revocation {
            let identity = TokenIdentity {
                jti: carried.jti.as_deref(),
                subject: &carried.subject,
                issued_at: carried.issued_at,
            };
            let status = match store.check(&identity) {
                RevocationCheck::Ready(result) => result,
                RevocationCheck::Pending(future) => future.await,
            };
            match status {
                Ok(RevocationStatus::Valid) => {}
                Ok(RevocationStatus::Revoked) => return Err(AuthFailure::Revoked),
                Ok(RevocationStatus::SignedOut) => return Err(AuthFailure::SignedOut),
                Err(_) => return Err(AuthFailure::RevocationUnavailable),
            }
        }
        Ok(carried.into_principal())
    }
}

#[derive(Debug)]
struct Entry {
    hash: [u8; 32],
    principal: TicketPrincipal,
    until: Nanos,
}

impl Idle for Entry {
    fn is_idle(&self, now: Nanos) -> bool {
        self.until <= now
    }
}

/// Tickets in memory (one process, tests).
#[derive(Clone, Debug)]
pub struct MemoryTicketStore {
    tickets: Arc<KeyedStore<Entry>>,
    clock: Arc<dyn Clock>,
}

impl Default for MemoryTicketStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryTicketStore {
    /// Up to 100,000 outstanding tickets.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// The same store on `clock` (tests).
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        let tickets = match KeyedStore::builder().capacity(100_000).build() {
            Ok(store) => store,
            Err(_) => unreachable!("a keyed store of 100,000 entries always builds"),
        };
        Self {
            tickets: Arc::new(tickets),
            clock,
        }
    }
}

impl TicketStore for MemoryTicketStore {
    fn put(&self, hash: [u8; 32], principal: TicketPrincipal, ttl: Duration) -> StoreFuture<()> {
        let now = self.clock.now();
        let make = || Entry {
            hash,
            principal: principal.clone(),
            until: now.saturating_add(ttl),
        };
        let result = self
            .tickets
            .update(&hash, now, make, |entry| *entry = make())
            .map_err(|_| StoreError::Full);
        Box::pin(std::future::ready(result))
    }

    fn take(&self, hash: [u8; 32]) -> StoreFuture<Option<TicketPrincipal>> {
        let now = self.clock.now();
        let found = self
            .tickets
            .remove(&hash)
            .filter(|entry| entry.until > now && bool::from(entry.hash.ct_eq(&hash)))
            .map(|entry| entry.principal);
        Box::pin(std::future::ready(Ok(found)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::clock::ManualClock;

    #[tokio::test]
    async fn tickets_are_single_use_and_expire() {
        let clock = ManualClock::new();
        let tickets = WsTickets::new(MemoryTicketStore::with_clock(Arc::new(clock.clone())));
        let principal = Principal::builder("u")
            .tenant("t")
            .roles(["r"])
            .scopes(["s"])
            .method(AuthMethod::ApiKey { id: "k1".into() })
            .build();
        let ticket = tickets.mint(&principal).await.unwrap();
        let redeemed = tickets.redeem(&ticket).await.unwrap();
        assert_eq!((redeemed.subject(), redeemed.tenant()), ("u", Some("t")));
        assert_eq!(redeemed.roles(), ["r"]);
        assert_eq!(redeemed.api_key_id(), Some("k1"));
        assert!(matches!(
            tickets.mint(&Principal::anonymous()).await,
            Err(TicketError::Anonymous)
        ));
        assert_eq!(
            tickets.redeem(&ticket).await,
            Err(AuthFailure::InvalidTicket)
        );

        // A credential that ends in 10 s makes a ticket of 10 s, and an
        // expired one none at all.
        let short = Principal::builder("u")
            .method(AuthMethod::ApiKey { id: "k1".into() })
            .expires_at(palisade_core::clock::Clock::unix_time(&clock) + Duration::from_secs(10))
            .build();
        let tickets = tickets.clock(clock.clone());
        let brief = tickets.mint(&short).await.unwrap();
        clock.advance(Duration::from_secs(11));
        assert_eq!(
            tickets.redeem(&brief).await,
            Err(AuthFailure::InvalidTicket)
        );
        assert!(matches!(
            tickets.mint(&short).await,
            Err(TicketError::Expired)
        ));

        let late = tickets.mint(&principal).await.unwrap();
        clock.advance(Duration::from_secs(31));
        assert_eq!(tickets.redeem(&late).await, Err(AuthFailure::InvalidTicket));
        assert_eq!(
            tickets.redeem("short").await,
            Err(AuthFailure::InvalidTicket)
        );
    }
}
