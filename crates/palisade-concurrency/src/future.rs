//! The response future of the concurrency layers.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{HeaderMap, Response, StatusCode};
use http_body::Body;
use palisade_core::body::ResponseBody;
use palisade_core::render::{GRPC_STATUS, parse_grpc_status};
use pin_project_lite::pin_project;

use crate::body::PermitBody;
use crate::permit::Permit;

/// The response type of both layers.
pub(crate) type LayerResponse<B> = Response<ResponseBody<PermitBody<B>>>;

/// A waiting request's whole future: boxed, since queueing is the slow path
/// and it must carry the request and a service.
pub(crate) type BoxedResponse<B, E> =
    Pin<Box<dyn Future<Output = Result<LayerResponse<B>, E>> + Send + 'static>>;

pin_project! {
    /// The response future of [`ConcurrencyLimit`](crate::ConcurrencyLimit)
    /// and [`LoadShed`](crate::LoadShed): the inner service's future holding
    /// the request's permit, a refusal ready at once, or a request waiting
    /// in a queue.
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        kind: Kind<F, B, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B, E> {
        Admitted {
            #[pin]
            future: F,
            permit: Option<Permit>,
        },
        // Boxed: the refused path is the rare one, and an unboxed response
        // would make every future that large.
        Rejected {
            response: Option<Box<LayerResponse<B>>>,
        },
        Queued {
            future: BoxedResponse<B, E>,
        },
    }
}

impl<F, B, E> fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Admitted { permit, .. } if permit.is_some() => "admitted",
            Kind::Admitted { .. } => "unlimited",
            Kind::Rejected { .. } => "rejected",
            Kind::Queued { .. } => "queued",
        };
        f.debug_tuple("ResponseFuture").field(&state).finish()
    }
}

impl<F, B, E> ResponseFuture<F, B, E> {
    /// The inner future, holding `permit` (none for an exempt request).
    #[inline]
    pub(crate) fn admitted(future: F, permit: Option<Permit>) -> Self {
        Self {
            kind: Kind::Admitted { future, permit },
        }
    }

    #[inline]
    pub(crate) fn rejected(response: LayerResponse<B>) -> Self {
        Self {
            kind: Kind::Rejected {
                response: Some(Box::new(response)),
            },
        }
    }

    #[inline]
    pub(crate) fn queued(future: BoxedResponse<B, E>) -> Self {
        Self {
            kind: Kind::Queued { future },
        }
    }
}

/// Responses that say the service below is overloaded, for adaptive limits:
/// HTTP 503 and 504, and a gRPC Trailers-Only UNAVAILABLE (14) or
/// RESOURCE_EXHAUSTED (8), which arrive as HTTP 200.
#[inline]
fn signals_overload(status: StatusCode, headers: &HeaderMap) -> bool {
    match status {
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => true,
        StatusCode::OK => headers
            .get(&GRPC_STATUS)
            .and_then(parse_grpc_status)
            .is_some_and(|code| code == 14 || code == 8),
        _ => false,
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<LayerResponse<B>, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Admitted { future, permit } => match ready!(future.poll(cx)) {
                Ok(response) => {
                    let mut permit = permit.take();
                    if let Some(permit) = permit.as_mut() {
                        permit.on_response(signals_overload(response.status(), response.headers()));
                    }
                    let (parts, body) = response.into_parts();
                    // A body that is empty from the start may never be
                    // polled: release now.
                    if body.is_end_stream() {
                        permit = None;
                    }
                    let body = ResponseBody::inner(PermitBody::new(body, permit));
                    Poll::Ready(Ok(Response::from_parts(parts, body)))
                }
                Err(error) => {
                    if let Some(mut permit) = permit.take() {
                        permit.on_response(true);
                    }
                    Poll::Ready(Err(error))
                }
            },
            KindProj::Rejected { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(*response)),
                // Polled after completion: a caller bug; stay pending
                // rather than panic.
                None => Poll::Pending,
            },
            KindProj::Queued { future } => future.as_mut().poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overload_is_read_from_http_statuses_and_grpc_trailers_only_codes() {
        let empty = HeaderMap::new();
        assert!(signals_overload(StatusCode::SERVICE_UNAVAILABLE, &empty));
        assert!(signals_overload(StatusCode::GATEWAY_TIMEOUT, &empty));
        assert!(!signals_overload(StatusCode::OK, &empty));
        assert!(!signals_overload(StatusCode::INTERNAL_SERVER_ERROR, &empty));
        let grpc = |code: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(&GRPC_STATUS, http::HeaderValue::from_static(code));
            headers
        };
        assert!(signals_overload(StatusCode::OK, &grpc("14")));
        assert!(signals_overload(StatusCode::OK, &grpc("8")));
        assert!(!signals_overload(StatusCode::OK, &grpc("0")));
        assert!(!signals_overload(StatusCode::OK, &grpc("5")));
    }
}
