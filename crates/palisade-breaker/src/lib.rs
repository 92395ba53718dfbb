//! Circuit breakers for Tower services that understand HTTP and gRPC.
//!
//! When an upstream starts failing, a breaker stops sending it calls for a
//! while, answers at once instead (503 + `Retry-After`, gRPC UNAVAILABLE, or
//! a fallback), then lets a few probes through to see if it has recovered.
//!
//! - **State machine** ([`Breaker`]): closed / open / half-open, pure and
//!   clock-injected. Count or time sliding [`Window`]s; failure-rate and
//!   slow-call-rate thresholds over a minimum number of calls;
//!   consecutive-failures mode; a bounded number of half-open probes whose
//!   slots come back when a probe is dropped; the open duration growing with
//!   jittered exponential backoff, capped ([`BreakerPolicy`]). The closed
//!   path is lock-free: one atomic load to admit, a few atomic adds to
//!   record.
//! - **Outcomes** ([`Classify`]): success, failure or ignored. 5xx and inner
//!   errors fail; 4xx and cancelled calls are ignored; gRPC status is read
//!   from Trailers-Only headers or from the trailers at the end of the body;
//!   slow calls (including calls an outer timeout dropped) are counted.
//! - **Per key** ([`CircuitBreakerLayerBuilder::per_key`]): one breaker per
//!   route template, tenant, host header or any core key, with bounded
//!   cardinality.
//! - **Control** ([`BreakerHandle`]): read state, force open or closed,
//!   reset, subscribe to [`StateChange`]s; transitions are audit events
//!   (`palisade::audit`), and metrics with the `metrics` feature.
//!
//! ```
//! use axum::{Router, routing::get};
//! use palisade_breaker::{BreakerPolicy, CircuitBreakerLayer, Window};
//! use palisade_core::key::KeyFn;
//! use std::time::Duration;
//!
//! # fn app() -> Result<Router, palisade_core::ConfigError> {
//! let policy = BreakerPolicy::builder()
//!     .window(Window::time(Duration::from_secs(30)))
//!     .failure_rate(0.5)
//!     .slow_calls(Duration::from_secs(2), 0.8)
//!     .minimum_calls(20)
//!     .build()?;
//! let breaker = CircuitBreakerLayer::builder("upstream")
//!     .policy(policy)
//!     .per_key(KeyFn::RouteTemplate)
//!     .build()?;
//! Ok(Router::new()
//!     .route("/orders/{id}", get(|| async { "order" }))
//!     .route_layer(breaker))
//! # }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

mod classify;
#[cfg(feature = "serde")]
pub mod config;
mod fallback;
mod future;
mod handle;
mod layer;
mod machine;
#[cfg(feature = "metrics")]
mod metrics;
mod policy;
mod window;

pub use classify::{Classify, ClassifyFn, DefaultClassifier, Judgement, classify_fn};
pub use fallback::{Fallback, NoFallback, Oneshot, ServiceFallback};
pub use future::{BreakerBody, ResponseFuture};
pub use handle::{BreakerHandle, StateChange};
pub use layer::{CircuitBreaker, CircuitBreakerLayer, CircuitBreakerLayerBuilder};
pub use machine::{Acquired, Breaker, Outcome, State, Ticket, Transition};
pub use policy::{BreakerPolicy, BreakerPolicyBuilder};
pub use window::{Totals, Window};
