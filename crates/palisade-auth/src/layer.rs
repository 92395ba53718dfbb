//! [`JwtAuthLayer`]: verifies the request's token and inserts its
//! [`Principal`], or refuses with 401 (503 while keys or the revocation store
//! are unavailable).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::SEC_WEBSOCKET_PROTOCOL;
use http::{HeaderValue, Request, Response};
use palisade_core::audit::AuditEvent;
use palisade_core::body::ResponseBody;
use palisade_core::clock::Clock;
use palisade_core::principal::Principal;
use palisade_core::render::respond;
use palisade_core::{ConfigError, future::ResponseFuture as CoreFuture};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::claims::ClaimMapping;
use crate::failure::AuthFailure;
use crate::issuer::Issuer;
use crate::revocation::{RevocationFailure, RevocationStore};
use crate::source::{Found, Origin, TokenSources};
use crate::verifier::{JwtVerifier, JwtVerifierBuilder, Verification};

struct Shared {
    verifier: JwtVerifier,
    sources: TokenSources,
    optional: bool,
    realm: Option<String>,
}

/// Authenticates requests by JWT. Clones share one verifier (keys, cache,
/// counters), so the same layer on many routes is one authenticator.
///
/// ```
/// use palisade_auth::{Issuer, JwtAuthLayer};
/// use palisade_auth::key::{Algorithm, VerifyingKey};
/// use tower::ServiceBuilder;
///
/// # palisade_auth::crypto::CryptoBackend::install_preferred()?;
/// let auth = JwtAuthLayer::builder()
///     .issuer(
///         Issuer::new("https://id.example.com")
///             .audience("api")
///             .key(VerifyingKey::hmac(Algorithm::HS256, &[7u8; 32])?),
///     )
///     .realm("api")
///     .build()?;
/// let stack = ServiceBuilder::new().layer(auth);
/// # let _ = stack;
/// # Ok::<(), palisade_core::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct JwtAuthLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for JwtAuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuthLayer")
            .field("verifier", &self.shared.verifier)
            .field("sources", &self.shared.sources)
            .field("optional", &self.shared.optional)
            .finish()
    }
}

/// Builds a [`JwtAuthLayer`].
#[derive(Debug, Default)]
pub struct JwtAuthBuilder {
    verifier: JwtVerifierBuilder,
    verifier_options: bool,
    prebuilt: Option<JwtVerifier>,
    sources: TokenSources,
    optional: bool,
    realm: Option<String>,
}

impl JwtAuthBuilder {
    /// Trusts an issuer (see [`JwtVerifierBuilder::issuer`]).
    pub fn issuer(mut self, issuer: Issuer) -> Self {
        self.verifier_options = true;
        self.verifier = self.verifier.issuer(issuer);
        self
    }

    /// Uses a verifier built elsewhere (shared with another layer). The
    /// verifier's own options (issuers, revocation, cache...) are set on it;
    /// setting them here too is refused at build.
    pub fn verifier(mut self, verifier: JwtVerifier) -> Self {
        self.prebuilt = Some(verifier);
        self
    }

    /// Where subject, tenant, roles and scopes are read from.
    pub fn claim_mapping(mut self, mapping: ClaimMapping) -> Self {
        self.verifier_options = true;
        self.verifier = self.verifier.claim_mapping(mapping);
        self
    }

    /// The longest token accepted (default 8 KiB).
    pub fn max_token_bytes(mut self, bytes: usize) -> Self {
        self.verifier_options = true;
        self.verifier = self.verifier.max_token_bytes(bytes);
        self
    }

    /// The longest `kid` accepted (default 256 bytes).
    pub fn max_kid_len(mut self, len: usize) -> Self {
        self.verifier_options = true;
        self.verifier = self.verifier.max_kid_len(len);
        self
    }

