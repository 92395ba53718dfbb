//! The synchronous authorization layers ([`RequireScope`], [`RequireRole`],
//! [`RequirePermission`], and [`RequireTenant`](super::RequireTenant)) and
//! the one service they make.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use palisade_core::ConfigError;
use palisade_core::body::ResponseBody;
use palisade_core::future::ResponseFuture;
use palisade_core::principal::Principal;
use tower_layer::Layer;
use tower_service::Service;

use super::permissions::RolePermissions;
use super::scope::{has_scope, validate_scope};
use super::tenant::TenantRule;
use super::{Denial, authenticated, insufficient_scope, refuse};

/// What one synchronous layer checks. An enum rather than a trait: one
/// service type for every layer, and a `match` instead of a virtual call.
#[derive(Clone, Debug)]
pub(super) enum Rule {
    Scope(ListRule),
    Role(ListRule),
    Permission(PermissionRule),
    Tenant(TenantRule),
}

/// Any-of or all-of a list (of scopes, or of roles).
#[derive(Clone, Debug)]
pub(super) struct ListRule {
    items: Box<[Box<str>]>,
    all: bool,
    challenge: HeaderValue,
}

#[derive(Clone, Debug)]
pub(super) struct PermissionRule {
    permissions: RolePermissions,
    permission: Box<str>,
    challenge: HeaderValue,
}

impl Rule {
    fn decide<B>(&self, request: Request<B>) -> (Request<B>, Result<(), Denial>) {
        let decision = match self {
            // Only the tenant rule may need the request's parts.
            Rule::Tenant(rule) => return rule.decide(request),
            Rule::Scope(rule) => {
                rule.decide(request.extensions().get(), "scope_missing", has_scope)
            }
            Rule::Role(rule) => rule.decide(
                request.extensions().get(),
                "role_missing",
                Principal::has_role,
            ),
            Rule::Permission(rule) => rule.decide(request.extensions().get()),
        };
        (request, decision)
    }
}

impl ListRule {
    fn new<I, T>(
        field: &'static str,
        items: I,
        all: bool,
        validate: fn(&'static str, &str) -> Result<(), ConfigError>,
        name_in_challenge: bool,
    ) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let mut list: Vec<Box<str>> = Vec::new();
        for item in items {
            let item = item.into();
            validate(field, &item)?;
            if !list.iter().any(|known| **known == *item) {
                list.push(item.into_boxed_str());
            }
        }
        if list.is_empty() {
            return Err(ConfigError::invalid(
                field,
                "an empty list: name at least one (an empty any-of would refuse everyone, an empty all-of allow everyone)",
            ));
        }
        let challenge = if name_in_challenge {
            insufficient_scope(Some(&list.join(" ")))
        } else {
            insufficient_scope(None)
        };
        Ok(Self {
            items: list.into_boxed_slice(),
            all,
            challenge,
        })
    }

    #[inline]
    fn decide(
        &self,
        principal: Option<&Principal>,
        reason: &'static str,
        holds: fn(&Principal, &str) -> bool,
    ) -> Result<(), Denial> {
        let principal = authenticated(principal)?;
        let mut items = self.items.iter();
        let allowed = if self.all {
            items.all(|item| holds(principal, item))
        } else {
            items.any(|item| holds(principal, item))
        };
        if allowed {
            Ok(())
        } else {
            Err(Denial::Forbidden {
                reason,
                challenge: self.challenge.clone(),
            })
        }
    }
}

impl PermissionRule {
    #[inline]
    fn decide(&self, principal: Option<&Principal>) -> Result<(), Denial> {
        let principal = authenticated(principal)?;
        if self.permissions.allows(principal, &self.permission) {
            Ok(())
        } else {
            Err(Denial::Forbidden {
                reason: "permission_missing",
                challenge: self.challenge.clone(),
            })
        }
    }
}

fn validate_role(field: &'static str, role: &str) -> Result<(), ConfigError> {
    if role.is_empty() {
        return Err(ConfigError::invalid(field, "an empty role name"));
    }
    Ok(())
}

/// Requires scopes of the principal: any one of a list, or all of it.
/// Scopes match with wildcards (see [`scope_grants`](super::scope_grants)).
///
/// Refuses with 401 without an authenticated principal, and with 403 and
/// `WWW-Authenticate: Bearer error="insufficient_scope", scope="<the
/// scopes named, space separated>"` when its scopes do not suffice.
///
/// ```
/// use axum::{Router, routing::get};
/// use palisade_auth::authorize::RequireScope;
/// use tower::ServiceBuilder;
///
/// let read = RequireScope::any(["scans:read", "scans:admin"])?;
/// let app: Router = Router::new()
///     .route("/scans", get(|| async { "scans" }))
///     .route_layer(read.clone());
/// // The same layer, as a tower layer elsewhere: one shared policy.
/// let stack = ServiceBuilder::new().layer(read);
/// # let _ = (app, stack);
/// # Ok::<(), palisade_core::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct RequireScope {
    rule: Arc<Rule>,
}

impl RequireScope {
    /// Allows a principal with at least one of `scopes`. Refused at build:
    /// an empty list, and a scope that is not a scope token (empty, spaces,
    /// quotes, backslashes, non-ASCII).
    pub fn any<I, T>(scopes: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        Self::new(scopes, false)
    }

