//! The JWT layer's configuration as data (feature `serde`): from TOML, YAML,
//! JSON or the environment, through any serde-based loader.
//!
//! Secrets never sit in the file: an HMAC secret is read from the
//! environment variable the file names.
//!
//! ```
//! # palisade_auth::crypto::CryptoBackend::install_preferred()?;
//! use palisade_auth::config::JwtAuthConfig;
//!
//! let config: JwtAuthConfig = toml::from_str(r#"
//!     realm = "api"
//!     cookie = "session"
//!
//!     [[issuers]]
//!     issuer = "https://id.example.com"
//!     audiences = ["scans-api"]
//!     required_type = "at+jwt"
//!     keys = { source = "discovery", refresh_interval_seconds = 600 }
//! "#)?;
//! let layer = config.into_builder()?.build()?;
//! # let _ = layer;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use palisade_core::ConfigError;
use serde::Deserialize;

use crate::issuer::Issuer;
use crate::key::{Algorithm, VerifyingKey};
use crate::layer::{JwtAuthBuilder, JwtAuthLayer};
use crate::revocation::RevocationFailure;
use crate::source::TokenSources;

/// The JWT layer: issuers, token sources and limits.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtAuthConfig {
    /// The trusted issuers.
    pub issuers: Vec<IssuerConfig>,
    /// Read `Authorization: Bearer` (default true).
    #[serde(default = "yes")]
    pub bearer: bool,
    /// Also read this cookie.
    #[serde(default)]
    pub cookie: Option<String>,
    /// On WebSocket upgrades, read the `base64url.bearer.` subprotocol.
    #[serde(default)]
    pub websocket_protocol: bool,
    /// On WebSocket upgrades, read this query parameter.
    #[serde(default)]
    pub websocket_query: Option<String>,
    /// Let requests without a credential through as anonymous.
    #[serde(default)]
    pub optional: bool,
    /// The realm named in `WWW-Authenticate`.
    #[serde(default)]
    pub realm: Option<String>,
    /// The longest token accepted (default 8192).
    #[serde(default)]
    pub max_token_bytes: Option<usize>,
    /// The longest `kid` accepted (default 256).
    #[serde(default)]
    pub max_kid_len: Option<usize>,
    /// Verified tokens remembered (default 100,000; 0 = off).
    #[serde(default)]
    pub cache_capacity: Option<usize>,
    /// `fail_closed` (default) or `fail_open` when the revocation store
    /// cannot answer.
    #[serde(default)]
    pub on_revocation_failure: RevocationFailure,
}

fn yes() -> bool {
    true
}

/// One issuer.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The `iss` its tokens carry.
    pub issuer: String,
    /// Accepted audiences (at least one unless the check is switched off).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Accept any audience.
    #[serde(default)]
    pub dangerous_skip_audience_check: bool,
    /// Accept any `iss` (a single issuer whose keys are yours alone).
    #[serde(default)]
    pub dangerous_accept_any_issuer: bool,
    /// Clock skew allowed, in seconds (default 60).
    #[serde(default)]
    pub leeway_seconds: Option<u64>,
    /// Required header `typ` (e.g. `at+jwt`).
    #[serde(default)]
    pub required_type: Option<String>,
    /// Longest age from `iat`, in seconds.
    #[serde(default)]
    pub max_age_seconds: Option<u64>,
    /// Longest `exp - iat`, in seconds.
    #[serde(default)]
    pub max_lifetime_seconds: Option<u64>,
    /// Where the keys come from.
    pub keys: KeysConfig,
}

