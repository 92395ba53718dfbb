//! Turning a [`Rejection`] into a response: one renderer for every layer,
//! replaceable once for the whole stack.
//!
//! - A gRPC request (`content-type: application/grpc*`) gets a Trailers-Only
//!   response: HTTP 200, `content-type: application/grpc`, `grpc-status` and a
//!   percent-encoded `grpc-message`, no body.
//! - Any other request gets the rejection's HTTP status and an RFC 9457
//!   `application/problem+json` body, with `Cache-Control: no-store`.
//!
//! Both carry the rejection's headers and `Retry-After` (whole seconds,
//! rounded up, never 0).
//!
//! Layers call [`respond`], which uses the [`Renderer`] found in the
//! request's extensions, or [`ProblemJson`] when there is none. To replace
//! the renderer for the whole stack, put a [`RendererLayer`] outermost:
//!
//! ```
//! use palisade_core::render::{ProblemJson, RendererLayer};
//!
//! // Problem types become "https://errors.example.com/quota-exceeded", ...
//! let renderer = RendererLayer::new(ProblemJson::new().type_base("https://errors.example.com/"));
//! # let _ = renderer;
//! ```

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{Extensions, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use tower_layer::Layer;
use tower_service::Service;

use crate::body::ResponseBody;
use crate::rejection::{Rejection, RejectionParts, retry_after_secs};

/// `grpc-status`: written by this renderer, read by layers that judge gRPC
/// outcomes. A `HeaderName` built once, since looking a header up by `&str`
/// parses the name on every call.
pub static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The number in a `grpc-status` field (headers of a Trailers-Only response,
/// or trailers), or `None` when it is not one to three ASCII digits.
///
/// ```
/// use http::HeaderValue;
/// use palisade_core::render::parse_grpc_status;
///
/// assert_eq!(parse_grpc_status(&HeaderValue::from_static("14")), Some(14));
/// assert_eq!(parse_grpc_status(&HeaderValue::from_static("1a")), None);
/// ```
#[inline]
pub fn parse_grpc_status(value: &HeaderValue) -> Option<u32> {
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > 3 {
        return None;
    }
    bytes.iter().try_fold(0u32, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0'))
    })
}

/// What kind of client is asking, which fixes how a rejection is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protocol {
    /// HTTP: problem+json.
    Http,
    /// gRPC: Trailers-Only with `grpc-status`.
    Grpc,
    /// gRPC-Web (binary): Trailers-Only, answered as `application/grpc-web+proto`.
    GrpcWeb,
    /// gRPC-Web text: Trailers-Only, answered as `application/grpc-web-text+proto`.
    GrpcWebText,
}

impl Protocol {
    /// Reads the protocol from the request's `content-type`.
    #[inline]
    pub fn of(headers: &HeaderMap) -> Protocol {
        let Some(value) = headers.get(CONTENT_TYPE) else {
            return Protocol::Http;
        };
        let value = value.as_bytes();
        if starts_with_ignore_case(value, b"application/grpc-web-text") {
            Protocol::GrpcWebText
        } else if starts_with_ignore_case(value, b"application/grpc-web") {
            Protocol::GrpcWeb
        } else if starts_with_ignore_case(value, b"application/grpc") {
            Protocol::Grpc
        } else {
            Protocol::Http
        }
    }
}

