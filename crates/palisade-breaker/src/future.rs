//! The response future and body: where outcomes are judged and recorded.
//!
//! A call's ticket lives in a [`CallGuard`]. The guard records the outcome
//! when the response head is judged, or, for a gRPC stream, when its
//! trailers arrive; dropped before that (the client went away, an outer
//! timeout fired) it records the call as ignored, which frees a probe slot
//! and counts the call as slow if it ran past the slow-call threshold.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use palisade_core::body::ResponseBody;
use palisade_core::key::Key;
use pin_project_lite::pin_project;

use crate::classify::Judgement;
use crate::layer::{KeyedBreaker, Shared, finish};
use crate::machine::{Outcome, Ticket};

/// Which breaker a call went through.
pub(crate) enum Target {
    Shared,
    Keyed(Arc<KeyedBreaker>),
}

impl Target {
    pub(crate) fn key(&self) -> Option<&Key> {
        match self {
            Target::Shared => None,
            Target::Keyed(entry) => Some(&entry.key),
        }
    }
}

/// Holds a call's ticket until its outcome is known.
pub(crate) struct CallGuard {
    shared: Arc<Shared>,
    target: Target,
    ticket: Option<Ticket>,
}

impl CallGuard {
    pub(crate) fn new(shared: Arc<Shared>, target: Target, ticket: Ticket) -> Self {
        Self {
            shared,
            target,
            ticket: Some(ticket),
        }
    }

    #[inline]
    fn finish(&mut self, outcome: Outcome) {
        if let Some(ticket) = self.ticket.take() {
            finish(&self.shared, &self.target, ticket, outcome);
        }
    }

    #[inline]
    fn judge(&mut self, status: http::StatusCode, headers: &http::HeaderMap) -> Judgement {
        self.shared.classifier.classify_response(status, headers)
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.finish(Outcome::Ignored);
    }
}

pin_project! {
    /// The inner service's body, holding the call's guard until the
    /// trailers decide a gRPC call's outcome.
    pub struct BreakerBody<B> {
        #[pin]
        inner: B,
        guard: Option<CallGuard>,
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for BreakerBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BreakerBody")
            .field("inner", &self.inner)
            .field("judging", &self.guard.is_some())
            .finish()
    }
}

impl<B> BreakerBody<B> {
    fn new(inner: B, guard: Option<CallGuard>) -> Self {
        Self { inner, guard }
    }
}

impl<B> Body for BreakerBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Some(guard) = this.guard.as_mut() {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        let outcome = guard.shared.classifier.classify_trailers(Some(trailers));
                        guard.finish(outcome);
                    }
                }
                Poll::Ready(Some(Err(_))) => {
                    let outcome = guard.shared.classifier.classify_error();
                    guard.finish(outcome);
                }
                Poll::Ready(None) => {
                    let outcome = guard.shared.classifier.classify_trailers(None);
                    guard.finish(outcome);
                }
                Poll::Pending => {}
            }
        }
        polled
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// The response future of [`CircuitBreaker`](crate::CircuitBreaker).
    pub struct ResponseFuture<F, FF, B> {
        #[pin]
        kind: Kind<F, FF, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, FF, B> {
        Call { #[pin] future: F, guard: Option<CallGuard> },
        Fallback { #[pin] future: FF },
        // Boxed: the refused path is the rare one; unboxed, every future
        // would carry a whole response.
        Rejected { response: Option<Box<Response<ResponseBody<BreakerBody<B>>>>> },
    }
}

impl<F, FF, B> std::fmt::Debug for ResponseFuture<F, FF, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<F, FF, B> ResponseFuture<F, FF, B> {
    #[inline]
    pub(crate) fn call(future: F, guard: Option<CallGuard>) -> Self {
        Self {
            kind: Kind::Call { future, guard },
        }
    }

    pub(crate) fn fallback(future: FF) -> Self {
        Self {
            kind: Kind::Fallback { future },
        }
    }

    pub(crate) fn rejected(response: Response<ResponseBody<BreakerBody<B>>>) -> Self {
        Self {
            kind: Kind::Rejected {
                response: Some(Box::new(response)),
            },
        }
    }
}

impl<F, FF, B, E> Future for ResponseFuture<F, FF, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    FF: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<BreakerBody<B>>>, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Call { future, guard } => {
                let result = match future.poll(cx) {
                    Poll::Ready(result) => result,
                    Poll::Pending => return Poll::Pending,
                };
                let mut guard = guard.take();
                match result {
                    Ok(response) => {
                        let body_guard = match guard.as_mut() {
                            Some(g) => match g.judge(response.status(), response.headers()) {
                                Judgement::Now(outcome) => {
                                    g.finish(outcome);
                                    None
                                }
                                Judgement::AtTrailers => guard.take(),
                            },
                            None => None,
                        };
                        Poll::Ready(Ok(response.map(|body| {
                            ResponseBody::inner(BreakerBody::new(body, body_guard))
                        })))
                    }
                    Err(error) => {
                        if let Some(g) = guard.as_mut() {
                            let outcome = g.shared.classifier.classify_error();
                            g.finish(outcome);
                        }
                        Poll::Ready(Err(error))
                    }
                }
            }
            KindProj::Fallback { future } => future.poll(cx).map(|result| {
                result.map(|response| {
                    response.map(|body| ResponseBody::inner(BreakerBody::new(body, None)))
                })
            }),
            KindProj::Rejected { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(*response)),
                // Polled after completion: stay pending rather than panic.
                None => Poll::Pending,
            },
        }
    }
}
