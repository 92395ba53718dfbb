//! A Permissions-Policy builder.
//!
//! ```
//! use palisade_headers::PermissionsPolicy;
//!
//! let policy = PermissionsPolicy::new()
//!     .deny("camera")
//!     .allow_self("fullscreen")
//!     .allow_origins("payment", true, ["https://pay.example.com"]);
//! assert_eq!(
//!     policy.to_header_value()?,
//!     r#"camera=(), fullscreen=(self), payment=(self "https://pay.example.com")"#
//! );
//! # Ok::<(), palisade_core::ConfigError>(())
//! ```

use http::HeaderValue;
use palisade_core::ConfigError;

/// Who may use a feature.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Allowlist {
    /// Nobody: `feature=()`.
    Nobody,
    /// The page's own origin: `feature=(self)`.
    SelfOnly,
    /// Every origin: `feature=*`.
    All,
    /// Listed origins, and the page's own if `include_self`.
    Origins {
        /// Whether `self` is in the list.
        include_self: bool,
        /// Origins such as `https://pay.example.com`.
        origins: Vec<String>,
    },
}

/// A Permissions-Policy header, written in the order features were set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PermissionsPolicy {
    features: Vec<(String, Allowlist)>,
}

/// The features the OWASP Secure Headers Project denies (all but
/// `sync-xhr`, which it allows to `self`), in its order.
const OWASP_FEATURES: &[&str] = &[
    "accelerometer",
    "autoplay",
    "camera",
    "cross-origin-isolated",
    "display-capture",
    "encrypted-media",
    "fullscreen",
    "geolocation",
    "gyroscope",
    "keyboard-map",
    "magnetometer",
    "microphone",
    "midi",
    "payment",
    "picture-in-picture",
    "publickey-credentials-get",
    "screen-wake-lock",
    "sync-xhr",
    "usb",
    "web-share",
    "xr-spatial-tracking",
    "clipboard-read",
    "clipboard-write",
    "gamepad",
    "hid",
    "idle-detection",
    "interest-cohort",
    "serial",
    "unload",
];

impl PermissionsPolicy {
    /// An empty policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// The OWASP Secure Headers Project's policy: every powerful feature
    /// denied, `sync-xhr=(self)`.
    pub fn owasp() -> Self {
        OWASP_FEATURES.iter().fold(Self::new(), |policy, feature| {
            if *feature == "sync-xhr" {
                policy.allow_self(*feature)
            } else {
                policy.deny(*feature)
            }
        })
    }

    /// Sets who may use `feature`, replacing what was set before.
    pub fn feature(mut self, feature: impl Into<String>, allowlist: Allowlist) -> Self {
        let feature = feature.into();
        match self.features.iter_mut().find(|(f, _)| *f == feature) {
            Some(entry) => entry.1 = allowlist,
            None => self.features.push((feature, allowlist)),
        }
        self
    }

    /// Denies `feature` to every origin: `feature=()`.
    pub fn deny(self, feature: impl Into<String>) -> Self {
        self.feature(feature, Allowlist::Nobody)
    }

    /// Allows `feature` to the page's own origin: `feature=(self)`.
    pub fn allow_self(self, feature: impl Into<String>) -> Self {
        self.feature(feature, Allowlist::SelfOnly)
    }

    /// Allows `feature` to every origin: `feature=*`.
    pub fn allow_all(self, feature: impl Into<String>) -> Self {
        self.feature(feature, Allowlist::All)
    }

