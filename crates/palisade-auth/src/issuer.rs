//! One trusted issuer: its name (`iss`), its keys, and the rules its tokens
//! must meet.
//!
//! Defaults follow RFC 8725: `exp` is required, `nbf` and `iat` are checked,
//! the issuer and an audience are required (switching either off is spelled
//! out), and the leeway is 60 seconds.
//!
//! ```
//! use palisade_auth::issuer::Issuer;
//! use palisade_auth::key::{Algorithm, VerifyingKey};
//! use std::time::Duration;
//!
//! let issuer = Issuer::new("https://id.example.com")
//!     .audience("scans-api")
//!     .key(VerifyingKey::hmac(Algorithm::HS256, &[7u8; 32])?)
//!     .required_type("at+jwt")
//!     .max_lifetime(Duration::from_secs(3600));
//! # let _ = issuer;
//! # Ok::<(), palisade_core::ConfigError>(())
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::ConfigError;
use serde_json::{Map, Value};

use crate::claims;
use crate::failure::AuthFailure;
use crate::key::{KeySet, VerifyingKey};
#[cfg(feature = "remote")]
use crate::remote::RemoteOptions;

/// Where an issuer's keys come from.
#[derive(Debug, Clone)]
pub(crate) enum KeySource {
    Static(Vec<VerifyingKey>),
    #[cfg(feature = "remote")]
    JwksUrl(String, RemoteOptions),
    #[cfg(feature = "remote")]
    Discovery(RemoteOptions),
}

/// A trusted issuer and the rules for its tokens.
#[derive(Debug, Clone)]
pub struct Issuer {
    pub(crate) name: Arc<str>,
    pub(crate) any_issuer: bool,
    pub(crate) rules: Rules,
    pub(crate) keys: KeySource,
    pub(crate) mapping: Option<crate::claims::ClaimMapping>,
    pub(crate) error: Option<ConfigError>,
}

/// The checks a token of one issuer must pass after its signature.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    pub(crate) audiences: Vec<String>,
    pub(crate) check_audience: bool,
    pub(crate) leeway: u64,
    pub(crate) required_type: Option<String>,
    pub(crate) max_age: Option<u64>,
    pub(crate) max_lifetime: Option<u64>,
}

