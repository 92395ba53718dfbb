//! Time behind a trait, so every algorithm can be tested without sleeping.
//!
//! Layers read two kinds of time from a [`Clock`]:
//! - [`Clock::now`]: monotonic nanoseconds since the clock's own origin, for
//!   rate limits, idle eviction and breaker windows;
//! - [`Clock::unix_time`]: wall-clock time since the Unix epoch, for token
//!   expiry and anything compared with a timestamp from outside.
//!
//! [`SystemClock`] reads the real clocks; [`ManualClock`] only moves when a
//! test tells it to.
//!
//! ```
//! use palisade_core::clock::{Clock, ManualClock};
//! use std::time::Duration;
//!
//! let clock = ManualClock::new();
//! let start = clock.now();
//! clock.advance(Duration::from_millis(1500));
//! assert_eq!(clock.now().saturating_sub(start), Duration::from_millis(1500));
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point on a [`Clock`]'s monotonic time line, in nanoseconds since the
/// clock's origin. `u64` nanoseconds last 584 years.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nanos(pub u64);

impl Nanos {
    /// The origin of the time line.
    pub const ZERO: Nanos = Nanos(0);

    /// Nanoseconds since the origin.
    #[inline]
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The time elapsed from `earlier` to `self`, or zero when `earlier` is later.
    #[inline]
    pub fn saturating_sub(self, earlier: Nanos) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// This point moved forward by `duration`, saturating at the end of time.
    #[inline]
    pub fn saturating_add(self, duration: Duration) -> Nanos {
        Nanos(self.0.saturating_add(duration_to_nanos(duration)))
    }
}

/// A [`Duration`] as whole nanoseconds, saturating at `u64::MAX`.
#[inline]
pub fn duration_to_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// A source of time. Implementations must be cheap: layers read the clock on
/// every request.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Monotonic time: never goes backwards.
    fn now(&self) -> Nanos;

    /// Wall-clock time since the Unix epoch.
    fn unix_time(&self) -> Duration;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    #[inline]
    fn now(&self) -> Nanos {
        (**self).now()
    }

    #[inline]
    fn unix_time(&self) -> Duration {
        (**self).unix_time()
    }
}

/// The real clocks: a calibrated time-stamp counter for monotonic time (where
/// the CPU has an invariant one, else the OS monotonic clock), and
/// [`SystemTime`] for wall time.
///
/// Monotonic time is read on every request, and the OS clock costs two to
/// three times more per read than the counter on common virtual machines;
/// the `quanta` crate does the calibration and the fallback.
///
/// All `SystemClock`s share one origin (the first time any of them is read),
/// so their [`Nanos`] are comparable.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

/// The process's clock source, calibrated once, and its raw reading when it
/// started. Read through this instance rather than `quanta::Instant::now()`,
/// which first looks for a thread-local override (a testing aid of that
/// crate) on every call: a third of the cost of a read. Raw readings and
/// their scaled difference: no `Duration` is made and taken apart again.
fn source() -> &'static (quanta::Clock, u64) {
    static SOURCE: OnceLock<(quanta::Clock, u64)> = OnceLock::new();
    SOURCE.get_or_init(|| {
        let clock = quanta::Clock::new();
        let origin = clock.raw();
        (clock, origin)
    })
}

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> Nanos {
        let (clock, origin) = source();
        // Nanoseconds since the origin; 0 for a reading before it.
        Nanos(clock.delta_as_nanos(*origin, clock.raw()))
    }

    #[inline]
    fn unix_time(&self) -> Duration {
        // A wall clock set before 1970 reads as the epoch: callers compare
        // with token timestamps, and "very old" fails those checks safely.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
    }
}

/// A clock that moves only when told to; clones share the same time.
///
/// Its wall clock starts at a fixed Unix time (by default 2025-01-01T00:00:00Z)
/// and moves together with its monotonic time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    state: Arc<ManualState>,
}

#[derive(Debug)]
struct ManualState {
    nanos: AtomicU64,
    unix_origin: Duration,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    /// A clock at monotonic zero whose wall clock reads 2025-01-01T00:00:00Z.
    pub fn new() -> Self {
        Self::starting_at_unix(Duration::from_secs(1_735_689_600))
    }

    /// A clock at monotonic zero whose wall clock reads `unix_time`.
    pub fn starting_at_unix(unix_time: Duration) -> Self {
        Self {
            state: Arc::new(ManualState {
                nanos: AtomicU64::new(0),
                unix_origin: unix_time,
            }),
        }
    }

    /// Moves time forward.
    pub fn advance(&self, by: Duration) {
        let by = duration_to_nanos(by);
        // fetch_update cannot fail with a closure that always returns Some.
        let _ = self
            .state
            .nanos
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_add(by))
            });
    }

    /// Sets the monotonic time. Going backwards is refused (the clock is
    /// monotonic); the time is left as it was.
    pub fn set(&self, to: Nanos) {
        self.state.nanos.fetch_max(to.0, Ordering::AcqRel);
    }
}

impl Clock for ManualClock {
    #[inline]
    fn now(&self) -> Nanos {
        Nanos(self.state.nanos.load(Ordering::Acquire))
    }

    #[inline]
    fn unix_time(&self) -> Duration {
        self.state.unix_origin + Duration::from_nanos(self.state.nanos.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told_and_clones_share_time() {
        let clock = ManualClock::new();
        let other = clock.clone();
        let t0 = clock.now();
        assert_eq!(clock.now(), t0);
        other.advance(Duration::from_secs(3));
        assert_eq!(clock.now().saturating_sub(t0), Duration::from_secs(3));
        assert_eq!(
            clock.unix_time(),
            Duration::from_secs(1_735_689_600 + 3),
            "wall time moves with monotonic time"
        );
    }

    #[test]
    fn manual_clock_never_goes_backwards() {
        let clock = ManualClock::new();
        clock.set(Nanos(500));
        clock.set(Nanos(100));
        assert_eq!(clock.now(), Nanos(500));
    }

    #[test]
    fn system_clock_is_monotonic_and_near_wall_time() {
        let a = SystemClock.now();
        let b = SystemClock.now();
        assert!(b >= a);
        assert!(SystemClock.unix_time() > Duration::from_secs(1_700_000_000));
    }

    #[test]
    fn nanos_arithmetic_saturates() {
        assert_eq!(Nanos(5).saturating_sub(Nanos(10)), Duration::ZERO);
        assert_eq!(
            Nanos(u64::MAX - 1).saturating_add(Duration::from_secs(1)),
            Nanos(u64::MAX)
        );
    }
}
