//! mTLS identity: the client certificate of the connection as the request's
//! [`Principal`].
//!
//! The TLS handshake verifies the client's chain against your client CA;
//! this module reads the verified leaf and maps it to a principal:
//!
//! - subject: the SPIFFE id (the certificate's one `spiffe://` URI SAN),
//!   else the certificate subject (`CN=..., O=...`), else its first DNS
//!   SAN;
//! - method: [`AuthMethod::Mtls`](palisade_core::principal::AuthMethod::Mtls)
//!   with the SPIFFE id and the subject;
//! - expiry: the certificate's `notAfter`.
//!
//! A `spiffe://` URI beside any other URI SAN is refused (an X.509 SVID
//! has exactly one URI SAN), and so is an invalid SPIFFE id; with
//! [`require_spiffe`](MtlsConfigBuilder::require_spiffe) a certificate
//! without one is refused too.
//!
//! # Where the certificate comes from
//! In this order:
//! 1. `x-forwarded-client-cert` (Envoy's XFCC), only with
//!    [`xfcc`](MtlsConfigBuilder::xfcc) on and when the connection's peer is
//!    a trusted proxy: that proxy terminated the client's mTLS, so its
//!    report names the client even when the proxy connects with a
//!    certificate of its own. From any other peer the header is ignored,
//!    and [`MtlsAuthLayer`] removes it before the inner service.
//! 2. A [`PeerCertificates`] request extension, which the [`TlsAcceptor`]
//!    helpers insert for axum and hyper servers.
//! 3. With the `tonic` feature, tonic's `TlsConnectInfo<TcpConnectInfo>`.
//!
//! # Serving HTTPS with client certificates (axum)
//! ```no_run
//! # #[cfg(feature = "axum")]
//! # async fn serve() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use axum::{Extension, Router, routing::get};
//! use palisade_auth::mtls::{
//!     ClientCerts, MtlsAuthLayer, MtlsConfig, TlsAcceptor, TlsListener, WithConnectionInfo,
//!     server_config,
//! };
//! use palisade_core::principal::Principal;
//!
//! # let (cert_pem, key_pem, client_ca_pem) = (Vec::new(), Vec::new(), Vec::new());
//! # let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
//! let tls = server_config(&cert_pem, &key_pem, &client_ca_pem, ClientCerts::Required, provider)?;
//! let auth = MtlsAuthLayer::required(MtlsConfig::builder().require_spiffe(true).build()?);
//! let app = Router::new()
//!     .route("/", get(|Extension(who): Extension<Principal>| async move {
//!         who.subject().to_owned()
//!     }))
//!     .layer(auth);
//!
//! let tcp = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
//! let listener = TlsListener::new(tcp, TlsAcceptor::new(Arc::new(tls)))?;
//! axum::serve(listener, WithConnectionInfo::new(app)).await?;
//! # Ok(())
//! # }
//! ```
//!
//! With plain hyper, call [`TlsAcceptor::accept`] per connection and wrap
//! the service in [`ConnectionInfoLayer`]. With tonic, serve with its own
//! TLS (`ServerTlsConfig`) and the `tonic` feature, and put
//! [`MtlsAuthLayer`] in `Server::builder().layer(..)`.
//!
//! # Other layers
//! [`credential`] is the building block for an authenticator that accepts
//! several credentials: it reads the request and never changes it.

mod config;
mod identity;
mod layer;
#[cfg(feature = "axum")]
mod listener;
mod tls;
mod xfcc;

use std::net::IpAddr;
use std::sync::Arc;

use http::{Extensions, HeaderMap, Request};
use palisade_core::principal::Principal;
use rustls_pki_types::CertificateDer;

pub use config::{MtlsConfig, MtlsConfigBuilder};
pub use identity::{MtlsError, MtlsIdentity};
pub use layer::{MtlsAuth, MtlsAuthLayer};
#[cfg(feature = "axum")]
pub use listener::{TlsListener, WithConnectionInfo};
/// The TLS library, for its `ServerConfig` and crypto providers.
pub use rustls;
pub use tls::{AddConnectionInfo, ClientCerts, ConnectionInfoLayer, TlsAcceptor, server_config};

use crate::failure::AuthFailure;

/// The verified certificate chain the client presented on this connection,
/// leaf first, as a request extension. Insert it only for chains the TLS
/// handshake verified: [`TlsAcceptor`] and [`ConnectionInfoLayer`] do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCertificates(pub Arc<[CertificateDer<'static>]>);

