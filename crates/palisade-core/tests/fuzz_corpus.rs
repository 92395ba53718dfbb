//! Replays the fuzz corpora (`fuzz/corpus/<target>/`) and any saved crash
//! inputs (`fuzz/regressions/<target>/`) through the same harnesses the fuzz
//! targets run, so every input a fuzzer ever kept is checked by the
//! ordinary test command, without a fuzzer.

// A failed expectation in a test is a failing test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;

fn inputs(target: &str) -> Vec<PathBuf> {
    palisade_core::fuzzing::corpus_inputs(target)
}

#[test]
fn forwarding_headers_corpus_replays_cleanly() {
    let files = inputs("forwarding_headers");
    assert!(
        files.len() >= 10,
        "the corpus is missing: {} inputs",
        files.len()
    );
    for file in files {
        let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        palisade_core::fuzzing::forwarding_headers(&data);
    }
}
