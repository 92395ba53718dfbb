//! Why a request is refused, with the safe public detail and the headers the
//! refusal needs.
//!
//! A [`Rejection`] is what every Palisade layer produces when it refuses a
//! request. It carries a [`RejectionKind`] (which fixes the HTTP status and
//! the gRPC code), an optional public detail, `Retry-After`, any extra headers
//! (`WWW-Authenticate`, `RateLimit`, `RateLimit-Policy`) and extension
//! members for the problem+json body. Internal detail (which check failed and
//! why) belongs in tracing, never here: everything in a `Rejection` reaches
//! the client.
//!
//! Turning a rejection into a response is the job of the
//! [renderer](crate::render).
//!
//! ```
//! use palisade_core::{Rejection, RejectionKind};
//! use std::time::Duration;
//!
//! let rejection = Rejection::rate_limited(Duration::from_millis(1200))
//!     .with_detail("Too many requests for this API key.");
//! assert_eq!(rejection.kind(), RejectionKind::RateLimited);
//! assert_eq!(rejection.retry_after_secs(), Some(2)); // rounded up
//! ```

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue, WWW_AUTHENTICATE};
use http::{HeaderMap, StatusCode};

/// The kind of refusal; it fixes the HTTP status and the gRPC status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum RejectionKind {
    /// The request is malformed (400 / INVALID_ARGUMENT).
    BadRequest,
    /// No valid credential (401 + `WWW-Authenticate` / UNAUTHENTICATED).
    Unauthenticated,
    /// Authenticated but not allowed (403 / PERMISSION_DENIED).
    Forbidden,
    /// Nothing is there (404 / NOT_FOUND).
    NotFound,
    /// A rate limit is exhausted (429 + `Retry-After` / RESOURCE_EXHAUSTED).
    RateLimited,
    /// Load is shed or a concurrency limit is full (503 / UNAVAILABLE).
    Overloaded,
    /// A circuit breaker is open (503 / UNAVAILABLE).
    CircuitOpen,
    /// The request body is too large (413 / RESOURCE_EXHAUSTED).
    PayloadTooLarge,
    /// The request headers are too large (431 / RESOURCE_EXHAUSTED).
    HeadersTooLarge,
    /// A dependency the layer needs is not ready, such as signing keys not
    /// yet loaded (503 / UNAVAILABLE).
    Unavailable,
    /// A per-client concurrency limit is full (429 / RESOURCE_EXHAUSTED).
    TooManyConcurrent,
}

/// gRPC status codes used by rejections (the numbering of the gRPC spec).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum GrpcCode {
    /// 3
    InvalidArgument = 3,
    /// 5
    NotFound = 5,
    /// 7
    PermissionDenied = 7,
    /// 8
    ResourceExhausted = 8,
    /// 14
    Unavailable = 14,
    /// 16
    Unauthenticated = 16,
}

impl GrpcCode {
    /// The code's number.
    #[inline]
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// The code's number as a header value (`grpc-status`).
    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            GrpcCode::InvalidArgument => "3",
            GrpcCode::NotFound => "5",
            GrpcCode::PermissionDenied => "7",
            GrpcCode::ResourceExhausted => "8",
            GrpcCode::Unavailable => "14",
            GrpcCode::Unauthenticated => "16",
        })
    }
}

impl RejectionKind {
    /// The HTTP status of this kind.
    pub const fn status(self) -> StatusCode {
        match self {
            RejectionKind::BadRequest => StatusCode::BAD_REQUEST,
            RejectionKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            RejectionKind::Forbidden => StatusCode::FORBIDDEN,
            RejectionKind::NotFound => StatusCode::NOT_FOUND,
            RejectionKind::RateLimited | RejectionKind::TooManyConcurrent => {
                StatusCode::TOO_MANY_REQUESTS
            }
            RejectionKind::Overloaded | RejectionKind::CircuitOpen | RejectionKind::Unavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            RejectionKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            RejectionKind::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        }
    }

