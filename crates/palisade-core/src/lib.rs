//! The shared vocabulary of the Palisade layers.
//!
//! Every Palisade layer (authentication, authorization, rate limits,
//! concurrency limits, circuit breakers, redaction, security headers) is its
//! own crate and depends on this one, never on another layer. They cooperate
//! only through request extensions and the types here:
//!
//! - [`Rejection`] and the [renderer](render): why a request is refused, and
//!   one replaceable way to write it: RFC 9457 problem+json for HTTP,
//!   Trailers-Only with `grpc-status` for gRPC.
//! - [`ResponseBody`](body::ResponseBody) and
//!   [`ResponseFuture`](future::ResponseFuture): how a rejecting layer
//!   answers without forcing a body type on the user.
//! - [`ClientIp`](client_ip::ClientIp): the client address, from the peer
//!   address and trusted proxies only.
//! - [`Principal`](principal::Principal): who is calling.
//! - [`KeyFn`](key::KeyFn): what requests are keyed on.
//! - [`KeyedStore`](store::KeyedStore): bounded, sharded per-key state.
//! - [`Clock`](clock::Clock): time, injectable for tests.
//! - [audit events](audit) on `tracing`, target `palisade::audit`.
//! - [`GuardLayer`](guard::GuardLayer): the simplest rejecting layer.
//!
//! # Example
//!
//! A guard that keeps admin routes to an address range, in an axum-style
//! stack with a client address resolved behind a trusted proxy:
//!
//! ```
//! use palisade_core::client_ip::{ClientIpLayer, ClientIpResolver};
//! use palisade_core::guard::{GuardLayer, RequestHead};
//! use palisade_core::Rejection;
//! use tower::ServiceBuilder;
//!
//! let resolver = ClientIpResolver::builder().trust_proxy("10.0.0.0/8").build()?;
//! let admin_only = GuardLayer::new("admin_network", |head: &RequestHead<'_>| {
//!     match head.client_ip() {
//!         Some(client) if client.ip().is_loopback() => Ok(()),
//!         _ => Err(Rejection::forbidden().with_detail("Admin routes are internal.")),
//!     }
//! });
//! let stack = ServiceBuilder::new()
//!     .layer(ClientIpLayer::new(resolver))
//!     .layer(admin_only);
//! # let _ = stack;
//! # Ok::<(), palisade_core::ConfigError>(())
//! ```
//!
//! # Features
//! - `axum`: read axum's `ConnectInfo<SocketAddr>` (peer address) and
//!   `MatchedPath` (route template); `Rejection: IntoResponse`.
//! - `tonic`: read tonic's `TcpConnectInfo`; `From<Rejection> for tonic::Status`.
//! - `serde`: deserialize configuration types.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod audit;
pub mod body;
pub mod client_ip;
pub mod clock;
pub mod error;
pub mod exempt;
pub mod future;
#[doc(hidden)]
pub mod fuzzing;
pub mod guard;
pub mod key;
pub mod principal;
pub mod rejection;
pub mod render;
pub mod store;

pub use error::ConfigError;
pub use rejection::{Rejection, RejectionKind};
