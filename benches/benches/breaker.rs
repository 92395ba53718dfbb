//! The breaker's closed path beside tower-resilience's circuit breaker, in
//! one run, both judging HTTP responses (5xx fails) over a count window of
//! 100 calls.
//!
//! ```text
//! cargo bench -p palisade-benches --bench breaker
//! ```
//!
//! Every call succeeds, so the closed path, the one every call takes while
//! the upstream is healthy, is what is measured. Futures are polled in place
//! with a no-op waker (every one here completes on its first poll), so no
//! scheduler cost hides the layers' own; each figure still includes the
//! request construction and inner call of the bare service, so compare
//! overheads (layer minus bare).

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;

use axum::body::Body;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use palisade_benches::drive;
use palisade_breaker::{BreakerPolicy, CircuitBreakerLayer, Window};
use palisade_core::key::KeyFn;
use tower::{Layer, Service, ServiceExt};

fn request() -> Request<Body> {
    Request::get("/api/orders")
        .body(Body::empty())
        .unwrap_or_default()
}

async fn ok(_request: Request<Body>) -> Result<Response<Body>, Infallible> {
    Ok(Response::new(Body::empty()))
}

fn bench_breaker(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    // Inside the runtime's context, for any layer that needs its timer.
    let _entered = runtime.enter();
    let mut group = c.benchmark_group("breaker_closed");
    group.measurement_time(Duration::from_secs(3));

    let mut bare = tower::service_fn(ok);
    group.bench_function("bare service", |b| {
        b.iter(|| {
            drive(async {
                let service = bare.ready().await.unwrap_or_else(|e| match e {});
                black_box(service.call(request()).await)
            })
        })
    });

    let policy = || {
        BreakerPolicy::builder()
            .window(Window::count(100))
            .failure_rate(0.5)
            .minimum_calls(20)
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let ours = CircuitBreakerLayer::builder("bench")
        .policy(policy())
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut palisade = ours.layer(tower::service_fn(ok));
    group.bench_function("palisade", |b| {
        b.iter(|| {
            drive(async {
                let service = palisade.ready().await.unwrap_or_else(|e| match e {});
                black_box(service.call(request()).await)
            })
        })
    });

    // The same with slow-call detection (two clock reads per call) and a
    // time window.
    let timed = CircuitBreakerLayer::builder("bench")
        .policy(
            BreakerPolicy::builder()
                .window(Window::time(Duration::from_secs(10)))
                .slow_calls(Duration::from_secs(1), 0.5)
                .build()
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut palisade_timed = timed.layer(tower::service_fn(ok));
    group.bench_function("palisade, time window + slow calls", |b| {
        b.iter(|| {
            drive(async {
                let service = palisade_timed.ready().await.unwrap_or_else(|e| match e {});
                black_box(service.call(request()).await)
            })
        })
    });

    // One breaker per route template (a keyed-store lookup per call).
    let keyed = CircuitBreakerLayer::builder("bench")
        .policy(policy())
        .per_key(KeyFn::Method)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut palisade_keyed = keyed.layer(tower::service_fn(ok));
    group.bench_function("palisade, per key", |b| {
        b.iter(|| {
            drive(async {
                let service = palisade_keyed.ready().await.unwrap_or_else(|e| match e {});
                black_box(service.call(request()).await)
            })
        })
    });

    let theirs = tower_resilience_circuitbreaker::CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(100)
        .minimum_number_of_calls(20)
        .failure_classifier(|result: &Result<Response<Body>, Infallible>| {
            result
                .as_ref()
                .map_or(true, |response| response.status().is_server_error())
        })
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut resilience = theirs.layer(tower::service_fn(ok));
    group.bench_function("tower-resilience", |b| {
        b.iter(|| {
            drive(async {
                let service = resilience.ready().await.unwrap_or_else(|e| panic!("{e}"));
                black_box(service.call(request()).await.is_ok())
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench_breaker);
criterion_main!(benches);
