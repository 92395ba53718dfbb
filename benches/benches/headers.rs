//! The security headers layer (helmet preset) beside 12 stacked tower-http
//! `SetResponseHeaderLayer::overriding` layers and axum-helmet, in one run.
//!
//! ```text
//! cargo bench -p palisade-benches --bench headers
//! ```
//!
//! All three add helmet's 12 headers (HSTS included: ours is told the
//! request is HTTPS) to a response that already has a `content-type`;
//! ours also checks the response against the 69 leaky header names.

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;

use axum::body::Body;
use axum_helmet::{Helmet, HelmetLayer};
use criterion::{Criterion, criterion_group, criterion_main};
use http::header::{
    CONTENT_SECURITY_POLICY, REFERRER_POLICY, STRICT_TRANSPORT_SECURITY, X_CONTENT_TYPE_OPTIONS,
    X_DNS_PREFETCH_CONTROL, X_FRAME_OPTIONS, X_XSS_PROTECTION,
};
use http::{HeaderName, HeaderValue, Request, Response};
use palisade_headers::SecurityHeaders;
use palisade_headers::csp::{ContentSecurityPolicy, Source};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_http::set_header::SetResponseHeaderLayer;

const HELMET_CSP: &str = "default-src 'self'; base-uri 'self'; font-src 'self' https: data:; form-action 'self'; frame-ancestors 'self'; img-src 'self' data:; object-src 'none'; script-src 'self'; script-src-attr 'none'; style-src 'self' https: 'unsafe-inline'; upgrade-insecure-requests";

fn request() -> Request<Body> {
    Request::get("/").body(Body::empty()).unwrap_or_default()
}

async fn ok(_request: Request<Body>) -> Result<Response<Body>, Infallible> {
    let mut response = Response::new(Body::empty());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(response)
}

fn set(name: &'static str, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::overriding(
        HeaderName::from_static(name),
        HeaderValue::from_static(value),
    )
}

macro_rules! bench_service {
    ($group:expr, $runtime:expr, $name:expr, $service:expr) => {{
        let mut service = $service;
        $group.bench_function($name, |b| {
            b.iter(|| {
                $runtime.block_on(async {
                    let ready = service.ready().await.unwrap_or_else(|e| panic!("{e:?}"));
                    black_box(ready.call(request()).await)
                })
            })
        });
    }};
}

fn bench_headers(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut group = c.benchmark_group("headers_layer");
    group.measurement_time(Duration::from_secs(3));

    let ours = SecurityHeaders::helmet()
        .assume_https()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let ours_nonce = SecurityHeaders::helmet()
        .assume_https()
        .csp(ContentSecurityPolicy::helmet().script_src([Source::SelfOrigin, Source::Nonce]))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let theirs: HelmetLayer = Helmet::default()
        .try_into()
        .unwrap_or_else(|e| panic!("{e:?}"));

    // Sanity: every contender sets the 12 headers.
    for headers in [
        runtime
            .block_on(ours.layer(tower::service_fn(ok)).oneshot(request()))
            .map(|r| r.headers().len()),
        runtime
            .block_on(theirs.layer(tower::service_fn(ok)).oneshot(request()))
            .map(|r| r.headers().len()),
    ] {
        assert_eq!(headers.ok(), Some(13));
    }

    bench_service!(group, runtime, "bare service", tower::service_fn(ok));
    bench_service!(
        group,
        runtime,
        "palisade helmet()",
        ours.layer(tower::service_fn(ok))
    );
    bench_service!(
        group,
        runtime,
        "palisade helmet() with CSP nonce",
        ours_nonce.layer(tower::service_fn(ok))
    );
    let stacked = ServiceBuilder::new()
        .layer(SetResponseHeaderLayer::overriding(
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(HELMET_CSP),
        ))
        .layer(set("cross-origin-opener-policy", "same-origin"))
        .layer(set("cross-origin-resource-policy", "same-origin"))
        .layer(set("origin-agent-cluster", "?1"))
        .layer(SetResponseHeaderLayer::overriding(
            REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            X_DNS_PREFETCH_CONTROL,
            HeaderValue::from_static("off"),
        ))
        .layer(set("x-download-options", "noopen"))
        .layer(SetResponseHeaderLayer::overriding(
            X_FRAME_OPTIONS,
            HeaderValue::from_static("SAMEORIGIN"),
        ))
        .layer(set("x-permitted-cross-domain-policies", "none"))
        .layer(SetResponseHeaderLayer::overriding(
            X_XSS_PROTECTION,
            HeaderValue::from_static("0"),
        ))
        .service_fn(ok);
    assert_eq!(
        runtime
            .block_on(stacked.clone().oneshot(request()))
            .map(|r| r.headers().len())
            .ok(),
        Some(13)
    );
    bench_service!(
        group,
        runtime,
        "tower-http 12 stacked SetResponseHeader",
        stacked
    );
    bench_service!(
        group,
        runtime,
        "axum-helmet",
        theirs.layer(tower::service_fn(ok))
    );
    group.finish();
}

criterion_group!(benches, bench_headers);
criterion_main!(benches);
