#![allow(clippy::expect_used, clippy::unwrap_used)]
//! The streaming redactor, byte by byte: chunk boundaries, escapes, nested
//! secrets, framings, and invalid input failing safe.

use palisade_redact::{Framing, JsonRedactor, Outcome, SecretNames};

fn redact_in(framing: Framing, pieces: &[&[u8]]) -> (String, Outcome) {
    let mut redactor = JsonRedactor::new(SecretNames::default_body_keys(), framing);
    let mut out = Vec::new();
    for piece in pieces {
        redactor.feed(piece, &mut out);
    }
    let outcome = redactor.finish(&mut out);
    (String::from_utf8(out).unwrap(), outcome)
}

/// Redacts `input` whole and cut at every single position, and in one-byte
/// chunks; all must agree.
fn redact_every_split(framing: Framing, input: &str) -> (String, Outcome) {
    let bytes = input.as_bytes();
    let whole = redact_in(framing, &[bytes]);
    for at in 0..=bytes.len() {
        let (a, b) = bytes.split_at(at);
        assert_eq!(redact_in(framing, &[a, b]), whole, "split at {at}");
    }
    let singles: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(redact_in(framing, &singles), whole, "byte by byte");
    whole
}

fn redact(input: &str) -> String {
    let (out, outcome) = redact_every_split(Framing::Json, input);
    assert_eq!(outcome, Outcome::Complete, "{input}");
    out
}

