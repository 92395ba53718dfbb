//! Keyed GCRA rate limiting for Tower services.
//!
//! A [`RateLimitLayer`] holds one or more named [`RateLimitPolicy`]s, each
//! with a key (client address, subject, tenant, API key id, route, method,
//! or tuples of these, from `palisade_core::key::KeyFn`) and a [`Quota`],
//! fixed or chosen by the principal's tier. Every policy of a request is
//! decided together: the request passes only if every enforced policy has
//! room, and only then is any charged.
//!
//! - Quotas read as they mean: `Quota::per_minute(100).burst(20)` is 100 per
//!   minute with bursts of 20. Requests may cost more than 1 ([`Weight`]).
//! - Responses carry the IETF `RateLimit-Policy` and `RateLimit` fields
//!   (`"per_ip";q=100;w=60`, `"per_ip";r=37;t=12`), optionally the legacy
//!   `X-RateLimit-*`; refusals are 429 with `Retry-After` in whole seconds
//!   (never 0) and a problem+json body of type `quota-exceeded` listing the
//!   violated policies, or gRPC `RESOURCE_EXHAUSTED`.
//! - Exemptions by path, method or client network; shadow mode and partial
//!   enforcement per policy; response-dependent charging (count only failed
//!   logins).
//! - State is bounded ([`MemoryStore`]): a hard cap on keys, idle keys
//!   evicted on the request path (a key whose theoretical arrival time has
//!   passed equals a new key), memory given back; 36 bytes per key at a
//!   million keys.
//!
//! ```
//! use axum::{Router, routing::get};
//! use palisade_core::key::KeyFn;
//! use palisade_ratelimit::{Quota, RateLimitLayer, RateLimitPolicy};
//!
//! # fn app() -> Result<Router, palisade_core::ConfigError> {
//! let per_ip = RateLimitPolicy::builder("per_ip", KeyFn::ClientIp, Quota::per_minute(100).burst(20)?)
//!     .exempt_path("/health")
//!     .exempt_method(http::Method::OPTIONS)
//!     .build()?;
//! let limits = RateLimitLayer::builder().policy(per_ip).build()?;
//! Ok(Router::new()
//!     .route("/health", get(|| async { "ok" }))
//!     .route("/api", get(|| async { "data" }))
//!     .layer(limits))
//! # }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "serde")]
pub mod config;
mod future;
pub mod gcra;
pub mod headers;
mod layer;
mod memory;
mod policy;
#[cfg(feature = "redis")]
mod redis_store;

pub use future::ResponseFuture;
pub use gcra::Quota;
pub use headers::HeaderOptions;
pub use layer::{RateLimit, RateLimitLayer, RateLimitLayerBuilder};
pub use memory::{MemoryStore, MemoryStoreBuilder, Namespace};
/// Redis failure policies, for [`RedisStoreBuilder::on_failure`].
#[cfg(feature = "redis")]
pub use palisade_redis::FailurePolicy;
pub use policy::{
    ChargePredicate, ExemptPredicate, MissingKey, RateLimitPolicy, RateLimitPolicyBuilder, TierBy,
    TierLimit, TierSelector, Tiers, Weight,
};
#[cfg(feature = "redis")]
pub use redis_store::{RedisStore, RedisStoreBuilder, TimeSource};
