//! Judging calls: success, failure, or ignored.
//!
//! The [`DefaultClassifier`] understands HTTP and gRPC:
//! - a response with `grpc-status` in its headers (a Trailers-Only gRPC
//!   response) is judged by that status at once;
//! - any other gRPC response (`content-type: application/grpc*`) is judged
//!   by the `grpc-status` of its trailers, when the body ends;
//! - an HTTP response is a failure for 5xx, ignored for 4xx (the client's
//!   fault says nothing about the upstream), a success otherwise.
//!
//! gRPC codes that fail by default are the server's faults: UNKNOWN,
//! DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL, UNAVAILABLE and
//! DATA_LOSS; OK succeeds; the rest (invalid argument, not found, permission
//! denied, cancelled...) are ignored.
//!
//! ```
//! use http::StatusCode;
//! use palisade_breaker::{DefaultClassifier, Outcome};
//!
//! // A timeout layer inside the breaker answers 408: count it.
//! let classifier = DefaultClassifier::new().failure_status(StatusCode::REQUEST_TIMEOUT);
//! # let _ = classifier;
//! // Or judge by anything in the response head:
//! let custom = palisade_breaker::classify_fn(|status: StatusCode, _headers: &http::HeaderMap| {
//!     if status == StatusCode::BAD_GATEWAY { Outcome::Failure } else { Outcome::Success }
//! });
//! # let _ = custom;
//! ```

use std::fmt;

use http::{HeaderMap, HeaderValue, StatusCode};
use palisade_core::render::{GRPC_STATUS, parse_grpc_status};

use crate::machine::Outcome;

/// What a classifier makes of a response head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judgement {
    /// Decided from the head.
    Now(Outcome),
    /// Decided by the trailers (or their absence) when the body ends.
    AtTrailers,
}

/// Judges calls. Implement it for rules of your own, or use
/// [`classify_fn`] for a closure over the response head.
pub trait Classify: Send + Sync + 'static {
    /// Judges a response by its status and headers.
    fn classify_response(&self, status: StatusCode, headers: &HeaderMap) -> Judgement;

    /// Judges a response whose head said [`Judgement::AtTrailers`], when its
    /// body ends: with its trailers, or `None` when it had none.
    fn classify_trailers(&self, trailers: Option<&HeaderMap>) -> Outcome {
        let _ = trailers;
        Outcome::Success
    }

    /// Judges a call whose inner service or body returned an error
    /// (default: a failure).
    fn classify_error(&self) -> Outcome {
        Outcome::Failure
    }
}

/// HTTP status classes and gRPC status codes; see the module docs.
#[derive(Clone, Debug)]
pub struct DefaultClassifier {
    /// Bit `n` set: gRPC code `n` fails.
    grpc_failures: u32,
    /// Statuses below 500 that fail anyway.
    extra_failures: Vec<StatusCode>,
    /// Statuses of 500 and above that do not.
    not_failures: Vec<StatusCode>,
}

/// gRPC codes that are the server's fault: UNKNOWN (2), DEADLINE_EXCEEDED
/// (4), RESOURCE_EXHAUSTED (8), INTERNAL (13), UNAVAILABLE (14), DATA_LOSS (15).
const DEFAULT_GRPC_FAILURES: u32 = 1 << 2 | 1 << 4 | 1 << 8 | 1 << 13 | 1 << 14 | 1 << 15;

impl Default for DefaultClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl DefaultClassifier {
    /// 5xx and the server's gRPC faults fail; 4xx and the client's gRPC
    /// errors are ignored.
    pub fn new() -> Self {
        Self {
            grpc_failures: DEFAULT_GRPC_FAILURES,
            extra_failures: Vec::new(),
            not_failures: Vec::new(),
        }
    }

    /// Counts `status` as a failure too (for example 408 from a timeout
    /// layer inside the breaker, or 429 from an upstream that sheds load).
    pub fn failure_status(mut self, status: StatusCode) -> Self {
        self.not_failures.retain(|s| *s != status);
        if !status.is_server_error() {
            self.extra_failures.push(status);
        }
        self
    }

    /// Does not count `status` as a failure (for example 501 Not
    /// Implemented), ignoring it instead.
    pub fn ignore_status(mut self, status: StatusCode) -> Self {
        self.extra_failures.retain(|s| *s != status);
        if status.is_server_error() {
            self.not_failures.push(status);
        }
        self
    }

    /// Which gRPC codes fail (replacing the default list); codes above 16
    /// are left out.
    pub fn grpc_failure_codes(mut self, codes: &[u8]) -> Self {
        self.grpc_failures = codes
            .iter()
            .filter(|&&c| c <= 16)
            .fold(0, |bits, &c| bits | 1 << c);
        self
    }

