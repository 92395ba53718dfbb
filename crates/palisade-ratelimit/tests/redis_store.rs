//! The Redis store against real `redis-server` processes started by the
//! test: instances sharing one limit, a cluster, a server killed under load
//! (the failure policy holds, nothing hangs) and restarted (recovery).
#![cfg(feature = "redis")]
// A failed expectation in a test is a failing test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use palisade_core::key::KeyFn;
use palisade_ratelimit::{
    FailurePolicy, Quota, RateLimitLayer, RateLimitPolicy, RedisStore, TimeSource,
};
use palisade_redis::testing::{RedisCluster, RedisServer, must_finish};
use palisade_redis::{RedisConfig, RedisConnection};

async fn serve(layer: RateLimitLayer) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/api", get(|| async { "ok" }))
        .layer(layer);
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

async fn status(addr: SocketAddr) -> (StatusCode, http::HeaderMap) {
    send(addr, "GET", "/api", &[]).await
}

/// One request over a fresh connection: its status and headers.
async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "test");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let _ = body.collect().await;
    (parts.status, parts.headers)
}

async fn layer(
    config: &RedisConfig,
    quota: Quota,
    failure: FailurePolicy,
    time: TimeSource,
) -> RateLimitLayer {
    layer_on(store(config, failure, time), per_ip(quota))
}

fn store(config: &RedisConfig, failure: FailurePolicy, time: TimeSource) -> RedisStore {
    let connection = RedisConnection::connect_lazy(config).expect("connection");
    RedisStore::builder(connection)
        .on_failure(failure)
        .time_source(time)
        .build()
        .expect("store")
}

/// A per-client-address policy.
fn per_ip(quota: Quota) -> RateLimitPolicy {
    RateLimitPolicy::builder("per_ip", KeyFn::ClientIp, quota)
        .build()
        .unwrap()
}

/// A layer of one policy on `store`.
fn layer_on(store: RedisStore, policy: RateLimitPolicy) -> RateLimitLayer {
    RateLimitLayer::builder()
        .policy(policy)
        .redis_store(store)
        .build()
        .unwrap()
}

#[tokio::test]
async fn two_instances_sharing_one_redis_enforce_one_limit() {
    let server = RedisServer::start().expect("redis-server");
    let config = RedisConfig::standalone(server.url());
    for time in [TimeSource::Redis, TimeSource::Client] {
        server.command(&["FLUSHALL"]).unwrap();
        let a = serve(
            layer(
                &config,
                Quota::per_hour(10),
                FailurePolicy::FailClosed,
                time,
            )
            .await,
        )
        .await;
        let b = serve(
            layer(
                &config,
                Quota::per_hour(10),
                FailurePolicy::FailClosed,
                time,
            )
            .await,
        )
        .await;
        let mut admitted = 0;
        for i in 0..30 {
            let (code, headers) = status(if i % 2 == 0 { a } else { b }).await;
            match code {
                StatusCode::OK => admitted += 1,
                StatusCode::TOO_MANY_REQUESTS => {
                    assert!(
                        headers["retry-after"]
                            .to_str()
                            .unwrap()
                            .parse::<u64>()
                            .unwrap()
                            >= 1
                    );
                }
                other => panic!("unexpected {other}"),
            }
        }
        assert_eq!(admitted, 10, "one limit across both instances ({time:?})");
    }
}

