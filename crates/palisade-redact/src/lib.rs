//! Redaction for Tower services: secrets kept out of logs, traces and
//! response bodies.
//!
//! - [`SensitiveHeadersLayer`]: marks `Authorization`, `Proxy-Authorization`,
//!   `Cookie`, `Set-Cookie`, `X-API-Key` (and any header you add) sensitive
//!   on requests and responses, so `Debug` prints `Sensitive` and HPACK
//!   never indexes them.
//! - [`RedactedUri`]: displays a URI with the values of secret query
//!   parameters (`token`, `access_token`, `api_key`, `code`, `signature`...)
//!   as `***REDACTED***`; [`RedactingMakeSpan`] (feature `trace`, on by
//!   default) puts it in tower-http `TraceLayer` spans.
//! - [`JsonRedactor`]: a streaming, chunk-boundary-safe redactor of the
//!   values of secret keys in JSON, NDJSON and server-sent events, and
//!   [`RedactBodyLayer`], which applies it to response bodies without
//!   buffering them.
//! - [`SecretScanner`](scan::SecretScanner): finds credentials by format
//!   (Palisade API keys and GitHub tokens with their checksums verified, AWS
//!   access key ids, Slack tokens, Stripe secret keys, JWTs, PEM private
//!   keys) behind a keyword prefilter; [`ScanBodyLayer`](scan_body::ScanBodyLayer)
//!   redacts them from response bodies or refuses the response with a 500.
//! - [`LineRedactor`](log::LineRedactor) and, with the `fmt` feature,
//!   [`RedactingMakeWriter`](log::RedactingMakeWriter): every line a
//!   `tracing-subscriber` formatter writes, with configured fields and
//!   secrets by format redacted.
//!
//! # Example
//!
//! ```
//! use palisade_redact::{RedactBodyLayer, RedactingMakeSpan, SensitiveHeadersLayer};
//! use tower::ServiceBuilder;
//! use tower_http::trace::TraceLayer;
//!
//! let stack = ServiceBuilder::new()
//!     // Outermost: headers are marked before anything logs them.
//!     .layer(SensitiveHeadersLayer::new())
//!     .layer(TraceLayer::new_for_http().make_span_with(RedactingMakeSpan::new()))
//!     .layer(RedactBodyLayer::new());
//! # let _ = stack;
//! ```
//!
//! Names (JSON keys, query parameters) are compared as [`SecretNames`]
//! compares them: ASCII case folded, `-` and `_` ignored.
//!
//! # Features
//! - `trace` (default): [`RedactingMakeSpan`] for tower-http's `TraceLayer`.
//! - `fmt`: [`RedactingMakeWriter`](log::RedactingMakeWriter) for
//!   `tracing-subscriber`.
//! - `serde`: deserialize [`RedactConfig`](config::RedactConfig).

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod body;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod headers;
pub mod json;
pub mod log;
mod names;
pub mod scan;
pub mod scan_body;
#[cfg(feature = "trace")]
pub mod span;
pub mod uri;

pub use body::{RedactBodyLayer, RedactedBody};
pub use headers::{SensitiveHeadersLayer, default_sensitive_headers};
pub use json::{Framing, JsonRedactor, Outcome, REDACTED};
pub use names::{DEFAULT_BODY_KEYS, DEFAULT_QUERY_PARAMS, SecretNames};
#[cfg(feature = "trace")]
pub use span::RedactingMakeSpan;
pub use uri::RedactedUri;
