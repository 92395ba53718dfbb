//! [`SecretScanner`]: finds credentials in text by their format: Palisade
//! API keys and GitHub tokens (checksums verified), AWS access key ids,
//! Slack tokens, Stripe secret keys, JWTs and PEM private key blocks.
//!
//! A keyword prefilter (one Aho-Corasick pass over the text for every
//! token's fixed prefix: `ghp_`, `AKIA`, `xoxb-`, `sk_live_`, `eyJ`,
//! `-----BEGIN `...) finds candidates; each candidate is then checked
//! against its format. Text without any keyword costs one pass.
//!
//! ```
//! use palisade_redact::scan::{SecretKind, SecretScanner};
//!
//! let scanner = SecretScanner::default();
//! let line = "aws key AKIAIOSFODNN7EXAMPLE in a log line";
//! let found = scanner.find(line.as_bytes());
//! assert_eq!(found[0].kind, SecretKind::AwsAccessKeyId);
//! assert_eq!(scanner.redact_str(line), "aws key ***REDACTED*** in a log line");
//! ```
//!
//! What each detector accepts:
//!
//! | kind | format | check |
//! |------|--------|-------|
//! | [`ApiKey`](SecretKind::ApiKey) | `<prefix>_` + 22 base62 + 6 base62 | CRC32 of everything before the last 6, base62 |
//! | [`GitHubToken`](SecretKind::GitHubToken) | `ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_` + 30 base62 + 6 base62 | CRC32 of the 30, base62 |
//! | | `github_pat_` + 22 + `_` + 59 base62 | shape only (no public checksum) |
//! | [`AwsAccessKeyId`](SecretKind::AwsAccessKeyId) | `AKIA`, `ASIA`, `ABIA`, `ACCA` + 16 of `A-Z2-7` | shape, word boundaries |
//! | [`SlackToken`](SecretKind::SlackToken) | `xoxb-`, `xoxp-`, `xoxa-`, `xoxr-`, `xoxs-`, `xoxe-` + 10 or more of `A-Za-z0-9-` | shape |
//! | [`StripeSecretKey`](SecretKind::StripeSecretKey) | `sk_live_`, `rk_live_`, `sk_test_`, `rk_test_` + 16 or more base62 | shape |
//! | [`Jwt`](SecretKind::Jwt) | `eyJ…` `.` `eyJ…` `.` signature (base64url) | shape (header and claims are JSON objects) |
//! | [`PemPrivateKey`](SecretKind::PemPrivateKey) | `-----BEGIN … PRIVATE KEY-----` to its `-----END …-----` | a block without its end is redacted to the end of the text |

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickKind};

use crate::json::REDACTED;

/// The kind of a secret found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SecretKind {
    /// A Palisade API key (`<prefix>_<22 base62><6 base62 CRC32>`).
    ApiKey,
    /// A GitHub token.
    GitHubToken,
    /// An AWS access key id.
    AwsAccessKeyId,
    /// A Slack token.
    SlackToken,
    /// A Stripe secret or restricted key.
    StripeSecretKey,
    /// A JSON Web Token.
    Jwt,
    /// A PEM private key block.
    PemPrivateKey,
}

impl SecretKind {
    /// A short name, for logs (`"github_token"`...).
    pub fn name(self) -> &'static str {
        match self {
            SecretKind::ApiKey => "api_key",
            SecretKind::GitHubToken => "github_token",
            SecretKind::AwsAccessKeyId => "aws_access_key_id",
            SecretKind::SlackToken => "slack_token",
            SecretKind::StripeSecretKey => "stripe_secret_key",
            SecretKind::Jwt => "jwt",
            SecretKind::PemPrivateKey => "pem_private_key",
        }
    }
}

impl fmt::Display for SecretKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A secret found in a text: its kind and byte range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finding {
    /// What it is.
    pub kind: SecretKind,
    /// Where it starts (byte index).
    pub start: usize,
    /// Where it ends (byte index, exclusive).
    pub end: usize,
}

/// A configuration the scanner cannot be built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanConfigError(String);

impl fmt::Display for ScanConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScanConfigError {}