impl PeerCertificates {
    /// The client's own certificate.
    pub fn leaf(&self) -> Option<&CertificateDer<'static>> {
        self.0.first()
    }
}

/// What [`credential`] found on a request.
#[derive(Clone, Debug)]
pub enum MtlsCredential {
    /// No client certificate, and no XFCC that is believed.
    None,
    /// A certificate naming this principal.
    Present(Principal),
    /// A certificate that cannot be accepted ([`AuthFailure::CertificateRefused`]).
    Refused(AuthFailure),
}

/// The mTLS credential of a request, as a principal. Reads only; see
/// [`identity`] for why a certificate was refused.
pub fn credential<B>(request: &Request<B>, config: &MtlsConfig) -> MtlsCredential {
    match identity(request, config) {
        Ok(None) => MtlsCredential::None,
        Ok(Some(identity)) => match identity.principal() {
            Ok(principal) => MtlsCredential::Present(principal),
            Err(error) => refused(&error),
        },
        Err(error) => refused(&error),
    }
}

fn refused(error: &MtlsError) -> MtlsCredential {
    tracing::debug!(reason = error.reason(), %error, "client certificate refused");
    MtlsCredential::Refused(AuthFailure::CertificateRefused)
}

/// The identity of a request's client certificate (see the [module
/// docs](self) for where it is read), or why it is refused; `Ok(None)`
/// when there is none.
pub fn identity<B>(
    request: &Request<B>,
    config: &MtlsConfig,
) -> Result<Option<MtlsIdentity>, MtlsError> {
    let honoured = config.honours_xfcc(request.extensions());
    identify(request.headers(), request.extensions(), config, honoured)
}

/// [`identity`], with the XFCC decision already taken.
fn identify(
    headers: &HeaderMap,
    extensions: &Extensions,
    config: &MtlsConfig,
    honour_xfcc: bool,
) -> Result<Option<MtlsIdentity>, MtlsError> {
    let forwarded = if honour_xfcc {
        xfcc::last_element(headers.get_all(xfcc::XFCC).iter())?
    } else {
        None
    };
    let identity = match forwarded {
        Some(element) => element.identity()?,
        // From a trusted proxy, the connection's certificate is the
        // proxy's: without XFCC the client showed none.
        None if honour_xfcc => return Ok(None),
        None => match leaf_of(extensions, MtlsIdentity::from_leaf) {
            Some(identity) => identity?,
            None => return Ok(None),
        },
    };
    if config.requires_spiffe() && identity.spiffe_id().is_none() {
        return Err(MtlsError::SpiffeIdMissing);
    }
    if identity.name().is_none() {
        return Err(MtlsError::NoIdentity);
    }
    Ok(Some(identity))
}

/// Applies `read` to the connection's leaf certificate, if there is one.
fn leaf_of<T>(extensions: &Extensions, read: impl FnOnce(&[u8]) -> T) -> Option<T> {
    if let Some(leaf) = extensions
        .get::<PeerCertificates>()
        .and_then(PeerCertificates::leaf)
    {
        return Some(read(leaf));
    }
    #[cfg(feature = "tonic")]
    if let Some(certs) = extensions
        .get::<tonic::transport::server::TlsConnectInfo<tonic::transport::server::TcpConnectInfo>>()
        .and_then(tonic::transport::server::TlsConnectInfo::peer_certs)
    {
        return certs.first().map(|leaf| read(leaf));
    }
    None
}

/// Removes `x-forwarded-client-cert` unless this request's peer is a
/// trusted proxy whose report is honoured, so no forged report reaches the
/// inner service.
pub fn strip_untrusted_xfcc<B>(request: &mut Request<B>, config: &MtlsConfig) {
    if !config.honours_xfcc(request.extensions()) {
        request.headers_mut().remove(xfcc::XFCC);
    }
}

/// The connection's peer address: core's sources, then tonic's TLS
/// connection info.
pub(crate) fn peer_ip(extensions: &Extensions) -> Option<IpAddr> {
    if let Some(ip) = palisade_core::client_ip::peer_addr(extensions) {
        return Some(ip);
    }
    #[cfg(feature = "tonic")]
    if let Some(addr) = extensions
        .get::<tonic::transport::server::TlsConnectInfo<tonic::transport::server::TcpConnectInfo>>()
        .and_then(|info| info.get_ref().remote_addr())
    {
        return Some(addr.ip());
    }
    None
}
