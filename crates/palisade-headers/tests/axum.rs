//! The layers over a real axum server on loopback, read by a small hyper
//! client.
#![cfg(feature = "axum")]
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use palisade_core::Rejection;
use palisade_core::client_ip::ClientIpResolver;
use palisade_core::guard::{GuardLayer, RequestHead};
use palisade_headers::csp::{ContentSecurityPolicy, Source};
use palisade_headers::{CspNonce, HttpsRedirectLayer, SecurityHeaders, SecurityHeadersLayer};
use tokio::net::{TcpListener, TcpStream};

async fn spawn(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .expect("server");
    });
    addr
}

async fn send(addr: SocketAddr, request: Request<Full<Bytes>>) -> Response<Bytes> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let response = sender.send_request(request).await.expect("response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Response::from_parts(parts, body)
}

async fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response<Bytes> {
    let mut builder = Request::get(path).header("host", addr.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    send(addr, builder.body(Full::default()).expect("request")).await
}

fn app(layer: SecurityHeadersLayer) -> Router {
    Router::new()
        .route("/", get(|| async { "hello" }))
        .route(
            "/leaky",
            get(|| async {
                (
                    [
                        ("server", "nginx/1.2.3"),
                        ("x-powered-by", "PHP/5.6"),
                        ("x-aspnet-version", "4.0"),
                        ("x-request-id", "kept"),
                    ],
                    "leaky",
                )
            }),
        )
        .route(
            "/embeddable",
            get(|| async {
                (
                    [("x-frame-options", "ALLOW-FROM https://partner.example")],
                    "embed",
                )
            }),
        )
        .layer(layer)
}

/// The security headers of a response: everything but what hyper and
/// axum add themselves.
fn security_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut found: Vec<_> = headers
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "content-type" | "content-length" | "date"))
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
        .collect();
    found.sort();
    found
}

fn sorted(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut expected: Vec<_> = expected
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
    expected.sort();
    expected
}

const HELMET_CSP: &str = "default-src 'self'; base-uri 'self'; font-src 'self' https: data:; form-action 'self'; frame-ancestors 'self'; img-src 'self' data:; object-src 'none'; script-src 'self'; script-src-attr 'none'; style-src 'self' https: 'unsafe-inline'; upgrade-insecure-requests";
const HSTS: (&str, &str) = (
    "strict-transport-security",
    "max-age=31536000; includeSubDomains",
);

fn helmet_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("content-security-policy", HELMET_CSP),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
        ("origin-agent-cluster", "?1"),
        ("referrer-policy", "no-referrer"),
        ("x-content-type-options", "nosniff"),
        ("x-dns-prefetch-control", "off"),
        ("x-download-options", "noopen"),
        ("x-frame-options", "SAMEORIGIN"),
        ("x-permitted-cross-domain-policies", "none"),
        ("x-xss-protection", "0"),
    ]
}

fn loopback_proxy() -> ClientIpResolver {
    ClientIpResolver::builder()
        .trust_proxy("127.0.0.1")
        .build()
        .unwrap()
}

#[tokio::test]
async fn helmet_preset_sets_helmets_exact_values_without_hsts_on_plain_http() {
    let addr = spawn(app(SecurityHeaders::helmet().build().unwrap())).await;
    let response = get_with(addr, "/", &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        security_headers(response.headers()),
        sorted(&helmet_headers())
    );
    assert_eq!(response.body(), "hello");
}

