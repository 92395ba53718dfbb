//! Authorization over real servers: scopes (any, all, wildcards), roles,
//! the admin / operator / viewer permissions, tenant isolation from a path
//! or a header, async policies and handler checks, behind the JWT layer of
//! this crate on axum and tonic. Anonymous callers get 401, authenticated
//! ones that are not allowed get 403, and the audit event says why.
//!
//! Every test installs (once) a process-wide subscriber that captures
//! audit events, and looks for its own by a subject no other test uses.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::routing::get;
use axum::{Extension, Router};
use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use palisade_auth::JwtAuthLayer;
use palisade_auth::authorize::{
    Authorize, RequestHead, RequirePermission, RequireRole, RequireScope, RequireTenant,
    RolePermissions, has_scope, require_permission, require_role, require_scope, scope_grants,
};
use palisade_auth::issue::TokenIssuer;
use palisade_core::Rejection;
use palisade_core::principal::{AuthMethod, Principal};
use proptest::prelude::*;
use serde_json::json;
use tower::{ServiceBuilder, ServiceExt};

// ---------------------------------------------------------------------------
// Audit capture

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber for the whole process, once. `tracing`
/// caches per call site whether anyone listens, so every test logs to the
/// same global subscriber, never to none.
fn audit() -> &'static Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        captured
    })
}

/// The audit lines of `subject` (the test's own caller).
fn audit_of(subject: &str) -> Vec<String> {
    let log = String::from_utf8(audit().0.lock().unwrap().clone()).unwrap();
    let needle = format!("subject=\"{subject}\"");
    log.lines()
        .filter(|line| line.contains("palisade::audit") && line.contains(&needle))
        .map(str::to_owned)
        .collect()
}

fn assert_audited(subject: &str, reason: &str) {
    let lines = audit_of(subject);
    let wanted = format!("reason=\"{reason}\"");
    assert!(
        lines
            .iter()
            .any(|line| line.contains("layer=\"authorize\"") && line.contains(&wanted)),
        "no audit event {reason} for {subject}: {lines:#?}"
    );
}

// ---------------------------------------------------------------------------
// Fixture: a token issuer, an optional JWT layer, and the routes under test

struct Fixture {
    issuer: TokenIssuer,
    auth: JwtAuthLayer,
}

fn fixture() -> Fixture {
    audit();
    init();
    let clock = clock_now();
    let issuer = issuer_with(rsa_key("rsa-1"), ISSUER, AUDIENCE, &clock);
    // Optional: a request without a credential goes on as the anonymous
    // principal, and the routes decide.
    let auth = JwtAuthLayer::builder()
        .issuer(issuer.verifying_issuer())
        .clock(clock)
        .optional()
        .build()
        .unwrap();
    Fixture { issuer, auth }
}

struct Token<'a> {
    mint: palisade_auth::issue::Mint<'a>,
}

impl<'a> Token<'a> {
    fn new(fixture: &'a Fixture, subject: &str) -> Self {
        Self {
            mint: fixture.issuer.mint(subject),
        }
    }
    fn scopes(mut self, scopes: &[&str]) -> Self {
        self.mint = self.mint.scopes(scopes.iter().copied());
        self
    }
    fn roles(mut self, roles: &[&str]) -> Self {
        self.mint = self.mint.roles(roles.iter().copied());
        self
    }
    fn tenant(mut self, tenant: &str) -> Self {
        self.mint = self.mint.tenant(tenant);
        self
    }
    fn sign(self) -> Vec<u8> {
        bearer(&self.mint.sign().unwrap().token)
    }
}

async fn ok() -> &'static str {
    "ok"
}

async fn whoami(Extension(principal): Extension<Principal>) -> String {
    principal.subject().to_owned()
}

/// The owner a request names: the route's `{owner}` (feature `axum`),
/// else the `x-owner` header.
fn owner_of(head: &RequestHead) -> Option<&str> {
    #[cfg(feature = "axum")]
    if let Some(owner) = head.path_param("owner") {
        return Some(owner);
    }
    head.headers().get("x-owner").and_then(|v| v.to_str().ok())
}

