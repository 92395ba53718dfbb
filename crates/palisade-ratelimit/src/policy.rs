//! Named policies: what is keyed, how much it may do, and when it applies.

use std::fmt;
use std::sync::Arc;

use http::{HeaderName, Method, StatusCode};
use ipnet::IpNet;
use palisade_core::ConfigError;
use palisade_core::exempt::Exemptions;
use palisade_core::guard::RequestHead;
use palisade_core::key::KeyFn;
use palisade_core::principal::Principal;

use crate::gcra::Quota;

/// How much a request costs.
#[derive(Clone)]
#[non_exhaustive]
pub enum Weight {
    /// Every request costs the same (default 1).
    Fixed(u32),
    /// The integer value of a request header, capped at `max` (missing: 1;
    /// unreadable or out of range: `max`).
    Header {
        /// The header.
        name: HeaderName,
        /// The largest cost a header may claim.
        max: u32,
    },
    /// One unit per started `bytes` of `Content-Length` (missing: 1, so pair
    /// it with a body-size limit such as tower-http's
    /// `RequestBodyLimitLayer` for chunked uploads).
    ContentLength {
        /// Bytes per unit.
        bytes: u64,
    },
    /// Any function of the request head.
    Custom(Arc<dyn Fn(&RequestHead<'_>) -> u32 + Send + Sync>),
}

impl fmt::Debug for Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Weight::Fixed(n) => f.debug_tuple("Fixed").field(n).finish(),
            Weight::Header { name, max } => f
                .debug_struct("Header")
                .field("name", name)
                .field("max", max)
                .finish(),
            Weight::ContentLength { bytes } => f
                .debug_struct("ContentLength")
                .field("bytes", bytes)
                .finish(),
            Weight::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl Weight {
    pub(crate) fn cost(&self, head: &RequestHead<'_>) -> u32 {
        let cost = match self {
            Weight::Fixed(n) => *n,
            // No header: the request's ordinary cost. A header that cannot
            // be read (garbage, out of range) costs the most, so nobody pays
            // less by sending nonsense.
            Weight::Header { name, max } => match head.headers().get(name) {
                None => 1,
                Some(value) => value
                    .to_str()
                    .ok()
                    .and_then(|v| v.trim().parse::<u32>().ok())
                    .map_or(*max, |n| n.min(*max)),
            },
            Weight::ContentLength { bytes } => head
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(1, |len| {
                    u32::try_from(len.div_ceil((*bytes).max(1))).unwrap_or(u32::MAX)
                }),
            Weight::Custom(f) => f(head),
        };
        cost.max(1)
    }
}

/// A tier's limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TierLimit {
    /// Limited by this quota.
    Limited(Quota),
    /// Not limited at all.
    Unlimited,
}

/// A function choosing a principal's tier by name.
pub type TierSelector = Arc<dyn Fn(&Principal) -> Option<String> + Send + Sync>;

/// How a principal's tier is chosen.
#[derive(Clone)]
#[non_exhaustive]
pub enum TierBy {
    /// The first of the principal's roles that names a tier.
    Role,
    /// A top-level string claim of the principal (such as `plan`).
    Claim(String),
    /// Any function of the principal.
    Custom(TierSelector),
}

impl fmt::Debug for TierBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TierBy::Role => f.write_str("Role"),
            TierBy::Claim(claim) => f.debug_tuple("Claim").field(claim).finish(),
            TierBy::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// Quotas by tier (`free`, `pro`, `unlimited`), chosen per principal.
#[derive(Clone, Debug)]
pub struct Tiers {
    by: TierBy,
    tiers: Vec<(String, TierLimit)>,
    default: usize,
}

impl Tiers {
    /// Tiers chosen by `by`; requests without a principal, or whose principal
    /// names no known tier, get `default`.
    pub fn new(
        by: TierBy,
        tiers: impl IntoIterator<Item = (impl Into<String>, TierLimit)>,
        default: &str,
    ) -> Result<Self, ConfigError> {
        let tiers: Vec<(String, TierLimit)> =
            tiers.into_iter().map(|(n, l)| (n.into(), l)).collect();
        let default = tiers
            .iter()
            .position(|(name, _)| name == default)
            .ok_or_else(|| {
                ConfigError::invalid(
                    "tiers",
                    format!("the default tier `{default}` is not defined"),
                )
            })?;
        Ok(Self { by, tiers, default })
    }

