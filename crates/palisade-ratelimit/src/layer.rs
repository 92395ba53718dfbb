//! [`RateLimitLayer`]: every policy of a request decided together.

use std::cell::Cell;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Request, Response};
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
use crate::headers::{self, HeaderOptions, Member, Reported};
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
        let policies: Vec<Compiled> = policies;
        Ok(RateLimitLayer {
            shared: Arc::new(Shared {
                any_unenforced: policies
                    .iter()
                    .any(|c| c.policy.shadow || c.policy.enforce_percent < 100),
                any_charge_when: policies.iter().any(|c| c.policy.charge_when.is_some()),
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
    /// response owes (none: nothing to write or settle).
    #[inline]
    fn conclude<B>(
        &self,
        request: &Request<B>,
        plan: &Plan,
        verdict: Verdict,
    ) -> Result<Option<Owed>, Box<Rejection>> {
        match verdict {
            Verdict::Decided(true) => Ok(self.owed(request, plan)),
            Verdict::FailOpen => Ok(None),
            verdict => Err(self.refuse(request, plan, verdict)),
        }
    }

    /// The rejection of a request that did not pass, boxed and out of line:
    /// a rejection is a few hundred bytes, which would otherwise grow the
    /// allowed path's stack frame and every move of its result. (Not marked
    /// cold: under a flood, refusals are most requests.)
    #[inline(never)]
    fn refuse<B>(&self, request: &Request<B>, plan: &Plan, verdict: Verdict) -> Box<Rejection> {
        Box::new(self.rejection(request, plan, verdict))
    }

    fn rejection<B>(&self, request: &Request<B>, plan: &Plan, verdict: Verdict) -> Rejection {
        match verdict {
            Verdict::Decided(_) | Verdict::FailOpen => {}
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
        }
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
                        policy_member: compiled.members[part.member].value(),
                        name: &compiled.policy.name,
                        quota: check.quota,
                        decision: check.decision?,
                    })
                })
                .collect()
        };

        {
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
                return Rejection::payload_too_large()
                    .with_detail("This request costs more than the rate limit allows at once.")
                    .with_extension("violated_policies", serde_json::Value::Array(names));
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
            rejection
        }
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
                let compiled = &self.policies[part.policy];
                if let Some(decision) = check.decision
                    && !compiled.policy.shadow
                {
                    owed.reports.push(Compact {
                        member: compiled.members[part.member].clone(),
                        name_len: compiled.policy.name.len() as u8,
                        limit: check.quota.count(),
                        remaining: decision.remaining(),
                        reset_secs: headers::ceil_secs(decision.reset),
                    });
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

    /// The response-dependent charges of an allowed request.
    fn deferred(&self, plan: &Plan) -> Option<Box<Deferred>> {
        let mut checks: SmallVec<[(Check, ChargePredicate, Option<String>); 2]> = SmallVec::new();
        for (i, (check, part)) in plan.checks.iter().zip(&plan.parts).enumerate() {
            if let Some(predicate) = &self.policies[part.policy].policy.charge_when {
                checks.push((*check, Arc::clone(predicate), plan.keys.get(i).cloned()));
            }
        }
        (!checks.is_empty()).then(|| {
            Box::new(Deferred {
                backend: self.backend.clone(),
                checks,
            })
        })
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
                    Ok(owed) => {
                        ResponseFuture::ready(CoreFuture::inner(self.inner.call(request)), owed)
                    }
                    Err(rejection) => ResponseFuture::ready(
                        CoreFuture::rejected(respond(&request, *rejection)),
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
                        Ok(owed) => {
                            ResponseFuture::ready(CoreFuture::inner(inner.call(request)), owed)
                                .await
                        }
                        Err(rejection) => Ok(respond(&request, *rejection)),
                    }
                }))
            }
        }
    }
}

/// One reported policy of an allowed request: its member and the numbers
/// its fields are written from.
pub(crate) struct Compact {
    /// `"name";q=..;w=..`: usually a pointer to an interned value.
    member: Member,
    /// The policy name's length (at most 64).
    name_len: u8,
    limit: u32,
    remaining: u32,
    reset_secs: u64,
}

impl Compact {
    /// `"name"`, the start of this policy's members in both fields.
    #[inline]
    fn quoted_name(&self) -> &[u8] {
        let member = self.member.value().as_bytes();
        &member[..(usize::from(self.name_len) + 2).min(member.len())]
    }

    /// The length of this policy's `RateLimit` member,
    /// `"name";r=<remaining>;t=<reset>`.
    #[inline]
    fn state_len(&self) -> usize {
        self.quoted_name().len() + 6 + digits(u64::from(self.remaining)) + digits(self.reset_secs)
    }

    /// Writes this policy's `RateLimit` member.
    #[inline]
    fn write_state(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.quoted_name());
        out.extend_from_slice(b";r=");
        push_number(out, u64::from(self.remaining));
        out.extend_from_slice(b";t=");
        push_number(out, self.reset_secs);
    }
}

/// Carried by the response future: the fields to write and the charges to
/// settle once the response arrives.
pub(crate) struct Owed {
    reports: SmallVec<[Compact; 2]>,
    legacy: bool,
    deferred: Option<Box<Deferred>>,
}

impl Owed {
    /// Writes the rate-limit fields on the response and settles
    /// response-dependent charges.
    pub(crate) fn settle<B>(self, response: &mut Response<B>) {
        let Owed {
            reports,
            legacy,
            deferred,
        } = self;
        if !reports.is_empty() {
            Self::write_fields(&reports, legacy, response.headers_mut());
        }
        if let Some(deferred) = deferred {
            deferred.settle(response.status());
        }
    }

