//! The per-key limit as a Tower service, without a server: refusals in
//! full (status, headers, problem+json or gRPC Trailers-Only), when a
//! permit is given back, exemptions, keyless requests and queues.

// A failed expectation in a test is a failing test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Echo, from, problem};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use palisade_concurrency::{ConcurrencyLimitLayer, MissingKey};
use palisade_core::key::KeyFn;
use palisade_core::principal::Principal;
use tower::{Layer, Service, ServiceExt};

#[tokio::test]
async fn a_client_over_its_limit_gets_429_with_retry_after_and_a_problem_body() {
    let layer = ConcurrencyLimitLayer::builder()
        .key(KeyFn::ClientIp)
        .max_in_flight(2)
        .retry_after(Duration::from_millis(1500))
        .build()
        .unwrap();
    let mut service = layer.layer(Echo);
    let a = from([192, 0, 2, 1], "/");
    let first = service
        .ready()
        .await
        .unwrap()
        .call(from([192, 0, 2, 1], "/"))
        .await
        .unwrap();
    let second = service
        .ready()
        .await
        .unwrap()
        .call(from([192, 0, 2, 1], "/"))
        .await
        .unwrap();
    assert_eq!(layer.in_flight_of(&a), 2);
    let refused = service
        .ready()
        .await
        .unwrap()
        .call(from([192, 0, 2, 1], "/"))
        .await
        .unwrap();
    let (parts, body) = problem(refused).await;
    assert_eq!(parts.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        parts.headers["retry-after"], "2",
        "rounded up to whole seconds"
    );
    assert_eq!(parts.headers["content-type"], "application/problem+json");
    assert_eq!(parts.headers["cache-control"], "no-store");
    assert_eq!(
        body["type"],
        "urn:palisade:problem:too-many-concurrent-requests"
    );
    assert_eq!(body["status"], 429);
    assert_eq!(body["title"], "Too Many Concurrent Requests");

    // Another client is not affected.
    let other = service
        .ready()
        .await
        .unwrap()
        .call(from([192, 0, 2, 2], "/"))
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    drop((first, second, other));
    assert_eq!(
        layer.in_flight_of(&a),
        0,
        "dropped bodies give their places back"
    );
}

#[tokio::test]
async fn a_global_limit_refuses_with_503_and_grpc_requests_get_trailers_only_status() {
    let layer = ConcurrencyLimitLayer::builder()
        .max_in_flight(1)
        .build()
        .unwrap();
    let mut service = layer.layer(Echo);
    let held = service
        .ready()
        .await
        .unwrap()
        .call(from([192, 0, 2, 1], "/"))
        .await
        .unwrap();
    let refused = service
        .ready()
        .await
        .unwrap()
        .call(from([192, 0, 2, 9], "/"))
        .await
        .unwrap();
    let (parts, body) = problem(refused).await;
    assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(parts.headers["retry-after"], "1");
    assert_eq!(body["type"], "urn:palisade:problem:overloaded");

    let grpc = Request::post("/pkg.Service/Method")
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    let refused = service.ready().await.unwrap().call(grpc).await.unwrap();
    assert_eq!(refused.status(), StatusCode::OK);
    assert_eq!(refused.headers()["grpc-status"], "14", "UNAVAILABLE");
    assert_eq!(refused.headers()["content-type"], "application/grpc");
    assert!(
        http_body::Body::is_end_stream(refused.body()),
        "Trailers-Only"
    );
    drop(held);

    let per_client = ConcurrencyLimitLayer::builder()
        .key(KeyFn::ClientIp)
        .max_in_flight(1)
        .build()
        .unwrap();
    let mut service = per_client.layer(Echo);
    let _held = service
        .ready()
        .await
        .unwrap()
        .call(from([192, 0, 2, 1], "/"))
        .await
        .unwrap();
    let mut grpc = from([192, 0, 2, 1], "/pkg.Service/Method");
    grpc.headers_mut()
        .insert("content-type", "application/grpc+proto".parse().unwrap());
    let refused = service.ready().await.unwrap().call(grpc).await.unwrap();
    assert_eq!(refused.headers()["grpc-status"], "8", "RESOURCE_EXHAUSTED");
}

#[tokio::test]
async fn the_permit_is_held_until_the_body_ends_and_given_back_on_error_or_empty_body() {
    let layer = ConcurrencyLimitLayer::builder()
        .max_in_flight(1)
        .build()
        .unwrap();
    let mut service = layer.layer(Echo);
    let probe = Request::new(());

    let response = service
        .ready()
        .await
        .unwrap()
        .call(from([192, 0, 2, 1], "/"))
        .await
        .unwrap();
    assert!(!response.body().is_rejection());
    assert_eq!(layer.in_flight_of(&probe), 1, "headers sent, body not read");
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(bytes, "hello");
    assert_eq!(
        layer.in_flight_of(&probe),
        0,
        "released at the end of the body"
    );

    let error = service
        .ready()
        .await
        .unwrap()
        .call(from([192, 0, 2, 1], "/fail"))
        .await;
    assert_eq!(
        error.err(),
        Some("inner failure"),
        "the inner error, unchanged"
    );
    assert_eq!(layer.in_flight_of(&probe), 0, "released on error");

    let empty = service
        .ready()
        .await
        .unwrap()
        .call(from([192, 0, 2, 1], "/empty"))
        .await
        .unwrap();
    assert_eq!(
        layer.in_flight_of(&probe),
        0,
        "an empty body is released with the headers"
    );
    drop(empty);

    let future = service
        .ready()
        .await
        .unwrap()
        .call(from([192, 0, 2, 1], "/"));
    assert_eq!(layer.in_flight_of(&probe), 1, "held from call");
    drop(future);
    assert_eq!(
        layer.in_flight_of(&probe),
        0,
        "released when the future is dropped"
    );
}

