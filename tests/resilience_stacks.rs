//! The resilience layers in the stacks users run. Through a real tonic
//! client over HTTP/2 on loopback: UNAVAILABLE in a streamed response's
//! trailers trips the breaker, client errors do not, and an open breaker
//! answers UNAVAILABLE without calling the service (the concurrency layers'
//! own tonic test is in their crate). In a plain hyper server over
//! `tower::service_fn`: load shedding, a per-key concurrency limit and a
//! breaker stacked in one `ServiceBuilder`.
#![cfg(all(feature = "breaker", feature = "concurrency"))]
// A failed expectation in a test is a failing test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use palisade::breaker::{BreakerPolicy, CircuitBreakerLayer, State};
use tonic::server::NamedService;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// How the hand-written health service answers.
const SERVING: u8 = 0;
/// A streamed response whose trailers say UNAVAILABLE (14).
const UNAVAILABLE_IN_TRAILERS: u8 = 1;
/// A Trailers-Only INVALID_ARGUMENT (3): the client's fault.
const INVALID_ARGUMENT: u8 = 2;
/// Waits until released, then answers SERVING.
const SLOW: u8 = 3;

/// A `grpc.health.v1.Health` service written by hand, so the test controls
/// exactly where the status travels (headers or trailers).
#[derive(Clone)]
struct Upstream {
    mode: Arc<AtomicU8>,
    calls: Arc<AtomicUsize>,
    release: Arc<tokio::sync::Semaphore>,
}

impl NamedService for Upstream {
    const NAME: &'static str = "grpc.health.v1.Health";
}

/// A body of frames given in advance: data then trailers.
struct Frames(Vec<http_body::Frame<Bytes>>);

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        if self.0.is_empty() {
            Poll::Ready(None)
        } else {
            Poll::Ready(Some(Ok(self.0.remove(0))))
        }
    }
}

fn trailers(code: &'static str) -> http_body::Frame<Bytes> {
    let mut map = HeaderMap::new();
    map.insert("grpc-status", HeaderValue::from_static(code));
    http_body::Frame::trailers(map)
}

impl tower::Service<http::Request<tonic::body::Body>> for Upstream {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: http::Request<tonic::body::Body>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mode = self.mode.load(Ordering::SeqCst);
        let release = self.release.clone();
        Box::pin(async move {
            let response = http::Response::builder().header("content-type", "application/grpc");
            let frames = match mode {
                UNAVAILABLE_IN_TRAILERS => vec![trailers("14")],
                INVALID_ARGUMENT => {
                    return Ok(response
                        .header("grpc-status", "3")
                        .body(tonic::body::Body::empty())
                        .unwrap());
                }
                _ => {
                    if mode == SLOW {
                        let _permit = release.acquire().await;
                    }
                    // HealthCheckResponse { status: SERVING }: field 1, varint 1.
                    let message = Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 0x01]);
                    vec![http_body::Frame::data(message), trailers("0")]
                }
            };
            Ok(response
                .body(tonic::body::Body::new(Frames(frames)))
                .unwrap())
        })
    }
}

fn upstream() -> Upstream {
    Upstream {
        mode: Arc::new(AtomicU8::new(SERVING)),
        calls: Arc::new(AtomicUsize::new(0)),
        release: Arc::new(tokio::sync::Semaphore::new(0)),
    }
}

async fn listen() -> (tokio::net::TcpListener, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

async fn client(addr: SocketAddr) -> HealthClient<tonic::transport::Channel> {
    HealthClient::new(common::grpc_channel(addr).await)
}

fn check() -> tonic::Request<HealthCheckRequest> {
    tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    })
}

#[tokio::test]
async fn unavailable_in_trailers_trips_the_breaker_and_client_errors_do_not() {
    let upstream = upstream();
    let breaker = CircuitBreakerLayer::builder("grpc-upstream")
        .policy(
            BreakerPolicy::builder()
                .consecutive_failures(3)
                .open_duration(Duration::from_secs(60))
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let handle = breaker.handle();
    let (listener, addr) = listen().await;
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(breaker)
            .add_service(upstream.clone())
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let mut client = client(addr).await;

    assert!(client.check(check()).await.is_ok());
    // The client's own mistakes, many times over: the breaker stays closed.
    upstream.mode.store(INVALID_ARGUMENT, Ordering::SeqCst);
    for _ in 0..10 {
        let status = client.check(check()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
    assert_eq!(handle.state(), State::Closed);

    // UNAVAILABLE arrives in the trailers, after the response head.
    upstream
        .mode
        .store(UNAVAILABLE_IN_TRAILERS, Ordering::SeqCst);
    for _ in 0..3 {
        let status = client.check(check()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
    }
    assert_eq!(handle.state(), State::Open);

    // Open: refused as UNAVAILABLE without reaching the service.
    let calls = upstream.calls.load(Ordering::SeqCst);
    upstream.mode.store(SERVING, Ordering::SeqCst);
    let status = client.check(check()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(upstream.calls.load(Ordering::SeqCst), calls);
}

/// A plain hyper server over `tower::service_fn` with `Full<Bytes>` bodies,
/// all three resilience layers stacked in a `ServiceBuilder`: load shedding
/// refuses a second request while one holds the only place (503
/// `overloaded`), and server errors open the breaker (503 `circuit-open`).
#[tokio::test]
async fn plain_hyper_stack_sheds_load_and_opens_the_breaker() {
    use http_body_util::Full;
    use palisade::concurrency::{ConcurrencyLimitLayer, LoadShedLayer};
    use palisade::core::key::KeyFn;

    let release = Arc::new(tokio::sync::Notify::new());
    let handler = {
        let release = release.clone();
        tower::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let release = release.clone();
            async move {
                let status = match request.uri().path() {
                    "/hold" => {
                        release.notified().await;
                        200
                    }
                    "/fail" => 500,
                    _ => 200,
                };
                Ok::<_, Infallible>(
                    http::Response::builder()
                        .status(status)
                        .body(Full::new(Bytes::from_static(b"done")))
                        .unwrap(),
                )
            }
        })
    };
    let service = tower::ServiceBuilder::new()
        .layer(LoadShedLayer::builder().capacity(1).build().unwrap())
        .layer(
            ConcurrencyLimitLayer::builder()
                .key(KeyFn::Method)
                .max_in_flight(10)
                .build()
                .unwrap(),
        )
        .layer(
            CircuitBreakerLayer::builder("hyper")
                .policy(
                    BreakerPolicy::builder()
                        .consecutive_failures(2)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .service(handler);
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });

    // One request holds the only place: the next is shed.
    let held = tokio::spawn(async move { common::get(addr, "/hold", &[]).await });
    let mut shed = None;
    for _ in 0..200 {
        let response = common::get(addr, "/", &[]).await;
        if response.status() == 503 {
            shed = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let shed = shed.expect("a request beyond the capacity is shed");
    assert!(shed.headers().contains_key("retry-after"));
    assert!(
        common::json(&shed)["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("overloaded"))
    );
    release.notify_one();
    assert_eq!(held.await.unwrap().status(), 200);

    // Two server errors in a row open the breaker.
    for _ in 0..2 {
        assert_eq!(common::get(addr, "/fail", &[]).await.status(), 500);
    }
    let open = common::get(addr, "/", &[]).await;
    assert_eq!(open.status(), 503);
    assert!(
        common::json(&open)["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("circuit-open"))
    );
}
