//! Gradient2: the limit follows the ratio of long-term to recent latency.

use palisade_core::ConfigError;

use super::{LimitAlgorithm, Window, check_bounds};

/// A gradient limit in the manner of Gradient2.
///
/// The algorithm keeps a long-term latency: the plain average of the first
/// windows, then an exponential average over `long_window` windows. Each
/// window's average latency is compared with it:
///
/// - `gradient = clamp(tolerance × long / recent, 0.5, 1)`: 1 while recent
///   requests are no slower than `tolerance` times the usual, less when
///   they queue, and never below one half per window;
/// - `target = limit × gradient + queue_size`: the limit shrinks with the
///   gradient and otherwise grows by a small allowance for queueing;
/// - `limit = limit × (1 − smoothing) + target × smoothing`, clamped to the
///   bounds.
///
/// When less than half the limit was in use the limit is left alone: a
/// service that is not busy says nothing about what it could take. And when
/// the long-term latency is more than twice the recent one (it was raised by
/// a past overload), it decays by 5 % per window so that it cannot hold the
/// limit high for long.
///
/// ```
/// use palisade_concurrency::adaptive::{Gradient2, LimitAlgorithm};
///
/// let gradient = Gradient2::builder().initial_limit(50).min_limit(5).max_limit(500).build()?;
/// assert_eq!(gradient.limit(), 50);
/// # Ok::<(), palisade_core::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Gradient2 {
    estimate: f64,
    min: u32,
    max: u32,
    smoothing: f64,
    tolerance: f64,
    queue_size: f64,
    long: LongTermLatency,
}

/// The long-term latency in nanoseconds: a plain average for the first
/// windows (an exponential average started from one value would weigh it
/// too much), then exponential.
#[derive(Clone, Debug)]
struct LongTermLatency {
    value: f64,
    seen: u32,
    warmup: u32,
    factor: f64,
}

impl LongTermLatency {
    fn update(&mut self, sample: f64) -> f64 {
        if self.seen < self.warmup {
            self.seen += 1;
            self.value += (sample - self.value) / f64::from(self.seen);
        } else {
            self.value += (sample - self.value) * self.factor;
        }
        self.value
    }
}

/// Builds a [`Gradient2`].
#[derive(Clone, Debug)]
pub struct Gradient2Builder {
    initial: u32,
    min: u32,
    max: u32,
    smoothing: f64,
    tolerance: f64,
    queue_size: u32,
    long_window: u32,
}

impl Default for Gradient2Builder {
    fn default() -> Self {
        Self {
            initial: 20,
            min: 1,
            max: 1_000,
            smoothing: 0.2,
            tolerance: 1.5,
            queue_size: 4,
            long_window: 600,
        }
    }
}

impl Gradient2Builder {
    /// The limit to start with (default 20).
    pub fn initial_limit(mut self, limit: u32) -> Self {
        self.initial = limit;
        self
    }

    /// The lowest limit (default 1).
    pub fn min_limit(mut self, limit: u32) -> Self {
        self.min = limit;
        self
    }

    /// The highest limit (default 1000).
    pub fn max_limit(mut self, limit: u32) -> Self {
        self.max = limit;
        self
    }

    /// How far each window moves the limit toward its target, in `(0, 1]`
    /// (default 0.2).
    pub fn smoothing(mut self, smoothing: f64) -> Self {
        self.smoothing = smoothing;
        self
    }

    /// How much slower than the long-term latency recent requests may be
    /// before the limit shrinks, at least 1 (default 1.5).
    pub fn tolerance(mut self, tolerance: f64) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// The growth allowed per window when latency is normal (default 4).
    pub fn queue_size(mut self, queue_size: u32) -> Self {
        self.queue_size = queue_size;
        self
    }

