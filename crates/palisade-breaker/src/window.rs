//! Sliding windows of call outcomes, kept in atomics so that recording an
//! outcome on the closed path takes no lock.
//!
//! - [`Window::Count`]: the last `n` calls, in a ring of one byte per call.
//! - [`Window::Time`]: the calls of the last `duration`, in `buckets` equal
//!   slices, each one packed counter word.
//!
//! Under concurrent recording the totals are exact once writers are done; a
//! reader racing a writer may see one call's counters half updated, and a
//! time bucket being reset may lose the few calls recorded while it turned
//! over. A breaker decides on rates over many calls, so neither matters.

use std::fmt;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use palisade_core::ConfigError;
use palisade_core::clock::{Nanos, duration_to_nanos};

/// Which calls a breaker's rates are computed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// The last `calls` calls (1 to 100,000).
    Count {
        /// How many calls the window holds.
        calls: u32,
    },
    /// The calls of the last `duration`, counted in `buckets` slices that
    /// expire one at a time (1 to 600 buckets, each at least 1 ms).
    Time {
        /// How far back the window reaches.
        duration: Duration,
        /// How many slices the window is counted in.
        buckets: u32,
    },
}

impl Window {
    /// The last `calls` calls.
    pub const fn count(calls: u32) -> Self {
        Window::Count { calls }
    }

