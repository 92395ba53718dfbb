//! Breakers from configuration files (feature `serde`): TOML, YAML, JSON or
//! environment.
//!
//! ```
//! use palisade_breaker::config::BreakerConfig;
//!
//! let config: BreakerConfig = toml::from_str(r#"
//!     name = "inventory"
//!     per_key = "route"
//!     window = { duration_secs = 30, buckets = 10 }
//!     failure_rate = 0.5
//!     slow_call_ms = 800
//!     slow_call_rate = 0.8
//!     minimum_calls = 20
//!     half_open_probes = 2
//!     open_ms = 2000
//!     max_open_ms = 30000
//!     failure_statuses = [408]
//! "#)?;
//! let layer = config.build()?;
//! # let _ = layer;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::Duration;

use http::StatusCode;
use palisade_core::ConfigError;
use palisade_core::key::KeyFn;
use serde::Deserialize;

use crate::classify::DefaultClassifier;
use crate::layer::CircuitBreakerLayer;
use crate::policy::BreakerPolicy;
use crate::window::Window;

/// A whole breaker layer. Fields left out keep the defaults of
/// [`BreakerPolicy::builder`] and [`CircuitBreakerLayer::builder`].
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// The breaker's name, for events and metrics.
    pub name: String,
    /// One breaker per key of this kind (see core's `KeyFn`).
    #[serde(default)]
    pub per_key: Option<KeyFn>,
    /// The most per-key breakers held at once.
    #[serde(default)]
    pub max_keys: Option<usize>,
    /// Seconds after which an unused, closed per-key breaker is dropped.
    #[serde(default)]
    pub idle_after_secs: Option<u64>,
    /// The window: `{ calls = 100 }` or `{ duration_secs = 30, buckets = 10 }`.
    #[serde(default)]
    pub window: Option<WindowConfig>,
    /// The failure rate that opens (0 to 1); `0` turns it off.
    #[serde(default)]
    pub failure_rate: Option<f64>,
    /// Calls this slow, in milliseconds, are slow calls.
    #[serde(default)]
    pub slow_call_ms: Option<u64>,
    /// The slow-call rate that opens (with `slow_call_ms`).
    #[serde(default)]
    pub slow_call_rate: Option<f64>,
    /// The fewest calls before rates are judged.
    #[serde(default)]
    pub minimum_calls: Option<u32>,
    /// Also opens after this many failures in a row.
    #[serde(default)]
    pub consecutive_failures: Option<u32>,
    /// Probes while half-open.
    #[serde(default)]
    pub half_open_probes: Option<u32>,
    /// The first open duration, in milliseconds.
    #[serde(default)]
    pub open_ms: Option<u64>,
    /// The longest open duration, in milliseconds.
    #[serde(default)]
    pub max_open_ms: Option<u64>,
    /// How much longer each consecutive opening lasts.
    #[serde(default)]
    pub backoff_multiplier: Option<f64>,
    /// The share of each open duration taken off at random.
    #[serde(default)]
    pub jitter: Option<f64>,
    /// HTTP statuses below 500 that count as failures (e.g. 408, 429).
    #[serde(default)]
    pub failure_statuses: Vec<u16>,
    /// HTTP statuses of 500 and above that are ignored (e.g. 501).
    #[serde(default)]
    pub ignore_statuses: Vec<u16>,
    /// The gRPC codes that count as failures, replacing the default list.
    #[serde(default)]
    pub grpc_failure_codes: Option<Vec<u8>>,
}

/// A window in configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum WindowConfig {
    /// The last `calls` calls.
    Count {
        /// How many calls.
        calls: u32,
    },
    /// The last `duration_secs` seconds, in `buckets` slices (default 10).
    Time {
        /// How far back, in seconds.
        duration_secs: u64,
        /// How many slices.
        #[serde(default = "ten")]
        buckets: u32,
    },
}

fn ten() -> u32 {
    10
}

