//! `palisade certs dev`: a development CA, a server certificate and a
//! client certificate whose only URI SAN is a SPIFFE id, for trying mTLS
//! (`palisade_auth::mtls`) on one machine.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

use crate::duration;
use crate::failure::Failure;
use crate::output;

#[derive(Debug, Subcommand)]
pub(crate) enum CertsCommand {
    /// Make a development CA, a server certificate and a SPIFFE client
    /// certificate.
    ///
    /// Writes ca.pem and ca.key (the CA), server.pem and server.key (for
    /// the DNS names, 127.0.0.1 and ::1), client.pem and client.key (with
    /// the SPIFFE id as its only URI SAN). Keys are ECDSA P-256, PKCS#8.
    /// Existing files are kept unless --force. For development only: anyone
    /// with ca.key can mint identities your server trusts.
    Dev(DevArgs),
}

#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    /// The directory to write to (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The client's SPIFFE id.
    #[arg(
        long,
        value_name = "URI",
        default_value = "spiffe://example.org/workload"
    )]
    spiffe_id: String,
    /// A DNS name of the server; repeat for several.
    #[arg(long = "dns", value_name = "NAME", default_value = "localhost")]
    dns: Vec<String>,
    /// The client certificate's common name.
    #[arg(long, value_name = "NAME", default_value = "client")]
    client_name: String,
    /// How long the certificates are valid.
    #[arg(long, value_name = "DURATION", default_value = "365d", value_parser = duration::parse)]
    valid_for: Duration,
    /// Overwrite existing files.
    #[arg(long)]
    force: bool,
}

/// Runs a `certs` command.
pub(crate) fn run(command: CertsCommand) -> Result<(), Failure> {
    match command {
        CertsCommand::Dev(args) => dev(args),
    }
}

/// Checks a workload SPIFFE id: `spiffe://<trust domain>/<path>`, with the
/// characters the SPIFFE ID specification allows.
fn check_spiffe_id(id: &str) -> Result<(), String> {
    let rest = id
        .strip_prefix("spiffe://")
        .ok_or("a SPIFFE id starts with spiffe:// (spiffe://example.org/workload)")?;
    if id.len() > 2048 {
        return Err("a SPIFFE id is at most 2048 bytes".into());
    }
    let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
    if domain.is_empty()
        || !domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
    {
        return Err(
            "the trust domain must be non-empty: lowercase letters, digits, `-`, `.` and `_` (no port, user or upper case)"
                .into(),
        );
    }
    if path.is_empty() {
        return Err("a workload's SPIFFE id has a path (spiffe://example.org/workload)".into());
    }
    for segment in path.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err("path segments must be non-empty and not `.` or `..`".into());
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        {
            return Err(
                "the path may hold letters, digits, `-`, `.` and `_` only (no query or fragment)"
                    .into(),
            );
        }
    }
    Ok(())
}

/// Checks a DNS name for a certificate (a leading `*.` wildcard allowed).
fn check_dns_name(name: &str) -> Result<(), String> {
    let bare = name.strip_prefix("*.").unwrap_or(name);
    let valid = !bare.is_empty()
        && name.len() <= 253
        && bare.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if valid {
        Ok(())
    } else {
        Err(format!("--dns {name:?} is not a DNS name"))
    }
}

fn cert_error(error: rcgen::Error) -> Failure {
    Failure::new(format!("cannot make the certificates: {error}"))
}

/// What a certificate's subject and validity are.
fn params(
    common_name: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Palisade development");
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    params.not_before = not_before;
    params.not_after = not_after;
    params
}

/// A certificate or key to write: its file name and PEM.
struct Output {
    name: &'static str,
    pem: String,
    secret: bool,
    what: String,
}

