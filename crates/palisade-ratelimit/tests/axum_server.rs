//! The rate-limit layer over a real axum server: fields parsed back with a
//! structured-field parser, Retry-After, all-or-nothing charging across
//! policies, tiers by principal, response-dependent charging, shadow mode,
//! exemptions, refill over (manual) time, and state shared across routes.

// A failed expectation in a test is a failing test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use palisade_core::clock::ManualClock;
use palisade_core::key::KeyFn;
use palisade_core::principal::Principal;
use palisade_ratelimit::{
    HeaderOptions, MemoryStore, MissingKey, Quota, RateLimitLayer, RateLimitPolicy, TierBy,
    TierLimit, Tiers,
};

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

async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Response<Bytes> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "test");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = sender
        .send_request(builder.body(Empty::<Bytes>::new()).expect("request"))
        .await
        .expect("response");
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, body.collect().await.expect("body").to_bytes())
}

/// A layer of one policy on `store`.
fn layer_on(policy: RateLimitPolicy, store: MemoryStore) -> RateLimitLayer {
    RateLimitLayer::builder()
        .policy(policy)
        .store(store)
        .build()
        .unwrap()
}

/// The status of one request.
async fn status_of(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> StatusCode {
    send(addr, method, path, headers).await.status()
}

/// `RateLimit` / `RateLimit-Policy` parsed as structured-field lists:
/// policy name to its integer parameters.
fn parse_list(headers: &HeaderMap, name: &str) -> Vec<(String, Vec<(String, i64)>)> {
    let Some(value) = headers.get(name) else {
        return Vec::new();
    };
    let list: sfv::List =
        sfv::Parser::parse_list(value.as_bytes()).expect("a valid structured-field list");
    list.into_iter()
        .map(|entry| match entry {
            sfv::ListEntry::Item(item) => {
                let name = match item.bare_item {
                    sfv::BareItem::String(s) => s,
                    other => panic!("member is not a string: {other:?}"),
                };
                let params = item
                    .params
                    .into_iter()
                    .map(|(k, v)| (k, v.as_int().expect("integer parameter")))
                    .collect();
                (name, params)
            }
            sfv::ListEntry::InnerList(_) => panic!("inner lists are not expected"),
        })
        .collect()
}

fn param(list: &[(String, Vec<(String, i64)>)], policy: &str, key: &str) -> Option<i64> {
    list.iter()
        .find(|(name, _)| name == policy)
        .and_then(|(_, params)| params.iter().find(|(k, _)| k == key).map(|(_, v)| *v))
}

fn json(response: &Response<Bytes>) -> serde_json::Value {
    serde_json::from_slice(response.body()).expect("JSON")
}

fn manual_store() -> (ManualClock, MemoryStore) {
    let clock = ManualClock::new();
    let store = MemoryStore::builder()
        .clock(clock.clone())
        .build()
        .expect("store");
    (clock, store)
}

#[tokio::test]
async fn fields_parse_back_and_refusal_carries_retry_after_consistent_with_t() {
    let (clock, store) = manual_store();
    let layer = RateLimitLayer::builder()
        .policy(
            RateLimitPolicy::builder(
                "per_ip",
                KeyFn::ClientIp,
                Quota::per_minute(6).burst(3).unwrap(),
            )
            .build()
            .unwrap(),
        )
        .store(store)
        .headers(HeaderOptions {
            on_allowed: true,
            legacy: true,
        })
        .build()
        .unwrap();
    let addr = serve(
        Router::new()
            .route("/api", get(|| async { "ok" }))
            .layer(layer),
    )
    .await;

    for expected_remaining in [2, 1, 0] {
        let ok = send(addr, "GET", "/api", &[]).await;
        assert_eq!(ok.status(), StatusCode::OK);
        let policy = parse_list(ok.headers(), "ratelimit-policy");
        assert_eq!(param(&policy, "per_ip", "q"), Some(6));
        assert_eq!(param(&policy, "per_ip", "w"), Some(60));
        let state = parse_list(ok.headers(), "ratelimit");
        assert_eq!(param(&state, "per_ip", "r"), Some(expected_remaining));
        assert_eq!(
            ok.headers()["x-ratelimit-remaining"],
            expected_remaining.to_string()
        );
        assert_eq!(ok.headers()["x-ratelimit-limit"], "6");
    }
    let refused = send(addr, "GET", "/api", &[]).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let retry_after: i64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let state = parse_list(refused.headers(), "ratelimit");
    let t = param(&state, "per_ip", "t").expect("t");
    assert_eq!(param(&state, "per_ip", "r"), Some(0));
    assert!(
        retry_after >= 1 && retry_after <= t,
        "Retry-After {retry_after}, t {t}"
    );
    assert_eq!(retry_after, 10, "one cell every 10 s");
    let problem = json(&refused);
    assert_eq!(problem["type"], "urn:palisade:problem:quota-exceeded");
    assert_eq!(problem["violated_policies"], serde_json::json!(["per_ip"]));

    // After Retry-After, exactly one more fits.
    clock.advance(Duration::from_secs(10));
    assert_eq!(
        send(addr, "GET", "/api", &[]).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(addr, "GET", "/api", &[]).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn policies_are_all_or_nothing() {
    let (_clock, store) = manual_store();
    let tight = RateLimitPolicy::builder("tight", KeyFn::ClientIp, Quota::per_minute(2))
        .build()
        .unwrap();
    let loose = RateLimitPolicy::builder("loose", KeyFn::Global, Quota::per_minute(10))
        .build()
        .unwrap();
    let layer = RateLimitLayer::builder()
        .policy(tight)
        .policy(loose)
        .store(store)
        .build()
        .unwrap();
    let addr = serve(
        Router::new()
            .route("/x", get(|| async { "x" }))
            .layer(layer),
    )
    .await;

    for _ in 0..2 {
        assert_eq!(send(addr, "GET", "/x", &[]).await.status(), StatusCode::OK);
    }
    for _ in 0..5 {
        let refused = send(addr, "GET", "/x", &[]).await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            json(&refused)["violated_policies"],
            serde_json::json!(["tight"])
        );
        // The loose policy was not charged by refused requests.
        let state = parse_list(refused.headers(), "ratelimit");
        assert_eq!(param(&state, "loose", "r"), Some(8));
    }
}

/// Inserts a principal whose role is the `x-plan` header, standing in for an
/// authentication layer.
fn with_plan_principal(mut request: Request<axum::body::Body>) -> Request<axum::body::Body> {
    if let Some(plan) = request
        .headers()
        .get("x-plan")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    {
        let principal = Principal::builder(format!("user-{plan}"))
            .roles([plan])
            .build();
        request.extensions_mut().insert(principal);
    }
    request
}

#[tokio::test]
async fn tiers_follow_the_principal() {
    let (_clock, store) = manual_store();
    let tiers = Tiers::new(
        TierBy::Role,
        [
            ("free", TierLimit::Limited(Quota::per_minute(2))),
            ("pro", TierLimit::Limited(Quota::per_minute(5))),
            ("unlimited", TierLimit::Unlimited),
        ],
        "free",
    )
    .unwrap();
    let layer = layer_on(
        RateLimitPolicy::tiered("per_user", KeyFn::Subject, tiers)
            .build()
            .unwrap(),
        store,
    );
    let app = Router::new()
        .route("/api", get(|| async { "ok" }))
        .layer(layer)
        .layer(axum::middleware::map_request(
            |r: Request<axum::body::Body>| async { with_plan_principal(r) },
        ));
    let addr = serve(app).await;

    let admitted = |plan: &'static str| async move {
        let mut n = 0;
        for _ in 0..20 {
            let response = send(addr, "GET", "/api", &[("x-plan", plan)]).await;
            if response.status() == StatusCode::OK {
                n += 1;
            }
        }
        n
    };
    assert_eq!(admitted("free").await, 2);
    assert_eq!(admitted("pro").await, 5);
    assert_eq!(admitted("unlimited").await, 20);
    let pro = send(addr, "GET", "/api", &[("x-plan", "pro")]).await;
    assert_eq!(
        param(
            &parse_list(pro.headers(), "ratelimit-policy"),
            "per_user",
            "q"
        ),
        Some(5)
    );
    let unlimited = send(addr, "GET", "/api", &[("x-plan", "unlimited")]).await;
    assert!(
        unlimited.headers().get("ratelimit").is_none(),
        "no limit, no fields"
    );
    // Anonymous requests share the default tier's single bucket.
    assert_eq!(
        send(addr, "GET", "/api", &[]).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn only_failed_logins_are_charged() {
    let (clock, store) = manual_store();
    let logins = RateLimitPolicy::builder("failed_logins", KeyFn::ClientIp, Quota::per_hour(3))
        .charge_when(|status| status == StatusCode::UNAUTHORIZED)
        .build()
        .unwrap();
    let layer = layer_on(logins, store);
    let login = post(|headers: HeaderMap| async move {
        if headers.get("x-password").is_some_and(|p| p == "right") {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        }
    });
    let addr = serve(Router::new().route("/auth/login", login).route_layer(layer)).await;

    for _ in 0..10 {
        assert_eq!(
            send(addr, "POST", "/auth/login", &[("x-password", "right")])
                .await
                .status(),
            StatusCode::OK
        );
    }
    for _ in 0..3 {
        assert_eq!(
            send(addr, "POST", "/auth/login", &[("x-password", "wrong")])
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let blocked = send(addr, "POST", "/auth/login", &[("x-password", "right")]).await;
    assert_eq!(
        blocked.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "three failures lock the key, even with the right password"
    );
    clock.advance(Duration::from_secs(1200));
    assert_eq!(
        send(addr, "POST", "/auth/login", &[("x-password", "right")])
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn shadow_mode_reports_but_never_refuses_and_exemptions_skip_the_policy() {
    let (_clock, store) = manual_store();
    let shadow = RateLimitPolicy::builder("trial", KeyFn::ClientIp, Quota::per_minute(1))
        .shadow(true)
        .build()
        .unwrap();
    let enforced = RateLimitPolicy::builder("per_ip", KeyFn::ClientIp, Quota::per_minute(2))
        .exempt_path("/health")
        .exempt_method(http::Method::OPTIONS)
        .build()
        .unwrap();
    let layer = RateLimitLayer::builder()
        .policy(shadow)
        .policy(enforced)
        .store(store)
        .build()
        .unwrap();
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/api", get(|| async { "ok" }).options(|| async { "" }))
        .layer(layer);
    let addr = serve(app).await;

    for _ in 0..2 {
        assert_eq!(
            send(addr, "GET", "/api", &[]).await.status(),
            StatusCode::OK
        );
    }
    let second = send(addr, "GET", "/api", &[]).await;
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        json(&second)["violated_policies"],
        serde_json::json!(["per_ip"]),
        "shadow policies are never listed as violated"
    );
    for _ in 0..10 {
        assert_eq!(
            send(addr, "GET", "/health", &[]).await.status(),
            StatusCode::OK
        );
        assert_eq!(
            send(addr, "OPTIONS", "/api", &[]).await.status(),
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn one_layer_on_several_routes_shares_its_state() {
    let (_clock, store) = manual_store();
    let layer = layer_on(
        RateLimitPolicy::builder("per_ip", KeyFn::ClientIp, Quota::per_minute(3))
            .build()
            .unwrap(),
        store,
    );
    let app = Router::new()
        .route("/a", get(|| async { "a" }).route_layer(layer.clone()))
        .route("/b", get(|| async { "b" }).route_layer(layer));
    let addr = serve(app).await;
    assert_eq!(send(addr, "GET", "/a", &[]).await.status(), StatusCode::OK);
    assert_eq!(send(addr, "GET", "/b", &[]).await.status(), StatusCode::OK);
    assert_eq!(send(addr, "GET", "/a", &[]).await.status(), StatusCode::OK);
    assert_eq!(
        send(addr, "GET", "/b", &[]).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn parallel_failed_logins_cannot_outrun_the_limit() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let (_clock, store) = manual_store();
    let logins = RateLimitPolicy::builder("failed_logins", KeyFn::ClientIp, Quota::per_hour(3))
        .charge_when(|status| status == StatusCode::UNAUTHORIZED)
        .build()
        .unwrap();
    let layer = layer_on(logins, store);
    let reached = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&reached);
    let login = post(move || {
        let counter = Arc::clone(&counter);
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            // Slow enough that all attempts are in flight together.
            tokio::time::sleep(Duration::from_millis(50)).await;
            StatusCode::UNAUTHORIZED
        }
    });
    let addr = serve(Router::new().route("/auth/login", login).route_layer(layer)).await;
    let attempts: Vec<_> = (0..20)
        .map(|_| tokio::spawn(async move { send(addr, "POST", "/auth/login", &[]).await.status() }))
        .collect();
    let mut refused = 0;
    for attempt in attempts {
        if attempt.await.unwrap() == StatusCode::TOO_MANY_REQUESTS {
            refused += 1;
        }
    }
    assert_eq!(
        reached.load(Ordering::SeqCst),
        3,
        "only the burst reaches the handler"
    );
    assert_eq!(refused, 17);
}

#[tokio::test]
async fn a_request_costing_more_than_the_burst_is_too_large() {
    use palisade_ratelimit::Weight;
    let (_clock, store) = manual_store();
    let upload = RateLimitPolicy::builder("upload_units", KeyFn::ClientIp, Quota::per_minute(10))
        .weight(Weight::Header {
            name: http::HeaderName::from_static("x-units"),
            max: 1_000,
        })
        .build()
        .unwrap();
    let layer = layer_on(upload, store);
    let addr = serve(
        Router::new()
            .route("/upload", post(|| async { "ok" }))
            .layer(layer),
    )
    .await;
    assert_eq!(
        send(addr, "POST", "/upload", &[("x-units", "4")])
            .await
            .status(),
        StatusCode::OK
    );
    let huge = send(addr, "POST", "/upload", &[("x-units", "11")]).await;
    assert_eq!(huge.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        json(&huge)["violated_policies"],
        serde_json::json!(["upload_units"])
    );
    // The refused request charged nothing: six units are left.
    assert_eq!(
        send(addr, "POST", "/upload", &[("x-units", "6")])
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        send(addr, "POST", "/upload", &[("x-units", "1")])
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// A layer of one enforced policy takes the single-policy path: its
/// exemptions, missing-key rules and full store behave as on the general
/// path.
#[tokio::test]
async fn one_policy_exempts_skips_shares_and_refuses_when_the_store_is_full() {
    let tenant = || KeyFn::header(http::HeaderName::from_static("x-tenant")).unwrap();
    let policy = |name: &str, missing: MissingKey| {
        RateLimitPolicy::builder(name, tenant(), Quota::per_minute(2))
            .missing_key(missing)
            .exempt_path("/health")
            .exempt_method(http::Method::OPTIONS)
            .build()
            .unwrap()
    };
    let shared = layer_on(policy("shared", MissingKey::Shared), manual_store().1);
    let skip = layer_on(policy("skip", MissingKey::Skip), manual_store().1);
    let tiny = MemoryStore::builder()
        .clock(ManualClock::new())
        .capacity(1)
        .build()
        .unwrap();
    let full = layer_on(policy("tiny", MissingKey::Shared), tiny);
    let handler = || get(|| async { "ok" }).options(|| async { "" });
    let addr = serve(
        Router::new()
            .route("/shared", handler().layer(shared.clone()))
            .route("/health", handler().layer(shared))
            .route("/skip", handler().layer(skip))
            .route("/tiny", handler().layer(full)),
    )
    .await;

    // No key: one bucket for every keyless request.
    for _ in 0..2 {
        assert_eq!(status_of(addr, "GET", "/shared", &[]).await, StatusCode::OK);
    }
    let refused = send(addr, "GET", "/shared", &[]).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        json(&refused)["violated_policies"],
        serde_json::json!(["shared"])
    );
    // A key of its own has its own bucket; exempt paths and methods pass.
    let own = send(addr, "GET", "/shared", &[("x-tenant", "acme")]).await;
    assert_eq!(own.status(), StatusCode::OK);
    assert_eq!(
        param(&parse_list(own.headers(), "ratelimit"), "shared", "r"),
        Some(1)
    );
    for _ in 0..5 {
        let health = send(addr, "GET", "/health", &[]).await;
        assert_eq!(health.status(), StatusCode::OK);
        assert!(health.headers().get("ratelimit").is_none(), "not limited");
        assert_eq!(
            status_of(addr, "OPTIONS", "/shared", &[]).await,
            StatusCode::OK
        );
    }
    // Skip: keyless requests are not limited at all, keyed ones are.
    for _ in 0..5 {
        let keyless = send(addr, "GET", "/skip", &[]).await;
        assert_eq!(keyless.status(), StatusCode::OK);
        assert!(keyless.headers().get("ratelimit").is_none());
    }
    for _ in 0..2 {
        assert_eq!(
            status_of(addr, "GET", "/skip", &[("x-tenant", "acme")]).await,
            StatusCode::OK
        );
    }
    assert_eq!(
        status_of(addr, "GET", "/skip", &[("x-tenant", "acme")]).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // A store with room for one live key refuses a second key: 503, fail
    // secure, with a retry time.
    assert_eq!(
        status_of(addr, "GET", "/tiny", &[("x-tenant", "a")]).await,
        StatusCode::OK
    );
    let overloaded = send(addr, "GET", "/tiny", &[("x-tenant", "b")]).await;
    assert_eq!(overloaded.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json(&overloaded)["type"], "urn:palisade:problem:overloaded");
    assert!(overloaded.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn a_partly_enforced_policy_refuses_about_its_share_of_requests_over_the_limit() {
    let (_clock, store) = manual_store();
    let policy = |percent| {
        RateLimitPolicy::builder("rollout", KeyFn::Global, Quota::per_hour(1))
            .enforce_percent(percent)
            .build()
            .unwrap()
    };
    let mut refused_by_percent = Vec::new();
    for percent in [0, 25, 100] {
        let layer = layer_on(policy(percent), store.clone());
        let app = Router::new()
            .route("/api", get(|| async { "ok" }))
            .layer(layer);
        let addr = serve(app).await;
        let mut refused = 0;
        for _ in 0..200 {
            match send(addr, "GET", "/api", &[]).await.status() {
                StatusCode::OK => {}
                StatusCode::TOO_MANY_REQUESTS => refused += 1,
                other => panic!("unexpected {other}"),
            }
        }
        refused_by_percent.push(refused);
    }
    // The first layer's first request took the hour's one place; every
    // later request is over the limit and refused with the policy's
    // probability (25%: 50 expected of 200; outside 15..=100 has a chance
    // below one in a billion).
    assert_eq!(refused_by_percent[0], 0, "0%: a policy that only reports");
    assert!(
        (15..=100).contains(&refused_by_percent[1]),
        "25%: {refused_by_percent:?}"
    );
    assert_eq!(
        refused_by_percent[2], 200,
        "100%: every request over the limit"
    );
}

#[tokio::test]
async fn principals_are_exempt_by_subject_or_by_any_function_of_the_request() {
    use tower::{Layer, ServiceExt};

    let (_clock, store) = manual_store();
    let layer = layer_on(
        RateLimitPolicy::builder("per_tenant", KeyFn::Global, Quota::per_hour(1))
            .exempt_subject("svc-backup")
            .exempt_if(|head| head.principal().and_then(Principal::tenant) == Some("internal"))
            .build()
            .unwrap(),
        store,
    );
    let service = layer.layer(tower::service_fn(|_: Request<Empty<Bytes>>| async {
        Ok::<_, std::convert::Infallible>(Response::new(Empty::<Bytes>::new()))
    }));
    let status = |principal: Option<Principal>| {
        let service = service.clone();
        async move {
            let mut request = Request::get("/api").body(Empty::new()).unwrap();
            if let Some(principal) = principal {
                request.extensions_mut().insert(principal);
            }
            service.oneshot(request).await.unwrap().status()
        }
    };
    assert_eq!(status(None).await, StatusCode::OK);
    assert_eq!(status(None).await, StatusCode::TOO_MANY_REQUESTS);
    for _ in 0..3 {
        assert_eq!(
            status(Some(Principal::builder("svc-backup").build())).await,
            StatusCode::OK
        );
        assert_eq!(
            status(Some(Principal::builder("bob").tenant("internal").build())).await,
            StatusCode::OK
        );
    }
    assert_eq!(
        status(Some(Principal::builder("bob").tenant("acme").build())).await,
        StatusCode::TOO_MANY_REQUESTS
    );
}
