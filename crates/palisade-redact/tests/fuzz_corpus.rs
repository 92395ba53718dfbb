#![allow(clippy::expect_used, clippy::unwrap_used)]
//! Replays the body redactor's fuzz corpus (`fuzz/corpus/redact_body/`) and
//! any saved crash inputs (`fuzz/regressions/redact_body/`) through the
//! harness the fuzz target runs, so every input a fuzzer ever kept is
//! checked by the ordinary test command.

use std::path::PathBuf;

fn inputs(target: &str) -> Vec<PathBuf> {
    palisade_core::fuzzing::corpus_inputs(target)
}

#[test]
fn redact_body_corpus_replays_cleanly() {
    let files = inputs("redact_body");
    assert!(
        files.len() >= 10,
        "the corpus is missing: {} inputs",
        files.len()
    );
    let total = files.len();
    let mut failed = Vec::new();
    for file in files {
        let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        if std::panic::catch_unwind(|| palisade_redact::fuzzing::redact_body(&data)).is_err() {
            failed.push(file);
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {total} inputs fail the harness (messages above): {failed:#?}",
        failed.len()
    );
}