fn make(args: &DevArgs) -> Result<(Vec<Output>, OffsetDateTime), Failure> {
    check_spiffe_id(&args.spiffe_id)
        .map_err(|reason| Failure::usage(format!("--spiffe-id: {reason}")))?;
    let mut dns = Vec::new();
    for name in &args.dns {
        check_dns_name(name).map_err(Failure::usage)?;
        let name = name.to_ascii_lowercase();
        if !dns.contains(&name) {
            dns.push(name);
        }
    }
    if args.client_name.trim().is_empty() || args.client_name.chars().any(char::is_control) {
        return Err(Failure::usage(
            "--client-name must be non-empty printable text",
        ));
    }
    if args.valid_for.is_zero() {
        return Err(Failure::usage("--valid-for must be longer than 0s"));
    }

    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| OffsetDateTime::now_utc());
    // A little slack for clocks that are behind.
    let not_before = now - time::Duration::minutes(5);
    let not_after = time::Duration::try_from(args.valid_for)
        .ok()
        .and_then(|valid_for| now.checked_add(valid_for))
        .filter(|at| at.year() <= 9999)
        .ok_or_else(|| Failure::usage("--valid-for is too long"))?;

    let mut ca_params = params("Palisade development CA", not_before, not_after);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().map_err(cert_error)?;
    let ca_key_pem = ca_key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(cert_error)?;

    let server_name = dns.first().map_or("localhost", String::as_str);
    let mut server_params = params(server_name, not_before, not_after);
    for name in &dns {
        let name = name
            .clone()
            .try_into()
            .map_err(|_| Failure::usage(format!("--dns {name:?} is not a DNS name")))?;
        server_params.subject_alt_names.push(SanType::DnsName(name));
    }
    for ip in [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ] {
        server_params.subject_alt_names.push(SanType::IpAddress(ip));
    }
    server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server_params.use_authority_key_identifier_extension = true;
    let server_key = KeyPair::generate().map_err(cert_error)?;
    let server = server_params
        .signed_by(&server_key, &ca)
        .map_err(cert_error)?;

    // An X.509-SVID: exactly one URI SAN, the SPIFFE id; not a CA.
    let mut client_params = params(&args.client_name, not_before, not_after);
    let uri = args
        .spiffe_id
        .clone()
        .try_into()
        .map_err(|_| Failure::usage("--spiffe-id is not ASCII"))?;
    client_params.subject_alt_names = vec![SanType::URI(uri)];
    client_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    client_params.use_authority_key_identifier_extension = true;
    let client_key = KeyPair::generate().map_err(cert_error)?;
    let client = client_params
        .signed_by(&client_key, &ca)
        .map_err(cert_error)?;

    let names = dns.join(", ");
    let outputs = vec![
        Output {
            name: "ca.pem",
            pem: ca.pem(),
            secret: false,
            what: "the development CA certificate (trust it for both sides)".into(),
        },
        Output {
            name: "ca.key",
            pem: ca_key_pem,
            secret: true,
            what: "the CA's private key".into(),
        },
        Output {
            name: "server.pem",
            pem: server.pem(),
            secret: false,
            what: format!("the server certificate for {names}, 127.0.0.1 and ::1"),
        },
        Output {
            name: "server.key",
            pem: server_key.serialize_pem(),
            secret: true,
            what: "the server's private key".into(),
        },
        Output {
            name: "client.pem",
            pem: client.pem(),
            secret: false,
            what: format!("the client certificate for {}", args.spiffe_id),
        },
        Output {
            name: "client.key",
            pem: client_key.serialize_pem(),
            secret: true,
            what: "the client's private key".into(),
        },
    ];
    Ok((outputs, not_after))
}

fn write(path: &Path, text: &str, secret: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(if secret { 0o600 } else { 0o644 });
        let mut file = options.open(path)?;
        // `mode` applies to new files only; an overwritten key file is
        // narrowed too.
        if secret {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        file.write_all(text.as_bytes())?;
        file.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = secret;
        let mut file = options.open(path)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()
    }
}

fn dev(args: DevArgs) -> Result<(), Failure> {
    let (outputs, not_after) = make(&args)?;
    if !args.force {
        let existing: Vec<String> = outputs
            .iter()
            .map(|output| args.out.join(output.name))
            .filter(|path| path.exists())
            .map(|path| path.display().to_string())
            .collect();
        if !existing.is_empty() {
            return Err(Failure::new(format!(
                "not overwriting {} (give --force to replace them)",
                existing.join(", ")
            )));
        }
    }
    std::fs::create_dir_all(&args.out)
        .map_err(|error| Failure::new(format!("cannot create {}: {error}", args.out.display())))?;
    for file in &outputs {
        let path = args.out.join(file.name);
        write(&path, &file.pem, file.secret)
            .map_err(|error| Failure::new(format!("cannot write {}: {error}", path.display())))?;
    }
    for file in &outputs {
        output::line(&format!(
            "{}\t{}",
            args.out.join(file.name).display(),
            file.what
        ))?;
    }
    output::note(&format!(
        "Valid until {}. For development only: keep ca.key away from anything real; whoever holds it can mint identities trusted by ca.pem.",
        duration::timestamp(not_after)
    ));
    Ok(())
}
