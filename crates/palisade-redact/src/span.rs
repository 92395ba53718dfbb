//! [`RedactingMakeSpan`]: a [`MakeSpan`] for tower-http's `TraceLayer` whose
//! spans carry the method, the [redacted URI](RedactedUri) and the version,
//! and optionally the headers with secret ones redacted, so request logs
//! never carry a token.

use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, Request};
use tower_http::trace::MakeSpan;
use tracing::{Level, Span};

use crate::headers::default_sensitive_headers;
use crate::json::REDACTED;
use crate::names::SecretNames;
use crate::uri::RedactedUri;

/// Makes a `request` span with `method`, `uri` (redacted) and `version`
/// fields, and `headers` (secret ones redacted) if asked for.
///
/// ```
/// use palisade_redact::RedactingMakeSpan;
/// use tower_http::trace::TraceLayer;
///
/// let trace = TraceLayer::new_for_http().make_span_with(RedactingMakeSpan::new());
/// # let _ = trace;
/// ```
#[derive(Clone, Debug)]
pub struct RedactingMakeSpan {
    level: Level,
    include_headers: bool,
    params: SecretNames,
    headers: Arc<[HeaderName]>,
}

impl Default for RedactingMakeSpan {
    fn default() -> Self {
        Self::new()
    }
}

impl RedactingMakeSpan {
    /// Spans at `DEBUG` (as tower-http's default), without headers,
    /// redacting the [default parameters](crate::DEFAULT_QUERY_PARAMS).
    pub fn new() -> Self {
        Self {
            level: Level::DEBUG,
            include_headers: false,
            params: SecretNames::default_query_params(),
            headers: default_sensitive_headers().into(),
        }
    }

    /// The level of the spans.
    pub fn level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }

    /// Records the request headers too: values of headers marked sensitive
    /// (see [`SensitiveHeadersLayer`](crate::SensitiveHeadersLayer)) or in
    /// the [default list](default_sensitive_headers) read `***REDACTED***`.
    pub fn include_headers(mut self, include: bool) -> Self {
        self.include_headers = include;
        self
    }

    /// Redacts these query parameters instead of the defaults.
    pub fn query_params(mut self, params: SecretNames) -> Self {
        self.params = params;
        self
    }

    /// Also redacts these headers when headers are recorded.
    pub fn sensitive_headers<I: IntoIterator<Item = HeaderName>>(mut self, names: I) -> Self {
        let mut all = self.headers.to_vec();
        all.extend(names);
        self.headers = all.into();
        self
    }
}

macro_rules! make_span {
    ($level:expr, $request:expr, $uri:expr, $headers:expr) => {
        match $level {
            Level::ERROR => tracing::span!(Level::ERROR, "request", method = %$request.method(), uri = %$uri, version = ?$request.version(), headers = $headers),
            Level::WARN => tracing::span!(Level::WARN, "request", method = %$request.method(), uri = %$uri, version = ?$request.version(), headers = $headers),
            Level::INFO => tracing::span!(Level::INFO, "request", method = %$request.method(), uri = %$uri, version = ?$request.version(), headers = $headers),
            Level::DEBUG => tracing::span!(Level::DEBUG, "request", method = %$request.method(), uri = %$uri, version = ?$request.version(), headers = $headers),
            Level::TRACE => tracing::span!(Level::TRACE, "request", method = %$request.method(), uri = %$uri, version = ?$request.version(), headers = $headers),
        }
    };
}

impl<B> MakeSpan<B> for RedactingMakeSpan {
    fn make_span(&mut self, request: &Request<B>) -> Span {
        let uri = RedactedUri::with_params(request.uri(), &self.params);
        if self.include_headers {
            let headers = RedactedHeaders {
                headers: request.headers(),
                sensitive: &self.headers,
            };
            make_span!(self.level, request, uri, tracing::field::debug(headers))
        } else {
            make_span!(self.level, request, uri, tracing::field::Empty)
        }
    }
}

/// Debug-prints headers with the values of sensitive ones redacted.
struct RedactedHeaders<'a> {
    headers: &'a HeaderMap,
    sensitive: &'a [HeaderName],
}

impl fmt::Debug for RedactedHeaders<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (name, value) in self.headers {
            if value.is_sensitive() || self.sensitive.contains(name) {
                map.entry(name, &format_args!("{REDACTED}"));
            } else {
                map.entry(name, value);
            }
        }
        map.finish()
    }
}
