//! The generic cell rate algorithm on integer nanoseconds: pure, no clock,
//! no storage.
//!
//! A key's whole state is its theoretical arrival time (TAT): when the key
//! would be back to a full bucket. A request of cost `n` at time `now` asks
//! for `n` emission intervals; it fits when the new TAT is no further than
//! `burst` intervals ahead of `now`.
//!
//! ```
//! use palisade_ratelimit::{Quota, gcra};
//! use std::time::Duration;
//!
//! let quota = Quota::per_second(10).burst(2)?; // one every 100 ms, two at once
//! let now = 1_000_000_000;
//! let first = gcra::decide(&quota, None, now, 1);
//! let second = gcra::decide(&quota, Some(first.tat), now, 1);
//! let third = gcra::decide(&quota, Some(second.tat), now, 1);
//! assert!(first.allowed && second.allowed && !third.allowed);
//! assert_eq!(third.retry_after(), Duration::from_millis(100));
//! # Ok::<(), palisade_core::ConfigError>(())
//! ```

use std::time::Duration;

use palisade_core::ConfigError;

/// A rate: `count` requests per `period`, with bursts of up to `burst`.
///
/// `Quota::per_minute(100).burst(20)` is 100 requests per minute, at most 20
/// at once; without `burst`, the whole count may come at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Quota {
    count: u32,
    period_ns: u64,
    burst: u32,
    /// Nanoseconds per cell: `period / count`, at least 1.
    emission_ns: u64,
}

impl Quota {
    /// `count` per `period`, bursts of `count`. Zero counts or periods are
    /// refused by [`Quota::checked`]; here they are raised to 1 (1 ns).
    pub const fn new(count: u32, period: Duration) -> Self {
        let count = if count == 0 { 1 } else { count };
        let period_ns = period.as_nanos();
        let period_ns = if period_ns == 0 {
            1
        } else if period_ns > u64::MAX as u128 {
            u64::MAX
        } else {
            period_ns as u64
        };
        let emission = period_ns / count as u64;
        Self {
            count,
            period_ns,
            burst: count,
            emission_ns: if emission == 0 { 1 } else { emission },
        }
    }

    /// `count` per `period`, refusing a zero count or period.
    pub fn checked(count: u32, period: Duration) -> Result<Self, ConfigError> {
        if count == 0 {
            return Err(ConfigError::invalid(
                "quota",
                "the count must be at least 1",
            ));
        }
        if period.is_zero() {
            return Err(ConfigError::invalid("quota", "the period must not be zero"));
        }
        Ok(Self::new(count, period))
    }

    /// `count` requests per second.
    pub const fn per_second(count: u32) -> Self {
        Self::new(count, Duration::from_secs(1))
    }

    /// `count` requests per minute.
    pub const fn per_minute(count: u32) -> Self {
        Self::new(count, Duration::from_secs(60))
    }

    /// `count` requests per hour.
    pub const fn per_hour(count: u32) -> Self {
        Self::new(count, Duration::from_secs(3600))
    }

    /// `count` requests per day.
    pub const fn per_day(count: u32) -> Self {
        Self::new(count, Duration::from_secs(86_400))
    }

    /// Sets the most requests that may come at once (at least 1).
    pub fn burst(mut self, burst: u32) -> Result<Self, ConfigError> {
        if burst == 0 {
            return Err(ConfigError::invalid(
                "quota",
                "the burst must be at least 1",
            ));
        }
        self.burst = burst;
        Ok(self)
    }

    /// The count per period.
    pub const fn count(&self) -> u32 {
        self.count
    }

    /// The period.
    pub const fn period(&self) -> Duration {
        Duration::from_nanos(self.period_ns)
    }

    /// The burst.
    pub const fn burst_size(&self) -> u32 {
        self.burst
    }

    /// Nanoseconds between cells.
    pub const fn emission_ns(&self) -> u64 {
        self.emission_ns
    }

