//! The JWT layer in tonic and `ServiceBuilder` stacks: a real tonic client
//! reads UNAUTHENTICATED for bad tokens and UNAVAILABLE while keys cannot
//! load; an axum router carries the principal to handlers.
#![cfg(feature = "auth")]
// A failed expectation in a test is a failing test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use palisade::auth::crypto::CryptoBackend;
use palisade::auth::issue::{SigningKey, TokenIssuer};
use palisade::auth::key::Algorithm;
use palisade::auth::remote::RemoteOptions;
use palisade::auth::{Issuer, JwtAuthLayer};
use tonic::metadata::MetadataValue;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

fn issuer() -> TokenIssuer {
    CryptoBackend::install_preferred().unwrap();
    TokenIssuer::builder("https://id.test")
        .audience("grpc")
        .signing_key(SigningKey::generate(Algorithm::ES256).unwrap())
        .build()
        .unwrap()
}

async fn serve_grpc(auth: JwtAuthLayer) -> SocketAddr {
    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(auth)
            .add_service(health)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    addr
}

fn check(token: Option<&str>) -> tonic::Request<HealthCheckRequest> {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    if let Some(token) = token {
        let value: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
        request.metadata_mut().insert("authorization", value);
    }
    request
}

#[tokio::test]
async fn tonic_clients_get_unauthenticated_for_missing_and_bad_tokens() {
    let issuer = issuer();
    let auth = JwtAuthLayer::builder()
        .issuer(issuer.verifying_issuer())
        .build()
        .unwrap();
    let addr = serve_grpc(auth).await;
    let mut client = HealthClient::new(common::grpc_channel(addr).await);

    let token = issuer.mint("svc-1").sign().unwrap().token;
    client
        .check(check(Some(&token)))
        .await
        .expect("a valid token passes");

    let status = client.check(check(None)).await.expect_err("no token");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let mut forged = token.clone();
    forged.replace_range(forged.len() - 4.., "AAAA");
    for bad in [forged.as_str(), "a.b.c", "x"] {
        let status = client.check(check(Some(bad))).await.expect_err("bad token");
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{bad}");
        assert_eq!(status.message(), "The access token is invalid.");
    }
}

#[tokio::test]
async fn tonic_clients_get_unavailable_while_keys_cannot_load() {
    let issuer = issuer();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks", dead.local_addr().unwrap());
    drop(dead);
    let auth = JwtAuthLayer::builder()
        .issuer(Issuer::new("https://id.test").audience("grpc").jwks_url(
            url,
            RemoteOptions::default().allow_insecure_http_for_tests(),
        ))
        .build()
        .unwrap();
    let addr = serve_grpc(auth).await;
    let mut client = HealthClient::new(common::grpc_channel(addr).await);
    let token = issuer.mint("svc-1").sign().unwrap().token;
    let status = client
        .check(check(Some(&token)))
        .await
        .expect_err("keys down");
    assert_eq!(status.code(), tonic::Code::Unavailable);
}

#[tokio::test]
async fn one_layer_guards_several_axum_routes_with_one_cache() {
    use axum::routing::get;
    let issuer = issuer();
    let auth = JwtAuthLayer::builder()
        .issuer(issuer.verifying_issuer())
        .build()
        .unwrap();
    let verifier = auth.verifier().clone();
    let app = axum::Router::new()
        .route("/a", get(|| async { "a" }))
        .route("/b", get(|| async { "b" }))
        .route_layer(auth)
        .route("/open", get(|| async { "open" }));
    let addr = common::spawn_axum(app).await;
    let token = issuer
        .mint("u")
        .ttl(Duration::from_secs(60))
        .sign()
        .unwrap()
        .token;
    let header = format!("Bearer {token}");
    for path in ["/a", "/b", "/a"] {
        let response = common::get(addr, path, &[("authorization", &header)]).await;
        assert_eq!(response.status(), 200, "{path}");
    }
    assert_eq!(verifier.stats().signature_checks, 1);
    assert_eq!(verifier.stats().cache_hits, 2);
    assert_eq!(common::get(addr, "/open", &[]).await.status(), 200);
    assert_eq!(common::get(addr, "/a", &[]).await.status(), 401);
}

