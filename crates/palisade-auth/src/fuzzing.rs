//! Harnesses shared by the fuzz targets (`fuzz/`) and the tests that replay
//! their corpora, so both check exactly the same thing. Not part of the API.

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{AUTHORIZATION, COOKIE, SEC_WEBSOCKET_PROTOCOL, UPGRADE};
use http::{HeaderName, HeaderValue, Request, Uri};
use jsonwebtoken::EncodingKey;
use palisade_core::clock::ManualClock;
use palisade_core::principal::Principal;
use serde_json::{Map, Value};

use crate::failure::AuthFailure;
use crate::issuer::Issuer;
use crate::key::{Algorithm, VerifyingKey};
use crate::source::{Found, Origin, TokenSources};
use crate::verifier::{JwtVerifier, Verification};

/// The HS256 secret of the harness's only key. The seed corpus holds tokens
/// signed with it, so that mutations start from tokens that verify.
const SECRET: &[u8; 32] = b"palisade-fuzz-hs256-secret-32byt";
/// The trusted issuer.
const ISSUER: &str = "https://id.example.com";
/// The accepted audience.
const AUDIENCE: &str = "api";
/// The wall clock of the harness (2026-01-01T00:00:00Z): fixed, so a corpus
/// input gives the same result on every replay.
const NOW: u64 = 1_767_225_600;
const LEEWAY: u64 = 60;

struct Harness {
    /// The cache off: every token is parsed and checked.
    cold: JwtVerifier,
    /// The cache on: a token's second verification is a hit.
    cached: JwtVerifier,
    signing: EncodingKey,
    sources: TokenSources,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        if let Err(error) = crate::crypto::CryptoBackend::install_preferred() {
            panic!("fuzz harness: {error}");
        }
        let clock = ManualClock::starting_at_unix(Duration::from_secs(NOW));
        let verifier = |cache_capacity: usize| {
            let key = VerifyingKey::hmac(Algorithm::HS256, SECRET)?.with_kid("k1");
            JwtVerifier::builder()
                .issuer(Issuer::new(ISSUER).audience(AUDIENCE).key(key))
                .cache_capacity(cache_capacity)
                .clock(clock.clone())
                .build()
        };
        match (verifier(0), verifier(1024)) {
            (Ok(cold), Ok(cached)) => Harness {
                cold,
                cached,
                signing: EncodingKey::from_secret(SECRET),
                sources: TokenSources::default()
                    .cookie("session")
                    .websocket_protocol()
                    .websocket_query("access_token"),
            },
            (Err(error), _) | (_, Err(error)) => panic!("fuzz harness: {error}"),
        }
    })
}

/// Feeds arbitrary bytes to the token verifier and the token sources.
///
/// - The bytes (lossy UTF-8) as a token, and the same token re-signed with
///   the harness key (its first two parts kept, a valid signature put after
///   them) so that the checks after the signature are reached too. Every
///   verification must finish without waiting, a cached verifier must agree
///   with an uncached one, and an accepted token must meet every rule.
/// - The bytes as the value of `Authorization`, `Cookie`,
///   `Sec-WebSocket-Protocol` (on an upgrade) and the `access_token` query
///   parameter, one at a time and all together. A token found is verified as
///   above; a WebSocket credential, once stripped, must be gone.
pub fn jwt_token(data: &[u8]) {
    let harness = harness();
    let text = String::from_utf8_lossy(data);
    verify(harness, &text);
    if let Some(resigned) = resign(harness, &text) {
        verify(harness, &resigned);
    }
    for request in requests(data) {
        sources(harness, request);
    }
}

/// Whether the harness's verifier accepts `token`: the replay test checks
/// with it that the seed corpus reaches the checks after the signature.
pub fn jwt_token_accepted(token: &str) -> bool {
    done(harness().cold.verify_token(token)).is_ok()
}

fn done(verification: Verification) -> Result<Principal, AuthFailure> {
    match verification {
        Verification::Done(result) => result,
        Verification::Pending(_) => panic!("a static key and no revocation store waited"),
    }
}

fn verify(harness: &Harness, token: &str) {
    let cold = done(harness.cold.verify_token(token));
    let first = done(harness.cached.verify_token(token));
    let again = done(harness.cached.verify_token(token));
    assert_eq!(
        cold, first,
        "the cached verifier disagrees on a fresh token"
    );
    assert_eq!(cold, again, "a cache hit disagrees with a verification");
    if let Ok(principal) = cold {
        check_accepted(token, &principal);
    }
}

