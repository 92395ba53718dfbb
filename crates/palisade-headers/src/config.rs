//! [`SecurityHeadersConfig`]: the header set from a configuration file
//! (feature `serde`).
//!
//! ```
//! use palisade_headers::config::SecurityHeadersConfig;
//!
//! let config: SecurityHeadersConfig = toml::from_str(r#"
//!     preset = "helmet"
//!     csp = "default-src 'self'; script-src 'self' 'nonce'; object-src 'none'"
//!     without = ["x-xss-protection"]
//!     hsts = { max_age_secs = 63072000, include_subdomains = true, preload = true }
//!     trusted_proxies = { trusted_proxies = ["10.0.0.0/8"] }
//!
//!     [headers]
//!     cache-control = "no-store"
//!
//!     [permissions_policy]
//!     camera = []
//!     fullscreen = ["self"]
//! "#)?;
//! let layer = config.build()?;
//! # let _ = layer;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use palisade_core::ConfigError;
use palisade_core::client_ip::ClientIpConfig;

use crate::csp::ContentSecurityPolicy;
use crate::{Hsts, HttpsRedirectLayer, PermissionsPolicy, SecurityHeaders, SecurityHeadersLayer};

/// The starting point of a configured header set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Preset {
    /// [`SecurityHeaders::helmet`] (the default).
    #[default]
    Helmet,
    /// [`SecurityHeaders::owasp_strict`].
    OwaspStrict,
    /// [`SecurityHeaders::api`].
    Api,
    /// No header: only what the configuration sets.
    None,
}

/// Strict-Transport-Security in a configuration file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HstsConfig {
    /// `max-age` in seconds (default one year).
    pub max_age_secs: u64,
    /// `includeSubDomains` (default true).
    pub include_subdomains: bool,
    /// `preload` (default false; needs a year and subdomains).
    pub preload: bool,
}

impl Default for HstsConfig {
    fn default() -> Self {
        Self {
            max_age_secs: crate::ONE_YEAR.as_secs(),
            include_subdomains: true,
            preload: false,
        }
    }
}

impl HstsConfig {
    fn hsts(&self) -> Hsts {
        let mut hsts = Hsts::new(Duration::from_secs(self.max_age_secs));
        if self.include_subdomains {
            hsts = hsts.include_subdomains();
        }
        if self.preload {
            hsts = hsts.preload();
        }
        hsts
    }
}

/// A header set as written in a configuration file; [`build`](Self::build)
/// validates it as the builder does.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityHeadersConfig {
    /// The preset started from (default `helmet`).
    pub preset: Preset,
    /// The enforced Content-Security-Policy as written in the header (see
    /// [`ContentSecurityPolicy::parse`]), replacing the preset's.
    pub csp: Option<String>,
    /// A report-only Content-Security-Policy.
    pub csp_report_only: Option<String>,
    /// Reporting API endpoints, name to URL.
    pub reporting_endpoints: BTreeMap<String, String>,
    /// Permissions-Policy: feature to allow list (`[]` denies, `"self"`,
    /// `"*"`, or origins), replacing the preset's.
    pub permissions_policy: Option<BTreeMap<String, Vec<String>>>,
    /// HSTS, replacing the preset's.
    pub hsts: Option<HstsConfig>,
    /// Further fixed headers, name to value.
    pub headers: BTreeMap<String, String>,
    /// Headers removed from the set (handlers may still set them).
    pub without: Vec<String>,
    /// Further headers stripped from responses.
    pub strip: Vec<String>,
    /// Headers let through although on the strip list.
    pub keep: Vec<String>,
    /// Strip nothing.
    pub strip_nothing: bool,
    /// Replace headers the handler set itself.
    pub override_handler_headers: bool,
    /// Every request came over HTTPS.
    pub assume_https: bool,
    /// Proxies whose `X-Forwarded-Proto` is believed.
    pub trusted_proxies: Option<ClientIpConfig>,
}

