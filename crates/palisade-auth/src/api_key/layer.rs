//! Where a request's API key is read from, and the standalone layer.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::AUTHORIZATION;
use http::{HeaderName, Request, Response};
use palisade_core::Rejection;
use palisade_core::audit::AuditEvent;
use palisade_core::body::ResponseBody;
use palisade_core::future::ResponseFuture as CoreFuture;
use palisade_core::principal::Principal;
use palisade_core::rejection::{BearerError, Challenge};
use palisade_core::render::respond;
use tower_layer::Layer;
use tower_service::Service;

use super::{ApiKeys, KeyCheck};
use crate::failure::AuthFailure;

/// The places an API key is looked for: a header (default `X-API-Key`),
/// `Authorization: ApiKey <key>`, and a query parameter only when enabled.
#[derive(Clone, Debug)]
pub struct ApiKeySources {
    header: Option<HeaderName>,
    authorization: bool,
    query: Option<String>,
    strip: bool,
}

impl Default for ApiKeySources {
    fn default() -> Self {
        Self {
            header: Some(HeaderName::from_static("x-api-key")),
            authorization: true,
            query: None,
            strip: true,
        }
    }
}

/// Where the key was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyOrigin {
    Header,
    Authorization,
    Query,
}

pub(crate) enum FoundKey<'a> {
    Nothing,
    Key(Cow<'a, str>, KeyOrigin),
    Refused(AuthFailure),
}

impl ApiKeySources {
    /// The header to read (default `X-API-Key`); `None` to read none.
    pub fn header(mut self, name: Option<HeaderName>) -> Self {
        self.header = name;
        self
    }

    /// Reads `Authorization: ApiKey <key>` (default on).
    pub fn authorization(mut self, on: bool) -> Self {
        self.authorization = on;
        self
    }

    /// Reads this query parameter too. Off by default: URLs end up in logs,
    /// histories and `Referer` headers.
    pub fn query(mut self, name: impl Into<String>) -> Self {
        self.query = Some(name.into());
        self
    }

    /// Removes the key from the request before the inner service sees it
    /// (default on: handlers and inner logs never see it).
    pub fn strip(mut self, on: bool) -> Self {
        self.strip = on;
        self
    }

    pub(crate) fn find<'a, B>(&self, request: &'a Request<B>) -> FoundKey<'a> {
        let mut found: Option<(Cow<'a, str>, KeyOrigin)> = None;
        let mut take = |key: Cow<'a, str>, origin| {
            if found.is_some() {
                return Err(AuthFailure::MultipleCredentials);
            }
            found = Some((key, origin));
            Ok(())
        };
        let headers = request.headers();
        let result = (|| {
            if let Some(name) = &self.header {
                let mut values = headers.get_all(name).iter();
                if let Some(value) = values.next() {
                    if values.next().is_some() {
                        return Err(AuthFailure::MultipleCredentials);
                    }
                    let key = value.to_str().map_err(|_| AuthFailure::MalformedRequest)?;
                    take(Cow::Borrowed(key.trim()), KeyOrigin::Header)?;
                }
            }
            if self.authorization {
                let mut values = headers.get_all(AUTHORIZATION).iter();
                if let Some(value) = values.next() {
                    if values.next().is_some() {
                        return Err(AuthFailure::MultipleCredentials);
                    }
                    if let Ok(value) = value.to_str()
                        && let Some((scheme, key)) = value.split_once(' ')
                        && scheme.eq_ignore_ascii_case("apikey")
                    {
                        take(Cow::Borrowed(key.trim()), KeyOrigin::Authorization)?;
                    }
                }
            }
            if let Some(name) = &self.query
                && let Some(query) = request.uri().query()
            {
                for pair in query.split('&') {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    if key == name {
                        let value = percent_encoding::percent_decode_str(value)
                            .decode_utf8()
                            .map_err(|_| AuthFailure::MalformedRequest)?;
                        take(value, KeyOrigin::Query)?;
                    }
                }
            }
            Ok(())
        })();
        match result {
            Err(failure) => FoundKey::Refused(failure),
            Ok(()) => match found {
                Some((key, origin)) => FoundKey::Key(key, origin),
                None => FoundKey::Nothing,
            },
        }
    }

    /// Removes the key when configured to.
    pub(crate) fn strip_from<B>(&self, request: &mut Request<B>, origin: KeyOrigin) {
        if !self.strip {
            return;
        }
        match origin {
            KeyOrigin::Header => {
                if let Some(name) = &self.header {
                    request.headers_mut().remove(name);
                }
            }
            KeyOrigin::Authorization => {
                request.headers_mut().remove(AUTHORIZATION);
            }
            KeyOrigin::Query => {
                if let Some(name) = &self.query
                    && let Some(uri) = crate::source::without_query_param(request.uri(), name)
                {
                    *request.uri_mut() = uri;
                }
            }
        }
    }
}