/// The first two parts of `text` (or all of it), signed with the harness key.
fn resign(harness: &Harness, text: &str) -> Option<String> {
    let message = match text.rsplit_once('.') {
        Some((message, _)) if message.contains('.') => message,
        _ => text,
    };
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &harness.signing, Algorithm::HS256).ok()?;
    Some(format!("{message}.{signature}"))
}

/// A part of an accepted token, which must be a UTF-8 JSON object
/// (RFC 7515 section 5.2, RFC 7519 section 7.2).
fn json_part(name: &str, part: &str) -> Map<String, Value> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .unwrap_or_else(|error| panic!("an accepted token's {name} is not base64url: {error}"));
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => map,
        other => panic!("an accepted token's {name} is not a UTF-8 JSON object: {other:?}"),
    }
}

/// What every accepted token must be, read again independently.
fn check_accepted(token: &str, principal: &Principal) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(
        parts.len(),
        3,
        "an accepted token has {} parts",
        parts.len()
    );
    let header = json_part("header", parts[0]);
    assert_eq!(header.get("alg").and_then(Value::as_str), Some("HS256"));
    assert!(header.get("crit").is_none(), "a `crit` header was accepted");
    let claims = json_part("claims", parts[1]);
    assert_eq!(claims.get("iss").and_then(Value::as_str), Some(ISSUER));
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => aud == AUDIENCE,
        Some(Value::Array(auds)) => auds.iter().any(|aud| aud.as_str() == Some(AUDIENCE)),
        _ => false,
    };
    assert!(audience_ok, "accepted with aud {:?}", claims.get("aud"));
    let date = |name: &str| claims.get(name).and_then(Value::as_f64);
    let exp = date("exp").unwrap_or_else(|| panic!("accepted without a numeric exp"));
    assert!(exp + LEEWAY as f64 > NOW as f64, "accepted after exp {exp}");
    // Fractions of a second are dropped before comparing.
    if let Some(nbf) = date("nbf") {
        assert!(
            nbf.floor() <= (NOW + LEEWAY) as f64,
            "accepted before nbf {nbf}"
        );
    }
    if let Some(iat) = date("iat") {
        assert!(
            iat.floor() <= (NOW + LEEWAY) as f64,
            "accepted with iat {iat} ahead"
        );
    }
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or_default();
    assert!(!subject.is_empty(), "accepted without a subject");
    assert_eq!(principal.subject(), subject);
}

/// The bytes in each place a token is read from, then in all of them.
fn requests(data: &[u8]) -> Vec<Request<()>> {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return Vec::new();
    };
    let query: Option<Uri> = std::str::from_utf8(data)
        .ok()
        .and_then(|text| Uri::try_from(format!("/ws?{text}")).ok());
    let upgrade = (UPGRADE, HeaderValue::from_static("websocket"));
    let build = |headers: &[(HeaderName, HeaderValue)], uri: Option<&Uri>| {
        let mut request = Request::new(());
        if let Some(uri) = uri {
            *request.uri_mut() = uri.clone();
        }
        for (name, value) in headers {
            request.headers_mut().append(name, value.clone());
        }
        request
    };
    let mut requests = vec![
        build(&[(AUTHORIZATION, value.clone())], None),
        build(&[(COOKIE, value.clone())], None),
        build(
            &[upgrade.clone(), (SEC_WEBSOCKET_PROTOCOL, value.clone())],
            None,
        ),
    ];
    if let Some(uri) = &query {
        requests.push(build(std::slice::from_ref(&upgrade), Some(uri)));
    }
    requests.push(build(
        &[
            (AUTHORIZATION, value.clone()),
            (COOKIE, value.clone()),
            upgrade,
            (SEC_WEBSOCKET_PROTOCOL, value),
        ],
        query.as_ref(),
    ));
    requests
}

fn sources(harness: &Harness, mut request: Request<()>) {
    let (token, origin) = match harness.sources.find(&request) {
        Found::Token(token, origin) => (token.into_owned(), origin),
        Found::Nothing | Found::Refused(_) => return,
    };
    if origin == Origin::Header || origin == Origin::Cookie {
        assert!(!token.is_empty(), "an empty {origin:?} token was found");
    }
    verify(harness, &token);
    if matches!(origin, Origin::Protocol | Origin::Query) {
        harness.sources.strip(&mut request, origin);
        if let Found::Token(left, again) = harness.sources.find(&request) {
            assert!(
                again != origin && left != token,
                "the {origin:?} credential survived stripping"
            );
        }
    }
}

