//! [`RedactBodyLayer`]: redacts secret values in JSON, NDJSON and
//! server-sent-event response bodies as they stream, with a
//! [`JsonRedactor`] per response.
//!
//! - The body is chosen by `Content-Type`: `application/json` and
//!   `application/*+json` ([`Framing::Json`]); `application/x-ndjson`,
//!   `application/ndjson`, `application/jsonl`, `application/x-jsonlines`
//!   ([`Framing::Lines`]); `text/event-stream` ([`Framing::EventStream`]).
//!   Other bodies pass through untouched.
//! - A body with a `Content-Encoding` other than `identity` passes through
//!   untouched: its bytes are compressed, not JSON. Put this layer inside
//!   (after) a decompression layer to redact such bodies, and any
//!   compression layer outside it.
//! - `Content-Length` is removed from a redacted response: the length
//!   changes. A body that is empty from the start (`is_end_stream`, as for
//!   HEAD, 204 and 304 responses) is left alone, headers included.
//! - Invalid JSON fails safe: the rest of the invalid document is dropped
//!   (see [`json`](crate::json)), and a warning (with no content) is logged
//!   under the target `palisade::redact`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::json::{DEFAULT_MAX_DEPTH, Framing, JsonRedactor, Outcome};
use crate::names::SecretNames;

#[derive(Debug)]
struct Config {
    names: SecretNames,
    max_depth: usize,
}

/// Redacts the values of secret keys in JSON response bodies as they
/// stream (see the [module docs](self)).
///
/// ```
/// use palisade_redact::{RedactBodyLayer, SecretNames};
/// use tower::ServiceBuilder;
///
/// let layer = RedactBodyLayer::new()
///     .keys(SecretNames::default_body_keys().with(["ssn", "card_number"]));
/// let stack = ServiceBuilder::new().layer(layer);
/// # let _ = stack;
/// ```
#[derive(Clone, Debug)]
pub struct RedactBodyLayer {
    config: Arc<Config>,
}

impl Default for RedactBodyLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl RedactBodyLayer {
    /// Redacts the [default keys](crate::DEFAULT_BODY_KEYS).
    pub fn new() -> Self {
        Self {
            config: Arc::new(Config {
                names: SecretNames::default_body_keys(),
                max_depth: DEFAULT_MAX_DEPTH,
            }),
        }
    }

    /// Redacts these keys instead.
    pub fn keys(self, names: SecretNames) -> Self {
        Self {
            config: Arc::new(Config {
                names,
                max_depth: self.config.max_depth,
            }),
        }
    }

    /// The deepest nesting accepted (default [`DEFAULT_MAX_DEPTH`]); a
    /// deeper document is cut short where it gets too deep.
    pub fn max_depth(self, max_depth: usize) -> Self {
        Self {
            config: Arc::new(Config {
                names: self.config.names.clone(),
                max_depth,
            }),
        }
    }
}

impl<S> Layer<S> for RedactBodyLayer {
    type Service = RedactBody<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RedactBody {
            inner,
            config: Arc::clone(&self.config),
        }
    }
}

/// The service made by [`RedactBodyLayer`].
#[derive(Clone, Debug)]
pub struct RedactBody<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> RedactBody<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RedactBody<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes>,
{
    type Response = Response<RedactedBody<ResBody>>;
    type Error = S::Error;
    type Future = RedactBodyFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        RedactBodyFuture {
            future: self.inner.call(request),
            config: Arc::clone(&self.config),
        }
    }
}

pin_project! {
    /// The response future of [`RedactBody`].
    pub struct RedactBodyFuture<F> {
        #[pin]
        future: F,
        config: Arc<Config>,
    }
}

impl<F> fmt::Debug for RedactBodyFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedactBodyFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for RedactBodyFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body<Data = Bytes>,
{
    type Output = Result<Response<RedactedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.future.poll(cx))?;
        let (mut parts, body) = response.into_parts();
        // A body that is empty from the start (HEAD, 204, 304) has nothing
        // to redact: its headers, `Content-Length` included, stay as they are.
        let redactor = framing_of(&parts.headers)
            .filter(|_| !body.is_end_stream())
            .map(|framing| {
                JsonRedactor::new(this.config.names.clone(), framing)
                    .with_max_depth(this.config.max_depth)
            });
        if redactor.is_some() {
            parts.headers.remove(CONTENT_LENGTH);
        }
        Poll::Ready(Ok(Response::from_parts(
            parts,
            RedactedBody::new(body, redactor),
        )))
    }
}

/// How a response body with these headers is framed, if it is to be
/// redacted: `None` for bodies that are not JSON, and for encoded ones.
pub fn framing_of(headers: &HeaderMap) -> Option<Framing> {
    if let Some(encoding) = headers.get(CONTENT_ENCODING) {
        let identity = encoding
            .to_str()
            .is_ok_and(|value| value.trim().eq_ignore_ascii_case("identity"));
        if !identity {
            return None;
        }
    }
    let content_type = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let essence = content_type.split(';').next().unwrap_or("").trim();
    let essence = essence.to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Some(Framing::Json),
        "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonl"
        | "application/x-jsonlines"
        | "application/jsonlines" => Some(Framing::Lines),
        "text/event-stream" => Some(Framing::EventStream),
        other if other.starts_with("application/") && other.ends_with("+json") => {
            Some(Framing::Json)
        }
        _ => None,
    }
}

pin_project! {
    /// A response body redacted as it streams (or passed through, when it
    /// is not JSON). Its data is [`Bytes`]; its error is the inner body's.
    pub struct RedactedBody<B> {
        #[pin]
        inner: B,
        redactor: Option<JsonRedactor>,
        finished: bool,
    }
}

impl<B> fmt::Debug for RedactedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedactedBody")
            .field("redacting", &self.redactor.is_some())
            .finish_non_exhaustive()
    }
}

impl<B> RedactedBody<B> {
    /// Wraps `inner`, redacting it with `redactor` if one is given.
    pub fn new(inner: B, redactor: Option<JsonRedactor>) -> Self {
        Self {
            inner,
            redactor,
            finished: false,
        }
    }

    /// Whether this body is being redacted.
    pub fn is_redacting(&self) -> bool {
        self.redactor.is_some()
    }
}

fn report(outcome: Outcome) {
    if !outcome.is_complete() {
        tracing::warn!(
            target: "palisade::redact",
            ?outcome,
            "a redacted response body was not valid JSON to its end; the rest of each invalid document was dropped"
        );
    }
}

impl<B> Body for RedactedBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let Some(redactor) = this.redactor.as_mut() else {
            return this.inner.poll_frame(cx);
        };
        loop {
            match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let mut out = Vec::with_capacity(data.len() + 16);
                        redactor.feed(&data, &mut out);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                        }
                    }
                    Err(trailers) => {
                        if !*this.finished {
                            *this.finished = true;
                            report(redactor.finish(&mut Vec::new()));
                        }
                        return Poll::Ready(Some(Ok(trailers)));
                    }
                },
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => {
                    if !*this.finished {
                        *this.finished = true;
                        report(redactor.finish(&mut Vec::new()));
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.redactor.is_none() {
            return self.inner.size_hint();
        }
        match self.inner.size_hint().exact() {
            Some(0) => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
