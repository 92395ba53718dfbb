//! [`ClientIpLayer`]: resolves the client address once, for every layer inside.

use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use http::Request;
use tower_layer::Layer;
use tower_service::Service;

use super::{ClientIp, ClientIpResolver};

/// Resolves each request's [`ClientIp`] and places it in the request
/// extensions, where keys, audit events and handlers read it. Put it outside
/// every layer that keys on the client address.
///
/// A request whose server gave no peer address gets no `ClientIp`; this is
/// logged once, since it means the server is not configured to pass the
/// peer address (axum: `into_make_service_with_connect_info::<SocketAddr>()`).
#[derive(Clone, Debug, Default)]
pub struct ClientIpLayer {
    resolver: ClientIpResolver,
}

impl ClientIpLayer {
    /// A layer resolving with `resolver`.
    pub fn new(resolver: ClientIpResolver) -> Self {
        Self { resolver }
    }
}

impl<S> Layer<S> for ClientIpLayer {
    type Service = ResolveClientIp<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ResolveClientIp {
            inner,
            resolver: self.resolver.clone(),
        }
    }
}

/// The service made by [`ClientIpLayer`].
#[derive(Clone, Debug)]
pub struct ResolveClientIp<S> {
    inner: S,
    resolver: ClientIpResolver,
}

impl<S> ResolveClientIp<S> {
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

static WARNED_NO_PEER: AtomicBool = AtomicBool::new(false);

impl<S, B> Service<Request<B>> for ResolveClientIp<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        match self
            .resolver
            .resolve_request(request.headers(), request.extensions())
        {
            Some(client) => {
                request.extensions_mut().insert::<ClientIp>(client);
            }
            None => {
                if !WARNED_NO_PEER.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        target: "palisade::client_ip",
                        "request without a peer address: serve with connect info \
                         (axum: into_make_service_with_connect_info::<SocketAddr>()) \
                         or insert palisade_core::client_ip::PeerAddr"
                    );
                }
            }
        }
        self.inner.call(request)
    }
}
