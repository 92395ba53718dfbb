//! [`SecurityHeadersLayer`]: adds the header set to every response.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{BufMut, BytesMut};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::csp::CspTemplate;
use crate::headers::SecurityHeaders;
use crate::hsts::HttpsDetection;
use crate::nonce::CspNonce;

/// A policy whose value changes per response: rendered parts joined by the
/// nonce.
pub(crate) struct NoncePolicy {
    name: HeaderName,
    parts: Box<[Box<str>]>,
    len: usize,
}

impl NoncePolicy {
    pub(crate) fn new(name: HeaderName, template: CspTemplate) -> Self {
        let len =
            template.parts.iter().map(String::len).sum::<usize>() + (template.parts.len() - 1) * 24;
        Self {
            name,
            parts: template
                .parts
                .into_iter()
                .map(String::into_boxed_str)
                .collect(),
            len,
        }
    }

    pub(crate) fn name(&self) -> &HeaderName {
        &self.name
    }

    /// The policy with `nonce`: one allocation. Without a nonce (the random
    /// source failed), `'nonce-'` stays empty, which browsers ignore: scripts
    /// that needed the nonce are blocked, never allowed.
    fn value(&self, nonce: Option<&CspNonce>) -> Option<HeaderValue> {
        let mut value = BytesMut::with_capacity(self.len);
        for (index, part) in self.parts.iter().enumerate() {
            if let (true, Some(nonce)) = (index > 0, nonce) {
                value.put_slice(nonce.as_bytes());
            }
            value.put_slice(part.as_bytes());
        }
        // Every part was checked at build, and base64 is valid in a value.
        HeaderValue::from_maybe_shared(value.freeze()).ok()
    }
}

/// The header set, rendered once.
pub(crate) struct Shared {
    /// The fixed headers as a ready map, without and with HSTS: a response
    /// gets a clone (two allocations, no hashing) into which the handler's
    /// few headers are merged, rather than a dozen hashed insertions into
    /// the handler's map as it grows.
    pub(crate) base: HeaderMap,
    pub(crate) base_https: HeaderMap,
    pub(crate) has_hsts: bool,
    /// Whether the base maps end with an empty `content-type` standing in
    /// for the handler's: a clone of a `Vec` has no spare capacity, and
    /// the handler's content type replacing a slot in place saves growing
    /// the map on nearly every response. Removed when the handler has none.
    pub(crate) content_type_slot: bool,
    pub(crate) nonce_policies: Box<[NoncePolicy]>,
    /// Sorted by name, for a binary search per response header.
    pub(crate) strip: Box<[HeaderName]>,
    /// A bit per byte value: whether some stripped name starts with it.
    pub(crate) strip_first_bytes: [u64; 4],
    pub(crate) overriding: bool,
    pub(crate) https: HttpsDetection,
}

impl Shared {
    #[inline]
    fn is_stripped(&self, name: &HeaderName) -> bool {
        let first = name.as_str().as_bytes().first().copied().unwrap_or(0);
        // Most response headers start with a letter no stripped name does.
        if self.strip_first_bytes[usize::from(first >> 6)] & (1u64 << (first & 63)) == 0 {
            return false;
        }
        self.strip
            .binary_search_by(|s| s.as_str().cmp(name.as_str()))
            .is_ok()
    }

    fn apply(&self, headers: &mut HeaderMap, https: bool, nonce: Option<&CspNonce>) {
        let base = if https { &self.base_https } else { &self.base };
        let handler = std::mem::replace(headers, base.clone());
        let mut slot_filled = !self.content_type_slot;
        // Whether the handler set each nonce policy's header itself (there
        // are at most two: enforced and report-only).
        let mut handler_set = [false; 2];
        // Values of one name come in a run: the first with its name, the
        // rest with None.
        let mut current: Option<HeaderName> = None;
        let mut skip = false;
        for (name, value) in handler {
            match name {
                Some(name) => {
                    let is_slot = self.content_type_slot && name == CONTENT_TYPE;
                    skip = self.is_stripped(&name)
                        || (self.overriding && !is_slot && headers.contains_key(&name));
                    if !skip {
                        // The handler's value replaces ours: kept by default.
                        headers.insert(&name, value);
                        slot_filled |= is_slot;
                        for (set, policy) in handler_set.iter_mut().zip(self.nonce_policies.iter())
                        {
                            *set |= policy.name == name;
                        }
                    }
                    current = Some(name);
                }
                None => {
                    if let (false, Some(name)) = (skip, &current) {
                        headers.append(name, value);
                    }
                }
            }
        }
        if !slot_filled {
            headers.remove(CONTENT_TYPE);
        }
        for (policy, handler_set) in self.nonce_policies.iter().zip(handler_set) {
            if self.overriding || !handler_set {
                // Replaces the empty slot of the base map in place.
                match policy.value(nonce) {
                    Some(value) => headers.insert(&policy.name, value),
                    None => headers.remove(&policy.name),
                };
            }
        }
    }
}

