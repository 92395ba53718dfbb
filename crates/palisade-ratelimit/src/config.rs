//! Rate limits from configuration (feature `serde`): TOML, YAML or JSON
//! files, or any other serde source (environment variables through a serde
//! environment reader), as users of gateway rate limiting expect. Unknown
//! fields, paths that could never match and unknown methods are refused.
//!
//! ```
//! use palisade_ratelimit::config::RateLimitConfig;
//!
//! let config: RateLimitConfig = toml::from_str(r#"
//!     [[policies]]
//!     name = "per_ip"
//!     key = "client_ip"
//!     quota = { count = 100, per = "minute", burst = 20 }
//!     exempt_paths = ["/health"]
//!     exempt_methods = ["OPTIONS"]
//!
//!     [[policies]]
//!     name = "failed_logins"
//!     key = ["client_ip", "route"]
//!     quota = { count = 5, period_secs = 900 }
//!     charge_statuses = [401]
//!
//!     [[policies]]
//!     name = "per_user"
//!     key = "subject"
//!     missing_key = "skip"
//!     tiers = { by = "role", default = "free", limits = { free = { count = 60, per = "minute" }, pro = { count = 600, per = "minute" }, internal = "unlimited" } }
//! "#)?;
//! let layer = config.build()?;
//! # let _ = layer;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use http::{HeaderName, StatusCode};
use palisade_core::ConfigError;
use palisade_core::exempt;
use palisade_core::key::KeyFn;
use serde::Deserialize;

use crate::gcra::Quota;
use crate::headers::HeaderOptions;
use crate::layer::{RateLimitLayer, RateLimitLayerBuilder};
use crate::memory::MemoryStore;
use crate::policy::{MissingKey, RateLimitPolicy, TierBy, TierLimit, Tiers, Weight};

/// A whole rate-limit layer.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// The policies, decided together.
    pub policies: Vec<PolicyConfig>,
    /// Which fields go on responses.
    #[serde(default)]
    pub headers: HeaderOptions,
    /// The most keys the in-memory store holds (default 1,000,000).
    #[serde(default)]
    pub capacity: Option<usize>,
}

/// One policy.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The name (letters, digits, `-`, `_`).
    pub name: String,
    /// What requests are keyed on.
    pub key: KeyFn,
    /// The quota; required unless `tiers` is given.
    #[serde(default)]
    pub quota: Option<QuotaConfig>,
    /// Quotas by tier.
    #[serde(default)]
    pub tiers: Option<TiersConfig>,
    /// How much a request costs.
    #[serde(default)]
    pub weight: Option<WeightConfig>,
    /// What to do with requests that cannot be keyed.
    #[serde(default)]
    pub missing_key: MissingKey,
    /// Exempt paths (`/health`, or a prefix ending in `*`).
    #[serde(default)]
    pub exempt_paths: Vec<String>,
    /// Exempt methods.
    #[serde(default)]
    pub exempt_methods: Vec<String>,
    /// Exempt client networks (CIDRs).
    #[serde(default)]
    pub exempt_networks: Vec<String>,
    /// Exempt principals, by subject (as authenticated before this layer).
    #[serde(default)]
    pub exempt_subjects: Vec<String>,
    /// Decide and report, never refuse.
    #[serde(default)]
    pub shadow: bool,
    /// The percentage of refusals enforced (default 100).
    #[serde(default = "hundred")]
    pub enforce_percent: u8,
    /// Charge only responses with these statuses (response-dependent).
    #[serde(default)]
    pub charge_statuses: Vec<u16>,
}

fn hundred() -> u8 {
    100
}

/// A quota: `count` per `per` (or per `period_secs`), bursts of `burst`
/// (default `count`).
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    /// Requests per period.
    pub count: u32,
    /// The period by name.
    #[serde(default)]
    pub per: Option<Period>,
    /// The period in seconds.
    #[serde(default)]
    pub period_secs: Option<u64>,
    /// The burst.
    #[serde(default)]
    pub burst: Option<u32>,
}

/// A named period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// One second.
    Second,
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One day.
    Day,
}

impl QuotaConfig {
    /// The quota, validated.
    pub fn quota(&self) -> Result<Quota, ConfigError> {
        let period = match (self.per, self.period_secs) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    "quota",
                    "give `per` or `period_secs`, not both",
                ));
            }
            (Some(Period::Second), None) => Duration::from_secs(1),
            (Some(Period::Minute), None) => Duration::from_secs(60),
            (Some(Period::Hour), None) => Duration::from_secs(3_600),
            (Some(Period::Day), None) => Duration::from_secs(86_400),
            (None, Some(secs)) => Duration::from_secs(secs),
            (None, None) => {
                return Err(ConfigError::invalid("quota", "give `per` or `period_secs`"));
            }
        };
        let quota = Quota::checked(self.count, period)?;
        match self.burst {
            Some(burst) => quota.burst(burst),
            None => Ok(quota),
        }
    }
}