    /// Over how many windows the long-term latency is averaged, at least 2
    /// (default 600).
    pub fn long_window(mut self, windows: u32) -> Self {
        self.long_window = windows;
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<Gradient2, ConfigError> {
        check_bounds(self.min, self.initial, self.max)?;
        if !(self.smoothing > 0.0 && self.smoothing <= 1.0) {
            return Err(ConfigError::invalid("smoothing", "must lie in (0, 1]"));
        }
        if !(self.tolerance >= 1.0 && self.tolerance.is_finite()) {
            return Err(ConfigError::invalid("tolerance", "must be at least 1"));
        }
        if self.long_window < 2 {
            return Err(ConfigError::invalid("long_window", "must be at least 2"));
        }
        Ok(Gradient2 {
            estimate: f64::from(self.initial),
            min: self.min,
            max: self.max,
            smoothing: self.smoothing,
            tolerance: self.tolerance,
            queue_size: f64::from(self.queue_size),
            long: LongTermLatency {
                value: 0.0,
                seen: 0,
                warmup: 10.min(self.long_window),
                factor: 2.0 / (f64::from(self.long_window) + 1.0),
            },
        })
    }
}

impl Gradient2 {
    /// A builder with the defaults.
    pub fn builder() -> Gradient2Builder {
        Gradient2Builder::default()
    }
}

impl LimitAlgorithm for Gradient2 {
    fn limit(&self) -> u32 {
        // The estimate is clamped to [min, max] whenever it changes.
        self.estimate as u32
    }

    fn update(&mut self, window: &Window) -> u32 {
        if window.samples == 0 {
            return self.limit();
        }
        // At least one nanosecond, so the ratio below is finite.
        let recent = (window.average_latency.as_nanos() as f64).max(1.0);
        let mut long = self.long.update(recent);
        if long / recent > 2.0 {
            self.long.value *= 0.95;
            long = self.long.value;
        }
        if f64::from(window.max_in_flight) < self.estimate / 2.0 {
            return self.limit();
        }
        let gradient = (self.tolerance * long / recent).clamp(0.5, 1.0);
        let target = self.estimate * gradient + self.queue_size;
        let next = self.estimate * (1.0 - self.smoothing) + target * self.smoothing;
        self.estimate = next.clamp(f64::from(self.min), f64::from(self.max));
        self.limit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn window(latency_ms: u64, max_in_flight: u32) -> Window {
        Window {
            samples: 20,
            average_latency: Duration::from_millis(latency_ms),
            dropped: 0,
            max_in_flight,
            limit: 0,
        }
    }

    fn gradient(initial: u32) -> Gradient2 {
        Gradient2::builder()
            .initial_limit(initial)
            .min_limit(2)
            .max_limit(100)
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn steady_latency_with_the_limit_in_use_grows_the_limit_to_the_maximum() {
        let mut g = gradient(10);
        let mut last = g.limit();
        for _ in 0..200 {
            let next = g.update(&window(10, last));
            assert!(next >= last, "never shrinks at steady latency");
            last = next;
        }
        assert_eq!(last, 100);
    }

    #[test]
    fn queueing_latency_shrinks_the_limit_toward_the_minimum() {
        let mut g = gradient(40);
        for _ in 0..10 {
            g.update(&window(10, 40));
        }
        let before = g.limit();
        // Latency proportional to the limit: a service with room for 4.
        for _ in 0..30 {
            let limit = g.limit();
            g.update(&window(u64::from(limit) * 10 / 4, limit));
        }
        assert!(g.limit() < before / 2, "{} from {before}", g.limit());
        assert!(g.limit() >= 2);
    }

    #[test]
    fn an_idle_limit_is_left_alone() {
        let mut g = gradient(40);
        for _ in 0..20 {
            assert_eq!(g.update(&window(500, 3)), 40);
        }
    }

    #[test]
    fn empty_windows_change_nothing() {
        let mut g = gradient(30);
        let empty = Window {
            samples: 0,
            ..window(0, 30)
        };
        assert_eq!(g.update(&empty), 30);
    }

    #[test]
    fn impossible_settings_are_refused() {
        assert!(Gradient2::builder().smoothing(0.0).build().is_err());
        assert!(Gradient2::builder().tolerance(0.5).build().is_err());
        assert!(Gradient2::builder().long_window(1).build().is_err());
        assert!(Gradient2::builder().min_limit(0).build().is_err());
    }
}