#[derive(Clone, Copy, Debug)]
enum Detector {
    ApiKey { prefix_len: usize },
    GitHubClassic,
    GitHubFineGrained,
    Aws,
    Slack,
    Stripe,
    Jwt,
    Pem,
}

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const RANDOM_LEN: usize = 22;
const CHECKSUM_LEN: usize = 6;

/// The default API key prefixes: `pal_live` and `pal_test`.
pub const DEFAULT_API_KEY_PREFIXES: &[&str] = &["pal_live", "pal_test"];

/// Finds secrets by format (see the [module docs](self)). Cheap to clone.
#[derive(Clone)]
pub struct SecretScanner {
    /// `None` only if the automaton of the fixed default keywords failed
    /// to build (it does not; see `Default`).
    prefilter: Option<Arc<AhoCorasick>>,
    detectors: Arc<[Detector]>,
}

impl fmt::Debug for SecretScanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretScanner")
            .field("detectors", &self.detectors)
            .finish()
    }
}

impl Default for SecretScanner {
    /// Every detector, with the [default API key prefixes](DEFAULT_API_KEY_PREFIXES).
    fn default() -> Self {
        match Self::builder().build() {
            Ok(scanner) => scanner,
            // The default patterns are fixed and valid; should the
            // automaton ever fail to build, scan with no patterns rather
            // than panic.
            Err(_) => Self {
                prefilter: None,
                detectors: Arc::from([]),
            },
        }
    }
}

/// Builds a [`SecretScanner`].
#[derive(Clone, Debug)]
pub struct SecretScannerBuilder {
    api_key_prefixes: Vec<String>,
}

impl SecretScannerBuilder {
    /// Recognises API keys with these prefixes (as given to palisade-auth's
    /// key generation, without the `_`), instead of the defaults.
    pub fn api_key_prefixes<I, S>(mut self, prefixes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.api_key_prefixes = prefixes.into_iter().map(Into::into).collect();
        self
    }

    /// Builds the scanner; refuses an API key prefix that keys cannot have
    /// (1 to 32 bytes, a letter first, then letters, digits and `_`).
    pub fn build(self) -> Result<SecretScanner, ScanConfigError> {
        let mut patterns: Vec<String> = Vec::new();
        let mut detectors = Vec::new();
        for prefix in &self.api_key_prefixes {
            let valid = (1..=32).contains(&prefix.len())
                && prefix.as_bytes()[0].is_ascii_alphabetic()
                && prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(ScanConfigError(format!(
                    "API key prefix {prefix:?}: 1 to 32 letters, digits or _, starting with a letter"
                )));
            }
            patterns.push(format!("{prefix}_"));
            detectors.push(Detector::ApiKey {
                prefix_len: prefix.len(),
            });
        }
        let fixed: &[(&[&str], Detector)] = &[
            (
                &["ghp_", "gho_", "ghu_", "ghs_", "ghr_"],
                Detector::GitHubClassic,
            ),
            (&["github_pat_"], Detector::GitHubFineGrained),
            (&["AKIA", "ASIA", "ABIA", "ACCA"], Detector::Aws),
            (
                &["xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-", "xoxe-"],
                Detector::Slack,
            ),
            (
                &["sk_live_", "rk_live_", "sk_test_", "rk_test_"],
                Detector::Stripe,
            ),
            (&["eyJ"], Detector::Jwt),
            (&["-----BEGIN "], Detector::Pem),
        ];
        for (keywords, detector) in fixed {
            for keyword in *keywords {
                patterns.push((*keyword).to_owned());
                detectors.push(*detector);
            }
        }
        // A full DFA: a few tens of patterns make a small one, and it is
        // the fastest to run over text that is mostly not secrets.
        let prefilter = AhoCorasick::builder()
            .kind(Some(AhoCorasickKind::DFA))
            .build(&patterns)
            .map_err(|error| ScanConfigError(error.to_string()))?;
        Ok(SecretScanner {
            prefilter: Some(Arc::new(prefilter)),
            detectors: detectors.into(),
        })
    }
}