/// Quotas by tier.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TiersConfig {
    /// How the tier is chosen: `"role"` or `{ claim = "plan" }`.
    pub by: TierByConfig,
    /// The tier of requests without a principal or a known tier.
    pub default: String,
    /// Each tier's quota, or `"unlimited"`.
    pub limits: BTreeMap<String, TierLimitConfig>,
}

/// How a tier is chosen.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum TierByConfig {
    /// `"role"`.
    Named(String),
    /// `{ claim = "plan" }`.
    Claim(ClaimConfig),
}

/// `{ claim = "plan" }`: the tier is this claim of the principal.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimConfig {
    /// The claim.
    pub claim: String,
}

/// A tier's limit.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(untagged)]
pub enum TierLimitConfig {
    /// `"unlimited"`.
    Named(Unlimited),
    /// A quota.
    Quota(QuotaConfig),
}

/// The word `unlimited`.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unlimited {
    /// No limit.
    Unlimited,
}

/// How much a request costs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, untagged)]
pub enum WeightConfig {
    /// `{ fixed = 5 }`.
    Fixed {
        /// The cost.
        fixed: u32,
    },
    /// `{ header = "x-cost", max = 100 }`.
    Header {
        /// The header.
        header: String,
        /// The largest cost.
        max: u32,
    },
    /// `{ content_length_bytes = 1024 }`.
    ContentLength {
        /// Bytes per unit.
        content_length_bytes: u64,
    },
}

impl RateLimitConfig {
    /// A layer builder with these policies (to add a Redis store, say).
    pub fn builder(&self) -> Result<RateLimitLayerBuilder, ConfigError> {
        let mut builder = RateLimitLayer::builder().headers(self.headers);
        if let Some(capacity) = self.capacity {
            builder = builder.store(MemoryStore::builder().capacity(capacity).build()?);
        }
        for policy in &self.policies {
            builder = builder.policy(policy.build()?);
        }
        Ok(builder)
    }

    /// The layer, with an in-memory store.
    pub fn build(&self) -> Result<RateLimitLayer, ConfigError> {
        self.builder()?.build()
    }
}

