//! The breaker as a plain Tower service: in `tower::ServiceBuilder`, with
//! an inner error counted as a failure and passed through untouched, and in
//! backpressure mode (`poll_ready` pending while open, ready again once a
//! probe may run).

// A failed expectation in a test is a failing test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use palisade_breaker::{BreakerPolicy, CircuitBreakerLayer, State};
use tower::{Service, ServiceBuilder, ServiceExt};

#[derive(Debug, PartialEq)]
struct UpstreamDown;

fn policy() -> BreakerPolicy {
    BreakerPolicy::builder()
        .consecutive_failures(2)
        .half_open_probes(1)
        .open_duration(Duration::from_millis(300))
        .jitter(0.0)
        .build()
        .expect("policy")
}

fn flaky(
    failing: Arc<AtomicBool>,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = UpstreamDown,
    Future = impl std::future::Future<Output = Result<Response<Full<Bytes>>, UpstreamDown>> + Send,
> + Clone {
    tower::service_fn(move |_request: Request<Full<Bytes>>| {
        let failing = failing.load(Ordering::SeqCst);
        async move {
            if failing {
                Err(UpstreamDown)
            } else {
                Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
            }
        }
    })
}

#[tokio::test]
async fn inner_errors_pass_through_and_count_as_failures_in_a_service_builder() {
    let failing = Arc::new(AtomicBool::new(true));
    let layer = CircuitBreakerLayer::builder("client")
        .policy(policy())
        .build()
        .expect("layer");
    let handle = layer.handle();
    let mut service = ServiceBuilder::new().layer(layer).service(flaky(failing));
    for _ in 0..2 {
        let error = service
            .ready()
            .await
            .expect("ready")
            .call(Request::new(Full::default()))
            .await
            .expect_err("the inner error");
        assert_eq!(error, UpstreamDown);
    }
    assert_eq!(handle.state(), State::Open);
    // Refused without calling the inner service: a response, not an error.
    let refused = service
        .ready()
        .await
        .expect("ready")
        .call(Request::new(Full::default()))
        .await
        .expect("a rejection response");
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn backpressure_holds_readiness_while_open_then_lets_a_probe_through() {
    let failing = Arc::new(AtomicBool::new(true));
    let layer = CircuitBreakerLayer::builder("client")
        .policy(policy())
        .backpressure()
        .build()
        .expect("layer");
    let handle = layer.handle();
    let mut service = layer.layer(flaky(failing.clone()));
    for _ in 0..2 {
        let _ = service
            .ready()
            .await
            .expect("ready")
            .call(Request::new(Full::default()))
            .await;
    }
    assert_eq!(handle.state(), State::Open);
    // Not ready while open.
    let waited = tokio::time::timeout(Duration::from_millis(50), service.ready()).await;
    assert!(waited.is_err(), "poll_ready must stay pending while open");
    // Ready once the open duration has passed; the probe closes it.
    failing.store(false, Ordering::SeqCst);
    let ready = tokio::time::timeout(Duration::from_secs(10), service.ready()).await;
    let service = ready
        .expect("ready within the open duration")
        .expect("ready");
    let response = service
        .call(Request::new(Full::default()))
        .await
        .expect("response");
    assert_eq!(response.status(), 200);
    assert_eq!(handle.state(), State::Closed);
}

#[test]
fn backpressure_does_not_combine_with_per_key_breakers() {
    let built = CircuitBreakerLayer::builder("client")
        .backpressure()
        .per_key(palisade_core::key::KeyFn::RouteTemplate)
        .build();
    assert!(built.is_err());
    assert!(CircuitBreakerLayer::builder("bad name!").build().is_err());
}

use tower::Layer as _;
