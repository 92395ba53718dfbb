//! The Palisade demo gateway: an axum service shaped like a real one, with
//! Palisade's layers in front and the ecosystem's own layers where they
//! already do the job well.
//!
//! ```text
//! cargo run --release --example gateway
//! ```
//!
//! Listens on 127.0.0.1 (port from `PORT`, default 8080), with in-memory data.
//! Environment (all optional):
//! - `PORT`: the port (default 8080);
//! - `TRUSTED_PROXIES`: comma-separated CIDRs whose `X-Forwarded-For` is
//!   believed (default: none, so forwarding headers are ignored);
//! - `ADMIN_NETWORKS`: comma-separated CIDRs allowed to delete scans
//!   (default: loopback only);
//! - `CORS_ORIGINS`: comma-separated origins allowed by CORS (default
//!   `http://localhost:3000`);
//! - `RUST_LOG`: log filter (default `info`; audit events are under
//!   `palisade::audit`).
//!
//! - `RATE_PER_MINUTE`: the per-client-address limit (default 120 per
//!   minute, bursts of 30);
//! - `DEMO_PASSWORD`: the password of the demo login (default
//!   `palisade-demo`);
//! - `REDIS_URL`: keep rate limits, revocations, refresh tokens and
//!   WebSocket tickets in Redis, shared by every gateway instance using it
//!   (default: in memory); `GATEWAY_INSTANCES` (default 1) is how many
//!   instances share it: while Redis is unreachable each one limits locally
//!   at quota / instances, and token revocation checks fail closed (503);
//! - `TOKEN_TTL_SECONDS`: access token lifetime (default 900);
//! - `OIDC_ISSUER` and `OIDC_AUDIENCE`: also accept tokens of this identity
//!   provider, its keys found through OIDC discovery;
//! - `CONCURRENCY_PER_IP`: requests in flight per client address (default 64).
//!
//! Authentication: a development issuer (an ES256 key made at start-up)
//! signs the gateway's own tokens; the gateway prints one per role when it
//! starts, and publishes its public key at `/.well-known/jwks.json`. It also
//! issues one API key per role (`X-API-Key` or `Authorization: ApiKey`),
//! hashed with `API_KEY_PEPPER` (else a pepper made at start-up; required
//! with `REDIS_URL`); the demo keys expire after a day. A request carries a
//! token or a key, never both.
//!
//! Roles and permissions (admin / operator / viewer): reading needs `read`
//! (every role), creating `create` (operator, admin), deleting `delete`
//! (admin, and only from an admin network).
//!
//! Headers and redaction: every response (refusals included) carries
//! helmet's security headers, with a Content-Security-Policy allowing
//! scripts only from here or with the response's nonce and reporting
//! violations to `/csp-report`; credential headers are marked sensitive and
//! request spans show URIs with secret query values redacted.
//!
//! Routes:
//! - `GET /`: a page whose inline script runs with the CSP nonce, and a
//!   second one without it that the browser blocks and reports;
//! - `POST /csp-report`: violation reports (logged, the latest hundred kept,
//!   listed by `GET /csp-report`);
//! - `GET /demo/profile`: a JSON document whose `password`, `api_key` and
//!   token fields arrive as `***REDACTED***`;
//! - `GET /health`, `GET /.well-known/jwks.json`: open, never rate limited;
//! - `GET /api/scans`, `GET /api/scans/{id}`: a token or key (viewer and up);
//! - `POST /api/scans`: operator or admin;
//! - `DELETE /api/scans/{id}`: admin, from an admin network;
//! - `POST /auth/login` (`{"user": "viewer|operator|admin", "password":
//!   "..."}`): an access token (role = user) and a refresh token; five
//!   failures per client address in 15 minutes lock it out;
//! - `POST /auth/refresh` (`{"refresh_token": "..."}`): a new pair; a
//!   refresh token used twice revokes its whole family;
//! - `POST /auth/logout` (token; `{"everywhere": true}` signs the subject
//!   out of every token issued so far);
//! - `POST /auth/ws-ticket` (token): a single-use ticket valid 30 s;
//! - `GET /ws?ticket=...`: a WebSocket echo that closes when the token that
//!   minted the ticket expires.
//!
//! - `GET /api/inventory`: a token or key (viewer and up); the handler calls
//!   an in-process "inventory" upstream through a circuit breaker: while the
//!   upstream fails (503), the breaker opens after a few failures and
//!   answers at once with 503 + `Retry-After` (problem type
//!   `circuit-open`) until a probe finds the upstream back;
//! - `GET /api/admin/inventory`, `PUT /api/admin/inventory`
//!   (`{"failing": true}`): read or set the upstream's failure switch and
//!   read the breaker's state (admin, from an admin network).
//!
//! Limits: a per-client-address policy on every route but `/health` and
//! CORS preflights (`RateLimit` fields on every response), per-principal
//! tiers on `/api` (admin unlimited, operator 600/min, viewer 300/min), and
//! a failed-login policy that counts only 401 answers of `/auth/*`.
//!
//! Concurrency: an adaptive global limit (Gradient2, 32 to 2,048 in flight)
//! sheds ordinary traffic first and keeps its last tenth for `/health` and
//! `/api/admin`; at most `CONCURRENCY_PER_IP` (default 64) requests in
//! flight per client address, and 16 per principal on `/api`, each held
//! until the response body ends.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use ipnet::IpNet;
use palisade::auth::api_key::{ApiKeys, MemoryApiKeyStore, NewApiKey, RedisApiKeyStore};
use palisade::auth::authenticate::Authenticate;
use palisade::auth::authorize::{RequirePermission, RolePermissions};
use palisade::auth::claims::ClaimMapping;
use palisade::auth::crypto::CryptoBackend;
use palisade::auth::issue::{SigningKey, TokenIssuer};
use palisade::auth::key::Algorithm;
use palisade::auth::refresh::{MemoryRefreshStore, RefreshTokens};
use palisade::auth::remote::RemoteOptions;
use palisade::auth::revocation::{MemoryRevocationStore, RedisRevocationStore, RevocationStore};
use palisade::auth::ticket::{MemoryTicketStore, WsTickets};
use palisade::auth::{Issuer, JwtAuthLayer, JwtVerifier, RedisRefreshStore, RedisTicketStore};
use palisade::breaker::{BreakerHandle, BreakerPolicy, CircuitBreakerLayer, Window};
use palisade::concurrency::adaptive::Gradient2;
use palisade::concurrency::{ConcurrencyLimitLayer, LoadShedLayer, MissingKey};
use palisade::core::Rejection;
use palisade::core::client_ip::{ClientIp, ClientIpLayer, ClientIpResolver};
use palisade::core::guard::{GuardLayer, RequestHead};
use palisade::core::key::KeyFn;
use palisade::core::principal::Principal;
use palisade::headers::csp::{ContentSecurityPolicy, Source};
use palisade::headers::{CspNonce, SecurityHeaders};
use palisade::ratelimit::{
    FailurePolicy, Quota, RateLimitLayer, RateLimitPolicy, RedisStore, TierBy, TierLimit, Tiers,
};
use palisade::redact::{RedactBodyLayer, RedactingMakeSpan, SensitiveHeadersLayer};
use palisade::redis::{RedisConfig, RedisConnection};
use serde::{Deserialize, Serialize};
use tower::util::BoxCloneSyncService;
use tower::{Layer as _, ServiceBuilder, ServiceExt as _};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// Request bodies above this are refused (413).
const BODY_LIMIT: usize = 64 * 1024;
/// The demo keeps at most this many scans in memory.
const MAX_SCANS: usize = 10_000;

