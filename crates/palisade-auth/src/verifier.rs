//! The JWT verifier: size limits, one parse of header and claims, the
//! issuer chosen by `iss`, the key by `kid` and bound algorithm, the
//! signature, the issuer's rules, then the cache and revocation.
//!
//! It is what [`JwtAuthLayer`](crate::JwtAuthLayer) runs per request, and
//! can be used alone (a WebSocket handshake, a handler). With static keys
//! and in-memory revocation [`JwtVerifier::verify_token`] answers at once;
//! remote keys or a Redis revocation store may need
//! [`JwtVerifier::verify`] (async), so a synchronous tonic interceptor is
//! the wrong place for it: use the layer.
//!
//! ```
//! use palisade_auth::{Issuer, JwtVerifier};
//! use palisade_auth::key::{Algorithm, VerifyingKey};
//!
//! # palisade_auth::crypto::CryptoBackend::install_preferred()?;
//! let verifier = JwtVerifier::builder()
//!     .issuer(
//!         Issuer::new("https://id.example.com")
//!             .audience("api")
//!             .key(VerifyingKey::hmac(Algorithm::HS256, &[7u8; 32])?),
//!     )
//!     .build()?;
//! # let _ = verifier;
//! # Ok::<(), palisade_core::ConfigError>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use palisade_core::ConfigError;
use palisade_core::clock::{Clock, Nanos, SystemClock};
use palisade_core::principal::Principal;
use serde_json::{Map, Value};

use crate::cache::{TokenCache, TokenDigest, Verified};
use crate::claims::{self, ClaimMapping};
use crate::failure::AuthFailure;
use crate::issuer::{Issuer, KeySource, Rules};
use crate::key::{Algorithm, KeySet, Lookup};
#[cfg(feature = "remote")]
use crate::remote::RemoteKeys;
use crate::revocation::{
    RevocationCheck, RevocationFailure, RevocationStatus, RevocationStore, TokenIdentity,
};

/// A verification that finished, or one that waits for keys or a store.
pub enum Verification {
    /// Finished without waiting.
    Done(Result<Principal, AuthFailure>),
    /// Waits for a key refresh or a revocation store.
    Pending(Pin<Box<dyn Future<Output = Result<Principal, AuthFailure>> + Send>>),
}

impl fmt::Debug for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verification::Done(result) => f.debug_tuple("Done").field(result).finish(),
            Verification::Pending(_) => f.write_str("Pending"),
        }
    }
}

impl Verification {
    /// Waits for the result.
    pub async fn wait(self) -> Result<Principal, AuthFailure> {
        match self {
            Verification::Done(result) => result,
            Verification::Pending(future) => future.await,
        }
    }
}

/// Counters of a verifier, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifierStats {
    /// Tokens answered from the cache.
    pub cache_hits: u64,
    /// Tokens whose signature was checked.
    pub signature_checks: u64,
    /// Revocation checks the store could not answer.
    pub revocation_errors: u64,
    /// Of those, tokens let through because the policy is fail-open.
    pub revocation_failed_open: u64,
    /// Remote key fetches started.
    pub key_fetches: u64,
}

#[derive(Default)]
struct Counters {
    cache_hits: AtomicU64,
    signature_checks: AtomicU64,
    revocation_errors: AtomicU64,
    revocation_failed_open: AtomicU64,
}

enum Keys {
    Static(KeySet),
    #[cfg(feature = "remote")]
    Remote(Arc<RemoteKeys>),
}

struct IssuerState {
    index: u32,
    name: Arc<str>,
    rules: Rules,
    mapping: Option<ClaimMapping>,
    keys: Keys,
}

impl IssuerState {
    #[inline]
    fn generation(&self) -> u64 {
        match &self.keys {
            Keys::Static(_) => 0,
            #[cfg(feature = "remote")]
            Keys::Remote(remote) => remote.generation(),
        }
    }
}

struct Inner {
    issuers: Vec<Arc<IssuerState>>,
    by_name: HashMap<Arc<str>, usize>,
    any_issuer: Option<usize>,
    mapping: ClaimMapping,
    max_token_bytes: usize,
    max_kid_len: usize,
    max_header_b64: usize,
    cache: Option<TokenCache>,
    revocation: Option<Arc<dyn RevocationStore>>,
    revocation_failure: RevocationFailure,
    clock: Arc<dyn Clock>,
    counters: Counters,
}

