//! [`ConcurrencyLimitLayer`]: at most N requests in flight per key.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Extensions, HeaderMap, Method, Request, Response};
use palisade_core::audit::AuditEvent;
use palisade_core::clock::{Clock, SystemClock};
use palisade_core::key::{Key, KeyFn};
use palisade_core::render::respond;
use palisade_core::store::KeyedStore;
use palisade_core::{ConfigError, Rejection, RejectionKind};
use tower_layer::Layer;
use tower_service::Service;

use crate::future::{LayerResponse, ResponseFuture};
use crate::keyed::{Acquire, KeyedCounts, Waiter};
use crate::permit::Permit;
use palisade_core::exempt::Exemptions;

/// The layer's name in audit events.
pub(crate) const LAYER: &str = "concurrency";

/// The longest a request may be configured to wait in a queue.
const MAX_QUEUE_WAIT: Duration = Duration::from_secs(3_600);

/// What a limit does with a request it cannot key (a [`KeyFn::Subject`]
/// limit in front of authentication, a request without a client address).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum MissingKey {
    /// All such requests share one limit, as if they had one key (the
    /// default). Nobody escapes the limit by hiding their key, and nobody
    /// is refused merely for having none: a limit placed before
    /// authentication still bounds anonymous traffic as a whole.
    #[default]
    Shared,
    /// The limit does not apply to them. Safe only when something else
    /// bounds them (an authentication layer that refuses them anyway).
    Skip,
    /// They are refused, as if their limit were zero.
    Refuse,
}

/// At most `max_in_flight` requests at once per key (client address,
/// subject, tenant, API key id, route, or any [`KeyFn`]).
///
/// A request over its key's limit is refused at once with 429 Too Many
/// Requests (gRPC `RESOURCE_EXHAUSTED`) and `Retry-After`; with the
/// [`KeyFn::Global`] key, which limits the whole service, with 503 Service
/// Unavailable (gRPC `UNAVAILABLE`). With a [queue](ConcurrencyLimitLayerBuilder::queue)
/// it waits instead, in FIFO order, up to a deadline, and is then refused
/// the same way.
///
/// A request holds its place from `call` until its response body ends (last
/// frame read, or the body dropped), the response future is dropped, or the
/// inner service fails: a streaming response counts for as long as it
/// streams, and a client that goes away gives its place back.
///
/// State lives behind an `Arc`: the layer applied to several routes (axum
/// `route_layer`) and its clones share one limit per key. Key on
/// [`KeyFn::RouteTemplate`] (alone or in a tuple) for a limit per route.
///
/// ```
/// use palisade_concurrency::ConcurrencyLimitLayer;
/// use palisade_core::key::KeyFn;
/// use std::time::Duration;
///
/// // At most 4 requests per client address at once; a fifth waits up to
/// // 200 ms behind at most 8 others.
/// let per_client = ConcurrencyLimitLayer::builder()
///     .key(KeyFn::ClientIp)
///     .max_in_flight(4)
///     .queue(8, Duration::from_millis(200))
///     .exempt_path("/health")
///     .build()?;
/// # let _ = per_client;
/// # Ok::<(), palisade_core::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct ConcurrencyLimitLayer {
    shared: Arc<LimitShared>,
}

#[derive(Clone, Copy, Debug)]
struct Queue {
    max_waiting: u32,
    max_wait: Duration,
}

pub(crate) struct LimitShared {
    key: KeyFn,
    /// The key is [`KeyFn::Global`]: a refusal is 503, not 429.
    global: bool,
    max_in_flight: u32,
    queue: Option<Queue>,
    missing_key: MissingKey,
    exemptions: Exemptions,
    retry_after: Duration,
    /// The in-flight count of a global limit without a queue: one atomic,
    /// no lock at all.
    counter: AtomicU32,
    counts: KeyedCounts,
    /// The store hash of the global key, and of requests without a key.
    global_hash: u64,
    missing_hash: u64,
}

impl fmt::Debug for ConcurrencyLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = &self.shared;
        f.debug_struct("ConcurrencyLimitLayer")
            .field("key", &shared.key)
            .field("max_in_flight", &shared.max_in_flight)
            .field("queue", &shared.queue)
            .field("missing_key", &shared.missing_key)
            .field("exemptions", &shared.exemptions)
            .field("retry_after", &shared.retry_after)
            .finish_non_exhaustive()
    }
}

/// Builds a [`ConcurrencyLimitLayer`].
pub struct ConcurrencyLimitLayerBuilder {
    key: KeyFn,
    max_in_flight: Option<u32>,
    queue: Option<Queue>,
    missing_key: MissingKey,
    exemptions: Exemptions,
    retry_after: Duration,
    store_capacity: usize,
    clock: Option<Arc<dyn Clock>>,
}