/// Allows subjects on what they own, answers 503 for `flaky-*` subjects
/// (the policy's backend is down), and refuses everyone else.
fn owner_policy() -> Authorize {
    Authorize::new(
        "scan_owner",
        |principal: Principal, head: RequestHead| async move {
            // A real policy would ask a database here.
            tokio::task::yield_now().await;
            if principal.subject().starts_with("flaky") {
                return Err(Rejection::unavailable(std::time::Duration::from_secs(3))
                    .with_detail("The policy service is unavailable."));
            }
            if owner_of(&head) == Some(principal.subject()) {
                Ok(())
            } else {
                Err(Rejection::forbidden().with_detail("Only the owner may see this scan."))
            }
        },
    )
}

fn app(fixture: &Fixture) -> Router {
    let roles = RolePermissions::admin_operator_viewer();
    let permission = |name: &str| RequirePermission::new(roles.clone(), name).unwrap();
    let router = Router::new()
        .route("/public", get(ok))
        .route("/me", get(whoami))
        .route(
            "/scans/any",
            get(ok).route_layer(RequireScope::any(["scans:read", "scans:write"]).unwrap()),
        )
        .route(
            "/scans/all",
            get(ok).route_layer(RequireScope::all(["scans:read", "scans:write"]).unwrap()),
        )
        .route(
            "/agent",
            get(ok).route_layer(RequireScope::any(["agent:read"]).unwrap()),
        )
        .route(
            "/roles/any",
            get(ok).route_layer(RequireRole::any(["admin", "operator"]).unwrap()),
        )
        .route(
            "/roles/all",
            get(ok).route_layer(RequireRole::all(["operator", "auditor"]).unwrap()),
        )
        .route("/do/read", get(ok).route_layer(permission("read")))
        .route("/do/create", get(ok).route_layer(permission("create")))
        .route("/do/execute", get(ok).route_layer(permission("execute")))
        .route("/do/delete", get(ok).route_layer(permission("delete")))
        .route(
            "/tenant",
            get(ok).route_layer(RequireTenant::from_header("x-tenant-id").unwrap()),
        )
        .route(
            "/stack",
            get(ok).route_layer(
                ServiceBuilder::new()
                    .layer(RequireScope::any(["scans:read"]).unwrap())
                    .layer(RequireTenant::from_header("x-tenant-id").unwrap())
                    .layer(owner_policy()),
            ),
        );
    #[cfg(feature = "axum")]
    let router = router
        .route(
            "/tenants/{tenant}/scans",
            get(ok).route_layer(RequireTenant::from_path_param("tenant").unwrap()),
        )
        .route(
            "/platform/tenants/{tenant}/scans",
            get(ok).route_layer(
                RequireTenant::from_path_param("tenant")
                    .unwrap()
                    .allow_cross_tenant_role("admin"),
            ),
        )
        .route("/owners/{owner}/scan", get(ok).route_layer(owner_policy()))
        .route("/reports", get(reports))
        .route("/reports/delete", get(delete_reports));
    #[cfg(not(feature = "axum"))]
    let router = router.route("/owners/scan", get(ok).route_layer(owner_policy()));
    router.layer(fixture.auth.clone())
}

/// A handler that checks for itself.
#[cfg(feature = "axum")]
async fn reports(principal: Option<Extension<Principal>>) -> Result<&'static str, Rejection> {
    require_scope(principal.as_deref(), "reports:read")?;
    Ok("reports")
}

#[cfg(feature = "axum")]
async fn delete_reports(
    principal: Option<Extension<Principal>>,
) -> Result<&'static str, Rejection> {
    let roles = RolePermissions::admin_operator_viewer();
    require_permission(&roles, principal.as_deref(), "delete")?;
    Ok("deleted")
}

async fn serve(fixture: &Fixture) -> SocketAddr {
    spawn_axum(app(fixture)).await
}

async fn get_with(addr: SocketAddr, path: &str, token: Option<&[u8]>) -> Response<Bytes> {
    match token {
        Some(token) => http_get(addr, path, &[("authorization", token)]).await,
        None => http_get(addr, path, &[]).await,
    }
}

