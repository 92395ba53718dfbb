//! [`Authenticate`]: one layer for every credential type: JWT, API key and
//! client certificate (feature `mtls`), required or optional.
//!
//! - Exactly one credential type per request unless
//!   [`allow_multiple_credentials`](AuthenticateBuilder::allow_multiple_credentials):
//!   a request with a bearer token and an API key is refused (400), never
//!   resolved by picking one.
//! - Optional mode lets a request without any credential through with
//!   [`Principal::anonymous`], so routes decide (with
//!   [`authorize`](crate::authorize) layers). A bad credential is refused
//!   either way.
//! - A development mode turns authentication off and inserts a fixed
//!   principal. It exists only when asked for by name
//!   ([`dangerous_development_mode`](AuthenticateBuilder::dangerous_development_mode)),
//!   warns at start-up, and writes an audit event on every request.
//!
//! ```
//! # palisade_auth::crypto::CryptoBackend::install_preferred()?;
//! use palisade_auth::api_key::{ApiKeys, MemoryApiKeyStore};
//! use palisade_auth::authenticate::Authenticate;
//! use palisade_auth::issue::{SigningKey, TokenIssuer};
//! use palisade_auth::key::Algorithm;
//! use palisade_auth::JwtVerifier;
//!
//! let issuer = TokenIssuer::builder("https://id.example.com")
//!     .audience("api")
//!     .signing_key(SigningKey::hmac(Algorithm::HS256, &[1u8; 32])?)
//!     .build()?;
//! let auth = Authenticate::builder()
//!     .jwt(JwtVerifier::builder().issuer(issuer.verifying_issuer()).build()?)
//!     .api_keys(ApiKeys::builder("pal_live", MemoryApiKeyStore::new()).build()?)
//!     .realm("api")
//!     .build()?;
//! # let _ = auth;
//! # Ok::<(), palisade_core::ConfigError>(())
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::WWW_AUTHENTICATE;
use http::{Request, Response};
use palisade_core::audit::AuditEvent;
use palisade_core::body::ResponseBody;
use palisade_core::future::ResponseFuture as CoreFuture;
use palisade_core::principal::{AuthMethod, Principal};
use palisade_core::rejection::Challenge;
use palisade_core::render::respond;
use palisade_core::{ConfigError, Rejection};
use tower_layer::Layer;
use tower_service::Service;

use crate::api_key::layer::{FoundKey, api_key_rejection};
use crate::api_key::{ApiKeySources, ApiKeys, KeyCheck};
use crate::failure::AuthFailure;
use crate::layer::{BoxedResponse, ResponseFuture};
use crate::source::{Found, Origin, TokenSources};
use crate::verifier::{JwtVerifier, Verification};

/// Which credential a failure came from, for its challenge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Jwt,
    ApiKey,
    #[cfg(feature = "mtls")]
    Certificate,
}

type Pending = Pin<Box<dyn Future<Output = Result<Principal, AuthFailure>> + Send>>;

struct Shared {
    jwt: Option<(JwtVerifier, TokenSources)>,
    api_keys: Option<(ApiKeys, ApiKeySources)>,
    #[cfg(feature = "mtls")]
    mtls: Option<crate::mtls::MtlsConfig>,
    optional: bool,
    allow_multiple: bool,
    development: Option<Principal>,
    realm: Option<String>,
}

impl Shared {
    fn rejection(&self, failure: AuthFailure, kind: Option<Kind>) -> Rejection {
        let realm = self.realm.as_deref();
        match (failure, kind) {
            (AuthFailure::Missing, _) => {
                // One challenge per accepted scheme (RFC 9110 §11.6.1).
                let mut rejection =
                    Rejection::unauthenticated().with_detail("A credential is required.");
                let mut challenges = Vec::new();
                if self.jwt.is_some() {
                    challenges.push(Challenge::bearer());
                }
                if self.api_keys.is_some() {
                    challenges.push(Challenge::scheme("ApiKey"));
                }
                for (i, challenge) in challenges.into_iter().enumerate() {
                    let challenge = match realm {
                        Some(realm) => challenge.realm(realm),
                        None => challenge,
                    };
                    let value = challenge.to_header_value();
                    rejection = if i == 0 {
                        rejection.with_header(WWW_AUTHENTICATE, value)
                    } else {
                        rejection.append_header(WWW_AUTHENTICATE, value)
                    };
                }
                rejection
            }
            (failure, Some(Kind::ApiKey)) => api_key_rejection(failure, realm),
            (failure, _) => failure.rejection(realm),
        }
    }
}