#[tokio::test]
async fn hsts_is_sent_on_forwarded_https_from_a_trusted_proxy_only() {
    let layer = SecurityHeaders::helmet()
        .trust_proxies(loopback_proxy())
        .build()
        .unwrap();
    let addr = spawn(app(layer)).await;
    let https = get_with(addr, "/", &[("x-forwarded-proto", "https")]).await;
    let mut expected = helmet_headers();
    expected.push(HSTS);
    assert_eq!(security_headers(https.headers()), sorted(&expected));
    let plain = get_with(addr, "/", &[("x-forwarded-proto", "http")]).await;
    assert!(!plain.headers().contains_key("strict-transport-security"));

    let untrusting = SecurityHeaders::helmet()
        .trust_proxies(
            ClientIpResolver::builder()
                .trust_proxy("10.0.0.0/8")
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let addr = spawn(app(untrusting)).await;
    let forged = get_with(addr, "/", &[("x-forwarded-proto", "https")]).await;
    assert!(!forged.headers().contains_key("strict-transport-security"));
}

#[tokio::test]
async fn hsts_is_sent_when_tls_is_terminated_in_process() {
    let addr = spawn(app(SecurityHeaders::api().assume_https().build().unwrap())).await;
    let response = get_with(addr, "/", &[]).await;
    assert_eq!(
        security_headers(response.headers()),
        sorted(&[
            (
                "content-security-policy",
                "default-src 'none'; frame-ancestors 'none'"
            ),
            ("cache-control", "no-store"),
            HSTS,
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "no-referrer"),
        ])
    );
}

#[tokio::test]
async fn owasp_strict_preset_sets_the_projects_exact_values() {
    let layer = SecurityHeaders::owasp_strict()
        .trust_proxies(loopback_proxy())
        .build()
        .unwrap();
    let addr = spawn(app(layer)).await;
    let response = get_with(addr, "/", &[("x-forwarded-proto", "https")]).await;
    assert_eq!(
        security_headers(response.headers()),
        sorted(&[
            ("cache-control", "no-store, max-age=0"),
            (
                "content-security-policy",
                "default-src 'self'; form-action 'self'; object-src 'none'; frame-ancestors 'none'; upgrade-insecure-requests; block-all-mixed-content"
            ),
            ("cross-origin-embedder-policy", "require-corp"),
            ("cross-origin-opener-policy", "same-origin"),
            ("cross-origin-resource-policy", "same-origin"),
            (
                "permissions-policy",
                "accelerometer=(), autoplay=(), camera=(), cross-origin-isolated=(), display-capture=(), encrypted-media=(), fullscreen=(), geolocation=(), gyroscope=(), keyboard-map=(), magnetometer=(), microphone=(), midi=(), payment=(), picture-in-picture=(), publickey-credentials-get=(), screen-wake-lock=(), sync-xhr=(self), usb=(), web-share=(), xr-spatial-tracking=(), clipboard-read=(), clipboard-write=(), gamepad=(), hid=(), idle-detection=(), interest-cohort=(), serial=(), unload=()"
            ),
            ("referrer-policy", "no-referrer"),
            HSTS,
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "deny"),
            ("x-permitted-cross-domain-policies", "none"),
        ])
    );
}

#[tokio::test]
async fn leaky_headers_are_stripped_and_others_kept() {
    let addr = spawn(app(SecurityHeaders::helmet().build().unwrap())).await;
    let response = get_with(addr, "/leaky", &[]).await;
    let headers = response.headers();
    for leaky in ["server", "x-powered-by", "x-aspnet-version"] {
        assert!(!headers.contains_key(leaky), "{leaky}");
    }
    assert_eq!(headers["x-request-id"], "kept");
    assert_eq!(headers["x-content-type-options"], "nosniff");

    let keeping = SecurityHeaders::helmet()
        .keep(&http::header::SERVER)
        .build()
        .unwrap();
    let addr = spawn(app(keeping)).await;
    let response = get_with(addr, "/leaky", &[]).await;
    assert_eq!(response.headers()["server"], "nginx/1.2.3");
    assert!(!response.headers().contains_key("x-powered-by"));
}

