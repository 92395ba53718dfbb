//! JWT authentication for Tower services: safe defaults, keys from
//! anywhere, and repeated tokens verified for the price of a hash.
//!
//! [`JwtAuthLayer`] reads a token (`Authorization: Bearer`, a cookie, or on
//! WebSocket upgrades a subprotocol entry or query parameter), verifies it
//! with [`JwtVerifier`], and puts a [`Principal`](palisade_core::principal::Principal)
//! in the request extensions. A bad token gets 401 with
//! `WWW-Authenticate: Bearer error="invalid_token"`, the same for every
//! check so a client cannot probe which one failed; the audit event
//! (`palisade::audit`) says which. gRPC requests get `UNAUTHENTICATED`.
//!
//! ```
//! use axum::{Router, routing::get, Extension};
//! use palisade_auth::{Issuer, JwtAuthLayer};
//! use palisade_auth::key::{Algorithm, VerifyingKey};
//! use palisade_core::principal::Principal;
//!
//! # palisade_auth::crypto::CryptoBackend::install_preferred()?;
//! async fn whoami(Extension(principal): Extension<Principal>) -> String {
//!     principal.subject().to_owned()
//! }
//!
//! let auth = JwtAuthLayer::builder()
//!     .issuer(
//!         Issuer::new("https://id.example.com")
//!             .audience("scans-api")
//!             .key(VerifyingKey::hmac(Algorithm::HS256, &[7u8; 32])?),
//!     )
//!     .build()?;
//! let app: Router = Router::new().route("/me", get(whoami)).route_layer(auth);
//! # let _ = app;
//! # Ok::<(), palisade_core::ConfigError>(())
//! ```
//!
//! # What is checked, in order
//! 1. Size: the token (default 8 KiB) and the header (bounded by the `kid`
//!    limit) before any decoding.
//! 2. Three base64url parts; JSON header and claims, parsed once. `crit` is
//!    refused; `jku`, `x5u` and `jwk` are ignored: keys never come from the
//!    token.
//! 3. The issuer, chosen by `iss` (never by trying each), then the key by
//!    `kid`; the header's `alg` must equal the algorithm the key is bound to.
//! 4. The signature.
//! 5. The issuer's rules: `exp` (required), `nbf`, `iat`, audience, `typ`,
//!    maximum age and lifetime, with a leeway (default 60 s).
//! 6. Revocation (`jti` deny-list, per-subject sign-out), on every request,
//!    cached token or not.
//!
//! # Features
//! - `aws-lc-rs` (default) / `rust-crypto`: the signature backend; see
//!   [`crypto`].
//! - `remote` (default): keys from a JWKS URL or OIDC discovery.
//! - `redis`: revocation, refresh-token families and WebSocket tickets in
//!   Redis.
//! - `axum`: the [`Claims`](extract::Claims) extractor.
//! - `serde`: configuration from files.
//! - `mtls`: client certificates as principals (SPIFFE id, subject, DNS
//!   names), `x-forwarded-client-cert` from trusted proxies, and a TLS
//!   acceptor for axum and hyper; see [`mtls`]. With `tonic`
//!   too, certificates are read from tonic's `TlsConnectInfo`.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod api_key;
pub mod authenticate;
pub mod authorize;
mod cache;
pub mod claims;
#[cfg(feature = "serde")]
pub mod config;
pub mod crypto;
#[cfg(feature = "axum")]
pub mod extract;
pub mod failure;
#[doc(hidden)]
pub mod fuzzing;
pub mod issue;
pub mod issuer;
pub mod key;
mod layer;
#[cfg(feature = "mtls")]
pub mod mtls;
#[cfg(feature = "redis")]
mod redis_store;
pub mod refresh;
#[cfg(feature = "remote")]
pub mod remote;
pub mod revocation;
pub mod source;
pub mod ticket;
pub mod verifier;

pub use failure::AuthFailure;
pub use issuer::Issuer;
pub use layer::{JwtAuth, JwtAuthBuilder, JwtAuthLayer, ResponseFuture};
#[cfg(feature = "redis")]
pub use redis_store::{RedisRefreshStore, RedisTicketStore};
pub use verifier::{JwtVerifier, JwtVerifierBuilder, Verification, VerifierStats};
