//! Verifying keys, each bound to one algorithm, and key sets parsed from
//! JWKS documents.
//!
//! A key never verifies a token whose header names another algorithm: that
//! is what stops `alg` confusion (an HS256 token "signed" with an RSA public
//! key as its secret), and why `none` cannot be configured at all.
//!
//! ```
//! use palisade_auth::key::{Algorithm, VerifyingKey};
//!
//! let key = VerifyingKey::hmac(Algorithm::HS256, &[7u8; 32])?.with_kid("k1");
//! assert_eq!(key.algorithm(), Algorithm::HS256);
//! assert!(VerifyingKey::hmac(Algorithm::HS256, b"short").is_err());
//! # Ok::<(), palisade_core::ConfigError>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

pub use jsonwebtoken::Algorithm;
#[cfg(feature = "remote")]
use jsonwebtoken::DecodingKeyKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{AlgorithmFamily, DecodingKey};
use palisade_core::ConfigError;

/// A public key (or HMAC secret) bound to one algorithm, and maybe a `kid`.
#[derive(Clone)]
pub struct VerifyingKey {
    kid: Option<Arc<str>>,
    algorithm: Algorithm,
    key: DecodingKey,
}

impl fmt::Debug for VerifyingKey {
    /// The key material is left out: an HMAC key is a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// The shortest HMAC secret accepted: the hash's output size (RFC 7518 §3.2).
fn min_hmac_len(algorithm: Algorithm) -> usize {
    match algorithm {
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => 32,
    }
}

fn family_error(algorithm: Algorithm, wanted: &'static str) -> ConfigError {
    ConfigError::invalid("key", format!("{algorithm:?} is not an {wanted} algorithm"))
}

fn key_error(error: jsonwebtoken::errors::Error) -> ConfigError {
    ConfigError::invalid("key", format!("unreadable key: {error}"))
}

impl VerifyingKey {
    /// An HMAC secret for HS256/384/512, at least as long as the hash output.
    pub fn hmac(algorithm: Algorithm, secret: &[u8]) -> Result<Self, ConfigError> {
        if algorithm.family() != AlgorithmFamily::Hmac {
            return Err(family_error(algorithm, "HMAC"));
        }
        if secret.len() < min_hmac_len(algorithm) {
            return Err(ConfigError::invalid(
                "key",
                format!(
                    "an {algorithm:?} secret needs at least {} bytes",
                    min_hmac_len(algorithm)
                ),
            ));
        }
        Ok(Self::new(algorithm, DecodingKey::from_secret(secret)))
    }

    /// A public key in PEM: RSA for RS*/PS*, EC for ES*, Ed25519 for EdDSA.
    pub fn from_pem(algorithm: Algorithm, pem: &[u8]) -> Result<Self, ConfigError> {
        let key = match algorithm.family() {
            AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(pem),
            AlgorithmFamily::Ec => DecodingKey::from_ec_pem(pem),
            AlgorithmFamily::Ed => DecodingKey::from_ed_pem(pem),
            AlgorithmFamily::Hmac => return Err(family_error(algorithm, "asymmetric")),
        }
        .map_err(key_error)?;
        Ok(Self::new(algorithm, key))
    }

    /// A public key in DER: PKCS#1 RSA, SEC1 EC point, or raw Ed25519.
    pub fn from_der(algorithm: Algorithm, der: &[u8]) -> Result<Self, ConfigError> {
        let key = match algorithm.family() {
            AlgorithmFamily::Rsa => DecodingKey::from_rsa_der(der),
            AlgorithmFamily::Ec => DecodingKey::from_ec_der(der),
            AlgorithmFamily::Ed => DecodingKey::from_ed_der(der),
            AlgorithmFamily::Hmac => return Err(family_error(algorithm, "asymmetric")),
        };
        Ok(Self::new(algorithm, key))
    }

