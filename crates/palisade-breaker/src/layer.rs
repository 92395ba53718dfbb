//! [`CircuitBreakerLayer`] and its service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use palisade_core::audit::{AuditEvent, TARGET};
use palisade_core::body::ResponseBody;
use palisade_core::clock::{Clock, Nanos, SystemClock, duration_to_nanos};
use palisade_core::key::{Key, KeyFn};
use palisade_core::render::respond;
use palisade_core::store::{Idle, KeyedStore};
use palisade_core::{ConfigError, Rejection, RejectionKind};
use tokio::sync::broadcast;
use tower_layer::Layer;
use tower_service::Service;

use crate::classify::{Classify, DefaultClassifier};
use crate::fallback::{Fallback, NoFallback, ServiceFallback};
use crate::future::{BreakerBody, CallGuard, ResponseFuture, Target};
use crate::handle::{BreakerHandle, StateChange};
use crate::machine::{Breaker, Outcome, State, Transition};
use crate::policy::BreakerPolicy;

/// The layer's audit and log name.
pub(crate) const LAYER: &str = "breaker";
pub(crate) const FORCED_NONE: u8 = 0;
pub(crate) const FORCED_OPEN: u8 = 1;
pub(crate) const FORCED_CLOSED: u8 = 2;

/// A circuit breaker around the inner service: while the upstream fails,
/// calls are refused at once (503 + `Retry-After`, or gRPC UNAVAILABLE) or
/// answered by a fallback, instead of piling onto it.
///
/// One breaker for the layer, or one per key ([`per_key`]). State lives
/// behind an `Arc`: clones and every route the layer is applied to share
/// it. Outcomes are judged by a [`Classify`] ([`DefaultClassifier`]: 5xx and
/// the server's gRPC faults fail, 4xx and cancelled calls are ignored).
///
/// [`per_key`]: CircuitBreakerLayerBuilder::per_key
///
/// ```
/// use axum::{Router, routing::get};
/// use palisade_breaker::{BreakerPolicy, CircuitBreakerLayer};
/// use std::time::Duration;
///
/// # fn app() -> Result<Router, palisade_core::ConfigError> {
/// let breaker = CircuitBreakerLayer::builder("inventory")
///     .policy(BreakerPolicy::builder().failure_rate(0.5).minimum_calls(20).build()?)
///     .build()?;
/// let handle = breaker.handle(); // state, force, reset, subscribe
/// # let _ = handle;
/// Ok(Router::new()
///     .route("/inventory", get(|| async { "stock" }))
///     .route_layer(breaker))
/// # }
/// ```
pub struct CircuitBreakerLayer<F = NoFallback> {
    shared: Arc<Shared>,
    fallback: F,
    backpressure: bool,
}

impl<F: Clone> Clone for CircuitBreakerLayer<F> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            fallback: self.fallback.clone(),
            backpressure: self.backpressure,
        }
    }
}

impl<F> fmt::Debug for CircuitBreakerLayer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("name", &self.shared.name)
            .field("policy", &self.shared.policy)
            .field("per_key", &self.shared.keyed.as_ref().map(|k| &k.key))
            .field("backpressure", &self.backpressure)
            .finish()
    }
}

pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    pub(crate) policy: Arc<BreakerPolicy>,
    /// The breaker of a layer that is not per key, and of requests that have
    /// no key.
    pub(crate) breaker: Breaker,
    pub(crate) keyed: Option<Keyed>,
    pub(crate) classifier: Box<dyn Classify>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) events: broadcast::Sender<StateChange>,
    pub(crate) forced: AtomicU8,
    /// Bumped by a reset; per-key breakers reset when theirs is older.
    pub(crate) reset_epoch: AtomicU32,
    #[cfg(feature = "metrics")]
    pub(crate) metrics: crate::metrics::Metrics,
}

pub(crate) struct Keyed {
    pub(crate) key: KeyFn,
    pub(crate) store: KeyedStore<Slot>,
    idle_after: u64,
}

/// One per-key breaker.
pub(crate) struct KeyedBreaker {
    pub(crate) breaker: Breaker,
    pub(crate) key: Key,
    epoch: AtomicU32,
    last_used: AtomicU64,
    idle_after: u64,
}

/// A store slot: the breaker is shared with the calls in flight.
pub(crate) struct Slot(pub(crate) Arc<KeyedBreaker>);