    /// The calls of the last `duration`, in ten slices.
    pub const fn time(duration: Duration) -> Self {
        Window::Time {
            duration,
            buckets: 10,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        match *self {
            Window::Count { calls } => {
                if !(1..=100_000).contains(&calls) {
                    return Err(ConfigError::invalid(
                        "window",
                        "a count window holds 1 to 100,000 calls",
                    ));
                }
            }
            Window::Time { duration, buckets } => {
                if !(1..=600).contains(&buckets) {
                    return Err(ConfigError::invalid(
                        "window",
                        "a time window has 1 to 600 buckets",
                    ));
                }
                if duration / buckets < Duration::from_millis(1) {
                    return Err(ConfigError::invalid(
                        "window",
                        "a time window's buckets must each span at least 1 ms",
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Default for Window {
    /// The last 100 calls.
    fn default() -> Self {
        Window::count(100)
    }
}

/// Totals over a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Calls with a success or failure outcome (ignored ones are not counted).
    pub calls: u32,
    /// Failed calls.
    pub failures: u32,
    /// Slow calls (successful or not).
    pub slow: u32,
}

/// One recorded call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sample {
    pub(crate) failure: bool,
    pub(crate) slow: bool,
}

pub(crate) enum Recorder {
    Count(CountWindow),
    Time(TimeWindow),
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recorder::Count(w) => f
                .debug_struct("CountWindow")
                .field("calls", &w.slots.len())
                .finish(),
            Recorder::Time(w) => f
                .debug_struct("TimeWindow")
                .field("buckets", &w.buckets.len())
                .field("bucket_nanos", &w.bucket_nanos)
                .finish(),
        }
    }
}

impl Recorder {
    pub(crate) fn new(window: &Window) -> Self {
        match *window {
            Window::Count { calls } => Recorder::Count(CountWindow::new(calls as usize)),
            Window::Time { duration, buckets } => {
                Recorder::Time(TimeWindow::new(duration, buckets as usize))
            }
        }
    }

    /// Records a call and returns the totals after it.
    #[inline]
    pub(crate) fn record(&self, sample: Sample, now: Nanos) -> Totals {
        match self {
            Recorder::Count(w) => w.record(sample),
            Recorder::Time(w) => w.record(sample, now),
        }
    }

    pub(crate) fn totals(&self, now: Nanos) -> Totals {
        match self {
            Recorder::Count(w) => w.totals(),
            Recorder::Time(w) => w.totals(now),
        }
    }

    pub(crate) fn clear(&self) {
        match self {
            Recorder::Count(w) => w.clear(),
            Recorder::Time(w) => w.clear(),
        }
    }

    /// Whether the window has nothing in it at `now`.
    pub(crate) fn is_empty(&self, now: Nanos) -> bool {
        self.totals(now).calls == 0
    }

    /// Whether reading the window needs the time.
    pub(crate) fn needs_time(&self) -> bool {
        matches!(self, Recorder::Time(_))
    }
}

const RECORDED: u8 = 1;
const FAILURE: u8 = 2;
const SLOW: u8 = 4;

/// The last `n` calls: a ring of one byte per call and three running totals.
pub(crate) struct CountWindow {
    slots: Box<[AtomicU8]>,
    next: AtomicUsize,
    calls: AtomicU32,
    failures: AtomicU32,
    slow: AtomicU32,
}

impl CountWindow {
    fn new(calls: usize) -> Self {
        Self {
            slots: (0..calls.max(1)).map(|_| AtomicU8::new(0)).collect(),
            next: AtomicUsize::new(0),
            calls: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            slow: AtomicU32::new(0),
        }
    }

    #[inline]
    fn record(&self, sample: Sample) -> Totals {
        let new = RECORDED
            | if sample.failure { FAILURE } else { 0 }
            | if sample.slow { SLOW } else { 0 };
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let old = self.slots[index].swap(new, Ordering::AcqRel);
        // Each total moves by the difference between the call that left the
        // ring and the one that entered it.
        let calls = adjust(&self.calls, old & RECORDED != 0, true);
        let failures = adjust(&self.failures, old & FAILURE != 0, sample.failure);
        let slow = adjust(&self.slow, old & SLOW != 0, sample.slow);
        Totals {
            calls,
            failures,
            slow,
        }
    }

    fn totals(&self) -> Totals {
        Totals {
            calls: self.calls.load(Ordering::Acquire),
            failures: self.failures.load(Ordering::Acquire),
            slow: self.slow.load(Ordering::Acquire),
        }
    }

    fn clear(&self) {
        for slot in self.slots.iter() {
            slot.store(0, Ordering::Relaxed);
        }
        self.calls.store(0, Ordering::Release);
        self.failures.store(0, Ordering::Release);
        self.slow.store(0, Ordering::Release);
    }
}

/// Moves a total by `entered - left` and returns the new value.
#[inline]
fn adjust(total: &AtomicU32, left: bool, entered: bool) -> u32 {
    match (left, entered) {
        (false, true) => total.fetch_add(1, Ordering::AcqRel).wrapping_add(1),
        (true, false) => total.fetch_sub(1, Ordering::AcqRel).wrapping_sub(1),
        _ => total.load(Ordering::Acquire),
    }
}

/// Bits per counter in a packed bucket word: three 21-bit counters.
const FIELD_BITS: u32 = 21;
const FIELD_MASK: u64 = (1 << FIELD_BITS) - 1;
/// A bucket stops counting a little below its counters' capacity, so racing
/// writers cannot carry one counter into the next; the calls it then skips
/// are a sample of a bucket already holding two million.
const BUCKET_FULL: u64 = FIELD_MASK - 1024;

/// The calls of the last `duration`, in `buckets` slices. Each slice is one
/// word (calls, failures, slow) and the index of the slice of time it counts.
pub(crate) struct TimeWindow {
    buckets: Box<[Bucket]>,
    bucket_nanos: u64,
}

struct Bucket {
    /// Which slice of time (`now / bucket_nanos`) the counts belong to.
    epoch: AtomicU64,
    counts: AtomicU64,
}

impl TimeWindow {
    fn new(duration: Duration, buckets: usize) -> Self {
        let buckets = buckets.max(1);
        let bucket_nanos = (duration_to_nanos(duration) / buckets as u64).max(1);
        Self {
            buckets: (0..buckets)
                .map(|_| Bucket {
                    epoch: AtomicU64::new(u64::MAX),
                    counts: AtomicU64::new(0),
                })
                .collect(),
            bucket_nanos,
        }
    }

    #[inline]
    fn record(&self, sample: Sample, now: Nanos) -> Totals {
        let epoch = now.as_u64() / self.bucket_nanos;
        let bucket = &self.buckets[(epoch % self.buckets.len() as u64) as usize];
        let seen = bucket.epoch.load(Ordering::Acquire);
        if seen != epoch
            && bucket
                .epoch
                .compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            bucket.counts.store(0, Ordering::Release);
        }
        if bucket.counts.load(Ordering::Relaxed) & FIELD_MASK < BUCKET_FULL {
            let add = 1
                | (u64::from(sample.failure) << FIELD_BITS)
                | (u64::from(sample.slow) << (2 * FIELD_BITS));
            bucket.counts.fetch_add(add, Ordering::AcqRel);
        }
        self.totals(now)
    }

    fn totals(&self, now: Nanos) -> Totals {
        let epoch = now.as_u64() / self.bucket_nanos;
        let span = self.buckets.len() as u64;
        let mut totals = Totals::default();
        for bucket in self.buckets.iter() {
            let at = bucket.epoch.load(Ordering::Acquire);
            // Only slices of the last `span` slices count (the current one
            // included); older ones are waiting to be reused.
            if at <= epoch && epoch - at < span {
                let counts = bucket.counts.load(Ordering::Acquire);
                totals.calls += (counts & FIELD_MASK) as u32;
                totals.failures += ((counts >> FIELD_BITS) & FIELD_MASK) as u32;
                totals.slow += ((counts >> (2 * FIELD_BITS)) & FIELD_MASK) as u32;
            }
        }
        totals
    }

    fn clear(&self) {
        for bucket in self.buckets.iter() {
            bucket.epoch.store(u64::MAX, Ordering::Release);
            bucket.counts.store(0, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: Sample = Sample {
        failure: false,
        slow: false,
    };
    const FAIL: Sample = Sample {
        failure: true,
        slow: false,
    };
    const SLOW_OK: Sample = Sample {
        failure: false,
        slow: true,
    };

    #[test]
    fn count_window_keeps_only_the_last_n_calls() {
        let window = Recorder::new(&Window::count(3));
        let now = Nanos::ZERO;
        window.record(FAIL, now);
        window.record(FAIL, now);
        let totals = window.record(OK, now);
        assert_eq!(
            totals,
            Totals {
                calls: 3,
                failures: 2,
                slow: 0
            }
        );
        // The first failure leaves the ring.
        let totals = window.record(SLOW_OK, now);
        assert_eq!(
            totals,
            Totals {
                calls: 3,
                failures: 1,
                slow: 1
            }
        );
        window.clear();
        assert!(window.is_empty(now));
    }

    #[test]
    fn time_window_forgets_buckets_older_than_its_duration() {
        let window = Recorder::new(&Window::Time {
            duration: Duration::from_secs(10),
            buckets: 10,
        });
        let t = |secs: u64| Nanos(secs * 1_000_000_000);
        window.record(FAIL, t(100));
        window.record(OK, t(105));
        assert_eq!(window.totals(t(109)).calls, 2);
        // At 110 the bucket of second 100 is out of the window.
        let totals = window.totals(t(110));
        assert_eq!(
            totals,
            Totals {
                calls: 1,
                failures: 0,
                slow: 0
            }
        );
        // Recording into the reused slot resets it first.
        let totals = window.record(FAIL, t(120));
        assert_eq!(
            totals,
            Totals {
                calls: 1,
                failures: 1,
                slow: 0
            }
        );
        assert!(window.is_empty(t(200)));
    }

    #[test]
    fn invalid_windows_are_refused() {
        assert!(Window::count(0).validate().is_err());
        assert!(Window::count(100_001).validate().is_err());
        assert!(
            Window::Time {
                duration: Duration::from_millis(5),
                buckets: 10
            }
            .validate()
            .is_err()
        );
        assert!(Window::time(Duration::from_secs(60)).validate().is_ok());
    }

    #[test]
    fn concurrent_recording_ends_with_exact_totals() {
        let window = std::sync::Arc::new(Recorder::new(&Window::count(1_000)));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let window = window.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u32 {
                        let failure = (i + t) % 4 == 0;
                        window.record(
                            Sample {
                                failure,
                                slow: false,
                            },
                            Nanos::ZERO,
                        );
                    }
                })
            })
            .collect();
        for thread in threads {
            assert!(thread.join().is_ok());
        }
        let totals = window.totals(Nanos::ZERO);
        assert_eq!(totals.calls, 1_000);
        // The totals equal a count of the ring's bytes.
        let Recorder::Count(ring) = &*window else {
            unreachable!("a count window was built")
        };
        let failures = ring
            .slots
            .iter()
            .filter(|s| s.load(Ordering::Relaxed) & FAILURE != 0)
            .count();
        assert_eq!(totals.failures as usize, failures);
    }
}
