//! Per-route authorization: scopes, roles, permissions, tenants and custom
//! policies, as layers for a route and as checks inside handlers.
//!
//! Authentication (a [`JwtAuthLayer`](crate::JwtAuthLayer), an API key or
//! mTLS layer) puts a [`Principal`] in the request extensions; the layers
//! here read it and decide. Put them inside the authentication layer: in
//! axum, give a route its authorization with `route_layer` and authenticate
//! with `Router::layer` (or a later `route_layer`), so authentication runs
//! first.
//!
//! ```
//! use axum::{Router, routing::{delete, get}};
//! use palisade_auth::authorize::{RequirePermission, RequireScope, RolePermissions};
//! use palisade_auth::{Issuer, JwtAuthLayer};
//! use palisade_auth::key::{Algorithm, VerifyingKey};
//!
//! # palisade_auth::crypto::CryptoBackend::install_preferred()?;
//! let auth = JwtAuthLayer::builder()
//!     .issuer(
//!         Issuer::new("https://id.example.com")
//!             .audience("scans-api")
//!             .key(VerifyingKey::hmac(Algorithm::HS256, &[7u8; 32])?),
//!     )
//!     .build()?;
//! let roles = RolePermissions::admin_operator_viewer();
//! let app: Router = Router::new()
//!     .route("/scans", get(|| async { "scans" }).route_layer(RequireScope::any(["scans:read", "scans:*"])?))
//!     .route("/scans/{id}", delete(|| async { "gone" }).route_layer(RequirePermission::new(roles, "delete")?))
//!     .layer(auth);
//! # let _ = app;
//! # Ok::<(), palisade_core::ConfigError>(())
//! ```
//!
//! # Refusals
//! | the request                                  | HTTP | gRPC |
//! |----------------------------------------------|------|------|
//! | no principal, or the anonymous one            | 401, `WWW-Authenticate: Bearer` | UNAUTHENTICATED |
//! | authenticated, but not allowed               | 403, `WWW-Authenticate: Bearer error="insufficient_scope"` | PERMISSION_DENIED |
//!
//! A refused scope or permission names what the route needs
//! (`scope="scans:read scans:write"`, RFC 6750 §3.1); roles and tenants are
//! not OAuth scopes and are not named. The problem body's detail is the same
//! for every 403; the audit event (target `palisade::audit`, layer
//! `authorize`) carries the reason: `principal_missing`,
//! `principal_anonymous`, `scope_missing`, `role_missing`,
//! `permission_missing`, `tenant_missing`, `tenant_ambiguous`,
//! `tenant_mismatch` or `policy_refused`.
//!
//! A principal missing altogether usually means the authentication layer is
//! not outside this one: the audit reason `principal_missing` says so.
//!
//! # The pieces
//! - [`scope_grants`] and [`has_scope`]: scopes with wildcards (`*`,
//!   `agent:*`).
//! - [`RequireScope`], [`RequireRole`]: any-of or all-of.
//! - [`RolePermissions`] and [`RequirePermission`]: a configurable map from
//!   roles to permissions, with an admin / operator / viewer preset.
//! - [`RequireTenant`]: the principal's tenant must be the request's, taken
//!   from a header or (feature `axum`) a path parameter.
//! - [`Authorize`]: an async check of your own (a database lookup, an
//!   external policy engine).
//! - [`require_scope`], [`require_role`], [`require_permission`],
//!   [`require_tenant`]: the same decisions inside a handler returning
//!   `Result<_, Rejection>`.
//!
//! Every layer is `Clone` and keeps its configuration behind one `Arc`, so
//! the same value on many routes is one policy. The sync layers answer with
//! [`palisade_core::future::ResponseFuture`]: no boxing, and the inner
//! service's error type unchanged.

mod permissions;
mod policy;
mod require;
mod scope;
mod tenant;

use http::header::WWW_AUTHENTICATE;
use http::{HeaderValue, Request, Response};
use palisade_core::Rejection;
use palisade_core::audit::AuditEvent;
use palisade_core::body::ResponseBody;
use palisade_core::principal::Principal;
use palisade_core::rejection::{BearerError, Challenge};
use palisade_core::render::respond;

pub use permissions::{RolePermissions, RolePermissionsBuilder};
pub use policy::{Authorize, AuthorizeFuture, AuthorizeService, Policy, PolicyFuture, RequestHead};
pub use require::{RequirePermission, RequireRole, RequireScope, RequireService};
pub use scope::{has_scope, scope_grants};
pub use tenant::RequireTenant;