impl fmt::Debug for ConcurrencyLimitLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimitLayerBuilder")
            .field("key", &self.key)
            .field("max_in_flight", &self.max_in_flight)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl ConcurrencyLimitLayerBuilder {
    /// What requests are keyed on (default [`KeyFn::Global`]: one limit for
    /// every request).
    pub fn key(mut self, key: KeyFn) -> Self {
        self.key = key;
        self
    }

    /// The most requests in flight per key; required, at least 1.
    pub fn max_in_flight(mut self, max: u32) -> Self {
        self.max_in_flight = Some(max);
        self
    }

    /// Lets requests over the limit wait, in FIFO order: at most
    /// `max_waiting` per key, each at most `max_wait`; then they are
    /// refused as they would have been at once. Waiting needs a tokio
    /// runtime with its timer (as axum and tonic servers have); without
    /// one, requests are refused at once.
    pub fn queue(mut self, max_waiting: u32, max_wait: Duration) -> Self {
        self.queue = Some(Queue {
            max_waiting,
            max_wait,
        });
        self
    }

    /// What to do with requests that cannot be keyed (default
    /// [`MissingKey::Shared`]).
    pub fn missing_key(mut self, missing: MissingKey) -> Self {
        self.missing_key = missing;
        self
    }

    /// Exempts a path (`/health`), or every path under a prefix (`/static/*`).
    pub fn exempt_path(mut self, path: impl Into<String>) -> Self {
        self.exemptions.add_path(path.into());
        self
    }

    /// Exempts a method (such as `OPTIONS` for CORS preflights).
    pub fn exempt_method(mut self, method: Method) -> Self {
        self.exemptions.add_method(method);
        self
    }

    /// The `Retry-After` of refusals (default 1 s; sent in whole seconds,
    /// at least 1).
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = after;
        self
    }

    /// The most keys tracked at once (default 100,000). A new key that
    /// finds the store full of keys with requests in flight is refused with
    /// 503: letting it through would let a flood of fresh keys pass
    /// unlimited.
    pub fn store_capacity(mut self, capacity: usize) -> Self {
        self.store_capacity = capacity;
        self
    }

    /// The clock for the store's idle sweeps (default [`SystemClock`]).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<ConcurrencyLimitLayer, ConfigError> {
        let max_in_flight = match self.max_in_flight {
            None => return Err(ConfigError::invalid("max_in_flight", "must be set")),
            Some(0) => {
                return Err(ConfigError::invalid(
                    "max_in_flight",
                    "must be at least 1 (exempt the requests instead)",
                ));
            }
            Some(max) => max,
        };
        if let Some(queue) = self.queue {
            if queue.max_waiting == 0 {
                return Err(ConfigError::invalid(
                    "queue.max_waiting",
                    "must be at least 1 (leave the queue out instead)",
                ));
            }
            if queue.max_wait.is_zero() || queue.max_wait > MAX_QUEUE_WAIT {
                return Err(ConfigError::invalid(
                    "queue.max_wait",
                    "must be more than zero and at most an hour",
                ));
            }
        }
        let store = KeyedStore::builder()
            .capacity(self.store_capacity)
            .build()?;
        let counts = KeyedCounts::new(store, self.clock.unwrap_or_else(|| Arc::new(SystemClock)));
        let global_key = KeyFn::Global
            .extract_from(&Method::GET, &HeaderMap::new(), &Extensions::new())
            .unwrap_or_default();
        Ok(ConcurrencyLimitLayer {
            shared: Arc::new(LimitShared {
                global: self.key == KeyFn::Global,
                global_hash: counts.hash(global_key.as_bytes()),
                missing_hash: counts.hash(Key::default().as_bytes()),
                key: self.key,
                max_in_flight,
                queue: self.queue,
                missing_key: self.missing_key,
                exemptions: self.exemptions,
                retry_after: self.retry_after,
                counter: AtomicU32::new(0),
                counts,
            }),
        })
    }
}

impl ConcurrencyLimitLayer {
    /// A builder: the global key, no queue, 1 s `Retry-After`;
    /// `max_in_flight` must be set.
    pub fn builder() -> ConcurrencyLimitLayerBuilder {
        ConcurrencyLimitLayerBuilder {
            key: KeyFn::Global,
            max_in_flight: None,
            queue: None,
            missing_key: MissingKey::Shared,
            exemptions: Exemptions::default(),
            retry_after: Duration::from_secs(1),
            store_capacity: 100_000,
            clock: None,
        }
    }

    /// The most requests in flight per key.
    pub fn max_in_flight(&self) -> u32 {
        self.shared.max_in_flight
    }

    /// How many requests are in flight under the key `request` has (0 for
    /// an exempt or skipped request), for operations and tests.
    pub fn in_flight_of<B>(&self, request: &Request<B>) -> u32 {
        match self.shared.target(request) {
            Target::Counter => self.shared.counter.load(Ordering::Acquire),
            Target::Keyed(hash) => self.shared.counts.in_flight(hash),
            Target::Unlimited | Target::Refuse => 0,
        }
    }
}

/// Where a request's place is counted.
enum Target {
    Unlimited,
    Counter,
    Keyed(u64),
    Refuse,
}

/// Why a request was refused, for the audit event.
#[derive(Clone, Copy)]
enum Refusal {
    Full,
    QueueTimeout,
    StoreFull,
    MissingKey,
}