#[tokio::test]
async fn handler_headers_are_kept_unless_overriding_is_chosen() {
    let addr = spawn(app(SecurityHeaders::helmet().build().unwrap())).await;
    let response = get_with(addr, "/embeddable", &[]).await;
    assert_eq!(
        response.headers()["x-frame-options"],
        "ALLOW-FROM https://partner.example"
    );
    assert_eq!(
        response.headers().get_all("x-frame-options").iter().count(),
        1
    );

    let overriding = SecurityHeaders::helmet()
        .override_handler_headers()
        .build()
        .unwrap();
    let addr = spawn(app(overriding)).await;
    let response = get_with(addr, "/embeddable", &[]).await;
    assert_eq!(response.headers()["x-frame-options"], "SAMEORIGIN");
    assert_eq!(
        response.headers().get_all("x-frame-options").iter().count(),
        1
    );
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    assert_eq!(response.body(), "embed");
}

#[tokio::test]
async fn rejections_of_inner_palisade_layers_carry_the_headers() {
    let guard = GuardLayer::new("no_admin", |head: &RequestHead<'_>| {
        if head.uri().path().starts_with("/admin") {
            Err(Rejection::forbidden().with_detail("No."))
        } else {
            Ok(())
        }
    });
    let router = Router::new()
        .route("/admin", get(|| async { "secret" }))
        .layer(guard)
        .layer(SecurityHeaders::helmet().build().unwrap());
    let addr = spawn(router).await;
    let response = get_with(addr, "/admin", &[]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(response.headers()["content-security-policy"], HELMET_CSP);
    assert_eq!(response.headers()["x-frame-options"], "SAMEORIGIN");
    // The renderer's own Cache-Control stays (handler headers are kept).
    assert_eq!(response.headers()["cache-control"], "no-store");
}

#[tokio::test]
async fn each_response_gets_a_fresh_nonce_shared_with_its_handler() {
    let layer = SecurityHeaders::helmet()
        .csp(
            ContentSecurityPolicy::helmet()
                .script_src([Source::SelfOrigin, Source::Nonce])
                .style_src([Source::SelfOrigin, Source::Nonce]),
        )
        .build()
        .unwrap();
    let router = Router::new()
        .route(
            "/page",
            get(|nonce: CspNonce| async move { nonce.as_str().to_owned() }),
        )
        .route(
            "/maybe",
            get(|nonce: Option<CspNonce>| async move { nonce.is_some().to_string() }),
        )
        .layer(layer);
    let addr = spawn(router).await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let response = get_with(addr, "/page", &[]).await;
        let nonce = String::from_utf8(response.body().to_vec()).unwrap();
        assert_eq!(nonce.len(), 24);
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .unwrap();
        assert_eq!(
            csp,
            HELMET_CSP
                .replace(
                    "script-src 'self'",
                    &format!("script-src 'self' 'nonce-{nonce}'")
                )
                .replace(
                    "style-src 'self' https: 'unsafe-inline'",
                    &format!("style-src 'self' 'nonce-{nonce}'")
                )
        );
        seen.push(nonce);
    }
    assert_ne!(seen[0], seen[1]);
    assert_eq!(get_with(addr, "/maybe", &[]).await.body(), "true");
}

