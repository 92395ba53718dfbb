//! Envoy's `x-forwarded-client-cert` (XFCC): what a proxy that terminated
//! mTLS reports about the client certificate.
//!
//! ```text
//! x-forwarded-client-cert: By=spiffe://mesh/proxy;Hash=1f2e...;Cert="-----BEGIN%20CERTIFICATE-----%0A...";Subject="CN=api,O=Acme";URI=spiffe://example.org/api;DNS=api.internal
//! ```
//!
//! Elements are separated by `,`, pairs by `;`; a value may be quoted
//! (`"..."`, with `\"` and `\\` escapes), so quoted commas and semicolons
//! belong to the value. Each proxy appends the element of the client it
//! saw, so only the last element (the nearest proxy's) is read; whatever a
//! client wrote to the left of it is never interpreted. Several header
//! lines are one list, in order.

use http::HeaderValue;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::identity::{MtlsError, MtlsIdentity};

/// The header's name.
pub(crate) const XFCC: &str = "x-forwarded-client-cert";

/// The longest XFCC read, all lines together: a certificate chain is a few
/// KiB; more is refused rather than parsed.
const MAX_XFCC_BYTES: usize = 64 * 1024;

/// The fields of one XFCC element that identify the client.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Element {
    pub(crate) cert: Option<String>,
    pub(crate) subject: Option<String>,
    pub(crate) uris: Vec<String>,
    pub(crate) dns: Vec<String>,
}

/// The last element of the header lines, or `None` when there is no line.
pub(crate) fn last_element<'a>(
    lines: impl Iterator<Item = &'a HeaderValue>,
) -> Result<Option<Element>, MtlsError> {
    let mut last = None;
    let mut total = 0usize;
    for line in lines {
        total = total.saturating_add(line.len());
        if total > MAX_XFCC_BYTES {
            return Err(MtlsError::Xfcc("longer than 64 KiB"));
        }
        let text = line
            .to_str()
            .map_err(|_| MtlsError::Xfcc("not visible ASCII"))?;
        last = Some(last_of_line(text)?);
    }
    last.map(parse_element).transpose()
}

/// The text of the last element of one line.
fn last_of_line(line: &str) -> Result<&str, MtlsError> {
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (at, byte) in line.bytes().enumerate() {
        match byte {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => start = at + 1,
            _ => {}
        }
    }
    if quoted {
        return Err(MtlsError::Xfcc("unterminated quoted value"));
    }
    Ok(&line[start..])
}

