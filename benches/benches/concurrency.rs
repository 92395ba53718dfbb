//! The per-key concurrency limit beside tower's global `ConcurrencyLimit`,
//! in one run; and load shedding (fixed and adaptive) beside tower's
//! `LoadShed` over its `ConcurrencyLimit`.
//!
//! ```text
//! cargo bench -p palisade-benches --bench concurrency
//! ```
//!
//! Every request is admitted (limits far above the one request in flight),
//! so the admitted path is what is measured: take a place, call, give the
//! place back when the response body is dropped. Futures are polled in place
//! with a no-op waker (each completes on its first poll); compare overheads
//! (layer minus bare service).

use std::convert::Infallible;
use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use palisade_benches::{client_ip, drive};
use palisade_concurrency::adaptive::Gradient2;
use palisade_concurrency::{ConcurrencyLimitLayer, LoadShedLayer};
use palisade_core::key::KeyFn;
use tower::{Layer, Service, ServiceExt};

fn request(ip: IpAddr) -> Request<Body> {
    let mut request = Request::get("/api/scans")
        .body(Body::empty())
        .unwrap_or_default();
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::new(ip, 4000)));
    request
}

async fn ok(_request: Request<Body>) -> Result<Response<Body>, Infallible> {
    Ok(Response::new(Body::empty()))
}

/// One admitted call through `service`: ready, call, and drop the response
/// (which gives the place back).
fn call<S>(service: &mut S, request: Request<Body>) -> bool
where
    S: Service<Request<Body>>,
    S::Error: std::fmt::Debug,
{
    drive(async {
        let service = service.ready().await.unwrap_or_else(|e| panic!("{e:?}"));
        service.call(request).await.is_ok()
    })
}

fn bench_concurrency(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let _entered = runtime.enter();
    let mut group = c.benchmark_group("concurrency_layer");
    group.measurement_time(Duration::from_secs(3));

    let mut bare = tower::service_fn(ok);
    group.bench_function("bare service", |b| {
        b.iter(|| black_box(call(&mut bare, request(client_ip(1)))))
    });

    let mut theirs =
        tower::limit::ConcurrencyLimitLayer::new(1_000_000).layer(tower::service_fn(ok));
    group.bench_function("tower ConcurrencyLimit (global)", |b| {
        b.iter(|| black_box(call(&mut theirs, request(client_ip(1)))))
    });

    let global = ConcurrencyLimitLayer::builder()
        .key(KeyFn::Global)
        .max_in_flight(1_000_000)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut palisade_global = global.layer(tower::service_fn(ok));
    group.bench_function("palisade (global key)", |b| {
        b.iter(|| black_box(call(&mut palisade_global, request(client_ip(1)))))
    });

    let per_ip = ConcurrencyLimitLayer::builder()
        .key(KeyFn::ClientIp)
        .max_in_flight(1_000)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    for (label, keys) in [("1 key", 1u64), ("100k keys", 100_000)] {
        let mut palisade = per_ip.layer(tower::service_fn(ok));
        let mut n = 0u64;
        group.bench_function(
            BenchmarkId::new("palisade per client address", label),
            |b| {
                b.iter(|| {
                    n = (n + 7_919) % keys;
                    black_box(call(&mut palisade, request(client_ip(n))))
                })
            },
        );
    }
    group.finish();

    let mut group = c.benchmark_group("load_shed_layer");
    group.measurement_time(Duration::from_secs(3));
    let mut shed_theirs = tower::ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(1_000_000)
        .service(tower::service_fn(ok));
    group.bench_function("tower LoadShed + ConcurrencyLimit", |b| {
        b.iter(|| black_box(call(&mut shed_theirs, request(client_ip(1)))))
    });
    let fixed = LoadShedLayer::builder()
        .capacity(1_000_000)
        .class("critical", 100)
        .class("default", 90)
        .default_class("default")
        .route_prefix("/health", "critical")
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut shed_fixed = fixed.layer(tower::service_fn(ok));
    group.bench_function("palisade, fixed capacity, two classes", |b| {
        b.iter(|| black_box(call(&mut shed_fixed, request(client_ip(1)))))
    });
    let adaptive = LoadShedLayer::builder()
        .adaptive(
            Gradient2::builder()
                .initial_limit(100_000)
                .max_limit(1_000_000)
                .build()
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut shed_adaptive = adaptive.layer(tower::service_fn(ok));
    group.bench_function("palisade, adaptive (Gradient2)", |b| {
        b.iter(|| black_box(call(&mut shed_adaptive, request(client_ip(1)))))
    });
    group.finish();
}

criterion_group!(benches, bench_concurrency);
criterion_main!(benches);