/// The refusal for an API key failure, with an `ApiKey` challenge.
pub(crate) fn api_key_rejection(failure: AuthFailure, realm: Option<&str>) -> Rejection {
    if failure.is_unavailable() || failure == AuthFailure::OriginNotAllowed {
        return failure.rejection(realm);
    }
    let mut challenge = Challenge::scheme("ApiKey");
    if let Some(realm) = realm {
        challenge = challenge.realm(realm);
    }
    match failure {
        AuthFailure::Missing => Rejection::unauthenticated()
            .with_challenge(&challenge)
            .with_detail("An API key is required."),
        AuthFailure::MultipleCredentials | AuthFailure::MalformedRequest => {
            let detail = "The request must carry exactly one readable credential.";
            Rejection::bad_request()
                .with_challenge(&challenge.error(BearerError::InvalidRequest))
                .with_detail(detail)
        }
        _ => Rejection::unauthenticated()
            .with_challenge(&challenge.error(BearerError::InvalidToken))
            .with_detail("The API key is invalid."),
    }
}

struct Shared {
    keys: ApiKeys,
    sources: ApiKeySources,
    optional: bool,
    realm: Option<String>,
}

/// Authenticates requests by API key alone (see
/// [`Authenticate`](crate::authenticate::Authenticate) to accept JWTs and
/// certificates too).
///
/// ```
/// use palisade_auth::api_key::{ApiKeyLayer, ApiKeys, MemoryApiKeyStore};
/// use tower::ServiceBuilder;
///
/// let keys = ApiKeys::builder("pal_live", MemoryApiKeyStore::new()).build()?;
/// let stack = ServiceBuilder::new().layer(ApiKeyLayer::new(keys));
/// # let _ = stack;
/// # Ok::<(), palisade_core::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct ApiKeyLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for ApiKeyLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyLayer")
            .field("keys", &self.shared.keys)
            .field("sources", &self.shared.sources)
            .finish_non_exhaustive()
    }
}

impl ApiKeyLayer {
    /// Requires a key in `X-API-Key` or `Authorization: ApiKey`.
    pub fn new(keys: ApiKeys) -> Self {
        Self::with(keys, ApiKeySources::default(), false, None)
    }

    /// A layer with these sources; `optional` lets requests without a key
    /// through as anonymous.
    pub fn with(
        keys: ApiKeys,
        sources: ApiKeySources,
        optional: bool,
        realm: Option<String>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                keys,
                sources,
                optional,
                realm,
            }),
        }
    }
}

impl<S> Layer<S> for ApiKeyLayer {
    type Service = ApiKeyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiKeyService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service of [`ApiKeyLayer`].
#[derive(Clone)]
pub struct ApiKeyService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for ApiKeyService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

type Boxed<B, E> = Pin<Box<dyn Future<Output = Result<Response<ResponseBody<B>>, E>> + Send>>;

fn refuse<ReqBody, ResBody>(
    shared: &Shared,
    request: &Request<ReqBody>,
    failure: AuthFailure,
) -> Response<ResponseBody<ResBody>> {
    let rejection = api_key_rejection(failure, shared.realm.as_deref());
    AuditEvent::refused("api_key", rejection.kind(), failure.reason())
        .request(request)
        .emit();
    respond(request, rejection)
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ApiKeyService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: 'static,
    ReqBody: Send + 'static,
    ResBody: 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = crate::layer::ResponseFuture<S::Future, ResBody, S::Error>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let shared = &*self.shared;
        let (check, origin) = match shared.sources.find(&request) {
            FoundKey::Key(key, origin) => (shared.keys.check(&key), origin),
            FoundKey::Nothing if shared.optional => {
                if request.extensions().get::<Principal>().is_none() {
                    request.extensions_mut().insert(Principal::anonymous());
                }
                return crate::layer::ResponseFuture::fast(CoreFuture::inner(
                    self.inner.call(request),
                ));
            }
            FoundKey::Nothing => {
                let response = refuse(shared, &request, AuthFailure::Missing);
                return crate::layer::ResponseFuture::fast(CoreFuture::rejected(response));
            }
            FoundKey::Refused(failure) => {
                let response = refuse(shared, &request, failure);
                return crate::layer::ResponseFuture::fast(CoreFuture::rejected(response));
            }
        };
        shared.sources.strip_from(&mut request, origin);
        // An outer layer already authenticated the caller: a second
        // credential is a conflict, not a replacement.
        if request
            .extensions()
            .get::<Principal>()
            .is_some_and(|p| !p.is_anonymous())
        {
            let response = refuse(shared, &request, AuthFailure::MultipleCredentials);
            return crate::layer::ResponseFuture::fast(CoreFuture::rejected(response));
        }
        match check {
            KeyCheck::Done(Ok(principal)) => {
                request.extensions_mut().insert(principal);
                crate::layer::ResponseFuture::fast(CoreFuture::inner(self.inner.call(request)))
            }
            KeyCheck::Done(Err(failure)) => crate::layer::ResponseFuture::fast(
                CoreFuture::rejected(refuse(shared, &request, failure)),
            ),
            KeyCheck::Pending(pending) => {
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let shared = self.shared.clone();
                let future: Boxed<ResBody, S::Error> = Box::pin(async move {
                    match pending.await {
                        Ok(principal) => {
                            request.extensions_mut().insert(principal);
                            inner
                                .call(request)
                                .await
                                .map(|response| response.map(ResponseBody::inner))
                        }
                        Err(failure) => Ok(refuse(&shared, &request, failure)),
                    }
                });
                crate::layer::ResponseFuture::slow(future)
            }
        }
    }
}
