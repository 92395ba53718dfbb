//! The layers in front of a plain hyper server, with no axum: the peer
//! address comes from a `PeerAddr` extension the server inserts.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use palisade_core::client_ip::{ClientIpResolver, PeerAddr};
use palisade_headers::{HttpsRedirectLayer, SecurityHeaders};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceBuilder;

async fn spawn_hyper() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let proxies = ClientIpResolver::builder()
        .trust_proxy("127.0.0.1")
        .build()
        .unwrap();
    let headers = SecurityHeaders::owasp_strict()
        .trust_proxies(proxies.clone())
        .build()
        .unwrap();
    let redirect = HttpsRedirectLayer::builder()
        .trust_proxies(proxies)
        .without_hsts()
        .exempt_path("/health")
        .build()
        .unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            let service = ServiceBuilder::new()
                .map_request(move |mut request: Request<Incoming>| {
                    request.extensions_mut().insert(PeerAddr(peer));
                    request
                })
                .layer(headers.clone())
                .layer(redirect.clone())
                .service_fn(|_request: Request<Incoming>| async {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("server", "hyper")
                            .body(Full::new(Bytes::from_static(b"plain hyper")))
                            .unwrap(),
                    )
                });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                    .await;
            });
        }
    });
    addr
}

async fn get(addr: SocketAddr, path: &str, proto: Option<&str>) -> Response<Bytes> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = Request::get(path).header("host", "app.example");
    if let Some(proto) = proto {
        request = request.header("x-forwarded-proto", proto);
    }
    let response = sender
        .send_request(request.body(Full::<Bytes>::default()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn plain_hyper_gets_redirects_and_headers_on_both_sides() {
    let addr = spawn_hyper().await;

    let redirected = get(addr, "/x?y=1", None).await;
    assert_eq!(redirected.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        redirected.headers()["location"],
        "https://app.example/x?y=1"
    );
    assert_eq!(redirected.headers()["x-frame-options"], "deny");
    assert!(
        !redirected
            .headers()
            .contains_key("strict-transport-security")
    );

    let health = get(addr, "/health", None).await;
    assert_eq!(health.status(), StatusCode::OK);
    assert!(!health.headers().contains_key("server"));

    let served = get(addr, "/x", Some("https")).await;
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(served.body(), "plain hyper");
    assert_eq!(
        served.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    assert_eq!(
        served.headers()["cross-origin-embedder-policy"],
        "require-corp"
    );
    assert!(!served.headers().contains_key("server"));
}
