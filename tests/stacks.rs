//! A rejecting layer composes in every stack users run: axum's
//! `Router::layer` and `route_layer`, tonic's `Server::builder().layer`, a
//! plain hyper server over a `tower::service_fn` with `Full<Bytes>` bodies,
//! and `tower::ServiceBuilder`, without forcing a body type on anyone.

// A failed expectation in a test is a failing test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use common::{get as http_get, json, spawn_axum};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use palisade::core::Rejection;
use palisade::core::guard::{GuardLayer, RequestHead};
use tower::ServiceBuilder;

/// Refuses requests carrying `x-deny`, the way any Palisade layer refuses.
fn deny_marked() -> GuardLayer {
    GuardLayer::new("deny_marked", |head: &RequestHead<'_>| {
        if head.headers().contains_key("x-deny") {
            Err(Rejection::forbidden().with_detail("Marked requests are refused."))
        } else {
            Ok(())
        }
    })
}

#[tokio::test]
async fn axum_router_layer_passes_and_refuses_with_problem_json() {
    let app = Router::new()
        .route("/a", get(|| async { "a" }))
        .route("/b", get(|| async { "b" }))
        .layer(deny_marked());
    let addr = spawn_axum(app).await;

    let ok = http_get(addr, "/a", &[]).await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.body(), "a");

    let refused = http_get(addr, "/b", &[("x-deny", "1")]).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(
        refused.headers()["www-authenticate"],
        r#"Bearer error="insufficient_scope""#
    );
    assert_eq!(
        json(&refused),
        serde_json::json!({
            "type": "urn:palisade:problem:forbidden",
            "title": "Forbidden",
            "status": 403,
            "detail": "Marked requests are refused.",
        })
    );
}

#[tokio::test]
async fn axum_route_layer_guards_only_its_routes_and_shares_one_state() {
    let guard = deny_marked();
    let app = Router::new()
        .route("/guarded", get(|| async { "g" }))
        .route_layer(guard.clone())
        .route("/open", get(|| async { "o" }))
        .route("/also-guarded", get(|| async { "g2" }).route_layer(guard));
    let addr = spawn_axum(app).await;

    assert_eq!(
        http_get(addr, "/guarded", &[("x-deny", "1")])
            .await
            .status(),
        403
    );
    assert_eq!(
        http_get(addr, "/also-guarded", &[("x-deny", "1")])
            .await
            .status(),
        403
    );
    let open = http_get(addr, "/open", &[("x-deny", "1")]).await;
    assert_eq!(open.status(), StatusCode::OK);
    assert_eq!(open.body(), "o");
    assert_eq!(http_get(addr, "/guarded", &[]).await.body(), "g");
    // route_layer does not run for unmatched paths: the router's own 404.
    assert_eq!(
        http_get(addr, "/missing", &[("x-deny", "1")])
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn plain_hyper_service_fn_over_full_bytes() {
    let service = ServiceBuilder::new()
        .layer(deny_marked())
        .service(tower::service_fn(
            |_request: Request<hyper::body::Incoming>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hyper"))))
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });

    let ok = http_get(addr, "/", &[]).await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.body(), "hyper");
    let refused = http_get(addr, "/", &[("x-deny", "yes")]).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(json(&refused)["status"], 403);
}

#[tokio::test]
async fn tonic_server_layer_refuses_with_a_grpc_status_a_real_client_reads() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(deny_marked())
            .add_service(health)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let mut client = HealthClient::new(common::grpc_channel(addr).await);
    let serving = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("allowed call succeeds");
    assert_eq!(serving.into_inner().status, 1, "SERVING");

    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    request
        .metadata_mut()
        .insert("x-deny", "1".parse().expect("metadata"));
    let status = client.check(request).await.expect_err("refused call fails");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert_eq!(status.message(), "Marked requests are refused.");
}

#[tokio::test]
async fn service_builder_composes_palisade_layers_with_a_replaced_renderer() {
    use palisade::core::client_ip::{ClientIpLayer, PeerAddr};
    use palisade::core::render::{ProblemJson, RendererLayer};
    use tower::ServiceExt;

    let only_loopback = GuardLayer::new("only_loopback", |head: &RequestHead<'_>| {
        match head.client_ip() {
            Some(client) if client.ip().is_loopback() => Ok(()),
            _ => Err(Rejection::forbidden()),
        }
    });
    let service = ServiceBuilder::new()
        .layer(RendererLayer::new(
            ProblemJson::new().type_base("https://errors.example/"),
        ))
        .layer(ClientIpLayer::default())
        .layer(only_loopback)
        .layer(deny_marked())
        .service(tower::service_fn(|_request: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"inner"))))
        }));

    let request = |peer: [u8; 4]| {
        let mut request = Request::new(Full::new(Bytes::new()));
        request
            .extensions_mut()
            .insert(PeerAddr(SocketAddr::from((peer, 4000))));
        request
    };
    let ok = service
        .clone()
        .oneshot(request([127, 0, 0, 1]))
        .await
        .expect("infallible");
    assert_eq!(ok.status(), StatusCode::OK);
    let outside = service
        .oneshot(request([192, 0, 2, 1]))
        .await
        .expect("infallible");
    assert_eq!(outside.status(), StatusCode::FORBIDDEN);
    let body = http_body_util::BodyExt::collect(outside.into_body())
        .await
        .expect("infallible")
        .to_bytes();
    let problem: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(problem["type"], "https://errors.example/forbidden");
}
