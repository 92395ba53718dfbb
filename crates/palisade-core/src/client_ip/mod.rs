//! The client's address, from the peer address and trusted proxies.
//!
//! A [`ClientIpResolver`] knows which proxies are trusted (CIDRs) and which
//! forwarding header they set. For each request it starts from the peer
//! address (axum's `ConnectInfo<SocketAddr>` with the `axum` feature, tonic's
//! `TcpConnectInfo` with the `tonic` feature, or a [`PeerAddr`] /
//! `SocketAddr` extension):
//!
//! - with no trusted proxy, or a peer that is not one, the peer is the client
//!   and forwarding headers are ignored, since anyone can send them;
//! - otherwise the header is walked from the right, skipping trusted hops;
//!   the first untrusted hop is the client. Hops are read only as far as the
//!   walk goes, so whatever a client wrote to the left of the address its
//!   proxy appended is never even parsed. A hop that cannot be read where
//!   the walk needs it (`unknown`, `_hidden`, garbage, too many hops) stops
//!   the walk: the peer address is used, marked
//!   [`ClientIpSource::PeerFallback`] so that allow-lists can refuse it (the
//!   peer is one of our proxies, not the client), and a malformed header
//!   never chooses the key.
//!
//! Only the one header your proxy sets is read: a proxy that appends to
//! `X-Forwarded-For` passes a client's forged `Forwarded` through untouched.
//!
//! ```
//! use palisade_core::client_ip::{ClientIpResolver, ForwardedHeader};
//! use std::net::IpAddr;
//!
//! let resolver = ClientIpResolver::builder()
//!     .trust_proxy("10.0.0.0/8")
//!     .header(ForwardedHeader::XForwardedFor)
//!     .build()?;
//!
//! let mut headers = http::HeaderMap::new();
//! headers.insert("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.5".parse()?);
//! let peer: IpAddr = "10.0.0.7".parse()?;
//! let client = resolver.resolve(&headers, peer);
//! assert_eq!(client.ip(), "1.2.3.4".parse::<IpAddr>()?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod forwarded;
mod layer;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use http::{Extensions, HeaderMap};
use ipnet::IpNet;

pub use layer::{ClientIpLayer, ResolveClientIp};

use crate::error::ConfigError;

/// The client's address as resolved for a request, placed in the request
/// extensions by [`ClientIpLayer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientIp {
    ip: IpAddr,
    key: IpAddr,
    source: ClientIpSource,
}

/// Where a [`ClientIp`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClientIpSource {
    /// The peer address of the connection.
    Peer,
    /// A forwarding header set by a trusted proxy.
    Header(ForwardedHeader),
    /// The peer address, because the peer is a trusted proxy whose
    /// forwarding header could not be read where the walk needed it. The
    /// address is the proxy's, not the client's: an allow-list must not
    /// admit it.
    PeerFallback,
}

impl ClientIp {
    /// A client address taken as is, keyed by /32 for IPv4 and /64 for IPv6.
    pub fn from_peer(ip: IpAddr) -> Self {
        let ip = canonical(ip);
        Self {
            ip,
            key: mask(ip, 32, 64),
            source: ClientIpSource::Peer,
        }
    }

    /// The address.
    #[inline]
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The address used as a key: IPv6 addresses masked to the configured
    /// prefix (default /64), so one host with a whole prefix cannot mint
    /// unlimited keys.
    #[inline]
    pub fn key(&self) -> IpAddr {
        self.key
    }

    /// Where the address came from.
    #[inline]
    pub fn source(&self) -> ClientIpSource {
        self.source
    }

    /// Whether the address is the client's own as far as we can know: false
    /// only for [`ClientIpSource::PeerFallback`], where it is a proxy's.
    /// Allow-lists (admin networks, exemptions) should require it.
    #[inline]
    pub fn is_resolved(&self) -> bool {
        self.source != ClientIpSource::PeerFallback
    }

    /// The client address placed in `extensions` by [`ClientIpLayer`], or
    /// else the peer address (headers are never trusted on this path).
    pub fn from_extensions(extensions: &Extensions) -> Option<ClientIp> {
        extensions
            .get::<ClientIp>()
            .copied()
            .or_else(|| peer_addr(extensions).map(ClientIp::from_peer))
    }
}

impl fmt::Display for ClientIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.ip.fmt(f)
    }
}

/// The peer address of the connection, for servers that insert it
/// themselves (plain hyper, tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerAddr(pub SocketAddr);

/// The peer address found in the request extensions: [`PeerAddr`], axum's `ConnectInfo<SocketAddr>` (feature `axum`), tonic's `TcpConnectInfo`
/// (feature `tonic`), or a plain `SocketAddr`, in that order.
pub fn peer_addr(extensions: &Extensions) -> Option<IpAddr> {
    if let Some(PeerAddr(addr)) = extensions.get::<PeerAddr>() {
        return Some(addr.ip());
    }
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(addr)) =
        extensions.get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(addr.ip());
    }
    #[cfg(feature = "tonic")]
    if let Some(addr) = extensions
        .get::<tonic::transport::server::TcpConnectInfo>()
        .and_then(tonic::transport::server::TcpConnectInfo::remote_addr)
    {
        return Some(addr.ip());
    }
    // Last: a bare SocketAddr is what plain hyper servers commonly insert,
    // but any layer could insert one for its own purpose.
    extensions.get::<SocketAddr>().map(SocketAddr::ip)
}

