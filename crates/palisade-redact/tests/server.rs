#![allow(clippy::expect_used, clippy::unwrap_used)]
//! The layers over a real axum server and HTTP client.

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use chunked::stream_body;
use http::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, SET_COOKIE};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use palisade_redact::{RedactBodyLayer, SensitiveHeadersLayer};
use tower::ServiceExt;

mod chunked {
    //! A body that yields its chunks one frame at a time, so the redactor
    //! sees tokens cut between frames.
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use http_body::{Body, Frame};

    pub(crate) struct Chunks(pub(crate) Vec<&'static [u8]>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if self.0.is_empty() {
                return Poll::Ready(None);
            }
            let chunk = self.0.remove(0);
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(chunk)))))
        }
    }

    pub(crate) fn stream_body(chunks: Vec<&'static [u8]>) -> axum::body::Body {
        axum::body::Body::new(Chunks(chunks))
    }
}

async fn login() -> Response {
    (
        [(SET_COOKIE, "session=s3cr3t-cookie")],
        axum::Json(serde_json::json!({
            "user": "ada",
            "password": "hunter2",
            "profile": { "api_key": { "id": "k1", "value": "sk_live_abc" }, "theme": "dark" }
        })),
    )
        .into_response()
}

async fn events() -> Response {
    let body = stream_body(vec![
        b"event: token\ndata: {\"access_",
        b"token\":\"eyJhbGciOi\\\"",
        b"JIUzI1NiJ9\"}\n\n",
        b"data: {\"ok\":true}\n\n",
    ]);
    ([(CONTENT_TYPE, "text/event-stream")], body).into_response()
}

async fn gzipped() -> Response {
    (
        [
            (CONTENT_TYPE, "application/json"),
            (CONTENT_ENCODING, "gzip"),
        ],
        Body::from(r#"{"password":"not really gzip"}"#),
    )
        .into_response()
}

async fn text() -> Response {
    "password: plain text is not JSON".into_response()
}

async fn serve() -> SocketAddr {
    let app = Router::new()
        .route("/login", get(login))
        .route("/events", get(events))
        .route("/gzipped", get(gzipped))
        .route("/text", get(text))
        .layer(RedactBodyLayer::new())
        .layer(SensitiveHeadersLayer::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn get_path(addr: SocketAddr, path: &str) -> (http::response::Parts, Bytes) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let response = client
        .request(
            Request::get(format!("http://{addr}{path}"))
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    (parts, body.collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn a_json_route_with_a_password_arrives_redacted_without_content_length() {
    let addr = serve().await;
    let (parts, body) = get_path(addr, "/login").await;
    assert_eq!(parts.status, StatusCode::OK);
    assert!(parts.headers.get(CONTENT_LENGTH).is_none());
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        value,
        serde_json::json!({
            "user": "ada",
            "password": "***REDACTED***",
            "profile": { "api_key": "***REDACTED***", "theme": "dark" }
        })
    );
    let text = String::from_utf8_lossy(&body);
    assert!(
        !text.contains("hunter2") && !text.contains("sk_live_abc"),
        "{text}"
    );
}

#[tokio::test]
async fn event_streams_are_redacted_across_frames() {
    let addr = serve().await;
    let (_, body) = get_path(addr, "/events").await;
    assert_eq!(
        body,
        "event: token\ndata: {\"access_token\":\"***REDACTED***\"}\n\ndata: {\"ok\":true}\n\n"
    );
}

#[tokio::test]
async fn encoded_and_non_json_bodies_pass_through() {
    let addr = serve().await;
    let (parts, body) = get_path(addr, "/gzipped").await;
    assert_eq!(body, r#"{"password":"not really gzip"}"#);
    assert!(parts.headers.get(CONTENT_LENGTH).is_some());
    let (parts, body) = get_path(addr, "/text").await;
    assert_eq!(body, "password: plain text is not JSON");
    assert!(parts.headers.get(CONTENT_LENGTH).is_some());
}

#[tokio::test]
async fn sensitive_headers_are_marked_on_requests_and_responses() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let record = seen.clone();
    let service = tower::ServiceBuilder::new()
        .layer(SensitiveHeadersLayer::new().header(http::HeaderName::from_static("x-session")))
        .service_fn(move |request: Request<Empty<Bytes>>| {
            let record = record.clone();
            async move {
                *record.lock().unwrap() = format!("{:?}", request.headers());
                assert!(request.headers()[AUTHORIZATION].is_sensitive());
                let response = http::Response::builder()
                    .header(SET_COOKIE, "sid=cookie-secret")
                    .header("x-session", "session-secret")
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                Ok::<_, Infallible>(response)
            }
        });
    let request = Request::get("/")
        .header(AUTHORIZATION, "Bearer bearer-secret")
        .header("x-api-key", "key-secret")
        .header("cookie", "a=cookie-one")
        .header("cookie", "b=cookie-two")
        .header("accept", "*/*")
        .body(Empty::new())
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    let logged = seen.lock().unwrap().clone();
    for secret in ["bearer-secret", "key-secret", "cookie-one", "cookie-two"] {
        assert!(!logged.contains(secret), "{logged}");
    }
    assert!(logged.contains("*/*"), "{logged}");
    let response_debug = format!("{response:?}");
    assert!(response.headers()[SET_COOKIE].is_sensitive());
    assert!(
        !response_debug.contains("cookie-secret"),
        "{response_debug}"
    );
    assert!(
        !response_debug.contains("session-secret"),
        "{response_debug}"
    );
}

#[tokio::test]
async fn empty_bodies_keep_their_headers() {
    let service = tower::ServiceBuilder::new()
        .layer(RedactBodyLayer::new())
        .service_fn(|_: Request<Empty<Bytes>>| async {
            let response = http::Response::builder()
                .header(CONTENT_TYPE, "application/json")
                .header(CONTENT_LENGTH, "42")
                .body(Empty::<Bytes>::new())
                .unwrap();
            Ok::<_, Infallible>(response)
        });
    let response = service
        .oneshot(Request::head("/").body(Empty::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.headers()[CONTENT_LENGTH], "42");
    assert!(!response.body().is_redacting());
}
