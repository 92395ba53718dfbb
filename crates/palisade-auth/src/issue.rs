//! Minting tokens: access tokens signed with any supported algorithm, the
//! JWKS of our public keys, and a safe cookie for browser dashboards.
//!
//! ```
//! # palisade_auth::crypto::CryptoBackend::install_preferred()?;
//! use palisade_auth::issue::{SigningKey, TokenIssuer};
//! use palisade_auth::key::Algorithm;
//! use palisade_auth::JwtVerifier;
//!
//! let issuer = TokenIssuer::builder("https://auth.example.com")
//!     .audience("scans-api")
//!     .signing_key(SigningKey::hmac(Algorithm::HS256, &[3u8; 32])?.with_kid("k1"))
//!     .build()?;
//! let token = issuer.mint("user-42").roles(["operator"]).sign()?;
//! let verifier = JwtVerifier::builder().issuer(issuer.verifying_issuer()).build()?;
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let principal = verifier.verify(&token.token).await.unwrap();
//! assert_eq!(principal.subject(), "user-42");
//! assert!(principal.has_role("operator"));
//! # });
//! # Ok::<(), palisade_core::ConfigError>(())
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderValue;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{AlgorithmFamily, EncodingKey, Header};
use palisade_core::ConfigError;
use palisade_core::clock::{Clock, SystemClock};
use serde_json::{Map, Value};

use crate::issuer::Issuer;
use crate::key::{Algorithm, VerifyingKey};

