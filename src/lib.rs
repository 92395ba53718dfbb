#![doc = include_str!("../README.md")]
//!
//! # Modules
//!
//! - [`core`]: `palisade-core`, always present.
//! - `auth`: `palisade-auth` (JWT), with the `auth` feature (default).
//! - `headers`: `palisade-headers`, with the `headers` feature (default).
//! - `redact`: `palisade-redact`, with the `redact` feature (default).
//! - `ratelimit`: `palisade-ratelimit`, with the `ratelimit` feature (default).
//! - `concurrency`: `palisade-concurrency` (per-key limits, load shedding,
//!   adaptive limits), with the `concurrency` feature (default).
//! - `breaker`: `palisade-breaker` (circuit breakers), with the `breaker`
//!   feature (default).
//! - `redis`: `palisade-redis`, with the `redis` feature.
//! - [`architecture`], [`benchmarks`] and the guides: the project's documents.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub use palisade_core as core;

#[cfg(feature = "redis")]
pub use palisade_redis as redis;

#[cfg(feature = "ratelimit")]
pub use palisade_ratelimit as ratelimit;

#[cfg(feature = "auth")]
pub use palisade_auth as auth;

#[cfg(feature = "headers")]
pub use palisade_headers as headers;

#[cfg(feature = "redact")]
pub use palisade_redact as redact;

#[cfg(feature = "concurrency")]
pub use palisade_concurrency as concurrency;

#[cfg(feature = "breaker")]
pub use palisade_breaker as breaker;

#[doc = include_str!("../docs/architecture.md")]
pub mod architecture {}

#[doc = include_str!("../docs/benchmarks.md")]
pub mod benchmarks {}

#[cfg(feature = "auth")]
#[doc = include_str!("../docs/auth.md")]
pub mod auth_guide {}

#[cfg(feature = "breaker")]
#[doc = include_str!("../docs/breaker.md")]
pub mod breaker_guide {}

#[cfg(feature = "concurrency")]
#[doc = include_str!("../docs/concurrency.md")]
pub mod concurrency_guide {}
