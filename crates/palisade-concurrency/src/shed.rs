//! [`LoadShedLayer`]: a global capacity shared by ordered priority classes,
//! fixed or driven by an adaptive limit.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, Request, Response};
use palisade_core::audit::AuditEvent;
use palisade_core::clock::{Clock, Nanos, SystemClock};
use palisade_core::principal::Principal;
use palisade_core::render::respond;
use palisade_core::{ConfigError, Rejection, RejectionKind};
use tower_layer::Layer;
use tower_service::Service;

use crate::adaptive::LimitAlgorithm;
use crate::adaptive::window::AdaptiveState;
use crate::future::{LayerResponse, ResponseFuture};
use crate::permit::Permit;
use palisade_core::exempt::Exemptions;

/// The layer's audit and log name.
const LAYER: &str = "load_shed";

/// The name of the gauge that carries the current limit (feature `metrics`),
/// labelled `layer` with the layer's [name](LoadShedLayerBuilder::name).
pub const LIMIT_GAUGE: &str = "palisade_concurrency_limit";

/// Sheds load above a global capacity, keeping a share of it for the
/// traffic that matters most.
///
/// Requests are sorted into ordered priority classes by a classifier (path
/// prefix, principal role, header value; first matching rule wins, else the
/// default class). Each class has a share of the capacity, in percent: a
/// request is admitted while the requests in flight, of every class
/// together, are fewer than its class's share of the capacity. With
/// `critical` 100 %, `default` 80 % and `bulk` 50 % of a capacity of 100:
/// bulk requests are shed once 50 requests are in flight, default ones at
/// 80, and the last 20 places are for critical requests only. So when the
/// service fills up, the lowest classes are shed first and critical traffic
/// still passes. A class's threshold is `capacity × share / 100`, rounded
/// down, so with a very small capacity a low class may be shed entirely.
///
/// The capacity is fixed ([`capacity`](LoadShedLayerBuilder::capacity)) or
/// follows an [adaptive algorithm](crate::adaptive)
/// ([`adaptive`](LoadShedLayerBuilder::adaptive)), readable through a
/// [`LimitHandle`]. A shed request gets 503 Service Unavailable with
/// `Retry-After` (gRPC `UNAVAILABLE`).
///
/// Like every Palisade layer, the state is behind an `Arc`: one layer on
/// many routes is one capacity.
///
/// ```
/// use palisade_concurrency::LoadShedLayer;
///
/// let shed = LoadShedLayer::builder()
///     .capacity(200)
///     .class("critical", 100)
///     .class("default", 80)
///     .class("bulk", 50)
///     .route_prefix("/payments", "critical")
///     .role("admin", "critical")
///     .route_prefix("/reports", "bulk")
///     .exempt_path("/health")
///     .build()?;
/// # let _ = shed;
/// # Ok::<(), palisade_core::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct LoadShedLayer {
    shared: Arc<ShedShared>,
}

#[derive(Debug)]
struct Class {
    name: String,
    share_percent: u32,
}

/// How a request is put in a class.
#[derive(Clone, Debug)]
enum Rule {
    PathPrefix(String),
    Role(String),
    Header(HeaderName, HeaderValue),
}

pub(crate) struct ShedShared {
    name: String,
    in_flight: AtomicU32,
    limit: AtomicU32,
    classes: Box<[Class]>,
    rules: Box<[(Rule, usize)]>,
    default_class: usize,
    exemptions: Exemptions,
    retry_after: Duration,
    adaptive: Option<AdaptiveState>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for LoadShedLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = &self.shared;
        f.debug_struct("LoadShedLayer")
            .field("name", &shared.name)
            .field("limit", &shared.limit.load(Ordering::Relaxed))
            .field("classes", &shared.classes)
            .field("rules", &shared.rules)
            .field("adaptive", &shared.adaptive)
            .finish_non_exhaustive()
    }
}

/// Builds a [`LoadShedLayer`].
pub struct LoadShedLayerBuilder {
    name: String,
    capacity: Option<u32>,
    adaptive: Option<Box<dyn LimitAlgorithm>>,
    window: Duration,
    min_samples: u32,
    classes: Vec<(String, u32)>,
    default_class: Option<String>,
    rules: Vec<(Rule, String)>,
    exemptions: Exemptions,
    retry_after: Duration,
    clock: Option<Arc<dyn Clock>>,
}

