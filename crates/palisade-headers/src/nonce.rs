//! [`CspNonce`]: the per-response nonce of a Content-Security-Policy.

use std::fmt;

use base64::Engine as _;

/// Bytes of randomness in a nonce (128 bits).
const NONCE_BYTES: usize = 16;
/// Length of the base64 of 16 bytes, with padding.
const NONCE_LEN: usize = 24;

/// The nonce of this response's Content-Security-Policy: 128 random bits in
/// base64, placed in the request extensions by
/// [`SecurityHeadersLayer`](crate::SecurityHeadersLayer) when the policy has
/// [`Source::Nonce`](crate::csp::Source::Nonce), and written into the
/// response's policy. Put it in your templates:
/// `<script nonce="{{ nonce }}">`.
///
/// Held inline (24 bytes), so it is `Copy` and costs no allocation. With
/// the `axum` feature it is an extractor.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CspNonce([u8; NONCE_LEN]);

impl CspNonce {
    /// A fresh nonce from the operating system's random source, or `None`
    /// if it cannot give one.
    pub fn generate() -> Option<Self> {
        let mut random = [0u8; NONCE_BYTES];
        getrandom::fill(&mut random).ok()?;
        let mut encoded = [0u8; NONCE_LEN];
        let written = base64::engine::general_purpose::STANDARD
            .encode_slice(random, &mut encoded)
            .ok()?;
        (written == NONCE_LEN).then_some(Self(encoded))
    }

    /// The nonce, as it appears in the policy and in `nonce="…"`
    /// attributes.
    #[inline]
    pub fn as_str(&self) -> &str {
        // Base64 is ASCII: the conversion cannot fail.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    #[inline]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for CspNonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CspNonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CspNonce").field(&self.as_str()).finish()
    }
}

impl AsRef<str> for CspNonce {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// The refusal of the [`CspNonce`] extractor when no layer placed a nonce:
/// a server error (500), since the route is wired without
/// [`SecurityHeadersLayer`](crate::SecurityHeadersLayer) or its policy
/// has no nonce.
#[cfg(feature = "axum")]
#[derive(Clone, Copy, Debug)]
pub struct MissingCspNonce;

#[cfg(feature = "axum")]
impl axum::response::IntoResponse for MissingCspNonce {
    fn into_response(self) -> axum::response::Response {
        tracing::error!(
            "a handler asked for a CspNonce, but no SecurityHeadersLayer with a nonce policy runs before it"
        );
        http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
    }
}

#[cfg(feature = "axum")]
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for CspNonce {
    type Rejection = MissingCspNonce;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<CspNonce>()
            .copied()
            .ok_or(MissingCspNonce)
    }
}

#[cfg(feature = "axum")]
impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for CspNonce {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<CspNonce>().copied())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]

    use super::*;

    #[test]
    fn nonces_are_128_bits_of_base64_and_differ() {
        let a = CspNonce::generate().unwrap();
        let b = CspNonce::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 24);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(a.as_str())
            .unwrap();
        assert_eq!(decoded.len(), 16);
    }
}
