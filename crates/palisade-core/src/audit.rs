//! Audit events: one `tracing` event, target `palisade::audit`, for every
//! decision that refuses a request or changes a layer's state.
//!
//! An event names the layer, the decision, a fixed reason, the client
//! address, the principal (subject, tenant, how it authenticated) and the
//! route. The reason is a `&'static str` and the route is the route
//! template when known (else the path, never the query), so an event cannot
//! carry a token, a key or a password by construction.
//!
//! ```
//! use palisade_core::audit::AuditEvent;
//! use palisade_core::RejectionKind;
//!
//! let request = http::Request::get("/api/scans?token=secret").body(()).unwrap();
//! AuditEvent::refused("ratelimit", RejectionKind::RateLimited, "policy per_ip exhausted")
//!     .request(&request)
//!     .emit(); // route=/api/scans: the query never appears
//! ```

use std::net::IpAddr;

use http::{Extensions, Method, Request, Uri};

use crate::client_ip::ClientIp;
use crate::principal::Principal;
use crate::rejection::RejectionKind;

/// The `tracing` target of audit events.
pub const TARGET: &str = "palisade::audit";

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// A request was refused.
    Refused(RejectionKind),
    /// A request was allowed where allowing is worth recording (shadow mode,
    /// development mode, a fallback decision).
    Allowed,
    /// A layer's state changed (breaker opened, keys reloaded).
    StateChanged,
}

/// One audit event, built then emitted.
#[derive(Debug)]
#[must_use = "an audit event does nothing until emitted"]
pub struct AuditEvent<'a> {
    layer: &'static str,
    decision: Decision,
    reason: &'static str,
    client_ip: Option<IpAddr>,
    principal: Option<&'a Principal>,
    route: Option<&'a str>,
    method: Option<&'a Method>,
}

impl<'a> AuditEvent<'a> {
    fn new(layer: &'static str, decision: Decision, reason: &'static str) -> Self {
        Self {
            layer,
            decision,
            reason,
            client_ip: None,
            principal: None,
            route: None,
            method: None,
        }
    }

    /// A refused request.
    pub fn refused(layer: &'static str, kind: RejectionKind, reason: &'static str) -> Self {
        Self::new(layer, Decision::Refused(kind), reason)
    }

    /// An allowed request worth recording.
    pub fn allowed(layer: &'static str, reason: &'static str) -> Self {
        Self::new(layer, Decision::Allowed, reason)
    }

    /// A change of a layer's state.
    pub fn state_changed(layer: &'static str, reason: &'static str) -> Self {
        Self::new(layer, Decision::StateChanged, reason)
    }

    /// Takes the client address, principal, route and method from a request.
    pub fn request<B>(self, request: &'a Request<B>) -> Self {
        self.request_parts(request.method(), request.uri(), request.extensions())
    }

    /// Takes the client address, principal, route and method from a
    /// request's parts.
    pub fn request_parts(
        mut self,
        method: &'a Method,
        uri: &'a Uri,
        extensions: &'a Extensions,
    ) -> Self {
        self.client_ip = ClientIp::from_extensions(extensions).map(|c| c.ip());
        self.principal = extensions.get::<Principal>();
        self.method = Some(method);
        self.route = Some(route_of(uri, extensions));
        self
    }

    /// Sets the client address.
    pub fn client_ip(mut self, ip: IpAddr) -> Self {
        self.client_ip = Some(ip);
        self
    }

    /// Sets the principal.
    pub fn principal(mut self, principal: &'a Principal) -> Self {
        self.principal = Some(principal);
        self
    }

    /// Writes the event: WARN for refusals, INFO otherwise.
    pub fn emit(self) {
        let client_ip = self.client_ip.map(tracing::field::display);
        let subject = self.principal.map(Principal::subject);
        let tenant = self.principal.and_then(Principal::tenant);
        let auth_method = self.principal.map(|p| p.method().as_str());
        let method = self.method.map(Method::as_str);
        match self.decision {
            Decision::Refused(kind) => tracing::warn!(
                target: TARGET,
                layer = self.layer,
                decision = "refused",
                kind = kind.as_str(),
                status = kind.status().as_u16(),
                reason = self.reason,
                client_ip,
                subject,
                tenant,
                auth_method,
                method,
                route = self.route,
            ),
            Decision::Allowed => tracing::info!(
                target: TARGET,
                layer = self.layer,
                decision = "allowed",
                reason = self.reason,
                client_ip,
                subject,
                tenant,
                auth_method,
                method,
                route = self.route,
            ),
            Decision::StateChanged => tracing::info!(
                target: TARGET,
                layer = self.layer,
                decision = "state_changed",
                reason = self.reason,
                client_ip,
                subject,
                tenant,
                auth_method,
                method,
                route = self.route,
            ),
        }
    }
}

fn route_of<'a>(uri: &'a Uri, extensions: &'a Extensions) -> &'a str {
    crate::key::route_template(extensions).unwrap_or(uri.path())
}
