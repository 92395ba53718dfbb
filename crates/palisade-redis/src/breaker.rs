//! A breaker in front of Redis, so that a dead Redis costs a request
//! nothing: after a few calls in a row found it unavailable, calls fail at
//! once for a cooldown, and the caller's failure policy answers.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use palisade_core::clock::Nanos;

/// Stops asking a Redis that keeps failing.
///
/// After [`THRESHOLD`](Self::THRESHOLD) unavailable answers in a row it
/// opens for its cooldown, during which [`admit`](Self::admit) refuses.
/// After the cooldown one call (elected by compare-and-swap) probes Redis
/// while the others are still refused: its success closes the breaker, its
/// failure opens it again. Any success closes it (a call admitted before it
/// opened included: Redis answered), and a late failure of such a call
/// pushes the cooldown on; outcomes are not tied to when they were
/// admitted. A probe whose call is dropped unfinished (a client went away)
/// gives its place back, so the next call probes: the breaker never stays
/// open for want of an answer.
///
/// Lock-free: a closed breaker costs a few atomic loads per call and no
/// write while calls succeed.
#[derive(Debug)]
pub(crate) struct Breaker {
    failures: AtomicU32,
    /// 0: closed; otherwise the end of the cooldown (nanoseconds).
    open_until: AtomicU64,
    probing: AtomicBool,
    cooldown: Duration,
}

/// Leave to make one call to Redis; settle it with
/// [`success`](Self::success) or [`failure`](Self::failure). Dropped
/// unsettled, it counts for nothing (and a probe's place is given back).
#[derive(Debug)]
#[must_use = "settle the permit with the call's outcome"]
pub(crate) struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
}

impl Breaker {
    /// Unavailable answers in a row that open the breaker.
    pub(crate) const THRESHOLD: u32 = 3;

    /// A closed breaker that stays open for `cooldown` once tripped.
    pub(crate) fn new(cooldown: Duration) -> Self {
        Self {
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            cooldown,
        }
    }

    /// Leave to call Redis now, or `None` while the breaker is open (or
    /// another call is probing). The clock is read only when the breaker is
    /// open: a closed one costs one atomic load.
    #[inline]
    pub(crate) fn admit(&self, now: impl FnOnce() -> Nanos) -> Option<Permit<'_>> {
        let open_until = self.open_until.load(Ordering::Acquire);
        if open_until == 0 {
            return Some(Permit {
                breaker: self,
                probe: false,
            });
        }
        let now = now();
        if now.as_u64() < open_until
            || self
                .probing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return None;
        }
        let permit = Permit {
            breaker: self,
            probe: true,
        };
        // A probe that failed just before this election reopened the
        // breaker: read its new cooldown again (dropping the permit gives
        // the place back), so no second probe runs early.
        let reopened = self.open_until.load(Ordering::Acquire);
        (reopened == 0 || now.as_u64() >= reopened).then_some(permit)
    }

    /// Whether the breaker is open (Redis was unavailable just now).
    pub(crate) fn is_open(&self) -> bool {
        self.open_until.load(Ordering::Acquire) != 0
    }

    fn succeeded(&self) {
        // Read before writing: every call on the connection succeeds here,
        // and an unconditional write would bounce this cache line between
        // the cores sharing the connection.
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.open_until.load(Ordering::Acquire) != 0
            && self.open_until.swap(0, Ordering::AcqRel) != 0
        {
            tracing::info!(target: "palisade::redis", "redis breaker closed");
        }
    }

    fn failed(&self, now: Nanos, probe: bool) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= Self::THRESHOLD || probe {
            let until = now.saturating_add(self.cooldown).as_u64().max(1);
            // Logged when the breaker opens, not again for every call that
            // was already under way when it did.
            if self.open_until.swap(until, Ordering::AcqRel) == 0 {
                tracing::warn!(target: "palisade::redis", cooldown = ?self.cooldown, "redis breaker open");
            }
        }
    }
}

impl Permit<'_> {
    /// Redis answered (an error reply counts: Redis is up).
    pub(crate) fn success(self) {
        self.breaker.succeeded();
    }

    /// Redis was unavailable (timeout, connection).
    pub(crate) fn failure(self, now: Nanos) {
        self.breaker.failed(now, self.probe);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        // Settled or not, a probe's place is free again once its permit is
        // gone; `failed` has already reopened the breaker when it failed.
        if self.probe {
            self.breaker.probing.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A breaker of 100 ms cooldown tripped at `t0`, and a time past its
    /// cooldown: (breaker, t0, later).
    fn tripped() -> (Breaker, Nanos, Nanos) {
        let breaker = Breaker::new(Duration::from_millis(100));
        let t0 = Nanos(1_000_000_000);
        for _ in 0..Breaker::THRESHOLD {
            breaker
                .admit(|| t0)
                .unwrap_or_else(|| panic!("closed"))
                .failure(t0);
        }
        (breaker, t0, t0.saturating_add(Duration::from_millis(150)))
    }

    #[test]
    fn the_breaker_lets_one_probe_through_after_its_cooldown() {
        let (breaker, t0, later) = tripped();
        assert!(breaker.is_open());
        assert!(breaker.admit(|| t0).is_none(), "open");
        let probe = breaker
            .admit(|| later)
            .unwrap_or_else(|| panic!("one probe"));
        assert!(breaker.admit(|| later).is_none(), "only one");
        probe.failure(later);
        assert!(
            breaker
                .admit(|| later.saturating_add(Duration::from_millis(50)))
                .is_none(),
            "reopened"
        );
        let again = later.saturating_add(Duration::from_millis(200));
        breaker
            .admit(|| again)
            .unwrap_or_else(|| panic!("a probe"))
            .success();
        assert!(!breaker.is_open());
        assert!(
            breaker.admit(|| again).is_some() && breaker.admit(|| again).is_some(),
            "closed: everyone"
        );
    }

    #[test]
    fn failures_must_come_in_a_row() {
        let breaker = Breaker::new(Duration::from_millis(100));
        let now = Nanos(1_000);
        for _ in 0..10 {
            for _ in 0..Breaker::THRESHOLD - 1 {
                breaker
                    .admit(|| now)
                    .unwrap_or_else(|| panic!("closed"))
                    .failure(now);
            }
            breaker
                .admit(|| now)
                .unwrap_or_else(|| panic!("closed"))
                .success();
        }
        assert!(!breaker.is_open());
    }

    #[test]
    fn a_dropped_probe_gives_its_place_back() {
        let (breaker, _, later) = tripped();
        // The probing call is cancelled before Redis answers.
        drop(breaker.admit(|| later).unwrap_or_else(|| panic!("a probe")));
        let probe = breaker
            .admit(|| later)
            .unwrap_or_else(|| panic!("the next call probes"));
        probe.success();
        assert!(!breaker.is_open());
    }

    #[test]
    fn a_failed_probe_reopens_the_breaker_for_a_new_cooldown() {
        let (breaker, _, later) = tripped();
        // The probe fails and reopens the breaker until `later + 100 ms`:
        // no call probes again before then.
        breaker
            .admit(|| later)
            .unwrap_or_else(|| panic!("a probe"))
            .failure(later);
        assert!(breaker.admit(|| later).is_none());
        let after = later.saturating_add(Duration::from_millis(100));
        assert!(breaker.admit(|| after).is_some_and(|p| p.probe));
    }
}