    /// How many verified tokens are remembered (default 100,000; 0 = off).
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.verifier_options = true;
        self.verifier = self.verifier.cache_capacity(capacity);
        self
    }

    /// Checks every token against a revocation store.
    pub fn revocation(mut self, store: impl RevocationStore) -> Self {
        self.verifier_options = true;
        self.verifier = self.verifier.revocation(store);
        self
    }

    /// What to do when the revocation store cannot answer (default: 503).
    pub fn on_revocation_failure(mut self, policy: RevocationFailure) -> Self {
        self.verifier_options = true;
        self.verifier = self.verifier.on_revocation_failure(policy);
        self
    }

    /// The clock (tests use a manual one).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.verifier_options = true;
        self.verifier = self.verifier.clock(clock);
        self
    }

    /// Where tokens are read from (default: `Authorization: Bearer`).
    pub fn sources(mut self, sources: TokenSources) -> Self {
        self.sources = sources;
        self
    }

    /// Lets requests without any credential through with
    /// [`Principal::anonymous`], so routes decide. A bad credential is still
    /// refused.
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }

    /// The realm named in `WWW-Authenticate`.
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = Some(realm.into());
        self
    }

    /// Builds the layer; see [`JwtVerifierBuilder::build`].
    pub fn build(self) -> Result<JwtAuthLayer, ConfigError> {
        let verifier = match self.prebuilt {
            Some(_) if self.verifier_options => {
                return Err(ConfigError::invalid(
                    "verifier",
                    "a prebuilt verifier was given: set issuers, revocation, cache and clock on it, not here",
                ));
            }
            Some(verifier) => verifier,
            None => self.verifier.build()?,
        };
        Ok(JwtAuthLayer {
            shared: Arc::new(Shared {
                verifier,
                sources: self.sources,
                optional: self.optional,
                realm: self.realm,
            }),
        })
    }
}

impl JwtAuthLayer {
    /// A builder.
    pub fn builder() -> JwtAuthBuilder {
        JwtAuthBuilder::default()
    }

    /// A layer reading `Authorization: Bearer` and requiring a token.
    pub fn new(verifier: JwtVerifier) -> Self {
        Self {
            shared: Arc::new(Shared {
                verifier,
                sources: TokenSources::default(),
                optional: false,
                realm: None,
            }),
        }
    }

    /// The verifier, to share with other layers or handlers.
    pub fn verifier(&self) -> &JwtVerifier {
        &self.shared.verifier
    }
}

