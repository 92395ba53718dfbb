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

/// `Authorization` values of development tokens, one per role.
struct Tokens {
    viewer: String,
    operator: String,
    admin: String,
    /// The development API keys, by role.
    keys: Vec<(&'static str, String)>,
}

impl Tokens {
    fn key(&self, role: &str) -> &str {
        &self
            .keys
            .iter()
            .find(|(r, _)| *r == role)
            .expect("a key per role")
            .1
    }
}

async fn serve(admin_networks: &[&str], trusted_proxies: &[&str]) -> (SocketAddr, Tokens) {
    serve_with_ttl(
        admin_networks,
        trusted_proxies,
        std::time::Duration::from_secs(900),
    )
    .await
}

async fn serve_with_ttl(
    admin_networks: &[&str],
    trusted_proxies: &[&str],
    token_ttl: std::time::Duration,
) -> (SocketAddr, Tokens) {
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
        token_ttl,
        oidc_issuer: None,
        oidc_audience: None,
        api_key_pepper: None,
        concurrency_per_ip: 64,
        breaker_open: std::time::Duration::from_millis(400),
    };
    let built = gateway::gateway(&config).await.expect("gateway");
    let bearer = |role: &str| {
        let token = built.issuer.mint(role).roles([role]).sign().expect("token");
        format!("Bearer {}", token.token)
    };
    let tokens = Tokens {
        viewer: bearer("viewer"),
        operator: bearer("operator"),
        admin: bearer("admin"),
        keys: built.dev_keys.clone(),
    };
    (spawn_axum(built.router).await, tokens)
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
    let (addr, _) = serve(&["127.0.0.0/8"], &[]).await;
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
    let (addr, t) = serve(&["127.0.0.0/8"], &[]).await;
    let created = request(
        addr,
        "POST",
        "/api/scans",
        &[
            ("content-type", "application/json"),
            ("authorization", &t.admin),
        ],
        r#"{"target":"example.com"}"#,
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(created.headers()["location"], "/api/scans/1");
    let scan = json(&created);
    assert_eq!(scan["target"], "example.com");
    assert_eq!(scan["requested_by"], "127.0.0.1");

    let read = get(addr, "/api/scans/1", &[("authorization", &t.viewer)]).await;
    assert_eq!(json(&read)["id"], 1);
    assert_eq!(
        json(&get(addr, "/api/scans", &[("authorization", &t.viewer)]).await)
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(
        request(
            addr,
            "DELETE",
            "/api/scans/1",
            &[("authorization", &t.admin)],
            ""
        )
        .await
        .status(),
        StatusCode::NO_CONTENT
    );
    let gone = get(addr, "/api/scans/1", &[("authorization", &t.viewer)]).await;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    assert_eq!(gone.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn delete_outside_admin_networks_is_forbidden_even_with_a_spoofed_address() {
    let (addr, t) = serve(&["10.0.0.0/8"], &[]).await;
    let created = request(
        addr,
        "POST",
        "/api/scans",
        &[
            ("content-type", "application/json"),
            ("authorization", &t.admin),
        ],
        r#"{"target":"a.example"}"#,
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let refused = request(
        addr,
        "DELETE",
        "/api/scans/1",
        &[("x-forwarded-for", "10.0.0.1"), ("authorization", &t.admin)],
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
        get(addr, "/api/scans/1", &[("authorization", &t.viewer)])
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn bad_bodies_and_ids_are_problem_json_400_and_413() {
    let (addr, t) = serve(&["127.0.0.0/8"], &[]).await;
    let no_type = request(
        addr,
        "POST",
        "/api/scans",
        &[("authorization", &t.operator)],
        r#"{"target":"x"}"#,
    )
    .await;
    assert_eq!(no_type.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        no_type.headers()["content-type"],
        "application/problem+json"
    );
    let garbage = request(
        addr,
        "POST",
        "/api/scans",
        &[
            ("content-type", "application/json"),
            ("authorization", &t.admin),
        ],
        "{oops",
    )
    .await;
    assert_eq!(garbage.status(), StatusCode::BAD_REQUEST);
    let empty_target = request(
        addr,
        "POST",
        "/api/scans",
        &[
            ("content-type", "application/json"),
            ("authorization", &t.admin),
        ],
        r#"{"target":"  "}"#,
    )
    .await;
    assert_eq!(empty_target.status(), StatusCode::BAD_REQUEST);
    let bad_id = get(addr, "/api/scans/abc", &[("authorization", &t.viewer)]).await;
    assert_eq!(bad_id.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json(&bad_id)["detail"], "The id is a number.");
    let huge: &'static str =
        Box::leak(format!(r#"{{"target":"{}"}}"#, "a".repeat(70_000)).into_boxed_str());
    let too_large = request(
        addr,
        "POST",
        "/api/scans",
        &[
            ("content-type", "application/json"),
            ("authorization", &t.admin),
        ],
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
    let (addr, _) = serve(&["127.0.0.0/8"], &[]).await;
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
    let (addr, t) = serve(&["127.0.0.0/8"], &["127.0.0.1"]).await;
    let created = request(
        addr,
        "POST",
        "/api/scans",
        &[
            ("content-type", "application/json"),
            ("authorization", &t.admin),
        ],
        r#"{"target":"c.example"}"#,
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let refused = request(
        addr,
        "DELETE",
        "/api/scans/1",
        &[("x-forwarded-for", "_hidden"), ("authorization", &t.admin)],
        "",
    )
    .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let outside = request(
        addr,
        "DELETE",
        "/api/scans/1",
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("authorization", &t.admin),
        ],
        "",
    )
    .await;
    assert_eq!(outside.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn responses_carry_rate_limit_fields_and_health_is_exempt() {
    let (addr, t) = serve(&["127.0.0.0/8"], &[]).await;
    let listed = get(addr, "/api/scans", &[("authorization", &t.viewer)]).await;
    let joined = |name: &str| {
        listed
            .headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect::<Vec<_>>()
            .join(", ")
    };
    // Both stacked layers report: the per-principal tier (viewer) inside,
    // the per-address policy outside.
    assert_eq!(
        joined("ratelimit-policy"),
        "\"per_principal\";q=300;w=60, \"per_ip\";q=1000;w=60"
    );
    let state = joined("ratelimit");
    assert!(state.starts_with("\"per_principal\";r=299;t="), "{state}");
    assert!(state.contains(", \"per_ip\";r="), "{state}");
    // An admin is unlimited: only the per-address policy reports.
    let admin = get(addr, "/api/scans", &[("authorization", &t.admin)]).await;
    assert_eq!(
        admin.headers()["ratelimit-policy"],
        "\"per_ip\";q=1000;w=60"
    );
    let health = get(addr, "/health", &[]).await;
    assert!(health.headers().get("ratelimit").is_none());
}

#[tokio::test]
async fn five_failed_logins_lock_the_address_out() {
    let (addr, _) = serve(&["127.0.0.0/8"], &[]).await;
    let body = r#"{"user":"operator","password":"open sesame"}"#;
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
            r#"{"user":"operator","password":"guess"}"#,
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
    let (addr, t) = serve(&["127.0.0.0/8"], &["127.0.0.1"]).await;
    let created = request(
        addr,
        "POST",
        "/api/scans",
        &[
            ("content-type", "application/json"),
            ("x-forwarded-for", "6.6.6.6, 203.0.113.5"),
            ("authorization", &t.operator),
        ],
        r#"{"target":"b.example"}"#,
    )
    .await;
    assert_eq!(json(&created)["requested_by"], "203.0.113.5");
}

#[tokio::test]
async fn the_api_needs_a_valid_token_and_delete_needs_the_admin_role() {
    let (addr, t) = serve(&["127.0.0.0/8"], &[]).await;
    let anonymous = get(addr, "/api/scans", &[]).await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        anonymous.headers()["www-authenticate"],
        r#"Bearer realm="palisade-gateway""#
    );
    assert_eq!(
        anonymous.headers()["content-type"],
        "application/problem+json"
    );
    // A token signed by someone else's key, with our issuer and audience.
    let forged = {
        let other = gateway::gateway(&gateway::Config {
            port: 0,
            rate_per_minute: 1_000,
            demo_password: "x".to_owned(),
            redis_url: None,
            instances: std::num::NonZeroU32::MIN,
            trusted_proxies: Vec::new(),
            admin_networks: Vec::new().into(),
            cors_origins: Vec::new(),
            token_ttl: std::time::Duration::from_secs(900),
            oidc_issuer: None,
            oidc_audience: None,
            api_key_pepper: None,
            concurrency_per_ip: 64,
            breaker_open: std::time::Duration::from_secs(5),
        })
        .await
        .expect("another gateway");
        format!(
            "Bearer {}",
            other
                .issuer
                .mint("admin")
                .roles(["admin"])
                .sign()
                .unwrap()
                .token
        )
    };
    let refused = get(addr, "/api/scans", &[("authorization", &forged)]).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(
        refused.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );

    let created = request(
        addr,
        "POST",
        "/api/scans",
        &[
            ("content-type", "application/json"),
            ("authorization", &t.operator),
        ],
        r#"{"target":"d.example"}"#,
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    for token in [&t.viewer, &t.operator] {
        let denied = request(
            addr,
            "DELETE",
            "/api/scans/1",
            &[("authorization", token)],
            "",
        )
        .await;
        assert_eq!(denied.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            json(&denied)["detail"],
            "The credential does not allow this request."
        );
        assert_eq!(
            denied.headers()["www-authenticate"],
            r#"Bearer error="insufficient_scope", scope="delete""#
        );
    }
    let deleted = request(
        addr,
        "DELETE",
        "/api/scans/1",
        &[("authorization", &t.admin)],
        "",
    )
    .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
}

async fn login(addr: SocketAddr, user: &str) -> serde_json::Value {
    let body: &'static str =
        Box::leak(format!(r#"{{"user":"{user}","password":"open sesame"}}"#).into_boxed_str());
    let response = request(
        addr,
        "POST",
        "/auth/login",
        &[("content-type", "application/json")],
        body,
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    json(&response)
}

async fn refresh(addr: SocketAddr, refresh_token: &str) -> http::Response<Bytes> {
    let body: &'static str =
        Box::leak(format!(r#"{{"refresh_token":"{refresh_token}"}}"#).into_boxed_str());
    request(
        addr,
        "POST",
        "/auth/refresh",
        &[("content-type", "application/json")],
        body,
    )
    .await
}

#[tokio::test]
async fn login_refresh_rotation_and_reuse_detection() {
    let (addr, _) = serve(&["127.0.0.0/8"], &[]).await;
    let first = login(addr, "viewer").await;
    assert_eq!(first["token_type"], "Bearer");
    assert_eq!(first["expires_in"], 900);
    let access = format!("Bearer {}", first["access_token"].as_str().unwrap());
    assert_eq!(
        get(addr, "/api/scans", &[("authorization", &access)])
            .await
            .status(),
        StatusCode::OK
    );

    let old = first["refresh_token"].as_str().unwrap().to_owned();
    let second = refresh(addr, &old).await;
    assert_eq!(second.status(), StatusCode::OK);
    let second = json(&second);
    let newer = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(newer, old);
    let access = format!("Bearer {}", second["access_token"].as_str().unwrap());
    assert_eq!(
        get(addr, "/api/scans", &[("authorization", &access)])
            .await
            .status(),
        StatusCode::OK
    );

    // The old one again: refused, and the family is gone for its holder too.
    assert_eq!(refresh(addr, &old).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        refresh(addr, &newer).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn logout_revokes_the_token_and_everywhere_signs_the_subject_out() {
    let (addr, _) = serve(&["127.0.0.0/8"], &[]).await;
    let one = format!(
        "Bearer {}",
        login(addr, "operator").await["access_token"]
            .as_str()
            .unwrap()
    );
    let two = format!(
        "Bearer {}",
        login(addr, "operator").await["access_token"]
            .as_str()
            .unwrap()
    );
    let out = request(addr, "POST", "/auth/logout", &[("authorization", &one)], "").await;
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        get(addr, "/api/scans", &[("authorization", &one)])
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(addr, "/api/scans", &[("authorization", &two)])
            .await
            .status(),
        StatusCode::OK
    );
    let everywhere = request(
        addr,
        "POST",
        "/auth/logout",
        &[
            ("authorization", &two),
            ("content-type", "application/json"),
        ],
        r#"{"everywhere":true}"#,
    )
    .await;
    assert_eq!(everywhere.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        get(addr, "/api/scans", &[("authorization", &two)])
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_jwks_publishes_the_public_key_only() {
    let (addr, _) = serve(&["127.0.0.0/8"], &[]).await;
    let jwks = get(addr, "/.well-known/jwks.json", &[]).await;
    assert_eq!(jwks.status(), StatusCode::OK);
    assert_eq!(jwks.headers()["cache-control"], "public, max-age=300");
    let keys = json(&jwks);
    let key = &keys["keys"][0];
    assert_eq!(key["kid"], "gateway-dev-1");
    assert_eq!(key["kty"], "EC");
    assert!(key.get("d").is_none(), "no private part: {key}");
}

async fn ticket(addr: SocketAddr, authorization: &str) -> String {
    let response = request(
        addr,
        "POST",
        "/auth/ws-ticket",
        &[("authorization", authorization)],
        "",
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    json(&response)["ticket"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn websocket_tickets_are_single_use_and_the_socket_closes_when_the_token_expires() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let (addr, t) = serve_with_ttl(&["127.0.0.0/8"], &[], std::time::Duration::from_secs(2)).await;
    assert_eq!(
        request(addr, "POST", "/auth/ws-ticket", &[], "")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let ticket = ticket(addr, &t.viewer).await;
    let url = format!("ws://{addr}/ws?ticket={ticket}");
    let (mut socket, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("upgrade");
    socket.send(Message::text("ping")).await.unwrap();
    let echoed = socket.next().await.unwrap().unwrap();
    assert_eq!(echoed, Message::text("ping"));

    // Used once: a second upgrade with it is a plain 401.
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED)
        }
        other => panic!("a used ticket upgraded: {:?}", other.map(|_| ())),
    }
    let garbage = format!("ws://{addr}/ws?ticket=AAAAAAAAAAAAAAAAAAAAAA");
    assert!(tokio_tungstenite::connect_async(&garbage).await.is_err());

    // The token behind the ticket lives 2 s: the socket is closed with 1008.
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("no close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("closed before the deadline");
    let frame = closed.expect("a close frame");
    assert_eq!(u16::from(frame.code), 1008);
    assert_eq!(frame.reason.as_str(), "token expired");
}

#[tokio::test]
async fn each_role_key_reaches_exactly_the_routes_its_role_allows() {
    let (addr, t) = serve(&["127.0.0.0/8"], &[]).await;
    let create = |key: &str| {
        let key = key.to_owned();
        async move {
            let key: &'static str = Box::leak(key.into_boxed_str());
            request(
                addr,
                "POST",
                "/api/scans",
                &[("content-type", "application/json"), ("x-api-key", key)],
                r#"{"target":"e.example"}"#,
            )
            .await
            .status()
        }
    };
    let delete = |key: &str, id: u64| {
        let key = key.to_owned();
        async move {
            let path: &'static str = Box::leak(format!("/api/scans/{id}").into_boxed_str());
            request(addr, "DELETE", path, &[("x-api-key", &key)], "")
                .await
                .status()
        }
    };
    // viewer: read only.
    assert_eq!(
        get(addr, "/api/scans", &[("x-api-key", t.key("viewer"))])
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(create(t.key("viewer")).await, StatusCode::FORBIDDEN);
    // operator: read and create, not delete.
    assert_eq!(create(t.key("operator")).await, StatusCode::CREATED);
    assert_eq!(
        get(addr, "/api/scans/1", &[("x-api-key", t.key("operator"))])
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(delete(t.key("operator"), 1).await, StatusCode::FORBIDDEN);
    assert_eq!(delete(t.key("viewer"), 1).await, StatusCode::FORBIDDEN);
    // admin: everything.
    assert_eq!(create(t.key("admin")).await, StatusCode::CREATED);
    assert_eq!(delete(t.key("admin"), 1).await, StatusCode::NO_CONTENT);

    // A key and a token at once: refused, never resolved by picking one.
    let both = get(
        addr,
        "/api/scans",
        &[("x-api-key", t.key("viewer")), ("authorization", &t.admin)],
    )
    .await;
    assert_eq!(both.status(), StatusCode::BAD_REQUEST);
    // A garbage key.
    let garbage = get(addr, "/api/scans", &[("x-api-key", "pal_dev_nope")]).await;
    assert_eq!(garbage.status(), StatusCode::UNAUTHORIZED);
    let missing = get(addr, "/api/scans", &[]).await;
    let challenges: Vec<_> = missing
        .headers()
        .get_all("www-authenticate")
        .iter()
        .collect();
    assert_eq!(challenges.len(), 2, "Bearer and ApiKey");
}

#[tokio::test]
async fn secrets_leave_redacted_and_every_response_carries_the_security_headers() {
    let (addr, _) = serve(&["127.0.0.0/8"], &[]).await;
    let profile = get(addr, "/demo/profile", &[]).await;
    assert_eq!(profile.status(), StatusCode::OK);
    let body = String::from_utf8(profile.body().to_vec()).unwrap();
    assert!(
        !body.contains("hunter2") && !body.contains("pal_dev_not_a_real_key"),
        "{body}"
    );
    let document: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(document["password"], "***REDACTED***");
    assert_eq!(document["settings"]["api_key"], "***REDACTED***");
    assert_eq!(document["settings"]["Access-Token"], "***REDACTED***");
    assert_eq!(document["settings"]["theme"], "dark");

    // A refusal from an inner layer gets the headers too.
    let refused = get(addr, "/api/scans", &[]).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    for response in [&profile, &refused] {
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        assert_eq!(response.headers()["x-frame-options"], "SAMEORIGIN");
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .unwrap();
        assert!(csp.contains("script-src 'self' 'nonce-"), "{csp}");
        // Plain HTTP: no HSTS.
        assert!(
            response
                .headers()
                .get("strict-transport-security")
                .is_none()
        );
    }
}

#[tokio::test]
async fn the_inventory_breaker_opens_on_upstream_failures_and_recovers_after_a_probe() {
    let (addr, tokens) = serve(&["127.0.0.0/8"], &[]).await;
    let viewer = [("authorization", tokens.viewer.as_str())];
    let admin = [
        ("authorization", tokens.admin.as_str()),
        ("content-type", "application/json"),
    ];
    let inventory = || request(addr, "GET", "/api/inventory", &viewer, "");
    assert_eq!(inventory().await.status(), 200);

    // Only an admin flips the upstream's failure switch.
    let denied = request(
        addr,
        "PUT",
        "/api/admin/inventory",
        &[
            ("authorization", tokens.viewer.as_str()),
            ("content-type", "application/json"),
        ],
        r#"{"failing":true}"#,
    )
    .await;
    assert_eq!(denied.status(), 403);
    let switched = request(
        addr,
        "PUT",
        "/api/admin/inventory",
        &admin,
        r#"{"failing":true}"#,
    )
    .await;
    assert_eq!(switched.status(), 200);

    // The upstream's own 503s, until the breaker has seen enough of them.
    let mut upstream_failures = 0;
    let refused = loop {
        let response = inventory().await;
        assert_eq!(response.status(), 503);
        if response.headers().contains_key("retry-after") {
            break response;
        }
        upstream_failures += 1;
        assert!(upstream_failures <= 5, "the breaker never opened");
    };
    // One success and four failures: five calls (the minimum), 80 % failed.
    assert_eq!(upstream_failures, 4);
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let problem: serde_json::Value = serde_json::from_slice(refused.body()).expect("json");
    assert!(
        problem["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("circuit-open"))
    );
    // Refusals carry the security headers like any response.
    assert!(refused.headers().contains_key("content-security-policy"));
    let state = request(addr, "GET", "/api/admin/inventory", &admin, "").await;
    let state: serde_json::Value = serde_json::from_slice(state.body()).expect("json");
    assert_eq!(state["breaker"], "open");

    // The upstream recovers; after the open duration, probes close the breaker.
    request(
        addr,
        "PUT",
        "/api/admin/inventory",
        &admin,
        r#"{"failing":false}"#,
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(450)).await;
    for _ in 0..2 {
        assert_eq!(inventory().await.status(), 200);
    }
    let state = request(addr, "GET", "/api/admin/inventory", &admin, "").await;
    let state: serde_json::Value = serde_json::from_slice(state.body()).expect("json");
    assert_eq!(state["breaker"], "closed");
}

#[tokio::test]
async fn requests_over_the_per_address_concurrency_limit_are_refused_with_429() {
    let config = gateway::Config {
        port: 0,
        rate_per_minute: 1_000,
        demo_password: "x".to_owned(),
        redis_url: None,
        instances: std::num::NonZeroU32::MIN,
        trusted_proxies: Vec::new(),
        admin_networks: Vec::new().into(),
        cors_origins: Vec::new(),
        token_ttl: std::time::Duration::from_secs(900),
        oidc_issuer: None,
        oidc_audience: None,
        api_key_pepper: None,
        concurrency_per_ip: 1,
        breaker_open: std::time::Duration::from_secs(5),
    };
    let built = gateway::gateway(&config).await.expect("gateway");
    let addr = common::spawn_axum(built.router).await;

    // A request whose body never finishes holds the address's only place.
    use tokio::io::AsyncWriteExt;
    let mut held = tokio::net::TcpStream::connect(addr).await.expect("connect");
    held.write_all(
        b"POST /auth/login HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{",
    )
    .await
    .expect("write");
    let mut refused = None;
    for _ in 0..100 {
        let response = request(addr, "GET", "/nope", &[], "").await;
        if response.status() == 429 {
            refused = Some(response);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let refused = refused.expect("the second request is refused while the first is in flight");
    assert!(refused.headers().contains_key("retry-after"));
    let problem: serde_json::Value = serde_json::from_slice(refused.body()).expect("json");
    assert!(
        problem["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("too-many-concurrent-requests"))
    );
    // Health checks are exempt.
    assert_eq!(request(addr, "GET", "/health", &[], "").await.status(), 200);
    // The held request ends: its place comes back.
    drop(held);
    let mut status = 429;
    for _ in 0..100 {
        status = request(addr, "GET", "/nope", &[], "")
            .await
            .status()
            .as_u16();
        if status == 404 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(status, 404);
}