fn header_name(field: &'static str, name: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| ConfigError::invalid(field, format!("{name:?} is not a header name")))
}

impl SecurityHeadersConfig {
    /// The builder this configuration describes.
    pub fn to_builder(&self) -> Result<SecurityHeaders, ConfigError> {
        let mut headers = match self.preset {
            Preset::Helmet => SecurityHeaders::helmet(),
            Preset::OwaspStrict => SecurityHeaders::owasp_strict(),
            Preset::Api => SecurityHeaders::api(),
            Preset::None => SecurityHeaders::new(),
        };
        if let Some(text) = &self.csp {
            headers = headers.csp(ContentSecurityPolicy::parse(text)?);
        }
        if let Some(text) = &self.csp_report_only {
            headers = headers.csp_report_only(ContentSecurityPolicy::parse(text)?);
        }
        for (name, url) in &self.reporting_endpoints {
            headers = headers.reporting_endpoint(name.clone(), url.clone());
        }
        if let Some(features) = &self.permissions_policy {
            let mut policy = PermissionsPolicy::new();
            for (feature, allow) in features {
                policy = match allow.as_slice() {
                    [] => policy.deny(feature.clone()),
                    [only] if only == "*" => policy.allow_all(feature.clone()),
                    [only] if only == "self" => policy.allow_self(feature.clone()),
                    list => {
                        let include_self = list.iter().any(|o| o == "self");
                        policy.allow_origins(
                            feature.clone(),
                            include_self,
                            list.iter().filter(|o| *o != "self").cloned(),
                        )
                    }
                };
            }
            headers = headers.permissions_policy(policy);
        }
        if let Some(hsts) = &self.hsts {
            headers = headers.hsts(hsts.hsts());
        }
        for (name, value) in &self.headers {
            let value = HeaderValue::try_from(value.as_str()).map_err(|_| {
                ConfigError::invalid("headers", format!("{value:?} is not a header value"))
            })?;
            headers = headers.header(header_name("headers", name)?, value);
        }
        for name in &self.without {
            headers = headers.without(&header_name("without", name)?);
        }
        if self.strip_nothing {
            headers = headers.strip_nothing();
        }
        for name in &self.strip {
            headers = headers.strip(header_name("strip", name)?);
        }
        for name in &self.keep {
            headers = headers.keep(&header_name("keep", name)?);
        }
        if self.override_handler_headers {
            headers = headers.override_handler_headers();
        }
        if self.assume_https {
            headers = headers.assume_https();
        }
        if let Some(proxies) = &self.trusted_proxies {
            headers = headers.trust_proxies(proxies.build()?);
        }
        Ok(headers)
    }

    /// Validates and builds the layer.
    pub fn build(&self) -> Result<SecurityHeadersLayer, ConfigError> {
        self.to_builder()?.build()
    }
}

/// An [`HttpsRedirectLayer`] as written in a configuration file:
///
/// ```toml
/// exempt_paths = ["/health"]
/// https_port = 8443
/// allowed_hosts = ["example.com"]
/// hsts = { max_age_secs = 31536000 }   # or send_hsts = false
/// trusted_proxies = { trusted_proxies = ["10.0.0.0/8"] }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpsRedirectConfig {
    /// Paths served over plain HTTP too.
    pub exempt_paths: Vec<String>,
    /// The HTTPS port (default 443).
    pub https_port: Option<u16>,
    /// Hosts redirected; empty: any well-formed host.
    pub allowed_hosts: Vec<String>,
    /// Whether HSTS is added on the HTTPS side (default true).
    pub send_hsts: bool,
    /// The HSTS policy (default one year with `includeSubDomains`).
    pub hsts: Option<HstsConfig>,
    /// Proxies whose `X-Forwarded-Proto` is believed.
    pub trusted_proxies: Option<ClientIpConfig>,
}

