#![allow(clippy::expect_used, clippy::unwrap_used)]
//! The `palisade` binary end to end: keys it issues verify with
//! `palisade_auth` (directly and behind `ApiKeyLayer`), hashes match the
//! stored ones, rotation overlaps and revocation refuses, minted tokens pass
//! a `JwtVerifier`, and development certificates complete a real mTLS
//! handshake on loopback carrying the SPIFFE id.

use std::convert::Infallible;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use palisade_auth::api_key::{ApiKeyLayer, ApiKeyRecord, ApiKeys, FileApiKeyStore};
use palisade_auth::crypto::CryptoBackend;
use palisade_auth::key::{Algorithm, VerifyingKey};
use palisade_auth::{AuthFailure, Issuer, JwtVerifier};
use palisade_core::clock::ManualClock;
use palisade_core::principal::Principal;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::{Layer, ServiceExt};

const PEPPER_VAR: &str = "PALISADE_TEST_PEPPER";
const PEPPER: &str = "a test pepper that is 32 bytes or longer";
const SECRET_VAR: &str = "PALISADE_TEST_SECRET";
const SECRET: &str = "an HS256 secret of at least thirty-two bytes";

/// Environment variables for a run.
type Env<'a> = &'a [(&'a str, &'a str)];

/// What a run of the binary printed, and how it ended.
struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Output {
    fn assert_success(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

fn palisade(args: &[&str], env: Env<'_>, stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .env_remove(PEPPER_VAR)
        .env_remove(SECRET_VAR)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    Output {
        code: output.status.code().unwrap(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Issues a key into `store` through the binary; returns the printed key.
fn issue_into(store: &Path) -> String {
    let out = palisade(
        &[
            "keys",
            "new",
            "--prefix",
            "pal_test",
            "--owner",
            "ci-bot",
            "--role",
            "operator",
            "--scope",
            "read:scans",
            "--tenant",
            "acme",
            "--tier",
            "pro",
            "--expires-in",
            "30d",
            "--pepper-env",
            PEPPER_VAR,
            "--store",
            path_str(store),
        ],
        &[(PEPPER_VAR, PEPPER)],
        "",
    );
    out.assert_success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout is the key alone: {:?}", out.stdout);
    assert!(
        out.stderr.contains("shown only this once"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("HMAC-SHA256"), "{}", out.stderr);
    lines[0].to_owned()
}

fn peppered(store: FileApiKeyStore) -> ApiKeys {
    ApiKeys::builder("pal_test", store)
        .pepper(PEPPER.as_bytes().to_vec())
        .build()
        .unwrap()
}

fn record(store: &Path, id: &str) -> ApiKeyRecord {
    FileApiKeyStore::open(store)
        .unwrap()
        .records()
        .into_iter()
        .find(|r| r.id == id)
        .unwrap()
}

#[tokio::test]
async fn a_new_key_in_a_store_verifies_with_the_same_pepper_and_the_file_never_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("keys.toml");
    let key = issue_into(&store_path);
    assert!(key.starts_with("pal_test_"));

    let text = std::fs::read_to_string(&store_path).unwrap();
    assert!(!text.contains(&key));
    assert!(
        !text.contains(&key["pal_test_".len()..]),
        "not even the random part"
    );
    assert!(!text.contains(PEPPER));

    let store = FileApiKeyStore::open(&store_path).unwrap();
    let [stored] = <[ApiKeyRecord; 1]>::try_from(store.records()).unwrap();
    assert_eq!(
        stored.expires_at,
        Some(stored.created_at + 30 * 86_400),
        "--expires-in 30d"
    );
    let keys = peppered(store.clone());
    assert!(keys.is_well_formed(&key));
    let principal = keys.verify(&key).await.unwrap();
    assert_eq!(principal.subject(), "ci-bot");
    assert_eq!(principal.tenant(), Some("acme"));
    assert!(principal.has_role("operator"));
    assert!(principal.has_scope("read:scans"));
    assert_eq!(principal.api_key_id(), Some(stored.id.as_str()));
    assert_eq!(principal.claims().unwrap()["tier"], "pro");

    // The pepper was used: plain SHA-256 does not find the key.
    let unpeppered = ApiKeys::builder("pal_test", store).build().unwrap();
    assert_eq!(
        unpeppered.verify(&key).await,
        Err(AuthFailure::UnknownApiKey)
    );

    // And behind the layer, as a server would use it.
    let service =
        ApiKeyLayer::new(keys).layer(tower::service_fn(|request: http::Request<()>| async move {
            let principal = request.extensions().get::<Principal>().unwrap();
            Ok::<_, Infallible>(http::Response::new(principal.subject().to_owned()))
        }));
    let request = http::Request::builder()
        .uri("/me")
        .header("x-api-key", &key)
        .body(())
        .unwrap();
    let response = service.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    let request = http::Request::builder()
        .uri("/me")
        .header("x-api-key", format!("{}x", &key[..key.len() - 1]))
        .body(())
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn without_a_store_the_record_on_stderr_is_toml_for_the_key_file() {
    let out = palisade(
        &[
            "keys",
            "new",
            "--prefix",
            "pal_test",
            "--owner",
            "dashboard",
            "--role",
            "viewer",
        ],
        &[],
        "",
    );
    out.assert_success();
    let key = out.stdout.trim();
    assert_eq!(out.stdout.lines().count(), 1);
    assert!(out.stderr.contains("plain SHA-256"), "{}", out.stderr);
    assert!(!out.stderr.contains(key));

    // stderr, appended to a key file as it is, gives a store that knows the
    // key.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.toml");
    std::fs::write(&file, &out.stderr).unwrap();
    let keys = ApiKeys::builder("pal_test", FileApiKeyStore::open(&file).unwrap())
        .build()
        .unwrap();
    let principal = keys.verify(key).await.unwrap();
    assert_eq!(principal.subject(), "dashboard");
    assert!(principal.has_role("viewer"));
}

#[test]
fn keys_hash_of_a_key_read_from_stdin_is_the_stored_hash_and_garbage_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("keys.toml");
    let key = issue_into(&store_path);
    let [stored] =
        <[ApiKeyRecord; 1]>::try_from(FileApiKeyStore::open(&store_path).unwrap().records())
            .unwrap();

    let env = [(PEPPER_VAR, PEPPER)];
    let out = palisade(
        &["keys", "hash", "--pepper-env", PEPPER_VAR],
        &env,
        &format!("{key}\n"),
    );
    out.assert_success();
    assert_eq!(out.stdout, format!("{}\n", stored.hash));
    assert!(!out.stdout.contains(&key) && !out.stderr.contains(&key));

    let out = palisade(
        &[
            "keys",
            "hash",
            "--prefix",
            "pal_test",
            "--pepper-env",
            PEPPER_VAR,
        ],
        &env,
        &key,
    );
    assert_eq!(out.assert_success().stdout.trim(), stored.hash);

    // Without the pepper: another hash, and stderr says which.
    let out = palisade(&["keys", "hash"], &[], &key);
    assert_ne!(out.assert_success().stdout.trim(), stored.hash);
    assert!(out.stderr.contains("SHA-256"));

    let mut typo = key.clone().into_bytes();
    typo[12] = if typo[12] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    for (args, garbage) in [
        (vec!["keys", "hash"], "garbage"),
        (vec!["keys", "hash"], typo.as_str()),
        (vec!["keys", "hash"], ""),
        (vec!["keys", "hash", "--prefix", "pal_live"], key.as_str()),
        (
            vec!["keys", "hash", "--prefix", "pal_test"],
            "pal_test_short",
        ),
    ] {
        let out = palisade(&args, &[], garbage);
        assert_eq!(out.code, 2, "{garbage:?}: {}", out.stderr);
        assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
        assert!(out.stdout.is_empty());
        if !garbage.is_empty() {
            assert!(!out.stderr.contains(garbage), "the input is not echoed");
        }
    }
    let out = palisade(&["keys", "hash"], &[], "garbage");
    assert!(out.stderr.contains("not a well-formed"), "{}", out.stderr);
}

#[tokio::test]
async fn rotation_overlaps_for_the_given_time_and_revocation_refuses_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("keys.toml");
    let store = path_str(&store_path);
    let old_key = issue_into(&store_path);
    let old_id = FileApiKeyStore::open(&store_path).unwrap().records()[0]
        .id
        .clone();
    let env = [(PEPPER_VAR, PEPPER)];

    let before = unix_now();
    let out = palisade(
        &[
            "keys",
            "rotate",
            "--store",
            store,
            "--id",
            &old_id,
            "--overlap",
            "7d",
            "--pepper-env",
            PEPPER_VAR,
        ],
        &env,
        "",
    );
    out.assert_success();
    let new_key = out.stdout.trim().to_owned();
    assert_eq!(out.stdout.lines().count(), 1);
    assert!(
        new_key.starts_with("pal_test_"),
        "the old key's prefix by default"
    );
    assert!(!out.stderr.contains(&old_key) && !out.stderr.contains(&new_key));
    assert!(out.stderr.contains("7d"), "{}", out.stderr);
    let after = unix_now();

    // The old key now ends after the overlap.
    let old = record(&store_path, &old_id);
    let ends = old.expires_at.unwrap();
    assert!(
        (before + 7 * 86_400..=after + 7 * 86_400).contains(&ends),
        "{ends}"
    );
    let records = FileApiKeyStore::open(&store_path).unwrap().records();
    let new = records.iter().find(|r| r.id != old_id).unwrap().clone();
    assert_eq!(
        (new.owner.as_str(), new.tenant.as_deref()),
        ("ci-bot", Some("acme"))
    );
    assert_eq!(new.roles, ["operator"]);
    assert_eq!(
        new.expires_at,
        Some(new.created_at + 30 * 86_400),
        "the same lifetime"
    );
    let text = std::fs::read_to_string(&store_path).unwrap();
    assert!(!text.contains(&old_key) && !text.contains(&new_key));

    // Both work during the overlap; after it, only the new one.
    let clock = ManualClock::starting_at_unix(Duration::from_secs(after));
    let keys = ApiKeys::builder("pal_test", FileApiKeyStore::open(&store_path).unwrap())
        .pepper(PEPPER.as_bytes().to_vec())
        .clock(clock.clone())
        .build()
        .unwrap();
    assert!(keys.verify(&old_key).await.is_ok());
    assert!(keys.verify(&new_key).await.is_ok());
    clock.advance(Duration::from_secs(7 * 86_400 + 1));
    assert_eq!(keys.verify(&old_key).await, Err(AuthFailure::Expired));
    assert!(keys.verify(&new_key).await.is_ok());

    // Revoked: refused at once.
    let out = palisade(
        &["keys", "revoke", "--store", store, "--id", &new.id],
        &[],
        "",
    );
    out.assert_success();
    assert!(out.stdout.is_empty());
    assert!(record(&store_path, &new.id).revoked);
    let keys = peppered(FileApiKeyStore::open(&store_path).unwrap());
    assert_eq!(keys.verify(&new_key).await, Err(AuthFailure::Revoked));

    // A revoked key cannot come back through a rotation.
    let out = palisade(
        &[
            "keys",
            "rotate",
            "--store",
            store,
            "--id",
            &new.id,
            "--overlap",
            "1d",
            "--pepper-env",
            PEPPER_VAR,
        ],
        &env,
        "",
    );
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("is revoked"), "{}", out.stderr);
    assert!(out.stdout.is_empty());

    // Unknown ids and missing files: non-zero, with a message.
    let out = palisade(
        &["keys", "revoke", "--store", store, "--id", "key_nope"],
        &[],
        "",
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("error: no API key has the id \"key_nope\""),
        "{}",
        out.stderr
    );
    let out = palisade(
        &[
            "keys",
            "rotate",
            "--store",
            store,
            "--id",
            "key_nope",
            "--overlap",
            "1d",
        ],
        &[],
        "",
    );
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("key_nope"), "{}", out.stderr);
    let missing = dir.path().join("missing.toml");
    let out = palisade(
        &[
            "keys",
            "revoke",
            "--store",
            path_str(&missing),
            "--id",
            &old_id,
        ],
        &[],
        "",
    );
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("does not exist"), "{}", out.stderr);
    assert!(!missing.exists());
}

#[tokio::test]
async fn minted_tokens_pass_a_verifier_with_the_same_secret_or_public_key() {
    CryptoBackend::install_preferred().unwrap();
    let out = palisade(
        &[
            "token",
            "mint",
            "--issuer",
            "https://id.example.com",
            "--audience",
            "scans-api",
            "--subject",
            "user-42",
            "--role",
            "operator",
            "--scope",
            "scans:read",
            "--scope",
            "scans:write",
            "--tenant",
            "acme",
            "--ttl",
            "10m",
            "--secret-env",
            SECRET_VAR,
            "--kid",
            "dev-1",
        ],
        &[(SECRET_VAR, SECRET)],
        "",
    );
    out.assert_success();
    let token = out.stdout.trim();
    assert_eq!(out.stdout.lines().count(), 1);
    assert!(!out.stdout.contains(SECRET) && !out.stderr.contains(SECRET));

    let verifier = JwtVerifier::builder()
        .issuer(
            Issuer::new("https://id.example.com")
                .audience("scans-api")
                .required_type("at+jwt")
                .max_lifetime(Duration::from_secs(600))
                .key(
                    VerifyingKey::hmac(Algorithm::HS256, SECRET.as_bytes())
                        .unwrap()
                        .with_kid("dev-1"),
                ),
        )
        .build()
        .unwrap();
    let principal = verifier.verify(token).await.unwrap();
    assert_eq!(principal.subject(), "user-42");
    assert_eq!(principal.tenant(), Some("acme"));
    assert!(principal.has_role("operator"));
    assert!(principal.has_scope("scans:read") && principal.has_scope("scans:write"));

    // Another audience's verifier refuses it.
    let other = JwtVerifier::builder()
        .issuer(
            Issuer::new("https://id.example.com")
                .audience("billing")
                .key(VerifyingKey::hmac(Algorithm::HS256, SECRET.as_bytes()).unwrap()),
        )
        .build()
        .unwrap();
    assert!(other.verify(token).await.is_err());

    // RS256 with a private key in PEM, verified with its public key.
    let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("../palisade-auth/tests/keys");
    let private = keys.join("rsa_private.pem");
    let out = palisade(
        &[
            "token",
            "mint",
            "--issuer",
            "https://id.example.com",
            "--audience",
            "scans-api",
            "--subject",
            "svc",
            "--alg",
            "RS256",
            "--key-file",
            path_str(&private),
        ],
        &[],
        "",
    );
    out.assert_success();
    let pem = std::fs::read_to_string(&private).unwrap();
    assert!(
        !out.stdout.contains(pem.lines().nth(1).unwrap()),
        "the key is never printed"
    );
    let public = std::fs::read(keys.join("rsa_public.pem")).unwrap();
    let verifier = JwtVerifier::builder()
        .issuer(
            Issuer::new("https://id.example.com")
                .audience("scans-api")
                .key(VerifyingKey::from_pem(Algorithm::RS256, &public).unwrap()),
        )
        .build()
        .unwrap();
    assert_eq!(
        verifier.verify(out.stdout.trim()).await.unwrap().subject(),
        "svc"
    );

    // Bad input: clear messages, non-zero exits.
    let base = [
        "token",
        "mint",
        "--issuer",
        "i",
        "--audience",
        "a",
        "--subject",
        "s",
    ];
    let cases: [(Vec<&str>, Env<'_>, &str); 6] = [
        (vec!["--secret-env", SECRET_VAR], &[], "not set"),
        (
            vec!["--secret-env", SECRET_VAR],
            &[(SECRET_VAR, "short")],
            "at least 32 bytes",
        ),
        (
            vec!["--secret-env", SECRET_VAR, "--alg", "RS256"],
            &[(SECRET_VAR, SECRET)],
            "--key-file",
        ),
        (vec!["--key-file", path_str(&private)], &[], "--alg"),
        (
            vec!["--key-file", path_str(&private), "--alg", "ES256"],
            &[],
            "not a usable ES256",
        ),
        (
            vec!["--secret-env", SECRET_VAR, "--alg", "none"],
            &[(SECRET_VAR, SECRET)],
            "HS256",
        ),
    ];
    for (extra, env, message) in cases {
        let args: Vec<&str> = base.iter().copied().chain(extra.iter().copied()).collect();
        let out = palisade(&args, env, "");
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("error: ") && out.stderr.contains(message),
            "{args:?}: {}",
            out.stderr
        );
        assert!(out.stdout.is_empty());
    }
    // Neither or both key sources: usage errors from clap.
    assert_eq!(palisade(&base, &[], "").code, 2);
}

fn certs(dir: &Path, name: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(dir.join(name))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn key(dir: &Path, name: &str) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(dir.join(name)).unwrap()
}

fn uri_sans(der: &[u8]) -> Vec<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let sans = cert.subject_alternative_name().unwrap().unwrap();
    sans.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => Some((*uri).to_owned()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn dev_certificates_complete_an_mtls_handshake_carrying_the_spiffe_id() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("pki");
    let spiffe = "spiffe://example.org/ns/dev/sa/cli-test";
    let out = palisade(
        &[
            "certs",
            "dev",
            "--out",
            path_str(&out_dir),
            "--spiffe-id",
            spiffe,
            "--dns",
            "localhost",
            "--dns",
            "api.internal",
            "--client-name",
            "cli-test",
        ],
        &[],
        "",
    );
    out.assert_success();
    for file in [
        "ca.pem",
        "ca.key",
        "server.pem",
        "server.key",
        "client.pem",
        "client.key",
    ] {
        assert!(out.stdout.contains(&format!("{file}\t")), "{}", out.stdout);
        assert!(out_dir.join(file).exists());
        #[cfg(unix)]
        if file.ends_with(".key") {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(out_dir.join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
    }
    // The SPIFFE id is the client certificate's only URI SAN.
    let client_chain = certs(&out_dir, "client.pem");
    assert_eq!(uri_sans(&client_chain[0]), [spiffe]);
    assert!(uri_sans(&certs(&out_dir, "server.pem")[0]).is_empty());

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in certs(&out_dir, "ca.pem") {
        roots.add(ca).unwrap();
    }
    let roots = Arc::new(roots);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .unwrap();
    let server_config = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&out_dir, "server.pem"), key(&out_dir, "server.key"))
        .unwrap();
    let client_config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_client_auth_cert(client_chain, key(&out_dir, "client.key"))
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut peers = Vec::new();
        for _ in 0..2 {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.unwrap();
            let peer = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
            tls.write_all(b"hello").await.unwrap();
            tls.shutdown().await.unwrap();
            peers.push(peer);
        }
        peers
    });
    // The server certificate is valid for its IP address and its DNS names.
    for name in [
        ServerName::IpAddress(address.ip().into()),
        ServerName::try_from("api.internal").unwrap(),
    ] {
        let tcp = TcpStream::connect(address).await.unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        let mut text = String::new();
        tls.read_to_string(&mut text).await.unwrap();
        assert_eq!(text, "hello");
    }
    let peers = server.await.unwrap();
    for peer in peers {
        assert_eq!(uri_sans(&peer), [spiffe], "the server sees the SPIFFE id");
    }

    // A client without a certificate is refused by the server.
    let anonymous = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server_config = ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_client_cert_verifier(
        WebPkiClientVerifier::builder_with_provider(
            Arc::new({
                let mut roots = RootCertStore::empty();
                roots.add(certs(&out_dir, "ca.pem").remove(0)).unwrap();
                roots
            }),
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        )
        .build()
        .unwrap(),
    )
    .with_single_cert(certs(&out_dir, "server.pem"), key(&out_dir, "server.key"))
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        acceptor.accept(tcp).await.map(|_| ())
    });
    let tcp = TcpStream::connect(address).await.unwrap();
    let client = tokio_rustls::TlsConnector::from(Arc::new(anonymous))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await;
    if let Ok(mut tls) = client {
        let mut buffer = Vec::new();
        assert!(tls.read_to_end(&mut buffer).await.is_err() || buffer.is_empty());
    }
    assert!(
        server.await.unwrap().is_err(),
        "no client certificate, no connection"
    );

    // Existing files are kept unless --force.
    let before = std::fs::read(out_dir.join("ca.key")).unwrap();
    let out = palisade(&["certs", "dev", "--out", path_str(&out_dir)], &[], "");
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("not overwriting") && out.stderr.contains("--force"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read(out_dir.join("ca.key")).unwrap(), before);
    let out = palisade(
        &["certs", "dev", "--out", path_str(&out_dir), "--force"],
        &[],
        "",
    );
    out.assert_success();
    assert_ne!(std::fs::read(out_dir.join("ca.key")).unwrap(), before);
    assert_eq!(
        uri_sans(&certs(&out_dir, "client.pem")[0]),
        ["spiffe://example.org/workload"]
    );

    // A bad SPIFFE id is refused before anything is written.
    let elsewhere = dir.path().join("bad");
    let out = palisade(
        &[
            "certs",
            "dev",
            "--out",
            path_str(&elsewhere),
            "--spiffe-id",
            "https://example.org/x",
        ],
        &[],
        "",
    );
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("--spiffe-id"), "{}", out.stderr);
    assert!(!elsewhere.exists());
}