/// Where an issuer's keys come from.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum KeysConfig {
    /// A JWKS URL.
    #[cfg(feature = "remote")]
    Jwks {
        /// The URL (HTTPS).
        url: String,
        /// Fetch and refresh options.
        #[serde(flatten)]
        remote: RemoteConfig,
    },
    /// OIDC discovery from the issuer.
    #[cfg(feature = "remote")]
    Discovery {
        /// Fetch and refresh options.
        #[serde(flatten)]
        remote: RemoteConfig,
    },
    /// A JWKS file, read at start-up.
    JwksFile {
        /// The file.
        path: PathBuf,
    },
    /// Public keys in PEM files.
    Pem {
        /// The algorithm each key is bound to (`RS256`, `ES256`, `EdDSA`...).
        algorithm: String,
        /// The files, one key each.
        paths: Vec<PathBuf>,
    },
    /// An HMAC secret read from an environment variable.
    HmacSecretEnv {
        /// `HS256`, `HS384` or `HS512`.
        algorithm: String,
        /// The variable holding the secret.
        env: String,
        /// The key id tokens name, if any.
        #[serde(default)]
        kid: Option<String>,
    },
}

/// Fetch and refresh options of remote keys.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// Longest time between refreshes (default 300).
    #[serde(default)]
    pub refresh_interval_seconds: Option<u64>,
    /// Shortest time between refreshes on unknown `kid`s (default 30).
    #[serde(default)]
    pub min_refresh_interval_seconds: Option<u64>,
    /// Total timeout of a fetch in milliseconds (default 5000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Allow `http://` (tests on loopback only).
    #[serde(default)]
    pub allow_insecure_http_for_tests: bool,
}

fn algorithm(name: &str) -> Result<Algorithm, ConfigError> {
    Algorithm::from_str(name).map_err(|_| {
        ConfigError::invalid(
            "algorithm",
            format!("{name:?} is not a supported algorithm"),
        )
    })
}

#[cfg(feature = "remote")]
impl RemoteConfig {
    fn options(&self) -> crate::remote::RemoteOptions {
        let mut options = crate::remote::RemoteOptions::default();
        if let Some(seconds) = self.refresh_interval_seconds {
            options = options.refresh_interval(Duration::from_secs(seconds));
        }
        if let Some(seconds) = self.min_refresh_interval_seconds {
            options = options.min_refresh_interval(Duration::from_secs(seconds));
        }
        if let Some(ms) = self.timeout_ms {
            options = options.timeout(Duration::from_millis(ms));
        }
        if self.allow_insecure_http_for_tests {
            options = options.allow_insecure_http_for_tests();
        }
        options
    }
}

impl IssuerConfig {
    /// The issuer this describes.
    pub fn into_issuer(self) -> Result<Issuer, ConfigError> {
        let mut issuer = Issuer::new(self.issuer);
        for audience in self.audiences {
            issuer = issuer.audience(audience);
        }
        if self.dangerous_skip_audience_check {
            issuer = issuer.dangerous_skip_audience_check();
        }
        if self.dangerous_accept_any_issuer {
            issuer = issuer.dangerous_accept_any_issuer();
        }
        if let Some(seconds) = self.leeway_seconds {
            issuer = issuer.leeway(Duration::from_secs(seconds));
        }
        if let Some(typ) = self.required_type {
            issuer = issuer.required_type(typ);
        }
        if let Some(seconds) = self.max_age_seconds {
            issuer = issuer.max_age(Duration::from_secs(seconds));
        }
        if let Some(seconds) = self.max_lifetime_seconds {
            issuer = issuer.max_lifetime(Duration::from_secs(seconds));
        }
        Ok(match self.keys {
            #[cfg(feature = "remote")]
            KeysConfig::Jwks { url, remote } => issuer.jwks_url(url, remote.options()),
            #[cfg(feature = "remote")]
            KeysConfig::Discovery { remote } => issuer.oidc_discovery(remote.options()),
            KeysConfig::JwksFile { path } => issuer.jwks_file(path),
            KeysConfig::Pem {
                algorithm: name,
                paths,
            } => {
                let algorithm = algorithm(&name)?;
                for path in paths {
                    let pem = std::fs::read(&path).map_err(|error| {
                        ConfigError::invalid("keys", format!("{}: {error}", path.display()))
                    })?;
                    issuer = issuer.key(VerifyingKey::from_pem(algorithm, &pem)?);
                }
                issuer
            }
            KeysConfig::HmacSecretEnv {
                algorithm: name,
                env,
                kid,
            } => {
                let secret = std::env::var(&env).map_err(|_| {
                    ConfigError::invalid(
                        "keys",
                        format!("the environment variable {env} is not set"),
                    )
                })?;
                let mut key = VerifyingKey::hmac(algorithm(&name)?, secret.as_bytes())?;
                if let Some(kid) = kid {
                    key = key.with_kid(kid);
                }
                issuer.key(key)
            }
        })
    }
}