/// The forwarding header a trusted proxy sets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum ForwardedHeader {
    /// `X-Forwarded-For`, a comma-separated list of addresses.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded`, its `for=` parameters.
    Forwarded,
    /// `X-Real-IP`, a single address.
    XRealIp,
}

impl ForwardedHeader {
    /// The header's name.
    pub const fn name(self) -> &'static str {
        match self {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
            ForwardedHeader::XRealIp => "x-real-ip",
        }
    }
}

/// Configuration of a [`ClientIpResolver`], loadable with serde (feature
/// `serde`):
///
/// ```toml
/// trusted_proxies = ["10.0.0.0/8", "fd00::/8"]
/// header = "x-forwarded-for"
/// ipv6_prefix = 64
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct ClientIpConfig {
    /// Proxies whose forwarding header is believed, as CIDRs or single
    /// addresses. Empty: forwarding headers are ignored.
    pub trusted_proxies: Vec<String>,
    /// The header the trusted proxies set.
    pub header: ForwardedHeader,
    /// The prefix length by which IPv4 clients are keyed (default 32).
    pub ipv4_prefix: u8,
    /// The prefix length by which IPv6 clients are keyed (default 64).
    pub ipv6_prefix: u8,
    /// The most hops walked in a forwarding header before giving up and
    /// using the peer address (default 16).
    pub max_hops: usize,
}

impl Default for ClientIpConfig {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            header: ForwardedHeader::XForwardedFor,
            ipv4_prefix: 32,
            ipv6_prefix: 64,
            max_hops: 16,
        }
    }
}

impl ClientIpConfig {
    /// Validates the configuration and builds the resolver.
    pub fn build(&self) -> Result<ClientIpResolver, ConfigError> {
        let mut trusted = Vec::with_capacity(self.trusted_proxies.len());
        for text in &self.trusted_proxies {
            trusted.push(parse_cidr(text)?);
        }
        if self.ipv4_prefix == 0 || self.ipv4_prefix > 32 {
            return Err(ConfigError::invalid(
                "ipv4_prefix",
                "must be between 1 and 32",
            ));
        }
        if self.ipv6_prefix == 0 || self.ipv6_prefix > 128 {
            return Err(ConfigError::invalid(
                "ipv6_prefix",
                "must be between 1 and 128",
            ));
        }
        if self.max_hops == 0 {
            return Err(ConfigError::invalid("max_hops", "must be at least 1"));
        }
        Ok(ClientIpResolver {
            inner: Arc::new(Inner {
                trusted,
                header: self.header,
                ipv4_prefix: self.ipv4_prefix,
                ipv6_prefix: self.ipv6_prefix,
                max_hops: self.max_hops,
            }),
        })
    }
}

fn parse_cidr(text: &str) -> Result<IpNet, ConfigError> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(IpNet::new(
            canonical(net.addr()),
            match (net.addr(), canonical(net.addr())) {
                (IpAddr::V6(_), IpAddr::V4(_)) => net.prefix_len().saturating_sub(96),
                _ => net.prefix_len(),
            },
        )
        .map_err(|_| ConfigError::invalid("trusted_proxies", format!("{text:?} is not a CIDR")))?
        .trunc());
    }
    text.parse::<IpAddr>()
        .map(|ip| IpNet::from(canonical(ip)))
        .map_err(|_| {
            ConfigError::invalid(
                "trusted_proxies",
                format!("{text:?} is neither a CIDR nor an address"),
            )
        })
}

/// Resolves the client address of requests; cheap to clone (shared state).
#[derive(Clone)]
pub struct ClientIpResolver {
    inner: Arc<Inner>,
}

struct Inner {
    trusted: Vec<IpNet>,
    header: ForwardedHeader,
    ipv4_prefix: u8,
    ipv6_prefix: u8,
    max_hops: usize,
}

impl fmt::Debug for ClientIpResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIpResolver")
            .field("trusted", &self.inner.trusted)
            .field("header", &self.inner.header)
            .field("ipv4_prefix", &self.inner.ipv4_prefix)
            .field("ipv6_prefix", &self.inner.ipv6_prefix)
            .field("max_hops", &self.inner.max_hops)
            .finish()
    }
}

impl Default for ClientIpResolver {
    /// Trusts no proxy: the peer address is the client.
    fn default() -> Self {
        Self::builder()
            .build()
            .unwrap_or_else(|_| unreachable!("the default configuration is valid"))
    }
}

/// Builds a [`ClientIpResolver`].
#[derive(Clone, Debug, Default)]
pub struct ClientIpResolverBuilder {
    config: ClientIpConfig,
}

