//! [`GuardLayer`]: refuse requests with a synchronous check, rendered and
//! audited like every other Palisade refusal.
//!
//! The simplest rejecting layer: a check looks at the request head and
//! either lets it through or returns a [`Rejection`]. Use it for small
//! policies that need no state (an address allow-list for admin routes, a
//! required header), and as the model of how a rejecting layer composes:
//! its response body is [`ResponseBody`] over whatever the inner service
//! returns, so it fits axum, tonic and hyper alike.
//!
//! ```
//! use palisade_core::guard::{GuardLayer, RequestHead};
//! use palisade_core::Rejection;
//!
//! let only_json = GuardLayer::new("only_json", |head: &RequestHead<'_>| {
//!     match head.headers().get("content-type") {
//!         Some(v) if v.as_bytes().starts_with(b"application/json") => Ok(()),
//!         _ => Err(Rejection::bad_request().with_detail("Send JSON.")),
//!     }
//! });
//! # let _ = only_json;
//! ```

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Extensions, HeaderMap, Method, Request, Response, Uri};
use tower_layer::Layer;
use tower_service::Service;

use crate::audit::AuditEvent;
use crate::body::ResponseBody;
use crate::client_ip::ClientIp;
use crate::future::ResponseFuture;
use crate::principal::Principal;
use crate::rejection::Rejection;
use crate::render::respond;

/// A borrowed view of a request's head, given to checks.
#[derive(Debug)]
pub struct RequestHead<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    extensions: &'a Extensions,
}

impl<'a> RequestHead<'a> {
    /// The view of a request.
    pub fn of<B>(request: &'a Request<B>) -> Self {
        Self {
            method: request.method(),
            uri: request.uri(),
            headers: request.headers(),
            extensions: request.extensions(),
        }
    }

    /// The method.
    pub fn method(&self) -> &'a Method {
        self.method
    }

    /// The URI.
    pub fn uri(&self) -> &'a Uri {
        self.uri
    }

    /// The headers.
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    /// The extensions.
    pub fn extensions(&self) -> &'a Extensions {
        self.extensions
    }

    /// The client address (see [`ClientIp::from_extensions`]).
    pub fn client_ip(&self) -> Option<ClientIp> {
        ClientIp::from_extensions(self.extensions)
    }

    /// The principal, once an authentication layer has run.
    pub fn principal(&self) -> Option<&'a Principal> {
        self.extensions.get::<Principal>()
    }
}

/// A synchronous check of a request head.
pub trait Check: Send + Sync + 'static {
    /// `Ok` to let the request through, or the rejection to answer with.
    fn check(&self, head: &RequestHead<'_>) -> Result<(), Rejection>;
}

impl<F> Check for F
where
    F: Fn(&RequestHead<'_>) -> Result<(), Rejection> + Send + Sync + 'static,
{
    #[inline]
    fn check(&self, head: &RequestHead<'_>) -> Result<(), Rejection> {
        self(head)
    }
}

/// Applies a [`Check`] to every request; the check is shared by every
/// service the layer makes (one `Arc`).
pub struct GuardLayer {
    name: &'static str,
    check: Arc<dyn Check>,
}

impl Clone for GuardLayer {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            check: Arc::clone(&self.check),
        }
    }
}

impl fmt::Debug for GuardLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardLayer")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl GuardLayer {
    /// A guard named `name` (the name appears in audit events).
    pub fn new(name: &'static str, check: impl Check) -> Self {
        Self {
            name,
            check: Arc::new(check),
        }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guard {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`GuardLayer`].
#[derive(Clone, Debug)]
pub struct Guard<S> {
    inner: S,
    layer: GuardLayer,
}

impl<S> Guard<S> {
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Guard<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        match self.layer.check.check(&RequestHead::of(&request)) {
            Ok(()) => ResponseFuture::inner(self.inner.call(request)),
            Err(rejection) => {
                AuditEvent::refused(self.layer.name, rejection.kind(), "guard check failed")
                    .request(&request)
                    .emit();
                ResponseFuture::rejected(respond(&request, rejection))
            }
        }
    }
}