#[test]
fn every_command_has_help_that_exits_0() {
    for command in [
        &[][..],
        &["keys"],
        &["keys", "new"],
        &["keys", "hash"],
        &["keys", "rotate"],
        &["keys", "revoke"],
        &["token"],
        &["token", "mint"],
        &["certs"],
        &["certs", "dev"],
    ] {
        let args: Vec<&str> = command.iter().copied().chain(["--help"]).collect();
        let out = palisade(&args, &[], "");
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        assert!(
            out.stdout.contains("Usage: palisade"),
            "{args:?}: {}",
            out.stdout
        );
    }
}

#[test]
fn bad_durations_and_missing_arguments_exit_non_zero_with_a_message() {
    let out = palisade(
        &[
            "keys",
            "new",
            "--prefix",
            "pal",
            "--owner",
            "o",
            "--expires-in",
            "5x",
        ],
        &[],
        "",
    );
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("--expires-in") && out.stderr.contains("30s, 15m, 12h, 7d"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty(), "no key is made");

    let out = palisade(
        &[
            "keys",
            "rotate",
            "--store",
            "k.toml",
            "--id",
            "key_x",
            "--overlap",
            "soon",
        ],
        &[],
        "",
    );
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("--overlap"), "{}", out.stderr);

    let out = palisade(
        &[
            "token",
            "mint",
            "--issuer",
            "i",
            "--audience",
            "a",
            "--subject",
            "s",
            "--ttl",
            "0s",
            "--secret-env",
            SECRET_VAR,
        ],
        &[(SECRET_VAR, SECRET)],
        "",
    );
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("--ttl"), "{}", out.stderr);

    let out = palisade(&["keys", "new", "--owner", "o"], &[], "");
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("--prefix"), "{}", out.stderr);

    // A pepper too short, or a variable that is not set: refused, and the
    // variable's name (which might be a pasted secret) is not echoed.
    let out = palisade(
        &[
            "keys",
            "new",
            "--prefix",
            "pal",
            "--owner",
            "o",
            "--pepper-env",
            PEPPER_VAR,
        ],
        &[(PEPPER_VAR, "short")],
        "",
    );
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("at least 32 bytes"), "{}", out.stderr);
    let pasted = "hunter2hunter2hunter2hunter2hunter2";
    let out = palisade(
        &[
            "keys",
            "new",
            "--prefix",
            "pal",
            "--owner",
            "o",
            "--pepper-env",
            pasted,
        ],
        &[],
        "",
    );
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("not set") && !out.stderr.contains(pasted),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty());
}