    /// How far ahead of now the TAT may be: `burst` emission intervals.
    #[inline]
    pub const fn tolerance_ns(&self) -> u64 {
        self.emission_ns.saturating_mul(self.burst as u64)
    }
}

/// The outcome of one decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request fits.
    pub allowed: bool,
    /// The TAT to store when the request is charged (the old one, unchanged,
    /// when it is refused).
    pub tat: u64,
    /// Nanoseconds of room left after this request; see
    /// [`remaining`](Self::remaining). Kept raw so the hot path divides
    /// nothing until a header asks for it.
    pub headroom_ns: u64,
    /// Nanoseconds per cell of the quota decided.
    pub emission_ns: u64,
    /// Nanoseconds until the bucket is full again; see
    /// [`reset`](Self::reset).
    pub reset_ns: u64,
    /// Nanoseconds until this request would fit (zero when allowed); see
    /// [`retry_after`](Self::retry_after).
    pub retry_after_ns: u64,
}

/// Decides a request of `cost` cells at `now` for a key whose stored TAT is
/// `tat` (`None`: a new key, the same as a full bucket). Pure: the caller
/// stores `decision.tat` only if it charges the request.
#[inline]
pub fn decide(quota: &Quota, tat: Option<u64>, now: u64, cost: u32) -> Decision {
    let start = tat.map_or(now, |tat| tat.max(now));
    // The common case in u64; u128 only when a product could overflow
    // (saturating would make a huge cost look free).
    match (
        quota.emission_ns.checked_mul(u64::from(cost)),
        quota.emission_ns.checked_mul(u64::from(quota.burst)),
    ) {
        (Some(increment), Some(tolerance)) => match start.checked_add(increment) {
            Some(new_tat) => decide_u64(quota, tat, now, start, increment, tolerance, new_tat),
            None => decide_wide(quota, tat, now, cost),
        },
        _ => decide_wide(quota, tat, now, cost),
    }
}

#[inline]
fn decide_u64(
    quota: &Quota,
    tat: Option<u64>,
    now: u64,
    start: u64,
    increment: u64,
    tolerance: u64,
    new_tat: u64,
) -> Decision {
    let emission = quota.emission_ns;
    let ahead = new_tat - now;
    if ahead <= tolerance {
        Decision {
            allowed: true,
            tat: new_tat,
            headroom_ns: tolerance - ahead,
            emission_ns: emission,
            reset_ns: ahead,
            retry_after_ns: 0,
        }
    } else {
        let current = start - now;
        Decision {
            allowed: false,
            tat: tat.unwrap_or(now),
            headroom_ns: tolerance.saturating_sub(current),
            emission_ns: emission,
            reset_ns: current,
            // A cost above the burst never fits: say so with the time to a
            // full bucket plus one more period.
            retry_after_ns: if increment > tolerance {
                current.saturating_add(quota.period_ns)
            } else {
                ahead - tolerance
            },
        }
    }
}

#[cold]
fn decide_wide(quota: &Quota, tat: Option<u64>, now: u64, cost: u32) -> Decision {
    let emission = u128::from(quota.emission_ns);
    let tolerance = emission * u128::from(quota.burst);
    let now_wide = u128::from(now);
    let start = u128::from(tat.map_or(now, |tat| tat.max(now)));
    let increment = emission * u128::from(cost);
    let new_tat = start + increment;
    let ahead = new_tat - now_wide;
    let wide = |n: u128| u64::try_from(n).unwrap_or(u64::MAX);
    if ahead <= tolerance && new_tat <= u128::from(u64::MAX) {
        Decision {
            allowed: true,
            tat: u64::try_from(new_tat).unwrap_or(u64::MAX),
            headroom_ns: wide(tolerance - ahead),
            emission_ns: quota.emission_ns,
            reset_ns: wide(ahead),
            retry_after_ns: 0,
        }
    } else {
        let current = start - now_wide;
        Decision {
            allowed: false,
            tat: tat.unwrap_or(now),
            headroom_ns: wide(tolerance.saturating_sub(current)),
            emission_ns: quota.emission_ns,
            reset_ns: wide(current),
            retry_after_ns: if increment > tolerance {
                wide(current + u128::from(quota.period_ns))
            } else {
                wide(ahead.saturating_sub(tolerance))
            },
        }
    }
}