impl fmt::Debug for LoadShedLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadShedLayerBuilder")
            .field("name", &self.name)
            .field("capacity", &self.capacity)
            .field("adaptive", &self.adaptive)
            .field("classes", &self.classes)
            .finish_non_exhaustive()
    }
}

impl LoadShedLayerBuilder {
    /// The layer's name, the `layer` label of its metrics (default `load_shed`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// A fixed capacity: the most requests in flight at once.
    pub fn capacity(mut self, capacity: u32) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// A capacity that follows an adaptive algorithm ([`Aimd`](crate::adaptive::Aimd),
    /// [`Gradient2`](crate::adaptive::Gradient2) or your own), measured on
    /// the latency from admission to the response headers.
    pub fn adaptive(mut self, algorithm: impl LimitAlgorithm) -> Self {
        self.adaptive = Some(Box::new(algorithm));
        self
    }

    /// How the adaptive algorithm's windows are cut: at least `length` long
    /// and at least `min_samples` completions (default 100 ms and 10).
    pub fn sample_window(mut self, length: Duration, min_samples: u32) -> Self {
        self.window = length;
        self.min_samples = min_samples;
        self
    }

    /// Declares a priority class with its share of the capacity, in percent
    /// (1 to 100). Without any class, every request is in one class,
    /// `default`, with all of the capacity.
    pub fn class(mut self, name: impl Into<String>, share_percent: u32) -> Self {
        self.classes.push((name.into(), share_percent));
        self
    }

    /// The class of requests no rule matches (default: the class named
    /// `default`).
    pub fn default_class(mut self, name: impl Into<String>) -> Self {
        self.default_class = Some(name.into());
        self
    }

    /// Requests whose path is `prefix` or lies under it (`/api/admin`
    /// matches `/api/admin` and `/api/admin/users`, not `/api/adminx`: a
    /// class that keeps capacity in reserve must not be reachable by
    /// padding a path) are in `class`. A prefix ending in `/` matches
    /// everything under it.
    pub fn route_prefix(mut self, prefix: impl Into<String>, class: impl Into<String>) -> Self {
        self.rules
            .push((Rule::PathPrefix(prefix.into()), class.into()));
        self
    }

    /// Requests whose principal has `role` are in `class` (place the layer
    /// after authentication for this rule to see principals).
    pub fn role(mut self, role: impl Into<String>, class: impl Into<String>) -> Self {
        self.rules.push((Rule::Role(role.into()), class.into()));
        self
    }

    /// Requests whose header `name` equals `value` are in `class`. A header
    /// is chosen by the client: use it to let clients lower their priority
    /// (`x-priority: bulk`), or only for headers a trusted proxy sets.
    pub fn header(
        mut self,
        name: HeaderName,
        value: HeaderValue,
        class: impl Into<String>,
    ) -> Self {
        self.rules.push((Rule::Header(name, value), class.into()));
        self
    }

    /// Exempts a path (`/health`), or every path under a prefix (`/static/*`).
    pub fn exempt_path(mut self, path: impl Into<String>) -> Self {
        self.exemptions.add_path(path.into());
        self
    }

    /// Exempts a method (such as `OPTIONS`).
    pub fn exempt_method(mut self, method: Method) -> Self {
        self.exemptions.add_method(method);
        self
    }

