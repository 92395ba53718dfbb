#![allow(clippy::expect_used, clippy::unwrap_used)]
//! Captured `TraceLayer` logs of a request with `?token=…` and
//! `Authorization` contain neither secret. Alone in its binary: a
//! subscriber set with `set_default` must be the only one, or tracing's
//! callsite cache can hide events from it.

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use palisade_redact::{RedactingMakeSpan, SensitiveHeadersLayer};
use tower_http::trace::{DefaultOnRequest, DefaultOnResponse, TraceLayer};
use tracing::Level;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn handler(headers: HeaderMap) -> &'static str {
    // A handler that logs its headers, as handlers do.
    tracing::info!(?headers, "handling");
    "ok"
}

#[tokio::test(flavor = "current_thread")]
async fn trace_layer_logs_carry_neither_the_query_token_nor_the_authorization() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = Router::new().route("/callback", get(handler)).layer(
        tower::ServiceBuilder::new()
            .layer(SensitiveHeadersLayer::new())
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(
                        RedactingMakeSpan::new()
                            .level(Level::INFO)
                            .include_headers(true),
                    )
                    .on_request(DefaultOnRequest::new().level(Level::INFO))
                    .on_response(DefaultOnResponse::new().level(Level::INFO)),
            ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let response = client
        .request(
            Request::get(format!(
                "http://{addr}/callback?state=visible-state&token=query-secret-123&code=oauth-code-456"
            ))
            .header(AUTHORIZATION, "Bearer header-secret-789")
            .header("x-api-key", "api-key-secret-000")
            .body(Empty::new())
            .unwrap(),
        )
        .await
        .unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "ok");
    // The response event is logged when the body ends; give the server a
    // moment to get there.
    for _ in 0..50 {
        if String::from_utf8_lossy(&captured.0.lock().unwrap()).contains("finished processing") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    println!("{logs}");
    assert!(logs.contains("started processing request"), "{logs}");
    assert!(logs.contains("finished processing request"), "{logs}");
    assert!(logs.contains("handling"), "{logs}");
    assert!(
        logs.contains("/callback?state=visible-state&token=***REDACTED***&code=***REDACTED***"),
        "{logs}"
    );
    for secret in [
        "query-secret-123",
        "oauth-code-456",
        "header-secret-789",
        "api-key-secret-000",
    ] {
        assert!(!logs.contains(secret), "{secret} leaked: {logs}");
    }
}