impl Issuer {
    /// An issuer whose tokens carry `iss` = `name` exactly.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into().into(),
            any_issuer: false,
            rules: Rules {
                audiences: Vec::new(),
                check_audience: true,
                leeway: 60,
                required_type: None,
                max_age: None,
                max_lifetime: None,
            },
            keys: KeySource::Static(Vec::new()),
            mapping: None,
            error: None,
        }
    }

    /// Accepts tokens whatever their `iss` (or none). Only for a single
    /// issuer whose keys are yours alone; with several issuers, tokens that
    /// name none of them fall to this one.
    pub fn dangerous_accept_any_issuer(mut self) -> Self {
        self.any_issuer = true;
        self
    }

    /// Adds an accepted audience: the token's `aud` must name one of them.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.rules.audiences.push(audience.into());
        self
    }

    /// Accepts tokens whatever their audience.
    pub fn dangerous_skip_audience_check(mut self) -> Self {
        self.rules.check_audience = false;
        self
    }

    /// The clock skew allowed on `exp`, `nbf` and `iat` (default 60 s).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.rules.leeway = leeway.as_secs();
        self
    }

    /// Requires this header `typ` (compared case-insensitively, with or
    /// without `application/`), e.g. `at+jwt` for RFC 9068 access tokens.
    pub fn required_type(mut self, typ: impl Into<String>) -> Self {
        self.rules.required_type = Some(normalise_type(&typ.into()));
        self
    }

    /// Refuses tokens issued (`iat`) longer ago than this.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.rules.max_age = Some(age.as_secs());
        self
    }

    /// Refuses tokens whose `exp - iat` is longer than this.
    pub fn max_lifetime(mut self, lifetime: Duration) -> Self {
        self.rules.max_lifetime = Some(lifetime.as_secs());
        self
    }

    /// Where this issuer's subject, tenant, roles and scopes are read from,
    /// instead of the verifier's mapping. Give each identity provider its
    /// own when their role names must not mix (an IdP group called `admin`
    /// is not your admin).
    pub fn claim_mapping(mut self, mapping: crate::claims::ClaimMapping) -> Self {
        self.mapping = Some(mapping);
        self
    }

    /// Adds a key.
    pub fn key(mut self, key: VerifyingKey) -> Self {
        match &mut self.keys {
            KeySource::Static(keys) => keys.push(key),
            #[cfg(feature = "remote")]
            _ => {
                self.error = Some(ConfigError::invalid(
                    "keys",
                    "an issuer has either its own keys or remote ones, not both",
                ))
            }
        }
        self
    }

    /// Adds the keys of a JWKS document.
    pub fn jwks_json(mut self, json: &str) -> Self {
        match KeySet::from_jwks_json(json.as_bytes()) {
            Ok(set) => {
                for key in set.into_keys() {
                    self = self.key(key);
                }
            }
            Err(error) => self.error = Some(error),
        }
        self
    }

    /// Adds the keys of a JWKS file, read now.
    pub fn jwks_file(self, path: impl AsRef<Path>) -> Self {
        match std::fs::read_to_string(path.as_ref()) {
            Ok(json) => self.jwks_json(&json),
            Err(error) => {
                let mut this = self;
                this.error = Some(ConfigError::invalid(
                    "jwks_file",
                    format!("{}: {error}", path.as_ref().display()),
                ));
                this
            }
        }
    }

    /// Fetches keys from a JWKS URL (HTTPS unless the options allow
    /// otherwise), refreshed on an interval and on an unknown `kid`.
    #[cfg(feature = "remote")]
    pub fn jwks_url(mut self, url: impl Into<String>, options: RemoteOptions) -> Self {
        self.set_remote(KeySource::JwksUrl(url.into(), options));
        self
    }

    #[cfg(feature = "remote")]
    fn set_remote(&mut self, source: KeySource) {
        if matches!(&self.keys, KeySource::Static(keys) if !keys.is_empty()) {
            self.error = Some(ConfigError::invalid(
                "keys",
                "an issuer has either its own keys or remote ones, not both",
            ));
        }
        self.keys = source;
    }

    /// Finds the JWKS URL through OIDC discovery
    /// (`{issuer}/.well-known/openid-configuration`), checking that the
    /// document names this issuer.
    #[cfg(feature = "remote")]
    pub fn oidc_discovery(mut self, options: RemoteOptions) -> Self {
        self.set_remote(KeySource::Discovery(options));
        self
    }

    /// The issuer name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        if self.name.is_empty() && !self.any_issuer {
            return Err(ConfigError::invalid("issuer", "the issuer name is empty"));
        }
        if self.rules.check_audience && self.rules.audiences.is_empty() {
            return Err(ConfigError::invalid(
                "audience",
                format!(
                    "issuer {:?} has no audience; add one or call dangerous_skip_audience_check()",
                    self.name
                ),
            ));
        }
        if let KeySource::Static(keys) = &self.keys
            && keys.is_empty()
        {
            return Err(ConfigError::invalid(
                "keys",
                format!("issuer {:?} has no key", self.name),
            ));
        }
        Ok(())
    }
}

/// `application/at+jwt` and `AT+JWT` both read `at+jwt`.
fn normalise_type(typ: &str) -> String {
    let lower = typ.to_ascii_lowercase();
    lower
        .strip_prefix("application/")
        .map(str::to_owned)
        .unwrap_or(lower)
}

impl Rules {
    /// Checks the claims of a token whose signature verified, at `now`
    /// (seconds since the epoch). Returns `exp`.
    #[cfg(test)]
    pub(crate) fn check(
        &self,
        claims: &Map<String, Value>,
        typ: Option<&str>,
        now: u64,
    ) -> Result<u64, AuthFailure> {
        self.check_registered(&claims::registered(claims)?, claims, typ, now)
    }

