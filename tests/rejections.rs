//! Every rejection kind, rendered as HTTP problem+json and as a gRPC status
//! read by a real tonic client, per the table of the design.

// A failed expectation in a test is a failing test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use palisade::core::guard::{GuardLayer, RequestHead};
use palisade::core::{Rejection, RejectionKind};
use tower::{ServiceBuilder, ServiceExt};

/// (header value, rejection, HTTP status, gRPC code, Retry-After)
fn cases() -> Vec<(
    &'static str,
    Rejection,
    u16,
    tonic::Code,
    Option<&'static str>,
)> {
    vec![
        (
            "bad_request",
            Rejection::bad_request(),
            400,
            tonic::Code::InvalidArgument,
            None,
        ),
        (
            "unauthenticated",
            Rejection::unauthenticated(),
            401,
            tonic::Code::Unauthenticated,
            None,
        ),
        (
            "forbidden",
            Rejection::forbidden(),
            403,
            tonic::Code::PermissionDenied,
            None,
        ),
        (
            "not_found",
            Rejection::not_found(),
            404,
            tonic::Code::NotFound,
            None,
        ),
        (
            "rate_limited",
            Rejection::rate_limited(Duration::from_millis(2_100)),
            429,
            tonic::Code::ResourceExhausted,
            Some("3"),
        ),
        (
            "too_many_concurrent",
            Rejection::too_many_concurrent(),
            429,
            tonic::Code::ResourceExhausted,
            None,
        ),
        (
            "overloaded",
            Rejection::overloaded(Duration::from_millis(1)),
            503,
            tonic::Code::Unavailable,
            Some("1"),
        ),
        (
            "circuit_open",
            Rejection::circuit_open(Duration::ZERO),
            503,
            tonic::Code::Unavailable,
            Some("1"),
        ),
        (
            "payload_too_large",
            Rejection::payload_too_large(),
            413,
            tonic::Code::ResourceExhausted,
            None,
        ),
        (
            "headers_too_large",
            Rejection::headers_too_large(),
            431,
            tonic::Code::ResourceExhausted,
            None,
        ),
        (
            "unavailable",
            Rejection::unavailable(Duration::from_secs(30)),
            503,
            tonic::Code::Unavailable,
            Some("30"),
        ),
    ]
}

/// Refuses with the rejection named by the `x-reject` header.
fn reject_as_asked() -> GuardLayer {
    GuardLayer::new("reject_as_asked", |head: &RequestHead<'_>| {
        let Some(asked) = head.headers().get("x-reject") else {
            return Ok(());
        };
        match cases().into_iter().find(|(name, ..)| asked == *name) {
            Some((_, rejection, ..)) => Err(rejection),
            None => Ok(()),
        }
    })
}

#[tokio::test]
async fn every_kind_renders_as_problem_json_with_its_status_and_headers() {
    let service = ServiceBuilder::new()
        .layer(reject_as_asked())
        .service(tower::service_fn(|_request: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        }));
    for (name, rejection, status, _, retry_after) in cases() {
        let request = Request::get("/x")
            .header("x-reject", name)
            .body(Full::new(Bytes::new()))
            .expect("request");
        let response = service.clone().oneshot(request).await.expect("infallible");
        assert_eq!(response.status().as_u16(), status, "{name}");
        let headers = response.headers().clone();
        assert_eq!(
            headers["content-type"], "application/problem+json",
            "{name}"
        );
        assert_eq!(headers["cache-control"], "no-store", "{name}");
        assert_eq!(
            headers
                .get("retry-after")
                .map(|v| v.to_str().unwrap_or_default()),
            retry_after,
            "{name}"
        );
        match rejection.kind() {
            RejectionKind::Unauthenticated => assert_eq!(headers["www-authenticate"], "Bearer"),
            RejectionKind::Forbidden => assert_eq!(
                headers["www-authenticate"],
                r#"Bearer error="insufficient_scope""#
            ),
            _ => assert!(!headers.contains_key("www-authenticate"), "{name}"),
        }
        let body = response
            .into_body()
            .collect()
            .await
            .expect("infallible")
            .to_bytes();
        let problem: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(problem["status"], status, "{name}");
        assert_eq!(problem["title"], rejection.kind().title(), "{name}");
        assert_eq!(
            problem["type"],
            format!("urn:palisade:problem:{}", rejection.kind().problem_type()),
            "{name}"
        );
    }
}

#[tokio::test]
async fn every_kind_reaches_a_real_tonic_client_as_its_grpc_code() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(reject_as_asked())
            .add_service(health)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let mut client = HealthClient::new(common::grpc_channel(addr).await);

    for (name, rejection, _, code, retry_after) in cases() {
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        });
        request
            .metadata_mut()
            .insert("x-reject", name.parse().expect("metadata"));
        let status = client.check(request).await.expect_err(name);
        assert_eq!(status.code(), code, "{name}");
        assert_eq!(status.message(), rejection.kind().title(), "{name}");
        assert_eq!(
            status
                .metadata()
                .get("retry-after")
                .map(|v| v.to_str().unwrap_or_default()),
            retry_after,
            "{name}"
        );
    }
    // The connection is still usable after refusals (Trailers-Only ends each stream cleanly).
    let ok = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("allowed");
    assert_eq!(ok.into_inner().status, 1);
}

#[cfg(all(feature = "axum", feature = "tonic"))]
#[tokio::test]
async fn rejection_is_an_axum_response_and_a_tonic_status() {
    use axum::response::IntoResponse;
    let response = Rejection::rate_limited(Duration::from_secs(5)).into_response();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "5");
    let status = tonic::Status::from(Rejection::unauthenticated().with_detail("Log in."));
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(status.message(), "Log in.");
}
