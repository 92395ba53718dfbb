//! Fallbacks: what answers a call the breaker refuses.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower_service::Service;

/// What answers calls refused by an open breaker. Implemented by
/// [`NoFallback`] (answer 503) and [`ServiceFallback`] (call a service);
/// set one with
/// [`CircuitBreakerLayerBuilder::fallback`](crate::CircuitBreakerLayerBuilder::fallback).
pub trait Fallback<Request, Response, Error>: Clone {
    /// Whether refused calls go to [`call`](Self::call) rather than being
    /// answered with a rejection.
    const ENABLED: bool;
    /// The fallback's future.
    type Future: Future<Output = Result<Response, Error>>;
    /// Answers a refused call.
    fn call(&mut self, request: Request) -> Self::Future;
}

/// No fallback: refused calls get 503 + `Retry-After` (gRPC UNAVAILABLE).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoFallback;

impl<Request, Response, Error> Fallback<Request, Response, Error> for NoFallback {
    const ENABLED: bool = false;
    type Future = std::future::Pending<Result<Response, Error>>;

    fn call(&mut self, _request: Request) -> Self::Future {
        // Never called: ENABLED is false.
        std::future::pending()
    }
}

/// A service that answers refused calls.
#[derive(Clone, Debug)]
pub struct ServiceFallback<T>(pub(crate) T);

impl<T, Request, Response, Error> Fallback<Request, Response, Error> for ServiceFallback<T>
where
    T: Service<Request, Response = Response, Error = Error> + Clone,
{
    const ENABLED: bool = true;
    type Future = Oneshot<T, Request>;

    fn call(&mut self, request: Request) -> Self::Future {
        // A clone per call, driven to readiness inside the future: the
        // breaker's own readiness does not depend on the fallback's.
        Oneshot {
            state: OneshotState::Waiting {
                service: self.0.clone(),
                request: Some(request),
            },
        }
    }
}

pin_project! {
    /// Waits for a service to be ready, then calls it once.
    pub struct Oneshot<T, Request>
    where
        T: Service<Request>,
    {
        #[pin]
        state: OneshotState<T, Request>,
    }
}

pin_project! {
    #[project = OneshotProj]
    enum OneshotState<T, Request>
    where
        T: Service<Request>,
    {
        Waiting { service: T, request: Option<Request> },
        Called { #[pin] future: T::Future },
    }
}

impl<T, Request> std::fmt::Debug for Oneshot<T, Request>
where
    T: Service<Request>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Oneshot")
    }
}

impl<T, Request> Future for Oneshot<T, Request>
where
    T: Service<Request>,
{
    type Output = Result<T::Response, T::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                OneshotProj::Waiting { service, request } => {
                    ready!(service.poll_ready(cx))?;
                    let Some(request) = request.take() else {
                        // Only reachable if polled after a panic in `call`.
                        return Poll::Pending;
                    };
                    let future = service.call(request);
                    state.set(OneshotState::Called { future });
                }
                OneshotProj::Called { future } => return future.poll(cx),
            }
        }
    }
}