impl PolicyConfig {
    /// The policy, validated.
    pub fn build(&self) -> Result<RateLimitPolicy, ConfigError> {
        let mut builder = match (&self.quota, &self.tiers) {
            (Some(quota), None) => {
                RateLimitPolicy::builder(&self.name, self.key.clone(), quota.quota()?)
            }
            (None, Some(tiers)) => {
                let by = match &tiers.by {
                    TierByConfig::Named(name) if name == "role" => TierBy::Role,
                    TierByConfig::Named(other) => {
                        return Err(ConfigError::invalid(
                            "tiers.by",
                            format!("unknown `{other}`: use \"role\" or {{ claim = \"...\" }}"),
                        ));
                    }
                    TierByConfig::Claim(ClaimConfig { claim }) => TierBy::Claim(claim.clone()),
                };
                let limits = tiers
                    .limits
                    .iter()
                    .map(|(name, limit)| {
                        Ok((
                            name.clone(),
                            match limit {
                                TierLimitConfig::Named(Unlimited::Unlimited) => {
                                    TierLimit::Unlimited
                                }
                                TierLimitConfig::Quota(quota) => TierLimit::Limited(quota.quota()?),
                            },
                        ))
                    })
                    .collect::<Result<Vec<_>, ConfigError>>()?;
                RateLimitPolicy::tiered(
                    &self.name,
                    self.key.clone(),
                    Tiers::new(by, limits, &tiers.default)?,
                )
            }
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    "quota",
                    "give `quota` or `tiers`, not both",
                ));
            }
            (None, None) => return Err(ConfigError::invalid("quota", "give `quota` or `tiers`")),
        };
        if let Some(weight) = &self.weight {
            builder = builder.weight(match weight {
                WeightConfig::Fixed { fixed } => Weight::Fixed(*fixed),
                WeightConfig::Header { header, max } => Weight::Header {
                    name: HeaderName::try_from(header.as_str()).map_err(|_| {
                        ConfigError::invalid(
                            "weight.header",
                            format!("`{header}` is not a header name"),
                        )
                    })?,
                    max: *max,
                },
                WeightConfig::ContentLength {
                    content_length_bytes,
                } => Weight::ContentLength {
                    bytes: *content_length_bytes,
                },
            });
        }
        builder = builder
            .missing_key(self.missing_key)
            .shadow(self.shadow)
            .enforce_percent(self.enforce_percent);
        for path in &self.exempt_paths {
            builder = builder.exempt_path(exempt::path_from_config("exempt_paths", path)?);
        }
        for method in &self.exempt_methods {
            builder = builder.exempt_method(exempt::method_from_config("exempt_methods", method)?);
        }
        for network in &self.exempt_networks {
            builder = builder.exempt_network(network)?;
        }
        for subject in &self.exempt_subjects {
            builder = builder.exempt_subject(subject.clone());
        }
        if !self.charge_statuses.is_empty() {
            let statuses = self
                .charge_statuses
                .iter()
                .map(|code| {
                    StatusCode::from_u16(*code).map_err(|_| {
                        ConfigError::invalid("charge_statuses", format!("{code} is not a status"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            builder = builder.charge_when(move |status| statuses.contains(&status));
        }
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;

    #[test]
    fn bad_configurations_are_refused_with_the_option_named() {
        let parse = |text: &str| toml::from_str::<RateLimitConfig>(text);
        let no_quota = parse("[[policies]]\nname = \"a\"\nkey = \"client_ip\"")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(no_quota.build().is_err());
        let zero = parse(
            "[[policies]]\nname = \"a\"\nkey = \"ip\"\nquota = { count = 0, per = \"second\" }",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(zero.build().is_err());
        let bad_name = parse(
            "[[policies]]\nname = \"a b\"\nkey = \"ip\"\nquota = { count = 1, per = \"second\" }",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(bad_name.build().is_err());
        assert!(parse("[[policies]]\nname = \"a\"\nkey = \"nope\"\nquota = { count = 1, per = \"second\" }").is_err());
        assert!(parse("[[policies]]\nname = \"a\"\nkey = { header = \"authorization\" }\nquota = { count = 1, per = \"second\" }").is_err());
        assert!(parse("unknown = 1\npolicies = []").is_err());
        // Paths that could never match are refused, not ignored.
        let policy =
            "[[policies]]\nname = \"a\"\nkey = \"ip\"\nquota = { count = 1, per = \"second\" }\n";
        for paths in [r#"["health"]"#, r#"["/a/*/b"]"#, r#"["*"]"#] {
            let config =
                parse(&format!("{policy}exempt_paths = {paths}")).unwrap_or_else(|e| panic!("{e}"));
            assert!(config.build().is_err(), "{paths}");
        }
        // A typo inside a tier's claim is refused too.
        assert!(parse(&format!("{policy}tiers = {{ by = {{ claim = \"plan\", claims = \"x\" }}, default = \"free\", limits = {{ free = \"unlimited\" }} }}")).is_err());
    }

    #[test]
    fn exempt_methods_match_however_they_are_written() {
        let config: RateLimitConfig = toml::from_str(
            "[[policies]]\nname = \"a\"\nkey = \"global\"\nquota = { count = 1, per = \"hour\" }\nexempt_methods = [\"options\"]\nexempt_paths = [\"/health\", \"/static/*\"]\nexempt_subjects = [\"svc-backup\"]",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let policy = config.policies[0].build().unwrap_or_else(|e| panic!("{e}"));
        let head = |method: Method, path: &str| {
            http::Request::builder()
                .method(method)
                .uri(path)
                .body(())
                .unwrap_or_default()
        };
        for (method, path, exempt) in [
            (Method::OPTIONS, "/api", true),
            (Method::GET, "/health", true),
            (Method::GET, "/static/app.js", true),
            (Method::GET, "/api", false),
        ] {
            let request = head(method.clone(), path);
            let head = palisade_core::guard::RequestHead::of(&request);
            assert_eq!(policy.is_exempt(&head), exempt, "{method} {path}");
        }
        // A principal placed by authentication, by subject.
        for (subject, exempt) in [("svc-backup", true), ("svc-backup2", false)] {
            let mut request = head(Method::GET, "/api");
            request
                .extensions_mut()
                .insert(palisade_core::principal::Principal::builder(subject).build());
            let head = palisade_core::guard::RequestHead::of(&request);
            assert_eq!(policy.is_exempt(&head), exempt, "{subject}");
        }
    }
}
