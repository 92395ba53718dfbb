//! JWT verification, one group per algorithm (HS256, RS256, ES256, EdDSA),
//! all four contenders on the same valid token in the same run:
//!
//! - `palisade/cold`: `JwtVerifier::verify_token` with the cache off, so every
//!   call parses and checks the signature;
//! - `palisade/cached`: the default verifier, the same token again and again;
//! - `jsonwebtoken/decode`: `jsonwebtoken::decode` alone, with a `Validation`
//!   doing the same checks (`iss`, `aud`, `exp`, `nbf`, the one algorithm);
//! - `jwt_authorizer/check_auth`: jwt-authorizer's `Authorizer` built from
//!   the same public key, with the same `iss` and `aud`, on a current-thread
//!   runtime's `block_on`;
//! - `palisade/layer_cached`: the whole `JwtAuthLayer` around a trivial
//!   service, on a request with `Authorization: Bearer`.
//!
//! ```text
//! cargo bench -p palisade-benches --bench auth
//! ```

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Full;
use jwt_authorizer::{Authorizer, JwtAuthorizer, RegisteredClaims};
use palisade_auth::issue::{SigningKey, TokenIssuer};
use palisade_auth::key::Algorithm;
use palisade_auth::{JwtAuthLayer, JwtVerifier, Verification};
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceExt};

const ISSUER: &str = "https://id.example.com";
const AUDIENCE: &str = "scans-api";
/// 64 printable bytes: jwt-authorizer takes its HMAC secret as a `&str`.
const SECRET: &str = "bench-secret-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJKLM";
const RSA_PRIVATE: &[u8] = include_bytes!("../../crates/palisade-auth/tests/keys/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("../../crates/palisade-auth/tests/keys/rsa_public.pem");

/// The DER prefix of a P-256 `SubjectPublicKeyInfo`, before the 65-byte
/// uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// The DER prefix of an Ed25519 `SubjectPublicKeyInfo`, before the 32-byte key.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

fn fail<T>(what: &str, error: impl std::fmt::Display) -> T {
    panic!("{what}: {error}")
}

/// One algorithm's key, token and the public key in the forms each
/// contender reads.
struct Case {
    algorithm: Algorithm,
    issuer: TokenIssuer,
    token: String,
    decoding: jsonwebtoken::DecodingKey,
}

fn case(algorithm: Algorithm) -> Case {
    let key = match algorithm {
        // Named like the other keys (theirs come with their JWK), so every
        // token finds its key by kid.
        Algorithm::HS256 => {
            SigningKey::hmac(algorithm, SECRET.as_bytes()).map(|key| key.with_kid("hs"))
        }
        Algorithm::RS256 => SigningKey::from_pem(algorithm, RSA_PRIVATE),
        _ => SigningKey::generate(algorithm),
    }
    .unwrap_or_else(|e| fail("signing key", e));
    let decoding = match key.public_jwk() {
        Some(jwk) => jsonwebtoken::DecodingKey::from_jwk(jwk),
        None => Ok(jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes())),
    }
    .unwrap_or_else(|e| fail("decoding key", e));
    let issuer = TokenIssuer::builder(ISSUER)
        .audience(AUDIENCE)
        .signing_key(key)
        .ttl(Duration::from_secs(3600))
        .build()
        .unwrap_or_else(|e| fail("issuer", e));
    let token = issuer
        .mint("user-42")
        .roles(["operator"])
        .sign()
        .unwrap_or_else(|e| fail("token", e))
        .token;
    Case {
        algorithm,
        issuer,
        token,
        decoding,
    }
}

/// A public key in PEM, built from the JWK's coordinates, for the contender
/// that reads keys only from PEM.
fn public_pem(case: &Case) -> String {
    use jsonwebtoken::jwk::AlgorithmParameters;
    let decode = |b64: &str| {
        URL_SAFE_NO_PAD
            .decode(b64)
            .unwrap_or_else(|e| fail("JWK coordinate", e))
    };
    let jwk = case
        .issuer
        .jwks()
        .keys
        .into_iter()
        .next()
        .unwrap_or_else(|| fail("JWKS", "no public key"));
    let der = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec) => {
            let mut der = P256_SPKI_PREFIX.to_vec();
            der.push(0x04);
            der.extend(decode(&ec.x));
            der.extend(decode(&ec.y));
            der
        }
        AlgorithmParameters::OctetKeyPair(okp) => {
            let mut der = ED25519_SPKI_PREFIX.to_vec();
            der.extend(decode(&okp.x));
            der
        }
        _ => fail("public key", "not an EC or Ed25519 key"),
    };
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|line| std::str::from_utf8(line).unwrap_or_default())
        .collect();
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    )
}

