//! The load shedder as a Tower service: priority classes and their shares,
//! the adaptive limit driven by a manual clock, and the inner error type.

// A failed expectation in a test is a failing test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Echo, problem};
use http::{Request, StatusCode};
use palisade_concurrency::adaptive::Aimd;
use palisade_concurrency::{ConcurrencyLimitLayer, LoadShedLayer};
use palisade_core::clock::ManualClock;
use palisade_core::principal::Principal;
use tower::{Layer, Service, ServiceExt};

fn shed_layer() -> LoadShedLayer {
    LoadShedLayer::builder()
        .capacity(10)
        .class("critical", 100)
        .class("default", 80)
        .class("bulk", 50)
        .route_prefix("/payments", "critical")
        .role("admin", "critical")
        .header(
            http::HeaderName::from_static("x-priority"),
            http::HeaderValue::from_static("bulk"),
            "bulk",
        )
        .exempt_path("/health")
        .build()
        .unwrap()
}

#[tokio::test]
async fn lower_classes_are_shed_first_and_critical_traffic_keeps_its_reserved_share() {
    let layer = shed_layer();
    let handle = layer.handle();
    let mut service = layer.layer(Echo);
    let mut held = Vec::new();
    let bulk = || {
        Request::get("/reports")
            .header("x-priority", "bulk")
            .body(())
            .unwrap()
    };
    for _ in 0..5 {
        held.push(service.ready().await.unwrap().call(bulk()).await.unwrap());
    }
    let shed = service.ready().await.unwrap().call(bulk()).await.unwrap();
    let (parts, body) = problem(shed).await;
    assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(parts.headers["retry-after"], "1");
    assert_eq!(body["type"], "urn:palisade:problem:overloaded");

    for _ in 0..3 {
        let ok = service
            .ready()
            .await
            .unwrap()
            .call(Request::new(()))
            .await
            .unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        held.push(ok);
    }
    let shed = service
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    assert_eq!(
        shed.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "default stops at 80 %"
    );

    let payments = Request::get("/payments/charge").body(()).unwrap();
    held.push(service.ready().await.unwrap().call(payments).await.unwrap());
    let mut admin = Request::new(());
    admin
        .extensions_mut()
        .insert(Principal::builder("ops").roles(["admin"]).build());
    let admin = service.ready().await.unwrap().call(admin).await.unwrap();
    assert_eq!(admin.status(), StatusCode::OK, "critical by role");
    held.push(admin);
    assert_eq!(handle.in_flight(), 10);
    let payments = Request::get("/payments/charge").body(()).unwrap();
    let full = service.ready().await.unwrap().call(payments).await.unwrap();
    assert_eq!(
        full.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "critical stops at 100 %"
    );
    let health = Request::get("/health").body(()).unwrap();
    assert_eq!(
        service
            .ready()
            .await
            .unwrap()
            .call(health)
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    held.clear();
    assert_eq!(handle.in_flight(), 0);
    assert_eq!(
        service
            .ready()
            .await
            .unwrap()
            .call(bulk())
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[test]
fn the_adaptive_limit_follows_latency_measured_on_the_injected_clock() {
    let clock = ManualClock::new();
    let layer = LoadShedLayer::builder()
        .adaptive(
            Aimd::builder()
                .initial_limit(4)
                .min_limit(2)
                .max_limit(6)
                .latency_threshold(Duration::from_millis(100))
                .backoff_ratio(0.5)
                .build()
                .unwrap(),
        )
        .sample_window(Duration::from_secs(1), 2)
        .clock(clock.clone())
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut service = layer.layer(Echo);
    // One window of fast, busy traffic: four at once, 10 ms each.
    let mut window = |latency: Duration| {
        let futures: Vec<_> = (0..handle.limit())
            .map(|_| service.call(Request::new(())))
            .collect();
        clock.advance(latency);
        let responses: Vec<_> = futures
            .into_iter()
            .map(|f| futures_util::FutureExt::now_or_never(f).unwrap().unwrap())
            .collect();
        drop(responses);
        clock.advance(Duration::from_secs(1));
        // One more completion, a second later, closes the window.
        let last = futures_util::FutureExt::now_or_never(service.call(Request::new(()))).unwrap();
        assert_eq!(last.unwrap().status(), StatusCode::OK);
    };
    assert_eq!(handle.limit(), 4);
    window(Duration::from_millis(10));
    assert_eq!(handle.limit(), 5, "busy and fast: one more");
    window(Duration::from_millis(10));
    assert_eq!(handle.limit(), 6);
    window(Duration::from_millis(10));
    assert_eq!(handle.limit(), 6, "bounded by the maximum");
    window(Duration::from_millis(500));
    assert_eq!(handle.limit(), 3, "slow: halved");
    window(Duration::from_millis(500));
    assert_eq!(handle.limit(), 2, "bounded by the minimum");
    assert_eq!(handle.in_flight(), 0);
}

/// The service is generic over bodies and errors: it stacks in axum's
/// `Router::layer` and `route_layer` (see the server tests), and as plain
/// Tower services over any body.
#[test]
fn the_services_keep_the_inner_error_type() {
    fn inner_error<S: Service<Request<()>, Error = &'static str>>(_: &S) {}
    let limit = ConcurrencyLimitLayer::builder()
        .max_in_flight(1)
        .build()
        .unwrap();
    inner_error(&limit.layer(Echo));
    inner_error(&shed_layer().layer(Echo));
}
