//! [`RedactConfig`]: the names this crate redacts, as one value that can be
//! read from a file or the environment (feature `serde`).
//!
//! ```
//! use palisade_redact::config::RedactConfig;
//!
//! let config = RedactConfig {
//!     extra_body_keys: vec!["ssn".into()],
//!     api_key_prefixes: vec!["acme".into()],
//!     ..RedactConfig::default()
//! };
//! let keys = config.body_keys();
//! assert!(keys.contains("SSN") && keys.contains("password"));
//! let scanner = config.scanner()?;
//! # let _ = scanner;
//! # Ok::<(), palisade_redact::config::RedactConfigError>(())
//! ```

use std::fmt;

use http::HeaderName;

use crate::headers::default_sensitive_headers;
use crate::names::SecretNames;
use crate::scan::{DEFAULT_API_KEY_PREFIXES, SecretScanner};

/// What to redact. Every list adds to the defaults, except where a field
/// says it replaces them.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct RedactConfig {
    /// JSON keys (and log fields) redacted besides the
    /// [defaults](crate::DEFAULT_BODY_KEYS).
    pub extra_body_keys: Vec<String>,
    /// Query parameters redacted besides the
    /// [defaults](crate::DEFAULT_QUERY_PARAMS).
    pub extra_query_params: Vec<String>,
    /// Headers marked sensitive besides the
    /// [defaults](default_sensitive_headers).
    pub extra_sensitive_headers: Vec<String>,
    /// API key prefixes the scanner recognises; replaces the
    /// [defaults](DEFAULT_API_KEY_PREFIXES).
    pub api_key_prefixes: Vec<String>,
}

impl Default for RedactConfig {
    fn default() -> Self {
        Self {
            extra_body_keys: Vec::new(),
            extra_query_params: Vec::new(),
            extra_sensitive_headers: Vec::new(),
            api_key_prefixes: DEFAULT_API_KEY_PREFIXES
                .iter()
                .map(|p| (*p).to_owned())
                .collect(),
        }
    }
}

/// A configuration value that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedactConfigError(String);

impl fmt::Display for RedactConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RedactConfigError {}

impl RedactConfig {
    /// The JSON keys to redact: the defaults and the extra ones.
    pub fn body_keys(&self) -> SecretNames {
        SecretNames::default_body_keys().with(&self.extra_body_keys)
    }

    /// The query parameters to redact: the defaults and the extra ones.
    pub fn query_params(&self) -> SecretNames {
        SecretNames::default_query_params().with(&self.extra_query_params)
    }

    /// The headers to mark sensitive; refuses a name that is not a header
    /// name.
    pub fn sensitive_headers(&self) -> Result<Vec<HeaderName>, RedactConfigError> {
        let mut names = default_sensitive_headers();
        for name in &self.extra_sensitive_headers {
            let name = HeaderName::try_from(name.as_str())
                .map_err(|_| RedactConfigError(format!("{name:?} is not a header name")))?;
            if !names.contains(&name) {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// The secret scanner, with these API key prefixes.
    pub fn scanner(&self) -> Result<SecretScanner, RedactConfigError> {
        SecretScanner::builder()
            .api_key_prefixes(self.api_key_prefixes.iter().cloned())
            .build()
            .map_err(|error| RedactConfigError(error.to_string()))
    }
}