    /// Allows a principal with every one of `scopes`; refused at build as
    /// [`any`](Self::any) is.
    ///
    /// ```
    /// use palisade_auth::authorize::RequireScope;
    ///
    /// let both = RequireScope::all(["scans:read", "reports:write"])?;
    /// assert!(RequireScope::all(Vec::<String>::new()).is_err());
    /// assert!(RequireScope::any(["two words"]).is_err());
    /// # let _ = both;
    /// # Ok::<(), palisade_core::ConfigError>(())
    /// ```
    pub fn all<I, T>(scopes: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        Self::new(scopes, true)
    }

    fn new<I, T>(scopes: I, all: bool) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let rule = ListRule::new("scopes", scopes, all, validate_scope, true)?;
        Ok(Self {
            rule: Arc::new(Rule::Scope(rule)),
        })
    }
}

/// Requires roles of the principal: any one of a list, or all of it.
/// Roles compare exactly (no wildcards).
///
/// Refuses with 401 without an authenticated principal, and with 403 and
/// `WWW-Authenticate: Bearer error="insufficient_scope"` (roles are not
/// OAuth scopes, so no `scope=`) without the roles.
///
/// ```
/// use axum::{Router, routing::post};
/// use palisade_auth::authorize::RequireRole;
///
/// let app: Router = Router::new()
///     .route("/admin/reindex", post(|| async { "started" }))
///     .route_layer(RequireRole::any(["admin", "operator"])?);
/// # let _ = app;
/// # Ok::<(), palisade_core::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct RequireRole {
    rule: Arc<Rule>,
}

impl RequireRole {
    /// Allows a principal with at least one of `roles`. Refused at build:
    /// an empty list or an empty role name.
    pub fn any<I, T>(roles: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        Self::new(roles, false)
    }

    /// Allows a principal with every one of `roles`; refused at build as
    /// [`any`](Self::any) is.
    pub fn all<I, T>(roles: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        Self::new(roles, true)
    }

    fn new<I, T>(roles: I, all: bool) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let rule = ListRule::new("roles", roles, all, validate_role, false)?;
        Ok(Self {
            rule: Arc::new(Rule::Role(rule)),
        })
    }
}

/// Requires a permission, granted by one of the principal's roles through a
/// [`RolePermissions`] map, or directly by one of its scopes.
///
/// Refuses with 401 without an authenticated principal, and with 403 and
/// `WWW-Authenticate: Bearer error="insufficient_scope",
/// scope="<permission>"` otherwise.
///
/// ```
/// use axum::{Router, routing::{delete, get, post}};
/// use palisade_auth::authorize::{RequirePermission, RolePermissions};
///
/// let roles = RolePermissions::admin_operator_viewer();
/// let app: Router = Router::new()
///     .route("/scans", get(|| async { "list" }).route_layer(RequirePermission::new(roles.clone(), "read")?))
///     .route("/scans/run", post(|| async { "run" }).route_layer(RequirePermission::new(roles.clone(), "execute")?))
///     .route("/scans/{id}", delete(|| async { "gone" }).route_layer(RequirePermission::new(roles, "delete")?));
/// # let _ = app;
/// # Ok::<(), palisade_core::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct RequirePermission {
    rule: Arc<Rule>,
}

impl RequirePermission {
    /// Requires `permission`, as granted by `permissions`. Refused at build:
    /// a permission that is not a scope token.
    pub fn new(
        permissions: RolePermissions,
        permission: impl Into<String>,
    ) -> Result<Self, ConfigError> {
        let permission = permission.into();
        validate_scope("permission", &permission)?;
        let challenge = insufficient_scope(Some(&permission));
        Ok(Self {
            rule: Arc::new(Rule::Permission(PermissionRule {
                permissions,
                permission: permission.into_boxed_str(),
                challenge,
            })),
        })
    }
}

macro_rules! require_layer {
    ($($layer:ident),*) => {$(
        impl<S> Layer<S> for $layer {
            type Service = RequireService<S>;

            fn layer(&self, inner: S) -> Self::Service {
                RequireService {
                    inner,
                    rule: Arc::clone(&self.rule),
                }
            }
        }
    )*};
}

require_layer!(RequireScope, RequireRole, RequirePermission);

impl<S> Layer<S> for super::RequireTenant {
    type Service = RequireService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireService {
            inner,
            rule: Arc::clone(self.rule()),
        }
    }
}

/// The service made by [`RequireScope`], [`RequireRole`],
/// [`RequirePermission`] and [`RequireTenant`](super::RequireTenant).
#[derive(Clone)]
pub struct RequireService<S> {
    inner: S,
    rule: Arc<Rule>,
}

impl<S: fmt::Debug> fmt::Debug for RequireService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireService")
            .field("inner", &self.inner)
            .field("rule", &self.rule)
            .finish()
    }
}

impl<S> RequireService<S> {
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequireService<S>
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
        match self.rule.decide(request) {
            (request, Ok(())) => ResponseFuture::inner(self.inner.call(request)),
            (request, Err(denial)) => ResponseFuture::rejected(refuse(&request, denial)),
        }
    }
}
