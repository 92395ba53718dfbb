//! The demo gateway's router, served on loopback, as a user and an attacker
//! would meet it.
#![cfg(feature = "axum")]
// A failed expectation in a test is a failing test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
#[path = "../examples/gateway.rs"]
#[allow(dead_code)]
mod gateway;

use std::net::SocketAddr;

use bytes::Bytes;
use common::{get, json, send, spawn_axum};
use http::{Request, StatusCode};
use http_body_util::Empty;

async fn serve(admin_networks: &[&str], trusted_proxies: &[&str]) -> SocketAddr {
    let config = gateway::Config {
        port: 0,
        rate_per_minute: 1_000,
        demo_password: "open sesame".to_owned(),
        redis_url: None,
        instances: std::num::NonZeroU32::MIN,
        trusted_proxies: trusted_proxies.iter().map(|s| (*s).to_owned()).collect(),
        admin_networks: admin_networks
            .iter()
            .map(|n| n.parse().expect("cidr"))
            .collect(),
        cors_origins: vec!["http://localhost:3000".to_owned()],
    };
    spawn_axum(gateway::app(&config).expect("app")).await
}

async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> http::Response<Bytes> {
    // `send` takes an empty body; write bodies over a raw connection instead.
    if body.is_empty() {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "gateway");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        return send(addr, builder.body(Empty::new()).expect("request")).await;
    }
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(body.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8(raw).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("response");
    let status: u16 = head
        .split(' ')
        .nth(1)
        .expect("status")
        .parse()
        .expect("status");
    let mut response = http::Response::builder().status(status);
    for line in head.lines().skip(1) {
        if let Some((name, value)) = line.split_once(": ") {
            response = response.header(name, value);
        }
    }
    response
        .body(Bytes::from(body.to_owned()))
        .expect("response")
}

#[tokio::test]
async fn health_is_open_and_unknown_routes_are_problem_json_404() {
    let addr = serve(&["127.0.0.0/8"], &[]).await;
    let health = get(addr, "/health", &[]).await;
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(json(&health), serde_json::json!({"status": "ok"}));
    let missing = get(addr, "/nope", &[]).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(json(&missing)["type"], "urn:palisade:problem:not-found");
}

