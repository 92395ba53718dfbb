//! Helpers shared by the service tests: an inner service that answers at
//! once, requests from an address, and problem bodies.

// Each test binary uses its own subset.
#![allow(dead_code, unreachable_pub, clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use palisade_core::client_ip::PeerAddr;
use tower::Service;

pub type Body = Full<Bytes>;

/// Answers at once with `hello`; `/empty` with an empty body; `/fail`
/// fails with an error.
#[derive(Clone)]
pub struct Echo;

impl Service<Request<()>> for Echo {
    type Response = Response<Body>;
    type Error = &'static str;
    type Future = std::future::Ready<Result<Response<Body>, &'static str>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<()>) -> Self::Future {
        std::future::ready(match request.uri().path() {
            "/fail" => Err("inner failure"),
            "/empty" => Ok(Response::new(Full::new(Bytes::new()))),
            _ => Ok(Response::new(Full::new(Bytes::from_static(b"hello")))),
        })
    }
}

pub fn from(ip: [u8; 4], path: &str) -> Request<()> {
    let mut request = Request::get(path).body(()).unwrap();
    request
        .extensions_mut()
        .insert(PeerAddr(SocketAddr::from((ip, 4000))));
    request
}

pub async fn problem<B>(response: Response<B>) -> (http::response::Parts, serde_json::Value)
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts, serde_json::from_slice(&bytes).unwrap())
}
