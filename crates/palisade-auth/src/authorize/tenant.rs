//! Tenant isolation: the principal's tenant must be the one the request
//! names.

use std::sync::Arc;

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, Request};
use palisade_core::ConfigError;
use palisade_core::principal::Principal;

use super::require::Rule;
use super::{Denial, authenticated, insufficient_scope};

/// Requires the principal's tenant to equal the tenant the request names,
/// in a header or (feature `axum`) a path parameter of the matched route.
///
/// Refuses with 401 without an authenticated principal, and with 403
/// (`WWW-Authenticate: Bearer error="insufficient_scope"`) when:
/// - the request names no tenant (no header, an empty one, or the path
///   parameter is absent): `tenant_missing`;
/// - the header appears more than once: `tenant_ambiguous`;
/// - the principal has no tenant: `tenant_missing`;
/// - the tenants differ (compared exactly, byte for byte): `tenant_mismatch`.
///
/// Principals with a role named by
/// [`allow_cross_tenant_role`](Self::allow_cross_tenant_role) reach any
/// tenant, with or without one of their own; the request must still name
/// one.
///
/// ```
/// use axum::{Router, routing::get};
/// use palisade_auth::authorize::RequireTenant;
///
/// let same_tenant = RequireTenant::from_header("x-tenant-id")?.allow_cross_tenant_role("admin");
/// let app: Router = Router::new()
///     .route("/scans", get(|| async { "scans of the tenant" }))
///     .route_layer(same_tenant);
/// # let _ = app;
/// # Ok::<(), palisade_core::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct RequireTenant {
    rule: Arc<Rule>,
}

/// Where the request names its tenant.
#[derive(Clone, Debug)]
enum TenantSource {
    Header(HeaderName),
    #[cfg(feature = "axum")]
    PathParam(Box<str>),
}

#[derive(Clone, Debug)]
pub(super) struct TenantRule {
    source: TenantSource,
    cross_tenant_roles: Vec<Box<str>>,
    challenge: HeaderValue,
}

impl RequireTenant {
    fn with_source(source: TenantSource) -> Self {
        Self {
            rule: Arc::new(Rule::Tenant(TenantRule {
                source,
                cross_tenant_roles: Vec::new(),
                challenge: insufficient_scope(None),
            })),
        }
    }

    /// Reads the request's tenant from the header `name` (for gRPC, the
    /// metadata key). Refused at build: a name that is not a header name.
    pub fn from_header(name: &str) -> Result<Self, ConfigError> {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ConfigError::invalid("tenant_header", "not a valid header name"))?;
        Ok(Self::with_source(TenantSource::Header(name)))
    }

    /// Reads the request's tenant from the path parameter `name` of the
    /// matched axum route (`/tenants/{tenant}/scans`), percent-decoded as
    /// axum's `Path` gives it. Works in `route_layer` and `Router::layer`,
    /// where the route is matched; around a whole router the parameters are
    /// not known yet and every request is refused as `tenant_missing`.
    /// Refused at build: an empty name.
    ///
    /// ```
    /// use axum::{Router, routing::get};
    /// use palisade_auth::authorize::RequireTenant;
    ///
    /// let app: Router = Router::new()
    ///     .route("/tenants/{tenant}/scans", get(|| async { "scans" }))
    ///     .route_layer(RequireTenant::from_path_param("tenant")?);
    /// # let _ = app;
    /// # Ok::<(), palisade_core::ConfigError>(())
    /// ```
    #[cfg(feature = "axum")]
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    pub fn from_path_param(name: &str) -> Result<Self, ConfigError> {
        if name.is_empty() {
            return Err(ConfigError::invalid(
                "tenant_path_param",
                "an empty parameter name",
            ));
        }
        Ok(Self::with_source(TenantSource::PathParam(name.into())))
    }

    /// Lets principals with `role` reach every tenant. Say so only for roles
    /// meant to cross tenants (a platform operator), not for a tenant's own
    /// administrators. Can be given more than once.
    pub fn allow_cross_tenant_role(mut self, role: impl Into<String>) -> Self {
        let role = role.into().into_boxed_str();
        // The layer is being configured, not shared yet: `make_mut` copies
        // only if a clone was taken in between.
        if let Rule::Tenant(rule) = Arc::make_mut(&mut self.rule)
            && !role.is_empty()
            && !rule.cross_tenant_roles.contains(&role)
        {
            rule.cross_tenant_roles.push(role);
        }
        self
    }

    pub(super) fn rule(&self) -> &Arc<Rule> {
        &self.rule
    }
}

/// Where the request's tenant stands: named (the bytes), or why not.
type Requested<'a> = Result<&'a [u8], &'static str>;

