//! [`SensitiveHeadersLayer`]: marks secret headers of requests and responses
//! as sensitive, so `Debug` of a `HeaderMap`, `Request` or `Response` prints
//! `Sensitive` instead of their values and HPACK (HTTP/2) never puts them in
//! its dynamic table.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION, SET_COOKIE};
use http::{HeaderMap, HeaderName, Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

/// The headers marked sensitive by default: `Authorization`,
/// `Proxy-Authorization`, `Cookie`, `Set-Cookie` and `X-API-Key`.
pub fn default_sensitive_headers() -> Vec<HeaderName> {
    vec![
        AUTHORIZATION,
        PROXY_AUTHORIZATION,
        COOKIE,
        SET_COOKIE,
        HeaderName::from_static("x-api-key"),
    ]
}

/// Marks the values of `names` in `headers` sensitive (every value of a
/// repeated header).
pub fn mark_sensitive(headers: &mut HeaderMap, names: &[HeaderName]) {
    for name in names {
        if let http::header::Entry::Occupied(mut entry) = headers.entry(name) {
            for value in entry.iter_mut() {
                value.set_sensitive(true);
            }
        }
    }
}

/// Marks secret headers sensitive on requests (before the inner service
/// and any tracing inside it sees them) and on responses.
///
/// ```
/// use palisade_redact::SensitiveHeadersLayer;
/// use http::HeaderName;
/// use tower::ServiceBuilder;
///
/// let layer = SensitiveHeadersLayer::new().header(HeaderName::from_static("x-session"));
/// let stack = ServiceBuilder::new().layer(layer);
/// # let _ = stack;
/// ```
#[derive(Clone)]
pub struct SensitiveHeadersLayer {
    names: Arc<[HeaderName]>,
}

impl fmt::Debug for SensitiveHeadersLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SensitiveHeadersLayer")
            .field("names", &self.names)
            .finish()
    }
}

impl Default for SensitiveHeadersLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl SensitiveHeadersLayer {
    /// The layer with the [default list](default_sensitive_headers).
    pub fn new() -> Self {
        Self {
            names: default_sensitive_headers().into(),
        }
    }

    /// The layer with exactly `names`, none of the defaults.
    pub fn only<I: IntoIterator<Item = HeaderName>>(names: I) -> Self {
        Self {
            names: names.into_iter().collect(),
        }
    }

    /// Adds a header to the list.
    pub fn header(self, name: HeaderName) -> Self {
        self.headers([name])
    }

    /// Adds headers to the list.
    pub fn headers<I: IntoIterator<Item = HeaderName>>(self, names: I) -> Self {
        let mut all: Vec<HeaderName> = self.names.to_vec();
        for name in names {
            if !all.contains(&name) {
                all.push(name);
            }
        }
        Self { names: all.into() }
    }

    /// The headers marked sensitive.
    pub fn names(&self) -> &[HeaderName] {
        &self.names
    }
}

impl<S> Layer<S> for SensitiveHeadersLayer {
    type Service = SensitiveHeaders<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SensitiveHeaders {
            inner,
            names: Arc::clone(&self.names),
        }
    }
}

/// The service made by [`SensitiveHeadersLayer`].
#[derive(Clone)]
pub struct SensitiveHeaders<S> {
    inner: S,
    names: Arc<[HeaderName]>,
}

impl<S: fmt::Debug> fmt::Debug for SensitiveHeaders<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SensitiveHeaders")
            .field("inner", &self.inner)
            .field("names", &self.names)
            .finish()
    }
}

impl<S> SensitiveHeaders<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SensitiveHeaders<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = SensitiveHeadersFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        mark_sensitive(request.headers_mut(), &self.names);
        SensitiveHeadersFuture {
            future: self.inner.call(request),
            names: Arc::clone(&self.names),
        }
    }
}

pin_project! {
    /// The response future of [`SensitiveHeaders`].
    pub struct SensitiveHeadersFuture<F> {
        #[pin]
        future: F,
        names: Arc<[HeaderName]>,
    }
}

impl<F> fmt::Debug for SensitiveHeadersFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SensitiveHeadersFuture")
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for SensitiveHeadersFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        this.future.poll(cx).map(|result| {
            result.map(|mut response| {
                mark_sensitive(response.headers_mut(), this.names);
                response
            })
        })
    }
}
