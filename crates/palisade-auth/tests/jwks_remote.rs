//! Remote keys against a JWKS server on loopback that the test controls:
//! rotation, floods of unknown `kid`s, an identity provider down at start-up,
//! garbage documents, unusable entries, and OIDC discovery.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use common::*;
use palisade_auth::issue::{SigningKey, TokenIssuer};
use palisade_auth::key::Algorithm;
use palisade_auth::remote::RemoteOptions;
use palisade_auth::{AuthFailure, Issuer, JwtVerifier};
use tokio::net::TcpListener;

#[derive(Default)]
struct Provider {
    jwks: Mutex<String>,
    cache_control: Mutex<Option<String>>,
    discovery_issuer: Mutex<Option<String>>,
    jwks_hits: AtomicUsize,
}

async fn jwks(State(provider): State<Arc<Provider>>) -> impl IntoResponse {
    provider.jwks_hits.fetch_add(1, Ordering::SeqCst);
    let body = provider.jwks.lock().unwrap().clone();
    let cache = provider
        .cache_control
        .lock()
        .unwrap()
        .clone()
        .unwrap_or_else(|| "no-transform".into());
    (
        [
            ("content-type", "application/json".to_owned()),
            ("cache-control", cache),
        ],
        body,
    )
}

async fn discovery(State(provider): State<Arc<Provider>>) -> impl IntoResponse {
    let issuer = provider
        .discovery_issuer
        .lock()
        .unwrap()
        .clone()
        .unwrap_or_default();
    axum::Json(serde_json::json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/jwks"),
    }))
}