    /// A key from one JWK. Its algorithm is the JWK's `alg`, or derived from
    /// its type and curve (`RS256` for an RSA key without `alg`); keys for
    /// encryption are refused.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, ConfigError> {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            return Err(ConfigError::invalid("key", "the key is for encryption"));
        }
        let algorithm = jwk_algorithm(jwk)?;
        let key = DecodingKey::from_jwk(jwk).map_err(key_error)?;
        match &jwk.algorithm {
            // The same floor as `hmac`: an empty or short `k` is a key
            // anyone can guess.
            AlgorithmParameters::OctetKey(_) => {
                let len = key.try_get_as_bytes().map_or(0, <[u8]>::len);
                if len < min_hmac_len(algorithm) {
                    return Err(ConfigError::invalid(
                        "key",
                        format!(
                            "an {algorithm:?} secret needs at least {} bytes",
                            min_hmac_len(algorithm)
                        ),
                    ));
                }
            }
            // RSA under 2048 bits is refused here whatever the backend
            // would accept.
            AlgorithmParameters::RSA(params) => {
                use base64::Engine;
                let modulus = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(params.n.trim_end_matches('='))
                    .unwrap_or_default();
                let significant = modulus.iter().skip_while(|b| **b == 0).count();
                if significant < 256 {
                    return Err(ConfigError::invalid(
                        "key",
                        "RSA keys need at least 2048 bits",
                    ));
                }
            }
            _ => {}
        }
        let mut key = Self::new(algorithm, key);
        if let Some(kid) = &jwk.common.key_id {
            key = key.with_kid(kid.as_str());
        }
        Ok(key)
    }

    fn new(algorithm: Algorithm, key: DecodingKey) -> Self {
        Self {
            kid: None,
            algorithm,
            key,
        }
    }

    /// Sets the key id tokens name in their header.
    pub fn with_kid(mut self, kid: impl Into<Arc<str>>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    /// The key id.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The one algorithm this key verifies.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }
}

#[cfg(feature = "remote")]
fn same_material(a: &DecodingKeyKind, b: &DecodingKeyKind) -> bool {
    match (a, b) {
        (DecodingKeyKind::SecretOrDer(a), DecodingKeyKind::SecretOrDer(b)) => a == b,
        (
            DecodingKeyKind::RsaModulusExponent { n: an, e: ae },
            DecodingKeyKind::RsaModulusExponent { n: bn, e: be },
        ) => an == bn && ae == be,
        _ => false,
    }
}

fn jwk_algorithm(jwk: &Jwk) -> Result<Algorithm, ConfigError> {
    let declared = match jwk.common.key_algorithm {
        Some(KeyAlgorithm::HS256) => Some(Algorithm::HS256),
        Some(KeyAlgorithm::HS384) => Some(Algorithm::HS384),
        Some(KeyAlgorithm::HS512) => Some(Algorithm::HS512),
        Some(KeyAlgorithm::ES256) => Some(Algorithm::ES256),
        Some(KeyAlgorithm::ES384) => Some(Algorithm::ES384),
        Some(KeyAlgorithm::RS256) => Some(Algorithm::RS256),
        Some(KeyAlgorithm::RS384) => Some(Algorithm::RS384),
        Some(KeyAlgorithm::RS512) => Some(Algorithm::RS512),
        Some(KeyAlgorithm::PS256) => Some(Algorithm::PS256),
        Some(KeyAlgorithm::PS384) => Some(Algorithm::PS384),
        Some(KeyAlgorithm::PS512) => Some(Algorithm::PS512),
        Some(KeyAlgorithm::EdDSA) => Some(Algorithm::EdDSA),
        Some(other) => {
            return Err(ConfigError::invalid(
                "key",
                format!("`alg` {other:?} is not a signature algorithm"),
            ));
        }
        None => None,
    };
    // The key's type must fit its algorithm; an EC key's curve fixes it.
    let derived = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => match declared {
            Some(alg) if alg.family() == AlgorithmFamily::Rsa => alg,
            Some(alg) => return Err(family_error(alg, "RSA")),
            None => Algorithm::RS256,
        },
        AlgorithmParameters::EllipticCurve(params) => {
            let by_curve = match params.curve {
                EllipticCurve::P256 => Algorithm::ES256,
                EllipticCurve::P384 => Algorithm::ES384,
                ref other => {
                    return Err(ConfigError::invalid(
                        "key",
                        format!("curve {other:?} is not supported"),
                    ));
                }
            };
            match declared {
                Some(alg) if alg != by_curve => {
                    return Err(ConfigError::invalid(
                        "key",
                        format!("`alg` {alg:?} does not match the key's curve"),
                    ));
                }
                _ => by_curve,
            }
        }
        AlgorithmParameters::OctetKeyPair(params) => {
            if params.curve != EllipticCurve::Ed25519 {
                return Err(ConfigError::invalid(
                    "key",
                    "only Ed25519 OKP keys are supported",
                ));
            }
            match declared {
                Some(Algorithm::EdDSA) | None => Algorithm::EdDSA,
                Some(alg) => return Err(family_error(alg, "EdDSA")),
            }
        }
        AlgorithmParameters::OctetKey(_) => match declared {
            Some(alg) if alg.family() == AlgorithmFamily::Hmac => alg,
            // A secret without `alg` could be used with any HMAC size: refuse
            // rather than guess.
            _ => {
                return Err(ConfigError::invalid(
                    "key",
                    "a symmetric JWK needs an HS256/384/512 `alg`",
                ));
            }
        },
        _ => {
            return Err(ConfigError::invalid("key", "unsupported key type"));
        }
    };
    Ok(derived)
}

