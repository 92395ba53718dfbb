//! [`HttpsRedirectLayer`]: sends plain-HTTP requests to HTTPS with a 308.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::header::{HOST, LOCATION, STRICT_TRANSPORT_SECURITY};
use http::uri::Authority;
use http::{HeaderValue, Request, Response, StatusCode};
use palisade_core::audit::AuditEvent;
use palisade_core::body::ResponseBody;
use palisade_core::client_ip::ClientIpResolver;
use palisade_core::future::ResponseFuture as CoreFuture;
use palisade_core::render::respond;
use palisade_core::{ConfigError, Rejection};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::hsts::{Hsts, HttpsDetection};

struct Shared {
    https: HttpsDetection,
    exempt: Box<[String]>,
    https_port: Option<u16>,
    allowed_hosts: Box<[String]>,
    hsts: Option<HeaderValue>,
}

/// Redirects plain-HTTP requests to the same host, path and query over
/// HTTPS with `308 Permanent Redirect` (the method and body are kept, unlike
/// 301), and adds `Strict-Transport-Security` to the HTTPS side's responses.
///
/// A request is HTTPS when its URI says so, or when a trusted proxy says so
/// in `X-Forwarded-Proto`; the header from anyone else is ignored. A request
/// whose `Host` is missing or is not a host gets 400 (problem+json), never a
/// redirect to wherever the header points.
///
/// ```
/// use palisade_core::client_ip::ClientIpResolver;
/// use palisade_headers::HttpsRedirectLayer;
///
/// let redirect = HttpsRedirectLayer::builder()
///     .trust_proxies(ClientIpResolver::builder().trust_proxy("10.0.0.0/8").build()?)
///     .exempt_path("/health")
///     .build()?;
/// # let _ = redirect;
/// # Ok::<(), palisade_core::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct HttpsRedirectLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for HttpsRedirectLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpsRedirectLayer")
            .field("exempt", &self.shared.exempt)
            .field("https_port", &self.shared.https_port)
            .field("allowed_hosts", &self.shared.allowed_hosts)
            .field("hsts", &self.shared.hsts)
            .finish_non_exhaustive()
    }
}

/// Builds an [`HttpsRedirectLayer`].
#[derive(Clone, Debug)]
pub struct HttpsRedirectBuilder {
    proxies: Option<ClientIpResolver>,
    exempt: Vec<String>,
    https_port: Option<u16>,
    allowed_hosts: Vec<String>,
    hsts: Option<Hsts>,
}

impl Default for HttpsRedirectBuilder {
    fn default() -> Self {
        Self {
            proxies: None,
            exempt: Vec::new(),
            https_port: None,
            allowed_hosts: Vec::new(),
            hsts: Some(Hsts::default()),
        }
    }
}

impl HttpsRedirectBuilder {
    /// Believes `X-Forwarded-Proto` from these proxies only.
    pub fn trust_proxies(mut self, proxies: ClientIpResolver) -> Self {
        self.proxies = Some(proxies);
        self
    }

    /// Serves `path` (exactly, without its query) over plain HTTP too:
    /// health checks from a load balancer. Must start with `/`.
    pub fn exempt_path(mut self, path: impl Into<String>) -> Self {
        self.exempt.push(path.into());
        self
    }

    /// The port of the HTTPS side (default 443, left out of `Location`).
    pub fn https_port(mut self, port: u16) -> Self {
        self.https_port = Some(port);
        self
    }

    /// Redirects only requests for these hosts (case-insensitive, without
    /// port); others get 400. Without it any well-formed host is
    /// redirected to itself.
    pub fn allow_host(mut self, host: impl Into<String>) -> Self {
        self.allowed_hosts.push(host.into().to_ascii_lowercase());
        self
    }

    /// The HSTS policy added on the HTTPS side (default one year with
    /// `includeSubDomains`).
    pub fn hsts(mut self, hsts: Hsts) -> Self {
        self.hsts = Some(hsts);
        self
    }