    pub(crate) fn select(&self, principal: Option<&Principal>) -> (usize, TierLimit) {
        let found = principal.and_then(|principal| match &self.by {
            TierBy::Role => principal
                .roles()
                .iter()
                .find_map(|role| self.tiers.iter().position(|(name, _)| name == role)),
            TierBy::Claim(claim) => principal
                .claims()
                .and_then(|claims| claims.get(claim))
                .and_then(|value| value.as_str())
                .and_then(|plan| self.tiers.iter().position(|(name, _)| name == plan)),
            TierBy::Custom(f) => {
                f(principal).and_then(|plan| self.tiers.iter().position(|(name, _)| *name == plan))
            }
        });
        let index = found.unwrap_or(self.default);
        (index, self.tiers[index].1)
    }

    pub(crate) fn limits(&self) -> impl Iterator<Item = &(String, TierLimit)> {
        self.tiers.iter()
    }
}

/// Where a policy's quota comes from.
#[derive(Clone, Debug)]
pub(crate) enum QuotaSource {
    Fixed(Quota),
    Tiers(Tiers),
}

/// Which responses a response-dependent policy charges.
pub type ChargePredicate = Arc<dyn Fn(StatusCode) -> bool + Send + Sync>;

/// What a policy does with a request it cannot key (no principal before
/// authentication, no client address).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum MissingKey {
    /// All such requests share one bucket (the default: nobody escapes the
    /// limit by hiding their key).
    #[default]
    Shared,
    /// The policy does not apply to them.
    Skip,
}

/// A function exempting requests by their head; see
/// [`RateLimitPolicyBuilder::exempt_if`].
pub type ExemptPredicate = Arc<dyn Fn(&RequestHead<'_>) -> bool + Send + Sync>;

/// One named policy: a key, a quota, and when it applies.
#[derive(Clone)]
pub struct RateLimitPolicy {
    pub(crate) name: Arc<str>,
    pub(crate) key: KeyFn,
    pub(crate) quota: QuotaSource,
    pub(crate) weight: Weight,
    pub(crate) missing_key: MissingKey,
    pub(crate) exempt: Exemptions,
    pub(crate) exempt_networks: Vec<IpNet>,
    pub(crate) exempt_subjects: Vec<Box<str>>,
    pub(crate) exempt_if: Option<ExemptPredicate>,
    pub(crate) shadow: bool,
    pub(crate) enforce_percent: u8,
    pub(crate) charge_when: Option<ChargePredicate>,
}

impl fmt::Debug for RateLimitPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitPolicy")
            .field("name", &self.name)
            .field("key", &self.key)
            .field("quota", &self.quota)
            .field("weight", &self.weight)
            .field("shadow", &self.shadow)
            .field("enforce_percent", &self.enforce_percent)
            .field("response_dependent", &self.charge_when.is_some())
            .finish_non_exhaustive()
    }
}

impl RateLimitPolicy {
    /// A policy named `name` (letters, digits, `-`, `_`; it appears in
    /// headers, problem bodies and store keys), keyed by `key`, limited by
    /// `quota`.
    pub fn builder(name: &str, key: KeyFn, quota: Quota) -> RateLimitPolicyBuilder {
        RateLimitPolicyBuilder {
            policy: RateLimitPolicy {
                name: name.into(),
                key,
                quota: QuotaSource::Fixed(quota),
                weight: Weight::Fixed(1),
                missing_key: MissingKey::Shared,
                exempt: Exemptions::default(),
                exempt_networks: Vec::new(),
                exempt_subjects: Vec::new(),
                exempt_if: None,
                shadow: false,
                enforce_percent: 100,
                charge_when: None,
            },
        }
    }

    /// A policy whose quota depends on the principal's tier.
    pub fn tiered(name: &str, key: KeyFn, tiers: Tiers) -> RateLimitPolicyBuilder {
        let mut builder = Self::builder(name, key, Quota::per_second(1));
        builder.policy.quota = QuotaSource::Tiers(tiers);
        builder
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    #[inline]
    pub(crate) fn is_exempt(&self, head: &RequestHead<'_>) -> bool {
        if self.exempt.matches_request(head.method(), head.uri()) {
            return true;
        }
        if !self.exempt_networks.is_empty()
            && let Some(client) = head.client_ip()
            && client.is_resolved()
            && self
                .exempt_networks
                .iter()
                .any(|net| net.contains(&client.ip()))
        {
            return true;
        }
        if !self.exempt_subjects.is_empty()
            && let Some(principal) = head.principal()
            && self
                .exempt_subjects
                .iter()
                .any(|subject| **subject == *principal.subject())
        {
            return true;
        }
        self.exempt_if.as_ref().is_some_and(|exempt| exempt(head))
    }
}

/// Builds a [`RateLimitPolicy`].
#[derive(Debug)]
pub struct RateLimitPolicyBuilder {
    policy: RateLimitPolicy,
}

impl RateLimitPolicyBuilder {
    /// How much each request costs (default 1).
    pub fn weight(mut self, weight: Weight) -> Self {
        self.policy.weight = weight;
        self
    }