/// Verifies JWTs of one or more issuers. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct JwtVerifier {
    inner: Arc<Inner>,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.inner.issuers.iter().map(|i| &*i.name).collect();
        f.debug_struct("JwtVerifier")
            .field("issuers", &names)
            .field("max_token_bytes", &self.inner.max_token_bytes)
            .field("cache", &self.inner.cache.is_some())
            .field("revocation", &self.inner.revocation.is_some())
            .finish_non_exhaustive()
    }
}

/// Builds a [`JwtVerifier`].
pub struct JwtVerifierBuilder {
    issuers: Vec<Issuer>,
    mapping: ClaimMapping,
    max_token_bytes: usize,
    max_kid_len: usize,
    cache_capacity: usize,
    revocation: Option<Arc<dyn RevocationStore>>,
    revocation_failure: RevocationFailure,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for JwtVerifierBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifierBuilder")
            .field("issuers", &self.issuers.len())
            .finish_non_exhaustive()
    }
}

impl Default for JwtVerifierBuilder {
    fn default() -> Self {
        Self {
            issuers: Vec::new(),
            mapping: ClaimMapping::default(),
            max_token_bytes: 8 * 1024,
            max_kid_len: 256,
            cache_capacity: 100_000,
            revocation: None,
            revocation_failure: RevocationFailure::FailClosed,
            clock: Arc::new(SystemClock),
        }
    }
}

impl JwtVerifierBuilder {
    /// Trusts an issuer. Each token's `iss` picks its issuer; no token is
    /// tried against several.
    pub fn issuer(mut self, issuer: Issuer) -> Self {
        self.issuers.push(issuer);
        self
    }

    /// Where subject, tenant, roles and scopes are read from.
    pub fn claim_mapping(mut self, mapping: ClaimMapping) -> Self {
        self.mapping = mapping;
        self
    }

    /// The longest token accepted, checked before any parsing (default 8 KiB).
    pub fn max_token_bytes(mut self, bytes: usize) -> Self {
        self.max_token_bytes = bytes;
        self
    }

    /// The longest `kid` accepted (default 256 bytes).
    pub fn max_kid_len(mut self, len: usize) -> Self {
        self.max_kid_len = len;
        self
    }

    /// How many verified tokens are remembered (default 100,000; 0 turns the
    /// cache off).
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// Checks every token against a revocation store.
    pub fn revocation(mut self, store: impl RevocationStore) -> Self {
        self.revocation = Some(Arc::new(store));
        self
    }

    /// What to do when the revocation store cannot answer (default:
    /// fail closed, 503).
    pub fn on_revocation_failure(mut self, policy: RevocationFailure) -> Self {
        self.revocation_failure = policy;
        self
    }

    /// The clock (tests use a manual one).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Checks the configuration and the signature backend.
    pub fn build(self) -> Result<JwtVerifier, ConfigError> {
        crate::crypto::ensure_ready()?;
        if self.issuers.is_empty() {
            return Err(ConfigError::invalid("issuer", "no issuer is configured"));
        }
        if self.max_token_bytes < 64 {
            return Err(ConfigError::invalid(
                "max_token_bytes",
                "must be at least 64",
            ));
        }
        let mut issuers = Vec::with_capacity(self.issuers.len());
        let mut by_name = HashMap::new();
        let mut any_issuer = None;
        for (index, issuer) in self.issuers.into_iter().enumerate() {
            issuer.validate()?;
            if issuer.any_issuer {
                if any_issuer.replace(index).is_some() {
                    return Err(ConfigError::invalid(
                        "issuer",
                        "only one issuer may accept any `iss`",
                    ));
                }
            } else if by_name.insert(issuer.name.clone(), index).is_some() {
                return Err(ConfigError::invalid(
                    "issuer",
                    format!("issuer {:?} is configured twice", issuer.name),
                ));
            }
            let keys = match issuer.keys {
                KeySource::Static(keys) => Keys::Static(KeySet::new(keys)?),
                #[cfg(feature = "remote")]
                KeySource::JwksUrl(url, options) => {
                    Keys::Remote(RemoteKeys::jwks(url, options, self.clock.clone())?)
                }
                #[cfg(feature = "remote")]
                KeySource::Discovery(options) => Keys::Remote(RemoteKeys::discovery(
                    &issuer.name,
                    options,
                    self.clock.clone(),
                )?),
            };
            issuers.push(Arc::new(IssuerState {
                index: u32::try_from(index).unwrap_or(u32::MAX),
                name: issuer.name,
                rules: issuer.rules,
                mapping: issuer.mapping,
                keys,
            }));
        }
        let cache = match self.cache_capacity {
            0 => None,
            capacity => Some(TokenCache::new(capacity)?),
        };
        Ok(JwtVerifier {
            inner: Arc::new(Inner {
                issuers,
                by_name,
                any_issuer,
                mapping: self.mapping,
                max_token_bytes: self.max_token_bytes,
                max_kid_len: self.max_kid_len,
                // A header is a few fields; room for the longest kid, in
                // base64, and 1 KiB for the rest.
                max_header_b64: self
                    .max_kid_len
                    .saturating_mul(4)
                    .div_ceil(3)
                    .saturating_add(1024),
                cache,
                revocation: self.revocation,
                revocation_failure: self.revocation_failure,
                clock: self.clock,
                counters: Counters::default(),
            }),
        })
    }
}