/// Adds a whole header set to every response, rejections of inner layers
/// included: values rendered at build time, HSTS on HTTPS requests only, a
/// fresh [`CspNonce`] per request when the policy has one, leaky headers
/// stripped, handlers' own headers kept unless told otherwise.
///
/// ```
/// use palisade_headers::{SecurityHeaders, SecurityHeadersLayer};
/// use tower::ServiceBuilder;
///
/// let headers: SecurityHeadersLayer = SecurityHeaders::helmet().build()?;
/// let stack = ServiceBuilder::new().layer(headers);
/// # let _ = stack;
/// # Ok::<(), palisade_core::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct SecurityHeadersLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for SecurityHeadersLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecurityHeadersLayer")
            .field(
                "headers",
                &self
                    .shared
                    .base_https
                    .keys()
                    .filter(|name| !self.shared.content_type_slot || **name != CONTENT_TYPE)
                    .collect::<Vec<_>>(),
            )
            .field("nonce", &!self.shared.nonce_policies.is_empty())
            .field("overriding", &self.shared.overriding)
            .finish_non_exhaustive()
    }
}

impl SecurityHeadersLayer {
    /// An empty header set (leaky headers stripped) to build on; see
    /// [`SecurityHeaders::helmet`], [`SecurityHeaders::owasp_strict`] and
    /// [`SecurityHeaders::api`] for presets.
    pub fn builder() -> SecurityHeaders {
        SecurityHeaders::new()
    }

    /// helmet's set, as built by [`SecurityHeaders::helmet`].
    pub fn helmet() -> Self {
        // The preset's values are constants checked by this crate's tests.
        Self::from_preset(SecurityHeaders::helmet())
    }

    /// The OWASP Secure Headers Project's set, as built by
    /// [`SecurityHeaders::owasp_strict`].
    pub fn owasp_strict() -> Self {
        Self::from_preset(SecurityHeaders::owasp_strict())
    }

    /// The JSON API set, as built by [`SecurityHeaders::api`].
    pub fn api() -> Self {
        Self::from_preset(SecurityHeaders::api())
    }

    fn from_preset(preset: SecurityHeaders) -> Self {
        preset
            .build()
            .unwrap_or_else(|error| unreachable!("a preset of this crate failed to build: {error}"))
    }

    pub(crate) fn from_shared(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The headers this layer adds to responses of this request, for
    /// inspection and tests (a fresh nonce each call when the policy has
    /// one).
    pub fn headers_for<B>(&self, request: &Request<B>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let nonce = CspNonce::generate();
        self.shared.apply(
            &mut headers,
            self.shared.https.is_https(request),
            nonce.as_ref(),
        );
        headers
    }
}

impl<S> Layer<S> for SecurityHeadersLayer {
    type Service = SecurityHeadersService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SecurityHeadersService {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service of [`SecurityHeadersLayer`].
#[derive(Clone)]
pub struct SecurityHeadersService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for SecurityHeadersService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecurityHeadersService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> SecurityHeadersService<S> {
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SecurityHeadersService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let https = self.shared.has_hsts && self.shared.https.is_https(&request);
        let nonce = if self.shared.nonce_policies.is_empty() {
            None
        } else {
            let nonce = CspNonce::generate();
            match nonce {
                Some(nonce) => {
                    request.extensions_mut().insert(nonce);
                }
                None => tracing::error!(
                    "no random source for a CSP nonce: the policy goes out with an empty nonce, which blocks nonce scripts"
                ),
            }
            nonce
        };
        ResponseFuture {
            inner: self.inner.call(request),
            shared: Arc::clone(&self.shared),
            https,
            nonce,
        }
    }
}

pin_project! {
    /// The response future of [`SecurityHeadersService`]: sets the headers
    /// on the inner service's response.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        shared: Arc<Shared>,
        https: bool,
        nonce: Option<CspNonce>,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("https", &self.https)
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        this.shared
            .apply(response.headers_mut(), *this.https, this.nonce.as_ref());
        Poll::Ready(Ok(response))
    }
}
