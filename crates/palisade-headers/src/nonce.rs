//! [`CspNonce`]: the per-response nonce of a Content-Security-Policy.

use std::fmt;

use std::cell::RefCell;

use base64::Engine as _;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

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
    /// A fresh nonce from a per-thread ChaCha20 generator seeded by the
    /// operating system, or `None` if no seed can be had.
    pub fn generate() -> Option<Self> {
        let mut random = [0u8; NONCE_BYTES];
        fill_random(&mut random)?;
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

/// Nonces drawn from one generator before it is seeded again.
const RESEED_EVERY: u32 = 1 << 16;

struct ThreadGenerator {
    rng: ChaCha20Rng,
    drawn: u32,
}

thread_local! {
    static GENERATOR: RefCell<Option<ThreadGenerator>> = const { RefCell::new(None) };
}

/// Random bytes from a per-thread ChaCha20 generator seeded from the
/// operating system (a system call per nonce costs more than the rest of
/// the layer), seeded again every 65,536 nonces. `None` only if the first
/// seeding fails; a failed reseed keeps the current generator.
fn fill_random(out: &mut [u8]) -> Option<()> {
    GENERATOR
        .try_with(|cell| {
            let mut slot = cell.try_borrow_mut().ok()?;
            let stale = slot.as_ref().is_none_or(|g| g.drawn >= RESEED_EVERY);
            if stale {
                let mut seed = [0u8; 32];
                match getrandom::fill(&mut seed) {
                    Ok(()) => {
                        *slot = Some(ThreadGenerator {
                            rng: ChaCha20Rng::from_seed(seed),
                            drawn: 0,
                        });
                    }
                    Err(_) if slot.is_some() => {}
                    Err(_) => return None,
                }
            }
            let generator = slot.as_mut()?;
            generator.drawn = generator.drawn.saturating_add(1);
            generator.rng.fill_bytes(out);
            Some(())
        })
        .ok()
        .flatten()
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