    /// The `Retry-After` of shed requests (default 1 s).
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = after;
        self
    }

    /// The clock the adaptive limit measures latency with (default
    /// [`SystemClock`]).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<LoadShedLayer, ConfigError> {
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let (limit, adaptive) = match (self.capacity, self.adaptive) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    "capacity",
                    "give a fixed capacity or an adaptive limit, not both",
                ));
            }
            (None, None) => {
                return Err(ConfigError::invalid(
                    "capacity",
                    "give a fixed capacity or an adaptive limit",
                ));
            }
            (Some(0), None) => return Err(ConfigError::invalid("capacity", "must be at least 1")),
            (Some(capacity), None) => (capacity, None),
            (None, Some(algorithm)) => {
                if self.window.is_zero() {
                    return Err(ConfigError::invalid("sample_window", "must not be zero"));
                }
                let state = AdaptiveState::new(
                    algorithm,
                    clock.now(),
                    self.window,
                    self.min_samples.max(1),
                );
                (state.initial_limit().max(1), Some(state))
            }
        };
        let mut classes = self.classes;
        if classes.is_empty() {
            classes.push(("default".to_owned(), 100));
        }
        for (i, (name, share)) in classes.iter().enumerate() {
            if !(1..=100).contains(share) {
                return Err(ConfigError::invalid(
                    "classes",
                    format!("class `{name}`: the share must be 1 to 100 percent"),
                ));
            }
            if classes[..i].iter().any(|(other, _)| other == name) {
                return Err(ConfigError::invalid(
                    "classes",
                    format!("class `{name}` is declared twice"),
                ));
            }
        }
        let index_of = |name: &str| {
            classes
                .iter()
                .position(|(class, _)| class == name)
                .ok_or_else(|| {
                    ConfigError::invalid("classes", format!("no class is named `{name}`"))
                })
        };
        let default_class = index_of(self.default_class.as_deref().unwrap_or("default"))?;
        let rules = self
            .rules
            .into_iter()
            .map(|(rule, class)| Ok((rule, index_of(&class)?)))
            .collect::<Result<Box<[_]>, ConfigError>>()?;
        let shared = ShedShared {
            name: self.name,
            in_flight: AtomicU32::new(0),
            limit: AtomicU32::new(limit),
            classes: classes
                .into_iter()
                .map(|(name, share_percent)| Class {
                    name,
                    share_percent,
                })
                .collect(),
            rules,
            default_class,
            exemptions: self.exemptions,
            retry_after: self.retry_after,
            adaptive,
            clock,
        };
        shared.export(limit);
        Ok(LoadShedLayer {
            shared: Arc::new(shared),
        })
    }
}

impl LoadShedLayer {
    /// A builder: no classes (one `default` class with all the capacity),
    /// 1 s `Retry-After`; a capacity or an adaptive limit must be given.
    pub fn builder() -> LoadShedLayerBuilder {
        LoadShedLayerBuilder {
            name: "load_shed".to_owned(),
            capacity: None,
            adaptive: None,
            window: Duration::from_millis(100),
            min_samples: 10,
            classes: Vec::new(),
            default_class: None,
            rules: Vec::new(),
            exemptions: Exemptions::default(),
            retry_after: Duration::from_secs(1),
            clock: None,
        }
    }

    /// A handle that reads the current limit and the requests in flight.
    pub fn handle(&self) -> LimitHandle {
        LimitHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Reads a [`LoadShedLayer`]'s current limit and load; cheap to clone, and
/// it keeps the layer's state alive.
///
/// ```
/// use palisade_concurrency::LoadShedLayer;
///
/// let layer = LoadShedLayer::builder().capacity(10).class("default", 100).class("bulk", 50).build()?;
/// let handle = layer.handle();
/// assert_eq!((handle.limit(), handle.in_flight()), (10, 0));
/// assert_eq!(handle.class_limit("bulk"), Some(5));
/// # Ok::<(), palisade_core::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct LimitHandle {
    shared: Arc<ShedShared>,
}

impl fmt::Debug for LimitHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitHandle")
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl LimitHandle {
    /// The current limit (the capacity): a class is admitted while the
    /// requests in flight are fewer than its share of it.
    pub fn limit(&self) -> u32 {
        self.shared.limit.load(Ordering::Acquire)
    }

    /// The requests in flight now.
    pub fn in_flight(&self) -> u32 {
        self.shared.in_flight.load(Ordering::Acquire)
    }

    /// The in-flight count at which a class's requests are shed now.
    pub fn class_limit(&self, class: &str) -> Option<u32> {
        let class = self.shared.classes.iter().find(|c| c.name == class)?;
        Some(threshold(self.limit(), class.share_percent))
    }
}

/// Whether `path` is `prefix` or a path below it, at a segment boundary.
#[inline]
fn under_prefix(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/'),
        None => false,
    }
}

