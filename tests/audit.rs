//! Audit events: emitted on refusal under `palisade::audit`, with client
//! address, principal and route, and never a secret from the request.

// A failed expectation in a test is a failing test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use palisade::core::Rejection;
use palisade::core::client_ip::PeerAddr;
use palisade::core::guard::{GuardLayer, RequestHead};
use palisade::core::principal::{AuthMethod, Principal};
use tower::{ServiceBuilder, ServiceExt};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::ErrorKind::Other)?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Everything written so far.
    fn output(&self) -> String {
        String::from_utf8(self.0.lock().expect("lock").clone()).expect("utf-8")
    }
}

/// Formatted events at INFO and above, written to the returned buffer while
/// the guard lives.
fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

/// The audit events' lines of `output`.
fn audit_events(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter(|l| l.contains("palisade::audit"))
        .collect()
}

#[tokio::test]
async fn refusal_emits_one_audit_event_without_secrets() {
    let (captured, _guard) = capture();

    let service = ServiceBuilder::new()
        .layer(GuardLayer::new("deny_all", |_: &RequestHead<'_>| {
            Err(Rejection::unauthenticated())
        }))
        .service(tower::service_fn(|_request: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        }));
    let mut request = Request::get("/api/scans?access_token=SECRET-QUERY-TOKEN")
        .header("authorization", "Bearer SECRET-HEADER-TOKEN")
        .body(Full::new(Bytes::new()))
        .expect("request");
    request
        .extensions_mut()
        .insert(PeerAddr(SocketAddr::from(([192, 0, 2, 33], 4000))));
    request.extensions_mut().insert(
        Principal::builder("user-7")
            .tenant("acme")
            .method(AuthMethod::ApiKey {
                id: "key_42".into(),
            })
            .build(),
    );
    let response = service.oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), 401);

    let output = captured.output();
    let events = audit_events(&output);
    assert_eq!(events.len(), 1, "{output}");
    let event = events[0];
    for expected in [
        "WARN",
        "layer=\"deny_all\"",
        "decision=\"refused\"",
        "kind=\"unauthenticated\"",
        "status=401",
        "client_ip=192.0.2.33",
        "subject=\"user-7\"",
        "tenant=\"acme\"",
        "auth_method=\"api_key\"",
        "method=\"GET\"",
        "route=\"/api/scans\"",
    ] {
        assert!(event.contains(expected), "missing {expected} in {event}");
    }
    assert!(
        !output.contains("SECRET"),
        "a secret reached the log: {output}"
    );
}

#[tokio::test]
async fn a_rate_limit_refusal_names_the_policy_that_refused() {
    use palisade::core::key::KeyFn;
    use palisade::ratelimit::{Quota, RateLimitLayer, RateLimitPolicy};

    let (captured, _guard) = capture();

    let layer = RateLimitLayer::builder()
        .policy(
            RateLimitPolicy::builder("per_ip", KeyFn::ClientIp, Quota::per_hour(1))
                .build()
                .expect("policy"),
        )
        .build()
        .expect("layer");
    let service = ServiceBuilder::new()
        .layer(layer)
        .service(tower::service_fn(|_request: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        }));
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let mut request = Request::get("/api/scans")
            .body(Full::new(Bytes::new()))
            .expect("request");
        request
            .extensions_mut()
            .insert(PeerAddr(SocketAddr::from(([192, 0, 2, 34], 4000))));
        let response = service.clone().oneshot(request).await.expect("infallible");
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [200, 429]);

    let output = captured.output();
    let events = audit_events(&output);
    assert_eq!(events.len(), 1, "{output}");
    for expected in [
        "layer=\"ratelimit\"",
        "kind=\"rate_limited\"",
        "policy=\"per_ip\"",
        "client_ip=192.0.2.34",
    ] {
        assert!(
            events[0].contains(expected),
            "missing {expected} in {}",
            events[0]
        );
    }
}
