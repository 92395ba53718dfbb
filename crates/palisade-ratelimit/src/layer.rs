//! [`RateLimitLayer`]: every policy of a request decided together.

use std::cell::Cell;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
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
use crate::headers::{self, HeaderOptions, Member, Report};
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
    /// Some policy is in shadow mode or partly enforced.
    any_unenforced: bool,
    /// Some policy charges by the response.
    any_charge_when: bool,
    /// One always-enforced policy, charged up front: the common layer,
    /// decided without a plan when its store is in memory (`call_single`).
    single: bool,
}

struct Compiled {
    policy: RateLimitPolicy,
    /// The store's keyed hash after this policy's name.
    prefix: std::hash::DefaultHasher,
    /// The policy's Redis namespace (`rl:<name>`), for the Redis store.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    redis_namespace: String,
    /// `"name";q=..;w=..` per tier (one for a fixed quota); computed once.
    /// Its first `name.len() + 2` bytes, `"name"`, start this policy's
    /// `RateLimit` member too.
    members: Vec<Member>,
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
        let policies: Vec<Compiled> = self
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
                            TierLimit::Unlimited => Member::none(),
                        })
                        .collect(),
                };
                Compiled {
                    prefix: backend.prefix_hasher(&policy.name),
                    redis_namespace: crate::policy::redis_namespace(&policy.name),
                    policy,
                    members,
                }
            })
            .collect();
        let any_unenforced = policies
            .iter()
            .any(|c| c.policy.shadow || c.policy.enforce_percent < 100);
        let any_charge_when = policies.iter().any(|c| c.policy.charge_when.is_some());
        Ok(RateLimitLayer {
            shared: Arc::new(Shared {
                single: policies.len() == 1 && !any_unenforced && !any_charge_when,
                any_unenforced,
                any_charge_when,
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
    /// Decided and charged by the Redis store's local fallback, so given
    /// back there too.
    charged_locally: bool,
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
        for index in 0..self.policies.len() {
            let Some((check, part, _key)) = self.prepare(index, request, &head) else {
                continue;
            };
            #[cfg(feature = "redis")]
            if let Backend::Redis(store) = &self.backend {
                plan.keys
                    .push(store.key_name(&self.policies[index].redis_namespace, &_key));
            }
            plan.checks.push(check);
            plan.parts.push(part);
        }
    }

    /// Policy `index`'s check of a request, with its key; `None` when the
    /// policy does not apply to it (exempt, unlimited tier, no key to skip).
    /// Always inlined: returned by value, the check and key would be copied.
    #[inline(always)]
    fn prepare<B>(
        &self,
        index: usize,
        request: &Request<B>,
        head: &RequestHead<'_>,
    ) -> Option<(Check, Part, Key)> {
        let compiled = &self.policies[index];
        let policy = &compiled.policy;
        if policy.is_exempt(head) {
            return None;
        }
        let (member, quota) = match &policy.quota {
            QuotaSource::Fixed(quota) => (0, *quota),
            QuotaSource::Tiers(tiers) => match tiers.select(head.principal()) {
                (tier, TierLimit::Limited(quota)) => (tier, quota),
                (_, TierLimit::Unlimited) => return None,
            },
        };
        let key = match policy.key.extract(request) {
            Some(key) => key,
            None => match policy.missing_key {
                MissingKey::Shared => Key::default(),
                MissingKey::Skip => return None,
            },
        };
        let enforced = !policy.shadow
            && (policy.enforce_percent >= 100 || percent_roll() < policy.enforce_percent);
        let hash = {
            let mut hasher = compiled.prefix.clone();
            std::hash::Hasher::write(&mut hasher, key.as_bytes());
            std::hash::Hasher::finish(&hasher)
        };
        let check = Check {
            hash,
            quota,
            cost: policy.weight.cost(head),
            enforced,
            decision: None,
        };
        Some((
            check,
            Part {
                policy: index,
                member,
            },
            key,
        ))
    }

    /// A policy's part of a response's fields; `None` for a policy the
    /// store did not decide, and for a shadow policy, which is reported to
    /// the audit log, never to clients (they would back off from a limit
    /// not enforced).
    #[inline]
    fn report(&self, check: &Check, part: &Part) -> Option<Report> {
        let compiled = &self.policies[part.policy];
        let decision = check.decision?;
        if compiled.policy.shadow {
            return None;
        }
        Some(Report::new(
            compiled.members[part.member].clone(),
            &compiled.policy.name,
            &check.quota,
            &decision,
        ))
    }

    /// The rejection of a request that did not pass: a decided refusal, or a
    /// store that failed closed or is full. Out of line: a rejection is a
    /// few hundred bytes, which would otherwise grow the allowed path's stack
    /// frame. (Not marked cold: under a flood, refusals are most requests.)
    #[inline(never)]
    fn rejection<B>(&self, request: &Request<B>, plan: &Plan, verdict: Verdict) -> Rejection {
        match verdict {
            Verdict::FailClosed => {
                AuditEvent::refused(
                    LAYER,
                    RejectionKind::Unavailable,
                    "rate-limit store unavailable",
                )
                .request(request)
                .emit();
                return Rejection::unavailable(Duration::from_secs(1))
                    .with_detail("Rate limits cannot be checked right now; retry shortly.");
            }
            Verdict::StoreFull => {
                AuditEvent::refused(
                    LAYER,
                    RejectionKind::Overloaded,
                    "rate-limit store full of live keys",
                )
                .request(request)
                .emit();
                return Rejection::overloaded(Duration::from_secs(1))
                    .with_detail("Too many clients at once; retry shortly.");
            }
            // A refusal decided by the store (the callers never pass the
            // verdicts that let a request through).
            Verdict::Decided(_) | Verdict::FailOpen => {}
        }
        // The enforced policies that refused, named from the plan itself
        // (the reports leave shadow policies out).
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
            c.enforced && c.cost > c.quota.burst_size() && c.decision.is_some_and(|d| !d.allowed)
        }) {
            let mut event = AuditEvent::refused(
                LAYER,
                RejectionKind::PayloadTooLarge,
                "request costs more than a burst",
            )
            .request(request);
            if let Some((name, _)) = violated().next() {
                event = event.policy(name);
            }
            event.emit();
            return Rejection::payload_too_large()
                .with_detail("This request costs more than the rate limit allows at once.")
                .with_extension("violated_policies", serde_json::Value::Array(names));
        }
        let retry_after = violated()
            .map(|(_, decision)| decision.retry_after())
            .max()
            .unwrap_or(Duration::from_secs(1));
        let mut rejection = Rejection::rate_limited(retry_after)
            .with_detail("Rate limit exceeded; see the violated policies and Retry-After.")
            .with_extension("violated_policies", serde_json::Value::Array(names));
        // The same fields as an allowed response's, written by the same code.
        let reports: SmallVec<[Report; 2]> = plan
            .checks
            .iter()
            .zip(&plan.parts)
            .filter_map(|(check, part)| self.report(check, part))
            .collect();
        headers::write_fields(&reports, self.headers.legacy, rejection.headers_mut());
        let mut event =
            AuditEvent::refused(LAYER, RejectionKind::RateLimited, "rate limit exhausted")
                .request(request);
        // The first policy that refused (the body lists them all).
        if let Some((name, _)) = violated().next() {
            event = event.policy(name);
        }
        event.emit();
        rejection
    }

    /// What an allowed request owes its response: the fields to write and
    /// the charges to settle (none: nothing).
    #[inline]
    fn owed<B>(&self, request: &Request<B>, plan: &Plan) -> Option<Owed> {
        // Only numbers and copies of the policies' members travel with the
        // response; its fields are written when it arrives (`Owed::settle`),
        // with no allocation before then. Plain loops over one or two
        // policies; what no policy of the layer uses is skipped whole.
        if self.any_unenforced
            && plan
                .checks
                .iter()
                .any(|c| !c.enforced && c.decision.is_some_and(|d| !d.allowed))
        {
            AuditEvent::allowed(LAYER, "over a shadow or partly enforced rate limit")
                .request(request)
                .emit();
        }
        let mut owed = Owed {
            reports: SmallVec::new(),
            legacy: self.headers.legacy,
            deferred: None,
        };
        if self.headers.on_allowed {
            for (check, part) in plan.checks.iter().zip(&plan.parts) {
                if let Some(report) = self.report(check, part) {
                    owed.reports.push(report);
                }
            }
        }
        if self.any_charge_when {
            owed.deferred = self.deferred(plan);
        }
        if owed.reports.is_empty() && owed.deferred.is_none() {
            return None;
        }
        Some(owed)
    }

    /// The response-dependent charges of an allowed request: only checks
    /// that were charged (a refused shadow check, or one the store left
    /// undecided, has nothing to give back), to be given back where they
    /// were charged.
    fn deferred(&self, plan: &Plan) -> Option<Box<Deferred>> {
        let mut checks: SmallVec<[(Check, ChargePredicate, Option<String>); 2]> = SmallVec::new();
        for (i, (check, part)) in plan.checks.iter().zip(&plan.parts).enumerate() {
            if let Some(predicate) = &self.policies[part.policy].policy.charge_when
                && check.decision.is_some_and(|d| d.allowed)
            {
                checks.push((*check, Arc::clone(predicate), plan.keys.get(i).cloned()));
            }
        }
        if checks.is_empty() {
            return None;
        }
        let backend = match &self.backend {
            #[cfg(feature = "redis")]
            Backend::Redis(store) if plan.charged_locally => Backend::Memory(store.local().clone()),
            backend => backend.clone(),
        };
        Some(Box::new(Deferred { backend, checks }))
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

    #[inline]
    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        if self.shared.single
            && let Backend::Memory(store) = &self.shared.backend
        {
            return call_single(&self.shared, store, &mut self.inner, request);
        }
        let shared: &Shared = &self.shared;
        let mut plan = Plan {
            checks: SmallVec::new(),
            parts: SmallVec::new(),
            keys: SmallVec::new(),
            charged_locally: false,
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
                if let Verdict::Decided(true) = verdict {
                    let owed = shared.owed(&request, &plan);
                    ResponseFuture::ready(CoreFuture::inner(self.inner.call(request)), owed)
                } else {
                    let rejection = shared.rejection(&request, &plan, verdict);
                    ResponseFuture::ready(CoreFuture::rejected(respond(&request, rejection)), None)
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
                        crate::redis_store::RedisOutcome::DecidedLocally(passes) => {
                            plan.charged_locally = true;
                            Verdict::Decided(passes)
                        }
                        crate::redis_store::RedisOutcome::FailOpen => Verdict::FailOpen,
                        crate::redis_store::RedisOutcome::FailClosed => Verdict::FailClosed,
                    };
                    let owed = match verdict {
                        Verdict::Decided(true) => shared.owed(&request, &plan),
                        Verdict::FailOpen => None,
                        verdict => {
                            let rejection = shared.rejection(&request, &plan, verdict);
                            return Ok(respond(&request, rejection));
                        }
                    };
                    ResponseFuture::ready(CoreFuture::inner(inner.call(request)), owed).await
                }))
            }
        }
    }
}

