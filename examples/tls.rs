//! HTTPS with client certificates: an axum server on loopback whose callers
//! are named by their certificate (SPIFFE id, else subject).
//!
//! ```text
//! cargo run --example tls
//! ```
//!
//! Environment (all optional):
//! - `PORT`: the port (default 8443);
//! - `CLIENT_CERTS`: `optional` (default: a client without a certificate is
//!   served as `anonymous`) or `required` (refused in the TLS handshake);
//! - `TLS_CERT`, `TLS_KEY`, `TLS_CLIENT_CA`: PEM files of the server chain,
//!   its key and the CA bundle that signs client certificates. Without
//!   them, a development CA, server certificate and client certificate
//!   (SPIFFE id `spiffe://example.org/ns/dev/sa/client`) are made at start
//!   and written to a temporary directory, with the `curl` commands to try.
//!
//! Audit events (`palisade::audit`) go to the log, `RUST_LOG` filters it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::Extension;
use axum::{Router, routing::get};
use palisade::auth::mtls::{
    ClientCerts, MtlsAuthLayer, MtlsConfig, MtlsIdentity, TlsAcceptor, TlsListener,
    WithConnectionInfo, server_config,
};
use palisade::core::principal::Principal;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Who is calling, as the layer saw it.
async fn whoami(
    Extension(principal): Extension<Principal>,
    identity: Option<Extension<MtlsIdentity>>,
) -> String {
    let dns = identity
        .map(|Extension(identity)| identity.dns_names().join(", "))
        .unwrap_or_default();
    println!(
        "request from {} ({})",
        principal.subject(),
        principal.method().as_str()
    );
    format!(
        "hello {} (authenticated by {}; DNS names: [{dns}])\n",
        principal.subject(),
        principal.method().as_str()
    )
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    // rustls needs a process default when several providers are compiled
    // in; the server configuration below names its provider anyway.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port.parse()?,
        Err(_) => 8443,
    };
    let client_certs = match std::env::var("CLIENT_CERTS").as_deref() {
        Ok("required") => ClientCerts::Required,
        Ok("optional") | Err(_) => ClientCerts::Optional,
        Ok(other) => return Err(format!("CLIENT_CERTS={other}: use optional or required").into()),
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let files = match (
        std::env::var("TLS_CERT"),
        std::env::var("TLS_KEY"),
        std::env::var("TLS_CLIENT_CA"),
    ) {
        (Ok(cert), Ok(key), Ok(ca)) => Files {
            cert: cert.into(),
            key: key.into(),
            ca: ca.into(),
        },
        _ => dev_pki(&std::env::temp_dir().join("palisade-tls-example"), addr)?,
    };

    let tls = server_config(
        &std::fs::read(&files.cert)?,
        &std::fs::read(&files.key)?,
        &std::fs::read(&files.ca)?,
        client_certs,
        Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
    )?;
    // With optional client certificates, callers without one are anonymous
    // and routes decide; with required ones, the handshake refuses them.
    let config = MtlsConfig::default();
    let auth = match client_certs {
        ClientCerts::Required => MtlsAuthLayer::required(config),
        ClientCerts::Optional => MtlsAuthLayer::optional(config),
    };
    let app = Router::new().route("/", get(whoami)).layer(auth);

    let tcp = tokio::net::TcpListener::bind(addr).await?;
    let listener = TlsListener::new(tcp, TlsAcceptor::new(Arc::new(tls)))?;
    println!("listening on https://{addr} (client certificates {client_certs:?})");
    axum::serve(listener, WithConnectionInfo::new(app)).await?;
    Ok(())
}

struct Files {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

/// A development CA, a server certificate for localhost and a client
/// certificate with a SPIFFE id, written to `dir`.
fn dev_pki(dir: &Path, addr: SocketAddr) -> Result<Files, Error> {
    std::fs::create_dir_all(dir)?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "Palisade development CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;

    let leaf = |name: &str, sans: Vec<String>, uri: Option<&str>, usage| -> Result<_, Error> {
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        if let Some(uri) = uri {
            params.subject_alt_names.push(SanType::URI(uri.try_into()?));
        }
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let (server_cert, server_key) = leaf(
        "localhost",
        vec!["localhost".into(), "127.0.0.1".into()],
        None,
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let (client_cert, client_key) = leaf(
        "dev client",
        vec!["client.internal".into()],
        Some("spiffe://example.org/ns/dev/sa/client"),
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    let write = |name: &str, pem: &str| -> Result<PathBuf, Error> {
        let path = dir.join(name);
        std::fs::write(&path, pem)?;
        Ok(path)
    };
    let files = Files {
        cert: write("server.pem", &server_cert)?,
        key: write("server-key.pem", &server_key)?,
        ca: write("ca.pem", &ca.pem())?,
    };
    let client = write("client.pem", &client_cert)?;
    let client_key = write("client-key.pem", &client_key)?;
    println!("development certificates in {}", dir.display());
    println!(
        "  with a client certificate: curl --cacert {ca} --cert {client} --key {key} https://localhost:{port}/",
        ca = files.ca.display(),
        client = client.display(),
        key = client_key.display(),
        port = addr.port(),
    );
    println!(
        "  without:                   curl --cacert {ca} https://localhost:{port}/",
        ca = files.ca.display(),
        port = addr.port(),
    );
    Ok(files)
}