impl SecretScanner {
    /// A builder, with the [default API key prefixes](DEFAULT_API_KEY_PREFIXES).
    pub fn builder() -> SecretScannerBuilder {
        SecretScannerBuilder {
            api_key_prefixes: DEFAULT_API_KEY_PREFIXES
                .iter()
                .map(|p| (*p).to_owned())
                .collect(),
        }
    }

    /// Every secret in `text`, in order, none overlapping.
    pub fn find(&self, text: &[u8]) -> Vec<Finding> {
        let mut found: Vec<Finding> = Vec::new();
        let Some(prefilter) = &self.prefilter else {
            return found;
        };
        for hit in prefilter.find_overlapping_iter(text) {
            let Some(&detector) = self.detectors.get(hit.pattern().as_usize()) else {
                continue;
            };
            if let Some(finding) = detect(detector, text, hit.start(), hit.end()) {
                found.push(finding);
            }
        }
        found.sort_by_key(|finding| (finding.start, std::cmp::Reverse(finding.end)));
        let mut kept: Vec<Finding> = Vec::with_capacity(found.len());
        for finding in found {
            match kept.last() {
                Some(last) if finding.start < last.end => {}
                _ => kept.push(finding),
            }
        }
        kept
    }

    /// Whether `text` holds any secret.
    pub fn contains_secret(&self, text: &[u8]) -> bool {
        let Some(prefilter) = &self.prefilter else {
            return false;
        };
        prefilter.find_overlapping_iter(text).any(|hit| {
            match self.detectors.get(hit.pattern().as_usize()) {
                Some(&detector) => detect(detector, text, hit.start(), hit.end()).is_some(),
                None => false,
            }
        })
    }

    /// `text` with every secret replaced by `***REDACTED***` (borrowed when
    /// there is none).
    pub fn redact<'a>(&self, text: &'a [u8]) -> Cow<'a, [u8]> {
        let found = self.find(text);
        if found.is_empty() {
            return Cow::Borrowed(text);
        }
        let mut out = Vec::with_capacity(text.len());
        let mut from = 0;
        for finding in found {
            out.extend_from_slice(&text[from..finding.start]);
            out.extend_from_slice(REDACTED.as_bytes());
            from = finding.end;
        }
        out.extend_from_slice(&text[from..]);
        Cow::Owned(out)
    }

    /// [`redact`](Self::redact) for text.
    pub fn redact_str<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match self.redact(text.as_bytes()) {
            Cow::Borrowed(_) => Cow::Borrowed(text),
            // Secrets are ASCII and start and end on ASCII bytes, so the
            // rest is whole UTF-8; lossy only as a guard.
            Cow::Owned(bytes) => Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()),
        }
    }
}

fn is_base62(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
}

fn is_base64url(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'
}

/// The end of the run of bytes matching `accept` starting at `from`.
fn run_end(text: &[u8], from: usize, accept: impl Fn(u8) -> bool) -> usize {
    text.get(from..)
        .and_then(|rest| rest.iter().position(|&b| !accept(b)))
        .map_or(text.len(), |at| from + at)
}

/// Exactly `len` bytes matching `accept` at `from`, not followed by another
/// base62 byte; returns the end.
fn exact_run(text: &[u8], from: usize, len: usize, accept: impl Fn(u8) -> bool) -> Option<usize> {
    let end = from.checked_add(len)?;
    let run = text.get(from..end)?;
    if !run.iter().all(|&b| accept(b)) {
        return None;
    }
    match text.get(end) {
        Some(&next) if is_base62(next) => None,
        _ => Some(end),
    }
}

fn base62_value(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |value, &digit| {
        let index = ALPHABET.iter().position(|&a| a == digit)?;
        value.checked_mul(62)?.checked_add(index as u64)
    })
}

