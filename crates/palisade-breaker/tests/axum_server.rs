//! The breaker over a real axum server: 5xx trips it and refusals carry
//! `Retry-After` equal to the time until the next probe; 4xx does not trip
//! it; a dropped probe gives its slot back; per-route and shared breakers
//! across `route_layer`; a fallback answers while open; gRPC trailers are
//! judged at the end of the body; the handle forces, resets and reports.

// A failed expectation in a test is a failing test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use palisade_breaker::{BreakerPolicy, CircuitBreakerLayer, State, Window};
use palisade_core::clock::ManualClock;
use palisade_core::key::KeyFn;

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

async fn get_path(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response<Bytes> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let mut request = Request::builder().uri(path).header("host", "test");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new()).expect("request"))
        .await
        .expect("response");
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, body.collect().await.expect("body").to_bytes())
}

/// A handler answering with whatever status the test sets.
fn upstream(status: Arc<AtomicU16>, calls: Arc<AtomicUsize>) -> Router {
    Router::new().route(
        "/upstream",
        get(move || {
            let status = status.clone();
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                StatusCode::from_u16(status.load(Ordering::SeqCst)).expect("status")
            }
        }),
    )
}

fn policy(probes: u32) -> BreakerPolicy {
    BreakerPolicy::builder()
        .window(Window::count(10))
        .failure_rate(0.5)
        .minimum_calls(4)
        .half_open_probes(probes)
        .open_duration(Duration::from_secs(7))
        .jitter(0.0)
        .build()
        .expect("policy")
}

