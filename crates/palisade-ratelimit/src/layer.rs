//! [`RateLimitLayer`]: every policy of a request decided together.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{HeaderValue, Request, Response};
use palisade_core::audit::AuditEvent;
use palisade_core::body::ResponseBody;
use palisade_core::future::ResponseFuture as CoreFuture;
use palisade_core::guard::RequestHead;
use palisade_core::key::Key;
use palisade_core::render::respond;
use palisade_core::{ConfigError, Rejection, RejectionKind};
use pin_project_lite::pin_project;
use smallvec::SmallVec;
use tower_layer::Layer;
use tower_service::Service;

use crate::headers::{self, Fields, HeaderOptions, Reported};
use crate::memory::{Check, MemoryStore};
use crate::policy::{ChargePredicate, MissingKey, QuotaSource, RateLimitPolicy, TierLimit};

/// The layer's audit and log name.
const LAYER: &str = "ratelimit";

/// Limits requests by one or more named policies, decided together: a
/// request passes only if every enforced policy has room, and only then is
/// any charged. State lives behind an `Arc`: the same layer applied to many
/// routes (`route_layer`) shares it, and clones share it.
///
/// ```
/// use palisade_core::key::KeyFn;
/// use palisade_ratelimit::{Quota, RateLimitLayer, RateLimitPolicy};
///
/// let layer = RateLimitLayer::builder()
///     .policy(RateLimitPolicy::builder("per_ip", KeyFn::ClientIp, Quota::per_minute(100).burst(20)?)
///         .exempt_path("/health")
///         .build()?)
///     .build()?;
/// # let _ = layer;
/// # Ok::<(), palisade_core::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct RateLimitLayer {
    shared: Arc<Shared>,
}

struct Shared {
    policies: Vec<Compiled>,
    store: MemoryStore,
    headers: HeaderOptions,
}

struct Compiled {
    policy: RateLimitPolicy,
    /// `"name";q=..;w=..` per tier (one for a fixed quota); computed once.
    members: Vec<HeaderValue>,
}

impl fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field(
                "policies",
                &self
                    .shared
                    .policies
                    .iter()
                    .map(|c| &c.policy)
                    .collect::<Vec<_>>(),
            )
            .field("store", &self.shared.store)
            .field("headers", &self.shared.headers)
            .finish()
    }
}

/// Builds a [`RateLimitLayer`].
#[derive(Debug, Default)]
pub struct RateLimitLayerBuilder {
    policies: Vec<RateLimitPolicy>,
    store: Option<MemoryStore>,
    headers: HeaderOptions,
}

impl RateLimitLayerBuilder {
    /// Adds a policy.
    pub fn policy(mut self, policy: RateLimitPolicy) -> Self {
        self.policies.push(policy);
        self
    }

    /// The store (default: a new in-memory store). Layers given clones of
    /// one store share its state; policy names keep their keys apart.
    pub fn store(mut self, store: MemoryStore) -> Self {
        self.store = Some(store);
        self
    }

    /// Which rate-limit fields go on responses.
    pub fn headers(mut self, headers: HeaderOptions) -> Self {
        self.headers = headers;
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<RateLimitLayer, ConfigError> {
        if self.policies.is_empty() {
            return Err(ConfigError::invalid(
                "policies",
                "a rate-limit layer needs at least one policy",
            ));
        }
        for (i, policy) in self.policies.iter().enumerate() {
            if self.policies[..i].iter().any(|p| p.name == policy.name) {
                return Err(ConfigError::invalid(
                    "policies",
                    format!("two policies are named `{}`", policy.name),
                ));
            }
        }
        let policies = self
            .policies
            .into_iter()
            .map(|policy| {
                let members = match &policy.quota {
                    QuotaSource::Fixed(quota) => vec![headers::policy_member(&policy.name, quota)],
                    QuotaSource::Tiers(tiers) => tiers
                        .limits()
                        .map(|(_, limit)| match limit {
                            TierLimit::Limited(quota) => {
                                headers::policy_member(&policy.name, quota)
                            }
                            TierLimit::Unlimited => HeaderValue::from_static(""),
                        })
                        .collect(),
                };
                Compiled { policy, members }
            })
            .collect();
        Ok(RateLimitLayer {
            shared: Arc::new(Shared {
                policies,
                store: self.store.unwrap_or_default(),
                headers: self.headers,
            }),
        })
    }
}

impl RateLimitLayer {
    /// A builder.
    pub fn builder() -> RateLimitLayerBuilder {
        RateLimitLayerBuilder::default()
    }