/// A private key (or HMAC secret) bound to one algorithm and a `kid`.
#[derive(Clone)]
pub struct SigningKey {
    kid: Arc<str>,
    algorithm: Algorithm,
    encoding: EncodingKey,
    verifying: VerifyingKey,
    public_jwk: Option<Jwk>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

fn key_error(error: jsonwebtoken::errors::Error) -> ConfigError {
    ConfigError::invalid("signing_key", format!("unusable key: {error}"))
}

/// 128 random bits, base64url: token ids, key ids, secrets.
pub(crate) fn random_id() -> Result<String, ConfigError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|_| ConfigError::invalid("random", "the OS random source failed"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

impl SigningKey {
    /// An HMAC secret (at least the hash's output size).
    pub fn hmac(algorithm: Algorithm, secret: &[u8]) -> Result<Self, ConfigError> {
        let verifying = VerifyingKey::hmac(algorithm, secret)?;
        crate::crypto::ensure_ready()?;
        Ok(Self {
            kid: random_id()?.into(),
            algorithm,
            encoding: EncodingKey::from_secret(secret),
            verifying,
            public_jwk: None,
        })
    }

    /// A private key in PEM (PKCS#8, or PKCS#1 for RSA): RSA for RS*/PS*, EC
    /// for ES*, Ed25519 for EdDSA.
    pub fn from_pem(algorithm: Algorithm, pem: &[u8]) -> Result<Self, ConfigError> {
        crate::crypto::ensure_ready()?;
        let encoding = match algorithm.family() {
            AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(pem),
            AlgorithmFamily::Ec => EncodingKey::from_ec_pem(pem),
            AlgorithmFamily::Ed => EncodingKey::from_ed_pem(pem),
            AlgorithmFamily::Hmac => {
                return Err(ConfigError::invalid(
                    "signing_key",
                    "use SigningKey::hmac for HMAC secrets",
                ));
            }
        }
        .map_err(key_error)?;
        Self::asymmetric(algorithm, encoding)
    }

    fn asymmetric(algorithm: Algorithm, encoding: EncodingKey) -> Result<Self, ConfigError> {
        let kid: Arc<str> = random_id()?.into();
        let mut jwk = Jwk::from_encoding_key(&encoding, algorithm).map_err(key_error)?;
        jwk.common.key_id = Some(kid.to_string());
        jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
        let verifying = VerifyingKey::from_jwk(&jwk)?.with_kid(kid.clone());
        Ok(Self {
            kid,
            algorithm,
            encoding,
            verifying,
            public_jwk: Some(jwk),
        })
    }

    /// A fresh key: a random secret for HS*, a new key pair for ES256,
    /// ES384 and EdDSA. For development issuers and tests; RSA keys are
    /// loaded with [`from_pem`](Self::from_pem).
    #[cfg(feature = "aws-lc-rs")]
    pub fn generate(algorithm: Algorithm) -> Result<Self, ConfigError> {
        use aws_lc_rs::signature::{
            ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
            Ed25519KeyPair,
        };
        crate::crypto::ensure_ready()?;
        let failed = |_| ConfigError::invalid("signing_key", "key generation failed");
        let rng = aws_lc_rs::rand::SystemRandom::new();
        match algorithm {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                let mut secret = [0u8; 64];
                aws_lc_rs::rand::SecureRandom::fill(&rng, &mut secret).map_err(failed)?;
                Self::hmac(algorithm, &secret)
            }
            Algorithm::ES256 | Algorithm::ES384 => {
                let signing = if algorithm == Algorithm::ES256 {
                    &ECDSA_P256_SHA256_FIXED_SIGNING
                } else {
                    &ECDSA_P384_SHA384_FIXED_SIGNING
                };
                let pkcs8 = EcdsaKeyPair::generate_pkcs8(signing, &rng).map_err(failed)?;
                Self::asymmetric(algorithm, EncodingKey::from_ec_der(pkcs8.as_ref()))
            }
            Algorithm::EdDSA => {
                let pair = Ed25519KeyPair::generate().map_err(failed)?;
                let pkcs8 = pair.to_pkcs8v1().map_err(failed)?;
                Self::asymmetric(algorithm, EncodingKey::from_ed_der(pkcs8.as_ref()))
            }
            other => Err(ConfigError::invalid(
                "signing_key",
                format!("{other:?} keys are loaded from PEM, not generated"),
            )),
        }
    }

    /// Sets the key id (by default 128 random bits).
    pub fn with_kid(mut self, kid: impl Into<Arc<str>>) -> Self {
        self.kid = kid.into();
        self.verifying = self.verifying.with_kid(self.kid.clone());
        if let Some(jwk) = &mut self.public_jwk {
            jwk.common.key_id = Some(self.kid.to_string());
        }
        self
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The key that verifies this key's signatures.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.verifying.clone()
    }

    /// The public JWK (none for HMAC secrets).
    pub fn public_jwk(&self) -> Option<&Jwk> {
        self.public_jwk.as_ref()
    }
}

/// A minted access token.
#[derive(Clone)]
pub struct IssuedToken {
    /// The compact JWT.
    pub token: String,
    /// Its `jti`.
    pub jti: String,
    /// Its `exp`, in seconds since the epoch.
    pub expires_at: u64,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("jti", &self.jti)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Mints access tokens for one issuer name.
#[derive(Clone)]
pub struct TokenIssuer {
    inner: Arc<IssuerInner>,
}

struct IssuerInner {
    issuer: String,
    audiences: Vec<String>,
    current: SigningKey,
    retired: Vec<SigningKey>,
    ttl: Duration,
    typ: Option<String>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("issuer", &self.inner.issuer)
            .field("audiences", &self.inner.audiences)
            .field("key", &self.inner.current)
            .field("ttl", &self.inner.ttl)
            .finish_non_exhaustive()
    }
}

/// Builds a [`TokenIssuer`].
pub struct TokenIssuerBuilder {
    issuer: String,
    audiences: Vec<String>,
    current: Option<SigningKey>,
    retired: Vec<SigningKey>,
    ttl: Duration,
    typ: Option<String>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for TokenIssuerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenIssuerBuilder")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl TokenIssuerBuilder {
    /// Adds an audience written into every token.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// The key that signs new tokens.
    pub fn signing_key(mut self, key: SigningKey) -> Self {
        self.current = Some(key);
        self
    }

    /// A previous key: no longer signs, still published in the JWKS until
    /// its tokens have expired.
    pub fn retired_key(mut self, key: SigningKey) -> Self {
        self.retired.push(key);
        self
    }

    /// Access token lifetime (default 15 minutes).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The header `typ` (default `at+jwt`, RFC 9068).
    pub fn token_type(mut self, typ: impl Into<String>) -> Self {
        self.typ = Some(typ.into());
        self
    }