/// Splits on `separator` outside quoted values.
fn split_unquoted(text: &str, separator: u8) -> impl Iterator<Item = &str> {
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    let mut parts = Vec::new();
    for (at, byte) in text.bytes().enumerate() {
        match byte {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b if b == separator && !quoted => {
                parts.push(&text[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts.into_iter()
}

/// A value, unquoted and unescaped.
fn unquote(value: &str) -> Result<String, MtlsError> {
    let Some(inner) = value.strip_prefix('"') else {
        if value.contains('"') {
            return Err(MtlsError::Xfcc("a quote inside an unquoted value"));
        }
        return Ok(value.to_owned());
    };
    let inner = inner
        .strip_suffix('"')
        .ok_or(MtlsError::Xfcc("text after a quoted value"))?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next().ok_or(MtlsError::Xfcc("dangling escape"))?),
            '"' => return Err(MtlsError::Xfcc("text after a quoted value")),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn parse_element(text: &str) -> Result<Element, MtlsError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(MtlsError::Xfcc("empty element"));
    }
    let mut element = Element::default();
    for pair in split_unquoted(text, b';') {
        let (key, value) = pair
            .split_once('=')
            .ok_or(MtlsError::Xfcc("a pair without ="))?;
        let key = key.trim();
        let value = unquote(value.trim())?;
        let single = |slot: &mut Option<String>, value: String| {
            if slot.replace(value).is_some() {
                return Err(MtlsError::Xfcc("a field given twice"));
            }
            Ok(())
        };
        if key.eq_ignore_ascii_case("cert") {
            single(&mut element.cert, value)?;
        } else if key.eq_ignore_ascii_case("subject") {
            single(&mut element.subject, value)?;
        } else if key.eq_ignore_ascii_case("uri") {
            element.uris.push(value);
        } else if key.eq_ignore_ascii_case("dns") {
            element.dns.push(value);
        } else if key.is_empty() {
            return Err(MtlsError::Xfcc("a pair without a key"));
        }
        // By, Hash, Chain and future keys name nothing about the client.
    }
    Ok(element)
}

impl Element {
    /// The identity the element reports: from its certificate when it has
    /// one (`Cert`, authoritative), else from `Subject`, `DNS` and `URI`.
    pub(crate) fn identity(self) -> Result<MtlsIdentity, MtlsError> {
        match self.cert {
            Some(encoded) => {
                let pem = percent_encoding::percent_decode_str(&encoded).collect::<Vec<u8>>();
                let leaf = CertificateDer::pem_slice_iter(&pem)
                    .next()
                    .ok_or(MtlsError::Xfcc("Cert holds no PEM certificate"))?
                    .map_err(|_| MtlsError::Xfcc("Cert is not valid PEM"))?;
                MtlsIdentity::from_leaf(&leaf)
            }
            None => {
                let uris: Vec<&str> = self.uris.iter().map(String::as_str).collect();
                MtlsIdentity::reported(self.subject.unwrap_or_default(), self.dns, &uris)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last(lines: &[&str]) -> Result<Option<Element>, MtlsError> {
        let values: Vec<HeaderValue> = lines
            .iter()
            .map(|line| HeaderValue::from_str(line).unwrap())
            .collect();
        last_element(values.iter())
    }

    #[test]
    fn envoy_fields_are_read_with_quotes_and_escapes() {
        let element = last(&[
            r#"By=spiffe://mesh/proxy;Hash=abc;Subject="CN=api,O=Acme; \"Inc\"";URI=spiffe://example.org/api;DNS=a.internal;DNS=b.internal"#,
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            element,
            Element {
                cert: None,
                subject: Some(r#"CN=api,O=Acme; "Inc""#.to_owned()),
                uris: vec!["spiffe://example.org/api".to_owned()],
                dns: vec!["a.internal".to_owned(), "b.internal".to_owned()],
            }
        );
        let identity = element.identity().unwrap();
        assert_eq!(identity.spiffe_id(), Some("spiffe://example.org/api"));
        assert_eq!(identity.dns_names(), ["a.internal", "b.internal"]);
    }

    #[test]
    fn only_the_last_element_of_the_last_line_is_read() {
        // The client forged the first element; the proxy appended the last.
        let element = last(&[
            "URI=spiffe://example.org/admin",
            r#"Subject="CN=x,OU=y";URI=spiffe://example.org/forged, URI=spiffe://example.org/real"#,
        ])
        .unwrap()
        .unwrap();
        assert_eq!(element.uris, ["spiffe://example.org/real"]);
        // Garbage to the left of the proxy's element is never parsed.
        let element = last(&[r#"=;;garbage"x,y"z, DNS=ok.internal"#])
            .unwrap()
            .unwrap();
        assert_eq!(element.dns, ["ok.internal"]);
        // An open quote in a forged prefix cannot swallow the proxy's
        // element (whose quotes are balanced): the header is refused.
        assert!(
            last(&[r#"URI="spiffe://a.org/x,Subject="CN=real";URI=spiffe://a.org/y"#]).is_err()
        );
    }

    #[test]
    fn no_header_is_none_and_malformed_headers_are_refused() {
        assert_eq!(last(&[]), Ok(None));
        for bad in [
            "",
            "URI=spiffe://a.org/x,",
            r#"Subject="CN=open"#,
            "novalue",
            "=spiffe://a.org/x",
            r#"Subject="a"b"#,
            r#"Subject=a"b"#,
            "Subject=a;Subject=b",
            "Cert=x;Cert=y",
        ] {
            assert!(matches!(last(&[bad]), Err(MtlsError::Xfcc(_))), "{bad:?}");
        }
        let huge = format!("DNS={}", "a".repeat(70 * 1024));
        assert_eq!(last(&[&huge]), Err(MtlsError::Xfcc("longer than 64 KiB")));
    }

    #[test]
    fn two_spiffe_uris_in_one_element_are_ambiguous() {
        let element = last(&["URI=spiffe://a.org/x;URI=spiffe://a.org/y"])
            .unwrap()
            .unwrap();
        assert_eq!(
            element.identity(),
            Err(MtlsError::AmbiguousSpiffeId { uris: 2 })
        );
    }

    #[test]
    fn a_cert_that_is_not_pem_is_refused() {
        let element = last(&[r#"Cert="not%20pem";URI=spiffe://a.org/x"#])
            .unwrap()
            .unwrap();
        assert!(matches!(element.identity(), Err(MtlsError::Xfcc(_))));
    }
}
