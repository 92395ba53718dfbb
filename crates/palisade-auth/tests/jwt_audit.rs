//! Audit events of the JWT layer, alone in this test binary: `tracing`
//! caches which call sites are enabled, so a capturing subscriber must not
//! share a process with tests that log without one.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use http::StatusCode;
use palisade_auth::JwtAuthLayer;
use palisade_auth::JwtVerifier;
use serde_json::json;
use tower::{ServiceBuilder, ServiceExt};

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

#[tokio::test]
async fn the_audit_event_names_the_failed_check_and_never_the_token() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    init();
    let clock = clock_now();
    let issuer = issuer_with(rsa_key("rsa-1"), ISSUER, AUDIENCE, &clock);
    let verifier = JwtVerifier::builder()
        .issuer(issuer.verifying_issuer())
        .build()
        .unwrap();
    let now = palisade_core::clock::Clock::unix_time(&clock).as_secs();
    let header = json!({"alg": "RS256", "kid": "rsa-1", "typ": "at+jwt"});
    let claims = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "u1", "exp": now - 3600});
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap();
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::RS256)
            .unwrap();
    let token = format!("{message}.{signature}");
    let service = ServiceBuilder::new()
        .layer(JwtAuthLayer::new(verifier))
        .service_fn(|_req: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
        });
    let request = http::Request::get("/scans/1?x=1")
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("palisade::audit"), "{log}");
    assert!(log.contains("token_expired"), "{log}");
    assert!(!log.contains(&token[..40]), "the token leaked: {log}");
}
