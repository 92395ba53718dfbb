//! Adaptive concurrency limits: the limit follows the latency the service
//! shows, so that it admits what the service can serve without queueing.
//!
//! An algorithm is a pure state machine: it is given one [`Window`] of
//! measurements at a time (how many requests completed, their average
//! latency, how many failed in a way that signals overload, the most
//! requests in flight) and answers with the new limit. It reads no clock and
//! starts no task, so it is tested with plain numbers. The layer
//! ([`LoadShedLayer`](crate::LoadShedLayer)) collects the windows with
//! atomics on the request path and asks the algorithm once per window.
//!
//! - [`Aimd`]: additive increase while the limit is in use, multiplicative
//!   decrease when a window shows overload (failures, or an average latency
//!   over a threshold). Simple and predictable; needs a latency threshold to
//!   react to queueing.
//! - [`Gradient2`]: compares the recent latency with a long-term average;
//!   when recent requests are slower than usual by more than a tolerance,
//!   the limit shrinks in proportion, and it grows by a small queue
//!   allowance otherwise. Needs no threshold.
//!
//! # What is measured
//!
//! A request's latency runs from its admission to the moment the inner
//! service returns the response headers (or an error), read on the layer's
//! injectable [`Clock`](palisade_core::clock::Clock). Not to the end of the
//! body: how long a body takes depends on the client's reading speed and on
//! how long a stream is meant to last, neither of which says anything about
//! queueing in the service, and one slow reader would shrink the limit for
//! everyone. The request's *place* is still held until the body ends, so
//! long streams count against the limit; they just do not skew the signal.
//!
//! ```
//! use palisade_concurrency::adaptive::{Gradient2, LimitAlgorithm, Window};
//! use std::time::Duration;
//!
//! let mut gradient = Gradient2::builder().initial_limit(20).min_limit(2).build()?;
//! let calm = Window { samples: 50, average_latency: Duration::from_millis(10), dropped: 0, max_in_flight: 20, limit: 20 };
//! for _ in 0..20 {
//!     gradient.update(&calm);
//! }
//! // Latency triples while the service is busy: the limit comes down.
//! let slow = Window { average_latency: Duration::from_millis(30), ..calm };
//! let before = gradient.limit();
//! assert!(gradient.update(&slow) < before);
//! # Ok::<(), palisade_core::ConfigError>(())
//! ```

use std::fmt;
use std::time::Duration;

mod aimd;
mod gradient;
pub(crate) mod window;

pub use aimd::{Aimd, AimdBuilder};
pub use gradient::{Gradient2, Gradient2Builder};

/// What happened during one measurement window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Requests that completed (response headers or an error).
    pub samples: u32,
    /// Their average latency, from admission to the response headers.
    pub average_latency: Duration,
    /// Completions that signal overload below this layer: an error from the
    /// inner service, or a 503/504 response.
    pub dropped: u32,
    /// The most requests in flight at once during the window.
    pub max_in_flight: u32,
    /// The limit in force during the window.
    pub limit: u32,
}

/// An adaptive limit algorithm: a pure function of the windows it is given.
pub trait LimitAlgorithm: Send + fmt::Debug + 'static {
    /// The current limit.
    fn limit(&self) -> u32;

    /// Takes one window's measurements and returns the new limit.
    fn update(&mut self, window: &Window) -> u32;
}

impl LimitAlgorithm for Box<dyn LimitAlgorithm> {
    fn limit(&self) -> u32 {
        (**self).limit()
    }

    fn update(&mut self, window: &Window) -> u32 {
        (**self).update(window)
    }
}

/// Checks `min <= initial <= max` and `min >= 1`, shared by the builders.
pub(crate) fn check_bounds(
    min: u32,
    initial: u32,
    max: u32,
) -> Result<(), palisade_core::ConfigError> {
    if min == 0 {
        return Err(palisade_core::ConfigError::invalid(
            "min_limit",
            "must be at least 1, or nothing is ever admitted",
        ));
    }
    if min > max {
        return Err(palisade_core::ConfigError::invalid(
            "max_limit",
            "must not be below min_limit",
        ));
    }
    if !(min..=max).contains(&initial) {
        return Err(palisade_core::ConfigError::invalid(
            "initial_limit",
            "must lie between min_limit and max_limit",
        ));
    }
    Ok(())
}
