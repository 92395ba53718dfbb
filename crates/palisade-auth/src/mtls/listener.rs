//! [`TlsListener`]: `axum::serve` over TLS, with [`PeerCertificates`] and
//! [`PeerAddr`](palisade_core::client_ip::PeerAddr) in every request.

use std::convert::Infallible;
use std::fmt;
use std::future::{Ready, ready};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::{IncomingStream, Listener};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::AbortHandle;
use tokio_rustls::server::TlsStream;
use tower_layer::Layer;
use tower_service::Service;

use super::PeerCertificates;
use super::tls::{AddConnectionInfo, ConnectionInfoLayer, TlsAcceptor};

/// Handshakes in progress at once; beyond, new connections wait to be
/// accepted (each handshake ends by its timeout at the latest).
const MAX_PENDING_HANDSHAKES: usize = 1024;

/// An `axum::serve` listener that completes TLS handshakes off the accept
/// loop (a slow client delays only itself) and yields the connections
/// that finished them. Pair it with [`WithConnectionInfo`] so requests
/// carry the client's chain:
///
/// ```no_run
/// # async fn run(acceptor: palisade_auth::mtls::TlsAcceptor, app: axum::Router) -> std::io::Result<()> {
/// use palisade_auth::mtls::{TlsListener, WithConnectionInfo};
///
/// let tcp = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
/// axum::serve(TlsListener::new(tcp, acceptor)?, WithConnectionInfo::new(app)).await?;
/// # Ok(())
/// # }
/// ```
///
/// Dropping the listener stops accepting.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
    accept_loop: AbortHandle,
}

impl fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsListener")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// Starts accepting on `tcp` (a task on the current tokio runtime; an
    /// error outside one).
    pub fn new(tcp: TcpListener, acceptor: TlsAcceptor) -> io::Result<Self> {
        let local_addr = tcp.local_addr()?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|error| io::Error::other(format!("no tokio runtime: {error}")))?;
        let (sender, ready) = mpsc::channel(64);
        let accept_loop = runtime
            .spawn(accept_loop(tcp, acceptor, sender))
            .abort_handle();
        Ok(Self {
            ready,
            local_addr,
            accept_loop,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let Ok(permit) = pending.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match tcp.accept().await {
            Ok(accepted) => accepted,
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::error!(%error, "accepting a TCP connection failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match acceptor.accept(stream).await {
                Ok((tls, _)) => {
                    let _ = ready.send((tls, peer)).await;
                }
                // Expected at this level: wrong CA, no certificate, scanners.
                Err(error) => tracing::debug!(%peer, %error, "TLS handshake failed"),
            }
        });
    }
}

fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept loop holds the sender until it is aborted, which
            // only dropping this listener does.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

/// The make-service for `axum::serve` with a [`TlsListener`]: the service
/// of each connection is `service` wrapped in a [`ConnectionInfoLayer`] with
/// the connection's peer address and verified chain.
#[derive(Clone, Debug)]
pub struct WithConnectionInfo<S> {
    service: S,
}

impl<S> WithConnectionInfo<S> {
    /// Serves `service` (an axum `Router`, or any service of requests).
    pub fn new(service: S) -> Self {
        Self { service }
    }
}

impl<S> Service<IncomingStream<'_, TlsListener>> for WithConnectionInfo<S>
where
    S: Clone,
{
    type Response = AddConnectionInfo<S>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    #[inline]
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, incoming: IncomingStream<'_, TlsListener>) -> Self::Future {
        let certificates = PeerCertificates::from_stream(incoming.io());
        let layer = ConnectionInfoLayer::new(*incoming.remote_addr(), certificates);
        ready(Ok(layer.layer(self.service.clone())))
    }
}
