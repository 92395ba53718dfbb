#![allow(clippy::expect_used, clippy::unwrap_used)]
//! A tracing-subscriber formatter writing through `RedactingMakeWriter`:
//! no secret reaches the output, in text or JSON. Alone in its binary (a
//! subscriber set with `set_default`).

use std::io::Write;
use std::sync::{Arc, Mutex};

use palisade_redact::log::{LineRedactor, RedactingMakeWriter};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Debug)]
#[allow(dead_code)] // read through Debug
struct Login {
    user: &'static str,
    password: &'static str,
}

#[test]
fn every_formatted_line_is_redacted() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(RedactingMakeWriter::new(
            move || writer.clone(),
            LineRedactor::new(),
        ))
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let span = tracing::info_span!("request", token = "span-token-1");
    let _entered = span.enter();
    tracing::info!(password = "field-secret-2", user = "ada", "login");
    tracing::info!(login = ?Login { user: "ada", password: "debug-secret-3" }, "debug");
    tracing::warn!("leaked key AKIAIOSFODNN7EXAMPLE in a message");
    tracing::info!(api_key = %"display-secret-4", "display");

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    println!("{logs}");
    assert_eq!(logs.lines().count(), 4, "{logs}");
    for secret in [
        "span-token-1",
        "field-secret-2",
        "debug-secret-3",
        "AKIAIOSFODNN7EXAMPLE",
        "display-secret-4",
    ] {
        assert!(!logs.contains(secret), "{secret} leaked: {logs}");
    }
    assert!(logs.contains("user=\"ada\""), "{logs}");
    assert!(logs.contains("login"), "{logs}");
}
