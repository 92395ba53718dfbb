//! Keys, issuers, a loopback axum server and a small client, shared by the
//! integration tests.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use palisade_auth::crypto::CryptoBackend;
use palisade_auth::issue::{SigningKey, TokenIssuer};
use palisade_auth::key::Algorithm;
use palisade_core::clock::ManualClock;
use tokio::net::{TcpListener, TcpStream};

pub const ISSUER: &str = "https://id.test";
pub const AUDIENCE: &str = "scans-api";
pub const RSA_PRIVATE: &[u8] = include_bytes!("../keys/rsa_private.pem");
pub const RSA_PUBLIC: &[u8] = include_bytes!("../keys/rsa_public.pem");
pub const RSA_OTHER_PRIVATE: &[u8] = include_bytes!("../keys/rsa_other_private.pem");

/// Both backends are on under `--all-features`: choose, as an application
/// must.
pub fn init() {
    CryptoBackend::install_preferred().expect("a signature backend");
}

pub fn rsa_key(kid: &str) -> SigningKey {
    init();
    SigningKey::from_pem(Algorithm::RS256, RSA_PRIVATE)
        .expect("RSA key")
        .with_kid(kid)
}

/// An issuer of RS256 tokens for `ISSUER` / `AUDIENCE`.
pub fn issuer_with(
    key: SigningKey,
    name: &str,
    audience: &str,
    clock: &ManualClock,
) -> TokenIssuer {
    TokenIssuer::builder(name)
        .audience(audience)
        .signing_key(key)
        .ttl(Duration::from_secs(600))
        .clock(clock.clone())
        .build()
        .expect("token issuer")
}

/// A clock at the real current time, moved only by the test.
pub fn clock_now() -> ManualClock {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    ManualClock::starting_at_unix(now)
}

pub async fn spawn_axum(router: axum::Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, router).await.expect("server");
    });
    addr
}

pub async fn send(addr: SocketAddr, request: Request<Empty<Bytes>>) -> Response<Bytes> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let response = sender.send_request(request).await.expect("response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Response::from_parts(parts, body)
}

pub async fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &[u8])]) -> Response<Bytes> {
    let mut builder = Request::get(path).header("host", addr.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, http::HeaderValue::from_bytes(value).expect("header"));
    }
    send(addr, builder.body(Empty::new()).expect("request")).await
}

pub fn bearer(token: &str) -> Vec<u8> {
    format!("Bearer {token}").into_bytes()
}