impl Decision {
    /// Time until the bucket is full again.
    #[inline]
    pub fn reset(&self) -> Duration {
        Duration::from_nanos(self.reset_ns)
    }

    /// Time until this request would fit (zero when allowed).
    #[inline]
    pub fn retry_after(&self) -> Duration {
        Duration::from_nanos(self.retry_after_ns)
    }

    /// Cells left after this request (for a refusal: left now).
    #[inline]
    pub fn remaining(&self) -> u32 {
        u32::try_from(self.headroom_ns / self.emission_ns.max(1)).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn per_second_n_means_n_per_second() {
        let quota = Quota::per_second(5);
        assert_eq!(quota.emission_ns(), SECOND / 5);
        assert_eq!(quota.burst_size(), 5);
        let mut tat = None;
        let mut allowed = 0;
        for _ in 0..10 {
            let d = decide(&quota, tat, SECOND, 1);
            if d.allowed {
                allowed += 1;
                tat = Some(d.tat);
            }
        }
        assert_eq!(allowed, 5, "the whole count at once by default");
    }

    #[test]
    fn per_minute_with_burst_reads_as_it_means() {
        let quota = Quota::per_minute(100)
            .burst(20)
            .unwrap_or(Quota::per_minute(1));
        let mut tat = None;
        let now = 10 * SECOND;
        let mut allowed = 0;
        for _ in 0..50 {
            let d = decide(&quota, tat, now, 1);
            if d.allowed {
                allowed += 1;
                tat = Some(d.tat);
            }
        }
        assert_eq!(allowed, 20);
        // One more every 600 ms.
        let later = decide(&quota, tat, now + 600_000_000, 1);
        assert!(later.allowed);
    }

    #[test]
    fn remaining_reset_and_retry_after_are_consistent() {
        let quota = Quota::per_second(10)
            .burst(3)
            .unwrap_or(Quota::per_second(1));
        let now = SECOND;
        let a = decide(&quota, None, now, 1);
        assert_eq!(
            (a.allowed, a.remaining(), a.reset()),
            (true, 2, Duration::from_millis(100))
        );
        let b = decide(&quota, Some(a.tat), now, 2);
        assert_eq!(
            (b.allowed, b.remaining(), b.reset()),
            (true, 0, Duration::from_millis(300))
        );
        let c = decide(&quota, Some(b.tat), now, 1);
        assert!(!c.allowed);
        assert_eq!(c.tat, b.tat, "a refusal changes nothing");
        assert_eq!(c.retry_after(), Duration::from_millis(100));
        assert_eq!(c.reset(), Duration::from_millis(300));
        let d = decide(&quota, Some(b.tat), now + 100_000_000, 1);
        assert!(d.allowed, "after retry_after it fits");
    }

    #[test]
    fn a_cost_above_the_burst_never_fits() {
        let quota = Quota::per_second(10)
            .burst(3)
            .unwrap_or(Quota::per_second(1));
        let d = decide(&quota, None, SECOND, 4);
        assert!(!d.allowed);
        assert!(d.retry_after() >= Duration::from_secs(1));
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let quota = Quota::new(u32::MAX, Duration::from_nanos(1));
        let d = decide(&quota, Some(u64::MAX), u64::MAX, u32::MAX);
        assert!(!d.allowed);
        let slow = Quota::new(1, Duration::MAX);
        let d = decide(&slow, None, 0, 1);
        assert!(d.allowed);
        assert!(Quota::checked(0, Duration::from_secs(1)).is_err());
        assert!(Quota::checked(1, Duration::ZERO).is_err());
        assert!(Quota::per_second(1).burst(0).is_err());
    }
}
