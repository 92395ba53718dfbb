//! The breaker and concurrency layers in tonic stacks, through a real tonic
//! client over HTTP/2 on loopback: UNAVAILABLE in a streamed response's
//! trailers trips the breaker, client errors do not, and an open breaker
//! answers UNAVAILABLE without calling the service; concurrency refusals
//! arrive as RESOURCE_EXHAUSTED (per client) and UNAVAILABLE (shed), and a
//! finished call gives its place back.
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
