//! [`ScanBodyLayer`]: scans whole response bodies for secrets by format
//! (see [`SecretScanner`]) and either redacts them or refuses the response
//! with a 500 that says nothing of the secret.
//!
//! Unlike [`RedactBodyLayer`](crate::RedactBodyLayer), which redacts by key
//! as the body streams, this layer reads the whole body first (a 500 can
//! only replace a response whose head has not been sent), up to a limit:
//!
//! - Bodies scanned: no `Content-Type`, `text/*` (except
//!   `text/event-stream`, which never ends), and `application/json`,
//!   `*+json`, `xml`, `*+xml`, `javascript`, `x-ndjson`,
//!   `x-www-form-urlencoded`. Others (images, archives...) and bodies with a
//!   `Content-Encoding` other than `identity` pass through untouched.
//! - A body longer than the limit (default 4 MiB), or one whose inner body
//!   fails, is refused with a 500: it cannot be vouched for (fail closed).
//! - Redacting sets `Content-Length` to the new length.
//! - Each redaction or refusal is logged (the kinds found, never their
//!   values) under the target `palisade::redact`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::scan::{Finding, SecretScanner};

/// The body of the 500 sent instead of a response that held a secret.
const REFUSAL: &[u8] = br#"{"type":"about:blank","title":"Internal Server Error","status":500}"#;

/// The default limit of a scanned body: 4 MiB.
pub const DEFAULT_MAX_SCANNED_BYTES: usize = 4 * 1024 * 1024;

/// What to do with a response that holds a secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanAction {
    /// Replace each secret with `***REDACTED***` and send the rest.
    Redact,
    /// Send a 500 with a generic problem+json body instead.
    Refuse,
}

#[derive(Debug)]
struct Config {
    scanner: SecretScanner,
    action: ScanAction,
    max_bytes: usize,
}

/// Scans response bodies for secrets (see the [module docs](self)).
///
/// ```
/// use palisade_redact::scan::SecretScanner;
/// use palisade_redact::scan_body::{ScanAction, ScanBodyLayer};
///
/// let layer = ScanBodyLayer::new(SecretScanner::default(), ScanAction::Refuse)
///     .max_body_bytes(1024 * 1024);
/// # let _ = layer;
/// ```
#[derive(Clone, Debug)]
pub struct ScanBodyLayer {
    config: Arc<Config>,
}

impl ScanBodyLayer {
    /// Scans with `scanner`, and redacts or refuses as `action` says.
    pub fn new(scanner: SecretScanner, action: ScanAction) -> Self {
        Self {
            config: Arc::new(Config {
                scanner,
                action,
                max_bytes: DEFAULT_MAX_SCANNED_BYTES,
            }),
        }
    }

    /// The longest body read (default [`DEFAULT_MAX_SCANNED_BYTES`]);
    /// longer ones are refused with a 500.
    pub fn max_body_bytes(self, max_bytes: usize) -> Self {
        Self {
            config: Arc::new(Config {
                scanner: self.config.scanner.clone(),
                action: self.config.action,
                max_bytes,
            }),
        }
    }
}

impl<S> Layer<S> for ScanBodyLayer {
    type Service = ScanBody<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ScanBody {
            inner,
            config: Arc::clone(&self.config),
        }
    }
}

/// The service made by [`ScanBodyLayer`].
#[derive(Clone, Debug)]
pub struct ScanBody<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> ScanBody<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ScanBody<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes>,
{
    type Response = Response<ScannedBody<ResBody>>;
    type Error = S::Error;
    type Future = ScanBodyFuture<S::Future, ResBody>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        ScanBodyFuture {
            state: State::Waiting {
                future: self.inner.call(request),
            },
            config: Arc::clone(&self.config),
        }
    }
}

fn is_scanned(headers: &HeaderMap) -> bool {
    if let Some(encoding) = headers.get(CONTENT_ENCODING)
        && !encoding
            .to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("identity"))
    {
        return false;
    }
    let Some(content_type) = headers.get(CONTENT_TYPE) else {
        return true;
    };
    let Ok(content_type) = content_type.to_str() else {
        return true;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "text/event-stream" {
        return false;
    }
    if essence.starts_with("text/") {
        return true;
    }
    match essence.strip_prefix("application/") {
        Some(sub) => {
            matches!(
                sub,
                "json" | "xml" | "javascript" | "x-ndjson" | "x-www-form-urlencoded"
            ) || sub.ends_with("+json")
                || sub.ends_with("+xml")
        }
        None => false,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Waiting { #[pin] future: F },
        Collecting {
            parts: Option<http::response::Parts>,
            #[pin]
            body: B,
            buffer: Vec<u8>,
            trailers: Option<HeaderMap>,
        },
        Done,
    }
}

pin_project! {
    /// The response future of [`ScanBody`]: waits for the inner response,
    /// then reads and scans its body.
    pub struct ScanBodyFuture<F, B> {
        #[pin]
        state: State<F, B>,
        config: Arc<Config>,
    }
}

impl<F, B> fmt::Debug for ScanBodyFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScanBodyFuture").finish_non_exhaustive()
    }
}