    #[inline]
    fn grpc(&self, value: &HeaderValue) -> Outcome {
        match parse_grpc_status(value) {
            Some(0) => Outcome::Success,
            Some(code) if code <= 16 && self.grpc_failures & (1 << code) != 0 => Outcome::Failure,
            Some(code) if code <= 16 => Outcome::Ignored,
            // Unreadable or unknown: the gRPC spec reads it as UNKNOWN.
            _ if self.grpc_failures & (1 << 2) != 0 => Outcome::Failure,
            _ => Outcome::Ignored,
        }
    }
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

impl Classify for DefaultClassifier {
    #[inline]
    fn classify_response(&self, status: StatusCode, headers: &HeaderMap) -> Judgement {
        if let Some(grpc_status) = headers.get(&GRPC_STATUS) {
            return Judgement::Now(self.grpc(grpc_status));
        }
        if status == StatusCode::OK && is_grpc(headers) {
            return Judgement::AtTrailers;
        }
        let outcome = if status.is_server_error() {
            if self.not_failures.contains(&status) {
                Outcome::Ignored
            } else {
                Outcome::Failure
            }
        } else if self.extra_failures.contains(&status) {
            Outcome::Failure
        } else if status.is_client_error() {
            Outcome::Ignored
        } else {
            Outcome::Success
        };
        Judgement::Now(outcome)
    }

    fn classify_trailers(&self, trailers: Option<&HeaderMap>) -> Outcome {
        match trailers.and_then(|t| t.get(&GRPC_STATUS)) {
            Some(value) => self.grpc(value),
            // A gRPC body that ends without a status: the call broke off.
            None => Outcome::Failure,
        }
    }
}

/// A classifier from a closure over the response head.
pub fn classify_fn<F>(f: F) -> ClassifyFn<F>
where
    F: Fn(StatusCode, &HeaderMap) -> Outcome + Send + Sync + 'static,
{
    ClassifyFn(f)
}

/// See [`classify_fn`].
#[derive(Clone)]
pub struct ClassifyFn<F>(F);

impl<F> fmt::Debug for ClassifyFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClassifyFn")
    }
}

impl<F> Classify for ClassifyFn<F>
where
    F: Fn(StatusCode, &HeaderMap) -> Outcome + Send + Sync + 'static,
{
    fn classify_response(&self, status: StatusCode, headers: &HeaderMap) -> Judgement {
        Judgement::Now((self.0)(status, headers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grpc_headers(status: Option<&'static str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        if let Some(status) = status {
            headers.insert("grpc-status", HeaderValue::from_static(status));
        }
        headers
    }

    #[test]
    fn http_statuses_fail_on_5xx_and_are_ignored_on_4xx() {
        let c = DefaultClassifier::new();
        let empty = HeaderMap::new();
        assert_eq!(
            c.classify_response(StatusCode::OK, &empty),
            Judgement::Now(Outcome::Success)
        );
        assert_eq!(
            c.classify_response(StatusCode::NOT_FOUND, &empty),
            Judgement::Now(Outcome::Ignored)
        );
        assert_eq!(
            c.classify_response(StatusCode::BAD_GATEWAY, &empty),
            Judgement::Now(Outcome::Failure)
        );
        let c = c
            .failure_status(StatusCode::REQUEST_TIMEOUT)
            .ignore_status(StatusCode::NOT_IMPLEMENTED);
        assert_eq!(
            c.classify_response(StatusCode::REQUEST_TIMEOUT, &empty),
            Judgement::Now(Outcome::Failure)
        );
        assert_eq!(
            c.classify_response(StatusCode::NOT_IMPLEMENTED, &empty),
            Judgement::Now(Outcome::Ignored)
        );
    }

    #[test]
    fn grpc_trailers_only_responses_are_judged_from_the_headers() {
        let c = DefaultClassifier::new();
        assert_eq!(
            c.classify_response(StatusCode::OK, &grpc_headers(Some("14"))),
            Judgement::Now(Outcome::Failure)
        );
        assert_eq!(
            c.classify_response(StatusCode::OK, &grpc_headers(Some("5"))),
            Judgement::Now(Outcome::Ignored)
        );
        assert_eq!(
            c.classify_response(StatusCode::OK, &grpc_headers(Some("0"))),
            Judgement::Now(Outcome::Success)
        );
        assert_eq!(
            c.classify_response(StatusCode::OK, &grpc_headers(Some("x1"))),
            Judgement::Now(Outcome::Failure)
        );
    }

    #[test]
    fn grpc_streams_are_judged_at_their_trailers() {
        let c = DefaultClassifier::new();
        assert_eq!(
            c.classify_response(StatusCode::OK, &grpc_headers(None)),
            Judgement::AtTrailers
        );
        let trailers = {
            let mut t = HeaderMap::new();
            t.insert("grpc-status", HeaderValue::from_static("13"));
            t
        };
        assert_eq!(c.classify_trailers(Some(&trailers)), Outcome::Failure);
        assert_eq!(c.classify_trailers(None), Outcome::Failure);
        let c = c.grpc_failure_codes(&[14]);
        assert_eq!(c.classify_trailers(Some(&trailers)), Outcome::Ignored);
    }

    #[test]
    fn grpc_status_parsing_refuses_non_numbers() {
        assert_eq!(parse_grpc_status(&HeaderValue::from_static("14")), Some(14));
        assert_eq!(parse_grpc_status(&HeaderValue::from_static("")), None);
        assert_eq!(parse_grpc_status(&HeaderValue::from_static("1a")), None);
        assert_eq!(parse_grpc_status(&HeaderValue::from_static("1234")), None);
    }
}