    /// `RateLimit-Policy` (the policies' members) and `RateLimit`, appended:
    /// when an inner layer or the handler already wrote items, ours form
    /// another field line of the same list, so a client sees every policy of
    /// every stacked layer.
    ///
    /// `RateLimit` is written straight into a buffer of its exact length,
    /// which becomes the value without a copy: the one allocation of an
    /// allowed request.
    fn write_fields(reports: &[Compact], legacy: bool, headers: &mut http::HeaderMap) {
        let (policy, state) = match reports {
            // The usual case: the member itself (interned: a plain copy),
            // and one member of `RateLimit`.
            [only] => {
                let mut state = Vec::with_capacity(only.state_len());
                only.write_state(&mut state);
                (only.member.value().clone(), state)
            }
            reports => Self::joined(reports),
        };
        if legacy {
            Self::write_legacy(reports, headers);
        }
        // By value, made at compile time: no reference count, no copy call.
        headers.append(
            const { HeaderName::from_static("ratelimit-policy") },
            policy,
        );
        headers.append(
            const { HeaderName::from_static("ratelimit") },
            headers::value(state),
        );
    }

    /// Both fields' values for several policies (kept out of the one-policy
    /// path, whose stack frame it would grow).
    #[inline(never)]
    fn joined(reports: &[Compact]) -> (HeaderValue, Vec<u8>) {
        let mut policy: SmallVec<[u8; 128]> = SmallVec::new();
        let len = reports.iter().map(Compact::state_len).sum::<usize>()
            + 2 * reports.len().saturating_sub(1);
        let mut state = Vec::with_capacity(len);
        for (i, report) in reports.iter().enumerate() {
            if i > 0 {
                policy.extend_from_slice(b", ");
                state.extend_from_slice(b", ");
            }
            policy.extend_from_slice(report.member.value().as_bytes());
            report.write_state(&mut state);
        }
        (headers::value_from(&policy), state)
    }

    /// The legacy `X-RateLimit-*` fields, for the policy with the fewest
    /// requests left. Single-valued: the inner (more specific) values win.
    #[inline(never)]
    fn write_legacy(reports: &[Compact], headers: &mut http::HeaderMap) {
        let Some(tightest) = reports.iter().min_by_key(|r| r.remaining) else {
            return;
        };
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

/// The number of decimal digits of `n`.
#[inline]
fn digits(n: u64) -> usize {
    n.checked_ilog10().unwrap_or(0) as usize + 1
}

/// Appends the decimal digits of `n`, made two at a time from the last
/// (half the divisions of one at a time; each is a multiply and a shift).
#[inline]
fn push_number(out: &mut Vec<u8>, mut n: u64) {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut digits_of_n = [0u8; 20];
    let mut at = digits_of_n.len();
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        at -= 2;
        digits_of_n[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        at -= 2;
        digits_of_n[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        at -= 1;
        digits_of_n[at] = b'0' + n as u8;
    }
    out.extend_from_slice(&digits_of_n[at..]);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Quota;

    #[test]
    fn numbers_are_written_in_decimal() {
        for n in [
            0,
            1,
            9,
            10,
            11,
            99,
            100,
            101,
            999,
            1_000,
            65_536,
            999_999_999,
            1_000_000_000,
            u64::from(u32::MAX),
            10_000_000_000_000_000_000,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            push_number(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes(), "{n}");
            assert_eq!(digits(n), out.len(), "{n}");
        }
    }

    fn report(name: &str, quota: Quota, remaining: u32, reset_secs: u64) -> Compact {
        Compact {
            member: headers::policy_member(name, &quota),
            name_len: name.len() as u8,
            limit: quota.count(),
            remaining,
            reset_secs,
        }
    }

    #[test]
    fn fields_are_written_with_their_exact_lengths() {
        let mut headers = http::HeaderMap::new();
        headers.append("ratelimit", HeaderValue::from_static("\"inner\";r=1;t=1"));
        let reports = [
            report("per_ip", Quota::per_minute(100), 0, 60),
            report("daily-64", Quota::per_day(5_000), u32::MAX, 86_400),
        ];
        for report in &reports {
            let mut state = Vec::new();
            report.write_state(&mut state);
            assert_eq!(state.len(), report.state_len());
        }
        Owed::write_fields(&reports, true, &mut headers);
        let values = |name: &str| -> Vec<&[u8]> {
            headers
                .get_all(name)
                .iter()
                .map(HeaderValue::as_bytes)
                .collect()
        };
        assert_eq!(
            values("ratelimit-policy"),
            [&b"\"per_ip\";q=100;w=60, \"daily-64\";q=5000;w=86400"[..]]
        );
        // Appended after the inner layer's line: one list, every policy.
        assert_eq!(
            values("ratelimit"),
            [
                &b"\"inner\";r=1;t=1"[..],
                &b"\"per_ip\";r=0;t=60, \"daily-64\";r=4294967295;t=86400"[..]
            ]
        );
        assert_eq!(values("x-ratelimit-remaining"), [&b"0"[..]]);
        assert_eq!(values("x-ratelimit-limit"), [&b"100"[..]]);
        assert_eq!(values("x-ratelimit-reset"), [&b"60"[..]]);
    }

    #[test]
    fn one_policy_carries_its_member_itself() {
        let mut headers = http::HeaderMap::new();
        Owed::write_fields(
            &[report("burst", Quota::per_second(10), 3, 1)],
            false,
            &mut headers,
        );
        assert_eq!(
            headers.get("ratelimit-policy").map(HeaderValue::as_bytes),
            Some(&b"\"burst\";q=10;w=1"[..])
        );
        assert_eq!(
            headers.get("ratelimit").map(HeaderValue::as_bytes),
            Some(&b"\"burst\";r=3;t=1"[..])
        );
        assert!(!headers.contains_key("x-ratelimit-limit"));
    }
}
