//! The response future of the rate-limit service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use palisade_core::body::ResponseBody;
use palisade_core::future::ResponseFuture as CoreFuture;
use pin_project_lite::pin_project;

use crate::layer::Owed;

pub(crate) type BoxedResponse<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody<B>>, E>> + Send + 'static>>;

pin_project! {
    /// The response future of [`RateLimit`].
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        kind: Kind<F, B, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B, E> {
        // Decided in memory, before the inner call.
        Ready {
            #[pin]
            inner: CoreFuture<F, B>,
            // A few numbers and the policies' (interned) members: the fields
            // are written from them when the response arrives, so nothing is
            // allocated up front.
            owed: Option<Owed>,
        },
        // Waiting for a remote store, then the inner call.
        Boxed {
            future: BoxedResponse<B, E>,
        },
    }
}

impl<F, B, E> fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> ResponseFuture<F, B, E> {
    #[inline]
    pub(crate) fn ready(inner: CoreFuture<F, B>, owed: Option<Owed>) -> Self {
        ResponseFuture {
            kind: Kind::Ready { inner, owed },
        }
    }

    #[cfg(feature = "redis")]
    pub(crate) fn boxed(future: BoxedResponse<B, E>) -> Self {
        ResponseFuture {
            kind: Kind::Boxed { future },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Boxed { future } => future.as_mut().poll(cx),
            KindProj::Ready { inner, owed } => {
                let mut response = ready!(inner.poll(cx))?;
                if let Some(owed) = owed {
                    owed.settle(&mut response);
                }
                // Settled once: a future is not polled again after it is
                // ready, and nothing is owed twice if it were.
                *owed = None;
                Poll::Ready(Ok(response))
            }
        }
    }
}