    /// Adds no HSTS (a [`SecurityHeadersLayer`](crate::SecurityHeadersLayer)
    /// sends it).
    pub fn without_hsts(mut self) -> Self {
        self.hsts = None;
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<HttpsRedirectLayer, ConfigError> {
        for path in &self.exempt {
            if !path.starts_with('/') || path.contains('?') {
                return Err(ConfigError::invalid(
                    "exempt_path",
                    format!("{path:?} must start with '/' and have no query"),
                ));
            }
        }
        for host in &self.allowed_hosts {
            if !is_host(host) {
                return Err(ConfigError::invalid(
                    "allow_host",
                    format!("{host:?} is not a host name"),
                ));
            }
        }
        let hsts = self.hsts.map(|h| h.to_header_value()).transpose()?;
        Ok(HttpsRedirectLayer {
            shared: Arc::new(Shared {
                https: HttpsDetection {
                    proxies: self.proxies,
                    assume_https: false,
                },
                exempt: self.exempt.into_boxed_slice(),
                https_port: self.https_port.filter(|p| *p != 443),
                allowed_hosts: self.allowed_hosts.into_boxed_slice(),
                hsts,
            }),
        })
    }
}

impl HttpsRedirectLayer {
    /// A builder: no trusted proxy, no exemption, HSTS one year.
    pub fn builder() -> HttpsRedirectBuilder {
        HttpsRedirectBuilder::default()
    }
}

/// A DNS name or an IP literal (`[v6]` for IPv6): letters, digits, `-`,
/// `.`, and `:` inside brackets.
fn is_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !host.starts_with(['-', '.'])
}

impl Shared {
    /// `https://host[:port]/path?query`, or why not.
    fn location<B>(&self, request: &Request<B>) -> Result<HeaderValue, &'static str> {
        // RFC 9112: an absolute-form target's authority wins over Host.
        let authority = match request.uri().authority() {
            Some(authority) => authority.clone(),
            None => {
                let host = request.headers().get(HOST).ok_or("no Host header")?;
                Authority::try_from(host.as_bytes()).map_err(|_| "Host is not an authority")?
            }
        };
        if authority.as_str().contains('@') {
            return Err("Host has user information");
        }
        let host = authority.host();
        if !is_host(host) {
            return Err("Host is not a host name");
        }
        if !self.allowed_hosts.is_empty()
            && !self
                .allowed_hosts
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(host))
        {
            return Err("Host is not an allowed host");
        }
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        let mut location = String::with_capacity(8 + host.len() + 6 + path.len());
        location.push_str("https://");
        location.push_str(host);
        if let Some(port) = self.https_port {
            location.push(':');
            location.push_str(&port.to_string());
        }
        if !path.starts_with('/') {
            location.push('/');
        }
        location.push_str(path);
        HeaderValue::try_from(location).map_err(|_| "the target is not a valid header value")
    }
}

impl<S> Layer<S> for HttpsRedirectLayer {
    type Service = HttpsRedirect<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpsRedirect {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service of [`HttpsRedirectLayer`].
#[derive(Clone)]
pub struct HttpsRedirect<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for HttpsRedirect<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpsRedirect")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> HttpsRedirect<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes this service, returning the inner one.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for HttpsRedirect<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = RedirectFuture<S::Future, ResBody>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let shared = &*self.shared;
        if shared.https.is_https(&request) {
            return RedirectFuture {
                inner: CoreFuture::inner(self.inner.call(request)),
                hsts: shared.hsts.clone(),
            };
        }
        let path = request.uri().path();
        if shared.exempt.iter().any(|exempt| exempt == path) {
            return RedirectFuture {
                inner: CoreFuture::inner(self.inner.call(request)),
                hsts: None,
            };
        }
        let response = match shared.location(&request) {
            Ok(location) => {
                let mut response = Response::new(ResponseBody::rejection(Bytes::new()));
                *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
                response.headers_mut().insert(LOCATION, location);
                response
            }
            Err(reason) => {
                let rejection = Rejection::bad_request()
                    .with_detail("The Host header is missing or is not a host name.");
                AuditEvent::refused("https_redirect", rejection.kind(), reason)
                    .request(&request)
                    .emit();
                respond(&request, rejection)
            }
        };
        RedirectFuture {
            inner: CoreFuture::rejected(response),
            hsts: None,
        }
    }
}

