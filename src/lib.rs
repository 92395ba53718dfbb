//! Palisade: security and resilience layers for Tower services.
//!
//! This umbrella crate re-exports the Palisade crates behind features, so one
//! dependency brings the whole product; each layer is also its own crate,
//! usable alone.
//!
//! | module | crate | what it does |
//! |--------|-------|--------------|
//! | [`core`] | `palisade-core` | rejections and their rendering, client addresses, principals, keys, clocks, keyed stores, audit events |
//! | `redis` | `palisade-redis` (feature `redis`) | Redis plumbing for distributed stores |
//!
//! ```
//! use palisade::core::{Rejection, RejectionKind};
//! assert_eq!(Rejection::forbidden().kind(), RejectionKind::Forbidden);
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

pub use palisade_core as core;

#[cfg(feature = "redis")]
pub use palisade_redis as redis;
