#![allow(clippy::expect_used, clippy::unwrap_used)]
//! The secret detectors: each format found (checksums verified), near
//! misses left alone, and redaction.

use std::borrow::Cow;

use palisade_redact::scan::{SecretKind, SecretScanner};
use proptest::prelude::*;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn base62(mut value: u64, width: usize) -> String {
    let mut digits = vec![b'0'; width];
    for digit in digits.iter_mut().rev() {
        *digit = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    String::from_utf8(digits).unwrap()
}

/// A key as palisade-auth composes it.
fn api_key(prefix: &str, random: &str) -> String {
    assert_eq!(random.len(), 22);
    let signed = format!("{prefix}_{random}");
    let sum = base62(u64::from(crc32fast::hash(signed.as_bytes())), 6);
    format!("{signed}{sum}")
}

/// A classic GitHub token with its checksum.
fn github_token(prefix: &str, random: &str) -> String {
    assert_eq!(random.len(), 30);
    let sum = base62(u64::from(crc32fast::hash(random.as_bytes())), 6);
    format!("{prefix}{random}{sum}")
}

fn flip(token: &str, at: usize) -> String {
    let mut bytes = token.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'a' { b'b' } else { b'a' };
    String::from_utf8(bytes).unwrap()
}

fn kinds(scanner: &SecretScanner, text: &str) -> Vec<SecretKind> {
    scanner
        .find(text.as_bytes())
        .iter()
        .map(|f| f.kind)
        .collect()
}

const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";

#[test]
fn each_format_is_found_and_redacted() {
    let scanner = SecretScanner::default();
    let key = api_key("pal_live", "AbCdEfGhIjKlMnOpQrStUv");
    let gh = github_token("ghp_", "abcdefghijklmnopqrstuvwxyz0123");
    let cases = [
        (format!("key={key};"), SecretKind::ApiKey),
        (format!("token {gh} end"), SecretKind::GitHubToken),
        (
            format!("pat github_pat_{}_{} x", "A".repeat(22), "b".repeat(59)),
            SecretKind::GitHubToken,
        ),
        (
            "id=AKIAIOSFODNN7EXAMPLE,".to_owned(),
            SecretKind::AwsAccessKeyId,
        ),
        (
            "xoxb-123456789012-abcdefABCDEF rest".to_owned(),
            SecretKind::SlackToken,
        ),
        (
            "\"sk_live_4eC39HqLyjWDarjtT1zdp7dc\"".to_owned(),
            SecretKind::StripeSecretKey,
        ),
        (format!("Bearer {JWT}"), SecretKind::Jwt),
        (
            "a\n-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nIBAAK=\n-----END RSA PRIVATE KEY-----\nb"
                .to_owned(),
            SecretKind::PemPrivateKey,
        ),
    ];
    for (text, kind) in cases {
        assert_eq!(kinds(&scanner, &text), vec![kind], "{text}");
        let redacted = scanner.redact_str(&text);
        assert!(redacted.contains("***REDACTED***"), "{redacted}");
        assert!(!scanner.contains_secret(redacted.as_bytes()), "{redacted}");
    }
    assert_eq!(
        scanner.redact_str(&format!("key={key};")),
        "key=***REDACTED***;"
    );
    assert_eq!(
        scanner.redact_str("a\n-----BEGIN PRIVATE KEY-----\nMII\n-----END PRIVATE KEY-----\nb"),
        "a\n***REDACTED***\nb"
    );
}

#[test]
fn checksums_are_verified() {
    let scanner = SecretScanner::default();
    let key = api_key("pal_live", "AbCdEfGhIjKlMnOpQrStUv");
    let gh = github_token("gho_", "ZYXWVUTSRQPONMLKJIHGFEDCBA9876");
    assert!(scanner.contains_secret(key.as_bytes()));
    assert!(scanner.contains_secret(gh.as_bytes()));
    for at in [10, 20, key.len() - 1] {
        assert!(!scanner.contains_secret(flip(&key, at).as_bytes()), "{at}");
    }
    for at in [4, 20, gh.len() - 1] {
        assert!(!scanner.contains_secret(flip(&gh, at).as_bytes()), "{at}");
    }
    // The same key with a prefix the scanner was not given.
    let other = api_key("acme", "AbCdEfGhIjKlMnOpQrStUv");
    assert!(!scanner.contains_secret(other.as_bytes()));
    let acme = SecretScanner::builder()
        .api_key_prefixes(["acme"])
        .build()
        .unwrap();
    assert!(acme.contains_secret(other.as_bytes()));
    assert!(!acme.contains_secret(key.as_bytes()));
}

#[test]
fn near_misses_are_left_alone() {
    let scanner = SecretScanner::default();
    for text in [
        "XAKIAIOSFODNN7EXAMPLE",      // inside a longer word
        "AKIAIOSFODNN7EXAMPL",        // too short
        "AKIAIOSFODNN7EXAMPLE1",      // too long
        "xoxb-short",                 // too short
        "sk_live_short",              // too short
        "eyJhbGciOiJIUzI1NiJ9 alone", // no claims
        "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----",
        "ghp_ is a prefix, not a token",
        "plain text with no keyword at all",
    ] {
        assert!(kinds(&scanner, text).is_empty(), "{text}");
        assert!(matches!(scanner.redact_str(text), Cow::Borrowed(_)));
    }
}

#[test]
fn an_unterminated_private_key_is_redacted_to_the_end() {
    let scanner = SecretScanner::default();
    assert_eq!(
        scanner.redact_str("log: -----BEGIN EC PRIVATE KEY-----\nMHcCAQEE..."),
        "log: ***REDACTED***"
    );
}

#[test]
fn several_secrets_in_one_text_are_all_redacted() {
    let scanner = SecretScanner::default();
    let text = format!("a AKIAIOSFODNN7EXAMPLE b {JWT} c xoxp-1234567890-abc d");
    assert_eq!(
        scanner.redact_str(&text),
        "a ***REDACTED*** b ***REDACTED*** c ***REDACTED*** d"
    );
}

#[test]
fn invalid_prefixes_are_refused() {
    for prefix in ["", "1abc", "a-b", &"a".repeat(33)] {
        assert!(
            SecretScanner::builder()
                .api_key_prefixes([prefix])
                .build()
                .is_err(),
            "{prefix}"
        );
    }
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics_and_redaction_is_idempotent(
        text in "(AKIA|ghp_|eyJ|xoxb-|sk_live_|pal_live_|-----BEGIN |[A-Za-z0-9_. -]){0,80}",
    ) {
        let scanner = SecretScanner::default();
        let once = scanner.redact(text.as_bytes()).into_owned();
        prop_assert!(!scanner.contains_secret(&once));
    }

    #[test]
    fn generated_keys_are_found_anywhere(
        random in "[0-9A-Za-z]{22}",
        before in "[ ,;:=\"'(]{0,3}",
        after in "[ ,;\"')]{0,3}",
    ) {
        let scanner = SecretScanner::default();
        let key = api_key("pal_test", &random);
        let text = format!("{before}{key}{after}");
        prop_assert_eq!(scanner.redact_str(&text), format!("{before}***REDACTED***{after}"));
    }
}