#[tokio::test]
async fn a_cluster_started_by_the_test_enforces_the_limit() {
    let cluster = RedisCluster::start().expect("3-node cluster");
    let config = RedisConfig::cluster(cluster.urls());
    let connection = must_finish("cluster connect", RedisConnection::connect(&config))
        .await
        .expect("connect");
    let store = RedisStore::builder(connection).build().expect("store");
    let single = layer_on(store.clone(), per_ip(Quota::per_hour(5)));
    let addr = serve(single).await;
    let mut admitted = 0;
    for _ in 0..12 {
        if status(addr).await.0 == StatusCode::OK {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 5);

    // Two policies whose keys live in different slots: all or nothing still.
    let double = RateLimitLayer::builder()
        .policy(
            RateLimitPolicy::builder("tight", KeyFn::ClientIp, Quota::per_hour(3))
                .build()
                .unwrap(),
        )
        .policy(
            RateLimitPolicy::builder("loose", KeyFn::Global, Quota::per_hour(100))
                .build()
                .unwrap(),
        )
        .redis_store(store.clone())
        .build()
        .unwrap();
    let addr = serve(double).await;
    let mut admitted = 0;
    let mut refusals = Vec::new();
    for _ in 0..10 {
        let (code, headers) = status(addr).await;
        if code == StatusCode::OK {
            admitted += 1;
        } else {
            refusals.push(headers);
        }
    }
    assert_eq!(admitted, 3);
    assert_eq!(refusals.len(), 7);
    // Each key is charged in the same round it is decided in, and a
    // refused request's charges are given back: it reports the loose policy
    // as it stands (later refusals come from the local cache of refused
    // keys, which asks no other policy).
    let state = refusals[0]["ratelimit"].to_str().unwrap();
    assert!(state.contains("\"tight\";r=0"), "{state}");
    assert!(
        state.contains("\"loose\";r=97"),
        "a refused request keeps no charge: {state}"
    );
    for refusal in &refusals {
        let state = refusal["ratelimit"].to_str().unwrap();
        assert!(
            !state.contains("\"loose\";r=") || state.contains("\"loose\";r=97"),
            "{state}"
        );
    }
    // The loose key holds only the three admitted requests, so the first
    // refusal's charge on it was given back (the later refusals came from
    // the local cache and charged nothing): the next request leaves 96.
    let loose = layer_on(
        store,
        RateLimitPolicy::builder("loose", KeyFn::Global, Quota::per_hour(100))
            .build()
            .unwrap(),
    );
    let (code, headers) = status(serve(loose).await).await;
    assert_eq!(code, StatusCode::OK);
    let state = headers["ratelimit"].to_str().unwrap();
    assert!(state.starts_with("\"loose\";r=96;t="), "{state}");
}

#[tokio::test]
async fn a_killed_redis_applies_the_failure_policy_without_hanging_and_recovery_follows() {
    let mut server = RedisServer::start().expect("redis-server");
    let config = RedisConfig::standalone(server.url()).call_timeout(Duration::from_millis(50));
    let closed_store = store(&config, FailurePolicy::FailClosed, TimeSource::Redis);
    let closed = serve(layer_on(
        closed_store.clone(),
        per_ip(Quota::per_hour(1_000)),
    ))
    .await;
    let open = serve(
        layer(
            &config,
            Quota::per_hour(1_000),
            FailurePolicy::FailOpen,
            TimeSource::Redis,
        )
        .await,
    )
    .await;
    let local_store = store(
        &config,
        FailurePolicy::LocalFallback {
            instances: NonZeroU32::new(4).unwrap(),
        },
        TimeSource::Redis,
    );
    let local = serve(layer_on(local_store.clone(), per_ip(Quota::per_hour(40)))).await;
    assert_eq!(status(closed).await.0, StatusCode::OK);
    assert_eq!(status(local).await.0, StatusCode::OK);

    // Load while Redis dies.
    let load = tokio::spawn(async move {
        let mut codes = Vec::new();
        for _ in 0..200 {
            codes.push(status(closed).await.0);
        }
        codes
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    server.kill();
    let codes = must_finish("requests while redis dies", load)
        .await
        .unwrap();
    assert!(
        codes
            .iter()
            .all(|c| *c == StatusCode::OK || *c == StatusCode::SERVICE_UNAVAILABLE)
    );

    // Down: each policy holds, and nothing waits past the call timeout.
    for _ in 0..5 {
        assert_eq!(
            must_finish("fail closed", status(closed)).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            must_finish("fail open", status(open)).await.0,
            StatusCode::OK
        );
    }
    // The local fallback allows quota/N = 40/4 = 10 (one was used before the kill, in Redis).
    let mut local_admitted = 0;
    for _ in 0..30 {
        if must_finish("local fallback", status(local)).await.0 == StatusCode::OK {
            local_admitted += 1;
        }
    }
    assert_eq!(local_admitted, 10);
    // Every fallback decision is counted: (let through, refused, local).
    let (_, refused, _) = closed_store.fallback_counts();
    assert!(refused >= 5, "{:?}", closed_store.fallback_counts());
    assert_eq!(local_store.fallback_counts(), (0, 0, 30));

    // Back: the same layers recover on their own.
    server.restart().expect("restart");
    let back = Instant::now();
    must_finish("recovery", async {
        while status(closed).await.0 != StatusCode::OK {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    println!("recovered {:?} after redis came back", back.elapsed());
}

#[tokio::test]
async fn in_redis_failed_logins_are_counted_and_successes_refunded() {
    use axum::routing::post;
    let server = RedisServer::start().expect("redis-server");
    let connection = RedisConnection::connect(&RedisConfig::standalone(server.url()))
        .await
        .unwrap();
    let store = RedisStore::builder(connection).build().unwrap();
    let policy = RateLimitPolicy::builder("failed_logins", KeyFn::ClientIp, Quota::per_hour(3))
        .charge_when(|status| status == StatusCode::UNAUTHORIZED)
        .build()
        .unwrap();
    let layer = RateLimitLayer::builder()
        .policy(policy)
        .redis_store(store)
        .build()
        .unwrap();
    let login = post(|headers: http::HeaderMap| async move {
        if headers.get("x-password").is_some_and(|p| p == "right") {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/login", login).layer(layer);
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let attempt = |password: &'static str| async move {
        send(addr, "POST", "/login", &[("x-password", password)])
            .await
            .0
    };
    for _ in 0..6 {
        assert_eq!(attempt("right").await, StatusCode::OK);
        // Refunds are sent after the response; let them land.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..3 {
        assert_eq!(attempt("wrong").await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(attempt("right").await, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn one_costly_refusal_does_not_block_cheap_requests_of_the_same_key() {
    use palisade_ratelimit::Weight;
    let server = RedisServer::start().expect("redis-server");
    let connection = RedisConnection::connect(&RedisConfig::standalone(server.url()))
        .await
        .unwrap();
    let store = RedisStore::builder(connection).build().unwrap();
    let policy = RateLimitPolicy::builder("units", KeyFn::Global, Quota::per_minute(10))
        .weight(Weight::Header {
            name: http::HeaderName::from_static("x-units"),
            max: 100,
        })
        .build()
        .unwrap();
    let addr = serve(
        RateLimitLayer::builder()
            .policy(policy)
            .redis_store(store)
            .build()
            .unwrap(),
    )
    .await;
    let call = |units: &'static str| async move {
        send(addr, "GET", "/api", &[("x-units", units)]).await.0
    };
    assert_eq!(call("8").await, StatusCode::OK);
    assert_eq!(
        call("5").await,
        StatusCode::TOO_MANY_REQUESTS,
        "only 2 units left"
    );
    // The refusal above must not make this instance refuse cheap requests.
    assert_eq!(call("1").await, StatusCode::OK);
    assert_eq!(call("1").await, StatusCode::OK);
}

/// A refusal answered from the local cache of refused keys reads as Redis's
/// own: the same `t` (time to a full bucket) and the same Retry-After.
#[tokio::test]
async fn a_cached_refusal_reports_what_redis_reported() {
    let server = RedisServer::start().expect("redis-server");
    let config = RedisConfig::standalone(server.url());
    // One every 10 s, three at once: the fourth request is 10 s early and
    // the bucket is full again in 30 s.
    let quota = Quota::per_minute(6).burst(3).unwrap();
    let addr =
        serve(layer(&config, quota, FailurePolicy::FailClosed, TimeSource::Redis).await).await;
    for _ in 0..3 {
        assert_eq!(status(addr).await.0, StatusCode::OK);
    }
    let fields = |headers: &http::HeaderMap| {
        (
            headers
                .get("ratelimit")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        )
    };
    let (refused, by_redis) = status(addr).await;
    assert_eq!(refused, StatusCode::TOO_MANY_REQUESTS);
    let (refused, cached) = status(addr).await;
    assert_eq!(refused, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        fields(&by_redis),
        (
            Some("\"per_ip\";r=0;t=30".to_owned()),
            Some("10".to_owned())
        )
    );
    assert_eq!(fields(&cached), fields(&by_redis));
}
