#![allow(clippy::expect_used, clippy::unwrap_used)]
//! `RedactedUri`: secret query parameters and passwords in authorities.

use http::Uri;
use palisade_redact::{RedactedUri, SecretNames};

fn show(uri: &str) -> String {
    RedactedUri::new(&uri.parse::<Uri>().unwrap()).to_string()
}

#[test]
fn every_default_parameter_is_redacted_and_others_kept() {
    assert_eq!(
        show(
            "/p?token=a&access_token=b&api_key=c&key=d&password=e&secret=f&code=g&signature=h&page=2"
        ),
        "/p?token=***REDACTED***&access_token=***REDACTED***&api_key=***REDACTED***&key=***REDACTED***&password=***REDACTED***&secret=***REDACTED***&code=***REDACTED***&signature=***REDACTED***&page=2"
    );
}

#[test]
fn names_match_without_case_separators_or_percent_encoding() {
    assert_eq!(
        show("/p?Access-Token=a&ACCESSTOKEN=b&acc%65ss_token=c&X-Amz-Signature=d&tokens=e"),
        "/p?Access-Token=***REDACTED***&ACCESSTOKEN=***REDACTED***&acc%65ss_token=***REDACTED***&X-Amz-Signature=***REDACTED***&tokens=e"
    );
}

#[test]
fn odd_queries_are_written_as_they_are() {
    assert_eq!(show("/p?token"), "/p?token");
    assert_eq!(show("/p?&&token=&x"), "/p?&&token=***REDACTED***&x");
    assert_eq!(show("/p?=token"), "/p?=token");
    assert_eq!(show("/p"), "/p");
    assert_eq!(show("/p?"), "/p?");
}

#[test]
fn absolute_uris_keep_scheme_and_host_and_lose_passwords() {
    assert_eq!(
        show("https://user:hunter2@example.com:8443/cb?code=x&state=y"),
        "https://user:***REDACTED***@example.com:8443/cb?code=***REDACTED***&state=y"
    );
    assert_eq!(
        show("https://example.com/cb?state=y"),
        "https://example.com/cb?state=y"
    );
}

#[test]
fn configured_parameters_replace_the_defaults() {
    let params = SecretNames::new(["session"]);
    let uri: Uri = "/p?session=s&token=t".parse().unwrap();
    assert_eq!(
        RedactedUri::with_params(&uri, &params).to_string(),
        "/p?session=***REDACTED***&token=t"
    );
}