/// The header fields we read. Unknown fields (`jku`, `x5u`, `jwk`, ...) are
/// ignored: keys never come from the token itself.
#[derive(serde::Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    kid: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    typ: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
}

enum Step {
    Verified(Verified),
    Failed(AuthFailure),
    #[cfg(feature = "remote")]
    Refresh(Arc<RemoteKeys>),
}

impl JwtVerifier {
    /// A builder.
    pub fn builder() -> JwtVerifierBuilder {
        JwtVerifierBuilder::default()
    }

    /// Verifies a token; finishes at once unless keys must be fetched or the
    /// revocation store is remote.
    pub fn verify_token(&self, token: &str) -> Verification {
        let inner = &*self.inner;
        if token.len() > inner.max_token_bytes {
            return Verification::Done(Err(AuthFailure::TooLarge));
        }
        let now = inner.clock.now();
        let digest = inner.cache.as_ref().map(|_| TokenDigest::of(token));
        if let (Some(cache), Some(digest)) = (&inner.cache, &digest) {
            let hit = cache.get(digest, now, |index| {
                inner
                    .issuers
                    .get(index as usize)
                    .map_or(u64::MAX, |issuer| issuer.generation())
            });
            if let Some(verified) = hit {
                inner.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
                return self.check_revocation(verified);
            }
        }
        match self.verify_uncached(token, now, digest.as_ref(), true) {
            Step::Verified(verified) => self.check_revocation(verified),
            Step::Failed(failure) => Verification::Done(Err(failure)),
            #[cfg(feature = "remote")]
            Step::Refresh(remote) => match remote.refresh_for_unknown_kid() {
                None => Verification::Done(Err(AuthFailure::UnknownKey)),
                Some(refreshed) => {
                    let this = self.clone();
                    let token = token.to_owned();
                    Verification::Pending(Box::pin(async move {
                        refreshed.await;
                        let now = this.inner.clock.now();
                        match this.verify_uncached(&token, now, digest.as_ref(), false) {
                            Step::Verified(verified) => {
                                this.check_revocation(verified).wait().await
                            }
                            Step::Failed(failure) => Err(failure),
                            Step::Refresh(_) => Err(AuthFailure::UnknownKey),
                        }
                    }))
                }
            },
        }
    }