#[test]
fn secret_string_values_are_replaced_and_others_kept() {
    assert_eq!(
        redact(r#"{"user":"ada","password":"hunter2","age":36}"#),
        r#"{"user":"ada","password":"***REDACTED***","age":36}"#
    );
}

#[test]
fn keys_match_without_case_dashes_or_underscores() {
    assert_eq!(
        redact(r#"{"API-Key":"k1","apiKey":"k2","ACCESS_TOKEN":"t","Pass_Word":"p"}"#),
        r#"{"API-Key":"***REDACTED***","apiKey":"***REDACTED***","ACCESS_TOKEN":"***REDACTED***","Pass_Word":"***REDACTED***"}"#
    );
}

#[test]
fn whole_nested_values_of_secret_keys_are_replaced_once() {
    assert_eq!(
        redact(r#"{"secret":{"a":[1,{"b":"c"}],"d":null},"token":[true,false,-1.5e3],"x":1}"#),
        r#"{"secret":"***REDACTED***","token":"***REDACTED***","x":1}"#
    );
    assert_eq!(
        redact(r#"{"password":12345,"pwd_hint":"x","token":null}"#),
        r#"{"password":"***REDACTED***","pwd_hint":"x","token":"***REDACTED***"}"#
    );
}

#[test]
fn secrets_deep_inside_arrays_and_objects_are_found() {
    assert_eq!(
        redact(r#"[{"users":[{"name":"a","password":"p1"},{"name":"b","Password":"p2"}]}]"#),
        r#"[{"users":[{"name":"a","password":"***REDACTED***"},{"name":"b","Password":"***REDACTED***"}]}]"#
    );
}

#[test]
fn escapes_in_values_do_not_end_strings_early() {
    assert_eq!(
        redact(r#"{"password":"a\"b\\\"c\u0022}","note":"q\"\\","token":"\\"}"#),
        r#"{"password":"***REDACTED***","note":"q\"\\","token":"***REDACTED***"}"#
    );
}

#[test]
fn escaped_keys_are_decoded_before_matching() {
    // "p\u0061ssword" is "password"; "to\u006Ben" is "token".
    assert_eq!(
        redact(r#"{"p\u0061ssword":"x","to\u006Ben":"y","\"password\"":"z"}"#),
        r#"{"p\u0061ssword":"***REDACTED***","to\u006Ben":"***REDACTED***","\"password\"":"z"}"#
    );
}

#[test]
fn a_secret_key_inside_a_value_string_is_only_text() {
    assert_eq!(
        redact(r#"{"msg":"\"password\":\"x\"","list":["token","secret"]}"#),
        r#"{"msg":"\"password\":\"x\"","list":["token","secret"]}"#
    );
}

#[test]
fn whitespace_and_pretty_printing_are_kept() {
    assert_eq!(
        redact("{\n  \"password\" : \"x\" ,\n  \"a\": [ 1 , 2 ]\n}\n"),
        "{\n  \"password\" : \"***REDACTED***\" ,\n  \"a\": [ 1 , 2 ]\n}\n"
    );
}

#[test]
fn top_level_scalars_and_empty_bodies_are_complete() {
    assert_eq!(redact("42"), "42");
    assert_eq!(redact(r#""token""#), r#""token""#);
    assert_eq!(redact("  "), "  ");
    assert_eq!(redact("[]"), "[]");
    assert_eq!(redact("{}"), "{}");
}

#[test]
fn invalid_json_stops_output_at_the_first_bad_byte() {
    let (out, outcome) = redact_every_split(Framing::Json, r#"{"a":1,"b":nope,"password":"x"}"#);
    // The `n` is a valid prefix (of `null`): written before the `o` is read.
    assert_eq!(out, r#"{"a":1,"b":n"#);
    assert_eq!(outcome, Outcome::Invalid);

    // A secret key without its colon, a secret value that breaks: never
    // written.
    let (out, _) = redact_every_split(Framing::Json, r#"{"password" "hunter2"}"#);
    assert!(!out.contains("hunter2"), "{out}");
    let (out, outcome) = redact_every_split(Framing::Json, r#"{"token":{"x":"leak" "y"}}"#);
    assert_eq!(out, r#"{"token":"***REDACTED***""#);
    assert_eq!(outcome, Outcome::Invalid);

    // Trailing content after the document is invalid too.
    let (out, outcome) = redact_every_split(Framing::Json, r#"{"a":1} {"password":"x"}"#);
    assert_eq!(out, r#"{"a":1} "#);
    assert_eq!(outcome, Outcome::Invalid);

    // Raw control bytes in strings, mismatched brackets, bad escapes.
    for bad in [
        "{\"a\":\"x\ny\"}",
        r#"{"a":[1}"#,
        r#"["\x"]"#,
        r#"["\u12G4"]"#,
        r#"{"a" 1}"#,
        "]",
    ] {
        let (_, outcome) = redact_every_split(Framing::Json, bad);
        assert_eq!(outcome, Outcome::Invalid, "{bad}");
    }
}

#[test]
fn truncated_input_is_reported() {
    let (out, outcome) = redact_every_split(Framing::Json, r#"{"password":"hun"#);
    assert_eq!(out, r#"{"password":"***REDACTED***""#);
    assert_eq!(outcome, Outcome::Truncated);
}

#[test]
fn nesting_beyond_the_limit_fails_safe() {
    let mut redactor =
        JsonRedactor::new(SecretNames::default_body_keys(), Framing::Json).with_max_depth(3);
    let mut out = Vec::new();
    redactor.feed(br#"[[[{"password":"x"}]]]"#, &mut out);
    assert_eq!(redactor.finish(&mut out), Outcome::Invalid);
    assert_eq!(out, b"[[[");
}

#[test]
fn ndjson_redacts_each_line_and_an_invalid_line_drops_only_its_rest() {
    let input =
        "{\"token\":\"a\"}\n\n{\"b\":1, oops \"password\":\"leak\"}\r\n[{\"secret\":[1]}]\n";
    let (out, outcome) = redact_every_split(Framing::Lines, input);
    assert_eq!(
        out,
        "{\"token\":\"***REDACTED***\"}\n\n{\"b\":1, \n[{\"secret\":\"***REDACTED***\"}]\n"
    );
    assert_eq!(outcome, Outcome::Invalid);

    let (out, outcome) = redact_every_split(Framing::Lines, "{\"a\":1}\r\n{\"password\":2}");
    assert_eq!(out, "{\"a\":1}\r\n{\"password\":\"***REDACTED***\"}");
    assert_eq!(outcome, Outcome::Complete);
}

#[test]
fn event_streams_redact_data_lines_and_pass_other_fields() {
    let input = concat!(
        ": comment with token\n",
        "event: login\n",
        "id: 7\n",
        "data: {\"user\":\"ada\",\"password\":\"hunter2\"}\n",
        "\n",
        "data:{\"access_token\":\"t\"}\r\n",
        "\r\n",
        "data: not json password=hunter3\n",
        "datum: {\"password\":\"kept: not a data line\"}\n",
        "data\n",
        "\n",
    );
    let (out, outcome) = redact_every_split(Framing::EventStream, input);
    assert_eq!(
        out,
        concat!(
            ": comment with token\n",
            "event: login\n",
            "id: 7\n",
            "data: {\"user\":\"ada\",\"password\":\"***REDACTED***\"}\n",
            "\n",
            "data:{\"access_token\":\"***REDACTED***\"}\r\n",
            "\r\n",
            "data: n\n",
            "datum: {\"password\":\"kept: not a data line\"}\n",
            "data\n",
            "\n",
        )
    );
    assert_eq!(outcome, Outcome::Invalid);
}

#[test]
fn custom_names_replace_the_defaults() {
    let mut redactor = JsonRedactor::new(SecretNames::new(["ssn"]), Framing::Json);
    let mut out = Vec::new();
    redactor.feed(br#"{"SSN":"123","password":"p"}"#, &mut out);
    assert!(redactor.finish(&mut out).is_complete());
    assert_eq!(out, br#"{"SSN":"***REDACTED***","password":"p"}"#);
}

#[test]
fn a_redactor_is_reusable_after_finish() {
    let mut redactor = JsonRedactor::new(SecretNames::default_body_keys(), Framing::Json);
    let mut out = Vec::new();
    redactor.feed(br#"{"password":"#, &mut out);
    assert_eq!(redactor.finish(&mut out), Outcome::Truncated);
    out.clear();
    redactor.feed(br#"{"token":"x"}"#, &mut out);
    assert_eq!(redactor.finish(&mut out), Outcome::Complete);
    assert_eq!(out, br#"{"token":"***REDACTED***"}"#);
}
