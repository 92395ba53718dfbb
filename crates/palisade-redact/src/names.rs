//! [`SecretNames`]: the names (JSON keys, query parameters) whose values are
//! secrets, compared after normalising: ASCII case folded, `-` and `_`
//! removed, so `API-Key`, `api_key` and `apiKey` are one name.

use std::fmt;
use std::sync::Arc;

/// The JSON keys redacted by default.
pub const DEFAULT_BODY_KEYS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "client_secret",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "api_key",
    "apikey",
    "authorization",
    "private_key",
    "cookie",
    "set_cookie",
    "session_id",
    "credentials",
];

/// The query parameters redacted by default.
pub const DEFAULT_QUERY_PARAMS: &[&str] = &[
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "api_key",
    "key",
    "password",
    "secret",
    "client_secret",
    "code",
    "signature",
    "sig",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
];

/// A set of secret names, normalised once at build: ASCII case folded, `-`
/// and `_` removed. Cheap to clone.
///
/// ```
/// use palisade_redact::SecretNames;
///
/// let names = SecretNames::new(["api_key", "Password"]);
/// assert!(names.contains("API-KEY"));
/// assert!(names.contains("apiKey"));
/// assert!(names.contains("pass_word"));
/// assert!(!names.contains("user"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SecretNames {
    names: Arc<[Box<[u8]>]>,
    /// The names again, by length: a key is compared only with the names
    /// of its own length (this lookup runs once per JSON key).
    by_len: Arc<[Vec<Box<[u8]>>]>,
    longest: usize,
}

impl fmt::Debug for SecretNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.names
                    .iter()
                    .map(|name| String::from_utf8_lossy(name).into_owned()),
            )
            .finish()
    }
}

impl SecretNames {
    /// A set of the given names (normalised; empty names are ignored).
    pub fn new<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut normalised: Vec<Box<[u8]>> = Vec::new();
        for name in names {
            let name = normalise(name.as_ref().as_bytes());
            if !name.is_empty() && !normalised.iter().any(|known| **known == *name) {
                normalised.push(name.into_boxed_slice());
            }
        }
        let longest = normalised.iter().map(|name| name.len()).max().unwrap_or(0);
        let mut by_len: Vec<Vec<Box<[u8]>>> = vec![Vec::new(); longest + 1];
        for name in &normalised {
            if let Some(bucket) = by_len.get_mut(name.len()) {
                bucket.push(name.clone());
            }
        }
        Self {
            names: normalised.into(),
            by_len: by_len.into(),
            longest,
        }
    }

    /// The default JSON keys ([`DEFAULT_BODY_KEYS`]).
    pub fn default_body_keys() -> Self {
        Self::new(DEFAULT_BODY_KEYS)
    }

    /// The default query parameters ([`DEFAULT_QUERY_PARAMS`]).
    pub fn default_query_params() -> Self {
        Self::new(DEFAULT_QUERY_PARAMS)
    }

    /// This set with more names added.
    pub fn with<I, S>(&self, more: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let existing = self
            .names
            .iter()
            .map(|name| String::from_utf8_lossy(name).into_owned());
        let more: Vec<String> = more.into_iter().map(|s| s.as_ref().to_owned()).collect();
        Self::new(existing.chain(more))
    }

    /// Whether `name` is in the set, after normalising it.
    pub fn contains(&self, name: &str) -> bool {
        let name = normalise(name.as_bytes());
        self.contains_normalised(&name)
    }

    /// Whether an already normalised name is in the set.
    #[inline]
    pub(crate) fn contains_normalised(&self, name: &[u8]) -> bool {
        self.by_len
            .get(name.len())
            .is_some_and(|bucket| bucket.iter().any(|known| **known == *name))
    }

    /// The length of the longest normalised name: a name being read that
    /// grows past it cannot match, so it need not be kept.
    #[inline]
    pub(crate) fn longest(&self) -> usize {
        self.longest
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Folds one byte of a name into its normalised form, or drops it.
#[inline]
pub(crate) fn normalise_byte(byte: u8) -> Option<u8> {
    match byte {
        b'-' | b'_' => None,
        other => Some(other.to_ascii_lowercase()),
    }
}

fn normalise(name: &[u8]) -> Vec<u8> {
    name.iter().copied().filter_map(normalise_byte).collect()
}