/// Every token of the threat list, through a real tonic client: each is
/// refused with UNAUTHENTICATED (or, past the server's metadata size limit,
/// before it reaches any layer).
#[tokio::test]
async fn tonic_refuses_every_forged_or_broken_token() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use palisade::auth::revocation::{MemoryRevocationStore, RevocationStore};
    use serde_json::json;

    const PRIVATE: &[u8] = include_bytes!("../crates/palisade-auth/tests/keys/rsa_private.pem");
    const PUBLIC: &[u8] = include_bytes!("../crates/palisade-auth/tests/keys/rsa_public.pem");
    const OTHER: &[u8] = include_bytes!("../crates/palisade-auth/tests/keys/rsa_other_private.pem");
    CryptoBackend::install_preferred().unwrap();
    let issuer = TokenIssuer::builder("https://id.test")
        .audience("grpc")
        .signing_key(
            SigningKey::from_pem(Algorithm::RS256, PRIVATE)
                .unwrap()
                .with_kid("rsa-1"),
        )
        .build()
        .unwrap();
    let revocation = MemoryRevocationStore::new();
    let auth = JwtAuthLayer::builder()
        .issuer(issuer.verifying_issuer())
        .revocation(revocation.clone())
        .build()
        .unwrap();
    let addr = serve_grpc(auth).await;
    let mut client = HealthClient::new(common::grpc_channel(addr).await);

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = || json!({"iss": "https://id.test", "aud": "grpc", "sub": "u", "exp": now + 300, "iat": now});
    let header = |alg: &str, kid: &str| json!({"alg": alg, "kid": kid, "typ": "at+jwt"});
    let part = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let sign = |header: serde_json::Value,
                claims: serde_json::Value,
                key: &jsonwebtoken::EncodingKey,
                alg| {
        let message = format!("{}.{}", part(&header), part(&claims));
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).unwrap();
        format!("{message}.{signature}")
    };
    let rsa = jsonwebtoken::EncodingKey::from_rsa_pem(PRIVATE).unwrap();
    let rs256 = jsonwebtoken::Algorithm::RS256;
    let valid = sign(header("RS256", "rsa-1"), claims(), &rsa, rs256);
    client
        .check(check(Some(&valid)))
        .await
        .expect("the reference token passes");

    let with = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims();
        edit(&mut c);
        sign(header("RS256", "rsa-1"), c, &rsa, rs256)
    };
    let parts: Vec<&str> = valid.split('.').collect();
    let mut cases = vec![
        (
            "alg none",
            format!("{}.{}.", part(&header("none", "rsa-1")), part(&claims())),
        ),
        (
            "HS256 with the public key as secret",
            sign(
                header("HS256", "rsa-1"),
                claims(),
                &jsonwebtoken::EncodingKey::from_secret(PUBLIC),
                jsonwebtoken::Algorithm::HS256,
            ),
        ),
        (
            "tampered payload",
            format!(
                "{}.{}.{}",
                parts[0],
                part(
                    &json!({"iss": "https://id.test", "aud": "grpc", "sub": "admin", "exp": now + 300})
                ),
                parts[2]
            ),
        ),
        ("stripped signature", format!("{}.{}.", parts[0], parts[1])),
        (
            "another key",
            sign(
                header("RS256", "rsa-1"),
                claims(),
                &jsonwebtoken::EncodingKey::from_rsa_pem(OTHER).unwrap(),
                rs256,
            ),
        ),
        ("expired", with(&|c| c["exp"] = json!(now - 120))),
        ("nbf in the future", with(&|c| c["nbf"] = json!(now + 3600))),
        (
            "wrong iss",
            with(&|c| c["iss"] = json!("https://evil.test")),
        ),
        ("wrong aud", with(&|c| c["aud"] = json!("web"))),
        (
            "missing exp",
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
        ),
        (
            "unknown kid",
            sign(header("RS256", "rsa-9"), claims(), &rsa, rs256),
        ),
        (
            "10 KB kid",
            sign(
                header("RS256", &"k".repeat(10 * 1024)),
                claims(),
                &rsa,
                rs256,
            ),
        ),
    ];
    let revoked = with(&|c| c["jti"] = json!("revoked-1"));
    revocation
        .revoke_token("revoked-1", Duration::from_secs(600))
        .await
        .unwrap();
    cases.push(("revoked jti", revoked));
    let signed_out = sign(
        header("RS256", "rsa-1"),
        json!({"iss": "https://id.test", "aud": "grpc", "sub": "gone", "exp": now + 300, "iat": now - 10}),
        &rsa,
        rs256,
    );
    revocation
        .revoke_subject("gone", now, Duration::from_secs(600))
        .await
        .unwrap();
    cases.push(("subject signed out", signed_out));
    for (name, token) in &cases {
        let status = client.check(check(Some(token))).await.expect_err(name);
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{name}");
        assert_eq!(status.message(), "The access token is invalid.", "{name}");
    }

    // A 100 KB token: refused, whether by the server's header limit or by us.
    let huge = with(&|c| c["pad"] = json!("x".repeat(100 * 1024)));
    let mut client = HealthClient::new(common::grpc_channel(addr).await);
    assert!(client.check(check(Some(&huge))).await.is_err());

    // Two authorization entries.
    let mut client = HealthClient::new(common::grpc_channel(addr).await);
    let mut request = check(Some(&valid));
    request
        .metadata_mut()
        .append("authorization", format!("Bearer {valid}").parse().unwrap());
    let status = client.check(request).await.expect_err("two credentials");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

