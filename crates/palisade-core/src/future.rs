//! The response future of a layer that can refuse a request.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

use crate::body::ResponseBody;

pin_project! {
    /// Either the inner service's future, its body wrapped in
    /// [`ResponseBody`], or a rejection that is ready at once.
    #[derive(Debug)]
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F, B> {
        Inner { #[pin] future: F },
        // Boxed: a response is a few hundred bytes, and the rejected path is
        // the rare one; unboxed it would make every future that large, and
        // futures are moved on every call.
        Rejected { response: Option<Box<Response<ResponseBody<B>>>> },
    }
}

impl<F, B> ResponseFuture<F, B> {
    /// Waits for the inner service.
    #[inline]
    pub fn inner(future: F) -> Self {
        Self {
            kind: Kind::Inner { future },
        }
    }

    /// Answers with a rendered rejection (see [`respond`](crate::render::respond)).
    #[inline]
    pub fn rejected(response: Response<ResponseBody<B>>) -> Self {
        Self {
            kind: Kind::Rejected {
                response: Some(Box::new(response)),
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => future
                .poll(cx)
                .map(|result| result.map(|response| response.map(ResponseBody::inner))),
            KindProj::Rejected { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(*response)),
                // Polled again after completion: a caller bug. Stay pending
                // rather than panic; futures must not be polled after Ready.
                None => Poll::Pending,
            },
        }
    }
}