impl Idle for Slot {
    fn is_idle(&self, now: Nanos) -> bool {
        // A breaker with calls in flight stays, so their outcomes land.
        if Arc::strong_count(&self.0) > 1 {
            return false;
        }
        let breaker = &self.0.breaker;
        let unused = now
            .as_u64()
            .saturating_sub(self.0.last_used.load(Ordering::Relaxed))
            >= self.0.idle_after;
        breaker.is_fresh(now) || (unused && breaker.state() == State::Closed)
    }
}

impl Shared {
    pub(crate) fn forced_state(&self) -> Option<State> {
        match self.forced.load(Ordering::Acquire) {
            FORCED_OPEN => Some(State::ForcedOpen),
            FORCED_CLOSED => Some(State::ForcedClosed),
            _ => None,
        }
    }

    /// Logs, counts and broadcasts a change of state.
    pub(crate) fn announce(&self, key: Option<&Key>, transition: Transition) {
        let key_text = key.map(|k| k.to_string());
        let reason = match transition.to {
            State::Open => "opened",
            State::HalfOpen => "half_opened",
            State::Closed => "closed",
            State::ForcedOpen => "forced_open",
            State::ForcedClosed => "forced_closed",
        };
        // The audit target, with the breaker's own fields: which breaker,
        // which key, and from which state.
        if transition.to == State::Open {
            tracing::warn!(
                target: TARGET,
                layer = LAYER,
                decision = "state_changed",
                reason,
                breaker = &*self.name,
                key = key_text.as_deref(),
                from = transition.from.as_str(),
                to = transition.to.as_str(),
                open_for_ms = transition.open_for.map(|d| d.as_millis() as u64),
            );
        } else {
            tracing::info!(
                target: TARGET,
                layer = LAYER,
                decision = "state_changed",
                reason,
                breaker = &*self.name,
                key = key_text.as_deref(),
                from = transition.from.as_str(),
                to = transition.to.as_str(),
            );
        }
        #[cfg(feature = "metrics")]
        self.metrics.transition(key.is_none(), transition.to);
        // No subscriber is not an error.
        let _ = self.events.send(StateChange {
            breaker: self.name.clone(),
            key: key_text,
            from: transition.from,
            to: transition.to,
            open_for: transition.open_for,
        });
    }

    /// The breaker a request goes through.
    #[inline]
    fn target<B>(&self, request: &Request<B>) -> Target {
        let Some(keyed) = &self.keyed else {
            return Target::Shared;
        };
        let Some(key) = keyed.key.extract(request) else {
            return Target::Shared;
        };
        let now = self.clock.now();
        let epoch = self.reset_epoch.load(Ordering::Acquire);
        let found = keyed.store.update(
            key.as_bytes(),
            now,
            || {
                Slot(Arc::new(KeyedBreaker {
                    breaker: Breaker::new(self.policy.clone()),
                    key: key.clone(),
                    epoch: AtomicU32::new(epoch),
                    last_used: AtomicU64::new(now.as_u64()),
                    idle_after: keyed.idle_after,
                }))
            },
            |slot| slot.0.clone(),
        );
        match found {
            Ok(entry) => {
                entry.last_used.store(now.as_u64(), Ordering::Relaxed);
                if entry.epoch.swap(epoch, Ordering::AcqRel) != epoch {
                    entry.breaker.reset();
                }
                Target::Keyed(entry)
            }
            // Every slot holds a live breaker: share the layer's breaker
            // rather than go unprotected.
            Err(_) => Target::Shared,
        }
    }
}

/// Builds a [`CircuitBreakerLayer`].
pub struct CircuitBreakerLayerBuilder<F = NoFallback> {
    name: String,
    policy: BreakerPolicy,
    key: Option<KeyFn>,
    max_keys: usize,
    idle_after: Duration,
    classifier: Option<Box<dyn Classify>>,
    clock: Option<Arc<dyn Clock>>,
    fallback: F,
    backpressure: bool,
}

impl<F> fmt::Debug for CircuitBreakerLayerBuilder<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayerBuilder")
            .field("name", &self.name)
            .field("policy", &self.policy)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl CircuitBreakerLayer {
    /// A builder for a breaker named `name` (letters, digits, `-`, `_`,
    /// `.`; used in events and metrics).
    pub fn builder(name: impl Into<String>) -> CircuitBreakerLayerBuilder {
        CircuitBreakerLayerBuilder {
            name: name.into(),
            policy: BreakerPolicy::default(),
            key: None,
            max_keys: 10_000,
            idle_after: Duration::from_secs(600),
            classifier: None,
            clock: None,
            fallback: NoFallback,
            backpressure: false,
        }
    }
}