const FORBIDDEN_DETAIL: &str = "The credential does not allow this request.";

/// The whole 403: status, challenge, problem body.
fn assert_forbidden(response: &Response<Bytes>, challenge: &str) {
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "{response:?}");
    assert_eq!(response.headers()["www-authenticate"], challenge);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(
        body,
        json!({
            "type": "urn:palisade:problem:forbidden",
            "title": "Forbidden",
            "status": 403,
            "detail": FORBIDDEN_DETAIL,
        })
    );
}

/// The whole 401 of an anonymous caller.
fn assert_unauthenticated(response: &Response<Bytes>) {
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{response:?}");
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(
        body,
        json!({
            "type": "urn:palisade:problem:unauthenticated",
            "title": "Unauthorized",
            "status": 401,
            "detail": "Authentication is required.",
        })
    );
}

// ---------------------------------------------------------------------------
// Anonymous vs authenticated

#[tokio::test]
async fn anonymous_callers_get_401_and_authenticated_ones_without_the_scope_get_403() {
    let f = fixture();
    let addr = serve(&f).await;

    // Optional authentication: public routes serve anonymous callers...
    let public = get_with(addr, "/public", None).await;
    assert_eq!(public.status(), StatusCode::OK);
    // ...and protected ones refuse them with a bare challenge (RFC 6750:
    // no error code without a credential).
    assert_unauthenticated(&get_with(addr, "/scans/any", None).await);
    assert_audited("anonymous", "principal_anonymous");

    // A bad credential is refused by authentication itself, optional or not.
    let bad = get_with(addr, "/scans/any", Some(b"Bearer a.b.c")).await;
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    assert!(
        bad.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("error=\"invalid_token\"")
    );

    // Authenticated without the scope: 403 naming what the route needs.
    let token = Token::new(&f, "erin-no-scope")
        .scopes(&["reports:read"])
        .sign();
    let refused = get_with(addr, "/scans/any", Some(&token)).await;
    assert_forbidden(
        &refused,
        r#"Bearer error="insufficient_scope", scope="scans:read scans:write""#,
    );
    assert_audited("erin-no-scope", "scope_missing");
    let audit = audit_of("erin-no-scope").join("\n");
    assert!(audit.contains("status=403"), "{audit}");
    assert!(audit.contains("route=\"/scans/any\""), "{audit}");
}

#[tokio::test]
async fn without_an_authentication_layer_every_protected_route_is_401() {
    audit();
    let app = Router::new().route(
        "/scans",
        get(ok).route_layer(RequireScope::any(["scans:read"]).unwrap()),
    );
    let addr = spawn_axum(app).await;
    assert_unauthenticated(&get_with(addr, "/scans", None).await);
    let log = String::from_utf8(audit().0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("reason=\"principal_missing\""), "{log}");
}

// ---------------------------------------------------------------------------
// Scopes

#[tokio::test]
async fn any_of_needs_one_scope_and_all_of_needs_every_one() {
    let f = fixture();
    let addr = serve(&f).await;
    let read = Token::new(&f, "sam-read").scopes(&["scans:read"]).sign();
    let write = Token::new(&f, "sam-write").scopes(&["scans:write"]).sign();
    let both = Token::new(&f, "sam-both")
        .scopes(&["scans:read", "scans:write"])
        .sign();

    for token in [&read, &write, &both] {
        let response = get_with(addr, "/scans/any", Some(token)).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.body(), "ok");
    }
    assert_eq!(
        get_with(addr, "/scans/all", Some(&both)).await.status(),
        StatusCode::OK
    );
    for token in [&read, &write] {
        assert_forbidden(
            &get_with(addr, "/scans/all", Some(token)).await,
            r#"Bearer error="insufficient_scope", scope="scans:read scans:write""#,
        );
    }
    assert_audited("sam-read", "scope_missing");
}

