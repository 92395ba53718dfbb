//! The JWT layer over a real axum server: every forged or broken token of
//! the threat list is refused with the same 401, valid ones reach the
//! handler with their principal, and the audit event says what failed.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::{Extension, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use http::StatusCode;
use palisade_auth::issue::SigningKey;
use palisade_auth::key::Algorithm;
use palisade_auth::revocation::{MemoryRevocationStore, RevocationStore};
use palisade_auth::{AuthFailure, JwtAuthLayer, JwtVerifier};
use palisade_core::clock::ManualClock;
use palisade_core::principal::Principal;
use serde_json::json;

async fn whoami(Extension(principal): Extension<Principal>) -> String {
    format!("{}|{}", principal.subject(), principal.roles().join(","))
}

struct Fixture {
    clock: ManualClock,
    issuer: palisade_auth::issue::TokenIssuer,
    revocation: MemoryRevocationStore,
    verifier: JwtVerifier,
}

fn fixture() -> Fixture {
    init();
    let clock = clock_now();
    let issuer = issuer_with(rsa_key("rsa-1"), ISSUER, AUDIENCE, &clock);
    let revocation = MemoryRevocationStore::new().with_clock(Arc::new(clock.clone()));
    let verifier = JwtVerifier::builder()
        .issuer(issuer.verifying_issuer())
        .revocation(revocation.clone())
        .clock(clock.clone())
        .build()
        .unwrap();
    Fixture {
        clock,
        issuer,
        revocation,
        verifier,
    }
}

fn encode_part(value: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

/// A token signed by `key` with this header and these claims, whatever they say.
fn forge(
    header: &jsonwebtoken::Header,
    claims: &serde_json::Value,
    key: &jsonwebtoken::EncodingKey,
) -> String {
    jsonwebtoken::encode(header, claims, key).unwrap()
}

fn good_claims(clock: &ManualClock) -> serde_json::Value {
    let now = palisade_core::clock::Clock::unix_time(clock).as_secs();
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "u1", "exp": now + 300, "iat": now, "jti": "j-1"})
}

fn rsa_header() -> jsonwebtoken::Header {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("rsa-1".into());
    header.typ = Some("at+jwt".into());
    header
}

