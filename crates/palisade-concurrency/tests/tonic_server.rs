//! The concurrency layer in a tonic server: a server-streaming call holds
//! its place while it streams, a second call of the same key gets
//! `RESOURCE_EXHAUSTED` (another key passes), and the place comes back when
//! the client drops the stream.

// A failed expectation in a test is a failing test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use http::HeaderName;
use palisade_concurrency::ConcurrencyLimitLayer;
use palisade_core::key::KeyFn;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

async fn serve(layer: ConcurrencyLimitLayer) -> SocketAddr {
    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(health)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    addr
}

fn check(tenant: &str) -> tonic::Request<HealthCheckRequest> {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    request
        .metadata_mut()
        .insert("x-tenant", tenant.parse().unwrap());
    request
}

#[tokio::test]
async fn a_streaming_call_holds_its_place_and_a_second_call_gets_resource_exhausted() {
    let layer = ConcurrencyLimitLayer::builder()
        .key(KeyFn::header(HeaderName::from_static("x-tenant")).unwrap())
        .max_in_flight(1)
        .build()
        .unwrap();
    let addr = serve(layer.clone()).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);

    let mut watch = client.watch(check("acme")).await.unwrap().into_inner();
    let first: HealthCheckResponse = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, 1, "SERVING");

    let refused = client.check(check("acme")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        refused.message(),
        "Too many concurrent requests from this client; retry shortly."
    );
    let other = client.check(check("globex")).await.unwrap();
    assert_eq!(other.into_inner().status, 1);

    drop(watch);
    let probe = http::Request::get("/")
        .header("x-tenant", "acme")
        .body(())
        .unwrap();
    for _ in 0..500 {
        if layer.in_flight_of(&probe) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        layer.in_flight_of(&probe),
        0,
        "released when the stream is dropped"
    );
    assert_eq!(
        client
            .check(check("acme"))
            .await
            .unwrap()
            .into_inner()
            .status,
        1
    );
}
