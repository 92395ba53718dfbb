//! The layers from configuration files (feature `serde`): TOML, YAML, JSON
//! or environment.
//!
//! ```
//! use palisade_concurrency::config::{ConcurrencyLimitConfig, LoadShedConfig};
//!
//! let per_client: ConcurrencyLimitConfig = toml::from_str(r#"
//!     key = "client_ip"
//!     max_in_flight = 8
//!     queue = { max_waiting = 16, max_wait_ms = 250 }
//!     missing_key = "shared"
//!     exempt_paths = ["/health"]
//!     exempt_methods = ["OPTIONS"]
//! "#)?;
//! let per_client = per_client.build()?;
//!
//! let shed: LoadShedConfig = toml::from_str(r#"
//!     name = "api"
//!     adaptive = { algorithm = "gradient2", initial_limit = 100, min_limit = 10, max_limit = 2000 }
//!     sample_window_ms = 100
//!     classes = [
//!         { name = "critical", share_percent = 100 },
//!         { name = "default", share_percent = 80 },
//!         { name = "bulk", share_percent = 50 },
//!     ]
//!     rules = [
//!         { class = "critical", path_prefix = "/payments" },
//!         { class = "critical", role = "admin" },
//!         { class = "bulk", header = "x-priority", value = "bulk" },
//!     ]
//!     exempt_paths = ["/health"]
//! "#)?;
//! let shed = shed.build()?;
//! # let _ = (per_client, shed);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use palisade_core::ConfigError;
use palisade_core::exempt;
use palisade_core::key::KeyFn;
use serde::Deserialize;

use crate::adaptive::{Aimd, Gradient2};
use crate::limit::{ConcurrencyLimitLayer, MissingKey};
use crate::shed::LoadShedLayer;

/// A [`ConcurrencyLimitLayer`].
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyLimitConfig {
    /// What requests are keyed on (default `"global"`).
    #[serde(default = "global_key")]
    pub key: KeyFn,
    /// The most requests in flight per key.
    pub max_in_flight: u32,
    /// Let requests over the limit wait.
    #[serde(default)]
    pub queue: Option<QueueConfig>,
    /// What to do with requests that cannot be keyed: `shared` (default),
    /// `skip` or `refuse`.
    #[serde(default)]
    pub missing_key: MissingKey,
    /// Exempt paths (`/health`, or a prefix ending in `*`).
    #[serde(default)]
    pub exempt_paths: Vec<String>,
    /// Exempt methods.
    #[serde(default)]
    pub exempt_methods: Vec<String>,
    /// The `Retry-After` of refusals, in seconds (default 1).
    #[serde(default)]
    pub retry_after_secs: Option<u64>,
    /// The most keys tracked at once (default 100,000).
    #[serde(default)]
    pub store_capacity: Option<usize>,
}

fn global_key() -> KeyFn {
    KeyFn::Global
}

/// A bounded FIFO queue per key.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// The most requests waiting per key.
    pub max_waiting: u32,
    /// The longest a request waits, in milliseconds.
    pub max_wait_ms: u64,
}

/// A [`LoadShedLayer`].
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadShedConfig {
    /// The layer's name in metrics (default `load_shed`).
    #[serde(default)]
    pub name: Option<String>,
    /// A fixed capacity; give this or `adaptive`.
    #[serde(default)]
    pub capacity: Option<u32>,
    /// An adaptive capacity; give this or `capacity`.
    #[serde(default)]
    pub adaptive: Option<AdaptiveConfig>,
    /// The adaptive limit's window length in milliseconds (default 100).
    #[serde(default)]
    pub sample_window_ms: Option<u64>,
    /// The fewest completions in an adaptive window (default 10).
    #[serde(default)]
    pub min_window_samples: Option<u32>,
    /// The priority classes and their shares.
    #[serde(default)]
    pub classes: Vec<ClassConfig>,
    /// The class of requests no rule matches (default `default`).
    #[serde(default)]
    pub default_class: Option<String>,
    /// Classification rules, first match wins.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Exempt paths.
    #[serde(default)]
    pub exempt_paths: Vec<String>,
    /// Exempt methods.
    #[serde(default)]
    pub exempt_methods: Vec<String>,
    /// The `Retry-After` of shed requests, in seconds (default 1).
    #[serde(default)]
    pub retry_after_secs: Option<u64>,
}

/// A priority class.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassConfig {
    /// The class's name.
    pub name: String,
    /// Its share of the capacity, 1 to 100 percent.
    pub share_percent: u32,
}

/// A classification rule: `class` and exactly one of `path_prefix`, `role`,
/// or `header` with `value`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The class of matching requests.
    pub class: String,
    /// Paths starting with this.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Principals with this role.
    #[serde(default)]
    pub role: Option<String>,
    /// A header's name (with `value`).
    #[serde(default)]
    pub header: Option<String>,
    /// The header's value.
    #[serde(default)]
    pub value: Option<String>,
}