    /// The gRPC status code of this kind.
    pub const fn grpc_code(self) -> GrpcCode {
        match self {
            RejectionKind::BadRequest => GrpcCode::InvalidArgument,
            RejectionKind::Unauthenticated => GrpcCode::Unauthenticated,
            RejectionKind::Forbidden => GrpcCode::PermissionDenied,
            RejectionKind::NotFound => GrpcCode::NotFound,
            RejectionKind::RateLimited
            | RejectionKind::TooManyConcurrent
            | RejectionKind::PayloadTooLarge
            | RejectionKind::HeadersTooLarge => GrpcCode::ResourceExhausted,
            RejectionKind::Overloaded | RejectionKind::CircuitOpen | RejectionKind::Unavailable => {
                GrpcCode::Unavailable
            }
        }
    }

    /// A short, human-readable summary (the problem's `title`).
    pub const fn title(self) -> &'static str {
        match self {
            RejectionKind::BadRequest => "Bad Request",
            RejectionKind::Unauthenticated => "Unauthorized",
            RejectionKind::Forbidden => "Forbidden",
            RejectionKind::NotFound => "Not Found",
            RejectionKind::RateLimited => "Too Many Requests",
            RejectionKind::TooManyConcurrent => "Too Many Concurrent Requests",
            RejectionKind::Overloaded => "Service Overloaded",
            RejectionKind::CircuitOpen => "Service Unavailable",
            RejectionKind::PayloadTooLarge => "Payload Too Large",
            RejectionKind::HeadersTooLarge => "Request Header Fields Too Large",
            RejectionKind::Unavailable => "Service Unavailable",
        }
    }

    /// The problem type's name, appended to the renderer's type base
    /// (`quota-exceeded` for rate limits).
    pub const fn problem_type(self) -> &'static str {
        match self {
            RejectionKind::BadRequest => "bad-request",
            RejectionKind::Unauthenticated => "unauthenticated",
            RejectionKind::Forbidden => "forbidden",
            RejectionKind::NotFound => "not-found",
            RejectionKind::RateLimited => "quota-exceeded",
            RejectionKind::TooManyConcurrent => "too-many-concurrent-requests",
            RejectionKind::Overloaded => "overloaded",
            RejectionKind::CircuitOpen => "circuit-open",
            RejectionKind::PayloadTooLarge => "payload-too-large",
            RejectionKind::HeadersTooLarge => "headers-too-large",
            RejectionKind::Unavailable => "unavailable",
        }
    }

    /// A name for logs and audit events (`rate_limited`).
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectionKind::BadRequest => "bad_request",
            RejectionKind::Unauthenticated => "unauthenticated",
            RejectionKind::Forbidden => "forbidden",
            RejectionKind::NotFound => "not_found",
            RejectionKind::RateLimited => "rate_limited",
            RejectionKind::TooManyConcurrent => "too_many_concurrent",
            RejectionKind::Overloaded => "overloaded",
            RejectionKind::CircuitOpen => "circuit_open",
            RejectionKind::PayloadTooLarge => "payload_too_large",
            RejectionKind::HeadersTooLarge => "headers_too_large",
            RejectionKind::Unavailable => "unavailable",
        }
    }
}

impl fmt::Display for RejectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused request: what the client is told, and nothing more.
///
/// Small (under 100 bytes) so that `Result<_, Rejection>` stays cheap; the
/// rarely used parts (extra headers, problem extension members, a replaced
/// problem type) live behind one box, allocated only when set.
#[derive(Clone, Debug)]
pub struct Rejection {
    kind: RejectionKind,
    retry_after: Option<Duration>,
    detail: Option<Cow<'static, str>>,
    www_authenticate: Option<HeaderValue>,
    extra: Option<Box<Extra>>,
}

#[derive(Clone, Debug, Default)]
struct Extra {
    problem_type: Option<Cow<'static, str>>,
    headers: HeaderMap,
    extensions: Vec<(Cow<'static, str>, serde_json::Value)>,
}

impl Rejection {
    /// A rejection of the given kind, with no detail.
    pub fn new(kind: RejectionKind) -> Self {
        Self {
            kind,
            retry_after: None,
            detail: None,
            www_authenticate: None,
            extra: None,
        }
    }

    fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// 400: the request is malformed.
    pub fn bad_request() -> Self {
        Self::new(RejectionKind::BadRequest)
    }

