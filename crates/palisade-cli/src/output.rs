//! Writing results to stdout and notes to stderr.
//!
//! stdout carries only what a script captures (a key, a hash, a token, the
//! files written); notes for the person at the terminal go to stderr. A
//! closed stdout (`palisade ... | head -0`) is an error, never a panic.

use std::io::Write;

use crate::failure::Failure;

/// Writes one line to stdout.
pub(crate) fn line(text: &str) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")
        .and_then(|()| stdout.flush())
        .map_err(|error| Failure::new(format!("cannot write to stdout: {error}")))
}

/// Writes a note to stderr. A failing stderr is ignored: the result on
/// stdout is what counts.
pub(crate) fn note(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{text}");
}

/// Reports a failure on stderr as `error: <message>`.
pub(crate) fn error(failure: &Failure) {
    note(&format!("error: {}", failure.message()));
}