/// An adaptive algorithm and its parameters; unset ones take the
/// algorithm's defaults.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(tag = "algorithm", rename_all = "snake_case")]
pub enum AdaptiveConfig {
    /// [`Aimd`].
    Aimd(AimdConfig),
    /// [`Gradient2`].
    Gradient2(Gradient2Config),
}

/// [`Aimd`]'s parameters.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AimdConfig {
    /// The starting limit.
    pub initial_limit: Option<u32>,
    /// The lowest limit.
    pub min_limit: Option<u32>,
    /// The highest limit.
    pub max_limit: Option<u32>,
    /// The growth after a healthy, busy window.
    pub increase: Option<u32>,
    /// The factor after an overloaded window.
    pub backoff_ratio: Option<f64>,
    /// The average latency above which a window is overloaded, in ms.
    pub latency_threshold_ms: Option<u64>,
}

/// [`Gradient2`]'s parameters.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gradient2Config {
    /// The starting limit.
    pub initial_limit: Option<u32>,
    /// The lowest limit.
    pub min_limit: Option<u32>,
    /// The highest limit.
    pub max_limit: Option<u32>,
    /// How far each window moves the limit toward its target.
    pub smoothing: Option<f64>,
    /// How much slower than usual requests may be before the limit shrinks.
    pub tolerance: Option<f64>,
    /// The growth allowed per window at normal latency.
    pub queue_size: Option<u32>,
    /// Over how many windows the long-term latency is averaged.
    pub long_window: Option<u32>,
}

fn methods(names: &[String], field: &'static str) -> Result<Vec<Method>, ConfigError> {
    names
        .iter()
        .map(|name| exempt::method_from_config(field, name))
        .collect()
}

impl ConcurrencyLimitConfig {
    /// The layer, validated.
    pub fn build(&self) -> Result<ConcurrencyLimitLayer, ConfigError> {
        let mut builder = ConcurrencyLimitLayer::builder()
            .key(self.key.clone())
            .max_in_flight(self.max_in_flight)
            .missing_key(self.missing_key);
        if let Some(queue) = self.queue {
            builder = builder.queue(queue.max_waiting, Duration::from_millis(queue.max_wait_ms));
        }
        for path in &self.exempt_paths {
            builder = builder.exempt_path(exempt::path_from_config("exempt_paths", path)?);
        }
        for method in methods(&self.exempt_methods, "exempt_methods")? {
            builder = builder.exempt_method(method);
        }
        if let Some(secs) = self.retry_after_secs {
            builder = builder.retry_after(Duration::from_secs(secs));
        }
        if let Some(capacity) = self.store_capacity {
            builder = builder.store_capacity(capacity);
        }
        builder.build()
    }
}

impl AdaptiveConfig {
    fn apply(
        self,
        builder: crate::LoadShedLayerBuilder,
    ) -> Result<crate::LoadShedLayerBuilder, ConfigError> {
        Ok(match self {
            AdaptiveConfig::Aimd(c) => {
                let mut aimd = Aimd::builder();
                if let Some(v) = c.initial_limit {
                    aimd = aimd.initial_limit(v);
                }
                if let Some(v) = c.min_limit {
                    aimd = aimd.min_limit(v);
                }
                if let Some(v) = c.max_limit {
                    aimd = aimd.max_limit(v);
                }
                if let Some(v) = c.increase {
                    aimd = aimd.increase(v);
                }
                if let Some(v) = c.backoff_ratio {
                    aimd = aimd.backoff_ratio(v);
                }
                if let Some(ms) = c.latency_threshold_ms {
                    aimd = aimd.latency_threshold(Duration::from_millis(ms));
                }
                builder.adaptive(aimd.build()?)
            }
            AdaptiveConfig::Gradient2(c) => {
                let mut gradient = Gradient2::builder();
                if let Some(v) = c.initial_limit {
                    gradient = gradient.initial_limit(v);
                }
                if let Some(v) = c.min_limit {
                    gradient = gradient.min_limit(v);
                }
                if let Some(v) = c.max_limit {
                    gradient = gradient.max_limit(v);
                }
                if let Some(v) = c.smoothing {
                    gradient = gradient.smoothing(v);
                }
                if let Some(v) = c.tolerance {
                    gradient = gradient.tolerance(v);
                }
                if let Some(v) = c.queue_size {
                    gradient = gradient.queue_size(v);
                }
                if let Some(v) = c.long_window {
                    gradient = gradient.long_window(v);
                }
                builder.adaptive(gradient.build()?)
            }
        })
    }
}

