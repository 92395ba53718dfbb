//! mTLS identity over real TLS connections on loopback: an axum server
//! behind `TlsListener` (and a plain hyper one behind `TlsAcceptor`), a
//! rustls client with or without a client certificate.
#![cfg(all(feature = "mtls", feature = "axum"))]
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::extract::Extension;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use palisade_auth::mtls::rustls::crypto::CryptoProvider;
use palisade_auth::mtls::rustls::pki_types::pem::PemObject;
use palisade_auth::mtls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use palisade_auth::mtls::rustls::{ClientConfig, RootCertStore};
use palisade_auth::mtls::{
    ClientCerts, ConnectionInfoLayer, MtlsAuthLayer, MtlsConfig, MtlsIdentity, TlsAcceptor,
    TlsListener, WithConnectionInfo, server_config,
};
use palisade_core::principal::{AuthMethod, Principal};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, SanType,
};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tower::Layer;

const SPIFFE_API: &str = "spiffe://example.org/ns/prod/sa/api";
const SPIFFE_PROXY: &str = "spiffe://example.org/ns/mesh/sa/proxy";
const SPIFFE_FRONTEND: &str = "spiffe://example.org/ns/prod/sa/frontend";

/// A certificate and its key, PEM.
struct Identity {
    cert: String,
    key: String,
}

struct Pki {
    ca: String,
    server: Identity,
    api: Identity,
    proxy: Identity,
    frontend: Identity,
    two_uris: Identity,
    legacy: Identity,
    stranger: Identity,
}

fn issue(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    common_name: &str,
    dns: &[&str],
    uris: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> Identity {
    let mut params =
        CertificateParams::new(dns.iter().map(|d| (*d).to_owned()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    for uri in uris {
        params
            .subject_alt_names
            .push(SanType::URI((*uri).try_into().unwrap()));
    }
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    Identity {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca = ca("Palisade test CA");
        let other = ca_other();
        let client = ExtendedKeyUsagePurpose::ClientAuth;
        Pki {
            server: issue(
                &ca,
                "localhost",
                &["localhost"],
                &[],
                ExtendedKeyUsagePurpose::ServerAuth,
            ),
            api: issue(&ca, "api", &["api.internal"], &[SPIFFE_API], client.clone()),
            proxy: issue(&ca, "proxy", &[], &[SPIFFE_PROXY], client.clone()),
            frontend: issue(&ca, "frontend", &[], &[SPIFFE_FRONTEND], client.clone()),
            two_uris: issue(
                &ca,
                "two",
                &[],
                &[SPIFFE_API, "spiffe://example.org/ns/prod/sa/admin"],
                client.clone(),
            ),
            legacy: issue(&ca, "legacy", &["legacy.internal"], &[], client.clone()),
            stranger: issue(&other, "stranger", &[], &[SPIFFE_API], client),
            ca: ca.pem(),
        }
    })
}

fn ca_other() -> CertifiedIssuer<'static, KeyPair> {
    ca("Another CA")
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(palisade_auth::mtls::rustls::crypto::aws_lc_rs::default_provider())
}

/// Audit events of this binary, all tests together (a global subscriber:
/// servers run on other threads).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn audit_log() -> String {
    String::from_utf8(init().0.lock().unwrap().clone()).unwrap()
}

fn init() -> &'static Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED.get_or_init(|| {
        // Library code never relies on a process default; rustls may when
        // several providers are compiled in, so tests set one.
        let _ =
            palisade_auth::mtls::rustls::crypto::aws_lc_rs::default_provider().install_default();
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        captured
    })
}

/// Echoes the principal and the XFCC header the handler sees.
async fn whoami(Extension(principal): Extension<Principal>, headers: HeaderMap) -> String {
    let spiffe_id = match principal.method() {
        AuthMethod::Mtls { spiffe_id, .. } => spiffe_id.clone(),
        _ => None,
    };
    json!({
        "subject": principal.subject(),
        "method": principal.method().as_str(),
        "spiffe_id": spiffe_id,
        "xfcc": headers
            .get("x-forwarded-client-cert")
            .map(|v| v.to_str().unwrap().to_owned()),
    })
    .to_string()
}

fn tls(client_certs: ClientCerts) -> TlsAcceptor {
    let pki = pki();
    let config = server_config(
        pki.server.cert.as_bytes(),
        pki.server.key.as_bytes(),
        pki.ca.as_bytes(),
        client_certs,
        provider(),
    )
    .unwrap();
    TlsAcceptor::new(Arc::new(config))
}

/// An axum server on loopback behind `TlsListener`.
async fn serve(client_certs: ClientCerts, auth: MtlsAuthLayer) -> SocketAddr {
    init();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = TlsListener::new(tcp, tls(client_certs)).unwrap();
    let app = Router::new().fallback(whoami).layer(auth);
    tokio::spawn(async move { axum::serve(listener, WithConnectionInfo::new(app)).await });
    addr
}

