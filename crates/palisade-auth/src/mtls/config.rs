//! [`MtlsConfig`]: what a client certificate must carry, and which proxies
//! may report one in `x-forwarded-client-cert`.

use std::net::IpAddr;

use http::Extensions;
use palisade_core::ConfigError;
use palisade_core::client_ip::ClientIpResolver;

/// How client certificates become principals. Cheap to clone.
///
/// ```
/// use palisade_auth::mtls::MtlsConfig;
///
/// // Behind an Envoy sidecar on the same host that terminates mTLS and
/// // forwards `x-forwarded-client-cert`.
/// let config = MtlsConfig::builder()
///     .require_spiffe(true)
///     .trusted_proxies(["127.0.0.1/32", "::1"])
///     .xfcc(true)
///     .build()?;
/// # let _ = config;
/// # Ok::<(), palisade_core::ConfigError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct MtlsConfig {
    require_spiffe: bool,
    xfcc: bool,
    proxies: ClientIpResolver,
}

impl MtlsConfig {
    /// A builder: no SPIFFE id required, no proxy trusted, XFCC ignored.
    pub fn builder() -> MtlsConfigBuilder {
        MtlsConfigBuilder::default()
    }

    /// Whether a certificate without a SPIFFE id is refused.
    pub fn requires_spiffe(&self) -> bool {
        self.require_spiffe
    }

    /// Whether `x-forwarded-client-cert` is believed on a request with these
    /// extensions: XFCC is on and the connection's peer is a trusted proxy.
    pub fn honours_xfcc(&self, extensions: &Extensions) -> bool {
        self.xfcc && super::peer_ip(extensions).is_some_and(|ip| self.is_trusted(ip))
    }

    /// Whether `ip` is a trusted proxy.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.proxies.is_trusted(ip)
    }
}

/// Builds an [`MtlsConfig`].
#[derive(Clone, Debug, Default)]
pub struct MtlsConfigBuilder {
    require_spiffe: bool,
    xfcc: bool,
    trusted_proxies: Vec<String>,
    resolver: Option<ClientIpResolver>,
}

impl MtlsConfigBuilder {
    /// Refuses certificates without a SPIFFE id (default: false, the
    /// subject or a DNS name then names the principal).
    pub fn require_spiffe(mut self, required: bool) -> Self {
        self.require_spiffe = required;
        self
    }

    /// Reads `x-forwarded-client-cert` (Envoy's format) when, and only
    /// when, the connection's peer is a trusted proxy (default: false).
    /// From any other peer the header is ignored, and
    /// [`MtlsAuthLayer`](super::MtlsAuthLayer) removes it.
    pub fn xfcc(mut self, on: bool) -> Self {
        self.xfcc = on;
        self
    }

    /// Trusts a proxy network (`10.0.0.0/8`) or address (`10.0.0.5`);
    /// checked by [`build`](Self::build).
    pub fn trust_proxy(mut self, cidr: impl Into<String>) -> Self {
        self.trusted_proxies.push(cidr.into());
        self
    }

    /// Trusts several proxy networks.
    pub fn trusted_proxies<I, T>(mut self, cidrs: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.trusted_proxies
            .extend(cidrs.into_iter().map(Into::into));
        self
    }

    /// Trusts the proxies of a resolver built for the client address, so
    /// both read one list.
    pub fn proxies(mut self, resolver: ClientIpResolver) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// Validates and builds. Refused: an address that is not a CIDR, both
    /// [`proxies`](Self::proxies) and a CIDR list, and XFCC on with no
    /// trusted proxy (it could never be read).
    pub fn build(self) -> Result<MtlsConfig, ConfigError> {
        let proxies = match self.resolver {
            Some(_) if !self.trusted_proxies.is_empty() => {
                return Err(ConfigError::invalid(
                    "trusted_proxies",
                    "give either a resolver or a list of proxies, not both",
                ));
            }
            Some(resolver) => resolver,
            None if self.xfcc && self.trusted_proxies.is_empty() => {
                return Err(ConfigError::invalid(
                    "xfcc",
                    "x-forwarded-client-cert is read only from trusted proxies, and none is trusted",
                ));
            }
            None => ClientIpResolver::builder()
                .trust_proxies(self.trusted_proxies)
                .build()?,
        };
        Ok(MtlsConfig {
            require_spiffe: self.require_spiffe,
            xfcc: self.xfcc,
            proxies,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::client_ip::PeerAddr;

    fn from(ip: &str) -> Extensions {
        let mut extensions = Extensions::new();
        extensions.insert(PeerAddr(format!("{ip}:5000").parse().unwrap()));
        extensions
    }

    #[test]
    fn xfcc_is_honoured_only_from_trusted_peers_and_only_when_on() {
        let config = MtlsConfig::builder()
            .trust_proxy("10.0.0.0/8")
            .xfcc(true)
            .build()
            .unwrap();
        assert!(config.honours_xfcc(&from("10.1.2.3")));
        assert!(!config.honours_xfcc(&from("192.0.2.1")));
        assert!(!config.honours_xfcc(&Extensions::new()));
        let off = MtlsConfig::builder()
            .trust_proxy("10.0.0.0/8")
            .build()
            .unwrap();
        assert!(!off.honours_xfcc(&from("10.1.2.3")));
    }

    #[test]
    fn impossible_configurations_are_refused_at_build() {
        assert!(MtlsConfig::builder().xfcc(true).build().is_err());
        assert!(
            MtlsConfig::builder()
                .trust_proxy("not a cidr")
                .build()
                .is_err()
        );
        assert!(
            MtlsConfig::builder()
                .trust_proxy("10.0.0.0/8")
                .proxies(ClientIpResolver::default())
                .build()
                .is_err()
        );
    }
}
