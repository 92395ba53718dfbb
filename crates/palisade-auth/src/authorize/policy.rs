//! [`Authorize`]: an async check of your own, run before the inner service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, Method, Request, Response, Uri};
use palisade_core::Rejection;
use palisade_core::audit::AuditEvent;
use palisade_core::body::ResponseBody;
use palisade_core::client_ip::ClientIp;
use palisade_core::principal::Principal;
use palisade_core::render::respond;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::{LAYER, authenticated, refuse};

/// The future of a [`Policy`] check.
pub type PolicyFuture = Pin<Box<dyn Future<Output = Result<(), Rejection>> + Send + 'static>>;

/// An async authorization check: `Ok(())` lets the request through, a
/// [`Rejection`] answers it (usually [`Rejection::forbidden`]; a policy
/// whose backend is down may answer [`Rejection::unavailable`]).
///
/// Closures `Fn(Principal, RequestHead) -> impl Future<Output = Result<(),
/// Rejection>>` are policies; implement the trait for a named type that
/// holds its own state.
///
/// ```
/// use palisade_auth::authorize::{Policy, PolicyFuture, RequestHead};
/// use palisade_core::{Rejection, principal::Principal};
///
/// /// Only the owner of a scan may touch it.
/// struct ScanOwner;
///
/// impl Policy for ScanOwner {
///     fn check(&self, principal: Principal, head: RequestHead) -> PolicyFuture {
///         Box::pin(async move {
///             let owner = head.uri().path().split('/').nth(2).unwrap_or_default();
///             if owner == principal.subject() {
///                 Ok(())
///             } else {
///                 Err(Rejection::forbidden().with_detail("Not your scan."))
///             }
///         })
///     }
/// }
/// ```
pub trait Policy: Send + Sync + 'static {
    /// Decides for an authenticated `principal` and the request's head.
    fn check(&self, principal: Principal, head: RequestHead) -> PolicyFuture;
}

impl<F, Fut> Policy for F
where
    F: Fn(Principal, RequestHead) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Rejection>> + Send + 'static,
{
    fn check(&self, principal: Principal, head: RequestHead) -> PolicyFuture {
        Box::pin(self(principal, head))
    }
}

/// An owned copy of a request's head, for an async [`Policy`]. Unlike
/// core's borrowed [`guard::RequestHead`](palisade_core::guard::RequestHead),
/// it can move into the policy's future, which outlives the borrow of the
/// request; copying it costs one clone of the headers per request.
#[derive(Clone)]
pub struct RequestHead {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    client_ip: Option<ClientIp>,
    #[cfg(feature = "axum")]
    path_params: Vec<(Box<str>, Box<str>)>,
}

impl std::fmt::Debug for RequestHead {
    /// Header names only: values can be credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.keys().map(http::HeaderName::as_str).collect();
        f.debug_struct("RequestHead")
            .field("method", &self.method)
            .field("path", &self.uri.path())
            .field("headers", &names)
            .finish_non_exhaustive()
    }
}