#[tokio::test]
async fn server_errors_open_the_breaker_and_refusals_say_when_the_next_probe_runs() {
    let clock = ManualClock::new();
    let status = Arc::new(AtomicU16::new(500));
    let calls = Arc::new(AtomicUsize::new(0));
    let breaker = CircuitBreakerLayer::builder("upstream")
        .policy(policy(1))
        .clock(clock.clone())
        .build()
        .expect("layer");
    let handle = breaker.handle();
    let mut events = handle.subscribe();
    let addr = serve(upstream(status.clone(), calls.clone()).layer(breaker)).await;

    for _ in 0..4 {
        assert_eq!(get_path(addr, "/upstream", &[]).await.status(), 500);
    }
    assert_eq!(handle.state(), State::Open);
    let opened = events.recv().await.expect("an event");
    assert_eq!((opened.from, opened.to), (State::Closed, State::Open));
    assert_eq!(opened.open_for, Some(Duration::from_secs(7)));
    assert_eq!(&*opened.breaker, "upstream");

    clock.advance(Duration::from_millis(2_500));
    let refused = get_path(addr, "/upstream", &[]).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    // 4.5 s until the next probe, rounded up to whole seconds.
    assert_eq!(refused.headers()["retry-after"], "5");
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let problem: serde_json::Value = serde_json::from_slice(refused.body()).expect("json");
    assert_eq!(problem["status"], 503);
    assert!(
        problem["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("circuit-open"))
    );
    // The upstream was not called.
    assert_eq!(calls.load(Ordering::SeqCst), 4);

    // After the open duration one probe passes; its success closes.
    clock.advance(Duration::from_millis(4_500));
    status.store(200, Ordering::SeqCst);
    assert_eq!(get_path(addr, "/upstream", &[]).await.status(), 200);
    assert_eq!(handle.state(), State::Closed);
    let half_open = events.recv().await.expect("an event");
    assert_eq!(half_open.to, State::HalfOpen);
    let closed = events.recv().await.expect("an event");
    assert_eq!(closed.to, State::Closed);
}

#[tokio::test]
async fn client_errors_do_not_open_the_breaker() {
    let status = Arc::new(AtomicU16::new(404));
    let calls = Arc::new(AtomicUsize::new(0));
    let breaker = CircuitBreakerLayer::builder("upstream")
        .policy(policy(1))
        .build()
        .expect("layer");
    let handle = breaker.handle();
    let addr = serve(upstream(status, calls.clone()).layer(breaker)).await;
    for _ in 0..20 {
        assert_eq!(get_path(addr, "/upstream", &[]).await.status(), 404);
    }
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(handle.totals().calls, 0);
    assert_eq!(calls.load(Ordering::SeqCst), 20);
}

#[tokio::test]
async fn a_probe_whose_client_goes_away_gives_its_slot_back() {
    let clock = ManualClock::new();
    let breaker = CircuitBreakerLayer::builder("upstream")
        .policy(policy(1))
        .clock(clock.clone())
        .build()
        .expect("layer");
    let handle = breaker.handle();
    let entered = Arc::new(tokio::sync::Notify::new());
    let router = Router::new()
        .route("/fail", get(|| async { StatusCode::BAD_GATEWAY }))
        .route(
            "/hang",
            get({
                let entered = entered.clone();
                move || async move {
                    entered.notify_one();
                    std::future::pending::<()>().await;
                    "never"
                }
            }),
        )
        .route("/ok", get(|| async { "ok" }))
        .layer(breaker);
    let addr = serve(router).await;
    for _ in 0..4 {
        get_path(addr, "/fail", &[]).await;
    }
    assert_eq!(handle.state(), State::Open);
    clock.advance(Duration::from_secs(7));

    // The probe hangs; its client gives up.
    let probe = tokio::spawn(async move { get_path(addr, "/hang", &[]).await });
    entered.notified().await;
    assert_eq!(handle.state(), State::HalfOpen);
    // The single slot is taken: other calls are refused meanwhile.
    assert_eq!(get_path(addr, "/ok", &[]).await.status(), 503);
    probe.abort();
    let _ = probe.await;

    // The server notices the closed connection and drops the call; the slot
    // comes back and the next call probes (and closes the breaker).
    let mut status = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..200 {
        status = get_path(addr, "/ok", &[]).await.status();
        if status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status, StatusCode::OK);
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test]
async fn per_route_breakers_under_route_layer_keep_routes_apart() {
    let breaker = CircuitBreakerLayer::builder("routes")
        .policy(policy(1))
        .per_key(KeyFn::RouteTemplate)
        .build()
        .expect("layer");
    let handle = breaker.handle();
    let router = Router::new()
        .route("/a", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
        .route("/b", get(|| async { "b" }))
        .route_layer(breaker);
    let addr = serve(router).await;
    for _ in 0..4 {
        assert_eq!(get_path(addr, "/a", &[]).await.status(), 500);
    }
    // /a's breaker is open; /b's is not.
    assert_eq!(get_path(addr, "/a", &[]).await.status(), 503);
    assert_eq!(get_path(addr, "/b", &[]).await.status(), 200);
    // The shared breaker saw nothing: every request had a route key.
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test]
async fn one_breaker_under_route_layer_is_shared_by_every_route() {
    let breaker = CircuitBreakerLayer::builder("shared")
        .policy(policy(1))
        .build()
        .expect("layer");
    let router = Router::new()
        .route("/a", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
        .route("/b", get(|| async { "b" }))
        .route_layer(breaker);
    let addr = serve(router).await;
    for _ in 0..4 {
        get_path(addr, "/a", &[]).await;
    }
    // The same breaker guards /b.
    assert_eq!(get_path(addr, "/b", &[]).await.status(), 503);
}

#[tokio::test]
async fn a_fallback_answers_while_the_breaker_is_open() {
    let fallback = tower::service_fn(|_request: Request<Body>| async {
        Ok::<_, Infallible>(
            Response::builder()
                .header("x-served-by", "fallback")
                .body(Body::from("cached"))
                .expect("response"),
        )
    });
    let breaker = CircuitBreakerLayer::builder("with-fallback")
        .policy(policy(1))
        .fallback(fallback)
        .build()
        .expect("layer");
    let handle = breaker.handle();
    let router = Router::new()
        .route("/data", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
        .layer(breaker);
    let addr = serve(router).await;
    for _ in 0..4 {
        assert_eq!(get_path(addr, "/data", &[]).await.status(), 503);
    }
    assert_eq!(handle.state(), State::Open);
    let answered = get_path(addr, "/data", &[]).await;
    assert_eq!(answered.status(), 200);
    assert_eq!(answered.headers()["x-served-by"], "fallback");
    assert_eq!(answered.body(), "cached");
}

/// A gRPC-shaped body: one data frame, then trailers with `grpc-status`.
struct GrpcBody {
    step: u8,
    code: &'static str,
}

impl http_body::Body for GrpcBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.step += 1;
        std::task::Poll::Ready(match self.step {
            1 => Some(Ok(http_body::Frame::data(Bytes::from_static(
                b"\0\0\0\0\0",
            )))),
            2 => {
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", self.code.parse().expect("value"));
                Some(Ok(http_body::Frame::trailers(trailers)))
            }
            _ => None,
        })
    }
}

fn grpc_response(code: &'static str) -> Response<Body> {
    Response::builder()
        .header("content-type", "application/grpc")
        .body(Body::new(GrpcBody { step: 0, code }))
        .expect("response")
}

#[tokio::test]
async fn grpc_failures_in_trailers_open_the_breaker_and_client_codes_do_not() {
    let code = Arc::new(std::sync::Mutex::new("5"));
    let breaker = CircuitBreakerLayer::builder("grpc")
        .policy(policy(1))
        .build()
        .expect("layer");
    let handle = breaker.handle();
    let router = Router::new()
        .route(
            "/pkg.Service/Method",
            axum::routing::post({
                let code = code.clone();
                move || {
                    let code = *code.lock().expect("lock");
                    async move { grpc_response(code) }
                }
            }),
        )
        .layer(breaker);
    let addr = serve(router).await;
    let call = || async move {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        let request = Request::post("/pkg.Service/Method")
            .header("host", "test")
            .header("content-type", "application/grpc")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        // Reading the whole body delivers the trailers to the breaker.
        let collected = response.into_body().collect().await.expect("body");
        collected.trailers().cloned()
    };
    // NOT_FOUND (5) is the client's business.
    for _ in 0..6 {
        call().await;
    }
    assert_eq!(handle.state(), State::Closed);
    // UNAVAILABLE (14) in the trailers is the server's failure.
    *code.lock().expect("lock") = "14";
    for _ in 0..4 {
        call().await;
    }
    assert_eq!(handle.state(), State::Open);
}

#[tokio::test]
async fn the_handle_forces_and_resets_every_breaker() {
    let breaker = CircuitBreakerLayer::builder("forced")
        .per_key(KeyFn::RouteTemplate)
        .build()
        .expect("layer");
    let handle = breaker.handle();
    let mut events = handle.subscribe();
    let router = Router::new()
        .route("/a", get(|| async { "a" }))
        .route_layer(breaker);
    let addr = serve(router).await;
    handle.force_open();
    assert_eq!(get_path(addr, "/a", &[]).await.status(), 503);
    assert_eq!(events.recv().await.expect("event").to, State::ForcedOpen);
    handle.reset();
    assert_eq!(events.recv().await.expect("event").to, State::Closed);
    assert_eq!(get_path(addr, "/a", &[]).await.status(), 200);
    handle.force_closed();
    assert_eq!(handle.state(), State::ForcedClosed);
}
