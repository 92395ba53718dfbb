//! API key checks beside tower-http's static bearer check, in one run:
//!
//! - `palisade/verify`: `ApiKeys::verify` of a valid key (shape, CRC32
//!   checksum, HMAC-SHA256 with a pepper, lookup in a store of 10,000
//!   keys, expiry and revocation checks, the principal);
//! - `palisade/garbage`: a key whose checksum is wrong (refused before any
//!   hash);
//! - `palisade/api_key_layer` and `tower_http/bearer`: each layer around a
//!   trivial service, on a request carrying the credential;
//! - `palisade/authenticate_require_role`: `Authenticate` (JWT and API
//!   keys configured, a key presented) then `RequireRole`, the whole path a
//!   route pays.
//!
//! tower-http's bearer check compares one static token; ours looks up one
//! key among thousands, each with its own grants.
//!
//! ```text
//! cargo bench -p palisade-benches --bench api_keys
//! ```

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Full;
use palisade_auth::JwtVerifier;
use palisade_auth::api_key::{ApiKeyLayer, ApiKeys, MemoryApiKeyStore, NewApiKey};
use palisade_auth::authenticate::Authenticate;
use palisade_auth::authorize::RequireRole;
use palisade_auth::issue::{SigningKey, TokenIssuer};
use palisade_auth::key::Algorithm;
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceExt};
use tower_http::validate_request::ValidateRequestHeaderLayer;

fn ok(_: Request<Full<Bytes>>) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>> {
    std::future::ready(Ok(Response::new(Full::new(Bytes::new()))))
}

fn keys(runtime: &Runtime) -> (ApiKeys, String) {
    let keys = ApiKeys::builder("pal_live", MemoryApiKeyStore::new())
        .pepper(vec![42u8; 32])
        .build()
        .unwrap_or_else(|e| panic!("keys: {e}"));
    let mut presented = String::new();
    runtime.block_on(async {
        for i in 0..10_000 {
            let issued = keys
                .issue(NewApiKey::new(format!("svc-{i}")).roles(["operator"]))
                .await
                .unwrap_or_else(|e| panic!("issue: {e}"));
            if i == 5_000 {
                presented = issued.key;
            }
        }
    });
    (keys, presented)
}

fn bench(c: &mut Criterion) {
    palisade_auth::crypto::CryptoBackend::install_preferred().unwrap_or_else(|e| panic!("{e}"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let (keys, key) = keys(&runtime);
    let mut garbage = key.clone().into_bytes();
    let last = garbage.len() - 1;
    garbage[last] = if garbage[last] == b'A' { b'B' } else { b'A' };
    let garbage = String::from_utf8(garbage).unwrap_or_default();

    let mut group = c.benchmark_group("api_key");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    group.sample_size(30);

    group.bench_function("palisade/verify", |b| {
        b.iter(|| runtime.block_on(keys.verify(black_box(&key))).is_ok())
    });
    group.bench_function("palisade/garbage", |b| {
        b.iter(|| runtime.block_on(keys.verify(black_box(&garbage))).is_err())
    });

    let request = |header: &str, value: &str| {
        Request::get("/scans")
            .header(header, value)
            .body(Full::new(Bytes::new()))
            .unwrap_or_else(|e| panic!("request: {e}"))
    };
    let mut ours = ApiKeyLayer::new(keys.clone()).layer(tower::service_fn(ok));
    group.bench_function("palisade/api_key_layer", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let service = ours.ready().await.unwrap_or_else(|e| match e {});
                service
                    .call(request("x-api-key", &key))
                    .await
                    .map(|r| r.status())
            })
        })
    });
    let bearer = format!("Bearer {key}");
    // Deprecated upstream as "too basic to be useful in real applications";
    // still what users reach for to check a static token, hence the baseline.
    #[allow(deprecated)]
    let mut theirs = ValidateRequestHeaderLayer::bearer(&key).layer(tower::service_fn(ok));
    group.bench_function("tower_http/bearer", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let service = theirs.ready().await.unwrap_or_else(|e| match e {});
                service
                    .call(request("authorization", &bearer))
                    .await
                    .map(|r| r.status())
            })
        })
    });

    let issuer = TokenIssuer::builder("https://id.example.com")
        .audience("api")
        .signing_key(
            SigningKey::hmac(Algorithm::HS256, &[1u8; 32]).unwrap_or_else(|e| panic!("{e}")),
        )
        .build()
        .unwrap_or_else(|e| panic!("issuer: {e}"));
    let verifier = JwtVerifier::builder()
        .issuer(issuer.verifying_issuer())
        .build()
        .unwrap_or_else(|e| panic!("verifier: {e}"));
    let authenticate = Authenticate::builder()
        .jwt(verifier)
        .api_keys(keys.clone())
        .build()
        .unwrap_or_else(|e| panic!("authenticate: {e}"));
    let require = RequireRole::any(["operator", "admin"]).unwrap_or_else(|e| panic!("role: {e}"));
    let mut path = authenticate.layer(require.layer(tower::service_fn(ok)));
    group.bench_function("palisade/authenticate_require_role", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let service = path.ready().await.unwrap_or_else(|e| match e {});
                service
                    .call(request("x-api-key", &key))
                    .await
                    .map(|r| r.status())
            })
        })
    });
    let mut bare = tower::service_fn(ok);
    group.bench_function("baseline/bare_service", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let service = bare.ready().await.unwrap_or_else(|e| match e {});
                service
                    .call(request("x-api-key", &key))
                    .await
                    .map(|r| r.status())
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
