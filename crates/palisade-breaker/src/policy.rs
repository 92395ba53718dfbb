//! [`BreakerPolicy`]: when a breaker opens, how long it stays open, and how
//! it probes its way back.

use std::time::Duration;

use palisade_core::ConfigError;
use palisade_core::clock::duration_to_nanos;

use crate::window::Window;

/// When a breaker trips and how it recovers. Build with
/// [`BreakerPolicy::builder`]; the defaults suit a call to an upstream
/// service:
///
/// - the last 100 calls, at least 20 of them, 50 % failed → open;
/// - open for 5 s, then 3 probes; all must succeed to close, one failure
///   opens again for twice as long (capped at 60 s), with 20 % jitter.
///
/// ```
/// use palisade_breaker::{BreakerPolicy, Window};
/// use std::time::Duration;
///
/// let policy = BreakerPolicy::builder()
///     .window(Window::time(Duration::from_secs(30)))
///     .failure_rate(0.25)
///     .slow_calls(Duration::from_millis(800), 0.5)
///     .minimum_calls(10)
///     .open_duration(Duration::from_secs(2))
///     .max_open_duration(Duration::from_secs(30))
///     .build()?;
/// # let _ = policy;
/// # Ok::<(), palisade_core::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerPolicy {
    pub(crate) window: Window,
    /// Failure rate that trips, in millionths.
    pub(crate) failure_rate_ppm: Option<u32>,
    /// Slow-call rate that trips, in millionths.
    pub(crate) slow_rate_ppm: Option<u32>,
    pub(crate) slow_call: Option<Duration>,
    pub(crate) slow_call_nanos: u64,
    pub(crate) minimum_calls: u32,
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) half_open_probes: u32,
    pub(crate) open_duration: Duration,
    pub(crate) max_open_duration: Duration,
    pub(crate) backoff_multiplier: f64,
    pub(crate) jitter: f64,
    pub(crate) seed: u64,
}

impl BreakerPolicy {
    /// A builder with the defaults above.
    pub fn builder() -> BreakerPolicyBuilder {
        BreakerPolicyBuilder::default()
    }

    /// The window rates are computed over.
    pub fn window(&self) -> Window {
        self.window
    }

    /// How many probes run while half-open (all must succeed to close).
    pub fn half_open_probes(&self) -> u32 {
        self.half_open_probes
    }

    /// The call duration from which a call counts as slow, if slow calls
    /// are watched.
    pub fn slow_call_duration(&self) -> Option<Duration> {
        self.slow_call
    }

    /// How long the breaker stays open after its `opens`-th consecutive
    /// opening (0 for the first), before jitter: the base duration times the
    /// multiplier to that power, capped.
    pub fn open_duration_before_jitter(&self, opens: u32) -> Duration {
        let factor = self.backoff_multiplier.powi(opens.min(64) as i32);
        let nanos = (duration_to_nanos(self.open_duration) as f64 * factor)
            .min(duration_to_nanos(self.max_open_duration) as f64);
        Duration::from_nanos(nanos as u64)
    }

    /// The open duration after `opens` consecutive openings, with jitter
    /// drawn from `draw` (deterministic per draw, so tests and the reference
    /// model agree): up to `jitter` of it is taken off, never below 1 ms.
    pub(crate) fn open_duration(&self, opens: u32, draw: u64) -> Duration {
        let full = self.open_duration_before_jitter(opens);
        let unit = (splitmix64(self.seed ^ draw) >> 11) as f64 / (1u64 << 53) as f64;
        let scaled = full.as_secs_f64() * (1.0 - self.jitter * unit);
        Duration::from_secs_f64(scaled).max(Duration::from_millis(1))
    }

    /// Whether the totals of a window trip the breaker.
    #[inline]
    pub(crate) fn trips(&self, calls: u32, failures: u32, slow: u32) -> bool {
        if calls == 0 || calls < self.minimum_calls {
            return false;
        }
        let over = |count: u32, ppm: Option<u32>| {
            ppm.is_some_and(|ppm| u64::from(count) * 1_000_000 >= u64::from(ppm) * u64::from(calls))
        };
        over(failures, self.failure_rate_ppm) || over(slow, self.slow_rate_ppm)
    }
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicyBuilder::default().finish()
    }
}

/// Builds a [`BreakerPolicy`].
#[derive(Clone, Debug)]
pub struct BreakerPolicyBuilder {
    window: Window,
    failure_rate: Option<f64>,
    slow: Option<(Duration, f64)>,
    minimum_calls: u32,
    consecutive_failures: Option<u32>,
    half_open_probes: u32,
    open_duration: Duration,
    max_open_duration: Duration,
    backoff_multiplier: f64,
    jitter: f64,
    seed: Option<u64>,
}

