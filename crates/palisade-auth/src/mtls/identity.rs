//! [`MtlsIdentity`]: who a client certificate names, and the [`Principal`]
//! it becomes.

use std::time::Duration;

use palisade_core::principal::{AuthMethod, Principal};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// The longest SPIFFE id accepted (the SPIFFE spec's limit for URI SANs).
const MAX_SPIFFE_ID_BYTES: usize = 2048;

/// Why a certificate (or a proxy's report of one) gives no usable identity.
/// The reason goes to the audit event; the client sees one uniform 401.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MtlsError {
    /// The certificate is not a readable DER X.509 certificate.
    #[error("the certificate cannot be parsed: {0}")]
    Unparsable(String),
    /// The certificate has a `spiffe://` URI SAN beside another URI SAN. An
    /// X.509 SVID has exactly one URI SAN, so which id is meant is unknown.
    #[error(
        "the certificate has {uris} URI SANs with a SPIFFE id among them; an SVID has exactly one"
    )]
    AmbiguousSpiffeId {
        /// How many URI SANs the certificate has.
        uris: usize,
    },
    /// The `spiffe://` URI is not a valid SPIFFE id.
    #[error("invalid SPIFFE id: {0}")]
    InvalidSpiffeId(&'static str),
    /// The configuration requires a SPIFFE id and the certificate has none.
    #[error("the certificate has no SPIFFE id and one is required")]
    SpiffeIdMissing,
    /// No SPIFFE id, subject or DNS name to name the principal by.
    #[error("the certificate names no one: no SPIFFE id, subject or DNS name")]
    NoIdentity,
    /// The `x-forwarded-client-cert` header of a trusted proxy cannot be read.
    #[error("unreadable x-forwarded-client-cert: {0}")]
    Xfcc(&'static str),
}

impl MtlsError {
    /// A stable name for logs and audit events.
    pub const fn reason(&self) -> &'static str {
        match self {
            MtlsError::Unparsable(_) => "certificate_unparsable",
            MtlsError::AmbiguousSpiffeId { .. } => "spiffe_id_ambiguous",
            MtlsError::InvalidSpiffeId(_) => "spiffe_id_invalid",
            MtlsError::SpiffeIdMissing => "spiffe_id_missing",
            MtlsError::NoIdentity => "certificate_without_identity",
            MtlsError::Xfcc(_) => "xfcc_unreadable",
        }
    }
}

/// The identity a client certificate carries: its subject, its DNS names
/// and its SPIFFE id.
///
/// ```
/// # fn leaf() -> Vec<u8> { Vec::new() }
/// use palisade_auth::mtls::MtlsIdentity;
///
/// match MtlsIdentity::from_leaf(&leaf()) {
///     Ok(identity) => println!("{:?}", identity.spiffe_id()),
///     Err(error) => println!("refused: {}", error.reason()),
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MtlsIdentity {
    subject: String,
    dns_names: Vec<String>,
    spiffe_id: Option<String>,
    not_after: Option<Duration>,
}

impl MtlsIdentity {
    /// Reads the leaf certificate of a verified chain (DER). Only parses:
    /// the chain must already have been verified by the TLS handshake (or
    /// by the trusted proxy that reported it).
    ///
    /// Refused: anything that is not exactly one DER certificate, a SAN
    /// entry that cannot be read, a `spiffe://` URI SAN beside any other URI
    /// SAN, and an invalid SPIFFE id.
    pub fn from_leaf(der: &[u8]) -> Result<Self, MtlsError> {
        let (rest, certificate) = X509Certificate::from_der(der)
            .map_err(|error| MtlsError::Unparsable(error.to_string()))?;
        if !rest.is_empty() {
            return Err(MtlsError::Unparsable(
                "bytes after the certificate".to_owned(),
            ));
        }
        let mut dns_names = Vec::new();
        let mut uris = Vec::new();
        let san = certificate
            .subject_alternative_name()
            .map_err(|error| MtlsError::Unparsable(error.to_string()))?;
        for name in san.iter().flat_map(|san| san.value.general_names.iter()) {
            match name {
                GeneralName::DNSName(dns) => dns_names.push((*dns).to_owned()),
                GeneralName::URI(uri) => uris.push(*uri),
                // An entry we cannot read could hide a second identity.
                GeneralName::Invalid(..) => {
                    return Err(MtlsError::Unparsable(
                        "unreadable subject alternative name".to_owned(),
                    ));
                }
                _ => {}
            }
        }
        let spiffe_id = spiffe_id_of(&uris)?;
        let not_after = u64::try_from(certificate.validity().not_after.timestamp())
            .ok()
            .map(Duration::from_secs);
        Ok(Self {
            subject: certificate.subject().to_string(),
            dns_names,
            spiffe_id,
            not_after,
        })
    }

