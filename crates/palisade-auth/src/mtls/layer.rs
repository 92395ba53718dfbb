//! [`MtlsAuthLayer`]: the client certificate as the request's principal, or
//! 401.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use palisade_core::Rejection;
use palisade_core::audit::AuditEvent;
use palisade_core::body::ResponseBody;
use palisade_core::future::ResponseFuture;
use palisade_core::principal::Principal;
use palisade_core::rejection::Challenge;
use palisade_core::render::respond;
use tower_layer::Layer;
use tower_service::Service;

use super::config::MtlsConfig;
use super::identity::MtlsError;
use super::xfcc::XFCC;
use crate::failure::AuthFailure;

struct Shared {
    config: MtlsConfig,
    optional: bool,
    realm: Option<String>,
}

/// Authenticates requests by client certificate: inserts the
/// [`Principal`] (and the [`MtlsIdentity`](super::MtlsIdentity)) or refuses
/// with 401. Removes `x-forwarded-client-cert` from every request whose
/// peer is not a trusted proxy (or when XFCC is off), so the inner service
/// never sees a forged one. Clones share one state.
///
/// ```
/// use palisade_auth::mtls::{MtlsAuthLayer, MtlsConfig};
/// use tower::ServiceBuilder;
///
/// let auth = MtlsAuthLayer::required(MtlsConfig::builder().require_spiffe(true).build()?)
///     .realm("mesh");
/// let stack = ServiceBuilder::new().layer(auth);
/// # let _ = stack;
/// # Ok::<(), palisade_core::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct MtlsAuthLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for MtlsAuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MtlsAuthLayer")
            .field("config", &self.shared.config)
            .field("optional", &self.shared.optional)
            .field("realm", &self.shared.realm)
            .finish()
    }
}

impl MtlsAuthLayer {
    /// A layer that refuses requests without a client certificate.
    pub fn required(config: MtlsConfig) -> Self {
        Self::new(config, false)
    }

    /// A layer that lets requests without a client certificate through with
    /// [`Principal::anonymous`] (keeping a principal an earlier layer set),
    /// so routes decide. A certificate that is refused is still refused.
    pub fn optional(config: MtlsConfig) -> Self {
        Self::new(config, true)
    }

    fn new(config: MtlsConfig, optional: bool) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                optional,
                realm: None,
            }),
        }
    }

    /// The realm named in `WWW-Authenticate`.
    pub fn realm(self, realm: impl Into<String>) -> Self {
        Self {
            shared: Arc::new(Shared {
                config: self.shared.config.clone(),
                optional: self.shared.optional,
                realm: Some(realm.into()),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &MtlsConfig {
        &self.shared.config
    }
}

impl<S> Layer<S> for MtlsAuthLayer {
    type Service = MtlsAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MtlsAuth {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service of [`MtlsAuthLayer`].
#[derive(Clone)]
pub struct MtlsAuth<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for MtlsAuth<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MtlsAuth")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> MtlsAuth<S> {
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

impl Shared {
    fn challenge(&self) -> Challenge {
        let challenge = Challenge::bearer();
        match &self.realm {
            Some(realm) => challenge.realm(realm),
            None => challenge,
        }
    }

    fn refuse<ReqBody, ResBody>(
        &self,
        request: &Request<ReqBody>,
        error: Option<&MtlsError>,
    ) -> Response<ResponseBody<ResBody>> {
        let (rejection, reason) = match error {
            // 401 needs a challenge (RFC 9110 §15.5.2) and none is defined
            // for certificates: the Bearer one that the rest of the stack
            // uses, without an error code since no token was at fault.
            None => (
                Rejection::unauthenticated()
                    .with_challenge(&self.challenge())
                    .with_detail("A client certificate is required."),
                AuthFailure::Missing.reason(),
            ),
            Some(error) => {
                tracing::debug!(reason = error.reason(), %error, "client certificate refused");
                (
                    AuthFailure::CertificateRefused.rejection(self.realm.as_deref()),
                    error.reason(),
                )
            }
        };
        AuditEvent::refused("mtls", rejection.kind(), reason)
            .request(request)
            .emit();
        respond(request, rejection)
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for MtlsAuth<S>
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

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let shared = &*self.shared;
        let honoured = shared.config.honours_xfcc(request.extensions());
        let found = super::identify(
            request.headers(),
            request.extensions(),
            &shared.config,
            honoured,
        );
        if !honoured {
            request.headers_mut().remove(XFCC);
        }
        let principal = match found
            .and_then(|found| found.map(|id| Ok((id.principal()?, id))).transpose())
        {
            Ok(Some((principal, identity))) => {
                if request
                    .extensions()
                    .get::<Principal>()
                    .is_some_and(|p| !p.is_anonymous())
                {
                    // An outer layer already authenticated the caller (a
                    // token, say): a certificate too is a conflict, not a
                    // replacement. `Authenticate` can allow both.
                    AuditEvent::refused(
                        "mtls",
                        palisade_core::RejectionKind::BadRequest,
                        crate::AuthFailure::MultipleCredentials.reason(),
                    )
                    .request(&request)
                    .emit();
                    let rejection = crate::AuthFailure::MultipleCredentials.rejection(None);
                    return ResponseFuture::rejected(palisade_core::render::respond(
                        &request, rejection,
                    ));
                }
                request.extensions_mut().insert(identity);
                principal
            }
            Ok(None) if shared.optional => match request.extensions().get::<Principal>() {
                // A principal set by an earlier layer (API key, JWT) stays.
                Some(_) => return ResponseFuture::inner(self.inner.call(request)),
                None => Principal::anonymous(),
            },
            Ok(None) => return ResponseFuture::rejected(shared.refuse(&request, None)),
            Err(error) => return ResponseFuture::rejected(shared.refuse(&request, Some(&error))),
        };
        request.extensions_mut().insert(principal);
        ResponseFuture::inner(self.inner.call(request))
    }
}