/// The layer name of authorization audit events.
const LAYER: &str = "authorize";
/// The public detail of every 401 from here.
const AUTHENTICATION_REQUIRED: &str = "Authentication is required.";
/// The public detail of every 403 from here: the reason goes to the audit
/// event, not to the client.
const NOT_ALLOWED: &str = "The credential does not allow this request.";

/// Why a request was refused, before it becomes a [`Rejection`].
#[derive(Clone, Debug)]
pub(crate) enum Denial {
    /// No principal, or the anonymous one.
    Unauthenticated(&'static str),
    /// Authenticated but not allowed; the challenge is computed at build
    /// time where it can be.
    Forbidden {
        reason: &'static str,
        challenge: HeaderValue,
    },
}

impl Denial {
    fn reason(&self) -> &'static str {
        match self {
            Denial::Unauthenticated(reason) | Denial::Forbidden { reason, .. } => reason,
        }
    }

    fn into_rejection(self) -> Rejection {
        match self {
            // `unauthenticated()` carries the bare `Bearer` challenge: no
            // error code for a request without a credential (RFC 6750 §3.1).
            Denial::Unauthenticated(_) => {
                Rejection::unauthenticated().with_detail(AUTHENTICATION_REQUIRED)
            }
            Denial::Forbidden { challenge, .. } => Rejection::forbidden()
                .with_header(WWW_AUTHENTICATE, challenge)
                .with_detail(NOT_ALLOWED),
        }
    }
}

/// `Bearer error="insufficient_scope"`, with `scope="..."` when given.
pub(crate) fn insufficient_scope(scope: Option<&str>) -> HeaderValue {
    let mut challenge = Challenge::bearer().error(BearerError::InsufficientScope);
    if let Some(scope) = scope {
        challenge = challenge.scope(scope);
    }
    challenge.to_header_value()
}

/// The authenticated principal of a request, or why there is none.
#[inline]
pub(crate) fn authenticated(principal: Option<&Principal>) -> Result<&Principal, Denial> {
    match principal {
        None => Err(Denial::Unauthenticated("principal_missing")),
        Some(principal) if principal.is_anonymous() => {
            Err(Denial::Unauthenticated("principal_anonymous"))
        }
        Some(principal) => Ok(principal),
    }
}

/// Audits a refusal and renders it for `request`.
pub(crate) fn refuse<ReqBody, ResBody>(
    request: &Request<ReqBody>,
    denial: Denial,
) -> Response<ResponseBody<ResBody>> {
    let reason = denial.reason();
    let rejection = denial.into_rejection();
    AuditEvent::refused(LAYER, rejection.kind(), reason)
        .request(request)
        .emit();
    respond(request, rejection)
}

/// Audits a refusal made in a handler (no request at hand: the principal
/// is all the event can name) and returns the rejection.
fn refuse_in_handler(principal: Option<&Principal>, denial: Denial) -> Rejection {
    let reason = denial.reason();
    let rejection = denial.into_rejection();
    let mut event = AuditEvent::refused(LAYER, rejection.kind(), reason);
    if let Some(principal) = principal {
        event = event.principal(principal);
    }
    event.emit();
    rejection
}

/// The principal, if it is authenticated; else the 401 to answer with.
///
/// ```
/// use palisade_auth::authorize::require_authenticated;
/// use palisade_core::principal::{AuthMethod, Principal};
///
/// assert_eq!(require_authenticated(None).unwrap_err().status(), 401);
/// assert_eq!(require_authenticated(Some(&Principal::anonymous())).unwrap_err().status(), 401);
/// let user = Principal::builder("u1").method(AuthMethod::Development).build();
/// assert_eq!(require_authenticated(Some(&user)).unwrap().subject(), "u1");
/// ```
pub fn require_authenticated(principal: Option<&Principal>) -> Result<&Principal, Rejection> {
    authenticated(principal).map_err(|denial| refuse_in_handler(principal, denial))
}