    /// An identity reported by a trusted proxy without the certificate
    /// itself (the `Subject`, `DNS` and `URI` fields of XFCC).
    pub(crate) fn reported(
        subject: String,
        dns_names: Vec<String>,
        uris: &[&str],
    ) -> Result<Self, MtlsError> {
        Ok(Self {
            subject,
            dns_names,
            spiffe_id: spiffe_id_of(uris)?,
            not_after: None,
        })
    }

    /// The certificate subject as a distinguished name (`CN=..., O=...`);
    /// empty when the certificate has none.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The DNS names of the subject alternative names.
    pub fn dns_names(&self) -> &[String] {
        &self.dns_names
    }

    /// The SPIFFE id (`spiffe://trust-domain/path`), from the one URI SAN.
    pub fn spiffe_id(&self) -> Option<&str> {
        self.spiffe_id.as_deref()
    }

    /// When the certificate expires, as time since the Unix epoch; `None`
    /// when a proxy reported the identity without the certificate.
    pub fn not_after(&self) -> Option<Duration> {
        self.not_after
    }

    /// The name the principal goes by: the SPIFFE id, else the subject,
    /// else the first DNS name; `None` when the certificate names no one.
    pub fn name(&self) -> Option<&str> {
        self.spiffe_id
            .as_deref()
            .or((!self.subject.is_empty()).then_some(self.subject.as_str()))
            .or(self.dns_names.first().map(String::as_str))
    }

    /// The principal: subject [`name`](Self::name), method
    /// [`AuthMethod::Mtls`], expiry the certificate's.
    pub fn principal(&self) -> Result<Principal, MtlsError> {
        let name = self.name().ok_or(MtlsError::NoIdentity)?;
        let mut builder = Principal::builder(name).method(AuthMethod::Mtls {
            spiffe_id: self.spiffe_id.clone(),
            subject: self.subject.clone(),
        });
        if let Some(at) = self.not_after {
            builder = builder.expires_at(at);
        }
        Ok(builder.build())
    }
}

/// The SPIFFE id among a certificate's URI SANs: none when no URI is a
/// `spiffe:` one; refused when one is, beside any other URI (an X.509 SVID
/// has exactly one URI SAN).
fn spiffe_id_of(uris: &[&str]) -> Result<Option<String>, MtlsError> {
    let spiffe = uris.iter().filter(|uri| has_spiffe_scheme(uri)).count();
    match (spiffe, uris) {
        (0, _) => Ok(None),
        (_, [uri]) => validate_spiffe_id(uri).map(|()| Some((*uri).to_owned())),
        _ => Err(MtlsError::AmbiguousSpiffeId { uris: uris.len() }),
    }
}

fn has_spiffe_scheme(uri: &str) -> bool {
    uri.get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("spiffe:"))
}

