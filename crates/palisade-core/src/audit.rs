//! Audit events: one `tracing` event, target `palisade::audit`, for every
//! decision that refuses a request or changes a layer's state.
//!
//! An event names the layer, the decision, a fixed reason, the policy that
//! decided (a configured name) when there is one, the client
//! address, the principal (subject, tenant, how it authenticated) and the
//! route. The reason is a `&'static str` and the route is the route
//! template when known (else the path with long opaque segments masked,
//! never the query), so an event cannot carry a token, a key or a password
//! by construction.
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

use std::borrow::Cow;
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
    route: Option<Cow<'a, str>>,
    method: Option<&'a Method>,
    policy: Option<&'a str>,
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
            policy: None,
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

    /// The policy that decided (a rate limit's, an authorization rule's):
    /// a name from the layer's configuration, never request data.
    pub fn policy(mut self, name: &'a str) -> Self {
        self.policy = Some(name);
        self
    }

    /// Writes the event: WARN for refusals, INFO otherwise.
    pub fn emit(self) {
        let client_ip = self.client_ip.map(tracing::field::display);
        let subject = self.principal.map(Principal::subject);
        let tenant = self.principal.and_then(Principal::tenant);
        let auth_method = self.principal.map(|p| p.method().as_str());
        let method = self.method.map(Method::as_str);
        let route = self.route.as_deref();
        let policy = self.policy;
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
                route,
                policy,
            ),
            other => tracing::info!(
                target: TARGET,
                layer = self.layer,
                decision = if other == Decision::Allowed { "allowed" } else { "state_changed" },
                reason = self.reason,
                client_ip,
                subject,
                tenant,
                auth_method,
                method,
                route,
                policy,
            ),
        }
    }
}

/// The route template when known; else the path with every segment longer
/// than [`MASKED_SEGMENT_LEN`] bytes masked, since long opaque segments
/// (reset tokens, keys in paths) are where secrets hide. Never the query.
fn route_of<'a>(uri: &'a Uri, extensions: &'a Extensions) -> Cow<'a, str> {
    if let Some(template) = crate::key::route_template(extensions) {
        return Cow::Borrowed(template);
    }
    let path = uri.path();
    if path
        .split('/')
        .all(|segment| segment.len() <= MASKED_SEGMENT_LEN)
    {
        return Cow::Borrowed(path);
    }
    let masked: Vec<&str> = path
        .split('/')
        .map(|segment| {
            if segment.len() > MASKED_SEGMENT_LEN {
                "***"
            } else {
                segment
            }
        })
        .collect();
    Cow::Owned(masked.join("/"))
}

/// Path segments longer than this are masked in audit events.
pub const MASKED_SEGMENT_LEN: usize = 24;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_path_segments_are_masked_and_queries_never_appear() {
        let uri: Uri = "/reset/6f1c0d5e8a9b4c3d2e1f0a9b8c7d6e5f/confirm?token=abc"
            .parse()
            .unwrap_or_default();
        assert_eq!(route_of(&uri, &Extensions::new()), "/reset/***/confirm");
        let short: Uri = "/api/scans/42?access_token=abc".parse().unwrap_or_default();
        assert_eq!(route_of(&short, &Extensions::new()), "/api/scans/42");
    }
}