impl LimitShared {
    #[inline]
    fn target<B>(&self, request: &Request<B>) -> Target {
        if self
            .exemptions
            .matches_request(request.method(), request.uri())
        {
            return Target::Unlimited;
        }
        if self.global {
            return match self.queue {
                None => Target::Counter,
                Some(_) => Target::Keyed(self.global_hash),
            };
        }
        match self.key.extract(request) {
            Some(key) => Target::Keyed(self.counts.hash(key.as_bytes())),
            None => match self.missing_key {
                MissingKey::Shared => Target::Keyed(self.missing_hash),
                MissingKey::Skip => Target::Unlimited,
                MissingKey::Refuse => Target::Refuse,
            },
        }
    }

    pub(crate) fn counts(&self) -> &KeyedCounts {
        &self.counts
    }

    #[inline]
    fn try_counter(&self) -> bool {
        self.counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_in_flight).then_some(n + 1)
            })
            .is_ok()
    }

    pub(crate) fn release_counter(&self) {
        // Each counter permit added exactly one.
        self.counter.fetch_sub(1, Ordering::AcqRel);
    }

    pub(crate) fn release_keyed(&self, hash: u64) {
        self.counts.release(hash);
    }

    /// The refusal, rendered for the request (problem+json or gRPC), and
    /// audited.
    fn refuse<ReqBody, ResBody>(
        &self,
        request: &Request<ReqBody>,
        why: Refusal,
    ) -> LayerResponse<ResBody> {
        let (rejection, reason) = match why {
            Refusal::StoreFull => (
                Rejection::overloaded(self.retry_after)
                    .with_detail("Too many clients at once; retry shortly."),
                "concurrency key store full of live keys",
            ),
            _ if self.global => (
                Rejection::overloaded(self.retry_after)
                    .with_detail("The service is at its concurrency limit; retry shortly."),
                match why {
                    Refusal::QueueTimeout => "global concurrency queue wait timed out",
                    _ => "global concurrency limit full",
                },
            ),
            _ => (
                Rejection::too_many_concurrent()
                    .with_retry_after(self.retry_after)
                    .with_detail("Too many concurrent requests from this client; retry shortly."),
                match why {
                    Refusal::QueueTimeout => "per-key concurrency queue wait timed out",
                    Refusal::MissingKey => "request without a key refused",
                    _ => "per-key concurrency limit full",
                },
            ),
        };
        let kind: RejectionKind = rejection.kind();
        AuditEvent::refused(LAYER, kind, reason)
            .request(request)
            .emit();
        respond(request, rejection)
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service made by [`ConcurrencyLimitLayer`].
#[derive(Clone)]
pub struct ConcurrencyLimit<S> {
    inner: S,
    shared: Arc<LimitShared>,
}

impl<S: fmt::Debug> fmt::Debug for ConcurrencyLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> ConcurrencyLimit<S> {
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ConcurrencyLimit<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: http_body::Body + Send + 'static,
{
    type Response = LayerResponse<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let shared: &LimitShared = &self.shared;
        let hash = match shared.target(&request) {
            Target::Unlimited => return ResponseFuture::admitted(self.inner.call(request), None),
            Target::Refuse => {
                return ResponseFuture::rejected(shared.refuse(&request, Refusal::MissingKey));
            }
            Target::Counter => {
                if shared.try_counter() {
                    let permit = Permit::counter(Arc::clone(&self.shared));
                    return ResponseFuture::admitted(self.inner.call(request), Some(permit));
                }
                return ResponseFuture::rejected(shared.refuse(&request, Refusal::Full));
            }
            Target::Keyed(hash) => hash,
        };
        let queue = shared.queue;
        let max_waiting = queue.map_or(0, |q| q.max_waiting);
        match shared
            .counts
            .acquire(hash, shared.max_in_flight, max_waiting)
        {
            Acquire::Admitted => {
                let permit = Permit::keyed(Arc::clone(&self.shared), hash);
                ResponseFuture::admitted(self.inner.call(request), Some(permit))
            }
            Acquire::Full => ResponseFuture::rejected(shared.refuse(&request, Refusal::Full)),
            Acquire::StoreFull => {
                ResponseFuture::rejected(shared.refuse(&request, Refusal::StoreFull))
            }
            Acquire::Queued(receiver) => {
                let max_wait = queue.map_or(Duration::ZERO, |q| q.max_wait);
                let shared = Arc::clone(&self.shared);
                let waiter = Waiter::new(receiver, Arc::clone(&shared), hash);
                // Waiting needs tokio's timer. Asked only here, where a
                // request would wait (the lookup clones the runtime's
                // handle): without a runtime, the waiter gives its queue
                // place up on drop and the request is refused at once.
                if tokio::runtime::Handle::try_current().is_err() {
                    drop(waiter);
                    return ResponseFuture::rejected(shared.refuse(&request, Refusal::Full));
                }
                // The ready service goes with the request; a clone stays.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::queued(Box::pin(async move {
                    if waiter.wait(max_wait).await {
                        let permit = Permit::keyed(Arc::clone(&shared), hash);
                        ResponseFuture::admitted(inner.call(request), Some(permit)).await
                    } else {
                        Ok(shared.refuse(&request, Refusal::QueueTimeout))
                    }
                }))
            }
        }
    }
}
