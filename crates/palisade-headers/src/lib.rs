//! Security headers for Tower services: one flat layer that adds a whole
//! header set, HTTPS redirects, and `Clear-Site-Data` for logouts.
//!
//! [`SecurityHeadersLayer`] adds a header set to every response, including
//! the rejections of Palisade layers inside it (they are ordinary
//! responses). Every value is validated and rendered once at build time;
//! a request costs a few header-map insertions, and one allocation only
//! when the Content-Security-Policy carries a per-request nonce.
//!
//! ```
//! use axum::{Router, routing::get};
//! use palisade_headers::csp::{ContentSecurityPolicy, Source};
//! use palisade_headers::{CspNonce, HttpsRedirectLayer, SecurityHeaders};
//!
//! let headers = SecurityHeaders::helmet()
//!     .csp(ContentSecurityPolicy::helmet().script_src([Source::SelfOrigin, Source::Nonce]))
//!     .build()?;
//! let redirect = HttpsRedirectLayer::builder().exempt_path("/health").build()?;
//! let app: Router = Router::new()
//!     .route("/", get(|nonce: axum::Extension<CspNonce>| async move {
//!         axum::response::Html(format!("<script nonce=\"{}\">go()</script>", nonce.as_str()))
//!     }))
//!     .route("/health", get(|| async { "ok" }))
//!     .layer(redirect)
//!     .layer(headers);
//! # let _ = app;
//! # Ok::<(), palisade_core::ConfigError>(())
//! ```
//!
//! - Presets as starting points: [`SecurityHeaders::helmet`] (helmet 8's
//!   headers), [`SecurityHeaders::owasp_strict`] (the OWASP Secure Headers
//!   Project's values) and [`SecurityHeaders::api`] (JSON APIs).
//! - [`csp::ContentSecurityPolicy`]: typed directives and sources, quoted
//!   and validated; report-only mode; `report-to`.
//! - [`PermissionsPolicy`].
//! - [`CspNonce`]: 128 random bits in base64, in the request extensions for
//!   handlers and templates, and in that response's policy.
//! - [`Hsts`]: on HTTPS requests only (the URI's scheme, or
//!   `X-Forwarded-Proto` from trusted proxies); `preload` checked.
//! - Headers a handler set itself are kept unless
//!   [`override_handler_headers`](SecurityHeaders::override_handler_headers);
//!   [leaky headers](headers::LEAKY_HEADERS) (`Server`, `X-Powered-By`...)
//!   are stripped.
//! - [`HttpsRedirectLayer`]: 308 to HTTPS, exempt paths, HSTS on the HTTPS
//!   side.
//! - [`clear_site_data`] for logout responses.
//!
//! # Features
//! - `axum`: [`CspNonce`] is an axum extractor (and `Option<CspNonce>`), and
//!   axum's `ConnectInfo` is read as the peer address for trusted proxies.
//! - `serde`: [`config::SecurityHeadersConfig`], the header set from a
//!   configuration file.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod clear_site_data;
#[cfg(feature = "serde")]
pub mod config;
pub mod csp;
pub mod headers;
mod hsts;
mod layer;
mod nonce;
mod permissions;
mod redirect;

pub use clear_site_data::{CLEAR_SITE_DATA, ClearSiteData, clear_site_data};
pub use headers::{
    CrossOriginEmbedderPolicy, CrossOriginOpenerPolicy, CrossOriginResourcePolicy, FrameOptions,
    ReferrerPolicy, SecurityHeaders,
};
pub use hsts::{Hsts, ONE_YEAR};
pub use layer::{ResponseFuture, SecurityHeadersLayer, SecurityHeadersService};
pub use nonce::CspNonce;
#[cfg(feature = "axum")]
pub use nonce::MissingCspNonce;
pub use permissions::{Allowlist, PermissionsPolicy};
pub use redirect::{HttpsRedirect, HttpsRedirectBuilder, HttpsRedirectLayer, RedirectFuture};
