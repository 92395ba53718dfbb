#![allow(clippy::expect_used, clippy::unwrap_used)]
//! `LineRedactor`: configured fields and secrets by format, in text, Debug
//! and JSON log lines.

use palisade_redact::SecretNames;
use palisade_redact::log::LineRedactor;

fn redact(line: &str) -> String {
    String::from_utf8(
        LineRedactor::new()
            .redact_line(line.as_bytes())
            .into_owned(),
    )
    .unwrap()
}

#[test]
fn text_fields_are_redacted_quoted_or_not() {
    assert_eq!(
        redact("INFO login{user=ada}: ok password=hunter2 api_key=\"k \\\" y\" n=1\n"),
        "INFO login{user=ada}: ok password=***REDACTED*** api_key=***REDACTED*** n=1\n"
    );
    assert_eq!(
        redact("request.Access-Token=abc other.x=1"),
        "request.Access-Token=***REDACTED*** other.x=1"
    );
}

#[test]
fn debug_and_json_forms_are_redacted() {
    assert_eq!(
        redact(r#"Login { user: "ada", password: "hunter2" }"#),
        r#"Login { user: "ada", password: ***REDACTED*** }"#
    );
    assert_eq!(
        redact(r#"got {"user":"ada","secret":"s"} inline"#),
        r#"got {"user":"ada","secret":***REDACTED***} inline"#
    );
    assert_eq!(
        redact("{\"level\":\"INFO\",\"fields\":{\"token\":{\"a\":[1]},\"msg\":\"hi\"}}\n"),
        "{\"level\":\"INFO\",\"fields\":{\"token\":\"***REDACTED***\",\"msg\":\"hi\"}}\n"
    );
}

#[test]
fn secrets_by_format_are_redacted_wherever_they_are() {
    assert_eq!(
        redact(
            "calling S3 with AKIAIOSFODNN7EXAMPLE and Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
        ),
        "calling S3 with ***REDACTED*** and Bearer ***REDACTED***"
    );
}

#[test]
fn lines_without_secrets_are_borrowed_and_unchanged() {
    let redactor = LineRedactor::new();
    let line = b"INFO served path=/health status=200 latency=3ms: fine";
    assert!(matches!(
        redactor.redact_line(line),
        std::borrow::Cow::Borrowed(_)
    ));
}

#[test]
fn custom_fields_replace_the_defaults() {
    let redactor = LineRedactor::new()
        .fields(SecretNames::new(["ssn"]))
        .without_scanner();
    assert_eq!(
        redactor.redact_line(b"ssn=123-45-6789 password=kept AKIAIOSFODNN7EXAMPLE"),
        b"ssn=***REDACTED*** password=kept AKIAIOSFODNN7EXAMPLE".as_slice()
    );
}