/// The SPIFFE id rules: lowercase `spiffe://`, a trust domain of
/// `[a-z0-9.-_]`, a path of non-empty segments of `[a-zA-Z0-9.-_]` other
/// than `.` and `..`, no trailing slash, query, fragment, port or user.
pub(crate) fn validate_spiffe_id(id: &str) -> Result<(), MtlsError> {
    if id.len() > MAX_SPIFFE_ID_BYTES {
        return Err(MtlsError::InvalidSpiffeId("longer than 2048 bytes"));
    }
    let rest = id
        .strip_prefix("spiffe://")
        .ok_or(MtlsError::InvalidSpiffeId("the scheme must be spiffe://"))?;
    let (domain, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], Some(&rest[slash + 1..])),
        None => (rest, None),
    };
    if domain.is_empty() {
        return Err(MtlsError::InvalidSpiffeId("the trust domain is empty"));
    }
    if !domain
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
    {
        return Err(MtlsError::InvalidSpiffeId(
            "the trust domain has characters other than a-z 0-9 . - _",
        ));
    }
    if let Some(path) = path {
        for segment in path.split('/') {
            if segment.is_empty() || segment == "." || segment == ".." {
                return Err(MtlsError::InvalidSpiffeId(
                    "the path has an empty, . or .. segment",
                ));
            }
            if !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            {
                return Err(MtlsError::InvalidSpiffeId(
                    "the path has characters other than a-z A-Z 0-9 . - _",
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_spiffe_uri_is_the_id_and_others_alone_are_ignored() {
        assert_eq!(
            spiffe_id_of(&["spiffe://example.org/ns/prod/sa/api"]),
            Ok(Some("spiffe://example.org/ns/prod/sa/api".to_owned()))
        );
        assert_eq!(spiffe_id_of(&[]), Ok(None));
        assert_eq!(spiffe_id_of(&["https://a.example", "urn:x:y"]), Ok(None));
    }

    #[test]
    fn a_spiffe_uri_beside_another_uri_is_ambiguous() {
        assert_eq!(
            spiffe_id_of(&["spiffe://a.org/x", "spiffe://a.org/y"]),
            Err(MtlsError::AmbiguousSpiffeId { uris: 2 })
        );
        assert_eq!(
            spiffe_id_of(&["https://a.example", "SPIFFE://a.org/y"]),
            Err(MtlsError::AmbiguousSpiffeId { uris: 2 })
        );
    }

    #[test]
    fn spiffe_ids_follow_the_spec() {
        for good in [
            "spiffe://example.org",
            "spiffe://example.org/workload",
            "spiffe://trust_domain-1.x/a/B.c/d-e_f",
        ] {
            assert_eq!(validate_spiffe_id(good), Ok(()), "{good}");
        }
        for bad in [
            "SPIFFE://example.org/a",
            "spiffe://",
            "spiffe:///path",
            "spiffe://Example.org/a",
            "spiffe://example.org:8443/a",
            "spiffe://user@example.org/a",
            "spiffe://example.org/",
            "spiffe://example.org/a//b",
            "spiffe://example.org/a/../b",
            "spiffe://example.org/a?x=1",
            "spiffe://example.org/a#f",
            "spiffe://example.org/%41",
        ] {
            assert!(validate_spiffe_id(bad).is_err(), "{bad}");
        }
        let long = format!("spiffe://example.org/{}", "a".repeat(2100));
        assert!(validate_spiffe_id(&long).is_err());
    }

    #[test]
    fn the_principal_is_named_by_spiffe_id_then_subject_then_dns_name() {
        let full = MtlsIdentity::reported(
            "CN=api".into(),
            vec!["api.internal".into()],
            &["spiffe://example.org/api"],
        )
        .unwrap();
        let principal = full.principal().unwrap();
        assert_eq!(principal.subject(), "spiffe://example.org/api");
        assert_eq!(
            principal.method(),
            &AuthMethod::Mtls {
                spiffe_id: Some("spiffe://example.org/api".into()),
                subject: "CN=api".into(),
            }
        );
        let subject_only =
            MtlsIdentity::reported("CN=api".into(), vec!["api.internal".into()], &[]).unwrap();
        assert_eq!(subject_only.principal().unwrap().subject(), "CN=api");
        let dns_only =
            MtlsIdentity::reported(String::new(), vec!["api.internal".into()], &[]).unwrap();
        assert_eq!(dns_only.principal().unwrap().subject(), "api.internal");
        let nobody = MtlsIdentity::reported(String::new(), Vec::new(), &[]).unwrap();
        assert_eq!(nobody.principal(), Err(MtlsError::NoIdentity));
    }

    #[test]
    fn garbage_and_trailing_bytes_are_unparsable() {
        assert!(matches!(
            MtlsIdentity::from_leaf(b"not a certificate"),
            Err(MtlsError::Unparsable(_))
        ));
        assert!(matches!(
            MtlsIdentity::from_leaf(&[]),
            Err(MtlsError::Unparsable(_))
        ));
    }
}