/// Authenticates requests by any configured credential type. Clones share
/// one state.
#[derive(Clone)]
pub struct Authenticate {
    shared: Arc<Shared>,
}

impl fmt::Debug for Authenticate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticate")
            .field("jwt", &self.shared.jwt.is_some())
            .field("api_keys", &self.shared.api_keys.is_some())
            .field("optional", &self.shared.optional)
            .field("development", &self.shared.development.is_some())
            .finish_non_exhaustive()
    }
}

/// Builds [`Authenticate`].
#[derive(Default)]
pub struct AuthenticateBuilder {
    jwt: Option<(JwtVerifier, TokenSources)>,
    api_keys: Option<(ApiKeys, ApiKeySources)>,
    #[cfg(feature = "mtls")]
    mtls: Option<crate::mtls::MtlsConfig>,
    optional: bool,
    allow_multiple: bool,
    development: Option<Principal>,
    realm: Option<String>,
}

impl fmt::Debug for AuthenticateBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthenticateBuilder")
            .finish_non_exhaustive()
    }
}

impl AuthenticateBuilder {
    /// Accepts JWTs in `Authorization: Bearer`.
    pub fn jwt(self, verifier: JwtVerifier) -> Self {
        self.jwt_from(verifier, TokenSources::default())
    }

    /// Accepts JWTs from these sources.
    pub fn jwt_from(mut self, verifier: JwtVerifier, sources: TokenSources) -> Self {
        self.jwt = Some((verifier, sources));
        self
    }

    /// Accepts API keys in `X-API-Key` or `Authorization: ApiKey`.
    pub fn api_keys(self, keys: ApiKeys) -> Self {
        self.api_keys_from(keys, ApiKeySources::default())
    }

    /// Accepts API keys from these sources.
    pub fn api_keys_from(mut self, keys: ApiKeys, sources: ApiKeySources) -> Self {
        self.api_keys = Some((keys, sources));
        self
    }

    /// Accepts client certificates.
    #[cfg(feature = "mtls")]
    pub fn mtls(mut self, config: crate::mtls::MtlsConfig) -> Self {
        self.mtls = Some(config);
        self
    }

    /// Lets requests without any credential through as anonymous.
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }

    /// Accepts requests carrying several credential types (a client
    /// certificate and a token, say). Every one must verify; the principal
    /// is the JWT's, else the API key's, else the certificate's.
    pub fn allow_multiple_credentials(mut self) -> Self {
        self.allow_multiple = true;
        self
    }

    /// The realm named in challenges.
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = Some(realm.into());
        self
    }

    /// Turns authentication off: every request gets `principal` (its method
    /// set to `Development`). For local development only; it warns when
    /// built and writes an audit event on every request.
    pub fn dangerous_development_mode(mut self, principal: Principal) -> Self {
        let method_fixed = Principal::builder(principal.subject())
            .roles(principal.roles().iter().cloned())
            .scopes(principal.scopes().iter().cloned())
            .method(AuthMethod::Development);
        let method_fixed = match principal.tenant() {
            Some(tenant) => method_fixed.tenant(tenant),
            None => method_fixed,
        };
        self.development = Some(method_fixed.build());
        self
    }

    /// Checks the configuration.
    pub fn build(self) -> Result<Authenticate, ConfigError> {
        #[cfg(feature = "mtls")]
        let any_mtls = self.mtls.is_some();
        #[cfg(not(feature = "mtls"))]
        let any_mtls = false;
        if self.development.is_none() && self.jwt.is_none() && self.api_keys.is_none() && !any_mtls
        {
            return Err(ConfigError::invalid(
                "authenticate",
                "no credential type is configured",
            ));
        }
        if let Some(principal) = &self.development {
            // On stderr too: a subscriber may not be installed yet.
            eprintln!(
                "palisade: DEVELOPMENT MODE: authentication is off; every request is {:?}",
                principal.subject()
            );
            tracing::warn!(
                target: palisade_core::audit::TARGET,
                subject = principal.subject(),
                "DEVELOPMENT MODE: authentication is off; every request is this principal"
            );
        }
        Ok(Authenticate {
            shared: Arc::new(Shared {
                jwt: self.jwt,
                api_keys: self.api_keys,
                #[cfg(feature = "mtls")]
                mtls: self.mtls,
                optional: self.optional,
                allow_multiple: self.allow_multiple,
                development: self.development,
                realm: self.realm,
            }),
        })
    }
}