#[tokio::test]
async fn the_nonce_extractor_refuses_with_500_without_a_nonce_policy() {
    let router = Router::new()
        .route(
            "/page",
            get(|nonce: CspNonce| async move { nonce.to_string() }),
        )
        .layer(SecurityHeaders::helmet().build().unwrap());
    let addr = spawn(router).await;
    assert_eq!(
        get_with(addr, "/page", &[]).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
}

#[tokio::test]
async fn report_only_policy_goes_beside_the_enforced_one_with_its_endpoint() {
    let layer = SecurityHeaders::api()
        .csp_report_only(
            ContentSecurityPolicy::new()
                .default_src([Source::SelfOrigin])
                .report_to("csp")
                .report_uri("https://reports.example/csp"),
        )
        .reporting_endpoint("csp", "https://reports.example/csp")
        .build()
        .unwrap();
    let addr = spawn(app(layer)).await;
    let response = get_with(addr, "/", &[]).await;
    assert_eq!(
        response.headers()["content-security-policy-report-only"],
        "default-src 'self'; report-to csp; report-uri https://reports.example/csp"
    );
    assert_eq!(
        response.headers()["reporting-endpoints"],
        r#"csp="https://reports.example/csp""#
    );
    assert_eq!(
        response.headers()["content-security-policy"],
        "default-src 'none'; frame-ancestors 'none'"
    );

    let silent = SecurityHeaders::new()
        .csp_report_only(ContentSecurityPolicy::new().default_src([Source::SelfOrigin]))
        .build();
    assert!(silent.is_err());
}

fn redirect_app() -> Router {
    Router::new()
        .route(
            "/a/b",
            post(|body: String| async move { format!("posted {body}") }),
        )
        .route("/health", get(|| async { "ok" }))
        .layer(
            HttpsRedirectLayer::builder()
                .trust_proxies(loopback_proxy())
                .exempt_path("/health")
                .build()
                .unwrap(),
        )
}

#[tokio::test]
async fn redirect_keeps_method_path_and_query_with_308() {
    let addr = spawn(redirect_app()).await;
    let request = Request::builder()
        .method(Method::POST)
        .uri("/a/b?c=d&e=%20f")
        .header("host", "shop.example.com:8080")
        .body(Full::new(Bytes::from_static(b"order")))
        .unwrap();
    let response = send(addr, request).await;
    assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        response.headers()["location"],
        "https://shop.example.com/a/b?c=d&e=%20f"
    );
    assert!(response.body().is_empty());
    assert!(!response.headers().contains_key("strict-transport-security"));
}

#[tokio::test]
async fn redirect_exempts_health_and_leaves_https_alone_with_hsts() {
    let addr = spawn(redirect_app()).await;
    let health = get_with(addr, "/health", &[]).await;
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.body(), "ok");
    assert!(!health.headers().contains_key("strict-transport-security"));
    // "/health/x" and "/health?x" paths: only the exact path is exempt.
    assert_eq!(
        get_with(addr, "/healthz", &[]).await.status(),
        StatusCode::PERMANENT_REDIRECT
    );
    assert_eq!(
        get_with(addr, "/health?probe=1", &[]).await.status(),
        StatusCode::OK
    );

    let request = Request::post("/a/b")
        .header("host", "shop.example.com")
        .header("x-forwarded-proto", "https")
        .body(Full::new(Bytes::from_static(b"order")))
        .unwrap();
    let response = send(addr, request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.body(), "posted order");
    assert_eq!(response.headers()["strict-transport-security"], HSTS.1);
}

