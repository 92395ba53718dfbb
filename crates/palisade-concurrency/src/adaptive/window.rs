//! Collecting one window of measurements on the request path, with atomics
//! only, and handing it to the algorithm once the window is over.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, TryLockError};
use std::time::Duration;

use palisade_core::clock::{Nanos, duration_to_nanos};

use super::{LimitAlgorithm, Window};

/// Completions and summed latency share one word, so that a window is taken
/// with one swap and never sees a count without its latency.
const COUNT_SHIFT: u32 = 40;
const SUM_MASK: u64 = (1 << COUNT_SHIFT) - 1;
const MAX_COUNT: u64 = (1 << (64 - COUNT_SHIFT)) - 1;
/// One latency counts for at most this many microseconds (71 minutes), so a
/// single stuck request cannot fill the sum.
const MAX_SAMPLE_MICROS: u64 = u32::MAX as u64;

/// The adaptive part of a limit: the algorithm, and the window being filled.
#[derive(Debug)]
pub(crate) struct AdaptiveState {
    algorithm: Mutex<Box<dyn LimitAlgorithm>>,
    /// Completions (high bits) and their summed latency in microseconds.
    packed: AtomicU64,
    dropped: AtomicU32,
    max_in_flight: AtomicU32,
    /// When the current window started, in the clock's nanoseconds.
    started: AtomicU64,
    length: u64,
    min_samples: u64,
}

impl AdaptiveState {
    pub(crate) fn new(
        algorithm: Box<dyn LimitAlgorithm>,
        now: Nanos,
        length: Duration,
        min_samples: u32,
    ) -> Self {
        Self {
            algorithm: Mutex::new(algorithm),
            packed: AtomicU64::new(0),
            dropped: AtomicU32::new(0),
            max_in_flight: AtomicU32::new(0),
            started: AtomicU64::new(now.as_u64()),
            length: duration_to_nanos(length),
            min_samples: u64::from(min_samples),
        }
    }

    /// Notes how many requests are in flight after an admission.
    #[inline]
    pub(crate) fn note_in_flight(&self, in_flight: u32) {
        // Written only for a new maximum: a write on every admission would
        // bounce this cache line between cores.
        if in_flight > self.max_in_flight.load(Ordering::Relaxed) {
            self.max_in_flight.fetch_max(in_flight, Ordering::Relaxed);
        }
    }

    /// Records one completion. When it closes the window (long enough, with
    /// enough samples) and no other request is closing it right now, the
    /// algorithm is asked, and its new limit returned. Never blocks: the
    /// algorithm's lock is only tried.
    pub(crate) fn record(
        &self,
        now: Nanos,
        latency: Duration,
        dropped: bool,
        // The current limit and requests in flight, read only when this
        // completion closes the window (most do not).
        current: impl FnOnce() -> (u32, u32),
    ) -> Option<u32> {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .min(MAX_SAMPLE_MICROS);
        // A window that is somehow full drops the sample rather than wrap.
        let samples =
            match self
                .packed
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |packed| {
                    let count = packed >> COUNT_SHIFT;
                    let sum = packed & SUM_MASK;
                    (count < MAX_COUNT && sum + micros <= SUM_MASK)
                        .then(|| ((count + 1) << COUNT_SHIFT) | (sum + micros))
                }) {
                Ok(before) => (before >> COUNT_SHIFT) + 1,
                Err(unchanged) => unchanged >> COUNT_SHIFT,
            };
        if dropped {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        let started = self.started.load(Ordering::Acquire);
        if now.as_u64().saturating_sub(started) < self.length || samples < self.min_samples {
            return None;
        }
        let mut algorithm = match self.algorithm.try_lock() {
            Ok(guard) => guard,
            // A panic inside an algorithm left it as it was mid-update; its
            // state is plain numbers, still usable.
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        // Another request may have closed this very window between our
        // checks and the lock.
        if self.started.load(Ordering::Acquire) != started {
            return None;
        }
        let (limit, in_flight) = current();
        let packed = self.packed.swap(0, Ordering::AcqRel);
        let dropped = self.dropped.swap(0, Ordering::AcqRel);
        // The next window starts with what is in flight now.
        let max_in_flight = self.max_in_flight.swap(in_flight, Ordering::AcqRel);
        self.started.store(now.as_u64(), Ordering::Release);
        let samples = packed >> COUNT_SHIFT;
        let window = Window {
            samples: u32::try_from(samples).unwrap_or(u32::MAX),
            average_latency: Duration::from_micros((packed & SUM_MASK) / samples.max(1)),
            dropped,
            max_in_flight: max_in_flight.max(in_flight),
            limit,
        };
        Some(algorithm.update(&window))
    }

    /// The algorithm's current limit.
    pub(crate) fn initial_limit(&self) -> u32 {
        match self.algorithm.lock() {
            Ok(algorithm) => algorithm.limit(),
            Err(poisoned) => poisoned.into_inner().limit(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Remembers the windows it was given.
    #[derive(Debug, Default)]
    struct Recorder {
        windows: std::sync::Arc<Mutex<Vec<Window>>>,
    }

    impl LimitAlgorithm for Recorder {
        fn limit(&self) -> u32 {
            7
        }

        fn update(&mut self, window: &Window) -> u32 {
            if let Ok(mut windows) = self.windows.lock() {
                windows.push(*window);
            }
            7
        }
    }

    #[test]
    fn a_window_closes_once_long_enough_with_enough_samples_and_averages_them() {
        let recorder = Recorder::default();
        let windows = std::sync::Arc::clone(&recorder.windows);
        let state = AdaptiveState::new(Box::new(recorder), Nanos(0), Duration::from_millis(100), 3);
        let ms = Duration::from_millis;
        state.note_in_flight(5);
        assert_eq!(state.record(Nanos(10), ms(10), false, || (9, 4)), None);
        assert_eq!(
            state.record(Nanos(200_000_000), ms(20), true, || (9, 3)),
            None,
            "two samples only"
        );
        assert_eq!(
            state.record(Nanos(200_000_001), ms(30), false, || (9, 2)),
            Some(7)
        );
        let seen = windows.lock().map(|w| w.clone()).unwrap_or_default();
        assert_eq!(
            seen,
            vec![Window {
                samples: 3,
                average_latency: ms(20),
                dropped: 1,
                max_in_flight: 5,
                limit: 9
            }]
        );
        // The next window starts empty, from the close.
        assert_eq!(
            state.record(Nanos(250_000_000), ms(1), false, || (7, 1)),
            None
        );
    }
}