    /// The store, to inspect or share.
    pub fn store(&self) -> &MemoryStore {
        &self.shared.store
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service made by [`RateLimitLayer`].
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> RateLimit<S> {
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

/// A policy's part of one request.
struct Part {
    policy: usize,
    member: usize,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let shared = &*self.shared;
        let mut checks: SmallVec<[Check; 4]> = SmallVec::new();
        let mut parts: SmallVec<[Part; 4]> = SmallVec::new();
        {
            let head = RequestHead::of(&request);
            for (index, compiled) in shared.policies.iter().enumerate() {
                let policy = &compiled.policy;
                if policy.is_exempt(&head) {
                    continue;
                }
                let (member, quota) = match &policy.quota {
                    QuotaSource::Fixed(quota) => (0, *quota),
                    QuotaSource::Tiers(tiers) => match tiers.select(head.principal()) {
                        (tier, TierLimit::Limited(quota)) => (tier, quota),
                        (_, TierLimit::Unlimited) => continue,
                    },
                };
                let key = match policy.key.extract(&request) {
                    Some(key) => key,
                    None => match policy.missing_key {
                        MissingKey::Shared => Key::default(),
                        MissingKey::Skip => continue,
                    },
                };
                let enforced = !policy.shadow
                    && (policy.enforce_percent >= 100 || percent_roll() < policy.enforce_percent);
                checks.push(Check {
                    hash: shared.store.hash(&policy.name, key.as_bytes()),
                    quota,
                    cost: policy.weight.cost(&head),
                    enforced,
                    charge_now: policy.charge_when.is_none(),
                    decision: None,
                });
                parts.push(Part {
                    policy: index,
                    member,
                });
            }
        }
        if checks.is_empty() {
            return ResponseFuture::new(
                CoreFuture::inner(self.inner.call(request)),
                Fields::new(),
                None,
            );
        }

        let passes = match shared.store.decide(&mut checks) {
            Ok(passes) => passes,
            Err(_full) => {
                AuditEvent::refused(
                    LAYER,
                    RejectionKind::Overloaded,
                    "rate-limit store full of live keys",
                )
                .request(&request)
                .emit();
                let rejection = Rejection::overloaded(Duration::from_secs(1))
                    .with_detail("Too many clients at once; retry shortly.");
                return ResponseFuture::new(
                    CoreFuture::rejected(respond(&request, rejection)),
                    Fields::new(),
                    None,
                );
            }
        };

        let reported: SmallVec<[Reported<'_>; 4]> = checks
            .iter()
            .zip(&parts)
            .filter_map(|(check, part)| {
                let compiled = &shared.policies[part.policy];
                Some(Reported {
                    policy_member: &compiled.members[part.member],
                    name: &compiled.policy.name,
                    quota: check.quota,
                    decision: check.decision?,
                })
            })
            .collect();

        if !passes {
            let violated: Vec<serde_json::Value> = reported
                .iter()
                .zip(&checks)
                .filter(|(r, check)| check.enforced && !r.decision.allowed)
                .map(|(r, _)| serde_json::Value::from(r.name))
                .collect();
            let retry_after = reported
                .iter()
                .zip(&checks)
                .filter(|(r, check)| check.enforced && !r.decision.allowed)
                .map(|(r, _)| r.decision.retry_after)
                .max()
                .unwrap_or(Duration::from_secs(1));
            let mut rejection = Rejection::rate_limited(retry_after)
                .with_detail("Rate limit exceeded; see the violated policies and Retry-After.")
                .with_extension("violated_policies", serde_json::Value::Array(violated));
            for (name, value) in headers::fields(
                &reported,
                HeaderOptions {
                    on_allowed: true,
                    ..shared.headers
                },
            ) {
                rejection = rejection.with_header(name, value);
            }
            AuditEvent::refused(LAYER, RejectionKind::RateLimited, "rate limit exhausted")
                .request(&request)
                .emit();
            return ResponseFuture::new(
                CoreFuture::rejected(respond(&request, rejection)),
                Fields::new(),
                None,
            );
        }

        if checks
            .iter()
            .any(|c| !c.enforced && c.decision.is_some_and(|d| !d.allowed))
        {
            AuditEvent::allowed(LAYER, "over a shadow or partly enforced rate limit")
                .request(&request)
                .emit();
        }
        let fields = if shared.headers.on_allowed {
            headers::fields(&reported, shared.headers)
        } else {
            Fields::new()
        };
        let deferred: SmallVec<[(Check, ChargePredicate); 2]> = checks
            .iter()
            .zip(&parts)
            .filter_map(|(check, part)| {
                let predicate = shared.policies[part.policy].policy.charge_when.as_ref()?;
                Some((*check, Arc::clone(predicate)))
            })
            .collect();
        let deferred = (!deferred.is_empty()).then(|| Deferred {
            store: shared.store.clone(),
            checks: deferred,
        });
        drop(reported);
        ResponseFuture::new(
            CoreFuture::inner(self.inner.call(request)),
            fields,
            deferred,
        )
    }
}

/// Charges owed once the response is known.
struct Deferred {
    store: MemoryStore,
    checks: SmallVec<[(Check, ChargePredicate); 2]>,
}

/// What an allowed request still owes its response: fields to add and
/// charges to make. Boxed, so the future stays small (futures are moved on
/// every call; a large one costs more in copies than one allocation).
struct AfterResponse {
    fields: Fields,
    deferred: Option<Deferred>,
}

pin_project! {
    /// The response future of [`RateLimit`].
    pub struct ResponseFuture<F, B> {
        #[pin]
        inner: CoreFuture<F, B>,
        after: Option<Box<AfterResponse>>,
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B> ResponseFuture<F, B> {
    fn new(inner: CoreFuture<F, B>, fields: Fields, deferred: Option<Deferred>) -> Self {
        let after = (!fields.is_empty() || deferred.is_some())
            .then(|| Box::new(AfterResponse { fields, deferred }));
        Self { inner, after }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        let Some(after) = this.after.take() else {
            return Poll::Ready(Ok(response));
        };
        let AfterResponse { fields, deferred } = *after;
        let headers = response.headers_mut();
        headers.reserve(fields.len());
        for (name, value) in fields {
            // A handler's own values win.
            headers.entry(name).or_insert(value);
        }
        if let Some(deferred) = deferred {
            let status = response.status();
            for (check, predicate) in &deferred.checks {
                if predicate(status) {
                    deferred.store.charge(check);
                }
            }
        }
        Poll::Ready(Ok(response))
    }
}

thread_local! {
    static ROLL: Cell<u64> = Cell::new(RandomState::new().hash_one(std::thread::current().id()) | 1);
}

/// A number in `0..100`, for partial enforcement: a per-thread xorshift,
/// seeded at random; no lock, no system call.
fn percent_roll() -> u8 {
    ROLL.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        (x % 100) as u8
    })
}