fn detect(detector: Detector, text: &[u8], start: usize, keyword_end: usize) -> Option<Finding> {
    let preceded_by_word = start
        .checked_sub(1)
        .and_then(|i| text.get(i))
        .is_some_and(|&b| is_base62(b));
    let (kind, end) = match detector {
        Detector::ApiKey { prefix_len } => {
            let end = exact_run(text, keyword_end, RANDOM_LEN + CHECKSUM_LEN, is_base62)?;
            let signed = text.get(start..start + prefix_len + 1 + RANDOM_LEN)?;
            let sum = text.get(end - CHECKSUM_LEN..end)?;
            if base62_value(sum)? != u64::from(crc32fast::hash(signed)) {
                return None;
            }
            (SecretKind::ApiKey, end)
        }
        Detector::GitHubClassic => {
            let end = exact_run(text, keyword_end, 36, is_base62)?;
            let random = text.get(keyword_end..end - CHECKSUM_LEN)?;
            let sum = text.get(end - CHECKSUM_LEN..end)?;
            if base62_value(sum)? != u64::from(crc32fast::hash(random)) {
                return None;
            }
            (SecretKind::GitHubToken, end)
        }
        Detector::GitHubFineGrained => {
            let middle = exact_run_any(text, keyword_end, 22)?;
            if text.get(middle) != Some(&b'_') {
                return None;
            }
            let end = exact_run(text, middle + 1, 59, is_base62)?;
            (SecretKind::GitHubToken, end)
        }
        Detector::Aws => {
            if preceded_by_word {
                return None;
            }
            let end = exact_run(text, keyword_end, 16, |b| {
                b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)
            })?;
            (SecretKind::AwsAccessKeyId, end)
        }
        Detector::Slack => {
            let end = run_end(text, keyword_end, |b| is_base62(b) || b == b'-');
            if end - keyword_end < 10 {
                return None;
            }
            (SecretKind::SlackToken, end)
        }
        Detector::Stripe => {
            let end = run_end(text, keyword_end, is_base62);
            if end - keyword_end < 16 {
                return None;
            }
            (SecretKind::StripeSecretKey, end)
        }
        Detector::Jwt => {
            if start
                .checked_sub(1)
                .and_then(|i| text.get(i))
                .is_some_and(|&b| is_base64url(b))
            {
                return None;
            }
            let header_end = run_end(text, keyword_end, is_base64url);
            if header_end - start < 10 || text.get(header_end) != Some(&b'.') {
                return None;
            }
            let claims = header_end + 1;
            if !text.get(claims..)?.starts_with(b"eyJ") {
                return None;
            }
            let claims_end = run_end(text, claims, is_base64url);
            if text.get(claims_end) != Some(&b'.') {
                return None;
            }
            let end = run_end(text, claims_end + 1, is_base64url);
            (SecretKind::Jwt, end)
        }
        Detector::Pem => {
            let label_end = run_end(text, keyword_end, |b| {
                b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' '
            });
            let label = text.get(keyword_end..label_end)?;
            if label.len() > 64
                || !label.ends_with(b"PRIVATE KEY")
                || !text.get(label_end..)?.starts_with(b"-----")
            {
                return None;
            }
            let body = label_end + 5;
            // The block ends after `-----END <label>-----`; a block that
            // never ends is redacted to the end of the text.
            let end = find(text, body, b"-----END ")
                .and_then(|at| find(text, at + 9, b"-----").map(|close| close + 5))
                .unwrap_or(text.len());
            (SecretKind::PemPrivateKey, end)
        }
    };
    Some(Finding { kind, start, end })
}

fn exact_run_any(text: &[u8], from: usize, len: usize) -> Option<usize> {
    let end = from.checked_add(len)?;
    text.get(from..end)?
        .iter()
        .all(|&b| is_base62(b))
        .then_some(end)
}

fn find(text: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    text.get(from..)?
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|at| from + at)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes like palisade-auth's key generation (kept here so this
    /// crate does not depend on palisade-auth).
    pub(crate) fn base62(mut value: u64, width: usize) -> String {
        let mut digits = vec![b'0'; width];
        for digit in digits.iter_mut().rev() {
            *digit = ALPHABET[(value % 62) as usize];
            value /= 62;
        }
        String::from_utf8(digits).unwrap_or_default()
    }

    #[test]
    fn base62_round_trips() {
        for value in [0u64, 1, 61, 62, 4_294_967_295] {
            assert_eq!(base62_value(base62(value, 6).as_bytes()), Some(value));
        }
    }
}
