//! The TLS side: a rustls `ServerConfig` that asks for client certificates,
//! an acceptor that hands over the verified chain, and a layer that puts
//! it (with the peer address) in every request of the connection.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use palisade_core::ConfigError;
use palisade_core::client_ip::PeerAddr;
use rustls::crypto::CryptoProvider;
use rustls::server::{ServerConnection, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tower_layer::Layer;
use tower_service::Service;

use super::PeerCertificates;

/// Whether the TLS handshake demands a client certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientCerts {
    /// A client without a certificate signed by the client CA is refused
    /// in the handshake.
    Required,
    /// A client may present no certificate (routes decide, through an
    /// optional [`MtlsAuthLayer`](super::MtlsAuthLayer)); one that presents
    /// a certificate the client CA did not sign is still refused in the
    /// handshake.
    Optional,
}

/// A rustls server configuration from PEM: the server's chain and key, the
/// CA bundle that signs client certificates, and whether a client
/// certificate is required. The crypto provider is explicit, so nothing
/// depends on a process-wide default. ALPN is left empty: set
/// `alpn_protocols` (`h2`, `http/1.1`) to what your server speaks.
///
/// ```
/// use std::sync::Arc;
/// use palisade_auth::mtls::{ClientCerts, server_config};
///
/// let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
/// let refused = server_config(b"", b"", b"", ClientCerts::Required, provider);
/// assert!(refused.is_err()); // no certificate in the PEM
/// ```
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: &[u8],
    client_certs: ClientCerts,
    provider: Arc<CryptoProvider>,
) -> Result<ServerConfig, ConfigError> {
    let chain = certificates(cert_pem, "cert_pem")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|error| ConfigError::invalid("key_pem", format!("no private key: {error}")))?;
    let mut roots = RootCertStore::empty();
    for ca in certificates(client_ca_pem, "client_ca_pem")? {
        roots
            .add(ca)
            .map_err(|error| ConfigError::invalid("client_ca_pem", error.to_string()))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let verifier = match client_certs {
        ClientCerts::Required => verifier,
        ClientCerts::Optional => verifier.allow_unauthenticated(),
    }
    .build()
    .map_err(|error| ConfigError::invalid("client_ca_pem", error.to_string()))?;
    ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ConfigError::invalid("provider", error.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|error| ConfigError::invalid("cert_pem", error.to_string()))
}

fn certificates(
    pem: &[u8],
    field: &'static str,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| ConfigError::invalid(field, format!("unreadable PEM: {error}")))?;
    if certificates.is_empty() {
        return Err(ConfigError::invalid(field, "no certificate in the PEM"));
    }
    Ok(certificates)
}

impl PeerCertificates {
    /// The client's chain on a server connection, once the handshake is
    /// done; `None` when the client sent none.
    pub fn from_connection(connection: &ServerConnection) -> Option<Self> {
        connection
            .peer_certificates()
            .filter(|chain| !chain.is_empty())
            .map(|chain| Self(Arc::from(chain)))
    }

    /// The client's chain on a TLS stream.
    pub fn from_stream<IO>(stream: &TlsStream<IO>) -> Option<Self> {
        Self::from_connection(stream.get_ref().1)
    }
}

/// Accepts TLS connections and hands over the client's verified chain.
/// Cheap to clone.
///
/// ```no_run
/// # async fn run(config: rustls::ServerConfig) -> std::io::Result<()> {
/// use std::sync::Arc;
/// use palisade_auth::mtls::TlsAcceptor;
///
/// let acceptor = TlsAcceptor::new(Arc::new(config));
/// let tcp = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
/// let (stream, peer) = tcp.accept().await?;
/// let (tls, certificates) = acceptor.accept(stream).await?;
/// # let _ = (tls, certificates, peer);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TlsAcceptor {
    inner: tokio_rustls::TlsAcceptor,
    handshake_timeout: Duration,
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl TlsAcceptor {
    /// An acceptor for this configuration; handshakes time out after 10 s.
    pub fn new(config: Arc<ServerConfig>) -> Self {
        Self {
            inner: tokio_rustls::TlsAcceptor::from(config),
            handshake_timeout: Duration::from_secs(10),
        }
    }

    /// How long a client may take to finish the handshake (default 10 s),
    /// so that silent connections do not pile up.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Completes the handshake: the TLS stream and the client's verified
    /// chain (`None` when the client sent no certificate, which only
    /// [`ClientCerts::Optional`] allows). A refused or timed-out handshake
    /// is an error.
    pub async fn accept(
        &self,
        tcp: TcpStream,
    ) -> io::Result<(TlsStream<TcpStream>, Option<PeerCertificates>)> {
        let stream = tokio::time::timeout(self.handshake_timeout, self.inner.accept(tcp))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        let certificates = PeerCertificates::from_stream(&stream);
        Ok((stream, certificates))
    }
}

/// Puts a connection's [`PeerAddr`] and [`PeerCertificates`] in every
/// request: one layer per connection, around the service hyper serves on
/// it.
///
/// ```no_run
/// # async fn run(
/// #     acceptor: palisade_auth::mtls::TlsAcceptor,
/// #     tcp: tokio::net::TcpListener,
/// #     app: axum::Router,
/// # ) -> std::io::Result<()> {
/// use hyper_util::rt::TokioIo;
/// use hyper_util::service::TowerToHyperService;
/// use palisade_auth::mtls::ConnectionInfoLayer;
/// use tower_layer::Layer;
///
/// loop {
///     let (stream, peer) = tcp.accept().await?;
///     let (acceptor, app) = (acceptor.clone(), app.clone());
///     tokio::spawn(async move {
///         let Ok((tls, certificates)) = acceptor.accept(stream).await else { return };
///         let service = ConnectionInfoLayer::new(peer, certificates).layer(app);
///         let _ = hyper::server::conn::http1::Builder::new()
///             .serve_connection(TokioIo::new(tls), TowerToHyperService::new(service))
///             .await;
///     });
/// }
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ConnectionInfoLayer {
    peer: SocketAddr,
    certificates: Option<PeerCertificates>,
}

impl ConnectionInfoLayer {
    /// The connection's peer address and the client's verified chain.
    pub fn new(peer: SocketAddr, certificates: Option<PeerCertificates>) -> Self {
        Self { peer, certificates }
    }
}

impl<S> Layer<S> for ConnectionInfoLayer {
    type Service = AddConnectionInfo<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AddConnectionInfo {
            inner,
            info: self.clone(),
        }
    }
}

/// The service of [`ConnectionInfoLayer`].
#[derive(Clone, Debug)]
pub struct AddConnectionInfo<S> {
    inner: S,
    info: ConnectionInfoLayer,
}

impl<S> AddConnectionInfo<S> {
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

impl<S, B> Service<Request<B>> for AddConnectionInfo<S>
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
        let extensions = request.extensions_mut();
        extensions.insert(PeerAddr(self.info.peer));
        match &self.info.certificates {
            Some(certificates) => {
                extensions.insert(certificates.clone());
            }
            // Whatever an inner hop inserted is not this connection's chain.
            None => {
                extensions.remove::<PeerCertificates>();
            }
        }
        self.inner.call(request)
    }
}