impl JwtAuthConfig {
    /// A layer builder with this configuration; add stores (revocation)
    /// and a clock before `build()`.
    pub fn into_builder(self) -> Result<JwtAuthBuilder, ConfigError> {
        let mut builder = JwtAuthLayer::builder();
        for issuer in self.issuers {
            builder = builder.issuer(issuer.into_issuer()?);
        }
        let mut sources = TokenSources::default().bearer(self.bearer);
        if let Some(cookie) = self.cookie {
            sources = sources.cookie(cookie);
        }
        if self.websocket_protocol {
            sources = sources.websocket_protocol();
        }
        if let Some(name) = self.websocket_query {
            sources = sources.websocket_query(name);
        }
        builder = builder
            .sources(sources)
            .on_revocation_failure(self.on_revocation_failure);
        if self.optional {
            builder = builder.optional();
        }
        if let Some(realm) = self.realm {
            builder = builder.realm(realm);
        }
        if let Some(bytes) = self.max_token_bytes {
            builder = builder.max_token_bytes(bytes);
        }
        if let Some(len) = self.max_kid_len {
            builder = builder.max_kid_len(len);
        }
        if let Some(capacity) = self.cache_capacity {
            builder = builder.cache_capacity(capacity);
        }
        Ok(builder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_toml_file_naming_pem_keys_verifies_tokens() {
        crate::crypto::CryptoBackend::install_preferred().unwrap();
        let dir = env!("CARGO_MANIFEST_DIR");
        let config: JwtAuthConfig = toml::from_str(&format!(
            r#"
            realm = "api"
            [[issuers]]
            issuer = "https://id.test"
            audiences = ["api"]
            leeway_seconds = 5
            required_type = "at+jwt"
            keys = {{ source = "pem", algorithm = "RS256", paths = ["{dir}/tests/keys/rsa_public.pem"] }}
            "#
        ))
        .unwrap();
        let layer = config.into_builder().unwrap().build().unwrap();
        let private = std::fs::read(format!("{dir}/tests/keys/rsa_private.pem")).unwrap();
        let issuer = crate::issue::TokenIssuer::builder("https://id.test")
            .audience("api")
            .signing_key(crate::issue::SigningKey::from_pem(Algorithm::RS256, &private).unwrap())
            .build()
            .unwrap();
        let token = issuer.mint("u").sign().unwrap().token;
        assert_eq!(
            layer.verifier().verify(&token).await.unwrap().subject(),
            "u"
        );
    }

    #[test]
    fn a_secret_variable_that_is_not_set_is_a_build_error() {
        let config: JwtAuthConfig = toml::from_str(
            r#"
            [[issuers]]
            issuer = "https://id.test"
            audiences = ["api"]
            keys = { source = "hmac_secret_env", algorithm = "HS256", env = "PALISADE_TEST_UNSET_SECRET_VARIABLE" }
            "#,
        )
        .unwrap();
        let error = config.into_builder().unwrap_err().to_string();
        assert!(
            error.contains("PALISADE_TEST_UNSET_SECRET_VARIABLE"),
            "{error}"
        );
    }

    #[test]
    fn unknown_fields_and_algorithms_are_refused() {
        let unknown: Result<JwtAuthConfig, _> = toml::from_str(
            r#"
            realm = "api"
            colour = "blue"
            issuers = []
            "#,
        );
        assert!(unknown.is_err());
        let config: JwtAuthConfig = toml::from_str(
            r#"
            [[issuers]]
            issuer = "i"
            audiences = ["a"]
            keys = { source = "pem", algorithm = "none", paths = [] }
            "#,
        )
        .unwrap();
        assert!(config.into_builder().is_err());
    }
}
