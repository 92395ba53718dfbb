//! The client address over real connections: forwarding headers are believed
//! only from trusted proxies, and walked from the right.

// A failed expectation in a test is a failing test.
#![allow(clippy::expect_used, clippy::unwrap_used)]
#![cfg(feature = "axum")]

mod common;

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use common::{get as http_get, spawn_axum};
use http::Extensions;
use palisade::core::client_ip::{ClientIp, ClientIpLayer, ClientIpResolver, ForwardedHeader};

async fn echo_client_ip(extensions: Extensions) -> String {
    extensions
        .get::<ClientIp>()
        .map_or_else(|| "none".to_owned(), |client| client.ip().to_string())
}

async fn serve(resolver: ClientIpResolver) -> SocketAddr {
    let app = Router::new()
        .route("/ip", get(echo_client_ip))
        .layer(ClientIpLayer::new(resolver));
    spawn_axum(app).await
}

#[tokio::test]
async fn without_a_trusted_proxy_spoofed_headers_are_ignored() {
    let addr = serve(ClientIpResolver::default()).await;
    for (name, value) in [
        ("x-forwarded-for", "1.2.3.4"),
        ("forwarded", "for=1.2.3.4"),
        ("x-real-ip", "1.2.3.4"),
    ] {
        let response = http_get(addr, "/ip", &[(name, value)]).await;
        assert_eq!(response.body(), "127.0.0.1", "{name}");
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_first_untrusted_hop_from_the_right_is_the_client() {
    let resolver = ClientIpResolver::builder()
        .trust_proxies(["10.0.0.0/8", "127.0.0.1"])
        .build()
        .expect("valid");
    let addr = serve(resolver).await;
    let response = http_get(
        addr,
        "/ip",
        &[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.5")],
    )
    .await;
    assert_eq!(response.body(), "1.2.3.4");
    // A forged leftmost entry never wins, and garbage falls back to the peer.
    let garbage = http_get(addr, "/ip", &[("x-forwarded-for", "1.2.3.4, _hidden")]).await;
    assert_eq!(garbage.body(), "127.0.0.1");
}

#[tokio::test]
async fn rfc_7239_forwarded_behind_a_trusted_proxy() {
    let resolver = ClientIpResolver::builder()
        .trust_proxy("127.0.0.0/8")
        .header(ForwardedHeader::Forwarded)
        .build()
        .expect("valid");
    let addr = serve(resolver).await;
    let response = http_get(
        addr,
        "/ip",
        &[(
            "forwarded",
            r#"for=6.6.6.6, for="[2001:db8::1]:1234";proto=https"#,
        )],
    )
    .await;
    assert_eq!(response.body(), "2001:db8::1");
}

#[cfg(feature = "tonic")]
#[tokio::test]
async fn tonic_peer_address_is_read_from_its_connect_info() {
    use palisade::core::Rejection;
    use palisade::core::guard::{GuardLayer, RequestHead};
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    // Refuse unless the address was found (tonic's TcpConnectInfo) and is loopback.
    let loopback_only = GuardLayer::new("loopback_only", |head: &RequestHead<'_>| {
        match head.client_ip() {
            Some(client) if client.ip().is_loopback() => Ok(()),
            _ => Err(Rejection::forbidden()),
        }
    });
    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(ClientIpLayer::default())
            .layer(loopback_only)
            .add_service(health)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let mut client = HealthClient::new(common::grpc_channel(addr).await);
    let response = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("loopback peer is found and allowed");
    assert_eq!(response.into_inner().status, 1);
}
