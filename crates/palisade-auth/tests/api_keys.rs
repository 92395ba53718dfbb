//! API keys and the `Authenticate` layer over real axum servers: keys per
//! role, garbage refused before any store lookup, expiry, revocation and
//! rotation with the manual clock, conflicting credentials, optional and
//! development modes, and the file and Redis stores.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::routing::get;
use axum::{Extension, Router};
use common::*;
use http::StatusCode;
use palisade_auth::api_key::{
    ApiKeyLayer, ApiKeyRecord, ApiKeySources, ApiKeyStore, ApiKeys, FileApiKeyStore, KeyLookup,
    MemoryApiKeyStore, NewApiKey,
};
use palisade_auth::authenticate::Authenticate;
use palisade_auth::revocation::StoreFuture;
use palisade_auth::{AuthFailure, JwtVerifier};
use palisade_core::clock::ManualClock;
use palisade_core::principal::Principal;

async fn whoami(Extension(principal): Extension<Principal>) -> String {
    format!(
        "{}|{}|{}",
        principal.subject(),
        principal.method().as_str(),
        principal.roles().join(",")
    )
}

/// A store that counts lookups, to prove garbage never reaches it.
#[derive(Clone, Default)]
struct Counting {
    inner: MemoryApiKeyStore,
    lookups: Arc<AtomicUsize>,
}

impl ApiKeyStore for Counting {
    fn find(&self, hash: &[u8; 32]) -> KeyLookup {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        self.inner.find(hash)
    }
    fn insert(&self, record: ApiKeyRecord) -> StoreFuture<()> {
        self.inner.insert(record)
    }
    fn revoke(&self, id: &str) -> StoreFuture<bool> {
        self.inner.revoke(id)
    }
    fn expire(&self, id: &str, at: u64) -> StoreFuture<bool> {
        self.inner.expire(id, at)
    }
    fn get(&self, id: &str) -> StoreFuture<Option<ApiKeyRecord>> {
        self.inner.get(id)
    }
}