#[tokio::test]
async fn redirect_ignores_forwarded_proto_from_untrusted_peers() {
    let router = Router::new().route("/", get(|| async { "hi" })).layer(
        HttpsRedirectLayer::builder()
            .trust_proxies(
                ClientIpResolver::builder()
                    .trust_proxy("10.0.0.0/8")
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap(),
    );
    let addr = spawn(router).await;
    let response = get_with(addr, "/", &[("x-forwarded-proto", "https")]).await;
    assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
}

#[tokio::test]
async fn redirect_refuses_a_missing_or_garbage_host_with_problem_json() {
    let addr = spawn(redirect_app()).await;
    let no_host = Request::post("/a/b").body(Full::default()).unwrap();
    let response = send(addr, no_host).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert!(!response.headers().contains_key("location"));
    let body: serde_json_like::Value = serde_json_like::parse(response.body());
    assert_eq!(body.status, 400);

    for host in ["evil.com/x", "user@evil.com", "a b", "[zz]"] {
        let request = Request::get("/")
            .header("host", http::HeaderValue::from_str(host).unwrap())
            .body(Full::default())
            .unwrap();
        let response = send(addr, request).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{host}");
    }
}

/// Just enough JSON reading for a problem's status, without a JSON
/// dependency in this crate.
mod serde_json_like {
    pub(crate) struct Value {
        pub(crate) status: u16,
    }

    pub(crate) fn parse(body: &[u8]) -> Value {
        let text = std::str::from_utf8(body).unwrap();
        let at = text.find("\"status\":").unwrap() + 9;
        let digits: String = text[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        Value {
            status: digits.parse().unwrap(),
        }
    }
}

#[tokio::test]
async fn layers_compose_in_service_builder_around_a_plain_service() {
    use tower::{ServiceBuilder, ServiceExt};
    let service = ServiceBuilder::new()
        .layer(SecurityHeaders::api().build().unwrap())
        .layer(
            HttpsRedirectLayer::builder()
                .without_hsts()
                .build()
                .unwrap(),
        )
        .service_fn(|_request: Request<Full<Bytes>>| async {
            Ok::<_, std::convert::Infallible>(
                (StatusCode::OK, [("x-powered-by", "tower")], "plain").into_response(),
            )
        });
    let redirected = service
        .clone()
        .oneshot(
            Request::get("http://api.example/v1?x=1")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(redirected.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        redirected.headers()["location"],
        "https://api.example/v1?x=1"
    );
    assert_eq!(redirected.headers()["cache-control"], "no-store");
    // No content type of our own on a response that has none.
    assert!(!redirected.headers().contains_key("content-type"));
    assert!(
        !redirected
            .headers()
            .contains_key("strict-transport-security")
    );

    let served = service
        .oneshot(
            Request::get("https://api.example/v1")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    assert!(!served.headers().contains_key("x-powered-by"));
    assert_eq!(served.headers()["strict-transport-security"], HSTS.1);
    assert_eq!(
        served.into_body().collect().await.unwrap().to_bytes(),
        "plain"
    );
}

#[tokio::test]
async fn a_handlers_own_policy_wins_over_the_nonce_policy_unless_overriding() {
    let policy = || ContentSecurityPolicy::new().script_src([Source::Nonce]);
    let router = |layer: SecurityHeadersLayer| {
        Router::new()
            .route(
                "/own",
                get(|| async { ([("content-security-policy", "default-src 'none'")], "own") }),
            )
            .route("/none", get(|| async { StatusCode::NO_CONTENT }))
            .layer(layer)
    };
    let keeping = spawn(router(
        SecurityHeaders::new().csp(policy()).build().unwrap(),
    ))
    .await;
    let response = get_with(keeping, "/own", &[]).await;
    assert_eq!(
        response.headers()["content-security-policy"],
        "default-src 'none'"
    );
    assert_eq!(
        response
            .headers()
            .get_all("content-security-policy")
            .iter()
            .count(),
        1
    );
    let empty = get_with(keeping, "/none", &[]).await;
    assert_eq!(empty.status(), StatusCode::NO_CONTENT);
    assert!(!empty.headers().contains_key("content-type"));
    let csp = empty.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("script-src 'nonce-") && csp.len() == "script-src 'nonce-'".len() + 24);

    let overriding = SecurityHeaders::new()
        .csp(policy())
        .override_handler_headers()
        .build()
        .unwrap();
    let addr = spawn(router(overriding)).await;
    let response = get_with(addr, "/own", &[]).await;
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(csp.starts_with("script-src 'nonce-"), "{csp}");
    assert_eq!(
        response
            .headers()
            .get_all("content-security-policy")
            .iter()
            .count(),
        1
    );
}

#[tokio::test]
async fn redirect_works_as_a_route_layer_on_matched_routes_only() {
    let router = Router::new()
        .route("/secure", get(|| async { "secure" }))
        .route_layer(HttpsRedirectLayer::builder().build().unwrap())
        .layer(SecurityHeaders::helmet().build().unwrap());
    let addr = spawn(router).await;
    let response = get_with(addr, "/secure?x=1", &[]).await;
    assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        response.headers()["location"],
        "https://127.0.0.1/secure?x=1"
    );
    assert_eq!(response.headers()["x-frame-options"], "SAMEORIGIN");
    let missing = get_with(addr, "/nowhere", &[]).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(missing.headers()["x-content-type-options"], "nosniff");
}