impl RequestHead {
    /// The head of a request's parts. With feature `axum`, inside a router
    /// (a `route_layer` or `Router::layer`), the matched route's path
    /// parameters are copied too.
    pub fn from_parts(parts: &mut http::request::Parts) -> Self {
        Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
            client_ip: ClientIp::from_extensions(&parts.extensions),
            #[cfg(feature = "axum")]
            path_params: super::tenant::path_params(parts)
                .map(|params| {
                    params
                        .iter()
                        .map(|(key, value)| (Box::from(key), Box::from(value)))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The URI.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The client address, when a
    /// [`ClientIpLayer`](palisade_core::client_ip::ClientIpLayer) or the
    /// server put one in the extensions.
    pub fn client_ip(&self) -> Option<ClientIp> {
        self.client_ip
    }

    /// The path parameter `name` of the matched axum route,
    /// percent-decoded.
    #[cfg(feature = "axum")]
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    pub fn path_param(&self, name: &str) -> Option<&str> {
        self.path_params
            .iter()
            .find(|(key, _)| **key == *name)
            .map(|(_, value)| &**value)
    }
}

struct Shared {
    name: &'static str,
    policy: Box<dyn Policy>,
}

/// Runs an async [`Policy`] before the inner service, for authenticated
/// principals (without one: 401, the policy is not asked). A refusal is
/// rendered like every Palisade refusal and audited with the reason
/// `policy_refused`; the policy's name goes to a `debug` event of this
/// crate.
///
/// ```
/// use axum::{Router, routing::get};
/// use palisade_auth::authorize::{Authorize, RequestHead};
/// use palisade_core::{Rejection, principal::Principal};
///
/// let office_hours = Authorize::new("not_on_sunday", |principal: Principal, head: RequestHead| async move {
///     // A database or policy-engine call would go here.
///     if principal.has_role("oncall") || head.method() == http::Method::GET {
///         Ok(())
///     } else {
///         Err(Rejection::forbidden().with_detail("Writes need the on-call role."))
///     }
/// });
/// let app: Router = Router::new()
///     .route("/scans", get(|| async { "scans" }))
///     .route_layer(office_hours);
/// # let _ = app;
/// ```
#[derive(Clone)]
pub struct Authorize {
    shared: Arc<Shared>,
}

impl fmt::Debug for Authorize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorize")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl Authorize {
    /// A layer running `check`, named `name` in logs.
    pub fn new<F, Fut>(name: &'static str, check: F) -> Self
    where
        F: Fn(Principal, RequestHead) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Rejection>> + Send + 'static,
    {
        Self::policy(name, check)
    }

    /// A layer running a [`Policy`], named `name` in logs.
    pub fn policy(name: &'static str, policy: impl Policy) -> Self {
        Self {
            shared: Arc::new(Shared {
                name,
                policy: Box::new(policy),
            }),
        }
    }

    /// The name given at construction.
    pub fn name(&self) -> &'static str {
        self.shared.name
    }
}

impl<S> Layer<S> for Authorize {
    type Service = AuthorizeService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthorizeService {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service made by [`Authorize`].
#[derive(Clone)]
pub struct AuthorizeService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for AuthorizeService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizeService")
            .field("inner", &self.inner)
            .field("name", &self.shared.name)
            .finish()
    }
}

impl<S> AuthorizeService<S> {
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

type BoxedResponse<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody<B>>, E>> + Send>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AuthorizeService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: 'static,
    ReqBody: Send + 'static,
    ResBody: 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = AuthorizeFuture<ResBody, S::Error>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let principal = match authenticated(request.extensions().get::<Principal>()) {
            Ok(principal) => principal.clone(),
            Err(denial) => return AuthorizeFuture::ready(refuse(&request, denial)),
        };
        let (mut parts, body) = request.into_parts();
        let head = RequestHead::from_parts(&mut parts);
        let request = Request::from_parts(parts, body);
        let check = self.shared.policy.check(principal, head);
        // The inner service is called later: take the one that is ready and
        // leave a fresh clone in its place (tower's rule for services that
        // call their inner service from a future).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let name = self.shared.name;
        AuthorizeFuture::pending(Box::pin(async move {
            match check.await {
                Ok(()) => inner
                    .call(request)
                    .await
                    .map(|response| response.map(ResponseBody::inner)),
                Err(rejection) => {
                    tracing::debug!(policy = name, kind = %rejection.kind(), "authorization policy refused");
                    AuditEvent::refused(LAYER, rejection.kind(), "policy_refused")
                        .request(&request)
                        .emit();
                    Ok(respond(&request, rejection))
                }
            }
        }))
    }
}

pin_project! {
    /// The response future of [`AuthorizeService`]: a refusal ready at once
    /// (no principal), or the policy and then the inner service.
    pub struct AuthorizeFuture<B, E> {
        #[pin]
        kind: Kind<B, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B, E> {
        Ready { response: Option<Box<Response<ResponseBody<B>>>> },
        Pending { future: BoxedResponse<B, E> },
    }
}

impl<B, E> fmt::Debug for AuthorizeFuture<B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizeFuture").finish_non_exhaustive()
    }
}

impl<B, E> AuthorizeFuture<B, E> {
    fn ready(response: Response<ResponseBody<B>>) -> Self {
        Self {
            kind: Kind::Ready {
                response: Some(Box::new(response)),
            },
        }
    }

    fn pending(future: BoxedResponse<B, E>) -> Self {
        Self {
            kind: Kind::Pending { future },
        }
    }
}

impl<B, E> Future for AuthorizeFuture<B, E> {
    type Output = Result<Response<ResponseBody<B>>, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Ready { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(*response)),
                // Polled after completion: a caller bug; stay pending
                // rather than panic.
                None => Poll::Pending,
            },
            KindProj::Pending { future } => future.as_mut().poll(cx),
        }
    }
}
