//! Configuration errors, returned by builders at build time.

use std::borrow::Cow;

/// A configuration that cannot work, refused when the layer is built so that
/// nothing fails at request time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An option has a value that cannot work.
    #[error("invalid `{field}`: {reason}")]
    Invalid {
        /// The option.
        field: &'static str,
        /// Why it cannot work.
        reason: Cow<'static, str>,
    },
}

impl ConfigError {
    /// An invalid option.
    pub fn invalid(field: &'static str, reason: impl Into<Cow<'static, str>>) -> Self {
        ConfigError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}
