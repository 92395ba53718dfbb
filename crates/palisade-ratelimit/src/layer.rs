//! [`RateLimitLayer`]: every policy of a request decided together.

use std::cell::Cell;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, Request, Response};
use palisade_core::audit::AuditEvent;
use palisade_core::body::ResponseBody;
use palisade_core::future::ResponseFuture as CoreFuture;
use palisade_core::guard::RequestHead;
use palisade_core::key::Key;
use palisade_core::render::respond;
use palisade_core::{ConfigError, Rejection, RejectionKind};
use smallvec::SmallVec;
use tower_layer::Layer;
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::headers::{self, HeaderOptions, Reported};
use crate::memory::{Check, MemoryStore};
use crate::policy::{ChargePredicate, MissingKey, QuotaSource, RateLimitPolicy, TierLimit};

/// The layer's audit and log name.
const LAYER: &str = "ratelimit";

/// Limits requests by one or more named policies, decided together: a
/// request passes only if every enforced policy has room, and only then is
/// any charged. State lives behind an `Arc`: the same layer applied to many
/// routes (`route_layer`) shares it, and clones share it.
///
/// The inner service must be `Clone + Send + 'static` (as axum and tonic
/// services are): with a Redis store the decision is awaited before the
/// inner service is called, and the ready service travels with the request.
/// With the in-memory store the decision is made inside `call`, with no
/// extra future and no boxing.
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
    backend: Backend,
    headers: HeaderOptions,
}

struct Compiled {
    policy: RateLimitPolicy,
    /// The store's keyed hash after this policy's name.
    prefix: std::hash::DefaultHasher,
    /// The policy's Redis namespace (`rl:<name>`), for the Redis store.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    redis_namespace: String,
    /// `"name";q=..;w=..` per tier (one for a fixed quota); computed once.
    members: Vec<HeaderValue>,
    /// `"name";r=`, the start of this policy's `RateLimit` member.
    state_prefix: Box<[u8]>,
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
            .field("backend", &self.shared.backend)
            .field("headers", &self.shared.headers)
            .finish()
    }
}

