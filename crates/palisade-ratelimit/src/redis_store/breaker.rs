//! The breaker in front of Redis.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use palisade_core::clock::Nanos;

/// Stops asking a Redis that keeps failing: after three consecutive
/// unavailable answers it opens for a cooldown, during which requests go
/// straight to the failure policy. After the cooldown one request (elected
/// by compare-and-swap) probes Redis while the others keep the fallback; its
/// success closes the breaker, its failure opens it again.
#[derive(Debug)]
pub(super) struct Breaker {
    failures: AtomicU32,
    /// 0: closed; otherwise the end of the cooldown (nanoseconds).
    open_until: AtomicU64,
    probing: AtomicBool,
    cooldown: Duration,
}

impl Breaker {
    const THRESHOLD: u32 = 3;

    pub(super) fn new(cooldown: Duration) -> Self {
        Self {
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            cooldown,
        }
    }

    pub(super) fn allows(&self, now: Nanos) -> bool {
        let open_until = self.open_until.load(Ordering::Acquire);
        if open_until == 0 {
            return true;
        }
        now.as_u64() >= open_until
            && self
                .probing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    pub(super) fn success(&self) {
        self.failures.store(0, Ordering::Relaxed);
        if self.open_until.swap(0, Ordering::AcqRel) != 0 {
            tracing::info!(target: "palisade::ratelimit", "redis breaker closed");
        }
        self.probing.store(false, Ordering::Release);
    }

    pub(super) fn failure(&self, now: Nanos) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let probing = self.probing.swap(false, Ordering::AcqRel);
        if failures >= Self::THRESHOLD || probing {
            let until = now.saturating_add(self.cooldown).as_u64().max(1);
            self.open_until.store(until, Ordering::Release);
            tracing::warn!(target: "palisade::ratelimit", cooldown = ?self.cooldown, "redis breaker open");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_lets_one_probe_through_after_its_cooldown() {
        let breaker = Breaker::new(Duration::from_millis(100));
        let t0 = Nanos(1_000_000_000);
        for _ in 0..3 {
            assert!(breaker.allows(t0));
            breaker.failure(t0);
        }
        assert!(!breaker.allows(t0), "open");
        let later = t0.saturating_add(Duration::from_millis(150));
        assert!(breaker.allows(later), "one probe");
        assert!(!breaker.allows(later), "only one");
        breaker.failure(later);
        assert!(
            !breaker.allows(later.saturating_add(Duration::from_millis(50))),
            "reopened"
        );
        let again = later.saturating_add(Duration::from_millis(200));
        assert!(breaker.allows(again));
        breaker.success();
        assert!(
            breaker.allows(again) && breaker.allows(again),
            "closed: everyone"
        );
    }
}