impl Default for HttpsRedirectConfig {
    fn default() -> Self {
        Self {
            exempt_paths: Vec::new(),
            https_port: None,
            allowed_hosts: Vec::new(),
            send_hsts: true,
            hsts: None,
            trusted_proxies: None,
        }
    }
}

impl HttpsRedirectConfig {
    /// Validates and builds the layer.
    pub fn build(&self) -> Result<HttpsRedirectLayer, ConfigError> {
        let mut builder = HttpsRedirectLayer::builder();
        for path in &self.exempt_paths {
            builder = builder.exempt_path(path.clone());
        }
        if let Some(port) = self.https_port {
            builder = builder.https_port(port);
        }
        for host in &self.allowed_hosts {
            builder = builder.allow_host(host.clone());
        }
        builder = match (self.send_hsts, &self.hsts) {
            (false, _) => builder.without_hsts(),
            (true, Some(hsts)) => builder.hsts(hsts.hsts()),
            (true, None) => builder,
        };
        if let Some(proxies) = &self.trusted_proxies {
            builder = builder.trust_proxies(proxies.build()?);
        }
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]

    use super::*;

    fn headers_of(config: &str) -> http::HeaderMap {
        let config: SecurityHeadersConfig = toml::from_str(config).unwrap();
        let layer = config.build().unwrap();
        layer.headers_for(&http::Request::get("https://example.com/").body(()).unwrap())
    }

    #[test]
    fn an_empty_configuration_is_helmet() {
        let headers = headers_of("");
        assert_eq!(headers["x-frame-options"], "SAMEORIGIN");
        assert_eq!(
            headers["strict-transport-security"],
            "max-age=31536000; includeSubDomains"
        );
        assert_eq!(headers.len(), 12);
    }

    #[test]
    fn configuration_changes_the_preset() {
        let headers = headers_of(
            r#"
            preset = "api"
            csp = "default-src 'none'; script-src 'nonce'"
            without = ["x-frame-options"]
            hsts = { max_age_secs = 63072000, preload = true }
            [headers]
            x-custom = "1"
            [permissions_policy]
            camera = []
            payment = ["self", "https://pay.example"]
            "#,
        );
        assert!(!headers.contains_key("x-frame-options"));
        assert_eq!(headers["x-custom"], "1");
        assert_eq!(
            headers["strict-transport-security"],
            "max-age=63072000; includeSubDomains; preload"
        );
        assert_eq!(
            headers["permissions-policy"],
            r#"camera=(), payment=(self "https://pay.example")"#
        );
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.starts_with("default-src 'none'; script-src 'nonce-"),
            "{csp}"
        );
    }

    #[test]
    fn redirect_configuration_builds_and_is_validated() {
        let config: HttpsRedirectConfig = toml::from_str(
            r#"
            exempt_paths = ["/health"]
            https_port = 8443
            allowed_hosts = ["example.com"]
            send_hsts = false
            trusted_proxies = { trusted_proxies = ["10.0.0.0/8"] }
            "#,
        )
        .unwrap();
        assert!(config.build().is_ok());
        for bad in [
            "exempt_paths = [\"health\"]",
            "allowed_hosts = [\"a b\"]",
            "hsts = { max_age_secs = 60, preload = true }",
        ] {
            let config: HttpsRedirectConfig = toml::from_str(bad).unwrap();
            assert!(config.build().is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_configurations_are_refused_at_build() {
        for bad in [
            "csp = \"script-src self\"",
            "hsts = { max_age_secs = 60, preload = true }",
            "[headers]\n\"bad name\" = \"x\"",
            "trusted_proxies = { trusted_proxies = [\"not a cidr\"] }",
            "csp_report_only = \"default-src 'self'\"",
        ] {
            let config: SecurityHeadersConfig = toml::from_str(bad).unwrap();
            assert!(config.build().is_err(), "{bad}");
        }
        assert!(toml::from_str::<SecurityHeadersConfig>("presets = \"api\"").is_err());
    }
}