/// Builds a [`RateLimitLayer`].
#[derive(Debug, Default)]
pub struct RateLimitLayerBuilder {
    policies: Vec<RateLimitPolicy>,
    backend: Option<Backend>,
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
        self.backend = Some(Backend::Memory(store));
        self
    }

    /// Keeps the state in Redis, shared by every instance (feature `redis`).
    #[cfg(feature = "redis")]
    pub fn redis_store(mut self, store: crate::redis_store::RedisStore) -> Self {
        self.backend = Some(Backend::Redis(store));
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
        let backend = self
            .backend
            .unwrap_or_else(|| Backend::Memory(MemoryStore::default()));
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
                Compiled {
                    state_prefix: format!("\"{}\";r=", policy.name).into_bytes().into(),
                    prefix: backend.prefix_hasher(&policy.name),
                    redis_namespace: crate::policy::redis_namespace(&policy.name),
                    policy,
                    members,
                }
            })
            .collect();
        Ok(RateLimitLayer {
            shared: Arc::new(Shared {
                policies,
                backend,
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

    /// The in-memory store, when the layer keeps its state in memory.
    pub fn memory_store(&self) -> Option<&MemoryStore> {
        match &self.shared.backend {
            Backend::Memory(store) => Some(store),
            #[cfg(feature = "redis")]
            Backend::Redis(_) => None,
        }
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

/// The checks of one request, before any store is asked.
struct Plan {
    checks: SmallVec<[Check; 2]>,
    parts: SmallVec<[Part; 2]>,
    /// Redis key names, only for the Redis store.
    keys: SmallVec<[String; 2]>,
}

/// What the store said.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
enum Verdict {
    Decided(bool),
    StoreFull,
    FailOpen,
    FailClosed,
}

impl Shared {
    /// Fills `plan` in place (it is a few hundred bytes: returning it by
    /// value would copy it).
    #[inline]
    fn plan<B>(&self, request: &Request<B>, plan: &mut Plan) {
        let head = RequestHead::of(request);
        for (index, compiled) in self.policies.iter().enumerate() {
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
            let key = match policy.key.extract(request) {
                Some(key) => key,
                None => match policy.missing_key {
                    MissingKey::Shared => Key::default(),
                    MissingKey::Skip => continue,
                },
            };
            let enforced = !policy.shadow
                && (policy.enforce_percent >= 100 || percent_roll() < policy.enforce_percent);
            #[cfg(feature = "redis")]
            if let Backend::Redis(store) = &self.backend {
                plan.keys
                    .push(store.key_name(&compiled.redis_namespace, &key));
            }
            let hash = {
                let mut hasher = compiled.prefix.clone();
                std::hash::Hasher::write(&mut hasher, key.as_bytes());
                std::hash::Hasher::finish(&hasher)
            };
            plan.checks.push(Check {
                hash,
                quota,
                cost: policy.weight.cost(&head),
                enforced,
                charge_now: true,
                decision: None,
            });
            plan.parts.push(Part {
                policy: index,
                member,
            });
        }
    }

    /// Either the rejection to answer with, or the fields and charges the
    /// response owes.
    #[inline]
    fn conclude<B>(
        &self,
        request: &Request<B>,
        plan: &Plan,
        verdict: Verdict,
    ) -> Result<Allowed, Rejection> {
        let passes = match verdict {
            Verdict::Decided(passes) => passes,
            Verdict::FailOpen => return Ok(Allowed::default()),
            Verdict::FailClosed => {
                AuditEvent::refused(
                    LAYER,
                    RejectionKind::Unavailable,
                    "rate-limit store unavailable",
                )
                .request(request)
                .emit();
                return Err(Rejection::unavailable(Duration::from_secs(1))
                    .with_detail("Rate limits cannot be checked right now; retry shortly."));
            }
            Verdict::StoreFull => {
                AuditEvent::refused(
                    LAYER,
                    RejectionKind::Overloaded,
                    "rate-limit store full of live keys",
                )
                .request(request)
                .emit();
                return Err(Rejection::overloaded(Duration::from_secs(1))
                    .with_detail("Too many clients at once; retry shortly."));
            }
        };
        // Built only when fields are written (refusals, or allowed
        // responses when configured).
        let reported = || -> SmallVec<[Reported<'_>; 2]> {
            plan.checks
                .iter()
                .zip(&plan.parts)
                .filter_map(|(check, part)| {
                    let compiled = &self.policies[part.policy];
                    // Shadow policies are reported to the audit log, never to
                    // clients: they would back off from a limit not enforced.
                    if compiled.policy.shadow {
                        return None;
                    }
                    Some(Reported {
                        policy_member: &compiled.members[part.member],
                        name: &compiled.policy.name,
                        quota: check.quota,
                        decision: check.decision?,
                    })
                })
                .collect()
        };

        if !passes {
            // The enforced policies that refused, named from the plan itself
            // (the reported list leaves shadow policies out).
            let violated = || {
                plan.checks
                    .iter()
                    .zip(&plan.parts)
                    .filter_map(|(check, part)| {
                        let decision = check.decision?;
                        (check.enforced && !decision.allowed)
                            .then(|| (&*self.policies[part.policy].policy.name, decision))
                    })
            };
            let names: Vec<serde_json::Value> = violated()
                .map(|(name, _)| serde_json::Value::from(name))
                .collect();
            // A request that costs more than a policy's whole burst can never
            // pass, however long it waits: too large, not too early.
            if plan.checks.iter().any(|c| {
                c.enforced
                    && c.cost > c.quota.burst_size()
                    && c.decision.is_some_and(|d| !d.allowed)
            }) {
                AuditEvent::refused(
                    LAYER,
                    RejectionKind::PayloadTooLarge,
                    "request costs more than a burst",
                )
                .request(request)
                .emit();
                return Err(Rejection::payload_too_large()
                    .with_detail("This request costs more than the rate limit allows at once.")
                    .with_extension("violated_policies", serde_json::Value::Array(names)));
            }
            let retry_after = violated()
                .map(|(_, decision)| decision.retry_after)
                .max()
                .unwrap_or(Duration::from_secs(1));
            let mut rejection = Rejection::rate_limited(retry_after)
                .with_detail("Rate limit exceeded; see the violated policies and Retry-After.")
                .with_extension("violated_policies", serde_json::Value::Array(names));
            for (name, value) in headers::fields(
                &reported(),
                HeaderOptions {
                    on_allowed: true,
                    ..self.headers
                },
            )
            .into_pairs()
            {
                rejection = rejection.with_header(name, value);
            }
            AuditEvent::refused(LAYER, RejectionKind::RateLimited, "rate limit exhausted")
                .request(request)
                .emit();
            return Err(rejection);
        }

        if plan
            .checks
            .iter()
            .any(|c| !c.enforced && c.decision.is_some_and(|d| !d.allowed))
        {
            AuditEvent::allowed(LAYER, "over a shadow or partly enforced rate limit")
                .request(request)
                .emit();
        }
        // Only numbers travel with the response; its fields are written
        // when it arrives (`Owed::settle`), with no allocation before then.
        // Plain loops: one or two policies, and iterator adaptors cost more
        // than the work here.
        let mut allowed = Allowed::default();
        let mut owed: SmallVec<[(Check, ChargePredicate, Option<String>); 2]> = SmallVec::new();
        for (i, (check, part)) in plan.checks.iter().zip(&plan.parts).enumerate() {
            let policy = &self.policies[part.policy].policy;
            if self.headers.on_allowed
                && !policy.shadow
                && let Some(decision) = check.decision
            {
                allowed.reports.push(Compact {
                    policy: part.policy,
                    member: part.member,
                    limit: check.quota.count(),
                    remaining: decision.remaining(),
                    reset_secs: headers::ceil_secs(decision.reset),
                });
            }
            if let Some(predicate) = &policy.charge_when {
                owed.push((*check, Arc::clone(predicate), plan.keys.get(i).cloned()));
            }
        }
        if !owed.is_empty() {
            allowed.deferred = Some(Box::new(Deferred {
                backend: self.backend.clone(),
                checks: owed,
            }));
        }
        Ok(allowed)
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let shared: &Shared = &self.shared;
        let mut plan = Plan {
            checks: SmallVec::new(),
            parts: SmallVec::new(),
            keys: SmallVec::new(),
        };
        shared.plan(&request, &mut plan);
        if plan.checks.is_empty() {
            return ResponseFuture::ready(CoreFuture::inner(self.inner.call(request)), None);
        }
        match &shared.backend {
            Backend::Memory(store) => {
                let verdict = match store.decide(&mut plan.checks) {
                    Ok(passes) => Verdict::Decided(passes),
                    Err(_) => Verdict::StoreFull,
                };
                match shared.conclude(&request, &plan, verdict) {
                    Ok(allowed) => ResponseFuture::ready(
                        CoreFuture::inner(self.inner.call(request)),
                        allowed.owed(&self.shared),
                    ),
                    Err(rejection) => ResponseFuture::ready(
                        CoreFuture::rejected(respond(&request, rejection)),
                        None,
                    ),
                }
            }
            #[cfg(feature = "redis")]
            Backend::Redis(store) => {
                let store = store.clone();
                let shared = Arc::clone(&self.shared);
                // The ready service goes with the request; a clone stays.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::boxed(Box::pin(async move {
                    let verdict = match store.decide(&mut plan.checks, &plan.keys).await {
                        crate::redis_store::RedisOutcome::Decided(passes) => {
                            Verdict::Decided(passes)
                        }
                        crate::redis_store::RedisOutcome::FailOpen => Verdict::FailOpen,
                        crate::redis_store::RedisOutcome::FailClosed => Verdict::FailClosed,
                    };
                    match shared.conclude(&request, &plan, verdict) {
                        Ok(allowed) => {
                            let owed = allowed.owed(&shared);
                            ResponseFuture::ready(CoreFuture::inner(inner.call(request)), owed)
                                .await
                        }
                        Err(rejection) => Ok(respond(&request, rejection)),
                    }
                }))
            }
        }
    }
}

/// One reported policy of an allowed request: the numbers its fields are
/// written from.
#[derive(Clone, Copy)]
pub(crate) struct Compact {
    policy: usize,
    member: usize,
    limit: u32,
    remaining: u32,
    reset_secs: u64,
}

/// What an allowed request owes its response.
#[derive(Default)]
pub(crate) struct Allowed {
    reports: SmallVec<[Compact; 2]>,
    deferred: Option<Box<Deferred>>,
}

impl Allowed {
    fn owed(self, shared: &Arc<Shared>) -> Option<Owed> {
        if self.reports.is_empty() && self.deferred.is_none() {
            return None;
        }
        Some(Owed {
            shared: Arc::clone(shared),
            reports: self.reports,
            deferred: self.deferred,
        })
    }
}

/// Carried by the response future: the fields to write and the charges to
/// settle once the response arrives.
pub(crate) struct Owed {
    shared: Arc<Shared>,
    reports: SmallVec<[Compact; 2]>,
    deferred: Option<Box<Deferred>>,
}

impl Owed {
    /// Writes the rate-limit fields on the response and settles
    /// response-dependent charges.
    pub(crate) fn settle<B>(self, response: &mut Response<B>) {
        if !self.reports.is_empty() {
            self.write_fields(response.headers_mut());
        }
        if let Some(deferred) = self.deferred {
            deferred.settle(response.status());
        }
    }

    /// `RateLimit-Policy` (precomputed members) and `RateLimit` (built on the
    /// stack, one copy into the value), appended: when an inner layer or the
    /// handler already wrote items, ours form another field line of the same
    /// list, so a client sees every policy of every stacked layer.
    fn write_fields(&self, headers: &mut http::HeaderMap) {
        let policies = &self.shared.policies;
        let policy = match &self.reports[..] {
            [only] => policies[only.policy].members[only.member].clone(),
            reports => {
                let mut joined: SmallVec<[u8; 96]> = SmallVec::new();
                for (i, report) in reports.iter().enumerate() {
                    if i > 0 {
                        joined.extend_from_slice(b", ");
                    }
                    joined.extend_from_slice(
                        policies[report.policy].members[report.member].as_bytes(),
                    );
                }
                headers::value_from(&joined)
            }
        };
        let state = match &self.reports[..] {
            // The usual case, on the stack with the numbers written in place.
            [only] => {
                let mut state = StateBuffer::new();
                state.push(&policies[only.policy].state_prefix);
                state.push_number(u64::from(only.remaining));
                state.push(b";t=");
                state.push_number(only.reset_secs);
                state.value()
            }
            reports => {
                let mut state: SmallVec<[u8; 96]> = SmallVec::new();
                let mut numbers = itoa::Buffer::new();
                for (i, report) in reports.iter().enumerate() {
                    if i > 0 {
                        state.extend_from_slice(b", ");
                    }
                    state.extend_from_slice(&policies[report.policy].state_prefix);
                    state.extend_from_slice(numbers.format(report.remaining).as_bytes());
                    state.extend_from_slice(b";t=");
                    state.extend_from_slice(numbers.format(report.reset_secs).as_bytes());
                }
                headers::value_from(&state)
            }
        };
        headers.append(&headers::RATELIMIT_POLICY, policy);
        headers.append(&headers::RATELIMIT, state);
        if self.shared.headers.legacy
            && let Some(tightest) = self.reports.iter().min_by_key(|r| r.remaining)
        {
            // Single-valued: the inner (more specific) values win.
            for (name, value) in [
                (&headers::X_RATELIMIT_LIMIT, tightest.limit.into()),
                (&headers::X_RATELIMIT_REMAINING, tightest.remaining.into()),
                (&headers::X_RATELIMIT_RESET, tightest.reset_secs.into()),
            ] {
                if !headers.contains_key(name) {
                    headers.insert(name, value);
                }
            }
        }
    }
}

/// One policy's `RateLimit` member, written into a fixed buffer: policy
/// names are at most 64 bytes, so `"name";r=<u32>;t=<u64>` fits in 128.
struct StateBuffer {
    bytes: [u8; 128],
    len: usize,
}

impl StateBuffer {
    #[inline]
    fn new() -> Self {
        Self {
            bytes: [0; 128],
            len: 0,
        }
    }

    #[inline]
    fn push(&mut self, part: &[u8]) {
        // Bounded by the name limit; a longer part would be cut, never
        // written out of bounds.
        let end = (self.len + part.len()).min(self.bytes.len());
        self.bytes[self.len..end].copy_from_slice(&part[..end - self.len]);
        self.len = end;
    }

    /// Decimal digits written in place (a formatting library would format
    /// into its own buffer, then copy).
    #[inline]
    fn push_number(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[at..]);
    }

    #[inline]
    fn value(&self) -> HeaderValue {
        headers::value_from(&self.bytes[..self.len])
    }
}

/// Where the layer keeps its state.
#[derive(Clone, Debug)]
enum Backend {
    Memory(MemoryStore),
    #[cfg(feature = "redis")]
    Redis(crate::redis_store::RedisStore),
}

impl Backend {
    fn prefix_hasher(&self, policy: &str) -> std::hash::DefaultHasher {
        match self {
            Backend::Memory(store) => store.prefix_hasher(policy),
            #[cfg(feature = "redis")]
            Backend::Redis(store) => store.prefix_hasher(policy),
        }
    }
}

/// Charges owed once the response is known.
pub(crate) struct Deferred {
    backend: Backend,
    checks: SmallVec<[(Check, ChargePredicate, Option<String>); 2]>,
}

impl Deferred {
    /// Response-dependent checks were charged up front; a response that
    /// does not match the policy's predicate gets its charge back. A refund
    /// that cannot be made (Redis down) leaves the charge: over-counting is
    /// the safe side.
    pub(crate) fn settle(self, status: http::StatusCode) {
        for (check, predicate, key) in self.checks {
            if predicate(status) {
                continue;
            }
            #[cfg(not(feature = "redis"))]
            let _ = key;
            match &self.backend {
                Backend::Memory(store) => store.refund(&check),
                #[cfg(feature = "redis")]
                Backend::Redis(store) => {
                    if let (Some(key), Ok(runtime)) = (key, tokio::runtime::Handle::try_current()) {
                        let store = store.clone();
                        runtime.spawn(async move { store.refund(check, key).await });
                    }
                }
            }
        }
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