/// API keys over tonic: a key in `x-api-key` metadata passes, a key with a
/// bad checksum or none at all is UNAUTHENTICATED, and a role check after
/// `Authenticate` answers PERMISSION_DENIED.
#[tokio::test]
async fn tonic_clients_authenticate_with_api_keys_and_roles_are_enforced() {
    use palisade::auth::api_key::{ApiKeys, MemoryApiKeyStore, NewApiKey};
    use palisade::auth::authenticate::Authenticate;
    use palisade::auth::authorize::RequireRole;

    CryptoBackend::install_preferred().unwrap();
    let keys = ApiKeys::builder("pal_test", MemoryApiKeyStore::new())
        .pepper(vec![3u8; 32])
        .build()
        .unwrap();
    let operator = keys
        .issue(NewApiKey::new("svc-op").roles(["operator"]))
        .await
        .unwrap()
        .key;
    let viewer = keys
        .issue(NewApiKey::new("svc-view").roles(["viewer"]))
        .await
        .unwrap()
        .key;
    let authenticate = Authenticate::builder().api_keys(keys).build().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(authenticate)
            .layer(RequireRole::any(["operator", "admin"]).unwrap())
            .add_service(health)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let mut client = HealthClient::new(common::grpc_channel(addr).await);
    let with_key = |key: &str| {
        let mut request = check(None);
        request
            .metadata_mut()
            .insert("x-api-key", key.parse().unwrap());
        request
    };
    client
        .check(with_key(&operator))
        .await
        .expect("an operator key passes");
    let denied = client.check(with_key(&viewer)).await.expect_err("viewer");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let mut typo = operator.clone();
    typo.pop();
    typo.push(if operator.ends_with('A') { 'B' } else { 'A' });
    let refused = client
        .check(with_key(&typo))
        .await
        .expect_err("bad checksum");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let missing = client.check(check(None)).await.expect_err("no key");
    assert_eq!(missing.code(), tonic::Code::Unauthenticated);
}