    /// 401 with `WWW-Authenticate: Bearer` (no error code: RFC 6750 says a
    /// request without credentials gets none). Replace the challenge with
    /// [`with_challenge`](Self::with_challenge).
    pub fn unauthenticated() -> Self {
        Self::new(RejectionKind::Unauthenticated)
            .with_header(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
    }

    /// 403 with `WWW-Authenticate: Bearer error="insufficient_scope"`.
    pub fn forbidden() -> Self {
        Self::new(RejectionKind::Forbidden).with_header(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"insufficient_scope\""),
        )
    }

    /// 404.
    pub fn not_found() -> Self {
        Self::new(RejectionKind::NotFound)
    }

    /// 429 with `Retry-After`.
    pub fn rate_limited(retry_after: Duration) -> Self {
        Self::new(RejectionKind::RateLimited).with_retry_after(retry_after)
    }

    /// 429 for a full per-client concurrency limit.
    pub fn too_many_concurrent() -> Self {
        Self::new(RejectionKind::TooManyConcurrent)
    }

    /// 503 with `Retry-After` for shed load.
    pub fn overloaded(retry_after: Duration) -> Self {
        Self::new(RejectionKind::Overloaded).with_retry_after(retry_after)
    }

    /// 503 with `Retry-After` for an open circuit.
    pub fn circuit_open(retry_after: Duration) -> Self {
        Self::new(RejectionKind::CircuitOpen).with_retry_after(retry_after)
    }

    /// 413.
    pub fn payload_too_large() -> Self {
        Self::new(RejectionKind::PayloadTooLarge)
    }

    /// 431.
    pub fn headers_too_large() -> Self {
        Self::new(RejectionKind::HeadersTooLarge)
    }

    /// 503 with `Retry-After`: something the layer needs is not ready yet.
    pub fn unavailable(retry_after: Duration) -> Self {
        Self::new(RejectionKind::Unavailable).with_retry_after(retry_after)
    }

    /// Sets the public detail shown to the client (problem `detail`, gRPC
    /// `grpc-message`). Never put internal reasons or secrets here.
    pub fn with_detail(mut self, detail: impl Into<Cow<'static, str>>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Replaces the problem type's name (by default the kind's own, such as
    /// `quota-exceeded`).
    pub fn with_problem_type(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.extra_mut().problem_type = Some(name.into());
        self
    }

    /// Sets when the client may retry. Rendered as whole seconds, rounded up,
    /// and never less than 1.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// Adds a response header (`RateLimit`, `RateLimit-Policy`, ...). A header
    /// of the same name set earlier is replaced.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        if name == WWW_AUTHENTICATE {
            self.www_authenticate = Some(value);
        } else {
            self.extra_mut().headers.insert(name, value);
        }
        self
    }

    /// The extra response headers, for code that writes several fields at
    /// once into a header map (the rate limiter's fields are written by the
    /// same code on refusals and on allowed responses). A challenge belongs
    /// in [`with_challenge`](Self::with_challenge), not here.
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.extra_mut().headers
    }