impl Authenticate {
    /// A builder.
    pub fn builder() -> AuthenticateBuilder {
        AuthenticateBuilder::default()
    }
}

impl<S> Layer<S> for Authenticate {
    type Service = AuthenticateService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthenticateService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service of [`Authenticate`].
#[derive(Clone)]
pub struct AuthenticateService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for AuthenticateService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthenticateService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// One credential's verification.
enum Check {
    Done(Result<Principal, AuthFailure>),
    Pending(Pending),
}

fn refuse<ReqBody, ResBody>(
    shared: &Shared,
    request: &Request<ReqBody>,
    failure: AuthFailure,
    kind: Option<Kind>,
) -> Response<ResponseBody<ResBody>> {
    let rejection = shared.rejection(failure, kind);
    AuditEvent::refused("authenticate", rejection.kind(), failure.reason())
        .request(request)
        .emit();
    respond(request, rejection)
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AuthenticateService<S>
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
        if let Some(principal) = &shared.development {
            AuditEvent::allowed("authenticate", "development_mode")
                .request(&request)
                .emit();
            tracing::warn!(target: palisade_core::audit::TARGET, "development mode: request not authenticated");
            request.extensions_mut().insert(principal.clone());
            return ResponseFuture::fast(CoreFuture::inner(self.inner.call(request)));
        }

        // Find every credential before verifying any.
        // On the stack: at most one credential of each type.
        let mut checks: smallvec::SmallVec<[(Kind, Check); 3]> = smallvec::SmallVec::new();
        let mut jwt_origin = None;
        let mut key_origin = None;
        if let Some((verifier, sources)) = &shared.jwt {
            verifier.ensure_refreshing();
            match sources.find(&request) {
                Found::Nothing => {}
                Found::Refused(failure) => {
                    return self.refuse_now(&request, failure, Some(Kind::Jwt));
                }
                // `Authorization: Bearer <api key>` is a common client
                // habit: a well-formed key of ours is checked as a key.
                Found::Token(token, Origin::Header)
                    if shared
                        .api_keys
                        .as_ref()
                        .is_some_and(|(keys, _)| keys.is_well_formed(&token)) =>
                {
                    if let Some((keys, _)) = &shared.api_keys {
                        let check = match keys.check(&token) {
                            KeyCheck::Done(result) => Check::Done(result),
                            KeyCheck::Pending(future) => Check::Pending(future),
                        };
                        checks.push((Kind::ApiKey, check));
                    }
                }
                Found::Token(token, origin) => {
                    jwt_origin = Some(origin);
                    let check = match verifier.verify_token(&token) {
                        Verification::Done(result) => Check::Done(result),
                        Verification::Pending(future) => Check::Pending(future),
                    };
                    checks.push((Kind::Jwt, check));
                }
            }
        }
        if let Some((keys, sources)) = &shared.api_keys {
            match sources.find(&request) {
                FoundKey::Nothing => {}
                FoundKey::Refused(failure) => {
                    return self.refuse_now(&request, failure, Some(Kind::ApiKey));
                }
                FoundKey::Key(key, origin) => {
                    key_origin = Some(origin);
                    let check = match keys.check(&key) {
                        KeyCheck::Done(result) => Check::Done(result),
                        KeyCheck::Pending(future) => Check::Pending(future),
                    };
                    checks.push((Kind::ApiKey, check));
                }
            }
        }
        #[cfg(feature = "mtls")]
        if let Some(config) = &shared.mtls {
            let found = crate::mtls::credential(&request, config);
            crate::mtls::strip_untrusted_xfcc(&mut request, config);
            match found {
                crate::mtls::MtlsCredential::None => {}
                crate::mtls::MtlsCredential::Refused(failure) => {
                    return self.refuse_now(&request, failure, Some(Kind::Certificate));
                }
                crate::mtls::MtlsCredential::Present(principal) => {
                    checks.push((Kind::Certificate, Check::Done(Ok(principal))));
                }
            }
        }

        if checks.len() > 1 && !shared.allow_multiple {
            return self.refuse_now(&request, AuthFailure::MultipleCredentials, None);
        }
        if checks.is_empty() {
            if shared.optional {
                if request.extensions().get::<Principal>().is_none() {
                    request.extensions_mut().insert(Principal::anonymous());
                }
                return ResponseFuture::fast(CoreFuture::inner(self.inner.call(request)));
            }
            return self.refuse_now(&request, AuthFailure::Missing, None);
        }

        // WebSocket and (by default) API key credentials leave the request
        // before the inner service sees it.
        let mut echo = None;
        if let (Some(origin), Some((_, sources))) = (jwt_origin, &shared.jwt)
            && matches!(origin, Origin::Protocol | Origin::Query)
        {
            echo = sources.strip(&mut request, origin);
        }
        if let (Some(origin), Some((_, sources))) = (key_origin, &shared.api_keys) {
            sources.strip_from(&mut request, origin);
        }

        // All at once: every one must verify; the principal is the JWT's,
        // else the API key's, else the certificate's, whichever answers
        // first.
        let mut principal: Option<(Kind, Principal)> = None;
        let mut pending = Vec::new();
        for (kind, check) in checks {
            match check {
                Check::Done(Ok(found)) => keep_best(&mut principal, kind, found),
                Check::Done(Err(failure)) => return self.refuse_now(&request, failure, Some(kind)),
                Check::Pending(future) => pending.push((kind, future)),
            }
        }
        if pending.is_empty() {
            if let Some((_, principal)) = principal {
                request.extensions_mut().insert(principal);
            }
            let future = CoreFuture::inner(self.inner.call(request));
            return match echo {
                Some(protocol) => ResponseFuture::echo(future, protocol),
                None => ResponseFuture::fast(future),
            };
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        let future: BoxedResponse<ResBody, S::Error> = Box::pin(async move {
            let mut principal = principal;
            for (kind, future) in pending {
                match future.await {
                    Ok(found) => keep_best(&mut principal, kind, found),
                    Err(failure) => return Ok(refuse(&shared, &request, failure, Some(kind))),
                }
            }
            if let Some((_, principal)) = principal {
                request.extensions_mut().insert(principal);
            }
            inner
                .call(request)
                .await
                .map(|response| response.map(ResponseBody::inner))
        });
        ResponseFuture::slow(future)
    }
}

/// Keeps the principal of the highest-ranked credential: JWT, API key,
/// certificate.
fn keep_best(best: &mut Option<(Kind, Principal)>, kind: Kind, found: Principal) {
    let rank = |kind: Kind| match kind {
        Kind::Jwt => 0,
        Kind::ApiKey => 1,
        #[cfg(feature = "mtls")]
        Kind::Certificate => 2,
    };
    if best
        .as_ref()
        .is_none_or(|(held, _)| rank(kind) < rank(*held))
    {
        *best = Some((kind, found));
    }
}

impl<S> AuthenticateService<S> {
    fn refuse_now<ReqBody, ResBody, F, E>(
        &self,
        request: &Request<ReqBody>,
        failure: AuthFailure,
        kind: Option<Kind>,
    ) -> ResponseFuture<F, ResBody, E> {
        ResponseFuture::fast(CoreFuture::rejected(refuse(
            &self.shared,
            request,
            failure,
            kind,
        )))
    }
}
