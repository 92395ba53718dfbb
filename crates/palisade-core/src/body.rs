//! The response body of a layer that can refuse a request.
//!
//! A rejecting layer answers either with the inner service's response or
//! with a rendered [`Rejection`](crate::Rejection). [`ResponseBody`] holds
//! either, so the layer never forces a body type on the user: it wraps
//! whatever body the inner service returns (axum's, tonic's, hyper's
//! `Full<Bytes>` or any other body whose data is [`Bytes`]) and adds one
//! variant for the rejection's bytes. Its error type is the inner body's.
//!
//! ```
//! use bytes::Bytes;
//! use http_body::Body as _;
//! use palisade_core::body::ResponseBody;
//!
//! let body: ResponseBody<http_body_util::Empty<Bytes>> = ResponseBody::rejection(Bytes::from_static(b"{}"));
//! assert_eq!(body.size_hint().exact(), Some(2));
//! ```

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// Either the inner service's body or the bytes of a rendered rejection.
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Rejection { bytes: Option<Bytes> },
    }
}

impl<B> ResponseBody<B> {
    /// Wraps the inner service's body.
    #[inline]
    pub fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    /// A body made of a rendered rejection. Empty bytes make a body that is
    /// at its end from the start, so HTTP/2 sends the headers with
    /// END_STREAM (what a gRPC Trailers-Only response needs).
    #[inline]
    pub fn rejection(bytes: Bytes) -> Self {
        let bytes = if bytes.is_empty() { None } else { Some(bytes) };
        Self {
            kind: Kind::Rejection { bytes },
        }
    }

    /// Whether this body is a rejection rather than the inner body.
    #[inline]
    pub fn is_rejection(&self) -> bool {
        matches!(self.kind, Kind::Rejection { .. })
    }
}

impl<B: Default> Default for ResponseBody<B> {
    fn default() -> Self {
        Self::inner(B::default())
    }
}

impl<B> Body for ResponseBody<B>
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
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Rejection { bytes } => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Rejection { bytes } => bytes.is_none(),
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Rejection { bytes } => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn rejection_body_yields_its_bytes_once_then_ends() {
        let body: ResponseBody<Full<Bytes>> = ResponseBody::rejection(Bytes::from_static(b"no"));
        assert!(body.is_rejection());
        assert!(!body.is_end_stream());
        let collected = body.collect().await.map(|c| c.to_bytes());
        assert_eq!(collected.ok(), Some(Bytes::from_static(b"no")));
    }

    #[test]
    fn empty_rejection_body_is_at_its_end_from_the_start() {
        let body: ResponseBody<Full<Bytes>> = ResponseBody::rejection(Bytes::new());
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
    }

    #[tokio::test]
    async fn inner_body_passes_through_untouched() {
        let body = ResponseBody::inner(Full::new(Bytes::from_static(b"hello")));
        assert!(!body.is_rejection());
        assert_eq!(body.size_hint().exact(), Some(5));
        let collected = body.collect().await.map(|c| c.to_bytes());
        assert_eq!(collected.ok(), Some(Bytes::from_static(b"hello")));
    }
}
