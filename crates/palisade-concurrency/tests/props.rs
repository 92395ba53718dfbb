//! Properties: however many threads race, no key ever has more requests in
//! its inner service than its limit, with or without a queue, and a load
//! shedder never exceeds its capacity; adaptive limits stay in their
//! bounds whatever they are fed.

// A failed expectation in a test is a failing test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use palisade_concurrency::adaptive::{Aimd, Gradient2, LimitAlgorithm, Window};
use palisade_concurrency::{ConcurrencyLimitLayer, LoadShedLayer};
use palisade_core::client_ip::PeerAddr;
use palisade_core::key::KeyFn;
use proptest::prelude::*;
use tower::{Layer, Service};

/// Requests inside the inner service (from call until the body is dropped),
/// per key, and the most ever seen.
#[derive(Default)]
struct Gauges {
    active: [AtomicU32; 4],
    max: [AtomicU32; 4],
    total_active: AtomicU32,
    total_max: AtomicU32,
}

/// A body that counts itself active until dropped.
struct Tracked {
    gauges: Arc<Gauges>,
    key: usize,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.gauges.active[self.key].fetch_sub(1, Ordering::SeqCst);
        self.gauges.total_active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(None)
    }

    // Not at its end until dropped, so the permit stays with the body.
    fn is_end_stream(&self) -> bool {
        false
    }
}

#[derive(Clone)]
struct Inner(Arc<Gauges>);

impl Service<Request<()>> for Inner {
    type Response = Response<Tracked>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Response<Tracked>, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<()>) -> Self::Future {
        // Addresses 192.0.2.1 to .4 are keys 0 to 3.
        let key = match request
            .extensions()
            .get::<PeerAddr>()
            .map(|peer| peer.0.ip())
        {
            Some(std::net::IpAddr::V4(v4)) => usize::from(v4.octets()[3].saturating_sub(1)).min(3),
            _ => 0,
        };
        let gauges = &self.0;
        let now = gauges.active[key].fetch_add(1, Ordering::SeqCst) + 1;
        gauges.max[key].fetch_max(now, Ordering::SeqCst);
        let total = gauges.total_active.fetch_add(1, Ordering::SeqCst) + 1;
        gauges.total_max.fetch_max(total, Ordering::SeqCst);
        std::future::ready(Ok(Response::new(Tracked {
            gauges: Arc::clone(gauges),
            key,
        })))
    }
}

fn request(key: u8) -> Request<()> {
    let mut request = Request::new(());
    request
        .extensions_mut()
        .insert(PeerAddr(SocketAddr::from(([192, 0, 2, key + 1], 1))));
    request
}

