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
//! use palisade_core::principal::Principal;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let tickets = WsTickets::new(MemoryTicketStore::new());
//! let ticket = tickets.mint(&Principal::builder("user-42").roles(["viewer"]).build()).await.unwrap();
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
use crate::revocation::{RevocationError as StoreError, StoreFuture};

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
}

impl TicketPrincipal {
    fn of(principal: &Principal) -> Self {
        Self {
            subject: principal.subject().to_owned(),
            tenant: principal.tenant().map(str::to_owned),
            roles: principal.roles().to_vec(),
            scopes: principal.scopes().to_vec(),
            expires_at: principal.expires_at().map(|at| at.as_secs()),
        }
    }

    fn into_principal(self, method: AuthMethod) -> Principal {
        let mut builder = Principal::builder(self.subject)
            .roles(self.roles)
            .scopes(self.scopes)
            .method(method);
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

/// Mints and redeems WebSocket tickets.
#[derive(Clone)]
pub struct WsTickets {
    store: Arc<dyn TicketStore>,
    ttl: Duration,
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
        }
    }

    /// How long a ticket waits to be redeemed.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// A ticket for `principal`.
    pub async fn mint(&self, principal: &Principal) -> Result<String, StoreError> {
        let ticket = crate::issue::random_id()
            .map_err(|_| StoreError::Unavailable("the OS random source failed".into()))?;
        self.store
            .put(hash(&ticket), TicketPrincipal::of(principal), self.ttl)
            .await?;
        Ok(ticket)
    }

    /// The principal of a ticket, which is used up; unknown, used and
    /// expired tickets are refused alike.
    pub async fn redeem(&self, ticket: &str) -> Result<Principal, AuthFailure> {
        if ticket.len() != 22 {
            return Err(AuthFailure::InvalidTicket);
        }
        match self.store.take(hash(ticket)).await {
            Ok(Some(principal)) => Ok(principal.into_principal(AuthMethod::Jwt {
                issuer: "ws-ticket".to_owned(),
                kid: None,
            })),
            Ok(None) => Err(AuthFailure::InvalidTicket),
            Err(_) => Err(AuthFailure::RevocationUnavailable),
        }
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
            .build();
        let ticket = tickets.mint(&principal).await.unwrap();
        let redeemed = tickets.redeem(&ticket).await.unwrap();
        assert_eq!((redeemed.subject(), redeemed.tenant()), ("u", Some("t")));
        assert_eq!(redeemed.roles(), ["r"]);
        assert_eq!(
            tickets.redeem(&ticket).await,
            Err(AuthFailure::InvalidTicket)
        );

        let late = tickets.mint(&principal).await.unwrap();
        clock.advance(Duration::from_secs(31));
        assert_eq!(tickets.redeem(&late).await, Err(AuthFailure::InvalidTicket));
        assert_eq!(
            tickets.redeem("short").await,
            Err(AuthFailure::InvalidTicket)
        );
    }
}
