//! The cost of the foundation on the request path: a bare service, then the
//! same service behind Palisade's client-address layer and a passing guard
//! (the simplest rejecting layer), and a refusal rendered as problem+json.
//!
//! ```text
//! cargo bench -p palisade-benches --bench baseline
//! ```

use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Full;
use palisade_core::Rejection;
use palisade_core::client_ip::{ClientIpLayer, ClientIpResolver, PeerAddr};
use palisade_core::guard::{GuardLayer, RequestHead};
use tower::{Service, ServiceBuilder, ServiceExt};

fn request() -> Request<Full<Bytes>> {
    let mut request = Request::get("/api/scans")
        .header("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.5")
        .body(Full::new(Bytes::new()))
        .unwrap_or_default();
    request
        .extensions_mut()
        .insert(PeerAddr(SocketAddr::from(([10, 0, 0, 9], 4000))));
    request
}

async fn ok(_request: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}

fn bench_baseline(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut group = c.benchmark_group("baseline");
    group.measurement_time(Duration::from_secs(3));

    let mut bare = tower::service_fn(ok);
    group.bench_function("bare service", |b| {
        b.iter(|| {
            runtime.block_on(async { black_box(bare.ready().await.map(|s| s.call(request()))) })
        })
    });

    let resolver = ClientIpResolver::builder()
        .trust_proxy("10.0.0.0/8")
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut layered = ServiceBuilder::new()
        .layer(ClientIpLayer::new(resolver))
        .layer(GuardLayer::new("pass", |head: &RequestHead<'_>| {
            if head.client_ip().is_some() {
                Ok(())
            } else {
                Err(Rejection::forbidden())
            }
        }))
        .service(tower::service_fn(ok));
    group.bench_function("client ip + guard (allowed)", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let service = layered
                    .ready()
                    .await
                    .unwrap_or_else(|e: Infallible| match e {});
                black_box(service.call(request()).await)
            })
        })
    });

    let mut refusing = ServiceBuilder::new()
        .layer(GuardLayer::new("refuse", |_: &RequestHead<'_>| {
            Err(Rejection::rate_limited(Duration::from_millis(1500)).with_detail("Slow down."))
        }))
        .service(tower::service_fn(ok));
    group.bench_function("guard refusal (problem+json)", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let service = refusing
                    .ready()
                    .await
                    .unwrap_or_else(|e: Infallible| match e {});
                black_box(service.call(request()).await)
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench_baseline);
criterion_main!(benches);