    /// The clock (tests).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Checks the configuration.
    pub fn build(self) -> Result<TokenIssuer, ConfigError> {
        crate::crypto::ensure_ready()?;
        let current = self
            .current
            .ok_or_else(|| ConfigError::invalid("signing_key", "no signing key"))?;
        if self.issuer.is_empty() {
            return Err(ConfigError::invalid("issuer", "the issuer name is empty"));
        }
        if self.audiences.is_empty() {
            return Err(ConfigError::invalid("audience", "tokens need an audience"));
        }
        if self.ttl.is_zero() {
            return Err(ConfigError::invalid("ttl", "must be positive"));
        }
        Ok(TokenIssuer {
            inner: Arc::new(IssuerInner {
                issuer: self.issuer,
                audiences: self.audiences,
                current,
                retired: self.retired,
                ttl: self.ttl,
                typ: self.typ,
                clock: self.clock,
            }),
        })
    }
}

/// One token being minted; finish with [`sign`](Self::sign).
#[derive(Debug)]
#[must_use = "a token is minted by sign()"]
pub struct Mint<'a> {
    issuer: &'a TokenIssuer,
    claims: Map<String, Value>,
    ttl: Duration,
}

impl Mint<'_> {
    /// Sets the `roles` claim.
    pub fn roles<I: IntoIterator<Item = T>, T: Into<String>>(mut self, roles: I) -> Self {
        let roles: Vec<Value> = roles.into_iter().map(|r| Value::String(r.into())).collect();
        self.claims.insert("roles".into(), Value::Array(roles));
        self
    }

    /// Sets the space-delimited `scope` claim.
    pub fn scopes<I: IntoIterator<Item = T>, T: Into<String>>(mut self, scopes: I) -> Self {
        let scopes: Vec<String> = scopes.into_iter().map(Into::into).collect();
        self.claims
            .insert("scope".into(), Value::String(scopes.join(" ")));
        self
    }

    /// Sets the `tenant_id` claim.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.claims
            .insert("tenant_id".into(), Value::String(tenant.into()));
        self
    }

    /// Sets any other claim. Registered claims (`iss`, `sub`, `aud`, `exp`,
    /// `iat`, `jti`) are the issuer's and cannot be overridden here.
    pub fn claim(mut self, name: &str, value: impl Into<Value>) -> Self {
        if !matches!(name, "iss" | "sub" | "aud" | "exp" | "iat" | "nbf" | "jti") {
            self.claims.insert(name.to_owned(), value.into());
        }
        self
    }

    /// A lifetime other than the issuer's default.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Signs the token.
    pub fn sign(self) -> Result<IssuedToken, ConfigError> {
        let inner = &*self.issuer.inner;
        let now = inner.clock.unix_time().as_secs();
        let expires_at = now.saturating_add(self.ttl.as_secs().max(1));
        let jti = random_id()?;
        let mut claims = self.claims;
        claims.insert("iss".into(), Value::String(inner.issuer.clone()));
        let aud = match inner.audiences.as_slice() {
            [one] => Value::String(one.clone()),
            many => Value::Array(many.iter().cloned().map(Value::String).collect()),
        };
        claims.insert("aud".into(), aud);
        claims.insert("iat".into(), now.into());
        claims.insert("nbf".into(), now.into());
        claims.insert("exp".into(), expires_at.into());
        claims.insert("jti".into(), Value::String(jti.clone()));
        let mut header = Header::new(inner.current.algorithm);
        header.kid = Some(inner.current.kid.to_string());
        header.typ = Some(inner.typ.clone().unwrap_or_else(|| "at+jwt".to_owned()));
        let token = jsonwebtoken::encode(&header, &claims, &inner.current.encoding)
            .map_err(|e| ConfigError::invalid("signing_key", format!("signing failed: {e}")))?;
        Ok(IssuedToken {
            token,
            jti,
            expires_at,
        })
    }
}