fn starts_with_ignore_case(haystack: &[u8], prefix: &[u8]) -> bool {
    haystack.len() >= prefix.len() && haystack[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// Writes a [`Rejection`] as a response. Implement it to change how every
/// Palisade layer answers, then install it with [`RendererLayer`].
pub trait RenderRejection: Send + Sync + 'static {
    /// The response for `rejection`, asked by a client speaking `protocol`.
    fn render(&self, rejection: Rejection, protocol: Protocol) -> Response<Bytes>;
}

/// The default renderer: RFC 9457 problem+json for HTTP, Trailers-Only for gRPC.
///
/// The problem `type` is the renderer's type base followed by the
/// rejection's problem type name (`urn:palisade:problem:quota-exceeded` by
/// default).
#[derive(Clone, Debug)]
pub struct ProblemJson {
    type_base: Cow<'static, str>,
}

impl Default for ProblemJson {
    fn default() -> Self {
        Self::new()
    }
}

/// The type base used when none is set.
pub const DEFAULT_TYPE_BASE: &str = "urn:palisade:problem:";

impl ProblemJson {
    /// The default renderer.
    pub const fn new() -> Self {
        Self {
            type_base: Cow::Borrowed(DEFAULT_TYPE_BASE),
        }
    }

    /// Sets the prefix of every problem `type` (for example a URL of your
    /// documentation, ending in `/`).
    pub fn type_base(mut self, base: impl Into<Cow<'static, str>>) -> Self {
        self.type_base = base.into();
        self
    }

    fn problem_body(&self, parts: &RejectionParts, status: StatusCode) -> Bytes {
        let mut body = serde_json::Map::with_capacity(5 + parts.extensions.len());
        let type_name = parts
            .problem_type
            .as_deref()
            .unwrap_or(parts.kind.problem_type());
        let mut problem_type = String::with_capacity(self.type_base.len() + type_name.len());
        problem_type.push_str(&self.type_base);
        problem_type.push_str(type_name);
        body.insert("type".into(), problem_type.into());
        body.insert("title".into(), parts.kind.title().into());
        body.insert("status".into(), status.as_u16().into());
        if let Some(detail) = &parts.detail {
            body.insert("detail".into(), detail.as_ref().into());
        }
        for (name, value) in &parts.extensions {
            if !matches!(
                name.as_ref(),
                "type" | "title" | "status" | "detail" | "instance"
            ) {
                body.insert(name.to_string(), value.clone());
            }
        }
        // Serializing a Map of JSON values cannot fail.
        serde_json::to_vec(&serde_json::Value::Object(body))
            .map(Bytes::from)
            .unwrap_or_default()
    }
}

/// Characters escaped in `grpc-message`: everything outside printable ASCII,
/// and `%` (the gRPC spec's percent-encoding).
const GRPC_MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

impl RenderRejection for ProblemJson {
    fn render(&self, rejection: Rejection, protocol: Protocol) -> Response<Bytes> {
        let parts = rejection.into_parts();
        let kind = parts.kind;
        let (status, body, mut headers) = match protocol {
            Protocol::Http => {
                let status = kind.status();
                let body = self.problem_body(&parts, status);
                let mut headers = parts.headers;
                headers.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/problem+json"),
                );
                (status, body, headers)
            }
            grpc => {
                let mut headers = parts.headers;
                // A gRPC-Web client reads the reply as gRPC-Web; the
                // Trailers-Only form has no body, so no framing differs.
                let content_type = match grpc {
                    Protocol::GrpcWeb => "application/grpc-web+proto",
                    Protocol::GrpcWebText => "application/grpc-web-text+proto",
                    _ => "application/grpc",
                };
                headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
                headers.insert(&GRPC_STATUS, kind.grpc_code().header_value());
                let message = parts.detail.as_deref().unwrap_or(kind.title());
                let encoded: Cow<'_, str> = utf8_percent_encode(message, GRPC_MESSAGE).into();
                if let Ok(value) = HeaderValue::try_from(encoded.as_ref()) {
                    headers.insert("grpc-message", value);
                }
                (StatusCode::OK, Bytes::new(), headers)
            }
        };
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(after) = parts.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(after)));
        }
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        response
    }
}

/// A shared handle to the renderer of a stack; cheap to clone.
#[derive(Clone)]
pub struct Renderer(Arc<dyn RenderRejection>);

impl Renderer {
    /// Wraps a renderer.
    pub fn new(renderer: impl RenderRejection) -> Self {
        Self(Arc::new(renderer))
    }

    /// Renders `rejection` for a request with these headers.
    pub fn render(&self, rejection: Rejection, request_headers: &HeaderMap) -> Response<Bytes> {
        self.0.render(rejection, Protocol::of(request_headers))
    }
}

impl Default for Renderer {
    fn default() -> Self {
        Self::new(ProblemJson::new())
    }
}

impl fmt::Debug for Renderer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Renderer").finish_non_exhaustive()
    }
}

/// Renders `rejection` for a request with these headers and extensions, with
/// the stack's [`Renderer`] when a [`RendererLayer`] installed one, else with
/// [`ProblemJson`].
pub fn render(
    rejection: Rejection,
    request_headers: &HeaderMap,
    request_extensions: &Extensions,
) -> Response<Bytes> {
    let protocol = Protocol::of(request_headers);
    match request_extensions.get::<Renderer>() {
        Some(renderer) => renderer.0.render(rejection, protocol),
        None => {
            static DEFAULT: ProblemJson = ProblemJson::new();
            DEFAULT.render(rejection, protocol)
        }
    }
}

/// The response a rejecting layer returns in place of calling its inner
/// service.
///
/// ```
/// use palisade_core::{Rejection, render::respond};
///
/// let request = http::Request::new(());
/// let response = respond::<_, http_body_util::Empty<bytes::Bytes>>(&request, Rejection::not_found());
/// assert_eq!(response.status(), 404);
/// assert_eq!(response.headers()["content-type"], "application/problem+json");
/// ```
pub fn respond<ReqBody, ResBody>(
    request: &Request<ReqBody>,
    rejection: Rejection,
) -> Response<ResponseBody<ResBody>> {
    render(rejection, request.headers(), request.extensions()).map(ResponseBody::rejection)
}

/// Installs a [`Renderer`] for every Palisade layer inside it, by placing it in
/// the request extensions. Put it outermost.
#[derive(Clone, Debug)]
pub struct RendererLayer {
    renderer: Renderer,
}

impl RendererLayer {
    /// A layer installing `renderer`.
    pub fn new(renderer: impl RenderRejection) -> Self {
        Self {
            renderer: Renderer::new(renderer),
        }
    }
}