impl<F> CircuitBreakerLayerBuilder<F> {
    /// When the breaker opens and how it recovers (default:
    /// [`BreakerPolicy::default`]).
    pub fn policy(mut self, policy: BreakerPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// One breaker per key (upstream host header, route template, tenant, or
    /// any core key) instead of one for the layer. Requests without the key
    /// share the layer's breaker.
    pub fn per_key(mut self, key: KeyFn) -> Self {
        self.key = Some(key);
        self
    }

    /// The most per-key breakers held at once (default 10,000). When every
    /// slot holds a live breaker, new keys share the layer's breaker.
    pub fn max_keys(mut self, keys: usize) -> Self {
        self.max_keys = keys;
        self
    }

    /// A closed per-key breaker unused this long is dropped (default 10 min).
    pub fn idle_after(mut self, idle: Duration) -> Self {
        self.idle_after = idle;
        self
    }

    /// How outcomes are judged (default [`DefaultClassifier`]).
    pub fn classifier(mut self, classifier: impl Classify) -> Self {
        self.classifier = Some(Box::new(classifier));
        self
    }

    /// The clock (default: the system's monotonic clock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Makes `poll_ready` wait while the breaker is open, instead of
    /// refusing calls: for client-side stacks (a load balancer that picks
    /// another endpoint when this one is not ready). Caveats: callers that
    /// wait on readiness stall for the open duration (put a timeout
    /// outside); only the layer's shared breaker is watched, so it does not
    /// combine with [`per_key`](Self::per_key); a call made anyway while
    /// open is still refused.
    pub fn backpressure(mut self) -> Self {
        self.backpressure = true;
        self
    }

    /// Answers refused calls with `fallback` (a cached copy, a degraded
    /// answer) instead of 503. It must return the inner service's response
    /// and error types.
    pub fn fallback<T>(self, fallback: T) -> CircuitBreakerLayerBuilder<ServiceFallback<T>> {
        CircuitBreakerLayerBuilder {
            name: self.name,
            policy: self.policy,
            key: self.key,
            max_keys: self.max_keys,
            idle_after: self.idle_after,
            classifier: self.classifier,
            clock: self.clock,
            fallback: ServiceFallback(fallback),
            backpressure: self.backpressure,
        }
    }

    /// Validates and builds.
    pub fn build(self) -> Result<CircuitBreakerLayer<F>, ConfigError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !name_ok {
            return Err(ConfigError::invalid(
                "name",
                "a breaker's name is 1 to 64 letters, digits, `-`, `_` or `.`",
            ));
        }
        if self.backpressure && self.key.is_some() {
            return Err(ConfigError::invalid(
                "backpressure",
                "backpressure watches the layer's shared breaker; it does not combine with per-key breakers",
            ));
        }
        let keyed = match self.key {
            Some(key) => {
                if self.idle_after.is_zero() {
                    return Err(ConfigError::invalid(
                        "idle_after",
                        "per-key breakers need an idle time above zero",
                    ));
                }
                Some(Keyed {
                    key,
                    store: KeyedStore::builder().capacity(self.max_keys).build()?,
                    idle_after: duration_to_nanos(self.idle_after),
                })
            }
            None => None,
        };
        let policy = Arc::new(self.policy);
        let name: Arc<str> = self.name.into();
        let (events, _) = broadcast::channel(64);
        Ok(CircuitBreakerLayer {
            shared: Arc::new(Shared {
                #[cfg(feature = "metrics")]
                metrics: crate::metrics::Metrics::new(&name),
                name,
                breaker: Breaker::new(policy.clone()),
                policy,
                keyed,
                classifier: self
                    .classifier
                    .unwrap_or_else(|| Box::new(DefaultClassifier::new())),
                clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
                events,
                forced: AtomicU8::new(FORCED_NONE),
                reset_epoch: AtomicU32::new(0),
            }),
            fallback: self.fallback,
            backpressure: self.backpressure,
        })
    }
}