#[tokio::test]
async fn a_key_with_a_bad_checksum_is_refused_without_any_store_lookup() {
    let store = Counting::default();
    let keys = ApiKeys::builder("pal_test", store.clone()).build().unwrap();
    let issued = keys
        .issue(NewApiKey::new("bot").roles(["viewer"]))
        .await
        .unwrap();
    let app = Router::new()
        .route("/me", get(whoami))
        .layer(ApiKeyLayer::new(keys));
    let addr = spawn_axum(app).await;

    let ok = http_get(addr, "/me", &[("x-api-key", issued.key.as_bytes())]).await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.body(), "bot|api_key|viewer");
    assert_eq!(store.lookups.load(Ordering::SeqCst), 1);

    let mut typo = issued.key.clone().into_bytes();
    let last = typo.len() - 1;
    typo[last] = if typo[last] == b'A' { b'B' } else { b'A' };
    for garbage in [
        typo.as_slice(),
        b"pal_test_0000000000000000000000000000".as_slice(),
        b"not-a-key".as_slice(),
        b"pal_live_abcdefghijklmnopqrstuvwxyz0123".as_slice(),
    ] {
        let refused = http_get(addr, "/me", &[("x-api-key", garbage)]).await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert!(
            refused.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("ApiKey")
        );
    }
    assert_eq!(
        store.lookups.load(Ordering::SeqCst),
        1,
        "garbage reached the store"
    );

    let scheme = format!("ApiKey {}", issued.key);
    let ok = http_get(addr, "/me", &[("authorization", scheme.as_bytes())]).await;
    assert_eq!(ok.status(), StatusCode::OK);
    let missing = http_get(addr, "/me", &[]).await;
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(missing.headers()["www-authenticate"], "ApiKey");
    // The query parameter is not read unless enabled.
    let query = http_get(addr, &format!("/me?api_key={}", issued.key), &[]).await;
    assert_eq!(query.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn expired_revoked_and_rotated_out_keys_are_refused_and_the_overlap_works() {
    let clock = clock_now();
    let keys = ApiKeys::builder("pal_test", MemoryApiKeyStore::new())
        .pepper(vec![7u8; 32])
        .clock(clock.clone())
        .build()
        .unwrap();
    let short = keys
        .issue(NewApiKey::new("a").expires_in(Duration::from_secs(60)))
        .await
        .unwrap();
    let old = keys
        .issue(NewApiKey::new("b").roles(["operator"]))
        .await
        .unwrap();
    let doomed = keys.issue(NewApiKey::new("c")).await.unwrap();
    let app = Router::new()
        .route("/me", get(whoami))
        .layer(ApiKeyLayer::new(keys.clone()));
    let addr = spawn_axum(app).await;
    let status = |key: String| async move {
        http_get(addr, "/me", &[("x-api-key", key.as_bytes())])
            .await
            .status()
    };

    let new = keys
        .rotate(&old.record.id, Duration::from_secs(300))
        .await
        .unwrap();
    assert_eq!(new.record.roles, ["operator"]);
    assert_eq!(
        status(old.key.clone()).await,
        StatusCode::OK,
        "inside the overlap"
    );
    assert_eq!(status(new.key.clone()).await, StatusCode::OK);
    keys.revoke(&doomed.record.id).await.unwrap();
    assert_eq!(status(doomed.key.clone()).await, StatusCode::UNAUTHORIZED);

    clock.advance(Duration::from_secs(301));
    assert_eq!(status(short.key.clone()).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        status(old.key.clone()).await,
        StatusCode::UNAUTHORIZED,
        "rotated out"
    );
    assert_eq!(status(new.key.clone()).await, StatusCode::OK);
    assert_eq!(keys.verify(&old.key).await, Err(AuthFailure::Expired));
}

fn jwt_and_keys() -> (palisade_auth::issue::TokenIssuer, JwtVerifier, ApiKeys) {
    init();
    let clock = clock_now();
    let issuer = issuer_with(rsa_key("k"), ISSUER, AUDIENCE, &clock);
    let verifier = JwtVerifier::builder()
        .issuer(issuer.verifying_issuer())
        .build()
        .unwrap();
    let keys = ApiKeys::builder("pal_test", MemoryApiKeyStore::new())
        .build()
        .unwrap();
    (issuer, verifier, keys)
}

#[tokio::test]
async fn authenticate_accepts_either_credential_but_never_both_at_once() {
    let (issuer, verifier, keys) = jwt_and_keys();
    let key = keys
        .issue(NewApiKey::new("svc").roles(["operator"]))
        .await
        .unwrap()
        .key;
    let auth = Authenticate::builder()
        .jwt(verifier)
        .api_keys(keys)
        .realm("api")
        .build()
        .unwrap();
    let app = Router::new().route("/me", get(whoami)).layer(auth);
    let addr = spawn_axum(app).await;
    let token = issuer.mint("u1").roles(["viewer"]).sign().unwrap().token;

    let by_token = http_get(addr, "/me", &[("authorization", &bearer(&token))]).await;
    assert_eq!(by_token.body(), "u1|jwt|viewer");
    let by_key = http_get(addr, "/me", &[("x-api-key", key.as_bytes())]).await;
    assert_eq!(by_key.body(), "svc|api_key|operator");

    let both = http_get(
        addr,
        "/me",
        &[
            ("authorization", &bearer(&token)),
            ("x-api-key", key.as_bytes()),
        ],
    )
    .await;
    assert_eq!(both.status(), StatusCode::BAD_REQUEST);

    let none = http_get(addr, "/me", &[]).await;
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    let challenges: Vec<_> = none
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        challenges,
        [r#"Bearer realm="api""#, r#"ApiKey realm="api""#]
    );

    let bad_token = http_get(addr, "/me", &[("authorization", b"Bearer a.b.c")]).await;
    assert_eq!(bad_token.status(), StatusCode::UNAUTHORIZED);
    assert!(
        bad_token.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let bad_key = http_get(addr, "/me", &[("x-api-key", b"pal_test_nope")]).await;
    assert_eq!(bad_key.status(), StatusCode::UNAUTHORIZED);
    assert!(
        bad_key.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("ApiKey")
    );
}

#[tokio::test]
async fn optional_lets_anonymous_through_and_development_mode_is_loud() {
    let (_, verifier, keys) = jwt_and_keys();
    let optional = Authenticate::builder()
        .jwt(verifier)
        .api_keys(keys.clone())
        .optional()
        .build()
        .unwrap();
    let app = Router::new().route("/me", get(whoami)).layer(optional);
    let addr = spawn_axum(app).await;
    assert_eq!(
        http_get(addr, "/me", &[]).await.body(),
        "anonymous|anonymous|"
    );
    assert_eq!(
        http_get(addr, "/me", &[("x-api-key", b"pal_test_garbage")])
            .await
            .status(),
        StatusCode::UNAUTHORIZED,
        "a bad credential is refused even when optional"
    );

    let development = Authenticate::builder()
        .dangerous_development_mode(Principal::builder("dev").roles(["admin"]).build())
        .build()
        .unwrap();
    let app = Router::new().route("/me", get(whoami)).layer(development);
    let addr = spawn_axum(app).await;
    assert_eq!(
        http_get(addr, "/me", &[]).await.body(),
        "dev|development|admin"
    );
    assert!(
        Authenticate::builder().build().is_err(),
        "no credential type configured"
    );
}

#[tokio::test]
async fn the_credential_can_be_stripped_before_the_handler_and_queries_read_when_enabled() {
    async fn headers(request: http::Request<axum::body::Body>) -> String {
        format!(
            "{}|{}",
            request.headers().contains_key("x-api-key"),
            request.uri()
        )
    }
    let keys = ApiKeys::builder("pal_test", MemoryApiKeyStore::new())
        .build()
        .unwrap();
    let key = keys.issue(NewApiKey::new("svc")).await.unwrap().key;
    let layer = ApiKeyLayer::with(
        keys,
        ApiKeySources::default().query("api_key").strip(true),
        false,
        None,
    );
    let app = Router::new().route("/h", get(headers)).layer(layer);
    let addr = spawn_axum(app).await;
    let response = http_get(addr, "/h", &[("x-api-key", key.as_bytes())]).await;
    assert_eq!(response.body(), "false|/h");
    let response = http_get(addr, &format!("/h?x=1&api_key={key}"), &[]).await;
    assert_eq!(response.body(), "false|/h?x=1");
}

#[tokio::test]
async fn a_file_store_reloads_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.toml");
    let store = FileApiKeyStore::open(&path).unwrap();
    let keys = ApiKeys::builder("pal_test", store.clone()).build().unwrap();
    let issued = keys
        .issue(NewApiKey::new("bot").roles(["viewer"]))
        .await
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(&issued.record.hash));
    assert!(!text.contains(&issued.key), "the file holds no key");

    // Another process (the CLI) revokes it by editing the file.
    let other = FileApiKeyStore::open(&path).unwrap();
    let other_keys = ApiKeys::builder("pal_test", other).build().unwrap();
    other_keys.revoke(&issued.record.id).await.unwrap();
    assert!(keys.verify(&issued.key).await.is_ok(), "not reloaded yet");
    store.reload().unwrap();
    assert_eq!(keys.verify(&issued.key).await, Err(AuthFailure::Revoked));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_store_revokes_on_every_instance_within_the_cache_bound() {
    use palisade_auth::api_key::RedisApiKeyStore;
    use palisade_redis::testing::RedisServer;
    use palisade_redis::{RedisConfig, RedisConnection};
    let server = RedisServer::start().expect("redis-server");
    let connect = || RedisConnection::connect_lazy(&RedisConfig::standalone(server.url())).unwrap();
    let clock = ManualClock::new();
    let a = ApiKeys::builder("pal_test", RedisApiKeyStore::new(connect(), "pal").unwrap())
        .build()
        .unwrap();
    let b_store = RedisApiKeyStore::new(connect(), "pal")
        .unwrap()
        .cache_ttl(Duration::from_secs(2))
        .clock(Arc::new(clock.clone()));
    let b = ApiKeys::builder("pal_test", b_store).build().unwrap();
    let issued = a.issue(NewApiKey::new("bot").tenant("acme")).await.unwrap();
    assert_eq!(b.verify(&issued.key).await.unwrap().tenant(), Some("acme"));
    a.revoke(&issued.record.id).await.unwrap();
    assert_eq!(
        a.verify(&issued.key).await,
        Err(AuthFailure::Revoked),
        "at once where revoked"
    );
    // Elsewhere within the cache bound.
    clock.advance(Duration::from_secs(2));
    assert_eq!(b.verify(&issued.key).await, Err(AuthFailure::Revoked));

    // A revoked key is not rotated back to life; a live one is.
    assert!(
        a.rotate(&issued.record.id, Duration::from_secs(60))
            .await
            .is_err()
    );
    let live = a.issue(NewApiKey::new("bot2")).await.unwrap();
    let rotated = a
        .rotate(&live.record.id, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(b.verify(&rotated.key).await.is_ok());
    assert!(b.verify(&live.key).await.is_ok(), "inside the overlap");
}

#[tokio::test]
async fn an_api_key_sent_as_a_bearer_token_is_checked_as_a_key() {
    let (_, verifier, keys) = jwt_and_keys();
    let key = keys.issue(NewApiKey::new("svc")).await.unwrap().key;
    let auth = Authenticate::builder()
        .jwt(verifier)
        .api_keys(keys)
        .build()
        .unwrap();
    let app = Router::new().route("/me", get(whoami)).layer(auth);
    let addr = spawn_axum(app).await;
    let response = http_get(addr, "/me", &[("authorization", &bearer(&key))]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.body(), "svc|api_key|");
}

#[tokio::test]
async fn a_key_layer_inside_another_authentication_is_a_conflict_not_a_replacement() {
    let (issuer, verifier, keys) = jwt_and_keys();
    let key = keys.issue(NewApiKey::new("svc")).await.unwrap().key;
    let app = Router::new()
        .route("/me", get(whoami))
        .layer(ApiKeyLayer::with(
            keys,
            ApiKeySources::default(),
            true,
            None,
        ))
        .layer(
            palisade_auth::JwtAuthLayer::builder()
                .verifier(verifier)
                .optional()
                .build()
                .unwrap(),
        );
    let addr = spawn_axum(app).await;
    let token = issuer.mint("u1").sign().unwrap().token;
    let both = http_get(
        addr,
        "/me",
        &[
            ("authorization", &bearer(&token)),
            ("x-api-key", key.as_bytes()),
        ],
    )
    .await;
    assert_eq!(both.status(), StatusCode::BAD_REQUEST);
    let token_only = http_get(addr, "/me", &[("authorization", &bearer(&token))]).await;
    assert_eq!(token_only.body(), "u1|jwt|");
}
