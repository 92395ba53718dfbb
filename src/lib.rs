#![doc = include_str!("../README.md")]
//!
//! # Modules
//!
//! - [`core`]: `palisade-core`, always present.
//! - `redis`: `palisade-redis`, with the `redis` feature.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub use palisade_core as core;

#[cfg(feature = "redis")]
pub use palisade_redis as redis;
