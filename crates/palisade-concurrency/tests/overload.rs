//! Overload on loopback: a backend that serves 4 requests at a time, 20 ms
//! each (200 requests per second), is offered twice that, open loop, for
//! one second. With an adaptive limit in front, admitted requests keep a
//! p99 latency within a small multiple of the unloaded latency (the rest
//! are shed at once); with no limit, requests queue and the p99 grows with
//! the backlog. Both figures are printed:
//!
//! `cargo nextest run -p palisade-concurrency --all-features --test overload --no-capture`

// A failed expectation in a test is a failing test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use palisade_concurrency::LoadShedLayer;
use palisade_concurrency::adaptive::{Aimd, Gradient2, LimitAlgorithm};
use tokio::sync::Semaphore;

/// The backend: 4 workers, 20 ms per request.
const WORKERS: usize = 4;
const SERVICE_TIME: Duration = Duration::from_millis(20);
/// Offered load: two requests every 5 ms, 400 per second, twice capacity.
const TICK: Duration = Duration::from_millis(5);
const PER_TICK: usize = 2;
const OVERLOAD: Duration = Duration::from_secs(1);

/// The bound this test states: admitted requests' p99 under the adaptive
/// limit stays within this multiple of the unloaded median latency.
const ADAPTIVE_BOUND: f64 = 6.0;

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, router).await.expect("serve");
    });
    addr
}

fn app(shed: Option<LoadShedLayer>) -> Router {
    let workers = Arc::new(Semaphore::new(WORKERS));
    let router = Router::new().route(
        "/work",
        get(move || {
            let workers = Arc::clone(&workers);
            async move {
                let _worker = workers.acquire().await.expect("open semaphore");
                tokio::time::sleep(SERVICE_TIME).await;
                "done"
            }
        }),
    );
    match shed {
        Some(shed) => router.layer(shed),
        None => router,
    }
}

/// One request on its own connection: its status and latency.
async fn timed(addr: SocketAddr) -> (StatusCode, Duration) {
    let start = Instant::now();
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let request = Request::get("/work")
        .header("host", "test")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status();
    response.into_body().collect().await.expect("body");
    (status, start.elapsed())
}

fn percentile(latencies: &mut [Duration], p: f64) -> Duration {
    latencies.sort_unstable();
    let rank = ((latencies.len() as f64) * p).ceil() as usize;
    latencies[rank.clamp(1, latencies.len()) - 1]
}

struct Run {
    unloaded_p50: Duration,
    admitted_p99: Duration,
    admitted: usize,
    shed: usize,
}

/// Warms up with three closed-loop clients (below capacity: no queueing),
/// then offers twice capacity, open loop, and waits for every answer.
async fn run(shed: Option<LoadShedLayer>) -> Run {
    let addr = serve(app(shed)).await;
    let warmup_until = Instant::now() + Duration::from_millis(300);
    let clients: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < warmup_until {
                    latencies.push(timed(addr).await.1);
                }
                latencies
            })
        })
        .collect();
    let mut warmup = Vec::new();
    for client in clients {
        warmup.extend(client.await.unwrap());
    }
    let unloaded_p50 = percentile(&mut warmup, 0.5);

    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut requests = Vec::new();
    for _ in 0..(OVERLOAD.as_millis() / TICK.as_millis()) {
        ticks.tick().await;
        for _ in 0..PER_TICK {
            requests.push(tokio::spawn(timed(addr)));
        }
    }
    let mut admitted = Vec::new();
    let mut shed = 0;
    for request in requests {
        let (status, latency) = request.await.unwrap();
        match status {
            StatusCode::OK => admitted.push(latency),
            StatusCode::SERVICE_UNAVAILABLE => shed += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    Run {
        unloaded_p50,
        admitted_p99: percentile(&mut admitted, 0.99),
        admitted: admitted.len(),
        shed,
    }
}

fn adaptive_layer(algorithm: impl LimitAlgorithm) -> LoadShedLayer {
    LoadShedLayer::builder()
        .name("overload_test")
        .adaptive(algorithm)
        .sample_window(Duration::from_millis(25), 3)
        .build()
        .unwrap()
}

fn report(name: &str, run: &Run) -> f64 {
    let ratio = run.admitted_p99.as_secs_f64() / run.unloaded_p50.as_secs_f64();
    println!(
        "{name:>10}: unloaded p50 {:>7.1} ms, admitted p99 {:>7.1} ms ({ratio:>5.1}x), admitted {}, shed {}",
        run.unloaded_p50.as_secs_f64() * 1e3,
        run.admitted_p99.as_secs_f64() * 1e3,
        run.admitted,
        run.shed,
    );
    ratio
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_limits_keep_p99_bounded_at_twice_capacity_and_no_limit_does_not() {
    let gradient = run(Some(adaptive_layer(
        Gradient2::builder()
            .initial_limit(10)
            .min_limit(1)
            .max_limit(200)
            .build()
            .unwrap(),
    )))
    .await;
    let aimd = run(Some(adaptive_layer(
        Aimd::builder()
            .initial_limit(10)
            .min_limit(1)
            .max_limit(200)
            .latency_threshold(SERVICE_TIME * 5 / 2)
            .build()
            .unwrap(),
    )))
    .await;
    let unlimited = run(None).await;

    println!(
        "offered {} req/s to a backend of {} req/s",
        1000 / TICK.as_millis() as usize * PER_TICK,
        WORKERS * 1000 / SERVICE_TIME.as_millis() as usize
    );
    let gradient_ratio = report("gradient2", &gradient);
    let aimd_ratio = report("aimd", &aimd);
    let unlimited_ratio = report("no limit", &unlimited);

    assert!(gradient.shed > 0 && aimd.shed > 0, "overload was shed");
    assert!(
        gradient_ratio <= ADAPTIVE_BOUND && aimd_ratio <= ADAPTIVE_BOUND,
        "adaptive p99 within {ADAPTIVE_BOUND}x the unloaded latency"
    );
    assert!(
        unlimited_ratio > 2.0 * ADAPTIVE_BOUND,
        "without a limit the p99 grows with the backlog"
    );
    assert_eq!(unlimited.shed, 0);
}