impl LoadShedConfig {
    /// The layer, validated.
    pub fn build(&self) -> Result<LoadShedLayer, ConfigError> {
        let mut builder = LoadShedLayer::builder();
        if let Some(name) = &self.name {
            builder = builder.name(name.clone());
        }
        if let Some(capacity) = self.capacity {
            builder = builder.capacity(capacity);
        }
        if let Some(adaptive) = self.adaptive {
            builder = adaptive.apply(builder)?;
        }
        if self.sample_window_ms.is_some() || self.min_window_samples.is_some() {
            builder = builder.sample_window(
                Duration::from_millis(self.sample_window_ms.unwrap_or(100)),
                self.min_window_samples.unwrap_or(10),
            );
        }
        for class in &self.classes {
            builder = builder.class(class.name.clone(), class.share_percent);
        }
        if let Some(default) = &self.default_class {
            builder = builder.default_class(default.clone());
        }
        for rule in &self.rules {
            builder = match (&rule.path_prefix, &rule.role, &rule.header, &rule.value) {
                (Some(prefix), None, None, None) => {
                    builder.route_prefix(prefix.clone(), rule.class.clone())
                }
                (None, Some(role), None, None) => builder.role(role.clone(), rule.class.clone()),
                (None, None, Some(header), Some(value)) => {
                    let name = HeaderName::try_from(header.as_str()).map_err(|_| {
                        ConfigError::invalid(
                            "rules.header",
                            format!("`{header}` is not a header name"),
                        )
                    })?;
                    let value = HeaderValue::try_from(value.as_str()).map_err(|_| {
                        ConfigError::invalid(
                            "rules.value",
                            format!("`{value}` is not a header value"),
                        )
                    })?;
                    builder.header(name, value, rule.class.clone())
                }
                _ => {
                    return Err(ConfigError::invalid(
                        "rules",
                        format!(
                            "a rule for `{}` needs exactly one of `path_prefix`, `role`, or `header` with `value`",
                            rule.class
                        ),
                    ));
                }
            };
        }
        for path in &self.exempt_paths {
            builder = builder.exempt_path(exempt::path_from_config("exempt_paths", path)?);
        }
        for method in methods(&self.exempt_methods, "exempt_methods")? {
            builder = builder.exempt_method(method);
        }
        if let Some(secs) = self.retry_after_secs {
            builder = builder.retry_after(Duration::from_secs(secs));
        }
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_configurations_are_refused_with_the_option_named() {
        let limit = |text: &str| toml::from_str::<ConcurrencyLimitConfig>(text);
        let shed = |text: &str| toml::from_str::<LoadShedConfig>(text);
        assert!(
            limit("max_in_flight = 0")
                .map(|c| c.build().is_err())
                .unwrap_or(false)
        );
        assert!(limit("key = \"nope\"\nmax_in_flight = 1").is_err());
        assert!(limit("max_in_flight = 1\nsurprise = true").is_err());
        assert!(
            limit("max_in_flight = 1\nqueue = { max_waiting = 0, max_wait_ms = 10 }")
                .map(|c| c.build().is_err())
                .unwrap_or(false)
        );
        assert!(
            shed("").map(|c| c.build().is_err()).unwrap_or(false),
            "no capacity"
        );
        assert!(
            shed("capacity = 10\nclasses = [{ name = \"bulk\", share_percent = 50 }]")
                .map(|c| c.build().is_err())
                .unwrap_or(false),
            "no default class"
        );
        assert!(
            shed("capacity = 10\nrules = [{ class = \"default\", role = \"a\", path_prefix = \"/b\" }]")
                .map(|c| c.build().is_err())
                .unwrap_or(false),
            "two matchers in one rule"
        );
        assert!(shed("adaptive = { algorithm = \"pid\" }").is_err());
        assert!(shed("adaptive = { algorithm = \"aimd\", extra = 1 }").is_err());
        assert!(
            shed("adaptive = { algorithm = \"aimd\", backoff_ratio = 2.0 }")
                .map(|c| c.build().is_err())
                .unwrap_or(false)
        );
    }

    #[test]
    fn every_option_reaches_the_layer() {
        let config: LoadShedConfig = toml::from_str(
            r#"
            adaptive = { algorithm = "aimd", initial_limit = 40, min_limit = 4, max_limit = 80, latency_threshold_ms = 200 }
            classes = [{ name = "critical", share_percent = 100 }, { name = "rest", share_percent = 25 }]
            default_class = "rest"
            "#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let handle = config.build().unwrap_or_else(|e| panic!("{e}")).handle();
        assert_eq!(handle.limit(), 40);
        assert_eq!(handle.class_limit("rest"), Some(10));
        let limit: ConcurrencyLimitConfig = toml::from_str(
            "key = [\"tenant\", \"route\"]\nmax_in_flight = 3\nretry_after_secs = 5",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(limit.build().map(|l| l.max_in_flight()).ok(), Some(3));
    }
}
