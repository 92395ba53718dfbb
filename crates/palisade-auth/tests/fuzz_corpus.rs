#![allow(clippy::expect_used, clippy::unwrap_used)]
//! Replays the JWT fuzz corpus (`fuzz/corpus/jwt_token/`) and any saved crash
//! inputs (`fuzz/regressions/jwt_token/`) through the same harness the fuzz
//! target runs, so every input a fuzzer ever kept is checked by the ordinary
//! test command, without a fuzzer.

use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    palisade_core::fuzzing::corpus_inputs(target)
}

#[test]
fn jwt_token_corpus_replays_cleanly() {
    let files = inputs("jwt_token");
    assert!(
        files.len() >= 10,
        "the corpus is missing: {} inputs",
        files.len()
    );
    let total = files.len();
    let mut failed = Vec::new();
    for file in files {
        let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        if std::panic::catch_unwind(|| palisade_auth::fuzzing::jwt_token(&data)).is_err() {
            failed.push(file);
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {total} inputs fail the harness (messages above): {failed:#?}",
        failed.len()
    );
}

#[test]
fn jwt_token_seeds_include_tokens_that_verify() {
    // Signed with the harness key for its fixed clock: mutations of these
    // reach the claim rules, the principal and the cache.
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/jwt_token");
    for seed in ["seed_valid", "seed_valid_no_kid", "seed_valid_aud_array"] {
        let token = std::fs::read_to_string(corpus.join(seed)).unwrap();
        assert!(
            palisade_auth::fuzzing::jwt_token_accepted(&token),
            "{seed} is refused"
        );
    }
}

#[test]
fn api_key_credentials_corpus_replays_cleanly() {
    let files = inputs("api_key_credentials");
    assert!(
        files.len() >= 10,
        "the corpus is missing: {} inputs",
        files.len()
    );
    for file in files {
        let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        palisade_auth::fuzzing::api_key_credentials(&data);
    }
}

#[test]
fn api_key_credentials_seeds_include_the_valid_key() {
    let any_valid = inputs("api_key_credentials")
        .iter()
        .any(|file| palisade_auth::fuzzing::api_key_is_valid(&std::fs::read(file).unwrap()));
    assert!(any_valid, "no seed is the harness's valid key");
}