    /// Allows `feature` to `origins` (and `self` if `include_self`).
    pub fn allow_origins<I, T>(
        self,
        feature: impl Into<String>,
        include_self: bool,
        origins: I,
    ) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let origins = origins.into_iter().map(Into::into).collect();
        self.feature(
            feature,
            Allowlist::Origins {
                include_self,
                origins,
            },
        )
    }

    /// The validated header value.
    pub fn to_header_value(&self) -> Result<HeaderValue, ConfigError> {
        if self.features.is_empty() {
            return Err(ConfigError::invalid(
                "permissions_policy",
                "the policy has no feature",
            ));
        }
        let mut out = String::with_capacity(self.features.len() * 16);
        for (index, (feature, allowlist)) in self.features.iter().enumerate() {
            validate_feature(feature)?;
            if index > 0 {
                out.push_str(", ");
            }
            out.push_str(feature);
            out.push('=');
            match allowlist {
                Allowlist::Nobody => out.push_str("()"),
                Allowlist::SelfOnly => out.push_str("(self)"),
                Allowlist::All => out.push('*'),
                Allowlist::Origins {
                    include_self,
                    origins,
                } => {
                    out.push('(');
                    if *include_self {
                        out.push_str("self");
                    }
                    for (i, origin) in origins.iter().enumerate() {
                        validate_origin(origin)?;
                        if i > 0 || *include_self {
                            out.push(' ');
                        }
                        out.push('"');
                        out.push_str(origin.trim_end_matches('/'));
                        out.push('"');
                    }
                    out.push(')');
                }
            }
        }
        HeaderValue::try_from(out)
            .map_err(|_| ConfigError::invalid("permissions_policy", "not a valid header value"))
    }
}

fn validate_feature(feature: &str) -> Result<(), ConfigError> {
    let mut bytes = feature.bytes();
    let valid = bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            "permissions_policy",
            format!("{feature:?} is not a feature name (lowercase letters, digits, '-')"),
        ))
    }
}

/// An origin is a scheme, `://`, a host and an optional port: nothing
/// that could close the quoted string or the list.
fn validate_origin(origin: &str) -> Result<(), ConfigError> {
    let trimmed = origin.trim_end_matches('/');
    let valid = trimmed
        .parse::<http::Uri>()
        .ok()
        .filter(|uri| {
            uri.scheme().is_some()
                && uri.authority().is_some_and(|a| !a.as_str().contains('@'))
                && uri.path_and_query().is_none_or(|p| p.as_str() == "/")
        })
        .is_some()
        && trimmed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:/[]".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            "permissions_policy",
            format!("{origin:?} is not an origin such as https://example.com"),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]

    use super::*;

    #[test]
    fn owasp_policy_matches_the_project_value() {
        assert_eq!(
            PermissionsPolicy::owasp().to_header_value().unwrap(),
            "accelerometer=(), autoplay=(), camera=(), cross-origin-isolated=(), display-capture=(), encrypted-media=(), fullscreen=(), geolocation=(), gyroscope=(), keyboard-map=(), magnetometer=(), microphone=(), midi=(), payment=(), picture-in-picture=(), publickey-credentials-get=(), screen-wake-lock=(), sync-xhr=(self), usb=(), web-share=(), xr-spatial-tracking=(), clipboard-read=(), clipboard-write=(), gamepad=(), hid=(), idle-detection=(), interest-cohort=(), serial=(), unload=()"
        );
    }

    #[test]
    fn allow_lists_are_written_as_structured_fields() {
        let policy = PermissionsPolicy::new()
            .allow_all("fullscreen")
            .allow_origins(
                "payment",
                false,
                ["https://a.example", "https://b.example:8443/"],
            );
        assert_eq!(
            policy.to_header_value().unwrap(),
            r#"fullscreen=*, payment=("https://a.example" "https://b.example:8443")"#
        );
    }

    #[test]
    fn bad_features_and_origins_are_refused() {
        assert!(
            PermissionsPolicy::new()
                .deny("Camera")
                .to_header_value()
                .is_err()
        );
        assert!(
            PermissionsPolicy::new()
                .deny("camera=*, x")
                .to_header_value()
                .is_err()
        );
        for origin in [
            "pay.example",
            "https://a.example/\" x",
            "https://u@a.example",
            "https://a.example/path",
        ] {
            let policy = PermissionsPolicy::new().allow_origins("payment", true, [origin]);
            assert!(policy.to_header_value().is_err(), "{origin}");
        }
        assert!(PermissionsPolicy::new().to_header_value().is_err());
    }
}
