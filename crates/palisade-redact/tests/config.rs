#![allow(clippy::expect_used, clippy::unwrap_used)]
//! `RedactConfig`: defaults, extra names, and (feature `serde`) reading it.

use palisade_redact::config::RedactConfig;

#[test]
fn defaults_hold_and_extras_add_to_them() {
    let config = RedactConfig {
        extra_body_keys: vec!["ssn".into()],
        extra_query_params: vec!["session".into()],
        extra_sensitive_headers: vec!["x-session".into()],
        ..RedactConfig::default()
    };
    assert!(config.body_keys().contains("ssn") && config.body_keys().contains("password"));
    assert!(config.query_params().contains("session") && config.query_params().contains("token"));
    let headers = config.sensitive_headers().unwrap();
    assert!(headers.iter().any(|h| h == "x-session"));
    assert!(headers.iter().any(|h| h == "authorization"));
    assert!(config.scanner().is_ok());
}

#[test]
fn bad_values_are_refused() {
    let config = RedactConfig {
        extra_sensitive_headers: vec!["not a header".into()],
        api_key_prefixes: vec!["1bad".into()],
        ..RedactConfig::default()
    };
    assert!(config.sensitive_headers().is_err());
    assert!(config.scanner().is_err());
}

#[cfg(feature = "serde")]
#[test]
fn config_is_read_with_serde_and_unknown_fields_are_refused() {
    let config: RedactConfig =
        serde_json::from_str(r#"{"extra_body_keys":["ssn"],"api_key_prefixes":["acme"]}"#).unwrap();
    assert_eq!(config.extra_body_keys, vec!["ssn".to_owned()]);
    assert_eq!(config.api_key_prefixes, vec!["acme".to_owned()]);
    assert!(config.extra_query_params.is_empty());
    let default: RedactConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(default, RedactConfig::default());
    assert!(serde_json::from_str::<RedactConfig>(r#"{"extra_keys":[]}"#).is_err());
}