impl<S> Layer<S> for JwtAuthLayer {
    type Service = JwtAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        JwtAuth {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service of [`JwtAuthLayer`].
#[derive(Clone)]
pub struct JwtAuth<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for JwtAuth<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuth")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> JwtAuth<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming the wrapper.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

fn refuse<ReqBody, ResBody>(
    shared: &Shared,
    request: &Request<ReqBody>,
    failure: AuthFailure,
) -> Response<ResponseBody<ResBody>> {
    let rejection = failure.rejection(shared.realm.as_deref());
    AuditEvent::refused("jwt", rejection.kind(), failure.reason())
        .request(request)
        .emit();
    respond(request, rejection)
}

pub(crate) type BoxedResponse<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody<B>>, E>> + Send>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for JwtAuth<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: 'static,
    ReqBody: Send + 'static,
    ResBody: 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let shared = &*self.shared;
        shared.verifier.ensure_refreshing();
        let (verification, origin) = match shared.sources.find(&request) {
            Found::Token(token, origin) => (shared.verifier.verify_token(&token), origin),
            Found::Nothing if shared.optional => {
                // A principal set by an earlier layer (API key, mTLS) stays.
                if request.extensions().get::<Principal>().is_none() {
                    request.extensions_mut().insert(Principal::anonymous());
                }
                return ResponseFuture::fast(CoreFuture::inner(self.inner.call(request)));
            }
            Found::Nothing => {
                let response = refuse(shared, &request, AuthFailure::Missing);
                return ResponseFuture::fast(CoreFuture::rejected(response));
            }
            Found::Refused(failure) => {
                let response = refuse(shared, &request, failure);
                return ResponseFuture::fast(CoreFuture::rejected(response));
            }
        };
        let echo = match origin {
            Origin::Protocol | Origin::Query => shared.sources.strip(&mut request, origin),
            Origin::Header | Origin::Cookie => None,
        };
        if request
            .extensions()
            .get::<Principal>()
            .is_some_and(|p| !p.is_anonymous())
        {
            // An outer layer already authenticated the caller: a second
            // credential is a conflict, not a replacement.
            let response = refuse(shared, &request, AuthFailure::MultipleCredentials);
            return ResponseFuture::fast(CoreFuture::rejected(response));
        }
        match verification {
            Verification::Done(Ok(principal)) => {
                request.extensions_mut().insert(principal);
                let future = CoreFuture::inner(self.inner.call(request));
                match echo {
                    None => ResponseFuture::fast(future),
                    Some(protocol) => ResponseFuture::echo(future, protocol),
                }
            }
            Verification::Done(Err(failure)) => {
                ResponseFuture::fast(CoreFuture::rejected(refuse(shared, &request, failure)))
            }
            Verification::Pending(pending) => {
                // The inner service is called later: take the one that is
                // ready and leave a fresh clone in its place (tower's rule
                // for services that call their inner service from a future).
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let shared = self.shared.clone();
                let future: BoxedResponse<ResBody, S::Error> = Box::pin(async move {
                    match pending.await {
                        Ok(principal) => {
                            request.extensions_mut().insert(principal);
                            let mut response = inner
                                .call(request)
                                .await
                                .map(|response| response.map(ResponseBody::inner));
                            if let (Ok(response), Some(protocol)) = (&mut response, echo) {
                                echo_protocol(response, protocol);
                            }
                            response
                        }
                        Err(failure) => Ok(refuse(&shared, &request, failure)),
                    }
                });
                ResponseFuture::slow(future)
            }
        }
    }
}

pin_project! {
    /// The response future of [`JwtAuth`].
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        kind: Kind<F, B, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B, E> {
        Fast { #[pin] future: CoreFuture<F, B> },
        Echo { #[pin] future: CoreFuture<F, B>, protocol: Option<HeaderValue> },
        Slow { future: BoxedResponse<B, E> },
    }
}

/// On a WebSocket handshake the inner service accepted without choosing a
/// subprotocol, answers with the one the client offered beside its
/// credential.
fn echo_protocol<B>(response: &mut Response<B>, protocol: HeaderValue) {
    if response.status() == http::StatusCode::SWITCHING_PROTOCOLS
        && !response.headers().contains_key(SEC_WEBSOCKET_PROTOCOL)
    {
        response
            .headers_mut()
            .insert(SEC_WEBSOCKET_PROTOCOL, protocol);
    }
}

impl<F, B, E> fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> ResponseFuture<F, B, E> {
    pub(crate) fn fast(future: CoreFuture<F, B>) -> Self {
        Self {
            kind: Kind::Fast { future },
        }
    }

    pub(crate) fn echo(future: CoreFuture<F, B>, protocol: HeaderValue) -> Self {
        Self {
            kind: Kind::Echo {
                future,
                protocol: Some(protocol),
            },
        }
    }

    pub(crate) fn slow(future: BoxedResponse<B, E>) -> Self {
        Self {
            kind: Kind::Slow { future },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Fast { future } => future.poll(cx),
            KindProj::Echo { future, protocol } => {
                let mut result = std::task::ready!(future.poll(cx));
                if let (Ok(response), Some(protocol)) = (&mut result, protocol.take()) {
                    echo_protocol(response, protocol);
                }
                Poll::Ready(result)
            }
            KindProj::Slow { future } => future.as_mut().poll(cx),
        }
    }
}
