//! The headers layer in a tonic server: gRPC answers and Trailers-Only
//! rejections of an inner Palisade layer both carry the headers.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;

use palisade_core::Rejection;
use palisade_core::guard::{GuardLayer, RequestHead};
use palisade_headers::SecurityHeaders;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

async fn serve() -> SocketAddr {
    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let blocked = GuardLayer::new("blocked", |head: &RequestHead<'_>| {
        if head.headers().contains_key("x-blocked") {
            Err(Rejection::forbidden().with_detail("Blocked."))
        } else {
            Ok(())
        }
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(SecurityHeaders::api().build().unwrap())
            .layer(blocked)
            .add_service(health)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    addr
}

#[tokio::test]
async fn grpc_answers_and_rejections_carry_the_headers() {
    let addr = serve().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);

    let response = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(
        response.metadata().get("x-content-type-options").unwrap(),
        "nosniff"
    );
    assert_eq!(
        response.metadata().get("content-security-policy").unwrap(),
        "default-src 'none'; frame-ancestors 'none'"
    );

    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    request
        .metadata_mut()
        .insert("x-blocked", "1".parse().unwrap());
    let status = client.check(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert_eq!(status.message(), "Blocked.");
    assert_eq!(
        status.metadata().get("x-content-type-options").unwrap(),
        "nosniff"
    );
    assert_eq!(status.metadata().get("x-frame-options").unwrap(), "DENY");
}