/// In a handler: `Ok` when the principal is authenticated and one of its
/// scopes grants `needed` (wildcards included, see [`scope_grants`]); else
/// 401 or 403 with `scope="<needed>"`, as the layers answer.
///
/// ```
/// use axum::{Extension, Router, routing::post};
/// use palisade_auth::authorize::require_scope;
/// use palisade_core::{Rejection, principal::Principal};
///
/// async fn cancel(principal: Option<Extension<Principal>>) -> Result<&'static str, Rejection> {
///     require_scope(principal.as_deref(), "scans:cancel")?;
///     Ok("cancelled")
/// }
/// # #[cfg(feature = "axum")]
/// let app: Router = Router::new().route("/scans/{id}/cancel", post(cancel));
/// ```
pub fn require_scope(principal: Option<&Principal>, needed: &str) -> Result<(), Rejection> {
    let checked = authenticated(principal).and_then(|principal| {
        if has_scope(principal, needed) {
            Ok(())
        } else {
            Err(Denial::Forbidden {
                reason: "scope_missing",
                challenge: insufficient_scope(Some(needed)),
            })
        }
    });
    checked.map_err(|denial| refuse_in_handler(principal, denial))
}

/// In a handler: `Ok` when the principal is authenticated and has `role`
/// (compared exactly); else 401 or 403.
///
/// ```
/// use palisade_auth::authorize::require_role;
/// use palisade_core::principal::{AuthMethod, Principal};
///
/// let operator = Principal::builder("u1").roles(["operator"]).method(AuthMethod::Development).build();
/// assert!(require_role(Some(&operator), "operator").is_ok());
/// assert_eq!(require_role(Some(&operator), "admin").unwrap_err().status(), 403);
/// ```
pub fn require_role(principal: Option<&Principal>, role: &str) -> Result<(), Rejection> {
    let checked = authenticated(principal).and_then(|principal| {
        if principal.has_role(role) {
            Ok(())
        } else {
            Err(Denial::Forbidden {
                reason: "role_missing",
                challenge: insufficient_scope(None),
            })
        }
    });
    checked.map_err(|denial| refuse_in_handler(principal, denial))
}

/// In a handler: `Ok` when the principal is authenticated and
/// `permissions` allows it `permission` (through a role, or directly by a
/// scope, see [`RolePermissions::allows`]); else 401 or 403 with
/// `scope="<permission>"`.
///
/// ```
/// use palisade_auth::authorize::{require_permission, RolePermissions};
/// use palisade_core::principal::{AuthMethod, Principal};
///
/// let roles = RolePermissions::admin_operator_viewer();
/// let viewer = Principal::builder("u1").roles(["viewer"]).method(AuthMethod::Development).build();
/// assert!(require_permission(&roles, Some(&viewer), "read").is_ok());
/// let refused = require_permission(&roles, Some(&viewer), "delete").unwrap_err();
/// assert_eq!(refused.header("www-authenticate").unwrap(), r#"Bearer error="insufficient_scope", scope="delete""#);
/// ```
pub fn require_permission(
    permissions: &RolePermissions,
    principal: Option<&Principal>,
    permission: &str,
) -> Result<(), Rejection> {
    let checked = authenticated(principal).and_then(|principal| {
        if permissions.allows(principal, permission) {
            Ok(())
        } else {
            Err(Denial::Forbidden {
                reason: "permission_missing",
                challenge: insufficient_scope(Some(permission)),
            })
        }
    });
    checked.map_err(|denial| refuse_in_handler(principal, denial))
}

/// In a handler: `Ok` when the principal is authenticated and belongs to
/// `tenant` (the tenant the handler took from its path or body); else 401,
/// or 403 when the principal has no tenant or another one. Roles allowed
/// to cross tenants are the caller's decision: check them first.
///
/// ```
/// use palisade_auth::authorize::require_tenant;
/// use palisade_core::principal::{AuthMethod, Principal};
///
/// let user = Principal::builder("u1").tenant("acme").method(AuthMethod::Development).build();
/// assert!(require_tenant(Some(&user), "acme").is_ok());
/// assert_eq!(require_tenant(Some(&user), "globex").unwrap_err().status(), 403);
/// ```
pub fn require_tenant(principal: Option<&Principal>, tenant: &str) -> Result<(), Rejection> {
    let checked = authenticated(principal).and_then(|principal| match principal.tenant() {
        Some(own) if !tenant.is_empty() && own == tenant => Ok(()),
        None => Err(Denial::Forbidden {
            reason: "tenant_missing",
            challenge: insufficient_scope(None),
        }),
        Some(_) => Err(Denial::Forbidden {
            reason: "tenant_mismatch",
            challenge: insufficient_scope(None),
        }),
    });
    checked.map_err(|denial| refuse_in_handler(principal, denial))
}