    /// What to do with requests that cannot be keyed (default: share one bucket).
    pub fn missing_key(mut self, missing: MissingKey) -> Self {
        self.policy.missing_key = missing;
        self
    }

    /// Exempts a path (`/health`), or every path under a prefix (`/static/*`).
    pub fn exempt_path(mut self, path: impl Into<String>) -> Self {
        self.policy.exempt.add_path(path);
        self
    }

    /// Exempts a method (such as `OPTIONS` for CORS preflights).
    pub fn exempt_method(mut self, method: Method) -> Self {
        self.policy.exempt.add_method(method);
        self
    }

    /// Exempts clients in a network (CIDR). Only addresses resolved as the
    /// client's own count: a proxy's fallback address is never exempt.
    pub fn exempt_network(mut self, cidr: &str) -> Result<Self, ConfigError> {
        let net = cidr
            .trim()
            .parse::<IpNet>()
            .or_else(|_| cidr.trim().parse::<std::net::IpAddr>().map(IpNet::from))
            .map_err(|_| {
                ConfigError::invalid("exempt_networks", format!("{cidr:?} is not a CIDR"))
            })?;
        self.policy.exempt_networks.push(net);
        Ok(self)
    }

    /// Exempts an authenticated principal by subject (a service account,
    /// a monitor): only a principal an authentication layer placed on the
    /// request before this one counts, never anything the client claims.
    pub fn exempt_subject(mut self, subject: impl Into<String>) -> Self {
        self.policy
            .exempt_subjects
            .push(subject.into().into_boxed_str());
        self
    }

    /// Exempts the requests this function accepts: any other allow-list
    /// (tenants, API key ids, internal routes), read from the request head
    /// and the principal on it. Called for every request the policy sees;
    /// one function per policy (a second call replaces the first).
    pub fn exempt_if(
        mut self,
        exempt: impl Fn(&RequestHead<'_>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.policy.exempt_if = Some(Arc::new(exempt));
        self
    }

    /// Decides and reports, never refuses.
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.policy.shadow = shadow;
        self
    }

    /// Enforces refusals for this percentage of requests (default 100); the
    /// others are let through and reported, as in shadow mode.
    pub fn enforce_percent(mut self, percent: u8) -> Self {
        self.policy.enforce_percent = percent;
        self
    }

    /// Charges only responses whose status matches (fail2ban style: count
    /// failed logins, `|s| s == 401`). A key whose budget is spent is still
    /// refused before the handler runs.
    pub fn charge_when(
        mut self,
        predicate: impl Fn(StatusCode) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.policy.charge_when = Some(Arc::new(predicate));
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<RateLimitPolicy, ConfigError> {
        let policy = self.policy;
        if policy.name.is_empty()
            || policy.name.len() > 64
            || !policy
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ConfigError::invalid(
                "policy name",
                format!(
                    "{:?}: use 1 to 64 letters, digits, `-` or `_`",
                    &*policy.name
                ),
            ));
        }
        if policy.enforce_percent > 100 {
            return Err(ConfigError::invalid(
                "enforce_percent",
                "must be between 0 and 100",
            ));
        }
        if let Weight::Fixed(0) = policy.weight {
            return Err(ConfigError::invalid("weight", "must be at least 1"));
        }
        if let Weight::ContentLength { bytes: 0 } = policy.weight {
            return Err(ConfigError::invalid(
                "weight",
                "bytes per unit must be at least 1",
            ));
        }
        Ok(policy)
    }
}

/// A policy's Redis namespace (`rl:<name>`): one place for both the layer,
/// which computes it once per policy, and `RedisStore::check`.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn redis_namespace(name: &str) -> String {
    format!("rl:{name}")
}