/// What a JWKS document may contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JwksOrigin {
    /// Given by the application (inline or a file): symmetric keys allowed.
    Local,
    /// Fetched over the network: public keys only. A secret served by a URL
    /// is no secret.
    Remote,
}

/// The keys of one issuer, found by `kid`.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    keys: Vec<VerifyingKey>,
    by_kid: HashMap<Arc<str>, usize>,
}

impl KeySet {
    /// A set of these keys. Two keys with one `kid` are refused.
    pub fn new(keys: Vec<VerifyingKey>) -> Result<Self, ConfigError> {
        let mut by_kid = HashMap::with_capacity(keys.len());
        for (index, key) in keys.iter().enumerate() {
            if let Some(kid) = &key.kid
                && by_kid.insert(kid.clone(), index).is_some()
            {
                return Err(ConfigError::invalid(
                    "keys",
                    format!("two keys have the kid {kid:?}"),
                ));
            }
        }
        Ok(Self { keys, by_kid })
    }

    /// Parses a JWKS document. Entries that cannot be used (unknown `kty`,
    /// `use: enc`, an encryption `alg`, a curve we do not verify) are
    /// skipped with a warning; only unreadable JSON fails the set.
    pub fn from_jwks_json(json: &[u8]) -> Result<Self, ConfigError> {
        Self::parse_jwks(json, JwksOrigin::Local)
    }

    pub(crate) fn parse_jwks(json: &[u8], origin: JwksOrigin) -> Result<Self, ConfigError> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document = serde_json::from_slice(json)
            .map_err(|_| ConfigError::invalid("jwks", "not a JWKS document"))?;
        let mut keys = Vec::with_capacity(document.keys.len());
        let mut seen = std::collections::HashSet::new();
        for entry in document.keys {
            let jwk: Jwk = match serde_json::from_value(entry) {
                Ok(jwk) => jwk,
                Err(error) => {
                    tracing::warn!(%error, "skipping a JWKS entry that is not a usable JWK");
                    continue;
                }
            };
            if origin == JwksOrigin::Remote
                && matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_))
            {
                tracing::warn!(kid = ?jwk.common.key_id, "skipping a symmetric key served in a remote JWKS");
                continue;
            }
            match VerifyingKey::from_jwk(&jwk) {
                Ok(key) => {
                    if let Some(kid) = key.kid()
                        && !seen.insert(kid.to_owned())
                    {
                        tracing::warn!(kid, "skipping a JWKS entry with a duplicate kid");
                        continue;
                    }
                    keys.push(key);
                }
                Err(error) => {
                    tracing::warn!(kid = ?jwk.common.key_id, %error, "skipping an unusable JWKS entry");
                }
            }
        }
        Self::new(keys)
    }

    /// Whether two sets hold the same keys (by kid and algorithm).
    #[cfg(feature = "remote")]
    pub(crate) fn same_keys(&self, other: &KeySet) -> bool {
        self.keys.len() == other.keys.len()
            && self.keys.iter().zip(&other.keys).all(|(a, b)| {
                a.kid == b.kid
                    && a.algorithm == b.algorithm
                    && same_material(a.key.kind(), b.key.kind())
            })
    }

    pub(crate) fn into_keys(self) -> Vec<VerifyingKey> {
        self.keys
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set has no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key a token names: by `kid`; else (a token without `kid`, or
    /// one naming a `kid` no key has) the only key of its algorithm that
    /// has no `kid` of its own, or for a token without `kid` the only key
    /// of its algorithm.
    pub(crate) fn find(&self, kid: Option<&str>, algorithm: Algorithm) -> Lookup<'_> {
        if let Some(kid) = kid {
            if let Some(&index) = self.by_kid.get(kid) {
                return Lookup::Found(&self.keys[index]);
            }
            // A key configured without an id (one PEM key) serves tokens
            // whatever kid they name, as long as the algorithm matches.
            let mut anonymous = self
                .keys
                .iter()
                .filter(|k| k.kid.is_none() && k.algorithm == algorithm);
            return match (anonymous.next(), anonymous.next()) {
                (Some(key), None) => Lookup::Found(key),
                _ => Lookup::Unknown,
            };
        }
        let mut candidates = self.keys.iter().filter(|k| k.algorithm == algorithm);
        match (candidates.next(), candidates.next()) {
            (Some(key), None) => Lookup::Found(key),
            // Several keys and no kid: ambiguous, refuse rather than try each.
            (Some(_), Some(_)) => Lookup::Unknown,
            (None, _) if self.keys.is_empty() => Lookup::Unknown,
            (None, _) => Lookup::WrongAlgorithm,
        }
    }
}