pin_project! {
    /// The response future of [`HttpsRedirect`].
    pub struct RedirectFuture<F, B> {
        #[pin]
        inner: CoreFuture<F, B>,
        hsts: Option<HeaderValue>,
    }
}

impl<F, B> fmt::Debug for RedirectFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedirectFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for RedirectFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        if let Some(hsts) = this.hsts.take() {
            response
                .headers_mut()
                .entry(STRICT_TRANSPORT_SECURITY)
                .or_insert(hsts);
        }
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]

    use super::*;
    use proptest::strategy::Strategy as _;

    #[test]
    fn hosts_are_checked() {
        for good in ["example.com", "a-b.example", "127.0.0.1", "[::1]"] {
            assert!(is_host(good), "{good}");
        }
        for bad in ["", "exa mple.com", "evil.com/x", "-a", "[zz]", "a_b"] {
            assert!(!is_host(bad), "{bad}");
        }
    }

    #[test]
    fn exempt_paths_must_be_paths() {
        assert!(
            HttpsRedirectLayer::builder()
                .exempt_path("health")
                .build()
                .is_err()
        );
        assert!(
            HttpsRedirectLayer::builder()
                .exempt_path("/h?x")
                .build()
                .is_err()
        );
        assert!(
            HttpsRedirectLayer::builder()
                .allow_host("a b")
                .build()
                .is_err()
        );
    }

    fn location(
        layer: &HttpsRedirectLayer,
        host: &str,
        target: &str,
    ) -> Result<HeaderValue, &'static str> {
        let request = Request::get(target).header(HOST, host).body(()).unwrap();
        layer.shared.location(&request)
    }

    proptest::proptest! {
        #[test]
        fn any_host_is_refused_or_redirected_to_itself(host in proptest::prop_oneof![
            proptest::prelude::any::<Vec<u8>>(),
            "[a-z0-9.:@/?#%\\[\\] -]{1,24}".prop_map(String::into_bytes),
        ]) {
            let layer = HttpsRedirectLayer::builder().build().unwrap();
            let Ok(value) = http::HeaderValue::from_bytes(&host) else { return Ok(()) };
            let request = Request::get("/p?q=1").header(HOST, value).body(()).unwrap();
            if let Ok(location) = layer.shared.location(&request) {
                let location: http::Uri = location.to_str().unwrap().parse().unwrap();
                proptest::prop_assert_eq!(location.scheme_str(), Some("https"));
                let authority = Authority::try_from(host.as_slice()).unwrap();
                proptest::prop_assert_eq!(location.host(), Some(authority.host()));
                proptest::prop_assert_eq!(location.path_and_query().map(|p| p.as_str()), Some("/p?q=1"));
            }
        }
    }

    #[test]
    fn location_keeps_path_and_query_and_sets_the_port() {
        let layer = HttpsRedirectLayer::builder().build().unwrap();
        assert_eq!(
            location(&layer, "Example.com:8080", "/a/b?c=d").unwrap(),
            "https://Example.com/a/b?c=d"
        );
        let layer = HttpsRedirectLayer::builder()
            .https_port(8443)
            .allow_host("example.com")
            .build()
            .unwrap();
        assert_eq!(
            location(&layer, "example.com", "/").unwrap(),
            "https://example.com:8443/"
        );
        assert!(location(&layer, "evil.com", "/").is_err());
        assert!(location(&layer, "user@example.com", "/").is_err());
    }
}