async fn serve(provider: Arc<Provider>, listener: TcpListener) -> SocketAddr {
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/jwks", get(jwks))
        .route("/.well-known/openid-configuration", get(discovery))
        .with_state(provider);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn jwks_of(keys: &[&SigningKey]) -> String {
    let keys: Vec<_> = keys
        .iter()
        .map(|k| serde_json::to_value(k.public_jwk().unwrap()).unwrap())
        .collect();
    serde_json::json!({ "keys": keys }).to_string()
}

fn fast_options() -> RemoteOptions {
    RemoteOptions::default()
        .allow_insecure_http_for_tests()
        .refresh_interval(Duration::from_secs(3600))
        .min_refresh_interval(Duration::from_millis(0))
        .retry_backoff(Duration::from_millis(50), Duration::from_millis(200))
        .timeout(Duration::from_secs(2))
}

fn token_issuer(key: SigningKey, name: &str) -> TokenIssuer {
    TokenIssuer::builder(name)
        .audience(AUDIENCE)
        .signing_key(key)
        .build()
        .unwrap()
}

fn remote_verifier(url: String, name: &str, options: RemoteOptions) -> JwtVerifier {
    JwtVerifier::builder()
        .issuer(Issuer::new(name).audience(AUDIENCE).jwks_url(url, options))
        .build()
        .unwrap()
}

/// Verifies until the result is not "keys unavailable", for at most 5 s.
async fn verify_when_loaded(
    verifier: &JwtVerifier,
    token: &str,
) -> Result<palisade_core::principal::Principal, AuthFailure> {
    let start = Instant::now();
    loop {
        match verifier.verify(token).await {
            Err(AuthFailure::KeysUnavailable) if start.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_on_its_first_token_without_waiting_for_the_interval() {
    init();
    let provider = Arc::new(Provider::default());
    let old = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_kid("old");
    let new = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_kid("new");
    *provider.jwks.lock().unwrap() = jwks_of(&[&old]);
    let addr = serve(
        provider.clone(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await;
    let verifier = remote_verifier(format!("http://{addr}/jwks"), ISSUER, fast_options());

    let old_token = token_issuer(old.clone(), ISSUER)
        .mint("u")
        .sign()
        .unwrap()
        .token;
    assert_eq!(
        verify_when_loaded(&verifier, &old_token)
            .await
            .unwrap()
            .subject(),
        "u"
    );

    *provider.jwks.lock().unwrap() = jwks_of(&[&old, &new]);
    let new_token = token_issuer(new, ISSUER).mint("v").sign().unwrap().token;
    let principal = verifier.verify(&new_token).await.unwrap();
    assert_eq!(principal.subject(), "v");
    assert_eq!(provider.jwks_hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_flood_of_random_kids_causes_a_bounded_number_of_fetches() {
    init();
    let provider = Arc::new(Provider::default());
    let key = SigningKey::generate(Algorithm::HS256).unwrap();
    let real = SigningKey::generate(Algorithm::EdDSA)
        .unwrap()
        .with_kid("real");
    *provider.jwks.lock().unwrap() = jwks_of(&[&real]);
    let addr = serve(
        provider.clone(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await;
    let options = fast_options().min_refresh_interval(Duration::from_secs(60));
    let verifier = remote_verifier(format!("http://{addr}/jwks"), ISSUER, options);
    let good = token_issuer(real, ISSUER).mint("u").sign().unwrap().token;
    assert!(verify_when_loaded(&verifier, &good).await.is_ok());

    let mut tasks = Vec::new();
    for i in 0..10_000 {
        // A different kid each time; the signature does not matter.
        let token = token_issuer(key.clone().with_kid(format!("random-{i}")), ISSUER)
            .mint("attacker")
            .sign()
            .unwrap()
            .token;
        let verifier = verifier.clone();
        tasks.push(tokio::spawn(async move { verifier.verify(&token).await }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap_err(), AuthFailure::UnknownKey);
    }
    let hits = provider.jwks_hits.load(Ordering::SeqCst);
    assert!(hits <= 2, "{hits} fetches for 10,000 unknown kids");
    assert!(verifier.verify(&good).await.is_ok());
}

#[tokio::test]
async fn provider_down_at_start_up_means_503_then_keys_load_when_it_comes_up() {
    init();
    // A port nobody listens on yet.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let key = SigningKey::generate(Algorithm::ES384)
        .unwrap()
        .with_kid("k");
    let verifier = remote_verifier(format!("http://{addr}/jwks"), ISSUER, fast_options());
    let token = token_issuer(key.clone(), ISSUER)
        .mint("u")
        .sign()
        .unwrap()
        .token;
    assert_eq!(
        verifier.verify(&token).await,
        Err(AuthFailure::KeysUnavailable)
    );
    assert!(
        AuthFailure::KeysUnavailable.rejection(None).status()
            == http::StatusCode::SERVICE_UNAVAILABLE
    );

    tokio::time::sleep(Duration::from_millis(200)).await;
    let provider = Arc::new(Provider::default());
    *provider.jwks.lock().unwrap() = jwks_of(&[&key]);
    serve(provider, TcpListener::bind(addr).await.unwrap()).await;
    assert_eq!(
        verify_when_loaded(&verifier, &token)
            .await
            .unwrap()
            .subject(),
        "u"
    );
}

#[tokio::test]
async fn garbage_documents_never_replace_good_keys_and_unusable_entries_are_skipped() {
    init();
    let provider = Arc::new(Provider::default());
    *provider.jwks.lock().unwrap() = "{ this is not json".to_owned();
    let addr = serve(
        provider.clone(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await;
    let key = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_kid("k");
    let verifier = remote_verifier(format!("http://{addr}/jwks"), ISSUER, fast_options());
    let token = token_issuer(key.clone(), ISSUER)
        .mint("u")
        .sign()
        .unwrap()
        .token;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        verifier.verify(&token).await,
        Err(AuthFailure::KeysUnavailable)
    );

    // One unusable entry beside the good key.
    let good = serde_json::to_value(key.public_jwk().unwrap()).unwrap();
    *provider.jwks.lock().unwrap() = serde_json::json!({"keys": [
        {"kty": "RSA", "kid": "enc", "use": "enc", "alg": "RSA-OAEP", "n": "AQAB", "e": "AQAB"},
        {"kty": "weird", "kid": "w"},
        good
    ]})
    .to_string();
    assert_eq!(
        verify_when_loaded(&verifier, &token)
            .await
            .unwrap()
            .subject(),
        "u"
    );

    // Garbage again: an unknown kid triggers a fetch that fails; the good
    // key stays.
    *provider.jwks.lock().unwrap() = "garbage".to_owned();
    let other = token_issuer(
        SigningKey::generate(Algorithm::ES256)
            .unwrap()
            .with_kid("x"),
        ISSUER,
    )
    .mint("u")
    .sign()
    .unwrap()
    .token;
    assert_eq!(verifier.verify(&other).await, Err(AuthFailure::UnknownKey));
    assert!(verifier.verify(&token).await.is_ok());
}

#[tokio::test]
async fn oidc_discovery_finds_the_keys_and_refuses_a_document_naming_another_issuer() {
    init();
    let provider = Arc::new(Provider::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let name = format!("http://{addr}");
    *provider.discovery_issuer.lock().unwrap() = Some(name.clone());
    let key = SigningKey::generate(Algorithm::EdDSA)
        .unwrap()
        .with_kid("k");
    *provider.jwks.lock().unwrap() = jwks_of(&[&key]);
    serve(provider.clone(), listener).await;

    let verifier = JwtVerifier::builder()
        .issuer(
            Issuer::new(name.clone())
                .audience(AUDIENCE)
                .oidc_discovery(fast_options()),
        )
        .build()
        .unwrap();
    let token = token_issuer(key.clone(), &name)
        .mint("u")
        .sign()
        .unwrap()
        .token;
    assert_eq!(
        verify_when_loaded(&verifier, &token)
            .await
            .unwrap()
            .subject(),
        "u"
    );

    // The same provider now claims to be someone else.
    let other_name = format!("http://localhost:{}", addr.port());
    let verifier = JwtVerifier::builder()
        .issuer(
            Issuer::new(other_name.clone())
                .audience(AUDIENCE)
                .oidc_discovery(fast_options()),
        )
        .build()
        .unwrap();
    let token = token_issuer(key, &other_name)
        .mint("u")
        .sign()
        .unwrap()
        .token;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        verifier.verify(&token).await,
        Err(AuthFailure::KeysUnavailable)
    );
}

#[test]
fn plain_http_key_urls_are_refused_unless_spelled_out() {
    init();
    let built = JwtVerifier::builder()
        .issuer(
            Issuer::new(ISSUER)
                .audience(AUDIENCE)
                .jwks_url("http://id.test/jwks", RemoteOptions::default()),
        )
        .build();
    assert!(built.is_err());
}

#[tokio::test]
async fn cache_control_max_age_sets_the_refresh_interval() {
    init();
    let provider = Arc::new(Provider::default());
    let key = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_kid("k");
    *provider.jwks.lock().unwrap() = jwks_of(&[&key]);
    *provider.cache_control.lock().unwrap() = Some("public, max-age=1".into());
    let addr = serve(
        provider.clone(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await;
    // The interval says an hour; the server says one second.
    let verifier = remote_verifier(format!("http://{addr}/jwks"), ISSUER, fast_options());
    let token = token_issuer(key, ISSUER).mint("u").sign().unwrap().token;
    assert!(verify_when_loaded(&verifier, &token).await.is_ok());
    let deadline = Instant::now() + Duration::from_secs(10);
    while provider.jwks_hits.load(Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "max-age was not honoured");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn a_verifier_built_in_a_runtime_that_ended_refreshes_in_the_next_one() {
    init();
    let key = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_kid("k");
    let token = token_issuer(key.clone(), ISSUER)
        .mint("u")
        .sign()
        .unwrap()
        .token;
    let serving = tokio::runtime::Runtime::new().unwrap();
    let provider = Arc::new(Provider::default());
    *provider.jwks.lock().unwrap() = jwks_of(&[&key]);
    let addr = serving.block_on(async {
        serve(
            provider.clone(),
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
        )
        .await
    });
    // Built inside a short-lived runtime (a config loader, a test helper)
    // that ends before the keys could load.
    let verifier = {
        let short = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        short.block_on(async {
            remote_verifier(format!("http://{addr}/jwks"), ISSUER, fast_options())
        })
    };
    let app = tokio::runtime::Runtime::new().unwrap();
    let result = app.block_on(async {
        // The layer calls this on every request.
        let layer = palisade_auth::JwtAuthLayer::new(verifier.clone());
        let _ = layer;
        verify_when_loaded_started(&verifier, &token).await
    });
    assert_eq!(result.unwrap().subject(), "u");
}

async fn verify_when_loaded_started(
    verifier: &JwtVerifier,
    token: &str,
) -> Result<palisade_core::principal::Principal, AuthFailure> {
    let start = Instant::now();
    loop {
        // What each request through the layer does first.
        verifier.ensure_refreshing();
        match verifier.verify(token).await {
            Err(AuthFailure::KeysUnavailable) if start.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}