impl TenantRule {
    pub(super) fn decide<B>(&self, request: Request<B>) -> (Request<B>, Result<(), Denial>) {
        match &self.source {
            TenantSource::Header(name) => {
                let requested = header_tenant(request.headers(), name);
                let decision = self.check(request.extensions().get(), requested);
                (request, decision)
            }
            #[cfg(feature = "axum")]
            TenantSource::PathParam(name) => {
                let (mut parts, body) = request.into_parts();
                let params = path_params(&mut parts);
                let requested = params
                    .as_ref()
                    .and_then(|params| params.iter().find(|(key, _)| *key == &**name))
                    .map(|(_, value)| value.as_bytes())
                    .filter(|value| !value.is_empty())
                    .ok_or("tenant_missing");
                let decision = self.check(parts.extensions.get(), requested);
                (Request::from_parts(parts, body), decision)
            }
        }
    }

    fn check(&self, principal: Option<&Principal>, requested: Requested<'_>) -> Result<(), Denial> {
        let principal = authenticated(principal)?;
        let forbidden = |reason| Denial::Forbidden {
            reason,
            challenge: self.challenge.clone(),
        };
        let requested = requested.map_err(forbidden)?;
        if self
            .cross_tenant_roles
            .iter()
            .any(|role| principal.has_role(role))
        {
            return Ok(());
        }
        match principal.tenant().filter(|own| !own.is_empty()) {
            None => Err(forbidden("tenant_missing")),
            Some(own) if own.as_bytes() == requested => Ok(()),
            Some(_) => Err(forbidden("tenant_mismatch")),
        }
    }
}

fn header_tenant<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Requested<'a> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) if !value.is_empty() => Ok(value.as_bytes()),
        (Some(_), Some(_)) => Err("tenant_ambiguous"),
        _ => Err("tenant_missing"),
    }
}

/// The path parameters axum stored for the matched route, if any.
#[cfg(feature = "axum")]
pub(super) fn path_params(
    parts: &mut http::request::Parts,
) -> Option<axum::extract::RawPathParams> {
    use axum::extract::FromRequestParts;
    use futures_util::FutureExt;
    // The extractor only reads what axum's router put in the extensions:
    // its future is ready at once. Not ready would be a new axum; refusing
    // (`tenant_missing`) is the safe answer then.
    <axum::extract::RawPathParams as FromRequestParts<()>>::from_request_parts(parts, &())
        .now_or_never()?
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::principal::AuthMethod;

    fn user(tenant: Option<&str>, roles: &[&str]) -> Principal {
        let mut builder = Principal::builder("u")
            .roles(roles.iter().copied())
            .method(AuthMethod::Development);
        if let Some(tenant) = tenant {
            builder = builder.tenant(tenant);
        }
        builder.build()
    }

    fn rule(layer: &RequireTenant) -> &TenantRule {
        match &**layer.rule() {
            Rule::Tenant(rule) => rule,
            _ => unreachable!("a tenant layer holds a tenant rule"),
        }
    }

    fn reason(result: Result<(), Denial>) -> &'static str {
        match result {
            Ok(()) => "allowed",
            Err(denial) => denial.reason(),
        }
    }

    #[test]
    fn every_tenant_decision_has_its_reason() {
        let layer = RequireTenant::from_header("x-tenant-id")
            .unwrap_or_else(|_| unreachable!())
            .allow_cross_tenant_role("platform");
        let rule = rule(&layer);
        let acme = user(Some("acme"), &[]);
        assert_eq!(reason(rule.check(Some(&acme), Ok(b"acme"))), "allowed");
        assert_eq!(
            reason(rule.check(Some(&acme), Ok(b"globex"))),
            "tenant_mismatch"
        );
        assert_eq!(
            reason(rule.check(Some(&acme), Err("tenant_ambiguous"))),
            "tenant_ambiguous"
        );
        assert_eq!(
            reason(rule.check(Some(&user(None, &[])), Ok(b"acme"))),
            "tenant_missing"
        );
        assert_eq!(
            reason(rule.check(Some(&user(None, &["platform"])), Ok(b"acme"))),
            "allowed"
        );
        assert_eq!(
            reason(rule.check(Some(&user(None, &["platform"])), Err("tenant_missing"))),
            "tenant_missing"
        );
        assert_eq!(
            reason(rule.check(Some(&Principal::anonymous()), Ok(b"acme"))),
            "principal_anonymous"
        );
        assert_eq!(reason(rule.check(None, Ok(b"acme"))), "principal_missing");
    }

    #[test]
    fn one_nonempty_header_names_the_tenant() {
        let name = HeaderName::from_static("x-tenant-id");
        let mut headers = HeaderMap::new();
        assert_eq!(header_tenant(&headers, &name), Err("tenant_missing"));
        headers.insert(&name, HeaderValue::from_static(""));
        assert_eq!(header_tenant(&headers, &name), Err("tenant_missing"));
        headers.insert(&name, HeaderValue::from_static("acme"));
        assert_eq!(header_tenant(&headers, &name), Ok(&b"acme"[..]));
        headers.append(&name, HeaderValue::from_static("globex"));
        assert_eq!(header_tenant(&headers, &name), Err("tenant_ambiguous"));
        assert!(RequireTenant::from_header("bad header").is_err());
    }
}
