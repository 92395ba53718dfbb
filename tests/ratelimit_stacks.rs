//! The rate-limit layer in tonic and `ServiceBuilder` stacks: a real tonic
//! client reads RESOURCE_EXHAUSTED, with the rate-limit fields as metadata.
#![cfg(feature = "ratelimit")]
// A failed expectation in a test is a failing test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use palisade::core::client_ip::ClientIpLayer;
use palisade::core::key::KeyFn;
use palisade::ratelimit::{Quota, RateLimitLayer, RateLimitPolicy};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test]
async fn tonic_clients_over_the_limit_get_resource_exhausted() {
    let limits = RateLimitLayer::builder()
        .policy(
            RateLimitPolicy::builder("per_ip", KeyFn::ClientIp, Quota::per_hour(2))
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(ClientIpLayer::default())
            .layer(limits)
            .add_service(health)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let mut client = HealthClient::new(common::grpc_channel(addr).await);
    for remaining in ["1", "0"] {
        let response = client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("allowed");
        let state = response
            .metadata()
            .get("ratelimit")
            .expect("fields on allowed calls");
        assert_eq!(
            state.to_str().unwrap(),
            format!(
                "\"per_ip\";r={remaining};t={}",
                if remaining == "1" { 1800 } else { 3600 }
            )
        );
    }
    let status = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect_err("over the limit");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    let retry_after: u64 = status
        .metadata()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry_after, 1800);
    assert!(status.metadata().get("ratelimit-policy").is_some());
}