fn client(identity: Option<&Identity>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki().ca.as_bytes()).unwrap())
        .unwrap();
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match identity {
        None => builder.with_no_client_auth(),
        Some(identity) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(identity.cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(identity.key.as_bytes()).unwrap(),
            )
            .unwrap(),
    })
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// One HTTPS request over a fresh connection; any TLS failure is an error.
async fn get(
    addr: SocketAddr,
    identity: Option<&Identity>,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Answer, Error> {
    let tcp = TcpStream::connect(addr).await?;
    let tls = tokio_rustls::TlsConnector::from(client(identity))
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    let mut request = Request::get(path).header("host", "localhost");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new())?)
        .await?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Answer {
        status,
        headers,
        body: String::from_utf8(body.to_vec())?,
    })
}

fn required() -> MtlsAuthLayer {
    MtlsAuthLayer::required(MtlsConfig::default())
}

fn url_encoded(pem: &str) -> String {
    percent_encoding::utf8_percent_encode(pem, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test]
async fn a_valid_certificate_gets_its_spiffe_id_as_principal() {
    let addr = serve(ClientCerts::Required, required()).await;
    let answer = get(addr, Some(&pki().api), "/", &[]).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.json(),
        json!({"subject": SPIFFE_API, "method": "mtls", "spiffe_id": SPIFFE_API, "xfcc": null})
    );
}

#[tokio::test]
async fn no_certificate_is_refused_in_the_handshake_when_tls_requires_one() {
    let addr = serve(ClientCerts::Required, required()).await;
    let error = get(addr, None, "/", &[]).await.err().expect("refused");
    // TLS 1.3: the client learns it from the server's alert on first read.
    assert!(
        format!("{error:?}").to_lowercase().contains("certificate"),
        "{error:?}"
    );
}

#[tokio::test]
async fn no_certificate_is_401_when_tls_allows_it_and_the_layer_requires_one() {
    let addr = serve(ClientCerts::Optional, required().realm("mesh")).await;
    let answer = get(addr, None, "/no-cert", &[]).await.unwrap();
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.headers["www-authenticate"], "Bearer realm=\"mesh\"");
    assert_eq!(answer.headers["content-type"], "application/problem+json");
    assert!(
        answer.body.contains("A client certificate is required."),
        "{}",
        answer.body
    );
    let log = audit_log();
    let line = log
        .lines()
        .find(|line| line.contains("route=\"/no-cert\"") || line.contains("route=/no-cert"))
        .unwrap_or_else(|| panic!("no audit event in {log}"));
    assert!(
        line.contains("layer=\"mtls\"") && line.contains("credential_missing"),
        "{line}"
    );
}

