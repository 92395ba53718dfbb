//! Connection settings, loadable with serde.

use std::fmt;
use std::time::Duration;

/// Standalone Redis or a Redis Cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum RedisMode {
    /// One server (or a primary behind a fixed address).
    #[default]
    Standalone,
    /// A Redis Cluster; `urls` are seed nodes.
    Cluster,
}

/// How to reach Redis.
///
/// ```toml
/// urls = ["redis://10.0.0.10:6379"]
/// mode = "standalone"
/// call_timeout_ms = 50
/// connect_timeout_ms = 1000
/// key_prefix = "palisade"
/// breaker_cooldown_ms = 250
/// ```
///
/// `Debug` hides passwords in URLs.
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct RedisConfig {
    /// Server URLs (`redis://[:password@]host:port[/db]`, `rediss://` for TLS
    /// when the `redis` crate's TLS feature is enabled). One for standalone,
    /// seed nodes for a cluster.
    pub urls: Vec<String>,
    /// Standalone or cluster.
    pub mode: RedisMode,
    /// The longest a single call may take before it fails with a timeout
    /// (default 50 ms): Redis sits on the request path.
    pub call_timeout_ms: u64,
    /// The longest a connection attempt may take (default 1000 ms).
    pub connect_timeout_ms: u64,
    /// The prefix of every key (default `palisade`).
    pub key_prefix: String,
    /// After three calls in a row found Redis unavailable, calls fail at
    /// once for this long (default 250 ms), then one call probes: a dead
    /// Redis costs requests nothing but their failure policy. 0 turns the
    /// breaker off; at most one hour. One breaker serves the connection and
    /// all its clones (every node of a cluster included: one dead node opens
    /// it for all, and a probe a healthy node answers closes it until the
    /// dead node's calls open it again).
    pub breaker_cooldown_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            urls: vec!["redis://127.0.0.1:6379".to_owned()],
            mode: RedisMode::Standalone,
            call_timeout_ms: 50,
            connect_timeout_ms: 1_000,
            key_prefix: "palisade".to_owned(),
            breaker_cooldown_ms: 250,
        }
    }
}

impl RedisConfig {
    /// One standalone server.
    pub fn standalone(url: impl Into<String>) -> Self {
        Self {
            urls: vec![url.into()],
            ..Self::default()
        }
    }

    /// A cluster, from its seed nodes.
    pub fn cluster<I, T>(seeds: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        Self {
            urls: seeds.into_iter().map(Into::into).collect(),
            mode: RedisMode::Cluster,
            ..Self::default()
        }
    }

    /// Sets the per-call timeout.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Sets the connect timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Sets the key prefix.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Sets the breaker's cooldown (zero: no breaker).
    pub fn breaker_cooldown(mut self, cooldown: Duration) -> Self {
        self.breaker_cooldown_ms = u64::try_from(cooldown.as_millis()).unwrap_or(u64::MAX);
        self
    }

    pub(crate) fn call_timeout_duration(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }

    pub(crate) fn breaker_cooldown_duration(&self) -> Duration {
        Duration::from_millis(self.breaker_cooldown_ms)
    }

    pub(crate) fn connect_timeout_duration(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

/// A URL fit for logs: `redis://user:secret@host` reads
/// `redis://user:***@host`, a `pass`/`password` query parameter reads `***`,
/// and a URL that does not parse (a password with an unencoded `/`, say)
/// keeps only its scheme.
pub(crate) fn redact_url(text: &str) -> String {
    let Ok(mut url) = url::Url::parse(text) else {
        return match text.split_once("://") {
            Some((scheme, _))
                if scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
            {
                format!("{scheme}://***")
            }
            _ => "***".to_owned(),
        };
    };
    if url.password().is_some() && url.set_password(Some("***")).is_err() {
        return format!("{}://***", url.scheme());
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(name, value)| {
                let secret =
                    name.eq_ignore_ascii_case("pass") || name.eq_ignore_ascii_case("password");
                (
                    name.into_owned(),
                    if secret {
                        "***".to_owned()
                    } else {
                        value.into_owned()
                    },
                )
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<String> = self.urls.iter().map(|u| redact_url(u)).collect();
        f.debug_struct("RedisConfig")
            .field("urls", &urls)
            .field("mode", &self.mode)
            .field("call_timeout_ms", &self.call_timeout_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("key_prefix", &self.key_prefix)
            .field("breaker_cooldown_ms", &self.breaker_cooldown_ms)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_passwords() {
        let config = RedisConfig::standalone("redis://app:hunter2@10.0.0.1:6379/0");
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("redis://app:***@10.0.0.1:6379/0"), "{debug}");
        assert_eq!(redact_url("redis://:pw@h:1"), "redis://:***@h:1");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
        let unix = redact_url("redis+unix:///run/redis.sock?db=1&pass=hunter2");
        assert!(!unix.contains("hunter2"), "{unix}");
        assert!(unix.contains("db=1"), "{unix}");
        let slash = redact_url("redis://app:hun/ter2@h:1");
        assert!(!slash.contains("ter2"), "{slash}");
        assert!(!redact_url("not a url hunter2").contains("hunter2"));
    }

    #[test]
    fn config_loads_from_toml() {
        let config: RedisConfig = toml::from_str(
            r#"
            urls = ["redis://a:7000", "redis://b:7001"]
            mode = "cluster"
            call_timeout_ms = 20
            "#,
        )
        .unwrap_or_default();
        assert_eq!(config.mode, RedisMode::Cluster);
        assert_eq!(config.urls.len(), 2);
        assert_eq!(config.call_timeout_duration(), Duration::from_millis(20));
        assert_eq!(config.key_prefix, "palisade");
        assert!(toml::from_str::<RedisConfig>("unknown = 1").is_err());
    }
}