#[tokio::test]
async fn every_forged_or_broken_token_is_refused_with_the_same_401() {
    let f = fixture();
    let app = Router::new().route("/me", get(whoami)).route_layer(
        JwtAuthLayer::builder()
            .verifier(f.verifier.clone())
            .realm("scans")
            .build()
            .unwrap(),
    );
    let addr = spawn_axum(app).await;

    let valid = f.issuer.mint("u1").roles(["viewer"]).sign().unwrap().token;
    let ok = http_get(addr, "/me", &[("authorization", &bearer(&valid))]).await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.body(), "u1|viewer");

    let rsa_private = jsonwebtoken::EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap();
    let now = palisade_core::clock::Clock::unix_time(&f.clock).as_secs();
    let mut cases: Vec<(&str, String)> = Vec::new();

    // alg "none", no signature.
    let none_header = json!({"alg": "none", "typ": "at+jwt", "kid": "rsa-1"});
    cases.push((
        "alg none",
        format!(
            "{}.{}.",
            encode_part(&none_header),
            encode_part(&good_claims(&f.clock))
        ),
    ));
    cases.push((
        "alg none with junk signature",
        format!(
            "{}.{}.c2ln",
            encode_part(&none_header),
            encode_part(&good_claims(&f.clock))
        ),
    ));
    // HS256 "signed" with the RSA public key as the HMAC secret.
    let mut hs_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs_header.kid = Some("rsa-1".into());
    hs_header.typ = Some("at+jwt".into());
    cases.push((
        "HS256 with the RSA public key as secret",
        forge(
            &hs_header,
            &good_claims(&f.clock),
            &jsonwebtoken::EncodingKey::from_secret(RSA_PUBLIC),
        ),
    ));
    // Tampered payload: a valid signature over other claims.
    let parts: Vec<&str> = valid.split('.').collect();
    let mut admin = good_claims(&f.clock);
    admin["roles"] = json!(["admin"]);
    cases.push((
        "tampered payload",
        format!("{}.{}.{}", parts[0], encode_part(&admin), parts[2]),
    ));
    cases.push(("stripped signature", format!("{}.{}.", parts[0], parts[1])));
    cases.push(("signature only cut", format!("{}.{}", parts[0], parts[1])));
    // Signed by another RSA key under our kid.
    cases.push((
        "another key under our kid",
        forge(
            &rsa_header(),
            &good_claims(&f.clock),
            &jsonwebtoken::EncodingKey::from_rsa_pem(RSA_OTHER_PRIVATE).unwrap(),
        ),
    ));
    let mut expired = good_claims(&f.clock);
    expired["exp"] = json!(now - 61);
    cases.push(("expired", forge(&rsa_header(), &expired, &rsa_private)));
    let mut early = good_claims(&f.clock);
    early["nbf"] = json!(now + 3600);
    cases.push((
        "nbf in the future",
        forge(&rsa_header(), &early, &rsa_private),
    ));
    let mut wrong_iss = good_claims(&f.clock);
    wrong_iss["iss"] = json!("https://evil.test");
    cases.push(("wrong iss", forge(&rsa_header(), &wrong_iss, &rsa_private)));
    let mut wrong_aud = good_claims(&f.clock);
    wrong_aud["aud"] = json!("billing-api");
    cases.push(("wrong aud", forge(&rsa_header(), &wrong_aud, &rsa_private)));
    let mut no_exp = good_claims(&f.clock);
    no_exp.as_object_mut().unwrap().remove("exp");
    cases.push(("missing exp", forge(&rsa_header(), &no_exp, &rsa_private)));
    let mut no_typ = rsa_header();
    no_typ.typ = Some("JWT".into());
    cases.push((
        "wrong typ",
        forge(&no_typ, &good_claims(&f.clock), &rsa_private),
    ));
    let mut unknown_kid = rsa_header();
    unknown_kid.kid = Some("rsa-9".into());
    cases.push((
        "unknown kid",
        forge(&unknown_kid, &good_claims(&f.clock), &rsa_private),
    ));
    let mut long_kid = rsa_header();
    long_kid.kid = Some("k".repeat(10 * 1024));
    cases.push((
        "10 KB kid",
        forge(&long_kid, &good_claims(&f.clock), &rsa_private),
    ));
    let mut huge = good_claims(&f.clock);
    huge["pad"] = json!("x".repeat(100 * 1024));
    cases.push(("100 KB token", forge(&rsa_header(), &huge, &rsa_private)));
    cases.push(("five parts (JWE shape)", format!("{valid}.a.b")));
    cases.push(("not base64", "!!!.@@@.###".to_owned()));
    cases.push(("garbage", "hello".to_owned()));

    let reference = http_get(addr, "/me", &[("authorization", &bearer(&cases[0].1))]).await;
    for (name, token) in &cases {
        let response = http_get(addr, "/me", &[("authorization", &bearer(token))]).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{name}");
        assert_eq!(
            response.headers()["www-authenticate"],
            r#"Bearer realm="scans", error="invalid_token", error_description="The access token is invalid.""#,
            "{name}"
        );
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{name}"
        );
        // The body never says which check failed.
        assert_eq!(response.body(), reference.body(), "{name}");
    }
    let body: serde_json::Value = serde_json::from_slice(reference.body()).unwrap();
    assert_eq!(body["status"], 401);
    assert_eq!(body["detail"], "The access token is invalid.");

    // Requests that are not even one readable credential.
    let none = http_get(addr, "/me", &[]).await;
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        none.headers()["www-authenticate"],
        r#"Bearer realm="scans""#
    );
    let two = http_get(
        addr,
        "/me",
        &[
            ("authorization", &bearer(&valid)),
            ("authorization", &bearer(&valid)),
        ],
    )
    .await;
    // RFC 6750 §3.1: a malformed request is 400, with the challenge.
    assert_eq!(two.status(), StatusCode::BAD_REQUEST);
    assert!(
        two.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_request")
    );
    let bytes = http_get(addr, "/me", &[("authorization", b"Bearer \xc3\x28\xff")]).await;
    assert_eq!(bytes.status(), StatusCode::BAD_REQUEST);
    assert!(
        bytes.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_request")
    );
}

