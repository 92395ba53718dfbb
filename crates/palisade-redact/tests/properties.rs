#![allow(clippy::expect_used, clippy::unwrap_used)]
//! Property tests: random JSON documents with secrets at random depths,
//! split into random chunks, come out equal (as parsed values) to a
//! reference redaction (parse, replace, compare) and hold no secret.

use palisade_redact::{Framing, JsonRedactor, REDACTED, SecretNames};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Map, Value};

/// Every secret leaf holds this marker; nothing else can (other strings
/// are lower case).
const MARKER: &str = "SECRET-";

fn plain_string() -> impl Strategy<Value = String> {
    "[a-z \"\\\\/\n\t\u{e9}\u{1F600}]{0,12}"
}

fn plain_key() -> impl Strategy<Value = String> {
    prop_oneof![
        plain_string(),
        Just("pass".to_owned()),
        Just("pass\"word".to_owned()),
        Just("passwords".to_owned()),
        Just("tokens_list".to_owned()),
        Just("user".to_owned()),
    ]
}

fn secret_key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("password".to_owned()),
        Just("Pass_Word".to_owned()),
        Just("API-KEY".to_owned()),
        Just("apiKey".to_owned()),
        Just("token".to_owned()),
        Just("accessToken".to_owned()),
        Just("client-secret".to_owned()),
        Just("Authorization".to_owned()),
        Just("secret".to_owned()),
    ]
}

fn leaf(strings: BoxedStrategy<String>) -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1.0e9f64..1.0e9).prop_map(Value::from),
        strings.prop_map(Value::String),
    ]
}

/// A value under a secret key: any shape, its strings all secrets.
fn secret_value() -> impl Strategy<Value = Value> {
    let marker = "[0-9]{1,6}".prop_map(|n| format!("{MARKER}{n}")).boxed();
    leaf(marker).prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((plain_key(), inner), 0..4)
                .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn document() -> impl Strategy<Value = Value> {
    leaf(plain_string().boxed()).prop_recursive(6, 96, 6, |inner| {
        let entry = prop_oneof![
            3 => (plain_key(), inner.clone()),
            1 => (secret_key(), secret_value()),
        ];
        prop_oneof![
            prop::collection::vec(inner, 0..6).prop_map(Value::Array),
            prop::collection::vec(entry, 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// The reference: walk the parsed document, replace secret keys' values.
fn reference(value: &mut Value, names: &SecretNames) {
    match value {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if names.contains(key) {
                    *value = Value::String(REDACTED.to_owned());
                } else {
                    reference(value, names);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| reference(item, names)),
        _ => {}
    }
}

fn split_redact(framing: Framing, input: &[u8], cuts: &[Index]) -> Vec<u8> {
    let mut positions: Vec<usize> = cuts.iter().map(|cut| cut.index(input.len() + 1)).collect();
    positions.sort_unstable();
    let mut redactor = JsonRedactor::new(SecretNames::default_body_keys(), framing);
    let mut out = Vec::new();
    let mut from = 0;
    for at in positions.into_iter().chain([input.len()]) {
        redactor.feed(&input[from..at], &mut out);
        from = at;
    }
    assert!(redactor.finish(&mut out).is_complete());
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn chunked_redaction_equals_the_reference(
        document in document(),
        pretty in any::<bool>(),
        cuts in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let text = if pretty {
            serde_json::to_string_pretty(&document).unwrap()
        } else {
            serde_json::to_string(&document).unwrap()
        };
        let out = split_redact(Framing::Json, text.as_bytes(), &cuts);
        let names = SecretNames::default_body_keys();
        let mut expected: Value = serde_json::from_str(&text).unwrap();
        reference(&mut expected, &names);
        let actual: Value = serde_json::from_slice(&out).unwrap();
        prop_assert_eq!(actual, expected);
        prop_assert!(!contains(&out, MARKER), "a secret leaked: {}", String::from_utf8_lossy(&out));
    }

    #[test]
    fn chunked_ndjson_and_event_streams_equal_the_reference(
        documents in prop::collection::vec(document(), 1..5),
        cuts in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let names = SecretNames::default_body_keys();
        let lines: Vec<String> = documents.iter().map(|d| serde_json::to_string(d).unwrap()).collect();
        let expected: Vec<Value> = lines.iter().map(|line| {
            let mut value: Value = serde_json::from_str(line).unwrap();
            reference(&mut value, &names);
            value
        }).collect();

        let ndjson = lines.join("\n") + "\n";
        let out = split_redact(Framing::Lines, ndjson.as_bytes(), &cuts);
        prop_assert!(!contains(&out, MARKER));
        let actual: Vec<Value> = String::from_utf8(out).unwrap().lines()
            .map(|line| serde_json::from_str(line).unwrap()).collect();
        prop_assert_eq!(&actual, &expected);

        let events: String = lines.iter().map(|line| format!("event: e\ndata: {line}\n\n")).collect();
        let out = split_redact(Framing::EventStream, events.as_bytes(), &cuts);
        prop_assert!(!contains(&out, MARKER));
        let actual: Vec<Value> = String::from_utf8(out).unwrap().lines()
            .filter_map(|line| line.strip_prefix("data: "))
            .map(|data| serde_json::from_str(data).unwrap()).collect();
        prop_assert_eq!(&actual, &expected);
    }
}