fn refusal<B>(why: &'static str, found: &[Finding]) -> Response<ScannedBody<B>> {
    let kinds: Vec<&str> = found.iter().map(|f| f.kind.name()).collect();
    tracing::warn!(target: "palisade::redact", ?kinds, why, "response refused with 500");
    let mut response = Response::new(ScannedBody::buffered(Bytes::from_static(REFUSAL), None));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(REFUSAL.len()));
    response
}

impl<F, B, E> Future for ScanBodyFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body<Data = Bytes>,
{
    type Output = Result<Response<ScannedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Waiting { future } => {
                    let response = ready!(future.poll(cx))?;
                    if !is_scanned(response.headers()) {
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(response.map(ScannedBody::passthrough)));
                    }
                    let (parts, body) = response.into_parts();
                    this.state.set(State::Collecting {
                        parts: Some(parts),
                        body,
                        buffer: Vec::new(),
                        trailers: None,
                    });
                }
                StateProj::Collecting {
                    parts,
                    mut body,
                    buffer,
                    trailers,
                } => {
                    let finished = loop {
                        match ready!(body.as_mut().poll_frame(cx)) {
                            Some(Ok(frame)) => match frame.into_data() {
                                Ok(data) => {
                                    buffer.extend_from_slice(&data);
                                    if buffer.len() > this.config.max_bytes {
                                        break Err("body over the scanning limit");
                                    }
                                }
                                Err(frame) => {
                                    if let Ok(map) = frame.into_trailers() {
                                        *trailers = Some(map);
                                    }
                                }
                            },
                            Some(Err(_)) => break Err("the inner body failed"),
                            None => break Ok(()),
                        }
                    };
                    let response = match (finished, parts.take()) {
                        (Ok(()), Some(mut parts)) => {
                            let found = this.config.scanner.find(buffer);
                            if found.is_empty() {
                                let data = Bytes::from(std::mem::take(buffer));
                                Response::from_parts(
                                    parts,
                                    ScannedBody::buffered(data, trailers.take()),
                                )
                            } else if this.config.action == ScanAction::Refuse {
                                refusal("the body held a secret", &found)
                            } else {
                                let kinds: Vec<&str> =
                                    found.iter().map(|f| f.kind.name()).collect();
                                tracing::warn!(target: "palisade::redact", ?kinds, "secrets redacted from a response body");
                                let redacted = this.config.scanner.redact(buffer).into_owned();
                                parts
                                    .headers
                                    .insert(CONTENT_LENGTH, HeaderValue::from(redacted.len()));
                                Response::from_parts(
                                    parts,
                                    ScannedBody::buffered(Bytes::from(redacted), trailers.take()),
                                )
                            }
                        }
                        (Err(why), _) => refusal(why, &[]),
                        (Ok(()), None) => refusal("polled after completion", &[]),
                    };
                    this.state.set(State::Done);
                    return Poll::Ready(Ok(response));
                }
                // Polled after completion: a caller bug; stay pending
                // rather than panic.
                StateProj::Done => return Poll::Pending,
            }
        }
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Passthrough { #[pin] inner: B },
        Buffered { data: Option<Bytes>, trailers: Option<HeaderMap> },
    }
}

pin_project! {
    /// A response body that was scanned (and is sent from memory) or
    /// passed through.
    pub struct ScannedBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

impl<B> fmt::Debug for ScannedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scanned = matches!(self.kind, Kind::Buffered { .. });
        f.debug_struct("ScannedBody")
            .field("scanned", &scanned)
            .finish_non_exhaustive()
    }
}

impl<B> ScannedBody<B> {
    fn passthrough(inner: B) -> Self {
        Self {
            kind: Kind::Passthrough { inner },
        }
    }

    fn buffered(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        let data = if data.is_empty() { None } else { Some(data) };
        Self {
            kind: Kind::Buffered { data, trailers },
        }
    }
}

impl<B> Body for ScannedBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Passthrough { inner } => inner.poll_frame(cx),
            KindProj::Buffered { data, trailers } => {
                if let Some(data) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(trailers.take().map(|map| Ok(Frame::trailers(map))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Passthrough { inner } => inner.is_end_stream(),
            Kind::Buffered { data, trailers } => data.is_none() && trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Passthrough { inner } => inner.size_hint(),
            Kind::Buffered { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