fn authorizer(runtime: &Runtime, case: &Case) -> Authorizer<RegisteredClaims> {
    let builder = match case.algorithm {
        Algorithm::HS256 => JwtAuthorizer::from_secret(SECRET),
        Algorithm::RS256 => JwtAuthorizer::from_rsa_pem_text(RSA_PUBLIC),
        Algorithm::ES256 => JwtAuthorizer::from_ec_pem_text(&public_pem(case)),
        _ => JwtAuthorizer::from_ed_pem_text(&public_pem(case)),
    };
    // Its default algorithms are the key family's (HS256/384/512 for a
    // secret, RS* and PS* for an RSA key): its own binding of key to
    // algorithm, one family wide.
    let validation = jwt_authorizer::Validation::new()
        .iss(&[ISSUER])
        .aud(&[AUDIENCE])
        .nbf(true);
    runtime
        .block_on(builder.validation(validation).build())
        .unwrap_or_else(|e| fail("jwt-authorizer", e))
}

fn validation(algorithm: Algorithm) -> jsonwebtoken::Validation {
    let mut validation = jsonwebtoken::Validation::new(algorithm);
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    validation.validate_nbf = true;
    validation.leeway = 60;
    validation
}

fn verifier(case: &Case, cache_capacity: usize) -> JwtVerifier {
    JwtVerifier::builder()
        .issuer(case.issuer.verifying_issuer())
        .cache_capacity(cache_capacity)
        .build()
        .unwrap_or_else(|e| fail("verifier", e))
}

fn assert_accepted(verification: Verification, what: &str) {
    assert!(
        matches!(verification, Verification::Done(Ok(_))),
        "{what}: {verification:?}"
    );
}

async fn ok(_request: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}

fn bench_auth(c: &mut Criterion) {
    // Feature unification may compile both signature backends in.
    palisade_auth::crypto::CryptoBackend::install_preferred()
        .unwrap_or_else(|e| fail("crypto backend", e));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail("runtime", e));

    for algorithm in [
        Algorithm::HS256,
        Algorithm::RS256,
        Algorithm::ES256,
        Algorithm::EdDSA,
    ] {
        let case = case(algorithm);
        let token = case.token.as_str();
        let cold = verifier(&case, 0);
        let cached = verifier(&case, 100_000);
        let validation = validation(algorithm);
        let authorizer = authorizer(&runtime, &case);
        let layer = JwtAuthLayer::builder()
            .issuer(case.issuer.verifying_issuer())
            .build()
            .unwrap_or_else(|e| fail("layer", e));
        let mut service = layer.layer(tower::service_fn(ok));
        let bearer = format!("Bearer {token}");
        let request = || {
            Request::get("/api/scans")
                .header("authorization", bearer.as_str())
                .body(Full::new(Bytes::new()))
                .unwrap_or_default()
        };

        // Every contender accepts the token before anything is timed.
        assert_accepted(cold.verify_token(token), &format!("{algorithm:?} cold"));
        assert_accepted(cached.verify_token(token), &format!("{algorithm:?} cached"));
        if let Err(e) =
            jsonwebtoken::decode::<serde_json::Value>(token, &case.decoding, &validation)
        {
            fail::<()>("jsonwebtoken refused the token", e);
        }
        if let Err(e) = runtime.block_on(authorizer.check_auth(token)) {
            fail::<()>("jwt-authorizer refused the token", e);
        }
        let status = runtime.block_on(async {
            let ready = service
                .ready()
                .await
                .unwrap_or_else(|e: Infallible| match e {});
            ready.call(request()).await.map(|r| r.status())
        });
        assert_eq!(
            status.ok(),
            Some(http::StatusCode::OK),
            "{algorithm:?}: layer"
        );

        let mut group = c.benchmark_group(format!("jwt {algorithm:?}"));
        group
            .measurement_time(Duration::from_secs(3))
            .warm_up_time(Duration::from_secs(1))
            .sample_size(30);
        group.bench_function("palisade/cold", |b| {
            b.iter(|| black_box(cold.verify_token(black_box(token))))
        });
        group.bench_function("palisade/cached", |b| {
            b.iter(|| black_box(cached.verify_token(black_box(token))))
        });
        group.bench_function("jsonwebtoken/decode", |b| {
            b.iter(|| {
                black_box(jsonwebtoken::decode::<serde_json::Value>(
                    black_box(token),
                    &case.decoding,
                    &validation,
                ))
            })
        });
        group.bench_function("jwt_authorizer/check_auth", |b| {
            b.iter(|| black_box(runtime.block_on(authorizer.check_auth(black_box(token)))))
        });
        group.bench_function("palisade/layer_cached", |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let ready = service
                        .ready()
                        .await
                        .unwrap_or_else(|e: Infallible| match e {});
                    black_box(ready.call(request()).await)
                })
            })
        });
        group.finish();
    }

    // What the two async contenders pay besides verification: an empty
    // `block_on`, and building the request and calling the bare service.
    let mut group = c.benchmark_group("jwt overhead");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30);
    group.bench_function("block_on (empty)", |b| {
        b.iter(|| runtime.block_on(async { black_box(0u8) }))
    });
    let mut bare = tower::service_fn(ok);
    let bearer = "Bearer a.b.c";
    group.bench_function("bare service", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let request = Request::get("/api/scans")
                    .header("authorization", bearer)
                    .body(Full::new(Bytes::new()))
                    .unwrap_or_default();
                let ready = bare
                    .ready()
                    .await
                    .unwrap_or_else(|e: Infallible| match e {});
                black_box(ready.call(request).await)
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench_auth);
criterion_main!(benches);