    /// Appends a response header, keeping any earlier value of the same name
    /// (a second `WWW-Authenticate` challenge, for example).
    pub fn append_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        if name == WWW_AUTHENTICATE && self.www_authenticate.is_none() {
            self.www_authenticate = Some(value);
        } else {
            self.extra_mut().headers.append(name, value);
        }
        self
    }

    /// Sets the `WWW-Authenticate` challenge.
    pub fn with_challenge(self, challenge: &Challenge) -> Self {
        self.with_header(WWW_AUTHENTICATE, challenge.to_header_value())
    }

    /// Adds an extension member to the problem+json body (RFC 9457 §3.2),
    /// such as the list of violated rate-limit policies. Members named like
    /// the standard ones (`type`, `title`, `status`, `detail`, `instance`)
    /// are ignored by the default renderer.
    pub fn with_extension(
        mut self,
        name: impl Into<Cow<'static, str>>,
        value: serde_json::Value,
    ) -> Self {
        self.extra_mut().extensions.push((name.into(), value));
        self
    }

    /// The kind of refusal.
    #[inline]
    pub fn kind(&self) -> RejectionKind {
        self.kind
    }

    /// The HTTP status.
    #[inline]
    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    /// The problem type's name.
    pub fn problem_type(&self) -> &str {
        self.extra
            .as_ref()
            .and_then(|extra| extra.problem_type.as_deref())
            .unwrap_or(self.kind.problem_type())
    }

    /// The public detail, when set.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// When the client may retry, as set.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// `Retry-After` in whole seconds: rounded up, at least 1.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after.map(retry_after_secs)
    }

    /// A response header the rejection sets (`WWW-Authenticate`,
    /// `RateLimit`, ...).
    pub fn header(&self, name: &str) -> Option<&HeaderValue> {
        if name.eq_ignore_ascii_case(WWW_AUTHENTICATE.as_str()) {
            return self.www_authenticate.as_ref();
        }
        self.extra.as_ref()?.headers.get(name)
    }

    /// The problem+json extension members.
    pub fn extensions(&self) -> &[(Cow<'static, str>, serde_json::Value)] {
        self.extra
            .as_ref()
            .map_or(&[], |extra| extra.extensions.as_slice())
    }

    /// Takes the headers and extension members out, for a renderer that
    /// owns the rejection.
    pub fn into_parts(self) -> RejectionParts {
        let Extra {
            problem_type,
            mut headers,
            extensions,
        } = self.extra.map(|extra| *extra).unwrap_or_default();
        if let Some(challenge) = self.www_authenticate {
            // The main challenge first, then any appended ones.
            let others: Vec<HeaderValue> = match headers.entry(WWW_AUTHENTICATE) {
                http::header::Entry::Occupied(entry) => entry.remove_entry_mult().1.collect(),
                http::header::Entry::Vacant(_) => Vec::new(),
            };
            headers.append(WWW_AUTHENTICATE, challenge);
            for other in others {
                headers.append(WWW_AUTHENTICATE, other);
            }
        }
        RejectionParts {
            kind: self.kind,
            problem_type,
            detail: self.detail,
            retry_after: self.retry_after,
            headers,
            extensions,
        }
    }
}

/// A [`Rejection`] taken apart by [`Rejection::into_parts`].
#[derive(Debug)]
#[non_exhaustive]
pub struct RejectionParts {
    /// The kind.
    pub kind: RejectionKind,
    /// The problem type's name, when replaced.
    pub problem_type: Option<Cow<'static, str>>,
    /// The public detail.
    pub detail: Option<Cow<'static, str>>,
    /// When the client may retry.
    pub retry_after: Option<Duration>,
    /// Extra response headers.
    pub headers: HeaderMap,
    /// problem+json extension members.
    pub extensions: Vec<(Cow<'static, str>, serde_json::Value)>,
}

/// Whole seconds for `Retry-After`: rounded up, and never 0 (a client told
/// "retry after 0 seconds" retries at once and is refused again).
pub fn retry_after_secs(after: Duration) -> u64 {
    let secs = after
        .as_secs()
        .saturating_add(u64::from(after.subsec_nanos() > 0));
    secs.max(1)
}

/// An RFC 6750 `WWW-Authenticate` challenge.
///
/// ```
/// use palisade_core::rejection::{BearerError, Challenge};
///
/// let challenge = Challenge::bearer()
///     .realm("api")
///     .error(BearerError::InsufficientScope)
///     .scope("scans:write");
/// assert_eq!(
///     challenge.to_header_value(),
///     r#"Bearer realm="api", error="insufficient_scope", scope="scans:write""#
/// );
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Challenge {
    scheme: Cow<'static, str>,
    realm: Option<String>,
    error: Option<BearerError>,
    error_description: Option<String>,
    scope: Option<String>,
}

/// The error codes of RFC 6750 §3.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BearerError {
    /// The request is malformed (for example, two credentials).
    InvalidRequest,
    /// The token is expired, revoked, malformed or otherwise invalid.
    InvalidToken,
    /// The token lacks a required scope.
    InsufficientScope,
}

impl BearerError {
    /// The code as written in the header.
    pub const fn as_str(self) -> &'static str {
        match self {
            BearerError::InvalidRequest => "invalid_request",
            BearerError::InvalidToken => "invalid_token",
            BearerError::InsufficientScope => "insufficient_scope",
        }
    }
}

impl Challenge {
    /// A `Bearer` challenge.
    pub fn bearer() -> Self {
        Self::scheme("Bearer")
    }

