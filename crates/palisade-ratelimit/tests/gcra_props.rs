//! Property tests of the limiter against a reference model.
//!
//! The model is a token bucket kept in exact integer "time units": a bucket
//! of `burst × T` that refills one unit per nanosecond, a request of cost
//! `n` taking `n × T`. It is the textbook equivalent of GCRA written the
//! other way round, so agreeing with it on every arrival sequence is
//! agreeing with the definition.

// A failed expectation in a test is a failing test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use palisade_ratelimit::{Quota, gcra};
use proptest::prelude::*;

struct Bucket {
    level: u128,
    capacity: u128,
    emission: u128,
    last: u64,
}

impl Bucket {
    fn new(quota: &Quota, start: u64) -> Self {
        let emission = u128::from(quota.emission_ns());
        let capacity = emission * u128::from(quota.burst_size());
        Self {
            level: capacity,
            capacity,
            emission,
            last: start,
        }
    }

    fn admit(&mut self, now: u64, cost: u32) -> bool {
        self.level = (self.level + u128::from(now - self.last)).min(self.capacity);
        self.last = now;
        let need = self.emission * u128::from(cost);
        if self.level >= need {
            self.level -= need;
            true
        } else {
            false
        }
    }
}

fn quota() -> impl Strategy<Value = Quota> {
    (
        1u32..50,
        prop_oneof![Just(1u64), Just(60), Just(3600)],
        1u32..20,
    )
        .prop_map(|(count, secs, burst)| {
            Quota::new(count, Duration::from_secs(secs))
                .burst(burst)
                .expect("burst >= 1")
        })
}

proptest! {
    #[test]
    fn the_limiter_matches_the_reference_bucket_exactly(
        quota in quota(),
        arrivals in prop::collection::vec((0u64..2_000_000_000, 1u32..4), 1..300),
    ) {
        let start = 1_000_000_000_000u64;
        let mut model = Bucket::new(&quota, start);
        let mut tat = None;
        let mut now = start;
        for (gap, cost) in arrivals {
            now += gap;
            let decision = gcra::decide(&quota, tat, now, cost);
            let expected = model.admit(now, cost);
            prop_assert_eq!(decision.allowed, expected, "at {} cost {}", now - start, cost);
            if decision.allowed {
                tat = Some(decision.tat);
            }
        }
    }

    #[test]
    fn admitted_in_any_window_never_exceeds_burst_plus_rate_times_window(
        quota in quota(),
        gaps in prop::collection::vec(0u64..500_000_000, 1..400),
    ) {
        let mut now = 5_000_000_000u64;
        let mut tat = None;
        let mut admitted: Vec<u64> = Vec::new();
        for gap in gaps {
            now += gap;
            let decision = gcra::decide(&quota, tat, now, 1);
            if decision.allowed {
                tat = Some(decision.tat);
                admitted.push(now);
            }
        }
        // Every window that starts at an admitted request.
        let emission = u128::from(quota.emission_ns());
        for (i, &from) in admitted.iter().enumerate() {
            for (j, &to) in admitted.iter().enumerate().skip(i) {
                let window = u128::from(to - from);
                let count = (j - i + 1) as u128;
                let bound = u128::from(quota.burst_size()) + window / emission;
                prop_assert!(count <= bound, "{} admitted in {} ns, bound {}", count, window, bound);
            }
        }
    }

    #[test]
    fn a_refusal_says_when_the_request_fits(
        quota in quota(),
        used in 0u32..40,
    ) {
        let now = 1_000_000_000u64;
        let mut tat = None;
        for _ in 0..used {
            let d = gcra::decide(&quota, tat, now, 1);
            if d.allowed { tat = Some(d.tat); }
        }
        let refused = gcra::decide(&quota, tat, now, 1);
        if !refused.allowed {
            prop_assert!(refused.retry_after() > Duration::ZERO);
            prop_assert!(refused.retry_after() <= refused.reset());
            let later = now + refused.retry_after_ns;
            prop_assert!(gcra::decide(&quota, tat, later, 1).allowed);
            prop_assert!(!gcra::decide(&quota, tat, later - 1, 1).allowed);
        }
    }
}

#[test]
fn several_threads_on_one_key_admit_exactly_the_models_count() {
    use palisade_core::clock::ManualClock;
    use palisade_core::key::KeyFn;
    use palisade_ratelimit::{MemoryStore, RateLimitLayer, RateLimitPolicy};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tower::{Service, ServiceExt};

    let clock = ManualClock::new();
    let store = MemoryStore::builder()
        .clock(clock.clone())
        .build()
        .expect("store");
    let layer = RateLimitLayer::builder()
        .policy(
            RateLimitPolicy::builder(
                "global",
                KeyFn::Global,
                Quota::per_minute(100).burst(37).expect("burst"),
            )
            .build()
            .expect("policy"),
        )
        .store(store)
        .build()
        .expect("layer");
    let admitted = Arc::new(AtomicU32::new(0));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    std::thread::scope(|scope| {
        for _ in 0..4 {
            let layer = layer.clone();
            let admitted = Arc::clone(&admitted);
            let handle = runtime.handle().clone();
            scope.spawn(move || {
                let mut service =
                    tower::ServiceBuilder::new()
                        .layer(layer)
                        .service(tower::service_fn(|_: http::Request<()>| async {
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Empty::<bytes::Bytes>::new(),
                            ))
                        }));
                for _ in 0..100 {
                    let response = handle.block_on(async {
                        service
                            .ready()
                            .await
                            .expect("ready")
                            .call(http::Request::new(()))
                            .await
                            .expect("infallible")
                    });
                    if response.status() == 200 {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    // At one instant, the model admits exactly the burst.
    assert_eq!(admitted.load(Ordering::Relaxed), 37);
}
