//! The rate-limit layer beside tower_governor (with its headers) and the raw
//! decision beside governor's `check_key`, in one run, at one key and at
//! 100,000 keys (client addresses).
//!
//! ```text
//! cargo bench -p palisade-benches --bench ratelimit
//! ```
//!
//! Every request is allowed (the quotas are far above the request rate), so
//! the allowed path, the one every request takes, is what is measured. Both
//! layers add their rate-limit headers to the response.

use std::convert::Infallible;
use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use criterion::{BenchmarkId, Criterion, criterion_group};
use governor::{Quota as GovernorQuota, RateLimiter};
use http::{Request, Response};
use palisade_benches::{client_ip, drive};
use palisade_core::key::KeyFn;
use palisade_ratelimit::{HeaderOptions, MemoryStore, Quota, RateLimitLayer, RateLimitPolicy};
use tower::{Layer, Service, ServiceExt};
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::PeerIpKeyExtractor;

const BURST: u32 = 1_000_000_000;

fn request(ip: IpAddr) -> Request<Body> {
    let mut request = Request::get("/api/scans")
        .body(Body::empty())
        .unwrap_or_default();
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::new(ip, 4000)));
    request
}

/// Answers at once, with a `content-type` as every real handler's response
/// has (so the response's header map is allocated by the handler, not by
/// whichever layer adds the first header).
async fn ok(_request: Request<Body>) -> Result<Response<Body>, Infallible> {
    let mut response = Response::new(Body::empty());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// The layers compared: palisade with fields on every response, palisade
/// with fields on refusals only, and tower_governor with its headers.
fn layers() -> (
    RateLimitLayer,
    RateLimitLayer,
    GovernorLayer<PeerIpKeyExtractor, governor::middleware::StateInformationMiddleware, Body>,
) {
    let ours = RateLimitLayer::builder()
        .policy(
            RateLimitPolicy::builder("per_ip", KeyFn::ClientIp, Quota::per_second(BURST))
                .build()
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let ours_quiet = RateLimitLayer::builder()
        .policy(
            RateLimitPolicy::builder("per_ip", KeyFn::ClientIp, Quota::per_second(BURST))
                .build()
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .headers(HeaderOptions {
            on_allowed: false,
            legacy: false,
        })
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let config = GovernorConfigBuilder::default()
        .per_nanosecond(1)
        .burst_size(BURST)
        .key_extractor(PeerIpKeyExtractor)
        .use_headers()
        .finish()
        .unwrap_or_else(|| panic!("tower_governor config"));
    let theirs: GovernorLayer<_, _, Body> = GovernorLayer::new(Arc::new(config));
    (ours, ours_quiet, theirs)
}

/// A client address as the store's key bytes (IPv4 mapped into IPv6).
fn ip_key(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn bench_ratelimit(c: &mut Criterion) {
    let mut group = c.benchmark_group("ratelimit_layer");
    group.measurement_time(Duration::from_secs(3));

    let (ours, ours_quiet, theirs) = layers();

    for (label, keys) in [("1 key", 1u64), ("100k keys", 100_000)] {
        let mut bare = tower::service_fn(ok);
        let mut n = 0u64;
        group.bench_function(BenchmarkId::new("bare service", label), |b| {
            b.iter(|| {
                n = (n + 7_919) % keys;
                drive(async {
                    let service = bare.ready().await.unwrap_or_else(|e| match e {});
                    black_box(service.call(request(client_ip(n))).await)
                })
            })
        });
        let mut palisade = ours.layer(tower::service_fn(ok));
        let mut n = 0u64;
        group.bench_function(BenchmarkId::new("palisade", label), |b| {
            b.iter(|| {
                n = (n + 7_919) % keys;
                drive(async {
                    let service = palisade.ready().await.unwrap_or_else(|e| match e {});
                    let response = service.call(request(client_ip(n))).await;
                    debug_assert!(
                        response
                            .as_ref()
                            .is_ok_and(|r| r.headers().contains_key("ratelimit"))
                    );
                    black_box(response)
                })
            })
        });
        let mut quiet = ours_quiet.layer(tower::service_fn(ok));
        let mut n = 0u64;
        group.bench_function(
            BenchmarkId::new("palisade, fields on refusals only", label),
            |b| {
                b.iter(|| {
                    n = (n + 7_919) % keys;
                    drive(async {
                        let service = quiet.ready().await.unwrap_or_else(|e| match e {});
                        black_box(service.call(request(client_ip(n))).await)
                    })
                })
            },
        );
        let mut governed = theirs.layer(tower::service_fn(ok));
        let mut n = 0u64;
        group.bench_function(BenchmarkId::new("tower_governor", label), |b| {
            b.iter(|| {
                n = (n + 7_919) % keys;
                drive(async {
                    let service = governed.ready().await.unwrap_or_else(|e| panic!("{e}"));
                    black_box(service.call(request(client_ip(n))).await)
                })
            })
        });
    }
    group.finish();

    // The decision alone: palisade's store beside governor's check_key.
    let mut group = c.benchmark_group("ratelimit_decision");
    group.measurement_time(Duration::from_secs(3));
    let store = MemoryStore::default();
    let per_ip = store.namespace("per_ip");
    let quota = Quota::per_second(BURST);
    let limiter = RateLimiter::<IpAddr, _, _>::keyed(GovernorQuota::per_second(
        NonZeroU32::new(BURST).unwrap_or(NonZeroU32::MAX),
    ));
    for (label, keys) in [("1 key", 1u64), ("100k keys", 100_000)] {
        let mut n = 0u64;
        group.bench_function(BenchmarkId::new("palisade check_in", label), |b| {
            b.iter(|| {
                n = (n + 7_919) % keys;
                black_box(
                    store
                        .check_in(&per_ip, &ip_key(client_ip(n)), &quota, 1)
                        .map(|d| d.allowed),
                )
            })
        });
        let mut n = 0u64;
        group.bench_function(BenchmarkId::new("governor check_key", label), |b| {
            b.iter(|| {
                n = (n + 7_919) % keys;
                black_box(limiter.check_key(&client_ip(n)).is_ok())
            })
        });
    }
    group.finish();
}

/// With `RATELIMIT_COUNT=<0..5>` (bare, palisade, palisade with fields on
/// refusals only, tower_governor; then the decision alone: palisade's
/// `check_in`, governor's `check_key`) and `RATELIMIT_ITERATIONS=n`, makes
/// `n` requests through that contender (from `RATELIMIT_KEYS` client
/// addresses, default 1) and exits, for counting instructions under
/// `valgrind --tool=callgrind` (a count the load of a shared machine does not
/// move; `benches/scripts/count`). It also prints the wall time per request,
/// for timing the contenders in alternation (`benches/scripts/alternate`).
fn count_mode() -> bool {
    let (Ok(index), Ok(iterations)) = (
        std::env::var("RATELIMIT_COUNT"),
        std::env::var("RATELIMIT_ITERATIONS"),
    ) else {
        return false;
    };
    let index: usize = index.parse().unwrap_or_else(|e| panic!("{e}"));
    let iterations: u64 = iterations.parse().unwrap_or_else(|e| panic!("{e}"));
    let keys: u64 = std::env::var("RATELIMIT_KEYS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(1)
        .max(1);
    let (ours, ours_quiet, theirs) = layers();
    let mut n = 0u64;
    let started = std::time::Instant::now();
    macro_rules! run {
        ($service:expr) => {{
            let mut service = $service;
            for _ in 0..iterations {
                n = (n + 7_919) % keys;
                let ip = client_ip(n);
                black_box(drive(async {
                    let service = service.ready().await.unwrap_or_else(|e| panic!("{e}"));
                    service.call(request(ip)).await.is_ok()
                }));
            }
        }};
    }
    // The decision alone: palisade's store, governor's `check_key`.
    let store = MemoryStore::default();
    let per_ip = store.namespace("per_ip");
    let quota = Quota::per_second(BURST);
    let limiter = RateLimiter::<IpAddr, _, _>::keyed(GovernorQuota::per_second(
        NonZeroU32::new(BURST).unwrap_or(NonZeroU32::MAX),
    ));
    match index {
        0 => run!(tower::service_fn(ok)),
        1 => run!(ours.layer(tower::service_fn(ok))),
        2 => run!(ours_quiet.layer(tower::service_fn(ok))),
        3 => run!(theirs.layer(tower::service_fn(ok))),
        4 => {
            for _ in 0..iterations {
                n = (n + 7_919) % keys;
                black_box(
                    store
                        .check_in(&per_ip, &ip_key(client_ip(n)), &quota, 1)
                        .is_ok_and(|d| d.allowed),
                );
            }
        }
        _ => {
            for _ in 0..iterations {
                n = (n + 7_919) % keys;
                black_box(limiter.check_key(&client_ip(n)).is_ok());
            }
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "contender {index}: {iterations} requests, {:.1} ns each",
        elapsed.as_nanos() as f64 / iterations.max(1) as f64
    );
    true
}

criterion_group!(benches, bench_ratelimit);

fn main() {
    if count_mode() {
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