impl Default for BreakerPolicyBuilder {
    fn default() -> Self {
        Self {
            window: Window::default(),
            failure_rate: Some(0.5),
            slow: None,
            minimum_calls: 20,
            consecutive_failures: None,
            half_open_probes: 3,
            open_duration: Duration::from_secs(5),
            max_open_duration: Duration::from_secs(60),
            backoff_multiplier: 2.0,
            jitter: 0.2,
            seed: None,
        }
    }
}

impl BreakerPolicyBuilder {
    /// The window rates are computed over (default: the last 100 calls).
    pub fn window(mut self, window: Window) -> Self {
        self.window = window;
        self
    }

    /// Opens when at least this share of the window's calls failed
    /// (0 < rate ≤ 1; default 0.5).
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.failure_rate = Some(rate);
        self
    }

    /// Does not open on the failure rate (only on slow calls or consecutive
    /// failures).
    pub fn no_failure_rate(mut self) -> Self {
        self.failure_rate = None;
        self
    }

    /// Calls taking `duration` or longer are slow; opens when at least
    /// `rate` of the window's calls were slow. A call dropped by its caller
    /// (an outer timeout) after `duration` counts as slow too, so timeouts
    /// trip the breaker. While half-open, a slow probe counts as failed.
    pub fn slow_calls(mut self, duration: Duration, rate: f64) -> Self {
        self.slow = Some((duration, rate));
        self
    }

    /// The fewest calls in the window before rates are judged (default 20).
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.minimum_calls = calls;
        self
    }

    /// Also opens after this many failures in a row, whatever the window
    /// says (successes reset the count; ignored calls leave it).
    pub fn consecutive_failures(mut self, failures: u32) -> Self {
        self.consecutive_failures = Some(failures);
        self
    }

    /// How many probes run while half-open (1 to 1,000; default 3). All of
    /// them must succeed to close; one failure opens again.
    pub fn half_open_probes(mut self, probes: u32) -> Self {
        self.half_open_probes = probes;
        self
    }

    /// How long the breaker stays open the first time (default 5 s).
    pub fn open_duration(mut self, duration: Duration) -> Self {
        self.open_duration = duration;
        self
    }

    /// The longest it stays open after repeated openings (default 60 s).
    pub fn max_open_duration(mut self, duration: Duration) -> Self {
        self.max_open_duration = duration;
        self
    }

    /// Each consecutive opening lasts this many times longer (≥ 1;
    /// default 2).
    pub fn backoff_multiplier(mut self, multiplier: f64) -> Self {
        self.backoff_multiplier = multiplier;
        self
    }

    /// Up to this share of each open duration is taken off at random
    /// (0 to 1; default 0.2), so many instances do not probe in step.
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// Fixes the jitter's random sequence (default: random per policy), for
    /// reproducible tests.
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<BreakerPolicy, ConfigError> {
        self.window.validate()?;
        let rate = |name: &'static str, rate: f64| {
            if rate > 0.0 && rate <= 1.0 {
                Ok((rate * 1_000_000.0).round() as u32)
            } else {
                Err(ConfigError::invalid(
                    name,
                    "a rate is above 0 and at most 1",
                ))
            }
        };
        if let Some(failure_rate) = self.failure_rate {
            rate("failure_rate", failure_rate)?;
        }
        if let Some((duration, slow_rate)) = self.slow {
            rate("slow_call_rate", slow_rate)?;
            if duration.is_zero() {
                return Err(ConfigError::invalid(
                    "slow_call_duration",
                    "a slow-call duration must be above zero",
                ));
            }
        }
        if self.failure_rate.is_none() && self.slow.is_none() && self.consecutive_failures.is_none()
        {
            return Err(ConfigError::invalid(
                "breaker",
                "a breaker needs a failure rate, a slow-call rate or consecutive failures to ever open",
            ));
        }
        if self.consecutive_failures == Some(0) {
            return Err(ConfigError::invalid(
                "consecutive_failures",
                "consecutive failures must be at least 1",
            ));
        }
        if !(1..=1_000).contains(&self.half_open_probes) {
            return Err(ConfigError::invalid(
                "half_open_probes",
                "half-open probes are 1 to 1,000",
            ));
        }
        if self.open_duration < Duration::from_millis(1)
            || self.max_open_duration < self.open_duration
        {
            return Err(ConfigError::invalid(
                "open_duration",
                "the open duration is at least 1 ms and at most the maximum open duration",
            ));
        }
        // The state word keeps the reopening time in milliseconds on 42 bits.
        if self.max_open_duration > Duration::from_secs(365 * 86_400) {
            return Err(ConfigError::invalid(
                "max_open_duration",
                "the maximum open duration is at most a year",
            ));
        }
        if !(self.backoff_multiplier >= 1.0 && self.backoff_multiplier <= 100.0) {
            return Err(ConfigError::invalid(
                "backoff_multiplier",
                "the backoff multiplier is 1 to 100",
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(ConfigError::invalid("jitter", "jitter is 0 to 1"));
        }
        Ok(self.finish())
    }

    fn finish(self) -> BreakerPolicy {
        let ppm = |rate: f64| (rate * 1_000_000.0).round() as u32;
        BreakerPolicy {
            window: self.window,
            failure_rate_ppm: self.failure_rate.map(ppm),
            slow_rate_ppm: self.slow.map(|(_, rate)| ppm(rate)),
            slow_call: self.slow.map(|(duration, _)| duration),
            slow_call_nanos: self.slow.map_or(u64::MAX, |(d, _)| duration_to_nanos(d)),
            minimum_calls: self.minimum_calls,
            consecutive_failures: self.consecutive_failures,
            half_open_probes: self.half_open_probes,
            open_duration: self.open_duration,
            max_open_duration: self.max_open_duration,
            backoff_multiplier: self.backoff_multiplier,
            jitter: self.jitter,
            seed: self.seed.unwrap_or_else(random_seed),
        }
    }
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(0x5eed_u64)
}