/// The prefix of the API key harness.
const KEY_PREFIX: &str = "pal_fuzz";
/// The random part of the harness's only valid key (the seed corpus holds
/// that key, so mutations start from one that verifies).
const KEY_RANDOM: [u8; 16] = *b"palisade-fuzzkey";

fn api_keys() -> &'static (crate::api_key::ApiKeys, String) {
    static KEYS: OnceLock<(crate::api_key::ApiKeys, String)> = OnceLock::new();
    KEYS.get_or_init(|| {
        use crate::api_key::{ApiKeyRecord, ApiKeys, MemoryApiKeyStore};
        let key = crate::api_key::format_for_fuzzing(KEY_PREFIX, KEY_RANDOM);
        let built = ApiKeys::builder(KEY_PREFIX, MemoryApiKeyStore::new()).build();
        let keys = match built {
            Ok(keys) => keys,
            Err(error) => panic!("fuzz harness: {error}"),
        };
        let record = ApiKeyRecord {
            id: "key_fuzz".into(),
            hash: crate::api_key::hex_for_fuzzing(&keys.hasher().hash(&key)),
            display_prefix: "pal_fuzz_xxxx".into(),
            last4: "xxxx".into(),
            owner: "fuzz-bot".into(),
            tenant: None,
            roles: vec!["viewer".into()],
            scopes: Vec::new(),
            created_at: 0,
            expires_at: None,
            tier: None,
            revoked: false,
        };
        let store = MemoryApiKeyStore::from_records([record]);
        let keys = match ApiKeys::builder(KEY_PREFIX, store).build() {
            Ok(keys) => keys,
            Err(error) => panic!("fuzz harness: {error}"),
        };
        (keys, key)
    })
}

/// Fuzzes API key parsing and verification, and where keys are read from
/// (`X-API-Key`, `Authorization: ApiKey`, a query parameter): never a panic;
/// only the one issued key verifies; a key the format check refuses never
/// verifies.
pub fn api_key_credentials(data: &[u8]) {
    use crate::api_key::{ApiKeySources, KeyCheck, layer::FoundKey};
    let (keys, valid) = api_keys();
    let check = |key: &str| match keys.check(key) {
        KeyCheck::Done(result) => result,
        KeyCheck::Pending(_) => panic!("the memory store answers at once"),
    };
    if let Ok(text) = std::str::from_utf8(data) {
        let result = check(text);
        assert_eq!(result.is_ok(), text == valid.as_str(), "{text:?}");
        if !keys.is_well_formed(text) {
            assert_eq!(result, Err(AuthFailure::Malformed));
        }
    }
    // The same bytes as header values and as a query.
    let sources = ApiKeySources::default().query("api_key");
    let mut builder = Request::get("/");
    if let Ok(value) = HeaderValue::from_bytes(data) {
        builder = builder.header(HeaderName::from_static("x-api-key"), value.clone());
        let mut scheme = b"ApiKey ".to_vec();
        scheme.extend_from_slice(data);
        if let Ok(authorization) = HeaderValue::from_bytes(&scheme) {
            builder = builder.header(AUTHORIZATION, authorization);
        }
    }
    let encoded: String =
        percent_encoding::percent_encode(data, percent_encoding::NON_ALPHANUMERIC).to_string();
    if let Ok(uri) = format!("/?api_key={encoded}").parse::<Uri>() {
        builder = builder.uri(uri);
    }
    let Ok(request) = builder.body(()) else {
        return;
    };
    match sources.find(&request) {
        FoundKey::Key(key, _) => {
            let _ = check(&key);
        }
        FoundKey::Nothing | FoundKey::Refused(_) => {}
    }
}

/// Whether `data` is the harness's valid API key (the seed corpus must hold
/// it, so that mutations start from a key that verifies).
pub fn api_key_is_valid(data: &[u8]) -> bool {
    let (keys, valid) = api_keys();
    std::str::from_utf8(data).is_ok_and(|text| {
        text == valid.as_str() && matches!(keys.check(text), crate::api_key::KeyCheck::Done(Ok(_)))
    })
}