/// A per-thread pseudo-random sequence from the case's seed.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn concurrency_per_key_never_exceeds_the_limit_under_many_threads(
        limit in 1u32..6,
        threads in 2usize..8,
        keys in 1u8..4,
        operations in 50usize..300,
        seed in 1u64..u64::MAX,
    ) {
        let gauges = Arc::new(Gauges::default());
        let layer = ConcurrencyLimitLayer::builder()
            .key(KeyFn::ClientIp)
            .max_in_flight(limit)
            .build()
            .unwrap();
        let service = layer.layer(Inner(Arc::clone(&gauges)));
        let refused = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for thread in 0..threads {
                let mut service = service.clone();
                let refused = &refused;
                scope.spawn(move || {
                    let mut state = seed ^ (thread as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                    let mut held = Vec::new();
                    for _ in 0..operations {
                        let key = (xorshift(&mut state) % u64::from(keys)) as u8;
                        let response = service.call(request(key)).now_or_never().unwrap().unwrap();
                        match response.status() {
                            StatusCode::OK => held.push(response),
                            StatusCode::TOO_MANY_REQUESTS => { refused.fetch_add(1, Ordering::Relaxed); }
                            other => panic!("unexpected {other}"),
                        }
                        // Let go of a random number of held responses.
                        let keep = (xorshift(&mut state) % 4) as usize;
                        while held.len() > keep {
                            let index = (xorshift(&mut state) as usize) % held.len();
                            held.swap_remove(index);
                        }
                    }
                });
            }
        });
        for key in 0..usize::from(keys) {
            prop_assert!(gauges.max[key].load(Ordering::SeqCst) <= limit, "key {key}");
            prop_assert_eq!(gauges.active[key].load(Ordering::SeqCst), 0);
            prop_assert_eq!(layer.in_flight_of(&request(key as u8)), 0, "every place given back");
        }
    }

    #[test]
    fn a_load_shedder_never_exceeds_its_capacity_under_many_threads(
        capacity in 1u32..8,
        threads in 2usize..8,
        operations in 50usize..300,
        seed in 1u64..u64::MAX,
    ) {
        let gauges = Arc::new(Gauges::default());
        let layer = LoadShedLayer::builder()
            .capacity(capacity)
            .class("default", 100)
            .class("bulk", 50)
            .route_prefix("/bulk", "bulk")
            .build()
            .unwrap();
        let handle = layer.handle();
        let service = layer.layer(Inner(Arc::clone(&gauges)));
        std::thread::scope(|scope| {
            for thread in 0..threads {
                let mut service = service.clone();
                scope.spawn(move || {
                    let mut state = seed ^ (thread as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                    let mut held = Vec::new();
                    for _ in 0..operations {
                        let mut request = request(0);
                        if xorshift(&mut state).is_multiple_of(2) {
                            *request.uri_mut() = "/bulk".parse().unwrap();
                        }
                        let response = service.call(request).now_or_never().unwrap().unwrap();
                        if response.status() == StatusCode::OK {
                            held.push(response);
                        }
                        let keep = (xorshift(&mut state) % 3) as usize;
                        while held.len() > keep {
                            let index = (xorshift(&mut state) as usize) % held.len();
                            held.swap_remove(index);
                        }
                    }
                });
            }
        });
        prop_assert!(gauges.total_max.load(Ordering::SeqCst) <= capacity);
        prop_assert_eq!(handle.in_flight(), 0);
    }

    #[test]
    fn queued_requests_never_exceed_the_limit_and_all_finish(
        limit in 1u32..4,
        tasks in 4usize..40,
        hold_yields in 0usize..5,
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_time()
            .build()
            .unwrap();
        let gauges = Arc::new(Gauges::default());
        let layer = ConcurrencyLimitLayer::builder()
            .max_in_flight(limit)
            .queue(16, Duration::from_secs(5))
            .build()
            .unwrap();
        let service = layer.layer(Inner(Arc::clone(&gauges)));
        let (ok, refused) = runtime.block_on(async move {
            let handles: Vec<_> = (0..tasks)
                .map(|i| {
                    let mut service = service.clone();
                    tokio::spawn(async move {
                        let call = service.call(request(0));
                        // Some callers give up while queued.
                        if i % 5 == 4 {
                            let _ = tokio::time::timeout(Duration::from_micros(50), call).await;
                            return None;
                        }
                        let response = call.await.unwrap();
                        for _ in 0..hold_yields {
                            tokio::task::yield_now().await;
                        }
                        Some(response.status())
                    })
                })
                .collect();
            let mut ok = 0;
            let mut refused = 0;
            for handle in handles {
                match handle.await.unwrap() {
                    Some(StatusCode::OK) => ok += 1,
                    Some(_) => refused += 1,
                    None => {}
                }
            }
            (ok, refused)
        });
        prop_assert!(gauges.total_max.load(Ordering::SeqCst) <= limit);
        prop_assert_eq!(layer.in_flight_of(&request(0)), 0, "no place leaked");
        // The queue (16) is refused only when full.
        prop_assert!(tasks > 16 + limit as usize || refused == 0, "ok {ok}, refused {refused}");
    }

    #[test]
    fn adaptive_limits_stay_within_their_bounds(
        min in 1u32..10,
        span in 0u32..100,
        windows in proptest::collection::vec((0u32..1000, 0u64..5_000, 0u32..5, 0u32..200), 1..200),
    ) {
        let max = min + span;
        let mut aimd = Aimd::builder()
            .initial_limit(min)
            .min_limit(min)
            .max_limit(max)
            .latency_threshold(Duration::from_millis(100))
            .build()
            .unwrap();
        let mut gradient = Gradient2::builder()
            .initial_limit(max)
            .min_limit(min)
            .max_limit(max)
            .build()
            .unwrap();
        for (samples, latency_ms, dropped, max_in_flight) in windows {
            let window = Window {
                samples,
                average_latency: Duration::from_millis(latency_ms),
                dropped,
                max_in_flight,
                limit: 0,
            };
            let a = aimd.update(&window);
            let g = gradient.update(&window);
            prop_assert!((min..=max).contains(&a), "aimd {a}");
            prop_assert!((min..=max).contains(&g), "gradient {g}");
        }
    }
}
