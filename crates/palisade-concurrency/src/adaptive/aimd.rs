//! AIMD: additive increase, multiplicative decrease.

use std::time::Duration;

use palisade_core::ConfigError;

use super::{LimitAlgorithm, Window, check_bounds};

/// Additive increase while the limit is in use, multiplicative decrease when
/// a window shows overload.
///
/// A window shows overload when any completion was dropped (an inner error,
/// a 503 or 504 from below) or, with a [latency
/// threshold](AimdBuilder::latency_threshold), when its average latency is
/// above it. Then the limit is multiplied by the backoff ratio (default
/// 0.9). Otherwise, when at least half the limit was in use, it grows by the
/// increase (default 1); a limit nobody uses is not raised, so that a quiet
/// period does not leave a limit far above what was ever tested.
///
/// ```
/// use palisade_concurrency::adaptive::{Aimd, LimitAlgorithm, Window};
/// use std::time::Duration;
///
/// let mut aimd = Aimd::builder()
///     .initial_limit(10)
///     .latency_threshold(Duration::from_millis(100))
///     .build()?;
/// let busy = Window { samples: 40, average_latency: Duration::from_millis(20), dropped: 0, max_in_flight: 10, limit: 10 };
/// assert_eq!(aimd.update(&busy), 11);
/// let slow = Window { average_latency: Duration::from_millis(300), ..busy };
/// assert_eq!(aimd.update(&slow), 9); // 11 * 0.9, rounded down
/// # Ok::<(), palisade_core::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Aimd {
    limit: u32,
    min: u32,
    max: u32,
    increase: u32,
    backoff: f64,
    latency_threshold: Option<Duration>,
}

/// Builds an [`Aimd`].
#[derive(Clone, Debug)]
pub struct AimdBuilder {
    initial: u32,
    min: u32,
    max: u32,
    increase: u32,
    backoff: f64,
    latency_threshold: Option<Duration>,
}

impl Default for AimdBuilder {
    fn default() -> Self {
        Self {
            initial: 20,
            min: 1,
            max: 1_000,
            increase: 1,
            backoff: 0.9,
            latency_threshold: None,
        }
    }
}

impl AimdBuilder {
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

    /// How much the limit grows after a healthy, busy window (default 1).
    pub fn increase(mut self, increase: u32) -> Self {
        self.increase = increase;
        self
    }

    /// The factor applied after an overloaded window, in `(0, 1)` (default 0.9).
    pub fn backoff_ratio(mut self, ratio: f64) -> Self {
        self.backoff = ratio;
        self
    }

    /// A window whose average latency is above this is overloaded (default:
    /// none, only dropped requests count).
    pub fn latency_threshold(mut self, threshold: Duration) -> Self {
        self.latency_threshold = Some(threshold);
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<Aimd, ConfigError> {
        check_bounds(self.min, self.initial, self.max)?;
        if !(self.backoff > 0.0 && self.backoff < 1.0) {
            return Err(ConfigError::invalid(
                "backoff_ratio",
                "must lie strictly between 0 and 1",
            ));
        }
        if self.increase == 0 {
            return Err(ConfigError::invalid("increase", "must be at least 1"));
        }
        if self.latency_threshold.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::invalid(
                "latency_threshold",
                "must not be zero",
            ));
        }
        Ok(Aimd {
            limit: self.initial,
            min: self.min,
            max: self.max,
            increase: self.increase,
            backoff: self.backoff,
            latency_threshold: self.latency_threshold,
        })
    }
}

impl Aimd {
    /// A builder with the defaults.
    pub fn builder() -> AimdBuilder {
        AimdBuilder::default()
    }
}

impl LimitAlgorithm for Aimd {
    fn limit(&self) -> u32 {
        self.limit
    }

    fn update(&mut self, window: &Window) -> u32 {
        let overloaded = window.dropped > 0
            || self
                .latency_threshold
                .is_some_and(|threshold| window.samples > 0 && window.average_latency > threshold);
        if overloaded {
            // Truncation is the point: a limit of 1 backs off to the minimum.
            let reduced = (f64::from(self.limit) * self.backoff) as u32;
            self.limit = reduced.clamp(self.min, self.max);
        } else if window.max_in_flight.saturating_mul(2) >= self.limit {
            self.limit = self.limit.saturating_add(self.increase).min(self.max);
        }
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(latency_ms: u64, dropped: u32, max_in_flight: u32) -> Window {
        Window {
            samples: 10,
            average_latency: Duration::from_millis(latency_ms),
            dropped,
            max_in_flight,
            limit: 0,
        }
    }

    #[test]
    fn grows_by_the_increase_only_while_the_limit_is_in_use() {
        let mut aimd = Aimd::builder()
            .initial_limit(10)
            .increase(2)
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(aimd.update(&window(5, 0, 10)), 12);
        assert_eq!(
            aimd.update(&window(5, 0, 1)),
            12,
            "an idle limit is not raised"
        );
    }

    #[test]
    fn drops_and_slow_windows_back_off_down_to_the_minimum() {
        let mut aimd = Aimd::builder()
            .initial_limit(10)
            .min_limit(3)
            .backoff_ratio(0.5)
            .latency_threshold(Duration::from_millis(50))
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(aimd.update(&window(5, 1, 10)), 5);
        assert_eq!(aimd.update(&window(80, 0, 10)), 3, "clamped to the minimum");
        assert_eq!(aimd.update(&window(80, 0, 10)), 3);
    }

    #[test]
    fn never_exceeds_the_maximum() {
        let mut aimd = Aimd::builder()
            .initial_limit(4)
            .max_limit(5)
            .increase(3)
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(aimd.update(&window(5, 0, 4)), 5);
        assert_eq!(aimd.update(&window(5, 0, 5)), 5);
    }

    #[test]
    fn impossible_settings_are_refused() {
        assert!(Aimd::builder().min_limit(0).build().is_err());
        assert!(Aimd::builder().min_limit(10).max_limit(5).build().is_err());
        assert!(Aimd::builder().initial_limit(2000).build().is_err());
        assert!(Aimd::builder().backoff_ratio(1.0).build().is_err());
        assert!(Aimd::builder().backoff_ratio(f64::NAN).build().is_err());
        assert!(Aimd::builder().increase(0).build().is_err());
    }
}