#[tokio::test]
async fn scans_are_created_read_and_deleted_by_an_admin_network() {
    let addr = serve(&["127.0.0.0/8"], &[]).await;
    let created = request(
        addr,
        "POST",
        "/api/scans",
        &[("content-type", "application/json")],
        r#"{"target":"example.com"}"#,
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(created.headers()["location"], "/api/scans/1");
    let scan = json(&created);
    assert_eq!(scan["target"], "example.com");
    assert_eq!(scan["requested_by"], "127.0.0.1");

    let read = get(addr, "/api/scans/1", &[]).await;
    assert_eq!(json(&read)["id"], 1);
    assert_eq!(
        json(&get(addr, "/api/scans", &[]).await)
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(
        request(addr, "DELETE", "/api/scans/1", &[], "")
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let gone = get(addr, "/api/scans/1", &[]).await;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    assert_eq!(gone.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn delete_outside_admin_networks_is_forbidden_even_with_a_spoofed_address() {
    let addr = serve(&["10.0.0.0/8"], &[]).await;
    let created = request(
        addr,
        "POST",
        "/api/scans",
        &[("content-type", "application/json")],
        r#"{"target":"a.example"}"#,
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let refused = request(
        addr,
        "DELETE",
        "/api/scans/1",
        &[("x-forwarded-for", "10.0.0.1")],
        "",
    )
    .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        json(&refused)["detail"],
        "Admin routes are open to admin networks only."
    );
    // Reads stay open.
    assert_eq!(
        get(addr, "/api/scans/1", &[]).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn bad_bodies_and_ids_are_problem_json_400_and_413() {
    let addr = serve(&["127.0.0.0/8"], &[]).await;
    let no_type = request(addr, "POST", "/api/scans", &[], r#"{"target":"x"}"#).await;
    assert_eq!(no_type.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        no_type.headers()["content-type"],
        "application/problem+json"
    );
    let garbage = request(
        addr,
        "POST",
        "/api/scans",
        &[("content-type", "application/json")],
        "{oops",
    )
    .await;
    assert_eq!(garbage.status(), StatusCode::BAD_REQUEST);
    let empty_target = request(
        addr,
        "POST",
        "/api/scans",
        &[("content-type", "application/json")],
        r#"{"target":"  "}"#,
    )
    .await;
    assert_eq!(empty_target.status(), StatusCode::BAD_REQUEST);
    let bad_id = get(addr, "/api/scans/abc", &[]).await;
    assert_eq!(bad_id.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json(&bad_id)["detail"], "The id is a number.");
    let huge: &'static str =
        Box::leak(format!(r#"{{"target":"{}"}}"#, "a".repeat(70_000)).into_boxed_str());
    let too_large = request(
        addr,
        "POST",
        "/api/scans",
        &[("content-type", "application/json")],
        huge,
    )
    .await;
    assert_eq!(too_large.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        too_large.headers()["content-type"],
        "application/problem+json"
    );
}

#[tokio::test]
async fn cors_allows_only_configured_origins() {
    let addr = serve(&["127.0.0.0/8"], &[]).await;
    async fn preflight(addr: SocketAddr, origin: &str) -> http::Response<Bytes> {
        let headers = [
            ("origin", origin),
            ("access-control-request-method", "POST"),
        ];
        request(addr, "OPTIONS", "/api/scans", &headers, "").await
    }
    let allowed = preflight(addr, "http://localhost:3000").await;
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
    let other = preflight(addr, "https://evil.example").await;
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn an_unreadable_forwarding_header_never_opens_admin_routes() {
    // The proxy (loopback) is trusted and is inside the admin networks; a
    // client whose forwarded address cannot be read must not become it.
    let addr = serve(&["127.0.0.0/8"], &["127.0.0.1"]).await;
    let created = request(
        addr,
        "POST",
        "/api/scans",
        &[("content-type", "application/json")],
        r#"{"target":"c.example"}"#,
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let refused = request(
        addr,
        "DELETE",
        "/api/scans/1",
        &[("x-forwarded-for", "_hidden")],
        "",
    )
    .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let outside = request(
        addr,
        "DELETE",
        "/api/scans/1",
        &[("x-forwarded-for", "203.0.113.7")],
        "",
    )
    .await;
    assert_eq!(outside.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn responses_carry_rate_limit_fields_and_health_is_exempt() {
    let addr = serve(&["127.0.0.0/8"], &[]).await;
    let listed = get(addr, "/api/scans", &[]).await;
    assert_eq!(
        listed.headers()["ratelimit-policy"],
        "\"per_ip\";q=1000;w=60"
    );
    assert!(
        listed.headers()["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("\"per_ip\";r=")
    );
    let health = get(addr, "/health", &[]).await;
    assert!(health.headers().get("ratelimit").is_none());
}

#[tokio::test]
async fn five_failed_logins_lock_the_address_out() {
    let addr = serve(&["127.0.0.0/8"], &[]).await;
    let body = r#"{"password":"open sesame"}"#;
    let json_type = [("content-type", "application/json")];
    assert_eq!(
        request(addr, "POST", "/auth/login", &json_type, body)
            .await
            .status(),
        StatusCode::OK
    );
    for _ in 0..5 {
        let wrong = request(
            addr,
            "POST",
            "/auth/login",
            &json_type,
            r#"{"password":"guess"}"#,
        )
        .await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(wrong.headers()["content-type"], "application/problem+json");
    }
    let locked = request(addr, "POST", "/auth/login", &json_type, body).await;
    assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        locked.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(
        json(&locked)["violated_policies"],
        serde_json::json!(["failed_logins"])
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_recorded() {
    let addr = serve(&["127.0.0.0/8"], &["127.0.0.1"]).await;
    let created = request(
        addr,
        "POST",
        "/api/scans",
        &[
            ("content-type", "application/json"),
            ("x-forwarded-for", "6.6.6.6, 203.0.113.5"),
        ],
        r#"{"target":"b.example"}"#,
    )
    .await;
    assert_eq!(json(&created)["requested_by"], "203.0.113.5");
}