impl TokenIssuer {
    /// A builder for tokens with `iss` = `issuer`.
    pub fn builder(issuer: impl Into<String>) -> TokenIssuerBuilder {
        TokenIssuerBuilder {
            issuer: issuer.into(),
            audiences: Vec::new(),
            current: None,
            retired: Vec::new(),
            ttl: Duration::from_secs(15 * 60),
            typ: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// Starts a token for `subject`.
    pub fn mint(&self, subject: impl Into<String>) -> Mint<'_> {
        let mut claims = Map::new();
        claims.insert("sub".into(), Value::String(subject.into()));
        Mint {
            issuer: self,
            claims,
            ttl: self.inner.ttl,
        }
    }

    /// The issuer name.
    pub fn name(&self) -> &str {
        &self.inner.issuer
    }

    /// An [`Issuer`] that verifies this issuer's tokens: its name, its
    /// audiences, its current and retired keys, and `typ` required.
    pub fn verifying_issuer(&self) -> Issuer {
        let inner = &*self.inner;
        let mut issuer = Issuer::new(inner.issuer.clone())
            .required_type(inner.typ.clone().unwrap_or_else(|| "at+jwt".to_owned()));
        for audience in &inner.audiences {
            issuer = issuer.audience(audience.clone());
        }
        for key in std::iter::once(&inner.current).chain(&inner.retired) {
            issuer = issuer.key(key.verifying_key());
        }
        issuer
    }

    /// The JWKS document of the public keys (current and retired).
    pub fn jwks(&self) -> JwkSet {
        let inner = &*self.inner;
        JwkSet {
            keys: std::iter::once(&inner.current)
                .chain(&inner.retired)
                .filter_map(|key| key.public_jwk.clone())
                .collect(),
        }
    }

    /// The JWKS document as a response: JSON, cacheable for five minutes.
    pub fn jwks_response(&self) -> http::Response<bytes::Bytes> {
        let body = serde_json::to_vec(&self.jwks()).unwrap_or_else(|_| b"{\"keys\":[]}".to_vec());
        let mut response = http::Response::new(bytes::Bytes::from(body));
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        response
    }
}

/// A `Set-Cookie` value carrying a token for a browser: `HttpOnly`,
/// `Secure`, `SameSite=Strict` and `Path=/` unless changed, with `Max-Age`
/// from the token's lifetime.
///
/// ```
/// use palisade_auth::issue::TokenCookie;
/// use std::time::Duration;
///
/// let cookie = TokenCookie::new("session").max_age(Duration::from_secs(900)).header_value("a.b.c")?;
/// assert_eq!(cookie, "session=a.b.c; Path=/; Max-Age=900; HttpOnly; Secure; SameSite=Strict");
/// # Ok::<(), palisade_core::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct TokenCookie {
    name: String,
    path: String,
    max_age: Duration,
    same_site: SameSite,
    secure: bool,
}

/// The `SameSite` attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SameSite {
    /// Never sent cross-site (the default).
    Strict,
    /// Sent on top-level cross-site navigations.
    Lax,
}

impl TokenCookie {
    /// A cookie of this name.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            path: "/".to_owned(),
            max_age: Duration::from_secs(15 * 60),
            same_site: SameSite::Strict,
            secure: true,
        }
    }

    /// The `Path` (default `/`).
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// The `Max-Age` (default 15 minutes; match the token's lifetime).
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// The `SameSite` attribute (default `Strict`).
    pub fn same_site(mut self, same_site: SameSite) -> Self {
        self.same_site = same_site;
        self
    }

    /// Drops `Secure` so the cookie works over plain HTTP on localhost.
    pub fn allow_insecure_http_for_tests(mut self) -> Self {
        self.secure = false;
        self
    }

    /// The header value setting `token`.
    pub fn header_value(&self, token: &str) -> Result<HeaderValue, ConfigError> {
        self.render(token, self.max_age.as_secs())
    }

    /// The header value clearing the cookie (logout).
    pub fn clear(&self) -> Result<HeaderValue, ConfigError> {
        self.render("", 0)
    }

    fn render(&self, token: &str, max_age: u64) -> Result<HeaderValue, ConfigError> {
        let valid_name = !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        let valid_value = token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~+/=".contains(&b));
        if !valid_name || !valid_value || self.path.contains(';') {
            return Err(ConfigError::invalid(
                "cookie",
                "unsafe cookie name, value or path",
            ));
        }
        let same_site = match self.same_site {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
        };
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{}={token}; Path={}; Max-Age={max_age}; HttpOnly{secure}; SameSite={same_site}",
            self.name, self.path
        ))
        .map_err(|_| ConfigError::invalid("cookie", "not a valid header value"))
    }
}
