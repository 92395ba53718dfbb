//! The security headers layer (helmet preset) beside 12 stacked tower-http
//! `SetResponseHeaderLayer::overriding` layers and axum-helmet, in one run.
//!
//! ```text
//! cargo bench -p palisade-benches --bench headers
//! ```
//!
//! All three add helmet's 12 headers (HSTS included: ours is told the
//! request is HTTPS) to a response that already has a `content-type`;
//! ours also checks the response against the 69 leaky header names. Each
//! iteration builds the request, calls the service and polls its future
//! once with a no-op waker (every inner service answers at once), then
//! drops the response: no runtime, whose noise would drown the layers.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::body::Body;
use axum_helmet::{Helmet, HelmetLayer};
use criterion::{Criterion, criterion_group};
use http::header::{
    CONTENT_SECURITY_POLICY, REFERRER_POLICY, STRICT_TRANSPORT_SECURITY, X_CONTENT_TYPE_OPTIONS,
    X_DNS_PREFETCH_CONTROL, X_FRAME_OPTIONS, X_XSS_PROTECTION,
};
use http::{HeaderName, HeaderValue, Request, Response};
use palisade_headers::SecurityHeaders;
use palisade_headers::csp::{ContentSecurityPolicy, Source};
use tower::{Layer, Service, ServiceBuilder};
use tower_http::set_header::SetResponseHeaderLayer;

const HELMET_CSP: &str = "default-src 'self'; base-uri 'self'; font-src 'self' https: data:; form-action 'self'; frame-ancestors 'self'; img-src 'self' data:; object-src 'none'; script-src 'self'; script-src-attr 'none'; style-src 'self' https: 'unsafe-inline'; upgrade-insecure-requests";

fn request() -> Request<Body> {
    Request::get("/").body(Body::empty()).unwrap_or_default()
}

fn ok(_request: Request<Body>) -> Ready<Result<Response<Body>, Infallible>> {
    let mut response = Response::new(Body::empty());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    ready(Ok(response))
}

fn set(name: HeaderName, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value))
}

/// One request through `service`, answered at once.
fn call_once<S>(service: &mut S) -> Response<Body>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    let mut cx = Context::from_waker(Waker::noop());
    if !matches!(service.poll_ready(&mut cx), Poll::Ready(Ok(()))) {
        panic!("the service is not ready");
    }
    let future = pin!(service.call(request()));
    match future.poll(&mut cx) {
        Poll::Ready(Ok(response)) => response,
        _ => panic!("the service did not answer at once"),
    }
}

/// One request through a contender.
type MakeRequest = Box<dyn FnMut() -> Response<Body>>;

/// The contenders, each as a closure making one request.
fn contenders() -> Vec<(&'static str, MakeRequest)> {
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
    let mut stacked = ServiceBuilder::new()
        .layer(set(CONTENT_SECURITY_POLICY, HELMET_CSP))
        .layer(set(
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ))
        .layer(set(
            HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ))
        .layer(set(HeaderName::from_static("origin-agent-cluster"), "?1"))
        .layer(set(REFERRER_POLICY, "no-referrer"))
        .layer(set(
            STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        ))
        .layer(set(X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(set(X_DNS_PREFETCH_CONTROL, "off"))
        .layer(set(HeaderName::from_static("x-download-options"), "noopen"))
        .layer(set(X_FRAME_OPTIONS, "SAMEORIGIN"))
        .layer(set(
            HeaderName::from_static("x-permitted-cross-domain-policies"),
            "none",
        ))
        .layer(set(X_XSS_PROTECTION, "0"))
        .service_fn(ok);
    let mut bare = tower::service_fn(ok);
    let mut palisade = ours.layer(tower::service_fn(ok));
    let mut palisade_nonce = ours_nonce.layer(tower::service_fn(ok));
    let mut helmet = theirs.layer(tower::service_fn(ok));
    vec![
        ("bare service", Box::new(move || call_once(&mut bare))),
        (
            "palisade helmet()",
            Box::new(move || call_once(&mut palisade)),
        ),
        (
            "palisade helmet() with CSP nonce",
            Box::new(move || call_once(&mut palisade_nonce)),
        ),
        (
            "tower-http 12 stacked SetResponseHeader",
            Box::new(move || call_once(&mut stacked)),
        ),
        ("axum-helmet", Box::new(move || call_once(&mut helmet))),
    ]
}

fn bench_headers(c: &mut Criterion) {
    let mut group = c.benchmark_group("headers_layer");
    group.measurement_time(Duration::from_secs(3));
    for (name, mut call) in contenders() {
        let expected = if name == "bare service" { 1 } else { 13 };
        assert_eq!(call().headers().len(), expected, "{name}");
        group.bench_function(name, |b| b.iter(|| black_box(call())));
    }
    group.finish();
}

/// With `HEADERS_COUNT=<contender index>` and `HEADERS_ITERATIONS=n`, makes
/// `n` requests through one contender and exits, for counting instructions
/// with `perf stat -e instructions:u` (a count the load of a shared machine
/// does not move; run once with 0 iterations to subtract the start-up).
fn count_mode() -> bool {
    let (Ok(index), Ok(iterations)) = (
        std::env::var("HEADERS_COUNT"),
        std::env::var("HEADERS_ITERATIONS"),
    ) else {
        return false;
    };
    let index: usize = index.parse().unwrap_or_else(|e| panic!("{e}"));
    let iterations: u64 = iterations.parse().unwrap_or_else(|e| panic!("{e}"));
    let mut contenders = contenders();
    let (name, call) = &mut contenders[index];
    for _ in 0..iterations {
        black_box(call());
    }
    eprintln!("{name}: {iterations} requests");
    true
}

criterion_group!(benches, bench_headers);

fn main() {
    if count_mode() {
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
