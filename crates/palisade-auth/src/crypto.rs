//! The signature backend behind `jsonwebtoken`: aws-lc-rs (feature
//! `aws-lc-rs`, the default) or the RustCrypto crates (feature
//! `rust-crypto`).
//!
//! `jsonwebtoken` picks its backend once per process from its own features,
//! and panics on first use when it has none or both. Palisade checks the
//! choice when a layer or issuer is built instead, and signs and verifies one
//! token then, so a misconfigured build fails at start-up and never on a
//! request.
//!
//! When a build enables both features (feature unification can do that),
//! choose one with [`CryptoBackend::install`] before building a layer.

use std::sync::OnceLock;

use jsonwebtoken::Algorithm;
use palisade_core::ConfigError;

/// A signature backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CryptoBackend {
    /// aws-lc-rs: the fastest, and the default.
    AwsLcRs,
    /// The pure-Rust RustCrypto crates.
    RustCrypto,
}

static INSTALLED: OnceLock<CryptoBackend> = OnceLock::new();

impl CryptoBackend {
    /// The backends this build was compiled with.
    pub fn compiled() -> &'static [CryptoBackend] {
        #[cfg(all(feature = "aws-lc-rs", feature = "rust-crypto"))]
        return &[CryptoBackend::AwsLcRs, CryptoBackend::RustCrypto];
        #[cfg(all(feature = "aws-lc-rs", not(feature = "rust-crypto")))]
        return &[CryptoBackend::AwsLcRs];
        #[cfg(all(not(feature = "aws-lc-rs"), feature = "rust-crypto"))]
        return &[CryptoBackend::RustCrypto];
        #[cfg(not(any(feature = "aws-lc-rs", feature = "rust-crypto")))]
        return &[];
    }

    /// The backend layers will use: the installed one, else the only one
    /// compiled in.
    pub fn active() -> Option<CryptoBackend> {
        resolve(Self::compiled(), INSTALLED.get().copied()).ok()
    }

    /// Makes this backend the process-wide one. Installing the same backend
    /// twice is fine; a different one, or one not compiled in, is refused.
    pub fn install(self) -> Result<(), ConfigError> {
        if !Self::compiled().contains(&self) {
            return Err(ConfigError::invalid(
                "crypto_backend",
                format!("{self:?} is not compiled in; enable its feature"),
            ));
        }
        let chosen = *INSTALLED.get_or_init(|| {
            install_provider(self);
            self
        });
        if chosen == self {
            Ok(())
        } else {
            Err(ConfigError::invalid(
                "crypto_backend",
                format!("{chosen:?} is already installed for this process"),
            ))
        }
    }
}

impl CryptoBackend {
    /// Installs aws-lc-rs when compiled in, else RustCrypto: the explicit
    /// choice for a build where feature unification may enable both.
    pub fn install_preferred() -> Result<CryptoBackend, ConfigError> {
        let preferred = Self::compiled().first().copied().ok_or_else(|| {
            ConfigError::invalid("crypto_backend", "no signature backend is compiled in")
        })?;
        match preferred.install() {
            Ok(()) => Ok(preferred),
            // Something else was installed first: that choice stands.
            Err(_) => INSTALLED
                .get()
                .copied()
                .ok_or_else(|| ConfigError::invalid("crypto_backend", "no backend installed")),
        }
    }
}

fn install_provider(backend: CryptoBackend) {
    // An `Err` means a provider was already installed through jsonwebtoken
    // directly; the application chose, and that choice stands.
    match backend {
        #[cfg(feature = "aws-lc-rs")]
        CryptoBackend::AwsLcRs => {
            let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
        }
        #[cfg(feature = "rust-crypto")]
        CryptoBackend::RustCrypto => {
            let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
        }
        #[allow(unreachable_patterns)]
        _ => {}
    }
}

/// Which backend a build with `compiled` backends and an `installed` choice
/// uses, or why it cannot work.
pub(crate) fn resolve(
    compiled: &[CryptoBackend],
    installed: Option<CryptoBackend>,
) -> Result<CryptoBackend, ConfigError> {
    match (compiled, installed) {
        ([], _) => Err(ConfigError::invalid(
            "crypto_backend",
            "no signature backend is compiled in; enable the `aws-lc-rs` or `rust-crypto` feature",
        )),
        (_, Some(chosen)) => Ok(chosen),
        ([only], None) => Ok(*only),
        (_, None) => Err(ConfigError::invalid(
            "crypto_backend",
            "both `aws-lc-rs` and `rust-crypto` are enabled; choose one with `CryptoBackend::install`",
        )),
    }
}

/// Checks the backend choice and proves it works by signing and verifying one
/// token. Called by every builder.
pub(crate) fn ensure_ready() -> Result<CryptoBackend, ConfigError> {
    let backend = resolve(CryptoBackend::compiled(), INSTALLED.get().copied())?;
    static CHECKED: OnceLock<bool> = OnceLock::new();
    let works = *CHECKED.get_or_init(self_test);
    if works {
        Ok(backend)
    } else {
        Err(ConfigError::invalid(
            "crypto_backend",
            "the signature backend failed its self-test",
        ))
    }
}

fn self_test() -> bool {
    let secret = [0x5a_u8; 32];
    let message = b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzZWxmLXRlc3QifQ";
    let encoding = jsonwebtoken::EncodingKey::from_secret(&secret);
    let decoding = jsonwebtoken::DecodingKey::from_secret(&secret);
    let Ok(signature) = jsonwebtoken::crypto::sign(message, &encoding, Algorithm::HS256) else {
        return false;
    };
    let good = jsonwebtoken::crypto::verify(&signature, message, &decoding, Algorithm::HS256);
    let bad = jsonwebtoken::crypto::verify(&signature, b"tampered", &decoding, Algorithm::HS256);
    matches!((good, bad), (Ok(true), Ok(false)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_backend_and_two_unchosen_backends_are_refused_at_build() {
        assert!(resolve(&[], None).is_err());
        assert!(resolve(&[], Some(CryptoBackend::AwsLcRs)).is_err());
        let both = [CryptoBackend::AwsLcRs, CryptoBackend::RustCrypto];
        let error = resolve(&both, None).unwrap_err().to_string();
        assert!(error.contains("choose one"), "{error}");
        assert_eq!(
            resolve(&both, Some(CryptoBackend::RustCrypto)).unwrap(),
            CryptoBackend::RustCrypto
        );
        assert_eq!(
            resolve(&[CryptoBackend::AwsLcRs], None).unwrap(),
            CryptoBackend::AwsLcRs
        );
    }
}
