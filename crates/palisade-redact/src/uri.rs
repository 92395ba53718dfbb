//! [`RedactedUri`]: a URI displayed with the values of its secret query
//! parameters, and any password in its authority, replaced by
//! `***REDACTED***`. Writing it allocates nothing.

use std::fmt;

use http::Uri;

use crate::json::REDACTED;
use crate::names::{SecretNames, normalise_byte};

/// Displays a URI with secrets redacted.
///
/// ```
/// use palisade_redact::RedactedUri;
///
/// let uri: http::Uri = "/callback?code=abc123&state=xyz&Access-Token=t0k".parse()?;
/// assert_eq!(
///     RedactedUri::new(&uri).to_string(),
///     "/callback?code=***REDACTED***&state=xyz&Access-Token=***REDACTED***",
/// );
/// # Ok::<(), http::uri::InvalidUri>(())
/// ```
///
/// Parameter names are compared as [`SecretNames`] compares them (case and
/// `-`/`_` ignored), after percent-decoding, so `acc%65ss_token` is
/// `access_token`. A parameter whose name is longer than any secret name,
/// or that has no `=`, is written as it is.
#[derive(Clone, Copy)]
pub struct RedactedUri<'a> {
    uri: &'a Uri,
    params: Option<&'a SecretNames>,
}

impl<'a> RedactedUri<'a> {
    /// Redacts the [default parameters](crate::DEFAULT_QUERY_PARAMS).
    pub fn new(uri: &'a Uri) -> Self {
        Self { uri, params: None }
    }

    /// Redacts the given parameters.
    pub fn with_params(uri: &'a Uri, params: &'a SecretNames) -> Self {
        Self {
            uri,
            params: Some(params),
        }
    }
}

impl fmt::Debug for RedactedUri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn default_params() -> &'static SecretNames {
    static DEFAULT: std::sync::OnceLock<SecretNames> = std::sync::OnceLock::new();
    DEFAULT.get_or_init(SecretNames::default_query_params)
}

impl fmt::Display for RedactedUri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let params = self.params.unwrap_or_else(|| default_params());
        if let Some(scheme) = self.uri.scheme_str() {
            write!(f, "{scheme}://")?;
        }
        if let Some(authority) = self.uri.authority() {
            let authority = authority.as_str();
            match authority.rsplit_once('@') {
                Some((userinfo, host)) => {
                    match userinfo.split_once(':') {
                        Some((user, _password)) => write!(f, "{user}:{REDACTED}@")?,
                        None => write!(f, "{userinfo}@")?,
                    }
                    f.write_str(host)?;
                }
                None => f.write_str(authority)?,
            }
        }
        f.write_str(self.uri.path())?;
        if let Some(query) = self.uri.query() {
            f.write_str("?")?;
            for (index, pair) in query.split('&').enumerate() {
                if index > 0 {
                    f.write_str("&")?;
                }
                match pair.split_once('=') {
                    Some((name, _value)) if is_secret(name, params) => {
                        write!(f, "{name}={REDACTED}")?;
                    }
                    _ => f.write_str(pair)?,
                }
            }
        }
        Ok(())
    }
}

/// Whether a raw (percent-encoded) parameter name is a secret name.
fn is_secret(name: &str, params: &SecretNames) -> bool {
    // Normalised into a stack buffer: a name longer than the longest secret
    // name cannot match.
    let mut buffer = [0u8; 64];
    let capacity = params.longest().min(buffer.len());
    let mut len = 0;
    let bytes = name.as_bytes();
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        let decoded = match byte {
            b'%' => match (
                bytes.get(i + 1).and_then(|&b| (b as char).to_digit(16)),
                bytes.get(i + 2).and_then(|&b| (b as char).to_digit(16)),
            ) {
                (Some(high), Some(low)) => {
                    i += 2;
                    (high * 16 + low) as u8
                }
                _ => byte,
            },
            b'+' => b' ',
            other => other,
        };
        i += 1;
        if let Some(folded) = normalise_byte(decoded) {
            if len == capacity {
                return false;
            }
            buffer[len] = folded;
            len += 1;
        }
    }
    params.contains_normalised(&buffer[..len])
}
