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