#[tokio::test]
async fn revoked_jti_and_signed_out_subject_are_refused_even_from_the_cache() {
    let f = fixture();
    let app = Router::new()
        .route("/me", get(whoami))
        .layer(JwtAuthLayer::new(f.verifier.clone()));
    let addr = spawn_axum(app).await;
    let first = f.issuer.mint("u1").sign().unwrap();
    let second = f.issuer.mint("u2").sign().unwrap();
    for token in [&first.token, &first.token, &second.token] {
        let ok = http_get(addr, "/me", &[("authorization", &bearer(token))]).await;
        assert_eq!(ok.status(), StatusCode::OK);
    }
    assert!(
        f.verifier.stats().cache_hits >= 1,
        "{:?}",
        f.verifier.stats()
    );

    f.revocation
        .revoke_token(&first.jti, Duration::from_secs(600))
        .await
        .unwrap();
    let revoked = http_get(addr, "/me", &[("authorization", &bearer(&first.token))]).await;
    assert_eq!(revoked.status(), StatusCode::UNAUTHORIZED);

    let issued_at = palisade_core::clock::Clock::unix_time(&f.clock).as_secs();
    f.revocation
        .revoke_subject("u2", issued_at + 1, Duration::from_secs(3600))
        .await
        .unwrap();
    let signed_out = http_get(addr, "/me", &[("authorization", &bearer(&second.token))]).await;
    assert_eq!(signed_out.status(), StatusCode::UNAUTHORIZED);
    // A token minted after the sign-out works.
    f.clock.advance(Duration::from_secs(2));
    let fresh = f.issuer.mint("u2").sign().unwrap();
    let ok = http_get(addr, "/me", &[("authorization", &bearer(&fresh.token))]).await;
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test]
async fn cached_tokens_expire_with_their_exp() {
    let f = fixture();
    let token = f
        .issuer
        .mint("u1")
        .ttl(Duration::from_secs(120))
        .sign()
        .unwrap()
        .token;
    assert!(f.verifier.verify(&token).await.is_ok());
    assert!(f.verifier.verify(&token).await.is_ok());
    let checks = f.verifier.stats().signature_checks;
    assert_eq!(checks, 1, "the second verification came from the cache");
    // Past exp but inside the leeway: verified again, never from the cache.
    f.clock.advance(Duration::from_secs(150));
    assert!(f.verifier.verify(&token).await.is_ok());
    assert_eq!(f.verifier.stats().signature_checks, 2);
    f.clock.advance(Duration::from_secs(60));
    assert_eq!(f.verifier.verify(&token).await, Err(AuthFailure::Expired));
}

#[tokio::test]
async fn each_algorithm_verifies_its_own_tokens_and_no_other() {
    init();
    let clock = clock_now();
    let mut keys = vec![rsa_key("rs")];
    for (alg, kid) in [
        (Algorithm::HS256, "hs"),
        (Algorithm::ES256, "es256"),
        (Algorithm::ES384, "es384"),
        (Algorithm::EdDSA, "ed"),
    ] {
        keys.push(SigningKey::generate(alg).unwrap().with_kid(kid));
    }
    for alg in [Algorithm::PS256, Algorithm::RS512] {
        keys.push(
            SigningKey::from_pem(alg, RSA_PRIVATE)
                .unwrap()
                .with_kid(format!("{alg:?}")),
        );
    }
    for key in keys {
        let issuer = issuer_with(key.clone(), ISSUER, AUDIENCE, &clock);
        let verifier = JwtVerifier::builder()
            .issuer(issuer.verifying_issuer())
            .clock(clock.clone())
            .build()
            .unwrap();
        let token = issuer.mint("u").sign().unwrap().token;
        let principal = verifier
            .verify(&token)
            .await
            .unwrap_or_else(|e| panic!("{:?}: {e:?}", key.algorithm()));
        assert_eq!(principal.subject(), "u");
        // The same claims under another alg in the header: refused.
        let parts: Vec<&str> = token.split('.').collect();
        let mut header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        header["alg"] = json!(if key.algorithm() == Algorithm::HS256 {
            "HS384"
        } else {
            "HS256"
        });
        let swapped = format!("{}.{}.{}", encode_part(&header), parts[1], parts[2]);
        assert!(
            verifier.verify(&swapped).await.is_err(),
            "{:?}",
            key.algorithm()
        );
    }
}

