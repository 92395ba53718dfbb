//! The harness shared by the `redact_body` fuzz target (`fuzz/`) and the
//! test that replays its corpus. Not part of the API.

use crate::json::{Framing, JsonRedactor};
use crate::log::LineRedactor;
use crate::names::SecretNames;
use crate::scan::SecretScanner;

/// Feeds arbitrary bytes to the body redactor, in every framing, whole and
/// cut into chunks at places taken from the input; checks that the output
/// does not depend on how the input was cut.
///
/// The first byte chooses the chunk size (1 to 64); the rest is the body.
///
/// The same bytes also go through the [`SecretScanner`] and the
/// [`LineRedactor`]: findings must lie inside the text and not overlap, and
/// nothing the scanner finds may survive its own redaction.
pub fn redact_body(data: &[u8]) {
    scan_text(data);
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first % 64) + 1;
    let names = SecretNames::default_body_keys();
    for framing in [Framing::Json, Framing::Lines, Framing::EventStream] {
        let mut whole = JsonRedactor::new(names.clone(), framing).with_max_depth(32);
        let mut expected = Vec::new();
        whole.feed(body, &mut expected);
        let expected_outcome = whole.finish(&mut expected);

        let mut cut = JsonRedactor::new(names.clone(), framing).with_max_depth(32);
        let mut actual = Vec::new();
        for piece in body.chunks(chunk) {
            cut.feed(piece, &mut actual);
        }
        let actual_outcome = cut.finish(&mut actual);
        assert_eq!(expected, actual, "{framing:?}: output depends on chunking");
        assert_eq!(expected_outcome, actual_outcome, "{framing:?}");

        // Redacting is idempotent, and the output of a complete input is
        // itself complete.
        let mut again = JsonRedactor::new(names.clone(), framing).with_max_depth(32);
        let mut twice = Vec::new();
        again.feed(&expected, &mut twice);
        let twice_outcome = again.finish(&mut twice);
        if expected_outcome.is_complete() {
            assert!(
                twice_outcome.is_complete(),
                "{framing:?}: output is invalid"
            );
            assert_eq!(expected, twice, "{framing:?}: not idempotent");
        }
    }
}

fn scanners() -> &'static (SecretScanner, LineRedactor) {
    // Built once: an Aho-Corasick automaton per input would be most of the
    // fuzzer's time.
    static SCANNERS: std::sync::OnceLock<(SecretScanner, LineRedactor)> =
        std::sync::OnceLock::new();
    SCANNERS.get_or_init(|| (SecretScanner::default(), LineRedactor::new()))
}

fn scan_text(data: &[u8]) {
    let (scanner, lines) = scanners();
    let found = scanner.find(data);
    let mut last_end = 0;
    for finding in &found {
        assert!(finding.start >= last_end && finding.start < finding.end);
        assert!(finding.end <= data.len());
        last_end = finding.end;
    }
    let redacted = scanner.redact(data);
    assert!(
        !scanner.contains_secret(&redacted),
        "a secret survived redaction"
    );
    let _ = lines.redact_line(data);
}