#[derive(Clone, Serialize)]
struct Scan {
    id: u64,
    target: String,
    status: &'static str,
    /// Absent when the server passes no peer address.
    requested_by: Option<IpAddr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewScan {
    target: String,
}

#[derive(Clone, Default)]
struct Scans {
    next_id: Arc<AtomicU64>,
    by_id: Arc<RwLock<BTreeMap<u64, Scan>>>,
}

impl Scans {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u64, Scan>> {
        self.by_id
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u64, Scan>> {
        self.by_id
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn list_scans(State(scans): State<Scans>) -> Json<Vec<Scan>> {
    Json(scans.read().values().cloned().collect())
}

async fn create_scan(
    State(scans): State<Scans>,
    client: Option<Extension<ClientIp>>,
    body: Result<Json<NewScan>, JsonRejection>,
) -> Result<(StatusCode, [(header::HeaderName, String); 1], Json<Scan>), Rejection> {
    let Json(new) = body.map_err(json_rejection)?;
    let target = new.target.trim();
    if target.is_empty() || target.len() > 253 || target.chars().any(char::is_control) {
        return Err(Rejection::bad_request()
            .with_detail("`target` must be a host name of 1 to 253 printable characters."));
    }
    let mut by_id = scans.write();
    if by_id.len() >= MAX_SCANS {
        return Err(Rejection::overloaded(Duration::from_secs(60))
            .with_detail("The demo holds a bounded number of scans; delete some first."));
    }
    let id = scans.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    let scan = Scan {
        id,
        target: target.to_owned(),
        status: "queued",
        requested_by: client.map(|Extension(client)| client.ip()),
    };
    by_id.insert(id, scan.clone());
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/scans/{id}"))],
        Json(scan),
    ))
}

async fn get_scan(
    State(scans): State<Scans>,
    id: Result<Path<u64>, PathRejection>,
) -> Result<Json<Scan>, Rejection> {
    let Path(id) = id.map_err(|_| Rejection::bad_request().with_detail("The id is a number."))?;
    scans
        .read()
        .get(&id)
        .cloned()
        .map(Json)
        .ok_or_else(|| Rejection::not_found().with_detail("No scan has this id."))
}

async fn delete_scan(
    State(scans): State<Scans>,
    id: Result<Path<u64>, PathRejection>,
) -> Result<StatusCode, Rejection> {
    let Path(id) = id.map_err(|_| Rejection::bad_request().with_detail("The id is a number."))?;
    match scans.write().remove(&id) {
        Some(_) => Ok(StatusCode::NO_CONTENT),
        None => Err(Rejection::not_found().with_detail("No scan has this id.")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    user: String,
    password: String,
}

/// The demo's users: each name is also its one role.
const DEMO_USERS: [&str; 3] = ["viewer", "operator", "admin"];

/// What the auth routes share.
#[derive(Clone)]
pub(crate) struct AuthState {
    issuer: TokenIssuer,
    refresh: RefreshTokens,
    tickets: WsTickets,
    revocation: Arc<dyn RevocationStore>,
    password: Arc<str>,
    token_ttl: Duration,
}

impl AuthState {
    /// An access token for a demo user, and a new refresh-token family.
    async fn tokens_for(&self, user: &str) -> Result<Json<serde_json::Value>, Rejection> {
        let access = self
            .issuer
            .mint(user)
            .roles([user])
            .sign()
            .map_err(|_| unavailable())?;
        let refresh = self.refresh.issue(user).await.map_err(|_| unavailable())?;
        Ok(Json(serde_json::json!({
            "access_token": access.token,
            "token_type": "Bearer",
            "expires_in": self.token_ttl.as_secs(),
            "refresh_token": refresh,
        })))
    }
}

fn unavailable() -> Rejection {
    Rejection::unavailable(Duration::from_secs(5)).with_detail("Try again shortly.")
}

/// A stand-in for a real login: three demo users sharing one demo password.
async fn login(
    State(auth): State<AuthState>,
    body: Result<Json<Login>, JsonRejection>,
) -> Result<Json<serde_json::Value>, Rejection> {
    let Json(login) = body.map_err(json_rejection)?;
    let known = DEMO_USERS.contains(&login.user.as_str());
    // The password is compared even for unknown users: same work, same time.
    let password_ok = constant_time_eq(login.password.as_bytes(), auth.password.as_bytes());
    if known && password_ok {
        auth.tokens_for(&login.user).await
    } else {
        Err(Rejection::unauthenticated().with_detail("Wrong user or password."))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Refresh {
    refresh_token: String,
}

async fn refresh_tokens(
    State(auth): State<AuthState>,
    body: Result<Json<Refresh>, JsonRejection>,
) -> Result<Json<serde_json::Value>, Rejection> {
    let Json(body) = body.map_err(json_rejection)?;
    match auth.refresh.rotate(&body.refresh_token).await {
        Ok(rotated) => {
            let access = auth
                .issuer
                .mint(rotated.subject.as_str())
                .roles([rotated.subject.as_str()])
                .sign()
                .map_err(|_| unavailable())?;
            Ok(Json(serde_json::json!({
                "access_token": access.token,
                "token_type": "Bearer",
                "expires_in": auth.token_ttl.as_secs(),
                "refresh_token": rotated.refresh_token,
            })))
        }
        Err(palisade::auth::refresh::RefreshError::Unavailable) => Err(unavailable()),
        Err(_) => Err(Rejection::unauthenticated().with_detail("The refresh token is invalid.")),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Logout {
    #[serde(default)]
    everywhere: bool,
    #[serde(default)]
    refresh_token: Option<String>,
}

/// Revokes the presented access token (its `jti`), its refresh family when
/// given, and with `everywhere` every token of the subject issued so far.
async fn logout(
    State(auth): State<AuthState>,
    Extension(principal): Extension<Principal>,
    body: Option<Json<Logout>>,
) -> Result<StatusCode, Rejection> {
    let Json(body) = body.unwrap_or_default();
    let claims = principal.claims();
    let jti = claims.and_then(|c| c.get("jti")).and_then(|v| v.as_str());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let remaining = principal
        .expires_at()
        .map_or(auth.token_ttl, |exp| exp.saturating_sub(now))
        // The verifier's leeway keeps a token alive a little past `exp`.
        + Duration::from_secs(60);
    if let Some(jti) = jti {
        auth.revocation
            .revoke_token(jti, remaining)
            .await
            .map_err(|_| unavailable())?;
    }
    if body.everywhere {
        auth.revocation
            .revoke_subject(
                principal.subject(),
                now.as_secs() + 1,
                auth.token_ttl + Duration::from_secs(60),
            )
            .await
            .map_err(|_| unavailable())?;
    }
    if let Some(token) = body.refresh_token {
        let _ = auth.refresh.revoke(&token).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn ws_ticket(
    State(auth): State<AuthState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<serde_json::Value>, Rejection> {
    let ticket = auth
        .tickets
        .mint(&principal)
        .await
        .map_err(|_| unavailable())?;
    Ok(Json(
        serde_json::json!({ "ticket": ticket, "expires_in": 30 }),
    ))
}

#[derive(Deserialize)]
struct TicketQuery {
    ticket: String,
}

/// The WebSocket echo: the ticket is redeemed before the upgrade, so a bad
/// one gets a plain 401, never a socket.
async fn ws(
    State(auth): State<AuthState>,
    query: Result<Query<TicketQuery>, axum::extract::rejection::QueryRejection>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Ok(Query(query)) = query else {
        return Rejection::unauthenticated()
            .with_detail("A ticket is required: POST /auth/ws-ticket first.")
            .into_response();
    };
    match auth.tickets.redeem(&query.ticket).await {
        Ok(principal) => upgrade.on_upgrade(move |socket| echo(socket, principal)),
        Err(failure) => {
            palisade::core::audit::AuditEvent::refused(
                "ws",
                palisade::core::RejectionKind::Unauthenticated,
                failure.reason(),
            )
            .emit();
            failure.rejection(Some("palisade-gateway")).into_response()
        }
    }
}

/// Echoes text and binary messages until the client leaves or the token
/// behind the ticket expires; then closes with 1008 (policy violation).
async fn echo(mut socket: WebSocket, principal: Principal) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let left = principal
        .expires_at()
        .map_or(Duration::ZERO, |exp| exp.saturating_sub(now));
    let expiry = tokio::time::sleep(left);
    tokio::pin!(expiry);
    loop {
        tokio::select! {
            message = socket.recv() => match message {
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                    if socket.send(message).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            () = &mut expiry => {
                let _ = socket
                    .send(Message::Close(Some(CloseFrame {
                        code: 1008,
                        reason: "token expired".into(),
                    })))
                    .await;
                return;
            }
        }
    }
}

/// The in-process "inventory" upstream and the breaker-guarded client the
/// handler calls it through.
#[derive(Clone)]
struct Inventory {
    client: BoxCloneSyncService<axum::extract::Request, Response, std::convert::Infallible>,
    failing: Arc<AtomicBool>,
    breaker: BreakerHandle,
}

impl Inventory {
    fn new(policy: BreakerPolicy) -> Result<Self, Box<dyn std::error::Error>> {
        let failing = Arc::new(AtomicBool::new(false));
        let upstream = tower::service_fn({
            let failing = failing.clone();
            move |_request: axum::extract::Request| {
                let failing = failing.load(Ordering::Relaxed);
                async move {
                    // A real upstream in trouble: slow to say so, then 503.
                    if failing {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        return Ok::<_, std::convert::Infallible>(
                            (
                                StatusCode::SERVICE_UNAVAILABLE,
                                Json(serde_json::json!({"error": "inventory is down"})),
                            )
                                .into_response(),
                        );
                    }
                    Ok(
                        Json(serde_json::json!({"items": [{"sku": "scanner-1", "stock": 7}]}))
                            .into_response(),
                    )
                }
            }
        });
        let breaker = CircuitBreakerLayer::builder("inventory")
            .policy(policy)
            .build()?;
        let handle = breaker.handle();
        let client = breaker
            .layer(upstream)
            .map_response(|response| response.map(axum::body::Body::new));
        Ok(Self {
            client: BoxCloneSyncService::new(client),
            failing,
            breaker: handle,
        })
    }
}

/// Calls the upstream through the breaker: its answer, or the breaker's
/// refusal (503 + Retry-After) while it is open.
async fn inventory(State(inventory): State<Inventory>) -> Response {
    let request = axum::extract::Request::new(axum::body::Body::empty());
    match inventory.client.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamSwitch {
    failing: bool,
}

fn inventory_status(inventory: &Inventory) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "failing": inventory.failing.load(Ordering::Relaxed),
        "breaker": inventory.breaker.state().as_str(),
    }))
}

async fn inventory_switch_get(State(inventory): State<Inventory>) -> Json<serde_json::Value> {
    inventory_status(&inventory)
}

async fn inventory_switch_put(
    State(inventory): State<Inventory>,
    body: Result<Json<UpstreamSwitch>, JsonRejection>,
) -> Result<Json<serde_json::Value>, Rejection> {
    let Json(switch) = body.map_err(json_rejection)?;
    inventory.failing.store(switch.failing, Ordering::Relaxed);
    Ok(inventory_status(&inventory))
}

async fn jwks(State(auth): State<AuthState>) -> Response {
    auth.issuer
        .jwks_response()
        .map(axum::body::Body::from)
        .into_response()
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The demo page: its inline script carries the response's CSP nonce and
/// runs; the second one has none, so the browser blocks it and reports the
/// violation to `/csp-report`.
async fn page(nonce: CspNonce) -> axum::response::Html<String> {
    let nonce = nonce.as_str();
    axum::response::Html(format!(
        r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Palisade gateway</title></head>
<body>
<h1>Palisade gateway</h1>
<p id="nonce">the script with the nonce did not run</p>
<p id="inline">the script without a nonce did not run</p>
<script nonce="{nonce}">document.getElementById('nonce').textContent = 'the script with the nonce ran';</script>
<script>document.getElementById('inline').textContent = 'the script without a nonce ran';</script>
</body>
</html>
"#
    ))
}

/// Content-Security-Policy violation reports, the latest hundred.
#[derive(Clone, Default)]
pub(crate) struct CspReports(Arc<std::sync::Mutex<std::collections::VecDeque<serde_json::Value>>>);

impl CspReports {
    /// The reports received so far.
    pub(crate) fn all(&self) -> Vec<serde_json::Value> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

/// Browsers post violations here (`report-uri`): logged and kept, bounded.
async fn csp_report(State(reports): State<CspReports>, body: axum::body::Bytes) -> StatusCode {
    let Ok(report) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let directive = report
        .pointer("/csp-report/violated-directive")
        .and_then(|v| v.as_str())
        .unwrap_or("?")
        .to_owned();
    tracing::warn!(target: "palisade::audit", directive, "content security policy violation reported");
    let mut kept = reports
        .0
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if kept.len() == 100 {
        kept.pop_front();
    }
    kept.push_back(report);
    StatusCode::NO_CONTENT
}

/// The reports kept, for a look at what browsers refused.
async fn csp_reports_list(State(reports): State<CspReports>) -> Json<Vec<serde_json::Value>> {
    Json(reports.all())
}

/// A document with secrets in it, as a careless handler might return one:
/// `RedactBodyLayer` replaces them on the way out.
async fn profile() -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "user": "demo",
        "password": "hunter2",
        "settings": { "theme": "dark", "api_key": "pal_dev_not_a_real_key", "Access-Token": ["a", "b"] }
    }))
}

async fn not_found() -> Rejection {
    Rejection::not_found().with_detail("No route here. Try GET /health or /api/scans.")
}

/// Body errors become problem+json: too large (413) or not the JSON we want (400).
fn json_rejection(rejection: JsonRejection) -> Rejection {
    let too_large = matches!(&rejection, JsonRejection::BytesRejection(_))
        && rejection.status() == StatusCode::PAYLOAD_TOO_LARGE;
    if too_large {
        return Rejection::payload_too_large().with_detail("The body is too large.");
    }
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            Rejection::bad_request().with_detail("Send `content-type: application/json`.")
        }
        _ => Rejection::bad_request().with_detail("The body must be JSON: {\"target\": \"host\"}."),
    }
}

/// Refuses a request whose `Content-Length` says its body is too large.
fn declared_length_limit(limit: usize) -> GuardLayer {
    GuardLayer::new("body_limit", move |head: &RequestHead<'_>| {
        let declared = head
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match declared {
            Some(length) if length > limit as u64 => {
                Err(Rejection::payload_too_large().with_detail("The body is too large."))
            }
            _ => Ok(()),
        }
    })
}

/// Admin routes only from the admin networks, by the client address that
/// `ClientIpLayer` resolved (forwarding headers only from trusted proxies).
/// An address that is a proxy's fallback (its forwarding header unreadable)
/// is never admitted: it is the proxy's, not the client's.
fn admin_networks(networks: Arc<[IpNet]>) -> GuardLayer {
    GuardLayer::new("admin_network", move |head: &RequestHead<'_>| {
        match head.client_ip() {
            Some(client)
                if client.is_resolved()
                    && networks.iter().any(|net| net.contains(&client.ip())) =>
            {
                Ok(())
            }
            _ => {
                Err(Rejection::forbidden()
                    .with_detail("Admin routes are open to admin networks only."))
            }
        }
    })
}

/// The gateway's router and its development token issuer.
pub(crate) struct Gateway {
    pub(crate) router: Router,
    pub(crate) issuer: TokenIssuer,
    /// One development API key per demo role, as (role, key).
    pub(crate) dev_keys: Vec<(&'static str, String)>,
    /// The CSP violation reports browsers sent (read by the tests).
    #[allow(dead_code)]
    pub(crate) csp_reports: CspReports,
}

pub(crate) async fn gateway(config: &Config) -> Result<Gateway, Box<dyn std::error::Error>> {
    // The build may enable both signature backends (feature unification):
    // choose aws-lc-rs explicitly.
    CryptoBackend::install_preferred()?;
    let resolver = ClientIpResolver::builder()
        .trust_proxies(config.trusted_proxies.iter().cloned())
        .build()?;
    let origins = config
        .cors_origins
        .iter()
        .map(|origin| HeaderValue::from_str(origin))
        .collect::<Result<Vec<_>, _>>()?;
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
        .max_age(Duration::from_secs(600));

    let redis = match &config.redis_url {
        Some(url) => Some(RedisConnection::connect_lazy(&RedisConfig::standalone(
            url.clone(),
        ))?),
        None => None,
    };

    // Authentication: the development issuer's tokens, and optionally an
    // OIDC provider's.
    let issuer = TokenIssuer::builder(DEV_ISSUER)
        .audience(DEV_AUDIENCE)
        .signing_key(SigningKey::generate(Algorithm::ES256)?.with_kid("gateway-dev-1"))
        .ttl(config.token_ttl)
        .build()?;
    let (revocation, refresh, tickets): (Arc<dyn RevocationStore>, RefreshTokens, WsTickets) =
        match &redis {
            Some(connection) => {
                let revocation: Arc<dyn RevocationStore> =
                    Arc::new(RedisRevocationStore::new(connection.clone(), "palisade")?);
                (
                    revocation.clone(),
                    RefreshTokens::new(RedisRefreshStore::new(connection.clone(), "palisade")?)
                        .revocation(revocation.clone()),
                    WsTickets::new(RedisTicketStore::new(connection.clone(), "palisade")?)
                        .revocation(revocation),
                )
            }
            None => {
                let revocation: Arc<dyn RevocationStore> = Arc::new(MemoryRevocationStore::new());
                (
                    revocation.clone(),
                    RefreshTokens::new(MemoryRefreshStore::new()).revocation(revocation.clone()),
                    WsTickets::new(MemoryTicketStore::new()).revocation(revocation),
                )
            }
        };
    let mut verifier = JwtVerifier::builder()
        .issuer(issuer.verifying_issuer())
        .revocation(revocation.clone());
    if let (Some(oidc), Some(audience)) = (&config.oidc_issuer, &config.oidc_audience) {
        verifier = verifier.issuer(
            Issuer::new(oidc.clone())
                .audience(audience.clone())
                // The provider's groups and scopes are not this gateway's
                // roles and permissions: its users get none (viewer tier,
                // no route that needs a permission).
                .claim_mapping(ClaimMapping::default().role_claims([]).scope_claims([]))
                .oidc_discovery(RemoteOptions::default()),
        );
    }
    let verifier = verifier.build()?;
    let jwt = JwtAuthLayer::builder()
        .verifier(verifier.clone())
        .realm("palisade-gateway")
        .build()?;
    // API keys: hashed with a pepper (from API_KEY_PEPPER, else made at
    // start-up), kept in Redis when configured; one per demo role.
    let pepper = match &config.api_key_pepper {
        Some(pepper) => pepper.clone().into_bytes(),
        // Instances sharing keys in Redis must share the pepper, or each
        // would hash keys its own way.
        None if redis.is_some() => {
            return Err(
                "REDIS_URL needs API_KEY_PEPPER (at least 32 bytes, the same on every instance)"
                    .into(),
            );
        }
        None => {
            let mut pepper = vec![0u8; 32];
            getrandom::fill(&mut pepper).map_err(|_| "the OS random source failed")?;
            pepper
        }
    };
    let api_keys = match &redis {
        Some(connection) => ApiKeys::builder(
            "pal_dev",
            RedisApiKeyStore::new(connection.clone(), "palisade")?,
        )
        .pepper(pepper)
        .build()?,
        None => ApiKeys::builder("pal_dev", MemoryApiKeyStore::new())
            .pepper(pepper)
            .build()?,
    };
    let mut dev_keys = Vec::new();
    for role in DEMO_USERS {
        let issued = api_keys
            // Demo keys end with the day: printed keys must not live on
            // in old logs.
            .issue(
                NewApiKey::new(format!("{role}-bot"))
                    .roles([role])
                    .expires_in(Duration::from_secs(24 * 3600)),
            )
            .await?;
        dev_keys.push((role, issued.key));
    }
    // Tokens or API keys, exactly one per request.
    let authenticate = Authenticate::builder()
        .jwt(verifier)
        .api_keys(api_keys.clone())
        .realm("palisade-gateway")
        .build()?;
    let roles = RolePermissions::admin_operator_viewer();
    let read = RequirePermission::new(roles.clone(), RolePermissions::READ)?;
    let read_inventory = read.clone();
    let create = RequirePermission::new(roles.clone(), RolePermissions::CREATE)?;
    let delete = RequirePermission::new(roles, RolePermissions::DELETE)?;
    let delete_inventory = delete.clone();
    let auth_state = AuthState {
        issuer: issuer.clone(),
        refresh,
        tickets,
        revocation,
        password: Arc::from(config.demo_password.as_str()),
        token_ttl: config.token_ttl,
    };

    let limits = |builder: palisade::ratelimit::RateLimitLayerBuilder| -> Result<RateLimitLayer, Box<dyn std::error::Error>> {
        Ok(match &redis {
            Some(connection) => {
                let store = RedisStore::builder(connection.clone())
                    .on_failure(FailurePolicy::LocalFallback {
                        instances: config.instances,
                    })
                    .build()?;
                builder.redis_store(store).build()?
            }
            None => builder.build()?,
        })
    };
    let per_ip = limits(
        RateLimitLayer::builder().policy(
            RateLimitPolicy::builder(
                "per_ip",
                KeyFn::ClientIp,
                Quota::per_minute(config.rate_per_minute)
                    .burst(config.rate_per_minute.div_ceil(4))?,
            )
            .exempt_path("/health")
            .exempt_path("/.well-known/jwks.json")
            .exempt_method(Method::OPTIONS)
            .build()?,
        ),
    )?;
    let failed_logins = limits(
        RateLimitLayer::builder().policy(
            RateLimitPolicy::builder(
                "failed_logins",
                KeyFn::ClientIp,
                Quota::new(5, Duration::from_secs(15 * 60)),
            )
            .charge_when(|status| status == StatusCode::UNAUTHORIZED)
            .build()?,
        ),
    )?;
    // After authentication: a budget per principal, by role.
    let per_principal = limits(
        RateLimitLayer::builder().policy(
            RateLimitPolicy::tiered(
                "per_principal",
                KeyFn::Subject,
                Tiers::new(
                    TierBy::Role,
                    [
                        ("admin", TierLimit::Unlimited),
                        ("operator", TierLimit::Limited(Quota::per_minute(600))),
                        ("viewer", TierLimit::Limited(Quota::per_minute(300))),
                    ],
                    "viewer",
                )?,
            )
            .build()?,
        ),
    )?;

    // Concurrency: per client address before authentication, per principal
    // after it; each place held until the response body ends.
    let per_ip_concurrency = ConcurrencyLimitLayer::builder()
        .key(KeyFn::ClientIp)
        .max_in_flight(config.concurrency_per_ip)
        .exempt_path("/health")
        .build()?;
    let per_principal_concurrency = ConcurrencyLimitLayer::builder()
        .key(KeyFn::Subject)
        .max_in_flight(16)
        // Only after authentication: a request without a principal never
        // gets this far.
        .missing_key(MissingKey::Refuse)
        .build()?;
    // Global: an adaptive limit that sheds ordinary traffic first, keeping
    // the last tenth of its capacity for health checks and admin routes.
    let shed = LoadShedLayer::builder()
        .name("gateway")
        .adaptive(
            Gradient2::builder()
                .initial_limit(256)
                .min_limit(32)
                .max_limit(2_048)
                .build()?,
        )
        .class("critical", 100)
        .class("default", 90)
        .default_class("default")
        .route_prefix("/health", "critical")
        .route_prefix("/api/admin", "critical")
        .build()?;
    let inventory_upstream = Inventory::new(
        BreakerPolicy::builder()
            .window(Window::count(20))
            .failure_rate(0.5)
            .minimum_calls(5)
            .half_open_probes(2)
            .open_duration(config.breaker_open)
            .max_open_duration(config.breaker_open * 8)
            .build()?,
    )?;
    let admin_inventory = admin_networks(config.admin_networks.clone());

    // Reading needs `read` (viewer and up), creating `create` (operator and
    // up), deleting `delete` (admin) from an admin network. Route layers
    // run last-added first: authentication, then the per-principal budget,
    // then the permission.
    let api = Router::new()
        .route(
            "/api/scans",
            get(list_scans)
                .route_layer(read.clone())
                .merge(axum::routing::post(create_scan).route_layer(create)),
        )
        .route(
            "/api/scans/{id}",
            get(get_scan).route_layer(read).merge(
                axum::routing::delete(delete_scan)
                    .route_layer(admin_networks(config.admin_networks.clone()))
                    .route_layer(delete),
            ),
        )
        .with_state(Scans::default())
        .merge(
            Router::new()
                .route("/api/inventory", get(inventory).route_layer(read_inventory))
                .route(
                    "/api/admin/inventory",
                    get(inventory_switch_get)
                        .put(inventory_switch_put)
                        .route_layer(admin_inventory)
                        .route_layer(delete_inventory),
                )
                .with_state(inventory_upstream),
        )
        .route_layer(per_principal_concurrency)
        .route_layer(per_principal)
        .route_layer(authenticate);

    let public_auth = Router::new()
        .route("/auth/login", axum::routing::post(login))
        .route("/auth/refresh", axum::routing::post(refresh_tokens))
        .route_layer(failed_logins)
        .route("/.well-known/jwks.json", get(jwks))
        .route("/ws", get(ws));
    let token_auth = Router::new()
        .route("/auth/logout", axum::routing::post(logout))
        .route("/auth/ws-ticket", axum::routing::post(ws_ticket))
        .route_layer(jwt);
    let auth = public_auth.merge(token_auth).with_state(auth_state);

    // Security headers on every response (rejections included): helmet's
    // set, with scripts allowed only from here or with this response's
    // nonce, and violations reported.
    let security_headers = SecurityHeaders::helmet()
        .csp(
            ContentSecurityPolicy::helmet()
                .script_src([Source::SelfOrigin, Source::Nonce])
                .report_uri("/csp-report"),
        )
        .build()?;
    let csp_reports = CspReports::default();
    let demo = Router::new()
        .route("/", get(page))
        .route("/csp-report", get(csp_reports_list).post(csp_report))
        .route(
            "/demo/profile",
            get(profile).route_layer(RedactBodyLayer::new()),
        )
        .with_state(csp_reports.clone());

    let router = Router::new()
        .route("/health", get(health))
        .merge(demo)
        .merge(api)
        .merge(auth)
        .fallback(not_found)
        .layer(per_ip)
        .layer(per_ip_concurrency)
        // Inside the load shedder, so a request that times out (503) tells
        // its adaptive limit that the service is overloaded.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(10),
        ))
        .layer(shed)
        .layer(
            ServiceBuilder::new()
                .layer(security_headers)
                // Credential headers marked sensitive before anything logs
                // them; spans show the URI with secret query values
                // (tickets, tokens) redacted.
                .layer(SensitiveHeadersLayer::new())
                .layer(TraceLayer::new_for_http().make_span_with(RedactingMakeSpan::new()))
                .layer(cors)
                .layer(ClientIpLayer::new(resolver))
                // A declared length over the limit is refused before any of
                // the body is read, as problem+json; tower-http's layer then
                // enforces the limit on bodies without a length.
                .layer(declared_length_limit(BODY_LIMIT))
                .layer(RequestBodyLimitLayer::new(BODY_LIMIT)),
        );
    Ok(Gateway {
        router,
        issuer,
        dev_keys,
        csp_reports,
    })
}

/// The development issuer's name and audience.
pub(crate) const DEV_ISSUER: &str = "palisade-gateway-dev";
pub(crate) const DEV_AUDIENCE: &str = "palisade-gateway";

pub(crate) struct Config {
    pub(crate) port: u16,
    pub(crate) rate_per_minute: u32,
    pub(crate) demo_password: String,
    pub(crate) redis_url: Option<String>,
    pub(crate) instances: std::num::NonZeroU32,
    pub(crate) trusted_proxies: Vec<String>,
    pub(crate) admin_networks: Arc<[IpNet]>,
    pub(crate) cors_origins: Vec<String>,
    pub(crate) token_ttl: Duration,
    pub(crate) oidc_issuer: Option<String>,
    pub(crate) oidc_audience: Option<String>,
    pub(crate) api_key_pepper: Option<String>,
    pub(crate) concurrency_per_ip: u32,
    /// How long the inventory breaker first stays open.
    pub(crate) breaker_open: Duration,
}

fn list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Config {
    pub(crate) fn from_env() -> Result<Self, Box<dyn std::error::Error>> {
        let port = match std::env::var("PORT") {
            Ok(port) => port
                .parse()
                .map_err(|_| format!("PORT={port:?} is not a port"))?,
            Err(_) => 8080,
        };
        let admin_networks = list("ADMIN_NETWORKS", "127.0.0.0/8,::1/128")
            .iter()
            .map(|net| {
                net.parse::<IpNet>()
                    .map_err(|_| format!("ADMIN_NETWORKS: {net:?} is not a CIDR"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let rate_per_minute = match std::env::var("RATE_PER_MINUTE") {
            Ok(rate) => rate
                .parse()
                .ok()
                .filter(|r| *r > 0)
                .ok_or_else(|| format!("RATE_PER_MINUTE={rate:?} is not a positive number"))?,
            Err(_) => 120,
        };
        Ok(Self {
            port,
            rate_per_minute,
            demo_password: std::env::var("DEMO_PASSWORD")
                .unwrap_or_else(|_| "palisade-demo".to_owned()),
            trusted_proxies: list("TRUSTED_PROXIES", ""),
            admin_networks: admin_networks.into(),
            cors_origins: list("CORS_ORIGINS", "http://localhost:3000"),
            redis_url: std::env::var("REDIS_URL")
                .ok()
                .filter(|url| !url.is_empty()),
            token_ttl: match std::env::var("TOKEN_TTL_SECONDS") {
                Ok(ttl) => {
                    Duration::from_secs(ttl.parse().ok().filter(|t| *t > 0).ok_or_else(|| {
                        format!("TOKEN_TTL_SECONDS={ttl:?} is not a positive number")
                    })?)
                }
                Err(_) => Duration::from_secs(900),
            },
            oidc_issuer: std::env::var("OIDC_ISSUER").ok().filter(|v| !v.is_empty()),
            oidc_audience: std::env::var("OIDC_AUDIENCE")
                .ok()
                .filter(|v| !v.is_empty()),
            api_key_pepper: std::env::var("API_KEY_PEPPER")
                .ok()
                .filter(|v| !v.is_empty()),
            concurrency_per_ip: match std::env::var("CONCURRENCY_PER_IP") {
                Ok(n) => {
                    n.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        format!("CONCURRENCY_PER_IP={n:?} is not a positive number")
                    })?
                }
                Err(_) => 64,
            },
            breaker_open: Duration::from_secs(5),
            instances: match std::env::var("GATEWAY_INSTANCES") {
                Ok(n) => n
                    .parse()
                    .map_err(|_| format!("GATEWAY_INSTANCES={n:?} is not a positive number"))?,
                Err(_) => std::num::NonZeroU32::MIN,
            },
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    let config = Config::from_env()?;
    let Gateway {
        router: app,
        issuer,
        dev_keys,
        ..
    } = gateway(&config).await?;
    let addr = SocketAddr::from(([127, 0, 0, 1], config.port));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let base = format!("http://{}", listener.local_addr()?);
    println!("Palisade demo gateway listening on {base}");
    match &config.redis_url {
        Some(_) => println!("Rate limits in Redis (REDIS_URL), shared by every instance."),
        None => println!("Rate limits in memory (set REDIS_URL to share them across instances)."),
    }
    println!();
    println!(
        "Development tokens (issuer {DEV_ISSUER}, valid {} s; more from POST /auth/login):",
        config.token_ttl.as_secs()
    );
    for role in DEMO_USERS {
        let token = issuer.mint(role).roles([role]).sign()?;
        println!("  export {}_TOKEN={}", role.to_uppercase(), token.token);
    }
    println!("Development API keys (shown once; only their hashes are stored):");
    for (role, key) in &dev_keys {
        println!("  export {}_KEY={key}", role.to_uppercase());
    }
    println!();
    println!("Try:");
    println!("  open {base}/                                # a page under a nonce-based CSP");
    println!("  curl -i {base}/health");
    println!("  curl -s {base}/demo/profile                   # secrets redacted on the way out");
    println!("  curl -i {base}/api/scans                      # 401: a token is required");
    println!("  curl -i {base}/api/scans -H \"authorization: Bearer $VIEWER_TOKEN\"");
    println!("  curl -i {base}/api/scans -H \"x-api-key: $VIEWER_KEY\"            # or an API key");
    println!(
        "  curl -i -X POST {base}/api/scans -H \"authorization: Bearer $OPERATOR_TOKEN\" -H 'content-type: application/json' -d '{{\"target\":\"example.com\"}}'"
    );
    println!("  curl -i {base}/api/scans/1 -H \"authorization: Bearer $VIEWER_TOKEN\"");
    println!(
        "  curl -i -X DELETE {base}/api/scans/1 -H \"authorization: Bearer $ADMIN_TOKEN\"   # admin role, admin networks only"
    );
    println!(
        "  curl -i -X POST {base}/auth/login -H 'content-type: application/json' -d '{{\"user\":\"operator\",\"password\":\"palisade-demo\"}}'"
    );
    println!(
        "  curl -i -X POST {base}/auth/ws-ticket -H \"authorization: Bearer $VIEWER_TOKEN\"   # then ws://.../ws?ticket=..."
    );
    println!(
        "  curl -i {base}/api/inventory -H \"authorization: Bearer $VIEWER_TOKEN\"   # through a circuit breaker"
    );
    println!(
        "  curl -i -X PUT {base}/api/admin/inventory -H \"authorization: Bearer $ADMIN_TOKEN\" -H 'content-type: application/json' -d '{{\"failing\":true}}'"
    );
    println!(
        "       # then /api/inventory fails (503) until the breaker opens: 503 circuit-open with Retry-After"
    );
    println!("  curl -i {base}/nope                           # problem+json 404");
    println!(
        "  curl -i -X POST {base}/auth/login -H 'content-type: application/json' -d '{{\"user\":\"admin\",\"password\":\"wrong\"}}'"
    );
    println!("       # five failures lock the address out for a while (429, Retry-After)");
    println!(
        "  for i in $(seq 40); do curl -s -o /dev/null -w '%{{http_code}} ' {base}/health/x; done; echo"
    );
    println!("       # the per-address limit: RateLimit fields on every response, then 429");
    println!(
        "  curl -i -X POST {base}/api/scans -H \"authorization: Bearer $OPERATOR_TOKEN\" -d 'oops'    # problem+json 400"
    );
    println!(
        "  curl -i -H 'x-forwarded-for: 6.6.6.6' -X DELETE {base}/api/scans/1 -H \"authorization: Bearer $ADMIN_TOKEN\"  # spoofed header ignored"
    );
    println!();

    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