#[tokio::test]
async fn no_certificate_is_anonymous_with_the_optional_layer() {
    let addr = serve(
        ClientCerts::Optional,
        MtlsAuthLayer::optional(MtlsConfig::default()),
    )
    .await;
    let anonymous = get(addr, None, "/", &[]).await.unwrap();
    assert_eq!(anonymous.status, StatusCode::OK);
    assert_eq!(anonymous.json()["method"], "anonymous");
    let known = get(addr, Some(&pki().api), "/", &[]).await.unwrap();
    assert_eq!(known.json()["subject"], SPIFFE_API);
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_in_the_handshake() {
    for client_certs in [ClientCerts::Required, ClientCerts::Optional] {
        let addr = serve(client_certs, MtlsAuthLayer::optional(MtlsConfig::default())).await;
        let result = get(addr, Some(&pki().stranger), "/", &[]).await;
        assert!(result.is_err(), "{client_certs:?}: a stranger was served");
    }
}

#[tokio::test]
async fn a_certificate_with_two_uri_sans_is_refused_with_401() {
    let addr = serve(ClientCerts::Required, required()).await;
    let answer = get(addr, Some(&pki().two_uris), "/two-uris", &[])
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(
        answer
            .body
            .contains("The client certificate is not accepted."),
        "{}",
        answer.body
    );
    // The optional layer refuses it too: a bad credential is not "none".
    let addr = serve(
        ClientCerts::Required,
        MtlsAuthLayer::optional(MtlsConfig::default()),
    )
    .await;
    let answer = get(addr, Some(&pki().two_uris), "/", &[]).await.unwrap();
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let log = audit_log();
    let line = log
        .lines()
        .find(|line| line.contains("/two-uris"))
        .unwrap_or_else(|| panic!("no audit event in {log}"));
    assert!(line.contains("spiffe_id_ambiguous"), "{line}");
}

#[tokio::test]
async fn a_certificate_without_spiffe_id_is_named_by_subject_unless_spiffe_is_required() {
    let addr = serve(ClientCerts::Required, required()).await;
    let answer = get(addr, Some(&pki().legacy), "/", &[]).await.unwrap();
    assert_eq!(
        answer.json(),
        json!({"subject": "CN=legacy", "method": "mtls", "spiffe_id": null, "xfcc": null})
    );
    let strict = MtlsConfig::builder().require_spiffe(true).build().unwrap();
    let addr = serve(ClientCerts::Required, MtlsAuthLayer::required(strict)).await;
    let answer = get(addr, Some(&pki().legacy), "/", &[]).await.unwrap();
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let answer = get(addr, Some(&pki().api), "/", &[]).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn xfcc_from_an_untrusted_peer_is_ignored_and_stripped() {
    // Loopback is not a trusted proxy here.
    let config = MtlsConfig::builder()
        .trust_proxy("10.0.0.0/8")
        .xfcc(true)
        .build()
        .unwrap();
    let addr = serve(ClientCerts::Optional, MtlsAuthLayer::optional(config)).await;
    let forged = format!("URI={SPIFFE_FRONTEND}");
    let xfcc = [("x-forwarded-client-cert", forged.as_str())];
    // With a certificate: the principal is the certificate's, the header is gone.
    let answer = get(addr, Some(&pki().api), "/", &xfcc).await.unwrap();
    assert_eq!(
        answer.json(),
        json!({"subject": SPIFFE_API, "method": "mtls", "spiffe_id": SPIFFE_API, "xfcc": null})
    );
    // Without: anonymous, and the header is gone too.
    let answer = get(addr, None, "/", &xfcc).await.unwrap();
    assert_eq!(answer.json()["method"], "anonymous");
    assert_eq!(answer.json()["xfcc"], Value::Null);
}

#[tokio::test]
async fn xfcc_from_a_trusted_proxy_gives_the_forwarded_spiffe_principal() {
    let config = MtlsConfig::builder()
        .trust_proxy("127.0.0.0/8")
        .xfcc(true)
        .build()
        .unwrap();
    let addr = serve(ClientCerts::Optional, MtlsAuthLayer::required(config)).await;
    // The proxy connects with its own certificate; the header names the
    // client it terminated, and the last element is the nearest proxy's.
    let header = format!(
        "URI=spiffe://example.org/ns/prod/sa/forged,By={SPIFFE_PROXY};Hash=00ff;Subject=\"CN=frontend\";URI={SPIFFE_FRONTEND}"
    );
    let answer = get(
        addr,
        Some(&pki().proxy),
        "/",
        &[("x-forwarded-client-cert", &header)],
    )
    .await
    .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.json(),
        json!({"subject": SPIFFE_FRONTEND, "method": "mtls", "spiffe_id": SPIFFE_FRONTEND, "xfcc": header})
    );
    // The client's certificate itself, URL-encoded PEM, from a proxy
    // connecting without one.
    let header = format!(
        "By={SPIFFE_PROXY};Cert=\"{}\"",
        url_encoded(&pki().frontend.cert)
    );
    let answer = get(addr, None, "/", &[("x-forwarded-client-cert", &header)])
        .await
        .unwrap();
    assert_eq!(answer.json()["subject"], SPIFFE_FRONTEND);
    // Two SPIFFE ids in the proxy's element: refused.
    let header = format!("URI={SPIFFE_FRONTEND};URI={SPIFFE_API}");
    let answer = get(addr, None, "/", &[("x-forwarded-client-cert", &header)])
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    // No header from the proxy: the client showed no certificate. The
    // proxy's own certificate is never taken for the client's.
    let answer = get(addr, Some(&pki().proxy), "/", &[]).await.unwrap();
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn plain_hyper_with_tls_acceptor_and_connection_info_layer() {
    init();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let acceptor = tls(ClientCerts::Required);
    let app = Router::new().fallback(whoami).layer(required());
    tokio::spawn(async move {
        loop {
            let (stream, peer) = tcp.accept().await.unwrap();
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok((tls, certificates)) = acceptor.accept(stream).await else {
                    return;
                };
                let service = ConnectionInfoLayer::new(peer, certificates).layer(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(
                        TokioIo::new(tls),
                        hyper_util::service::TowerToHyperService::new(service),
                    )
                    .await;
            });
        }
    });
    let answer = get(addr, Some(&pki().api), "/", &[]).await.unwrap();
    assert_eq!(answer.json()["subject"], SPIFFE_API);
    assert!(get(addr, None, "/", &[]).await.is_err());
}

#[test]
fn identity_of_a_generated_certificate() {
    let der = CertificateDer::from_pem_slice(pki().api.cert.as_bytes()).unwrap();
    let identity = MtlsIdentity::from_leaf(&der).unwrap();
    assert_eq!(identity.subject(), "CN=api");
    assert_eq!(identity.dns_names(), ["api.internal"]);
    assert_eq!(identity.spiffe_id(), Some(SPIFFE_API));
    assert!(identity.not_after().is_some());
    let principal = identity.principal().unwrap();
    assert_eq!(principal.expires_at(), identity.not_after());
    let two = CertificateDer::from_pem_slice(pki().two_uris.cert.as_bytes()).unwrap();
    assert_eq!(
        MtlsIdentity::from_leaf(&two).unwrap_err().reason(),
        "spiffe_id_ambiguous"
    );
}

/// tonic serving its own TLS: the layer reads tonic's `TlsConnectInfo`.
#[cfg(feature = "tonic")]
mod tonic_tls {
    use super::*;
    use tonic::transport::{
        Certificate, Channel, ClientTlsConfig, Identity as TonicIdentity, Server, ServerTlsConfig,
    };
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    async fn serve_grpc(auth: MtlsAuthLayer) -> SocketAddr {
        init();
        let pki = pki();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_reporter, health) = tonic_health::server::health_reporter();
        let tls = ServerTlsConfig::new()
            .identity(TonicIdentity::from_pem(&pki.server.cert, &pki.server.key))
            .client_ca_root(Certificate::from_pem(&pki.ca));
        tokio::spawn(async move {
            Server::builder()
                .tls_config(tls)
                .unwrap()
                .layer(auth)
                .add_service(health)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await
        });
        addr
    }

    async fn check(addr: SocketAddr, identity: &Identity) -> Result<(), tonic::Status> {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&pki().ca))
            .identity(TonicIdentity::from_pem(&identity.cert, &identity.key))
            .domain_name("localhost");
        let channel = Channel::from_shared(format!("https://localhost:{}", addr.port()))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|_| ())
    }

    #[tokio::test]
    async fn tonic_tls_connect_info_is_read() {
        let strict = MtlsConfig::builder().require_spiffe(true).build().unwrap();
        let addr = serve_grpc(MtlsAuthLayer::required(strict)).await;
        check(addr, &pki().api).await.unwrap();
        let refused = check(addr, &pki().two_uris).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        let refused = check(addr, &pki().legacy).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    }
}