impl<F> CircuitBreakerLayer<F> {
    /// A handle on this layer's breakers: state, force, reset, events.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<S, F: Clone> Layer<S> for CircuitBreakerLayer<F> {
    type Service = CircuitBreaker<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker {
            inner,
            shared: self.shared.clone(),
            fallback: self.fallback.clone(),
            backpressure: self.backpressure,
            waiting: None,
        }
    }
}

/// The service made by [`CircuitBreakerLayer`].
pub struct CircuitBreaker<S, F = NoFallback> {
    inner: S,
    shared: Arc<Shared>,
    fallback: F,
    backpressure: bool,
    /// Backpressure: the sleep until the open breaker lets a probe through.
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S: Clone, F: Clone> Clone for CircuitBreaker<S, F> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            fallback: self.fallback.clone(),
            backpressure: self.backpressure,
            waiting: None,
        }
    }
}

impl<S: fmt::Debug, F> fmt::Debug for CircuitBreaker<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("breaker", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl<S, F> CircuitBreaker<S, F> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming the breaker.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// A handle on the breakers.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle {
            shared: self.shared.clone(),
        }
    }

    /// Backpressure: pending while the shared breaker is open.
    fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if let Some(sleep) = self.waiting.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.waiting = None;
            }
            let wait = match self.shared.forced_state() {
                Some(State::ForcedOpen) => self.shared.policy.open_duration,
                Some(_) => return Poll::Ready(()),
                None if self.shared.breaker.state() == State::Open => self
                    .shared
                    .breaker
                    .retry_after(&*self.shared.clock)
                    .unwrap_or_default(),
                None => return Poll::Ready(()),
            };
            if wait.is_zero() {
                return Poll::Ready(());
            }
            self.waiting = Some(Box::pin(tokio::time::sleep(wait)));
        }
    }
}

impl<S, F, ReqBody, ResBody> Service<Request<ReqBody>> for CircuitBreaker<S, F>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    F: Fallback<Request<ReqBody>, Response<ResBody>, S::Error>,
{
    type Response = Response<ResponseBody<BreakerBody<ResBody>>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, F::Future, ResBody>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.backpressure && self.poll_closed(cx).is_pending() {
            return Poll::Pending;
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let shared = &self.shared;
        match shared.forced.load(Ordering::Acquire) {
            FORCED_NONE => {}
            FORCED_OPEN => {
                let wait = shared.policy.open_duration;
                return self.refuse(request, wait);
            }
            _ => return ResponseFuture::call(self.inner.call(request), None),
        }
        let target = shared.target(&request);
        let breaker = match &target {
            Target::Shared => &shared.breaker,
            Target::Keyed(entry) => &entry.breaker,
        };
        let acquired = breaker.acquire(&*shared.clock);
        if let Some(transition) = acquired.transition {
            shared.announce(target.key(), transition);
        }
        match acquired.ticket {
            Ok(ticket) => {
                let guard = CallGuard::new(shared.clone(), target, ticket);
                ResponseFuture::call(self.inner.call(request), Some(guard))
            }
            Err(wait) => self.refuse(request, wait),
        }
    }
}

impl<S, F> CircuitBreaker<S, F> {
    #[cold]
    fn refuse<ReqBody, ResBody, E>(
        &mut self,
        request: Request<ReqBody>,
        wait: Duration,
    ) -> ResponseFuture<S::Future, F::Future, ResBody>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>, Error = E>,
        F: Fallback<Request<ReqBody>, Response<ResBody>, E>,
    {
        #[cfg(feature = "metrics")]
        self.shared.metrics.refused();
        AuditEvent::refused(LAYER, RejectionKind::CircuitOpen, "circuit_open")
            .request(&request)
            .emit();
        if F::ENABLED {
            return ResponseFuture::fallback(self.fallback.call(request));
        }
        let response = respond::<_, BreakerBody<ResBody>>(&request, Rejection::circuit_open(wait));
        ResponseFuture::rejected(response)
    }
}

/// Records an outcome for a call, announcing any change of state.
pub(crate) fn finish(
    shared: &Shared,
    target: &Target,
    ticket: crate::machine::Ticket,
    outcome: Outcome,
) {
    let breaker = match target {
        Target::Shared => &shared.breaker,
        Target::Keyed(entry) => &entry.breaker,
    };
    #[cfg(feature = "metrics")]
    shared.metrics.outcome(outcome);
    if let Some(transition) = breaker.record(ticket, outcome, &*shared.clock) {
        shared.announce(target.key(), transition);
    }
}