/// The result of [`KeySet::find`].
pub(crate) enum Lookup<'a> {
    Found(&'a VerifyingKey),
    Unknown,
    WrongAlgorithm,
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_JWK: &str = r#"{"kty":"RSA","kid":"r1","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"}"#;

    #[test]
    fn unusable_entries_are_skipped_without_failing_the_set() {
        let document = format!(
            r#"{{"keys":[
                {RSA_JWK},
                {{"kty":"RSA","kid":"enc","use":"enc","n":"AQAB","e":"AQAB"}},
                {{"kty":"RSA","kid":"oaep","alg":"RSA-OAEP","n":"AQAB","e":"AQAB"}},
                {{"kty":"XYZ","kid":"odd"}},
                {{"kty":"oct","kid":"s","alg":"HS256","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}},
                {{"kty":"oct","kid":"empty","alg":"HS256","k":""}},
                {{"kty":"RSA","kid":"small","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXbw","e":"AQAB"}}
            ]}}"#
        );
        let local = KeySet::parse_jwks(document.as_bytes(), JwksOrigin::Local).unwrap();
        assert_eq!(local.len(), 2);
        let remote = KeySet::parse_jwks(document.as_bytes(), JwksOrigin::Remote).unwrap();
        assert_eq!(remote.len(), 1);
        match remote.find(Some("r1"), Algorithm::RS256) {
            Lookup::Found(key) => assert_eq!(key.algorithm(), Algorithm::RS256),
            _ => panic!("r1 not found"),
        }
        assert!(matches!(
            remote.find(Some("enc"), Algorithm::RS256),
            Lookup::Unknown
        ));
        assert!(KeySet::parse_jwks(b"not json", JwksOrigin::Remote).is_err());
    }

    #[test]
    fn keys_are_bound_to_one_family_and_hmac_secrets_have_a_minimum_size() {
        assert!(VerifyingKey::hmac(Algorithm::RS256, &[0; 64]).is_err());
        assert!(VerifyingKey::hmac(Algorithm::HS512, &[0; 48]).is_err());
        assert!(VerifyingKey::hmac(Algorithm::HS512, &[0; 64]).is_ok());
        assert!(VerifyingKey::from_pem(Algorithm::HS256, b"x").is_err());
        let debug = format!(
            "{:?}",
            VerifyingKey::hmac(Algorithm::HS256, &[9; 32]).unwrap()
        );
        assert!(!debug.contains("9, 9"), "{debug}");
    }

    #[test]
    fn a_token_without_kid_needs_exactly_one_key_of_its_algorithm() {
        let one = KeySet::new(vec![
            VerifyingKey::hmac(Algorithm::HS256, &[1; 32]).unwrap(),
        ])
        .unwrap();
        assert!(matches!(one.find(None, Algorithm::HS256), Lookup::Found(_)));
        assert!(matches!(
            one.find(None, Algorithm::RS256),
            Lookup::WrongAlgorithm
        ));
        let two = KeySet::new(vec![
            VerifyingKey::hmac(Algorithm::HS256, &[1; 32])
                .unwrap()
                .with_kid("a"),
            VerifyingKey::hmac(Algorithm::HS256, &[2; 32])
                .unwrap()
                .with_kid("b"),
        ])
        .unwrap();
        assert!(matches!(two.find(None, Algorithm::HS256), Lookup::Unknown));
        assert!(
            KeySet::new(vec![
                VerifyingKey::hmac(Algorithm::HS256, &[1; 32])
                    .unwrap()
                    .with_kid("a"),
                VerifyingKey::hmac(Algorithm::HS256, &[2; 32])
                    .unwrap()
                    .with_kid("a"),
            ])
            .is_err()
        );
    }
}