/// The common layer (one always-enforced policy, charged up front, in
/// memory) decided without a plan: one check on the stack, no vectors to
/// fill and walk, the report made straight from the decision.
#[inline]
fn call_single<S, ReqBody, ResBody>(
    shared: &Shared,
    store: &MemoryStore,
    inner: &mut S,
    request: Request<ReqBody>,
) -> ResponseFuture<S::Future, ResBody, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    let head = RequestHead::of(&request);
    let Some((mut check, part, _)) = shared.prepare(0, &request, &head) else {
        return ResponseFuture::ready(CoreFuture::inner(inner.call(request)), None);
    };
    let verdict = match store.decide_one(&mut check) {
        Ok(true) => {
            let owed = if shared.headers.on_allowed {
                shared
                    .report(&check, &part)
                    .map(|report| Owed::one(report, shared.headers.legacy))
            } else {
                None
            };
            return ResponseFuture::ready(CoreFuture::inner(inner.call(request)), owed);
        }
        Ok(false) => Verdict::Decided(false),
        Err(_) => Verdict::StoreFull,
    };
    let mut plan = Plan {
        checks: SmallVec::new(),
        parts: SmallVec::new(),
        keys: SmallVec::new(),
        charged_locally: false,
    };
    plan.checks.push(check);
    plan.parts.push(part);
    let rejection = shared.rejection(&request, &plan, verdict);
    ResponseFuture::ready(CoreFuture::rejected(respond(&request, rejection)), None)
}

/// Carried by the response future: the fields to write and the charges to
/// settle once the response arrives.
pub(crate) struct Owed {
    reports: SmallVec<[Report; 2]>,
    legacy: bool,
    deferred: Option<Box<Deferred>>,
}

impl Owed {
    /// The fields of one policy.
    #[inline]
    fn one(report: Report, legacy: bool) -> Self {
        let mut reports = SmallVec::new();
        reports.push(report);
        Owed {
            reports,
            legacy,
            deferred: None,
        }
    }

    /// Writes the rate-limit fields on the response and settles
    /// response-dependent charges. In place: what is owed is read where the
    /// future holds it, not moved out first.
    #[inline]
    pub(crate) fn settle<B>(&mut self, response: &mut Response<B>) {
        if !self.reports.is_empty() {
            headers::write_fields(&self.reports, self.legacy, response.headers_mut());
        }
        if let Some(deferred) = self.deferred.take() {
            deferred.settle(response.status());
        }
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
                        runtime.spawn(async move { store.refund(&check, &key).await });
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