impl ClientIpResolverBuilder {
    /// Trusts a proxy network (`10.0.0.0/8`) or address (`10.0.0.5`).
    /// Checked by [`build`](Self::build).
    pub fn trust_proxy(mut self, cidr: impl Into<String>) -> Self {
        self.config.trusted_proxies.push(cidr.into());
        self
    }

    /// Trusts several proxy networks.
    pub fn trust_proxies<I, T>(mut self, cidrs: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.config
            .trusted_proxies
            .extend(cidrs.into_iter().map(Into::into));
        self
    }

    /// The header the trusted proxies set (default `X-Forwarded-For`).
    pub fn header(mut self, header: ForwardedHeader) -> Self {
        self.config.header = header;
        self
    }

    /// The prefix length by which IPv6 clients are keyed (default 64).
    pub fn ipv6_prefix(mut self, prefix: u8) -> Self {
        self.config.ipv6_prefix = prefix;
        self
    }

    /// The prefix length by which IPv4 clients are keyed (default 32).
    pub fn ipv4_prefix(mut self, prefix: u8) -> Self {
        self.config.ipv4_prefix = prefix;
        self
    }

    /// The most hops walked before falling back to the peer (default 16).
    pub fn max_hops(mut self, hops: usize) -> Self {
        self.config.max_hops = hops;
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<ClientIpResolver, ConfigError> {
        self.config.build()
    }
}

impl ClientIpResolver {
    /// A builder that trusts no proxy until told to.
    pub fn builder() -> ClientIpResolverBuilder {
        ClientIpResolverBuilder::default()
    }

    /// Whether `ip` is a trusted proxy.
    #[inline]
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.inner.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client address of a request with these headers arriving from `peer`.
    pub fn resolve(&self, headers: &HeaderMap, peer: IpAddr) -> ClientIp {
        let peer = canonical(peer);
        let (ip, source) = match self.walk(headers, peer) {
            Walk::Peer => (peer, ClientIpSource::Peer),
            Walk::Client(ip) => (ip, ClientIpSource::Header(self.inner.header)),
            Walk::Unreadable => (peer, ClientIpSource::PeerFallback),
        };
        ClientIp {
            ip,
            key: mask(ip, self.inner.ipv4_prefix, self.inner.ipv6_prefix),
            source,
        }
    }

    /// The client address of a request, from its headers and the peer
    /// address in its extensions; `None` when the server gave no peer
    /// address (see [`peer_addr`]).
    pub fn resolve_request(
        &self,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Option<ClientIp> {
        peer_addr(extensions).map(|peer| self.resolve(headers, peer))
    }

    /// Where the walk of the forwarding header ends.
    fn walk(&self, headers: &HeaderMap, peer: IpAddr) -> Walk {
        if self.inner.trusted.is_empty() || !self.is_trusted(peer) {
            return Walk::Peer;
        }
        let name = self.inner.header.name();
        match self.inner.header {
            ForwardedHeader::XForwardedFor => {
                self.first_untrusted(forwarded::x_forwarded_for_rev(headers.get_all(name)))
            }
            ForwardedHeader::Forwarded => {
                self.first_untrusted(forwarded::forwarded_rev(headers.get_all(name)))
            }
            ForwardedHeader::XRealIp => {
                let mut lines = headers.get_all(name).iter();
                let Some(line) = lines.next() else {
                    return Walk::Peer;
                };
                if lines.next().is_some() {
                    return Walk::Unreadable; // two values: which one did the proxy set?
                }
                match line.to_str().map(forwarded::parse_node) {
                    Ok(Ok(ip)) => Walk::Client(canonical(ip)),
                    _ => Walk::Unreadable,
                }
            }
        }
    }

    fn first_untrusted(
        &self,
        hops: impl Iterator<Item = Result<IpAddr, forwarded::Malformed>>,
    ) -> Walk {
        let mut farthest_trusted = None;
        for (walked, hop) in hops.enumerate() {
            if walked >= self.inner.max_hops {
                return Walk::Unreadable;
            }
            let Ok(ip) = hop else {
                return Walk::Unreadable;
            };
            let ip = canonical(ip);
            if !self.is_trusted(ip) {
                return Walk::Client(ip);
            }
            farthest_trusted = Some(ip);
        }
        // Every hop is one of ours: the farthest is where the request
        // entered. No header at all: the peer itself.
        farthest_trusted.map_or(Walk::Peer, Walk::Client)
    }
}

enum Walk {
    /// No forwarding to follow: the peer is the client.
    Peer,
    /// The client, read from the header.
    Client(IpAddr),
    /// The header could not be read where it mattered.
    Unreadable,
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) are the IPv4 client they map.
#[inline]
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

#[inline]
fn mask(ip: IpAddr, v4_prefix: u8, v6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let mask = u32::MAX
                .checked_shl(32 - u32::from(v4_prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & mask))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let mask = u128::MAX
                .checked_shl(128 - u32::from(v6_prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & mask))
        }
    }
}

#[cfg(test)]
mod tests;