#[tokio::test]
async fn optional_authentication_lets_anonymous_through_but_not_bad_tokens() {
    let f = fixture();
    let app = Router::new().route("/me", get(whoami)).layer(
        JwtAuthLayer::builder()
            .verifier(f.verifier.clone())
            .optional()
            .build()
            .unwrap(),
    );
    let addr = spawn_axum(app).await;
    let anonymous = http_get(addr, "/me", &[]).await;
    assert_eq!(anonymous.status(), StatusCode::OK);
    assert_eq!(anonymous.body(), "anonymous|");
    let bad = http_get(addr, "/me", &[("authorization", b"Bearer a.b.c")]).await;
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn cookie_tokens_and_typed_claims_reach_handlers() {
    #[derive(serde::Deserialize)]
    struct Custom {
        plan: String,
    }
    async fn plan(
        palisade_auth::extract::Claims(custom): palisade_auth::extract::Claims<Custom>,
    ) -> String {
        custom.plan
    }
    let f = fixture();
    let app = Router::new().route("/plan", get(plan)).layer(
        JwtAuthLayer::builder()
            .verifier(f.verifier.clone())
            .sources(palisade_auth::source::TokenSources::default().cookie("session"))
            .build()
            .unwrap(),
    );
    let addr = spawn_axum(app).await;
    let token = f
        .issuer
        .mint("u1")
        .claim("plan", "pro")
        .sign()
        .unwrap()
        .token;
    let cookie = format!("theme=dark; session={token}");
    let response = http_get(addr, "/plan", &[("cookie", cookie.as_bytes())]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.body(), "pro");
    let both = http_get(
        addr,
        "/plan",
        &[
            ("cookie", cookie.as_bytes()),
            ("authorization", &bearer(&token)),
        ],
    )
    .await;
    assert_eq!(both.status(), StatusCode::BAD_REQUEST);
    // A token without the claim the handler needs.
    let plain = f.issuer.mint("u1").sign().unwrap().token;
    let response = http_get(
        addr,
        "/plan",
        &[("cookie", format!("session={plain}").as_bytes())],
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_cached_token_is_refused_once_it_passes_max_age() {
    init();
    let clock = clock_now();
    let issuer = issuer_with(rsa_key("k"), ISSUER, AUDIENCE, &clock);
    let verifier = JwtVerifier::builder()
        .issuer(issuer.verifying_issuer().max_age(Duration::from_secs(300)))
        .clock(clock.clone())
        .build()
        .unwrap();
    let token = issuer
        .mint("u")
        .ttl(Duration::from_secs(3600))
        .sign()
        .unwrap()
        .token;
    assert!(verifier.verify(&token).await.is_ok());
    assert!(verifier.verify(&token).await.is_ok());
    assert_eq!(verifier.stats().cache_hits, 1);
    clock.advance(Duration::from_secs(300 + 61));
    assert_eq!(verifier.verify(&token).await, Err(AuthFailure::TooOld));
}

#[tokio::test]
async fn a_prebuilt_verifier_with_verifier_options_is_refused_and_optional_keeps_a_principal() {
    let f = fixture();
    let mixed = JwtAuthLayer::builder()
        .verifier(f.verifier.clone())
        .revocation(MemoryRevocationStore::new())
        .build();
    assert!(
        mixed.is_err(),
        "the revocation store would be silently dropped"
    );

    // An earlier layer authenticated the caller: optional JWT leaves it.
    let earlier = Principal::builder("svc")
        .method(palisade_core::principal::AuthMethod::ApiKey { id: "k1".into() })
        .build();
    let app = Router::new()
        .route("/me", get(whoami))
        .layer(
            JwtAuthLayer::builder()
                .verifier(f.verifier.clone())
                .optional()
                .build()
                .unwrap(),
        )
        .layer(axum::Extension(earlier));
    let addr = spawn_axum(app).await;
    let response = http_get(addr, "/me", &[]).await;
    assert_eq!(response.body(), "svc|");
}