/// A 64-bit mix with every output bit depending on every input bit.
pub(crate) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_duration_grows_by_the_multiplier_up_to_the_cap() {
        let policy = BreakerPolicy::builder()
            .open_duration(Duration::from_secs(1))
            .max_open_duration(Duration::from_secs(10))
            .jitter(0.0)
            .build();
        let Ok(policy) = policy else {
            panic!("valid policy")
        };
        let secs: Vec<u64> = (0..6)
            .map(|n| policy.open_duration(n, n.into()).as_secs())
            .collect();
        assert_eq!(secs, [1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn jitter_takes_off_at_most_its_share() {
        let Ok(policy) = BreakerPolicy::builder()
            .open_duration(Duration::from_secs(10))
            .jitter(0.5)
            .jitter_seed(7)
            .build()
        else {
            panic!("valid policy")
        };
        let draws: Vec<Duration> = (0..200).map(|d| policy.open_duration(0, d)).collect();
        assert!(
            draws
                .iter()
                .all(|d| *d >= Duration::from_secs(5) && *d <= Duration::from_secs(10))
        );
        // Spread, not constant.
        let min = draws.iter().min().copied().unwrap_or_default();
        let max = draws.iter().max().copied().unwrap_or_default();
        assert!(max - min > Duration::from_secs(3));
    }

    #[test]
    fn trips_needs_the_minimum_calls_and_the_rate() {
        let Ok(policy) = BreakerPolicy::builder()
            .failure_rate(0.5)
            .minimum_calls(4)
            .build()
        else {
            panic!("valid policy")
        };
        assert!(!policy.trips(3, 3, 0));
        assert!(policy.trips(4, 2, 0));
        assert!(!policy.trips(4, 1, 0));
    }

    #[test]
    fn invalid_policies_are_refused() {
        assert!(BreakerPolicy::builder().failure_rate(0.0).build().is_err());
        assert!(BreakerPolicy::builder().failure_rate(1.5).build().is_err());
        assert!(BreakerPolicy::builder().no_failure_rate().build().is_err());
        assert!(
            BreakerPolicy::builder()
                .half_open_probes(0)
                .build()
                .is_err()
        );
        assert!(
            BreakerPolicy::builder()
                .open_duration(Duration::from_secs(10))
                .max_open_duration(Duration::from_secs(1))
                .build()
                .is_err()
        );
        assert!(
            BreakerPolicy::builder()
                .backoff_multiplier(0.5)
                .build()
                .is_err()
        );
        assert!(BreakerPolicy::builder().jitter(2.0).build().is_err());
        assert!(
            BreakerPolicy::builder()
                .slow_calls(Duration::ZERO, 0.5)
                .build()
                .is_err()
        );
        assert!(
            BreakerPolicy::builder()
                .no_failure_rate()
                .consecutive_failures(5)
                .build()
                .is_ok()
        );
    }
}
