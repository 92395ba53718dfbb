//! Strict-Transport-Security, and how a request is known to be HTTPS.

use std::time::Duration;

use http::{HeaderMap, HeaderValue, Request};
use palisade_core::ConfigError;
use palisade_core::client_ip::{ClientIpResolver, peer_addr};

/// One year, the least `max-age` the preload list accepts.
pub const ONE_YEAR: Duration = Duration::from_secs(31_536_000);

/// A Strict-Transport-Security policy, sent on HTTPS responses only
/// (browsers ignore it over plain HTTP, and sending it there tells a
/// network attacker nothing useful but is wrong by RFC 6797).
///
/// ```
/// use palisade_headers::Hsts;
///
/// assert_eq!(Hsts::default().to_header_value()?, "max-age=31536000; includeSubDomains");
/// assert!(Hsts::new(std::time::Duration::from_secs(600)).preload().to_header_value().is_err());
/// # Ok::<(), palisade_core::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hsts {
    max_age: Duration,
    include_subdomains: bool,
    preload: bool,
}

impl Default for Hsts {
    /// One year with `includeSubDomains` (helmet's and OWASP's value).
    fn default() -> Self {
        Self::new(ONE_YEAR).include_subdomains()
    }
}

impl Hsts {
    /// `max-age` only.
    pub const fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            include_subdomains: false,
            preload: false,
        }
    }

    /// Adds `includeSubDomains`.
    pub const fn include_subdomains(mut self) -> Self {
        self.include_subdomains = true;
        self
    }

    /// Adds `preload`; refused at build unless `max-age` is at least one
    /// year with `includeSubDomains` (the preload list's requirements).
    pub const fn preload(mut self) -> Self {
        self.preload = true;
        self
    }

    /// The validated header value.
    pub fn to_header_value(&self) -> Result<HeaderValue, ConfigError> {
        if self.preload && (self.max_age < ONE_YEAR || !self.include_subdomains) {
            return Err(ConfigError::invalid(
                "hsts",
                "preload needs max-age of at least one year (31536000) and includeSubDomains",
            ));
        }
        let mut value = format!("max-age={}", self.max_age.as_secs());
        if self.include_subdomains {
            value.push_str("; includeSubDomains");
        }
        if self.preload {
            value.push_str("; preload");
        }
        HeaderValue::try_from(value)
            .map_err(|_| ConfigError::invalid("hsts", "not a valid header value"))
    }
}

/// Decides whether a request came over HTTPS: its URI's scheme, or
/// `X-Forwarded-Proto` when the peer is a trusted proxy, or always when
/// told so (TLS terminated in this process).
#[derive(Clone, Debug, Default)]
pub(crate) struct HttpsDetection {
    pub(crate) proxies: Option<ClientIpResolver>,
    pub(crate) assume_https: bool,
}

impl HttpsDetection {
    #[inline]
    pub(crate) fn is_https<B>(&self, request: &Request<B>) -> bool {
        if self.assume_https || request.uri().scheme() == Some(&http::uri::Scheme::HTTPS) {
            return true;
        }
        let Some(resolver) = &self.proxies else {
            return false;
        };
        peer_addr(request.extensions()).is_some_and(|peer| resolver.is_trusted(peer))
            && forwarded_proto_is_https(request.headers())
    }
}

/// The nearest proxy's word: the last element of the last
/// `X-Forwarded-Proto` line.
fn forwarded_proto_is_https(headers: &HeaderMap) -> bool {
    headers
        .get_all("x-forwarded-proto")
        .iter()
        .next_back()
        .and_then(|line| line.as_bytes().rsplit(|b| *b == b',').next())
        .is_some_and(|proto| proto.trim_ascii().eq_ignore_ascii_case(b"https"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]

    use std::net::SocketAddr;

    use super::*;
    use palisade_core::client_ip::PeerAddr;

    #[test]
    fn preload_needs_a_year_and_subdomains() {
        assert!(Hsts::new(ONE_YEAR).preload().to_header_value().is_err());
        assert!(
            Hsts::new(Duration::from_secs(86_400))
                .include_subdomains()
                .preload()
                .to_header_value()
                .is_err()
        );
        assert_eq!(
            Hsts::new(Duration::from_secs(63_072_000))
                .include_subdomains()
                .preload()
                .to_header_value()
                .unwrap(),
            "max-age=63072000; includeSubDomains; preload"
        );
        assert_eq!(
            Hsts::new(Duration::from_secs(300))
                .to_header_value()
                .unwrap(),
            "max-age=300"
        );
    }

    fn request(peer: &str, proto: Option<&str>) -> Request<()> {
        let mut request = Request::get("/").body(()).unwrap();
        request
            .extensions_mut()
            .insert(PeerAddr(peer.parse::<SocketAddr>().unwrap()));
        if let Some(proto) = proto {
            request
                .headers_mut()
                .insert("x-forwarded-proto", proto.parse().unwrap());
        }
        request
    }

    #[test]
    fn forwarded_proto_counts_only_from_trusted_proxies() {
        let detection = HttpsDetection {
            proxies: Some(
                ClientIpResolver::builder()
                    .trust_proxy("10.0.0.0/8")
                    .build()
                    .unwrap(),
            ),
            assume_https: false,
        };
        assert!(detection.is_https(&request("10.1.2.3:1000", Some("https"))));
        assert!(detection.is_https(&request("10.1.2.3:1000", Some("http, HTTPS"))));
        assert!(!detection.is_https(&request("10.1.2.3:1000", Some("https, http"))));
        assert!(!detection.is_https(&request("10.1.2.3:1000", None)));
        assert!(!detection.is_https(&request("6.6.6.6:1000", Some("https"))));
        assert!(!HttpsDetection::default().is_https(&request("10.1.2.3:1000", Some("https"))));
        let absolute = Request::get("https://example.com/").body(()).unwrap();
        assert!(HttpsDetection::default().is_https(&absolute));
    }
}