    /// Verifies a token, waiting when needed.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthFailure> {
        self.verify_token(token).wait().await
    }

    /// The verifier's counters.
    pub fn stats(&self) -> VerifierStats {
        let counters = &self.inner.counters;
        #[cfg(feature = "remote")]
        let key_fetches = self
            .inner
            .issuers
            .iter()
            .map(|issuer| match &issuer.keys {
                Keys::Remote(remote) => remote.fetches(),
                Keys::Static(_) => 0,
            })
            .sum();
        #[cfg(not(feature = "remote"))]
        let key_fetches = 0;
        VerifierStats {
            cache_hits: counters.cache_hits.load(Ordering::Relaxed),
            signature_checks: counters.signature_checks.load(Ordering::Relaxed),
            revocation_errors: counters.revocation_errors.load(Ordering::Relaxed),
            revocation_failed_open: counters.revocation_failed_open.load(Ordering::Relaxed),
            key_fetches,
        }
    }

    /// The number of tokens in the cache.
    pub fn cached_tokens(&self) -> usize {
        self.inner.cache.as_ref().map_or(0, TokenCache::len)
    }

    /// The clock the verifier reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Starts remote key refresh tasks if none runs (the verifier was built
    /// outside a tokio runtime, or in one that has ended). The layer calls
    /// it on each request (one atomic load); call it yourself when using
    /// the verifier without the layer.
    #[inline]
    pub fn ensure_refreshing(&self) {
        #[cfg(feature = "remote")]
        for issuer in &self.inner.issuers {
            if let Keys::Remote(remote) = &issuer.keys {
                remote.ensure_started();
            }
        }
    }

    fn verify_uncached(
        &self,
        token: &str,
        now: Nanos,
        digest: Option<&TokenDigest>,
        may_refresh: bool,
    ) -> Step {
        let inner = &*self.inner;
        // Header and claims, each base64url; then the signature. A fourth dot
        // (JWE has five parts) is refused.
        let Some((header_b64, rest)) = token.split_once('.') else {
            return Step::Failed(AuthFailure::Malformed);
        };
        let Some((payload_b64, signature_b64)) = rest.split_once('.') else {
            return Step::Failed(AuthFailure::Malformed);
        };
        if signature_b64.contains('.') || signature_b64.is_empty() {
            return Step::Failed(if signature_b64.is_empty() {
                AuthFailure::BadSignature
            } else {
                AuthFailure::Malformed
            });
        }
        // A header is a few fields; a long one can only carry a long kid or
        // junk, and is refused before it is decoded.
        if header_b64.len() > inner.max_header_b64 {
            return Step::Failed(AuthFailure::KidTooLong);
        }
        let Ok(header_json) = URL_SAFE_NO_PAD.decode(header_b64) else {
            return Step::Failed(AuthFailure::Malformed);
        };
        // RFC 7515 §5.2: the header is UTF-8 JSON and an object. serde
        // would fill the struct from an array too, and would not check the
        // UTF-8 of fields it skips.
        let Ok(header_text) = std::str::from_utf8(&header_json) else {
            return Step::Failed(AuthFailure::Malformed);
        };
        if !header_text.trim_start().starts_with('{') {
            return Step::Failed(AuthFailure::Malformed);
        }
        let Ok(header) = serde_json::from_str::<Header<'_>>(header_text) else {
            return Step::Failed(AuthFailure::Malformed);
        };
        if header.crit.is_some() {
            return Step::Failed(AuthFailure::CriticalHeader);
        }
        let kid = header.kid.as_deref();
        if kid.is_some_and(|kid| kid.len() > inner.max_kid_len) {
            return Step::Failed(AuthFailure::KidTooLong);
        }
        let Ok(algorithm) = Algorithm::from_str(&header.alg) else {
            return Step::Failed(AuthFailure::UnsupportedAlgorithm);
        };
        let Ok(payload) = URL_SAFE_NO_PAD.decode(payload_b64) else {
            return Step::Failed(AuthFailure::Malformed);
        };
        let Ok(claims) = serde_json::from_slice::<Map<String, Value>>(&payload) else {
            return Step::Failed(AuthFailure::Malformed);
        };
        let issuer = match claims::issuer(&claims) {
            Err(failure) => return Step::Failed(failure),
            Ok(iss) => match iss
                .and_then(|iss| inner.by_name.get(iss))
                .or(inner.any_issuer.as_ref())
            {
                Some(&index) => &inner.issuers[index],
                None => return Step::Failed(AuthFailure::UnknownIssuer),
            },
        };
        let generation = issuer.generation();
        #[cfg(feature = "remote")]
        let remote_keys;
        let keys: &KeySet = match &issuer.keys {
            Keys::Static(keys) => keys,
            #[cfg(feature = "remote")]
            Keys::Remote(remote) => match remote.keys() {
                Some(keys) => {
                    remote_keys = keys;
                    &remote_keys
                }
                None => return Step::Failed(AuthFailure::KeysUnavailable),
            },
        };
        let key = match keys.find(kid, algorithm) {
            Lookup::Found(key) => key,
            Lookup::WrongAlgorithm => return Step::Failed(AuthFailure::AlgorithmMismatch),
            Lookup::Unknown => {
                #[cfg(feature = "remote")]
                if let (true, Keys::Remote(remote)) = (may_refresh, &issuer.keys) {
                    return Step::Refresh(remote.clone());
                }
                let _ = may_refresh;
                return Step::Failed(AuthFailure::UnknownKey);
            }
        };
        if key.algorithm() != algorithm {
            return Step::Failed(AuthFailure::AlgorithmMismatch);
        }
        inner
            .counters
            .signature_checks
            .fetch_add(1, Ordering::Relaxed);
        let message = &token[..header_b64.len() + 1 + payload_b64.len()];
        match jsonwebtoken::crypto::verify(
            signature_b64,
            message.as_bytes(),
            key.decoding_key(),
            algorithm,
        ) {
            Ok(true) => {}
            _ => return Step::Failed(AuthFailure::BadSignature),
        }
        let unix_now = inner.clock.unix_time().as_secs();
        let registered = match claims::registered(&claims) {
            Ok(registered) => registered,
            Err(failure) => return Step::Failed(failure),
        };
        let exp = match issuer.rules.check_registered(
            &registered,
            &claims,
            header.typ.as_deref(),
            unix_now,
        ) {
            Ok(exp) => exp,
            Err(failure) => return Step::Failed(failure),
        };
        let jti = claims::jti(&claims).map(Arc::<str>::from);
        let issued_at = registered.iat;
        let mapping = issuer.mapping.as_ref().unwrap_or(&inner.mapping);
        // The key's id, not the token's: a key without an id may have
        // served a token naming any kid.
        let principal = match mapping.principal(claims, &issuer.name, key.kid(), exp) {
            Ok(principal) => principal,
            Err(failure) => return Step::Failed(failure),
        };
        let verified = Verified {
            principal,
            jti,
            issued_at,
        };
        if let (Some(cache), Some(digest)) = (&inner.cache, digest) {
            // Remembered until `exp`, never into the leeway.
            // Never past `exp`, nor past the moment `max_age` would refuse
            // the token: a hit does not run the issuer's rules again.
            let mut until = exp;
            if let (Some(max_age), Some(iat)) = (issuer.rules.max_age, issued_at) {
                until = until.min(
                    iat.saturating_add(max_age)
                        .saturating_add(issuer.rules.leeway),
                );
            }
            if until > unix_now {
                let deadline = now.saturating_add(Duration::from_secs(until - unix_now));
                cache.insert(digest, now, deadline, issuer.index, generation, &verified);
            }
        }
        Step::Verified(verified)
    }

    fn check_revocation(&self, verified: Verified) -> Verification {
        let Some(store) = &self.inner.revocation else {
            return Verification::Done(Ok(verified.principal));
        };
        let identity = TokenIdentity {
            jti: verified.jti.as_deref(),
            subject: verified.principal.subject(),
            issued_at: verified.issued_at,
        };
        match store.check(&identity) {
            RevocationCheck::Ready(result) => {
                Verification::Done(self.conclude_revocation(result, verified.principal))
            }
            RevocationCheck::Pending(future) => {
                let this = self.clone();
                Verification::Pending(Box::pin(async move {
                    let result = future.await;
                    this.conclude_revocation(result, verified.principal)
                }))
            }
        }
    }

    fn conclude_revocation(
        &self,
        result: Result<RevocationStatus, crate::revocation::RevocationError>,
        principal: Principal,
    ) -> Result<Principal, AuthFailure> {
        match result {
            Ok(RevocationStatus::Valid) => Ok(principal),
            Ok(RevocationStatus::Revoked) => Err(AuthFailure::Revoked),
            Ok(RevocationStatus::SignedOut) => Err(AuthFailure::SignedOut),
            Err(error) => {
                let counters = &self.inner.counters;
                counters.revocation_errors.fetch_add(1, Ordering::Relaxed);
                match self.inner.revocation_failure {
                    RevocationFailure::FailClosed => {
                        tracing::warn!(target: palisade_core::audit::TARGET, %error, policy = "fail_closed", "revocation store unavailable; token refused");
                        Err(AuthFailure::RevocationUnavailable)
                    }
                    RevocationFailure::FailOpen => {
                        counters
                            .revocation_failed_open
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(target: palisade_core::audit::TARGET, %error, policy = "fail_open", "revocation store unavailable; token let through");
                        Ok(principal)
                    }
                }
            }
        }
    }
}
