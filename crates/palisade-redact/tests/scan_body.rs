#![allow(clippy::expect_used, clippy::unwrap_used)]
//! `ScanBodyLayer` on an axum router: secrets in response bodies redacted,
//! or the response refused with a 500 that says nothing of them.

use axum::Router;
use axum::body::Body;
use axum::response::IntoResponse;
use axum::routing::get;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use palisade_redact::scan::SecretScanner;
use palisade_redact::scan_body::{ScanAction, ScanBodyLayer};
use tower::ServiceExt;

const AWS: &str = "AKIAIOSFODNN7EXAMPLE";

fn app(layer: ScanBodyLayer) -> Router {
    Router::new()
        .route(
            "/leak",
            get(|| async {
                axum::Json(serde_json::json!({ "config": format!("aws_access_key_id = {AWS}") }))
            }),
        )
        .route("/clean", get(|| async { "nothing to see" }))
        .route(
            "/image",
            get(|| async { ([(CONTENT_TYPE, "image/png")], AWS).into_response() }),
        )
        .route("/big", get(|| async { "x".repeat(2048) }))
        .layer(layer)
}

async fn fetch(app: Router, path: &str) -> (http::response::Parts, String) {
    let response = app
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts, String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test]
async fn secrets_are_redacted_and_the_length_follows() {
    let app = app(ScanBodyLayer::new(
        SecretScanner::default(),
        ScanAction::Redact,
    ));
    let (parts, body) = fetch(app, "/leak").await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(body, r#"{"config":"aws_access_key_id = ***REDACTED***"}"#);
    assert_eq!(
        parts.headers[CONTENT_LENGTH].to_str().unwrap(),
        body.len().to_string()
    );
}

#[tokio::test]
async fn refusing_sends_a_500_that_says_nothing_of_the_secret() {
    let app = app(ScanBodyLayer::new(
        SecretScanner::default(),
        ScanAction::Refuse,
    ));
    let (parts, body) = fetch(app, "/leak").await;
    assert_eq!(parts.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(parts.headers[CONTENT_TYPE], "application/problem+json");
    assert_eq!(
        body,
        r#"{"type":"about:blank","title":"Internal Server Error","status":500}"#
    );
    assert!(!body.contains("AKIA"));
}

#[tokio::test]
async fn clean_and_binary_bodies_pass_unchanged() {
    let layer = ScanBodyLayer::new(SecretScanner::default(), ScanAction::Refuse);
    let (parts, body) = fetch(app(layer.clone()), "/clean").await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(body, "nothing to see");
    let (parts, body) = fetch(app(layer), "/image").await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(body, AWS);
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    let layer =
        ScanBodyLayer::new(SecretScanner::default(), ScanAction::Redact).max_body_bytes(1024);
    let (parts, _) = fetch(app(layer), "/big").await;
    assert_eq!(parts.status, StatusCode::INTERNAL_SERVER_ERROR);
}