#[tokio::test]
async fn wildcard_scopes_grant_within_their_prefix_only() {
    let f = fixture();
    let addr = serve(&f).await;
    let granted = [("wanda-family", "agent:*"), ("wanda-all", "*")];
    for (subject, scope) in granted {
        let token = Token::new(&f, subject).scopes(&[scope]).sign();
        assert_eq!(
            get_with(addr, "/agent", Some(&token)).await.status(),
            StatusCode::OK,
            "{scope}"
        );
    }
    // No colon boundary, another family, a bare prefix: none is a wildcard
    // for `agent:read`.
    let refused = [
        ("wanda-star", "agent*"),
        ("wanda-colon", "agent:"),
        ("wanda-other", "agentx:*"),
        ("wanda-bare", "agent"),
        ("wanda-mid", "agent:*:read"),
    ];
    for (subject, scope) in refused {
        let token = Token::new(&f, subject).scopes(&[scope]).sign();
        assert_forbidden(
            &get_with(addr, "/agent", Some(&token)).await,
            r#"Bearer error="insufficient_scope", scope="agent:read""#,
        );
        assert_audited(subject, "scope_missing");
    }
}

// ---------------------------------------------------------------------------
// Roles and permissions

#[tokio::test]
async fn roles_any_of_and_all_of() {
    let f = fixture();
    let addr = serve(&f).await;
    let operator = Token::new(&f, "rita-operator").roles(&["operator"]).sign();
    let both = Token::new(&f, "rita-both")
        .roles(&["operator", "auditor"])
        .sign();
    let viewer = Token::new(&f, "rita-viewer").roles(&["viewer"]).sign();

    assert_eq!(
        get_with(addr, "/roles/any", Some(&operator)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        get_with(addr, "/roles/all", Some(&both)).await.status(),
        StatusCode::OK
    );
    // Roles are not OAuth scopes: the challenge names none.
    assert_forbidden(
        &get_with(addr, "/roles/any", Some(&viewer)).await,
        r#"Bearer error="insufficient_scope""#,
    );
    assert_forbidden(
        &get_with(addr, "/roles/all", Some(&operator)).await,
        r#"Bearer error="insufficient_scope""#,
    );
    assert_audited("rita-viewer", "role_missing");
    assert_audited("rita-operator", "role_missing");
}

#[tokio::test]
async fn admin_reaches_everything_operator_all_but_delete_viewer_only_reads() {
    let f = fixture();
    let addr = serve(&f).await;
    let table = [
        ("pat-admin", "admin", [true, true, true, true]),
        ("pat-operator", "operator", [true, true, true, false]),
        ("pat-viewer", "viewer", [true, false, false, false]),
        ("pat-guest", "guest", [false, false, false, false]),
    ];
    for (subject, role, allowed) in table {
        let token = Token::new(&f, subject).roles(&[role]).sign();
        for (permission, allowed) in ["read", "create", "execute", "delete"]
            .into_iter()
            .zip(allowed)
        {
            let response = get_with(addr, &format!("/do/{permission}"), Some(&token)).await;
            if allowed {
                assert_eq!(response.status(), StatusCode::OK, "{role} {permission}");
            } else {
                assert_forbidden(
                    &response,
                    &format!(r#"Bearer error="insufficient_scope", scope="{permission}""#),
                );
            }
        }
    }
    assert_audited("pat-operator", "permission_missing");
    assert_audited("pat-viewer", "permission_missing");
    // A scope grants a permission directly, with no role.
    let scoped = Token::new(&f, "pat-scoped").scopes(&["delete"]).sign();
    assert_eq!(
        get_with(addr, "/do/delete", Some(&scoped)).await.status(),
        StatusCode::OK
    );
    assert_unauthenticated(&get_with(addr, "/do/read", None).await);
}

// ---------------------------------------------------------------------------
// Tenants

#[tokio::test]
async fn tenant_from_a_header_must_match_and_be_there() {
    let f = fixture();
    let addr = serve(&f).await;
    let acme = Token::new(&f, "tina-acme").tenant("acme").sign();
    let tenant_get = |tenant: Option<&'static [u8]>, token: Vec<u8>| async move {
        let mut headers: Vec<(&str, &[u8])> = vec![("authorization", token.as_slice())];
        if let Some(tenant) = tenant {
            headers.push(("x-tenant-id", tenant));
        }
        http_get(addr, "/tenant", &headers).await
    };
    assert_eq!(
        tenant_get(Some(b"acme"), acme.clone()).await.status(),
        StatusCode::OK
    );
    let challenge = r#"Bearer error="insufficient_scope""#;
    assert_forbidden(&tenant_get(Some(b"globex"), acme.clone()).await, challenge);
    assert_audited("tina-acme", "tenant_mismatch");
    assert_forbidden(&tenant_get(None, acme.clone()).await, challenge);
    assert_audited("tina-acme", "tenant_missing");
    // Two tenant headers: which one? Neither.
    let two = http_get(
        addr,
        "/tenant",
        &[
            ("authorization", &acme),
            ("x-tenant-id", b"acme"),
            ("x-tenant-id", b"globex"),
        ],
    )
    .await;
    assert_forbidden(&two, challenge);
    assert_audited("tina-acme", "tenant_ambiguous");
    // A principal without a tenant belongs to none.
    let nobody = Token::new(&f, "tina-none").sign();
    assert_forbidden(&tenant_get(Some(b"acme"), nobody).await, challenge);
    assert_audited("tina-none", "tenant_missing");
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn tenant_from_the_path_must_match_and_admins_cross_only_where_allowed() {
    let f = fixture();
    let addr = serve(&f).await;
    let challenge = r#"Bearer error="insufficient_scope""#;
    let acme = Token::new(&f, "paula-acme").tenant("acme").sign();
    assert_eq!(
        get_with(addr, "/tenants/acme/scans", Some(&acme))
            .await
            .status(),
        StatusCode::OK
    );
    assert_forbidden(
        &get_with(addr, "/tenants/globex/scans", Some(&acme)).await,
        challenge,
    );
    assert_audited("paula-acme", "tenant_mismatch");
    // Percent-decoded as axum decodes it, and compared exactly.
    let spaced = Token::new(&f, "paula-spaced").tenant("acme corp").sign();
    assert_eq!(
        get_with(addr, "/tenants/acme%20corp/scans", Some(&spaced))
            .await
            .status(),
        StatusCode::OK
    );
    assert_forbidden(
        &get_with(addr, "/tenants/ACME%20CORP/scans", Some(&spaced)).await,
        challenge,
    );

    // An admin of another tenant: refused where crossing is not allowed...
    let admin = Token::new(&f, "paula-admin")
        .tenant("globex")
        .roles(&["admin"])
        .sign();
    assert_forbidden(
        &get_with(addr, "/tenants/acme/scans", Some(&admin)).await,
        challenge,
    );
    // ...allowed where it is, with or without a tenant of its own.
    assert_eq!(
        get_with(addr, "/platform/tenants/acme/scans", Some(&admin))
            .await
            .status(),
        StatusCode::OK
    );
    let root = Token::new(&f, "paula-root").roles(&["admin"]).sign();
    assert_eq!(
        get_with(addr, "/platform/tenants/acme/scans", Some(&root))
            .await
            .status(),
        StatusCode::OK
    );
    // Anyone else still needs their own tenant there.
    let operator = Token::new(&f, "paula-operator")
        .tenant("globex")
        .roles(&["operator"])
        .sign();
    assert_forbidden(
        &get_with(addr, "/platform/tenants/acme/scans", Some(&operator)).await,
        challenge,
    );
    assert_audited("paula-operator", "tenant_mismatch");
    assert_unauthenticated(&get_with(addr, "/tenants/acme/scans", None).await);
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn a_tenant_path_layer_around_the_whole_router_fails_closed() {
    let f = fixture();
    // Outside the router no route is matched yet: no path parameters.
    let router = Router::new().route("/tenants/{tenant}/scans", get(ok));
    let service = ServiceBuilder::new()
        .layer(f.auth.clone())
        .layer(RequireTenant::from_path_param("tenant").unwrap())
        .service(router);
    let token = Token::new(&f, "otto-outside").tenant("acme").sign();
    let request = Request::get("/tenants/acme/scans")
        .header("authorization", token)
        .body(axum::body::Body::empty())
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_audited("otto-outside", "tenant_missing");
}

// ---------------------------------------------------------------------------
// Async policies, handler checks, composition

#[cfg(feature = "axum")]
#[tokio::test]
async fn an_async_policy_allows_refuses_and_is_not_asked_for_anonymous_callers() {
    let f = fixture();
    let addr = serve(&f).await;
    let owner = Token::new(&f, "owner-olga").sign();
    let allowed = get_with(addr, "/owners/owner-olga/scan", Some(&owner)).await;
    assert_eq!(allowed.status(), StatusCode::OK);
    assert_eq!(allowed.body(), "ok");

    // The policy's own rejection reaches the client as it made it.
    let refused = get_with(addr, "/owners/someone-else/scan", Some(&owner)).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = serde_json::from_slice(refused.body()).unwrap();
    assert_eq!(body["detail"], "Only the owner may see this scan.");
    assert_audited("owner-olga", "policy_refused");

    // A policy may answer 503 when its backend is down.
    let flaky = Token::new(&f, "flaky-fred").sign();
    let down = get_with(addr, "/owners/flaky-fred/scan", Some(&flaky)).await;
    assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(down.headers()["retry-after"], "3");
    assert_audited("flaky-fred", "policy_refused");

    // Anonymous: 401 before the policy runs (counted in the tower test).
    assert_unauthenticated(&get_with(addr, "/owners/anonymous/scan", None).await);
}

#[tokio::test]
async fn an_async_policy_in_a_plain_tower_stack() {
    let f = fixture();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let policy = Authorize::new("count", move |principal: Principal, head: RequestHead| {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            if head.method() == http::Method::GET && principal.has_role("reader") {
                Ok(())
            } else {
                Err(Rejection::forbidden())
            }
        }
    });
    let service = ServiceBuilder::new()
        .layer(f.auth.clone())
        .layer(policy)
        .service_fn(|_request: Request<String>| async {
            Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                Bytes::from_static(b"inner"),
            )))
        });
    let call = |token: Option<Vec<u8>>| {
        let service = service.clone();
        async move {
            let mut request = Request::get("/x");
            if let Some(token) = token {
                request = request.header("authorization", token);
            }
            service
                .oneshot(request.body(String::new()).unwrap())
                .await
                .unwrap()
        }
    };
    let reader = Token::new(&f, "tower-reader").roles(&["reader"]).sign();
    let stranger = Token::new(&f, "tower-stranger").sign();
    let allowed = call(Some(reader)).await;
    assert_eq!(allowed.status(), StatusCode::OK);
    assert!(!allowed.body().is_rejection());
    assert_eq!(call(Some(stranger)).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(call(None).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "never for the anonymous caller"
    );
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn handlers_check_scopes_and_permissions_themselves() {
    let f = fixture();
    let addr = serve(&f).await;
    let reader = Token::new(&f, "hank-reader")
        .scopes(&["reports:*"])
        .roles(&["viewer"])
        .sign();
    let response = get_with(addr, "/reports", Some(&reader)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.body(), "reports");

    let other = Token::new(&f, "hank-other").scopes(&["scans:read"]).sign();
    assert_forbidden(
        &get_with(addr, "/reports", Some(&other)).await,
        r#"Bearer error="insufficient_scope", scope="reports:read""#,
    );
    assert_audited("hank-other", "scope_missing");
    assert_forbidden(
        &get_with(addr, "/reports/delete", Some(&reader)).await,
        r#"Bearer error="insufficient_scope", scope="delete""#,
    );
    assert_audited("hank-reader", "permission_missing");
    assert_unauthenticated(&get_with(addr, "/reports", None).await);
    let admin = Token::new(&f, "hank-admin").roles(&["admin"]).sign();
    assert_eq!(
        get_with(addr, "/reports/delete", Some(&admin))
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn layers_compose_in_a_service_builder_outermost_first() {
    let f = fixture();
    let addr = serve(&f).await;
    let stack_get = |token: Vec<u8>, tenant: &'static [u8], owner: &'static [u8]| async move {
        http_get(
            addr,
            "/stack",
            &[
                ("authorization", &token),
                ("x-tenant-id", tenant),
                ("x-owner", owner),
            ],
        )
        .await
    };
    let no_scope = Token::new(&f, "carl-noscope").tenant("acme").sign();
    let response = stack_get(no_scope, b"acme", b"carl-noscope").await;
    assert_forbidden(
        &response,
        r#"Bearer error="insufficient_scope", scope="scans:read""#,
    );
    assert_audited("carl-noscope", "scope_missing");

    let scoped = Token::new(&f, "carl-scoped")
        .scopes(&["scans:read"])
        .tenant("acme")
        .sign();
    let response = stack_get(scoped.clone(), b"globex", b"carl-scoped").await;
    assert_forbidden(&response, r#"Bearer error="insufficient_scope""#);
    assert_audited("carl-scoped", "tenant_mismatch");

    // Scope and tenant pass; the async policy has the last word.
    let response = stack_get(scoped.clone(), b"acme", b"someone-else").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_audited("carl-scoped", "policy_refused");
    let response = stack_get(scoped, b"acme", b"carl-scoped").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.body(), "ok");
}

#[tokio::test]
async fn the_principal_reaches_the_handler_through_the_layers() {
    let f = fixture();
    let addr = serve(&f).await;
    let token = Token::new(&f, "mia").sign();
    let response = get_with(addr, "/me", Some(&token)).await;
    assert_eq!(response.body(), "mia");
}

// ---------------------------------------------------------------------------
// gRPC

mod grpc {
    use super::*;
    use tonic::metadata::MetadataValue;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    async fn serve_grpc(f: &Fixture) -> SocketAddr {
        let (_reporter, health) = tonic_health::server::health_reporter();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let blocked = Authorize::new(
            "blocklist",
            |principal: Principal, _head: RequestHead| async move {
                if principal.subject() == "grpc-blocked" {
                    Err(Rejection::forbidden().with_detail("This client is blocked."))
                } else {
                    Ok(())
                }
            },
        );
        tokio::spawn(
            tonic::transport::Server::builder()
                .layer(f.auth.clone())
                .layer(RequireScope::any(["health:read"]).unwrap())
                .layer(RequireTenant::from_header("x-tenant-id").unwrap())
                .layer(blocked)
                .add_service(health)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        addr
    }

    fn check(token: Option<&[u8]>, tenant: &str) -> tonic::Request<HealthCheckRequest> {
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        });
        if let Some(token) = token {
            let value: MetadataValue<_> = std::str::from_utf8(token).unwrap().parse().unwrap();
            request.metadata_mut().insert("authorization", value);
        }
        request
            .metadata_mut()
            .insert("x-tenant-id", tenant.parse().unwrap());
        request
    }

    #[tokio::test]
    async fn grpc_clients_read_unauthenticated_and_permission_denied() {
        let f = fixture();
        let addr = serve_grpc(&f).await;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = HealthClient::new(channel);

        let status = client.check(check(None, "acme")).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert_eq!(status.message(), "Authentication is required.");

        let no_scope = Token::new(&f, "grpc-noscope").tenant("acme").sign();
        let status = client
            .check(check(Some(&no_scope), "acme"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert_eq!(status.message(), FORBIDDEN_DETAIL);
        assert_eq!(
            status
                .metadata()
                .get("www-authenticate")
                .unwrap()
                .to_str()
                .unwrap(),
            r#"Bearer error="insufficient_scope", scope="health:read""#
        );
        assert_audited("grpc-noscope", "scope_missing");

        let scoped = Token::new(&f, "grpc-scoped")
            .scopes(&["health:*"])
            .tenant("acme")
            .sign();
        let status = client
            .check(check(Some(&scoped), "globex"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert_audited("grpc-scoped", "tenant_mismatch");
        client
            .check(check(Some(&scoped), "acme"))
            .await
            .expect("scope and tenant match");

        let blocked = Token::new(&f, "grpc-blocked")
            .scopes(&["health:read"])
            .tenant("acme")
            .sign();
        let status = client
            .check(check(Some(&blocked), "acme"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert_eq!(status.message(), "This client is blocked.");
        assert_audited("grpc-blocked", "policy_refused");
    }
}

// ---------------------------------------------------------------------------
// Build-time validation and pure checks

#[test]
fn empty_lists_and_bad_names_are_refused_at_build() {
    assert!(RequireScope::any(Vec::<String>::new()).is_err());
    assert!(RequireScope::all(["scans:read", ""]).is_err());
    assert!(RequireScope::any(["scans read"]).is_err());
    assert!(RequireRole::all(Vec::<&str>::new()).is_err());
    assert!(RequireRole::any([""]).is_err());
    let roles = RolePermissions::admin_operator_viewer();
    assert!(RequirePermission::new(roles, "two words").is_err());
    assert!(RequireTenant::from_header("not a header").is_err());
    #[cfg(feature = "axum")]
    assert!(RequireTenant::from_path_param("").is_err());
}

#[test]
fn handler_checks_refuse_like_the_layers() {
    audit();
    let user = Principal::builder("helen")
        .roles(["viewer"])
        .scopes(["scans:*"])
        .method(AuthMethod::Development)
        .build();
    assert!(require_scope(Some(&user), "scans:write").is_ok());
    let refused = require_scope(Some(&user), "reports:read").unwrap_err();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        refused.header("www-authenticate").unwrap(),
        r#"Bearer error="insufficient_scope", scope="reports:read""#
    );
    assert_eq!(refused.detail(), Some(FORBIDDEN_DETAIL));
    assert_audited("helen", "scope_missing");
    assert!(require_role(Some(&user), "viewer").is_ok());
    let roles = RolePermissions::admin_operator_viewer();
    assert!(require_permission(&roles, Some(&user), "read").is_ok());
    assert_eq!(
        require_permission(&roles, Some(&user), "create")
            .unwrap_err()
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        require_role(None, "viewer").unwrap_err().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        require_scope(Some(&Principal::anonymous()), "x")
            .unwrap_err()
            .header("www-authenticate")
            .unwrap(),
        "Bearer"
    );
}

#[cfg(feature = "serde")]
#[test]
fn role_permissions_read_from_configuration_and_are_checked() {
    #[derive(serde::Deserialize)]
    struct Config {
        roles: RolePermissions,
    }
    let config: Config = toml::from_str(
        r#"
        [roles]
        admin = ["*"]
        analyst = ["read", "reports:*"]
        "#,
    )
    .unwrap();
    assert!(config.roles.role_grants("admin", "delete"));
    assert!(config.roles.role_grants("analyst", "reports:export"));
    assert!(!config.roles.role_grants("analyst", "create"));
    let bad = toml::from_str::<Config>("[roles]\nanalyst = [\"read it\"]\n");
    assert!(bad.is_err());
}

/// Scope-token-like strings, colons and stars included.
fn scope() -> impl Strategy<Value = String> {
    "[a-z*:]{1,12}"
}

proptest! {
    #[test]
    fn a_granted_scope_always_grants_itself(scope in scope()) {
        prop_assert!(scope_grants(&scope, &scope));
    }

    #[test]
    fn the_full_wildcard_grants_everything(needed in scope()) {
        prop_assert!(scope_grants("*", &needed));
    }

    #[test]
    fn a_wildcard_never_grants_outside_its_prefix(
        prefix in "[a-z]{1,6}(:[a-z]{1,6}){0,2}",
        needed in scope(),
    ) {
        let family = format!("{prefix}:");
        let granted = format!("{family}*");
        if scope_grants(&granted, &needed) {
            prop_assert!(needed.starts_with(&family) && needed.len() > family.len());
        }
        // Everything strictly inside the family is granted.
        let inside = format!("{family}{needed}");
        prop_assert!(scope_grants(&granted, &inside));
    }

    #[test]
    fn a_scope_without_a_wildcard_grants_only_itself(granted in "[a-z:]{1,12}", needed in scope()) {
        if scope_grants(&granted, &needed) {
            prop_assert_eq!(granted, needed);
        }
    }

    #[test]
    fn has_scope_is_any_granted_scope(granted in proptest::collection::vec(scope(), 0..4), needed in scope()) {
        let principal = Principal::builder("p").scopes(granted.clone()).build();
        prop_assert_eq!(
            has_scope(&principal, &needed),
            granted.iter().any(|g| scope_grants(g, &needed))
        );
    }
}