    /// A challenge of another scheme (for example `ApiKey`).
    pub fn scheme(scheme: impl Into<Cow<'static, str>>) -> Self {
        Self {
            scheme: scheme.into(),
            ..Self::default()
        }
    }

    /// Sets the realm.
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = Some(realm.into());
        self
    }

    /// Sets the error code.
    pub fn error(mut self, error: BearerError) -> Self {
        self.error = Some(error);
        self
    }

    /// Sets a public error description. Keep it generic: it reaches the client.
    pub fn error_description(mut self, description: impl Into<String>) -> Self {
        self.error_description = Some(description.into());
        self
    }

    /// Sets the scope the resource needs.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// The header value. Characters that cannot appear in a quoted string
    /// (quotes, backslashes, controls, non-ASCII) are dropped, so any input
    /// makes a valid header.
    pub fn to_header_value(&self) -> HeaderValue {
        let mut out = String::with_capacity(64);
        out.extend(
            self.scheme
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || "-._~+/".contains(*c)),
        );
        let mut params = 0;
        let mut param = |out: &mut String, name: &str, value: &str| {
            out.push_str(if params == 0 { " " } else { ", " });
            params += 1;
            out.push_str(name);
            out.push_str("=\"");
            out.extend(
                value
                    .chars()
                    .filter(|c| c.is_ascii() && !c.is_ascii_control() && *c != '"' && *c != '\\'),
            );
            out.push('"');
        };
        if let Some(realm) = &self.realm {
            param(&mut out, "realm", realm);
        }
        if let Some(error) = self.error {
            param(&mut out, "error", error.as_str());
        }
        if let Some(description) = &self.error_description {
            param(&mut out, "error_description", description);
        }
        if let Some(scope) = &self.scope {
            param(&mut out, "scope", scope);
        }
        // Only visible ASCII and spaces remain, which HeaderValue accepts;
        // fall back to the bare scheme rather than panic.
        HeaderValue::try_from(out).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(999)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(60)), 60);
        assert_eq!(retry_after_secs(Duration::MAX), u64::MAX);
    }

    #[test]
    fn every_kind_maps_to_the_table_of_the_design() {
        use RejectionKind::*;
        let table = [
            (BadRequest, 400, 3),
            (Unauthenticated, 401, 16),
            (Forbidden, 403, 7),
            (NotFound, 404, 5),
            (RateLimited, 429, 8),
            (TooManyConcurrent, 429, 8),
            (Overloaded, 503, 14),
            (CircuitOpen, 503, 14),
            (PayloadTooLarge, 413, 8),
            (HeadersTooLarge, 431, 8),
            (Unavailable, 503, 14),
        ];
        for (kind, status, grpc) in table {
            assert_eq!(kind.status().as_u16(), status, "{kind}");
            assert_eq!(kind.grpc_code().as_u8(), grpc, "{kind}");
            assert_eq!(
                kind.grpc_code().header_value().to_str().ok(),
                Some(grpc.to_string().as_str())
            );
        }
    }

    #[test]
    fn challenge_drops_characters_that_would_break_the_header() {
        let value = Challenge::bearer()
            .realm("a\"b\\c\r\nd\u{e9}")
            .error(BearerError::InvalidToken)
            .to_header_value();
        assert_eq!(value, r#"Bearer realm="abcd", error="invalid_token""#);
    }

    #[test]
    fn default_challenges_follow_rfc_6750() {
        assert_eq!(
            Rejection::unauthenticated().header("WWW-Authenticate"),
            Some(&HeaderValue::from_static("Bearer"))
        );
        assert_eq!(
            Rejection::forbidden().header("www-authenticate"),
            Some(&HeaderValue::from_static(
                r#"Bearer error="insufficient_scope""#
            ))
        );
    }

    #[test]
    fn appended_challenges_follow_the_main_one() {
        let parts = Rejection::unauthenticated()
            .append_header(WWW_AUTHENTICATE, HeaderValue::from_static("ApiKey"))
            .into_parts();
        let challenges: Vec<_> = parts.headers.get_all(WWW_AUTHENTICATE).iter().collect();
        assert_eq!(challenges, ["Bearer", "ApiKey"]);
    }

    #[test]
    fn a_rejection_stays_small() {
        let size = std::mem::size_of::<Rejection>();
        assert!(size <= 104, "{size} bytes");
    }
}