impl BreakerConfig {
    /// The policy this configuration describes.
    pub fn policy(&self) -> Result<BreakerPolicy, ConfigError> {
        let mut builder = BreakerPolicy::builder();
        if let Some(window) = &self.window {
            builder = builder.window(match *window {
                WindowConfig::Count { calls } => Window::count(calls),
                WindowConfig::Time {
                    duration_secs,
                    buckets,
                } => Window::Time {
                    duration: Duration::from_secs(duration_secs),
                    buckets,
                },
            });
        }
        match self.failure_rate {
            Some(0.0) => builder = builder.no_failure_rate(),
            Some(rate) => builder = builder.failure_rate(rate),
            None => {}
        }
        match (self.slow_call_ms, self.slow_call_rate) {
            (Some(ms), Some(rate)) => builder = builder.slow_calls(Duration::from_millis(ms), rate),
            (None, None) => {}
            _ => {
                return Err(ConfigError::invalid(
                    "slow_call_ms",
                    "give `slow_call_ms` and `slow_call_rate` together",
                ));
            }
        }
        if let Some(calls) = self.minimum_calls {
            builder = builder.minimum_calls(calls);
        }
        if let Some(failures) = self.consecutive_failures {
            builder = builder.consecutive_failures(failures);
        }
        if let Some(probes) = self.half_open_probes {
            builder = builder.half_open_probes(probes);
        }
        if let Some(ms) = self.open_ms {
            builder = builder.open_duration(Duration::from_millis(ms));
        }
        if let Some(ms) = self.max_open_ms {
            builder = builder.max_open_duration(Duration::from_millis(ms));
        }
        if let Some(multiplier) = self.backoff_multiplier {
            builder = builder.backoff_multiplier(multiplier);
        }
        if let Some(jitter) = self.jitter {
            builder = builder.jitter(jitter);
        }
        builder.build()
    }

    /// The classifier this configuration describes.
    pub fn classifier(&self) -> Result<DefaultClassifier, ConfigError> {
        let status = |code: u16| {
            StatusCode::from_u16(code).map_err(|_| {
                ConfigError::invalid("statuses", format!("{code} is not an HTTP status"))
            })
        };
        let mut classifier = DefaultClassifier::new();
        for &code in &self.failure_statuses {
            classifier = classifier.failure_status(status(code)?);
        }
        for &code in &self.ignore_statuses {
            classifier = classifier.ignore_status(status(code)?);
        }
        if let Some(codes) = &self.grpc_failure_codes {
            if let Some(code) = codes.iter().find(|&&c| c > 16) {
                return Err(ConfigError::invalid(
                    "grpc_failure_codes",
                    format!("{code} is not a gRPC status code"),
                ));
            }
            classifier = classifier.grpc_failure_codes(codes);
        }
        Ok(classifier)
    }

    /// Validates and builds the layer.
    pub fn build(&self) -> Result<CircuitBreakerLayer, ConfigError> {
        let mut builder = CircuitBreakerLayer::builder(self.name.clone())
            .policy(self.policy()?)
            .classifier(self.classifier()?);
        if let Some(key) = &self.per_key {
            builder = builder.per_key(key.clone());
        }
        if let Some(keys) = self.max_keys {
            builder = builder.max_keys(keys);
        }
        if let Some(secs) = self.idle_after_secs {
            builder = builder.idle_after(Duration::from_secs(secs));
        }
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_window_and_statuses_load_from_toml() {
        let config: Result<BreakerConfig, _> = toml::from_str(
            r#"
            name = "payments"
            window = { calls = 50 }
            consecutive_failures = 5
            failure_rate = 0
            grpc_failure_codes = [14]
            "#,
        );
        let config = config.map_err(|e| e.to_string());
        let Ok(config) = config else {
            panic!("config parses: {config:?}")
        };
        let Ok(policy) = config.policy() else {
            panic!("valid policy")
        };
        assert_eq!(policy.window(), Window::count(50));
        assert!(config.build().is_ok());
    }

    #[test]
    fn bad_values_are_configuration_errors() {
        let parse = |text: &str| toml::from_str::<BreakerConfig>(text).map_err(|e| e.to_string());
        let Ok(config) = parse("name = \"x\"\nfailure_statuses = [1000]") else {
            panic!("parses")
        };
        assert!(config.build().is_err());
        let Ok(config) = parse("name = \"x\"\nslow_call_ms = 100") else {
            panic!("parses")
        };
        assert!(config.build().is_err());
        assert!(parse("name = \"x\"\nunknown = 1").is_err());
    }
}