#[tokio::test]
async fn exempt_paths_and_methods_pass_a_full_limit() {
    let layer = ConcurrencyLimitLayer::builder()
        .max_in_flight(1)
        .exempt_path("/health")
        .exempt_method(http::Method::OPTIONS)
        .build()
        .unwrap();
    let mut service = layer.layer(Echo);
    let _held = service
        .ready()
        .await
        .unwrap()
        .call(from([192, 0, 2, 1], "/"))
        .await
        .unwrap();
    let health = service
        .ready()
        .await
        .unwrap()
        .call(from([192, 0, 2, 1], "/health"))
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let preflight = Request::options("/api").body(()).unwrap();
    let preflight = service
        .ready()
        .await
        .unwrap()
        .call(preflight)
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::OK);
    let api = service
        .ready()
        .await
        .unwrap()
        .call(from([192, 0, 2, 1], "/api"))
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn keyless_requests_share_one_limit_by_default_or_skip_or_are_refused() {
    let shared = ConcurrencyLimitLayer::builder()
        .key(KeyFn::Subject)
        .max_in_flight(1)
        .build()
        .unwrap();
    let mut service = shared.layer(Echo);
    let _anonymous = service
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    let refused = service
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let mut alice = Request::new(());
    alice
        .extensions_mut()
        .insert(Principal::builder("alice").build());
    let alice = service.ready().await.unwrap().call(alice).await.unwrap();
    assert_eq!(
        alice.status(),
        StatusCode::OK,
        "keyed requests have their own limit"
    );

    let skip = ConcurrencyLimitLayer::builder()
        .key(KeyFn::Subject)
        .max_in_flight(1)
        .missing_key(MissingKey::Skip)
        .build()
        .unwrap();
    let mut service = skip.layer(Echo);
    let _a = service
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    let b = service
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    assert_eq!(b.status(), StatusCode::OK);

    let refuse = ConcurrencyLimitLayer::builder()
        .key(KeyFn::Subject)
        .max_in_flight(1)
        .missing_key(MissingKey::Refuse)
        .build()
        .unwrap();
    let mut service = refuse.layer(Echo);
    let refused = service
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    let (parts, body) = problem(refused).await;
    assert_eq!(parts.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        body["type"],
        "urn:palisade:problem:too-many-concurrent-requests"
    );
}

#[tokio::test(start_paused = true)]
async fn a_queued_request_gets_the_next_place_in_fifo_order_or_the_same_refusal_after_its_deadline()
{
    let layer = ConcurrencyLimitLayer::builder()
        .key(KeyFn::ClientIp)
        .max_in_flight(1)
        .queue(2, Duration::from_millis(100))
        .build()
        .unwrap();
    let service = layer.layer(Echo);
    let client = [192, 0, 2, 1];
    let held = service.clone().oneshot(from(client, "/")).await.unwrap();
    let first = tokio::spawn(service.clone().oneshot(from(client, "/first")));
    tokio::task::yield_now().await;
    let second = tokio::spawn(service.clone().oneshot(from(client, "/second")));
    tokio::task::yield_now().await;
    // The queue holds two: a third is refused at once, as without a queue.
    let third = service.clone().oneshot(from(client, "/")).await.unwrap();
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);

    drop(held);
    let first = first.await.unwrap().unwrap();
    assert_eq!(
        first.status(),
        StatusCode::OK,
        "the oldest waiter goes first"
    );
    assert!(
        !second.is_finished(),
        "the second still waits for the first's place"
    );
    // The second waits past its deadline (the paused clock jumps there).
    let second = second.await.unwrap().unwrap();
    let (parts, body) = problem(second).await;
    assert_eq!(parts.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(parts.headers["retry-after"], "1");
    assert_eq!(
        body["type"],
        "urn:palisade:problem:too-many-concurrent-requests"
    );
    drop(first);
    assert_eq!(layer.in_flight_of(&from(client, "/")), 0);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_waiter_leaks_no_place() {
    let layer = ConcurrencyLimitLayer::builder()
        .max_in_flight(1)
        .queue(4, Duration::from_secs(30))
        .build()
        .unwrap();
    let service = layer.layer(Echo);
    let probe = Request::new(());
    let held = service
        .clone()
        .oneshot(from([192, 0, 2, 1], "/"))
        .await
        .unwrap();
    let cancelled = tokio::spawn(service.clone().oneshot(from([192, 0, 2, 2], "/")));
    let waiting = tokio::spawn(service.clone().oneshot(from([192, 0, 2, 3], "/")));
    tokio::task::yield_now().await;
    // Give the place to the first waiter and cancel it before it runs: the
    // place must pass on to the next one.
    drop(held);
    cancelled.abort();
    let waiting = waiting.await.unwrap().unwrap();
    assert_eq!(waiting.status(), StatusCode::OK);
    assert_eq!(layer.in_flight_of(&probe), 1);
    drop(waiting);
    assert_eq!(
        layer.in_flight_of(&probe),
        0,
        "no place lost to the cancelled waiter"
    );
    let again = service
        .clone()
        .oneshot(from([192, 0, 2, 1], "/"))
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK);
}
