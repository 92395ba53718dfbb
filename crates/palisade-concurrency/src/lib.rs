//! Concurrency limits for Tower services: per-key limits, load shedding
//! with priority classes, and adaptive limits.
//!
//! These layers replace a fixed global concurrency limit, a load-shedding
//! wrapper and hand-written semaphores, and keep the contracts every
//! Palisade layer keeps:
//!
//! - **One state per layer, not per route.** The state is behind an `Arc`;
//!   `layer()` clones the `Arc`, so one layer given to axum's `route_layer`
//!   (which calls `layer()` once per route) is one limit across its routes.
//! - **A place is held until the response body ends**, not until the
//!   headers are sent: the permit travels into the response body
//!   ([`PermitBody`]) and is given back, exactly once, at its last frame, or
//!   when the body, the response future or the connection is dropped, or
//!   when the inner service fails.
//! - **Refusals are responses**, rendered by core's renderer: 429 with
//!   `Retry-After` for a per-client limit, 503 with `Retry-After` for a
//!   global limit or shed load, gRPC `RESOURCE_EXHAUSTED` / `UNAVAILABLE`
//!   for gRPC requests. The service's error is the inner service's error
//!   (no boxed error for tonic to choke on), and `poll_ready` only asks the
//!   inner service, so a `Buffer` in front is never poisoned.
//!
//! The layers:
//!
//! - [`ConcurrencyLimitLayer`]: at most N in flight per key (client address,
//!   subject, tenant, API key id, route, from `palisade_core::key::KeyFn`),
//!   refused at once or after a bounded FIFO wait.
//! - [`LoadShedLayer`]: one global capacity and ordered priority classes
//!   (by path prefix, role or header), each admitted while the total in
//!   flight is below its share of the capacity: lower classes are shed
//!   first, and the top of the capacity stays for critical traffic. The capacity is fixed or
//!   adaptive ([`adaptive::Aimd`], [`adaptive::Gradient2`]), readable
//!   through a [`LimitHandle`] and exported as a gauge (feature `metrics`).
//!
//! ```
//! use axum::{Router, routing::get};
//! use palisade_concurrency::adaptive::Gradient2;
//! use palisade_concurrency::{ConcurrencyLimitLayer, LoadShedLayer};
//! use palisade_core::key::KeyFn;
//!
//! # fn app() -> Result<Router, palisade_core::ConfigError> {
//! // Outermost: an adaptive global limit that sheds bulk traffic first.
//! let shed = LoadShedLayer::builder()
//!     .adaptive(Gradient2::builder().initial_limit(100).min_limit(10).max_limit(2_000).build()?)
//!     .class("critical", 100)
//!     .class("default", 90)
//!     .class("bulk", 50)
//!     .route_prefix("/api/checkout", "critical")
//!     .route_prefix("/api/export", "bulk")
//!     .exempt_path("/health")
//!     .build()?;
//! // At most 8 requests per client address at once.
//! let per_client = ConcurrencyLimitLayer::builder()
//!     .key(KeyFn::ClientIp)
//!     .max_in_flight(8)
//!     .build()?;
//! let handle = shed.handle(); // the current limit, for a status page
//! # let _ = handle;
//! Ok(Router::new()
//!     .route("/api/checkout", get(|| async { "paid" }))
//!     .route("/api/export", get(|| async { "csv" }))
//!     .route("/health", get(|| async { "ok" }))
//!     .layer(per_client)
//!     .layer(shed))
//! # }
//! ```
//!
//! # Features
//! - `metrics`: the current limit of each [`LoadShedLayer`] as the gauge
//!   [`LIMIT_GAUGE`] (`palisade_concurrency_limit{layer="..."}`), through
//!   the `metrics` facade.
//! - `serde`: [`config`] types to build the layers from files.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod adaptive;
mod body;
#[cfg(feature = "serde")]
pub mod config;
mod future;
mod keyed;
mod limit;
mod permit;
mod shed;

pub use body::PermitBody;
pub use future::ResponseFuture;
pub use limit::{
    ConcurrencyLimit, ConcurrencyLimitLayer, ConcurrencyLimitLayerBuilder, MissingKey,
};
pub use shed::{LIMIT_GAUGE, LimitHandle, LoadShed, LoadShedLayer, LoadShedLayerBuilder};