impl<S> Layer<S> for RendererLayer {
    type Service = InstallRenderer<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InstallRenderer {
            inner,
            renderer: self.renderer.clone(),
        }
    }
}

/// The service made by [`RendererLayer`].
#[derive(Clone, Debug)]
pub struct InstallRenderer<S> {
    inner: S,
    renderer: Renderer,
}

impl<S> InstallRenderer<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes this service, returning the inner one.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for InstallRenderer<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        request.extensions_mut().insert(self.renderer.clone());
        self.inner.call(request)
    }
}

#[cfg(feature = "axum")]
impl axum::response::IntoResponse for Rejection {
    /// Renders as problem+json, for handlers that refuse a request
    /// themselves (axum handlers answer HTTP).
    fn into_response(self) -> axum::response::Response {
        ProblemJson::new()
            .render(self, Protocol::Http)
            .map(axum::body::Body::from)
    }
}

#[cfg(feature = "tonic")]
impl From<Rejection> for tonic::Status {
    /// The gRPC status of the rejection, with its public detail as message.
    fn from(rejection: Rejection) -> Self {
        let code = tonic::Code::from_i32(i32::from(rejection.kind().grpc_code().as_u8()));
        let message = rejection
            .detail()
            .unwrap_or(rejection.kind().title())
            .to_owned();
        tonic::Status::new(code, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn grpc_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        headers
    }

    fn json(response: &Response<Bytes>) -> serde_json::Value {
        serde_json::from_slice(response.body()).unwrap_or_default()
    }

    #[test]
    fn protocol_is_read_from_content_type_case_insensitively() {
        assert_eq!(Protocol::of(&HeaderMap::new()), Protocol::Http);
        assert_eq!(Protocol::of(&grpc_headers()), Protocol::Grpc);
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("Application/GRPC-web"),
        );
        assert_eq!(Protocol::of(&headers), Protocol::GrpcWeb);
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/grpc-web-text+proto"),
        );
        assert_eq!(Protocol::of(&headers), Protocol::GrpcWebText);
        let response = ProblemJson::new().render(Rejection::forbidden(), Protocol::GrpcWebText);
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            "application/grpc-web-text+proto"
        );
        assert_eq!(response.headers()["grpc-status"], "7");
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert_eq!(Protocol::of(&headers), Protocol::Http);
    }

    #[test]
    fn http_rejection_is_problem_json_with_status_and_headers() {
        let rejection = Rejection::rate_limited(Duration::from_millis(200))
            .with_detail("Slow down.")
            .with_header(
                http::HeaderName::from_static("ratelimit"),
                HeaderValue::from_static("\"burst\";r=0;t=1"),
            )
            .with_extension("violated_policies", serde_json::json!(["burst"]))
            .with_extension("status", serde_json::json!(200));
        let response = ProblemJson::new().render(rejection, Protocol::Http);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
        assert_eq!(response.headers()[RETRY_AFTER], "1");
        assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
        assert_eq!(response.headers()["ratelimit"], "\"burst\";r=0;t=1");
        assert_eq!(
            json(&response),
            serde_json::json!({
                "type": "urn:palisade:problem:quota-exceeded",
                "title": "Too Many Requests",
                "status": 429,
                "detail": "Slow down.",
                "violated_policies": ["burst"],
            })
        );
    }

    #[test]
    fn grpc_rejection_is_trailers_only_with_encoded_message() {
        let rejection = Rejection::unauthenticated().with_detail("100% wrong\nnewline é");
        let response = ProblemJson::new().render(rejection, Protocol::Grpc);
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.body().is_empty());
        assert_eq!(response.headers()[CONTENT_TYPE], "application/grpc");
        assert_eq!(response.headers()["grpc-status"], "16");
        assert_eq!(
            response.headers()["grpc-message"],
            "100%25 wrong%0Anewline %C3%A9"
        );
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
    }

    #[test]
    fn type_base_is_replaceable() {
        let response = ProblemJson::new()
            .type_base("https://errors.example/")
            .render(
                Rejection::overloaded(Duration::from_secs(2)),
                Protocol::Http,
            );
        assert_eq!(json(&response)["type"], "https://errors.example/overloaded");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn render_uses_the_installed_renderer() {
        struct Teapot;
        impl RenderRejection for Teapot {
            fn render(&self, _: Rejection, _: Protocol) -> Response<Bytes> {
                let mut response = Response::new(Bytes::from_static(b"teapot"));
                *response.status_mut() = StatusCode::IM_A_TEAPOT;
                response
            }
        }
        let mut extensions = Extensions::new();
        let default = render(Rejection::forbidden(), &HeaderMap::new(), &extensions);
        assert_eq!(default.status(), StatusCode::FORBIDDEN);
        extensions.insert(Renderer::new(Teapot));
        let replaced = render(Rejection::forbidden(), &HeaderMap::new(), &extensions);
        assert_eq!(replaced.status(), StatusCode::IM_A_TEAPOT);
    }
}
