//! What a layer does when Redis does not answer.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use palisade_core::clock::{Clock, SystemClock};

use crate::error::RedisError;

/// The explicit choice of what happens to a request when the Redis behind a
/// layer fails (timeout, connection down, a server loading or failing
/// over). The default is [`FailClosed`](FailurePolicy::FailClosed): on
/// doubt, deny.
///
/// In configuration: `"fail_open"`, `"fail_closed"`, or
/// `{ local_fallback = { instances = 4 } }`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum FailurePolicy {
    /// Let the request through: availability over protection.
    FailOpen,
    /// Refuse the request (503): protection over availability. The default,
    /// since on doubt we deny.
    #[default]
    FailClosed,
    /// Decide with a local in-memory limiter at `quota / instances`, so that
    /// `instances` machines together still hold the whole quota.
    LocalFallback {
        /// How many instances share the quota.
        instances: NonZeroU32,
    },
}

/// What to do with one request whose Redis call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FallbackDecision {
    /// Let it through.
    Allow,
    /// Refuse it.
    Deny,
    /// Decide locally, with the local share of the quota.
    Local,
}

impl FailurePolicy {
    /// The decision this policy makes.
    pub fn decision(&self) -> FallbackDecision {
        match self {
            FailurePolicy::FailOpen => FallbackDecision::Allow,
            FailurePolicy::FailClosed => FallbackDecision::Deny,
            FailurePolicy::LocalFallback { .. } => FallbackDecision::Local,
        }
    }

    /// The share of a limit one instance may use locally: `limit / instances`,
    /// rounded down but at least 1 (a zero share would deny everything,
    /// which `FailClosed` says more plainly). `None` for other policies.
    pub fn local_share(&self, limit: u64) -> Option<u64> {
        match self {
            FailurePolicy::LocalFallback { instances } => {
                Some((limit / u64::from(instances.get())).max(1))
            }
            _ => None,
        }
    }
}

/// Counts fallback decisions and logs them without flooding the log: the
/// first failure, then at most one warning per second with the counts.
#[derive(Debug)]
pub struct FailureCounts {
    allowed: AtomicU64,
    denied: AtomicU64,
    local: AtomicU64,
    last_log: AtomicU64,
    clock: Arc<dyn Clock>,
}

impl Default for FailureCounts {
    fn default() -> Self {
        Self::new()
    }
}

impl FailureCounts {
    /// New counters at zero, on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// New counters at zero, on this clock (for tests).
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            allowed: AtomicU64::new(0),
            denied: AtomicU64::new(0),
            local: AtomicU64::new(0),
            last_log: AtomicU64::new(0),
            clock,
        }
    }

    /// Records that `layer` met `error` and applied `policy`; returns the
    /// decision to make.
    pub fn record(
        &self,
        layer: &'static str,
        policy: &FailurePolicy,
        error: &RedisError,
    ) -> FallbackDecision {
        let decision = policy.decision();
        let counter = match decision {
            FallbackDecision::Allow => &self.allowed,
            FallbackDecision::Deny => &self.denied,
            FallbackDecision::Local => &self.local,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let now = self.clock.now().as_u64().max(1);
        let last = self.last_log.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= 1_000_000_000)
            && self
                .last_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let (allowed, denied, local) = self.snapshot();
            tracing::warn!(
                target: "palisade::redis",
                layer,
                %error,
                policy = ?policy,
                fallback_allowed = allowed,
                fallback_denied = denied,
                fallback_local = local,
                "redis unavailable; failure policy applied"
            );
        }
        decision
    }

    /// The counts so far: (allowed, denied, decided locally).
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.allowed.load(Ordering::Relaxed),
            self.denied.load(Ordering::Relaxed),
            self.local.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn local_share_divides_the_quota_and_is_never_zero() {
        let policy = FailurePolicy::LocalFallback {
            instances: NonZeroU32::new(4).unwrap_or(NonZeroU32::MIN),
        };
        assert_eq!(policy.local_share(100), Some(25));
        assert_eq!(policy.local_share(3), Some(1));
        assert_eq!(FailurePolicy::FailOpen.local_share(100), None);
    }

    #[test]
    fn the_default_fails_closed() {
        assert_eq!(FailurePolicy::default().decision(), FallbackDecision::Deny);
    }

    #[test]
    fn every_decision_is_counted() {
        let counts = FailureCounts::new();
        let error = RedisError::Timeout(Duration::from_millis(50));
        for _ in 0..3 {
            counts.record("test", &FailurePolicy::FailOpen, &error);
        }
        counts.record("test", &FailurePolicy::FailClosed, &error);
        assert_eq!(counts.snapshot(), (3, 1, 0));
    }

    #[test]
    fn policies_load_from_configuration() {
        #[derive(serde::Deserialize)]
        struct Config {
            on_failure: FailurePolicy,
        }
        let open: Config =
            toml::from_str(r#"on_failure = "fail_open""#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(open.on_failure, FailurePolicy::FailOpen);
        let local: Config = toml::from_str("on_failure = { local_fallback = { instances = 3 } }")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(local.on_failure.local_share(90), Some(30));
        assert!(
            toml::from_str::<Config>("on_failure = { local_fallback = { instances = 0 } }")
                .is_err()
        );
    }
}
