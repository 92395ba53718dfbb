//! [`PermitBody`]: the inner response body, holding the request's permit
//! until its last frame.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::permit::Permit;

pin_project! {
    /// The inner service's response body, holding the request's place in
    /// the limit until the body ends: its last frame is read (or it reports
    /// its end), it fails, or it is dropped. A streaming response therefore
    /// counts against the limit for as long as it streams.
    #[derive(Debug)]
    pub struct PermitBody<B> {
        #[pin]
        inner: B,
        permit: Option<Permit>,
    }
}

impl<B> PermitBody<B> {
    #[inline]
    pub(crate) fn new(inner: B, permit: Option<Permit>) -> Self {
        Self { inner, permit }
    }

    /// Whether the body still holds a permit (the request still counts
    /// against its limit).
    #[inline]
    pub fn holds_permit(&self) -> bool {
        self.permit.is_some()
    }

    /// The inner body.
    #[inline]
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B: Body> Body for PermitBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        // The end, an error (after which hyper reads no more), or a last
        // frame after which the body says it is done: give the place back
        // now rather than when the connection gets round to dropping us.
        let ended = match &frame {
            None | Some(Err(_)) => true,
            Some(Ok(_)) => this.inner.is_end_stream(),
        };
        if ended {
            *this.permit = None;
        }
        Poll::Ready(frame)
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