    /// [`check`](Self::check) with the registered claims already read (the
    /// verifier reads them once and keeps `iat`).
    pub(crate) fn check_registered(
        &self,
        registered: &claims::Registered,
        claims: &Map<String, Value>,
        typ: Option<&str>,
        now: u64,
    ) -> Result<u64, AuthFailure> {
        let exp = registered.exp.ok_or(AuthFailure::MissingExpiry)?;
        if now >= exp.saturating_add(self.leeway) {
            return Err(AuthFailure::Expired);
        }
        if let Some(nbf) = registered.nbf
            && nbf > now.saturating_add(self.leeway)
        {
            return Err(AuthFailure::NotYetValid);
        }
        match registered.iat {
            Some(iat) => {
                if iat > now.saturating_add(self.leeway) {
                    return Err(AuthFailure::BadIssuedAt);
                }
                if let Some(max_age) = self.max_age
                    && now.saturating_sub(iat) > max_age.saturating_add(self.leeway)
                {
                    return Err(AuthFailure::TooOld);
                }
                if let Some(max_lifetime) = self.max_lifetime
                    && exp.saturating_sub(iat) > max_lifetime
                {
                    return Err(AuthFailure::LifetimeTooLong);
                }
            }
            None if self.max_age.is_some() || self.max_lifetime.is_some() => {
                return Err(AuthFailure::BadIssuedAt);
            }
            None => {}
        }
        if self.check_audience && !claims::audience_matches(claims, &self.audiences) {
            return Err(AuthFailure::WrongAudience);
        }
        if let Some(required) = &self.required_type {
            match typ {
                Some(typ) if normalise_type(typ) == *required => {}
                _ => return Err(AuthFailure::WrongType),
            }
        }
        Ok(exp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Algorithm;
    use serde_json::json;

    fn rules() -> Rules {
        Issuer::new("i").audience("api").rules
    }

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn expiry_is_required_and_checked_with_leeway() {
        let rules = rules();
        let base = json!({"aud": "api"});
        assert_eq!(
            rules.check(&object(base), None, 1000),
            Err(AuthFailure::MissingExpiry)
        );
        let claims = object(json!({"aud": "api", "exp": 1000}));
        assert_eq!(rules.check(&claims, None, 1059), Ok(1000));
        assert_eq!(rules.check(&claims, None, 1060), Err(AuthFailure::Expired));
    }

    #[test]
    fn nbf_iat_age_lifetime_audience_and_type_are_checked() {
        let rules = Issuer::new("i")
            .audience("api")
            .max_age(Duration::from_secs(100))
            .max_lifetime(Duration::from_secs(500))
            .required_type("application/AT+JWT")
            .rules;
        let ok = object(json!({"aud": ["x", "api"], "exp": 1400, "iat": 950, "nbf": 950}));
        assert_eq!(rules.check(&ok, Some("at+jwt"), 1000), Ok(1400));
        assert_eq!(
            rules.check(&ok, Some("JWT"), 1000),
            Err(AuthFailure::WrongType)
        );
        assert_eq!(rules.check(&ok, None, 1000), Err(AuthFailure::WrongType));
        let early = object(json!({"aud": "api", "exp": 2000, "nbf": 1100, "iat": 990}));
        assert_eq!(
            rules.check(&early, Some("at+jwt"), 1000),
            Err(AuthFailure::NotYetValid)
        );
        let future = object(json!({"aud": "api", "exp": 2000, "iat": 1100}));
        assert_eq!(
            rules.check(&future, Some("at+jwt"), 1000),
            Err(AuthFailure::BadIssuedAt)
        );
        let old = object(json!({"aud": "api", "exp": 2000, "iat": 800}));
        assert_eq!(
            rules.check(&old, Some("at+jwt"), 1000),
            Err(AuthFailure::TooOld)
        );
        let long = object(json!({"aud": "api", "exp": 9000, "iat": 990}));
        assert_eq!(
            rules.check(&long, Some("at+jwt"), 1000),
            Err(AuthFailure::LifetimeTooLong)
        );
        let no_iat = object(json!({"aud": "api", "exp": 1400}));
        assert_eq!(
            rules.check(&no_iat, Some("at+jwt"), 1000),
            Err(AuthFailure::BadIssuedAt)
        );
        let other = object(json!({"aud": "web", "exp": 1400, "iat": 990}));
        assert_eq!(
            rules.check(&other, Some("at+jwt"), 1000),
            Err(AuthFailure::WrongAudience)
        );
    }

    #[test]
    fn an_issuer_needs_an_audience_and_a_key_unless_told_otherwise() {
        let key = VerifyingKey::hmac(Algorithm::HS256, &[1; 32]).unwrap();
        assert!(Issuer::new("i").key(key.clone()).validate().is_err());
        assert!(Issuer::new("i").audience("a").validate().is_err());
        assert!(
            Issuer::new("i")
                .audience("a")
                .key(key.clone())
                .validate()
                .is_ok()
        );
        assert!(
            Issuer::new("i")
                .dangerous_skip_audience_check()
                .key(key)
                .validate()
                .is_ok()
        );
        assert!(
            Issuer::new("i")
                .audience("a")
                .jwks_json("{")
                .validate()
                .is_err()
        );
    }
}