/// `Authenticate` with client certificates and API keys over real TLS: a
/// certificate alone or a key alone authenticates; both at once are refused
/// unless several credentials are allowed, and then both must verify.
#[tokio::test]
async fn authenticate_combines_certificates_and_api_keys() {
    use palisade_auth::api_key::{ApiKeys, MemoryApiKeyStore, NewApiKey};
    use palisade_auth::authenticate::Authenticate;

    init();
    let keys = ApiKeys::builder("pal_test", MemoryApiKeyStore::new())
        .build()
        .unwrap();
    let key = keys.issue(NewApiKey::new("key-bot")).await.unwrap().key;
    let serve_with = |auth: Authenticate| async move {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let listener = TlsListener::new(tcp, tls(ClientCerts::Optional)).unwrap();
        let app = Router::new().fallback(whoami).layer(auth);
        tokio::spawn(async move { axum::serve(listener, WithConnectionInfo::new(app)).await });
        addr
    };
    let strict = serve_with(
        Authenticate::builder()
            .mtls(MtlsConfig::default())
            .api_keys(keys.clone())
            .build()
            .unwrap(),
    )
    .await;
    let by_cert = get(strict, Some(&pki().api), "/", &[]).await.unwrap();
    assert_eq!(by_cert.status, StatusCode::OK);
    assert_eq!(by_cert.json()["subject"], SPIFFE_API);
    let by_key = get(strict, None, "/", &[("x-api-key", &key)])
        .await
        .unwrap();
    assert_eq!(by_key.json()["subject"], "key-bot");
    let both = get(strict, Some(&pki().api), "/", &[("x-api-key", &key)])
        .await
        .unwrap();
    assert_eq!(both.status, StatusCode::BAD_REQUEST);
    let neither = get(strict, None, "/", &[]).await.unwrap();
    assert_eq!(neither.status, StatusCode::UNAUTHORIZED);

    let layered = serve_with(
        Authenticate::builder()
            .mtls(MtlsConfig::default())
            .api_keys(keys)
            .allow_multiple_credentials()
            .build()
            .unwrap(),
    )
    .await;
    let both = get(layered, Some(&pki().api), "/", &[("x-api-key", &key)])
        .await
        .unwrap();
    assert_eq!(both.status, StatusCode::OK);
    assert_eq!(
        both.json()["subject"],
        "key-bot",
        "the key's principal, the certificate verified too"
    );
    let bad_key = get(
        layered,
        Some(&pki().api),
        "/",
        &[("x-api-key", "pal_test_bad")],
    )
    .await
    .unwrap();
    assert_eq!(
        bad_key.status,
        StatusCode::UNAUTHORIZED,
        "every credential must verify"
    );
}
