//! The concurrency layers over real axum servers on loopback: a streaming
//! body keeps its place until it ends, a client that goes away gives its
//! place back, and `route_layer` shares one limit across routes when the key
//! says so (and keeps them apart when keyed by route).

// A failed expectation in a test is a failing test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use palisade_concurrency::{ConcurrencyLimitLayer, LoadShedLayer};
use palisade_core::client_ip::PeerAddr;
use palisade_core::key::KeyFn;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .expect("serve");
    });
    addr
}

/// Sends a request and returns as soon as the response headers arrive; the
/// body is still streaming. Abort the handle to drop the connection.
async fn open(addr: SocketAddr, path: &str) -> (Response<Incoming>, JoinHandle<()>) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = Request::get(path)
        .header("host", "test")
        .body(Empty::<Bytes>::new())
        .expect("request");
    (sender.send_request(request).await.expect("response"), task)
}

/// A whole request: status, headers and body.
async fn send(addr: SocketAddr, path: &str) -> Response<Bytes> {
    let (response, _task) = open(addr, path).await;
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, body.collect().await.expect("body").to_bytes())
}

/// Waits (a bounded time) until `condition` holds: the server notices a
/// closed connection on its own schedule.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    for _ in 0..500 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} did not happen within 5 s");
}

fn loopback() -> Request<()> {
    let mut request = Request::new(());
    request
        .extensions_mut()
        .insert(PeerAddr(SocketAddr::from(([127, 0, 0, 1], 1))));
    request
}

/// A response body that never ends.
async fn endless() -> Body {
    Body::from_stream(futures_util::stream::pending::<Result<Bytes, Infallible>>())
}

#[tokio::test]
async fn a_streaming_body_keeps_its_permit_until_it_ends() {
    let layer = ConcurrencyLimitLayer::builder()
        .key(KeyFn::ClientIp)
        .max_in_flight(1)
        .build()
        .unwrap();
    let (chunks, receiver) = mpsc::channel::<Bytes>(4);
    let receiver = Arc::new(Mutex::new(Some(receiver)));
    let stream = move || {
        let receiver = receiver.lock().unwrap().take().expect("one stream");
        async move {
            Body::from_stream(futures_util::stream::unfold(
                receiver,
                |mut receiver| async move {
                    let chunk = receiver.recv().await?;
                    Some((Ok::<_, Infallible>(chunk), receiver))
                },
            ))
        }
    };
    let addr = serve(
        Router::new()
            .route("/stream", get(stream))
            .route("/quick", get(|| async { "ok" }))
            .layer(layer.clone()),
    )
    .await;

    let (streaming, _connection) = open(addr, "/stream").await;
    assert_eq!(streaming.status(), StatusCode::OK);
    chunks.send(Bytes::from_static(b"first ")).await.unwrap();
    let mut body = streaming.into_body();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "first ");
    assert_eq!(layer.in_flight_of(&loopback()), 1, "still streaming");

    let refused = send(addr, "/quick").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let problem: serde_json::Value = serde_json::from_slice(refused.body()).unwrap();
    assert_eq!(
        problem["type"],
        "urn:palisade:problem:too-many-concurrent-requests"
    );
    assert_eq!(problem["status"], 429);

    chunks.send(Bytes::from_static(b"last")).await.unwrap();
    drop(chunks);
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "last");
    eventually("release at the end of the body", || {
        layer.in_flight_of(&loopback()) == 0
    })
    .await;
    let after = send(addr, "/quick").await;
    assert_eq!(after.status(), StatusCode::OK);
    assert_eq!(after.body(), "ok");
}

#[tokio::test]
async fn a_client_that_goes_away_gives_its_permit_back() {
    let layer = ConcurrencyLimitLayer::builder()
        .max_in_flight(1)
        .build()
        .unwrap();
    let addr = serve(
        Router::new()
            .route("/hang", get(std::future::pending::<&'static str>))
            .route("/endless", get(endless))
            .route("/quick", get(|| async { "ok" }))
            .layer(layer.clone()),
    )
    .await;

    // Gone before the response: the server drops the handler's future.
    let hanging = tokio::spawn(async move { open(addr, "/hang").await });
    eventually("the request arrives", || {
        layer.in_flight_of(&loopback()) == 1
    })
    .await;
    assert_eq!(
        send(addr, "/quick").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    hanging.abort();
    eventually("release when the request is dropped", || {
        layer.in_flight_of(&loopback()) == 0
    })
    .await;
    assert_eq!(send(addr, "/quick").await.status(), StatusCode::OK);

    // Gone in the middle of the body: the server drops the body.
    let (streaming, connection) = open(addr, "/endless").await;
    assert_eq!(streaming.status(), StatusCode::OK);
    assert_eq!(layer.in_flight_of(&loopback()), 1);
    drop(streaming);
    connection.abort();
    eventually("release when the body is dropped", || {
        layer.in_flight_of(&loopback()) == 0
    })
    .await;
    assert_eq!(send(addr, "/quick").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn route_layer_on_two_routes_shares_one_global_limit_and_keeps_route_keyed_limits_apart() {
    let shared = ConcurrencyLimitLayer::builder()
        .max_in_flight(1)
        .build()
        .unwrap();
    let addr = serve(
        Router::new()
            .route("/a", get(endless))
            .route("/b", get(|| async { "b" }))
            .route_layer(shared.clone()),
    )
    .await;
    let (held, _connection) = open(addr, "/a").await;
    assert_eq!(held.status(), StatusCode::OK);
    let refused = send(addr, "/b").await;
    assert_eq!(
        refused.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "one limit for both routes"
    );
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );

    let per_route = ConcurrencyLimitLayer::builder()
        .key(KeyFn::RouteTemplate)
        .max_in_flight(1)
        .build()
        .unwrap();
    let addr = serve(
        Router::new()
            .route("/a", get(endless))
            .route("/b", get(|| async { "b" }))
            .route_layer(per_route),
    )
    .await;
    let (held, _connection) = open(addr, "/a").await;
    assert_eq!(held.status(), StatusCode::OK);
    assert_eq!(
        send(addr, "/b").await.status(),
        StatusCode::OK,
        "another route's limit"
    );
    assert_eq!(
        send(addr, "/a").await.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the same route's limit"
    );
}

#[tokio::test]
async fn load_shedding_in_router_layer_sheds_bulk_before_critical() {
    let shed = LoadShedLayer::builder()
        .capacity(2)
        .class("critical", 100)
        .class("default", 50)
        .route_prefix("/critical", "critical")
        .build()
        .unwrap();
    let handle = shed.handle();
    let addr = serve(
        Router::new()
            .route("/endless", get(endless))
            .route("/quick", get(|| async { "ok" }))
            .route("/critical", get(|| async { "ok" }))
            .layer(shed),
    )
    .await;
    let (held, _connection) = open(addr, "/endless").await;
    assert_eq!(held.status(), StatusCode::OK);
    assert_eq!(handle.in_flight(), 1);
    let shed = send(addr, "/quick").await;
    assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(shed.headers()["retry-after"], "1");
    let problem: serde_json::Value = serde_json::from_slice(shed.body()).unwrap();
    assert_eq!(problem["type"], "urn:palisade:problem:overloaded");
    assert_eq!(send(addr, "/critical").await.status(), StatusCode::OK);
}