#[inline]
fn threshold(limit: u32, share_percent: u32) -> u32 {
    // share_percent <= 100, so the result fits in u32.
    (u64::from(limit) * u64::from(share_percent) / 100) as u32
}

impl ShedShared {
    #[inline]
    fn classify<B>(&self, request: &Request<B>) -> usize {
        for (rule, class) in self.rules.iter() {
            let matched = match rule {
                Rule::PathPrefix(prefix) => under_prefix(request.uri().path(), prefix),
                Rule::Role(role) => request
                    .extensions()
                    .get::<Principal>()
                    .is_some_and(|p| p.roles().iter().any(|r| r == role)),
                Rule::Header(name, value) => request.headers().get(name) == Some(value),
            };
            if matched {
                return *class;
            }
        }
        self.default_class
    }

    /// Takes a place for a request of `class`, if its share allows.
    #[inline]
    fn admit(self: &Arc<Self>, class: usize) -> Option<Permit> {
        let share = self.classes[class].share_percent;
        let limit = threshold(self.limit.load(Ordering::Acquire), share);
        let previous = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()?;
        // The clock is read only when something measures.
        let admitted_at = self.adaptive.as_ref().map(|adaptive| {
            adaptive.note_in_flight(previous + 1);
            self.clock.now()
        });
        Some(Permit::shed(Arc::clone(self), admitted_at))
    }

    pub(crate) fn release(&self) {
        // Each permit added exactly one.
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// One completion's latency, for the adaptive limit.
    pub(crate) fn record(&self, admitted_at: Nanos, dropped: bool) {
        let Some(adaptive) = &self.adaptive else {
            return;
        };
        let now = self.clock.now();
        let latency = now.saturating_sub(admitted_at);
        let current = || {
            (
                self.limit.load(Ordering::Acquire),
                self.in_flight.load(Ordering::Acquire),
            )
        };
        if let Some(next) = adaptive.record(now, latency, dropped, current) {
            let next = next.max(1);
            self.limit.store(next, Ordering::Release);
            // A metric, not an audit event: the limit moves every window.
            self.export(next);
        }
    }

    #[cfg(feature = "metrics")]
    fn export(&self, limit: u32) {
        metrics::gauge!(LIMIT_GAUGE, "layer" => self.name.clone()).set(f64::from(limit));
    }

    #[cfg(not(feature = "metrics"))]
    fn export(&self, _limit: u32) {}

    fn refuse<ReqBody, ResBody>(&self, request: &Request<ReqBody>) -> LayerResponse<ResBody> {
        AuditEvent::refused(
            LAYER,
            RejectionKind::Overloaded,
            "load shed: priority class over its share of capacity",
        )
        .request(request)
        .emit();
        respond(
            request,
            Rejection::overloaded(self.retry_after)
                .with_detail("The service is shedding load; retry shortly."),
        )
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service made by [`LoadShedLayer`].
#[derive(Clone)]
pub struct LoadShed<S> {
    inner: S,
    shared: Arc<ShedShared>,
}

impl<S: fmt::Debug> fmt::Debug for LoadShed<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadShed")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> LoadShed<S> {
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for LoadShed<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: http_body::Body,
{
    type Response = LayerResponse<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let shared = &self.shared;
        if shared
            .exemptions
            .matches_request(request.method(), request.uri())
        {
            return ResponseFuture::admitted(self.inner.call(request), None);
        }
        match shared.admit(shared.classify(&request)) {
            Some(permit) => ResponseFuture::admitted(self.inner.call(request), Some(permit)),
            None => ResponseFuture::rejected(shared.refuse(&request)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_prefixes_match_at_segment_boundaries_only() {
        assert!(under_prefix("/api/admin", "/api/admin"));
        assert!(under_prefix("/api/admin/users", "/api/admin"));
        assert!(!under_prefix("/api/adminx", "/api/admin"));
        assert!(!under_prefix("/api", "/api/admin"));
        assert!(under_prefix("/static/app.js", "/static/"));
        assert!(under_prefix("/anything", "/"));
    }
}
