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
//! - `REDIS_URL`: keep rate limits in Redis, shared by every gateway
//!   instance using it (default: in memory); `GATEWAY_INSTANCES` (default 1)
//!   is how many instances share it: while Redis is unreachable each one
//!   limits locally at quota / instances.
//!
//! Routes:
//! - `GET /health`: always open, never rate limited;
//! - `GET /api/scans`, `POST /api/scans`, `GET /api/scans/{id}`;
//! - `DELETE /api/scans/{id}`: admin networks only;
//! - `POST /auth/login`: a demo password check (`{"password": "..."}`), 200
//!   or 401; five failures per client address in 15 minutes lock it out.
//!
//! Limits: a per-client-address policy on every route but `/health` and
//! CORS preflights (`RateLimit` fields on every response), and a
//! failed-login policy that counts only 401 answers of `/auth/login`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::routing::get;
use axum::{Extension, Json, Router};
use ipnet::IpNet;
use palisade::core::Rejection;
use palisade::core::client_ip::{ClientIp, ClientIpLayer, ClientIpResolver};
use palisade::core::guard::{GuardLayer, RequestHead};
use palisade::core::key::KeyFn;
use palisade::ratelimit::{FailurePolicy, Quota, RateLimitLayer, RateLimitPolicy, RedisStore};
use palisade::redis::{RedisConfig, RedisConnection};
use serde::{Deserialize, Serialize};
use tower::ServiceBuilder;
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
    password: String,
}

/// A stand-in for a real login: checks one demo password. It shows the
/// failed-login policy at work; it issues no token.
async fn login(
    State(password): State<Arc<str>>,
    body: Result<Json<Login>, JsonRejection>,
) -> Result<Json<serde_json::Value>, Rejection> {
    let Json(login) = body.map_err(json_rejection)?;
    if constant_time_eq(login.password.as_bytes(), password.as_bytes()) {
        Ok(Json(serde_json::json!({ "status": "ok" })))
    } else {
        Err(Rejection::unauthenticated().with_detail("Wrong password."))
    }
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

pub(crate) fn app(config: &Config) -> Result<Router, Box<dyn std::error::Error>> {
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

    // DELETE alone carries the admin guard; reads stay open.
    let api = Router::new()
        .route("/api/scans", get(list_scans).post(create_scan))
        .route(
            "/api/scans/{id}",
            get(get_scan).merge(
                axum::routing::delete(delete_scan)
                    .route_layer(admin_networks(config.admin_networks.clone())),
            ),
        )
        .with_state(Scans::default());

    let limits = |builder: palisade::ratelimit::RateLimitLayerBuilder| -> Result<RateLimitLayer, Box<dyn std::error::Error>> {
        Ok(match &config.redis_url {
            Some(url) => {
                let connection = RedisConnection::connect_lazy(&RedisConfig::standalone(url.clone()))?;
                let store = RedisStore::builder(connection)
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
    let auth = Router::new()
        .route("/auth/login", axum::routing::post(login))
        .route_layer(failed_logins)
        .with_state(Arc::<str>::from(config.demo_password.as_str()));

    Ok(Router::new()
        .route("/health", get(health))
        .merge(api)
        .merge(auth)
        .fallback(not_found)
        .layer(per_ip)
        .layer(
            ServiceBuilder::new()
                // Spans carry method and path only: queries can hold tokens.
                .layer(TraceLayer::new_for_http().make_span_with(
                    |request: &axum::http::Request<_>| {
                        tracing::info_span!(
                            "request",
                            method = %request.method(),
                            path = %request.uri().path(),
                        )
                    },
                ))
                .layer(cors)
                .layer(ClientIpLayer::new(resolver))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Duration::from_secs(10),
                ))
                // A declared length over the limit is refused before any of
                // the body is read, as problem+json; tower-http's layer then
                // enforces the limit on bodies without a length.
                .layer(declared_length_limit(BODY_LIMIT))
                .layer(RequestBodyLimitLayer::new(BODY_LIMIT)),
        ))
}

pub(crate) struct Config {
    pub(crate) port: u16,
    pub(crate) rate_per_minute: u32,
    pub(crate) demo_password: String,
    pub(crate) redis_url: Option<String>,
    pub(crate) instances: std::num::NonZeroU32,
    pub(crate) trusted_proxies: Vec<String>,
    pub(crate) admin_networks: Arc<[IpNet]>,
    pub(crate) cors_origins: Vec<String>,
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
    let app = app(&config)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], config.port));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let base = format!("http://{}", listener.local_addr()?);
    println!("Palisade demo gateway listening on {base}");
    match &config.redis_url {
        Some(_) => println!("Rate limits in Redis (REDIS_URL), shared by every instance."),
        None => println!("Rate limits in memory (set REDIS_URL to share them across instances)."),
    }
    println!();
    println!("Try:");
    println!("  curl -i {base}/health");
    println!("  curl -i {base}/api/scans");
    println!(
        "  curl -i -X POST {base}/api/scans -H 'content-type: application/json' -d '{{\"target\":\"example.com\"}}'"
    );
    println!("  curl -i {base}/api/scans/1");
    println!(
        "  curl -i -X DELETE {base}/api/scans/1          # admin networks only (loopback by default)"
    );
    println!("  curl -i {base}/nope                           # problem+json 404");
    println!(
        "  curl -i -X POST {base}/auth/login -H 'content-type: application/json' -d '{{\"password\":\"wrong\"}}'"
    );
    println!("       # five failures lock the address out for a while (429, Retry-After)");
    println!(
        "  for i in $(seq 40); do curl -s -o /dev/null -w '%{{http_code}} ' {base}/api/scans; done; echo"
    );
    println!("       # the per-address limit: RateLimit fields on every response, then 429");
    println!("  curl -i -X POST {base}/api/scans -d 'oops'    # problem+json 400");
    println!("  curl -i -H 'x-forwarded-for: 6.6.6.6' -X POST {base}/api/scans \\");
    println!(
        "       -H 'content-type: application/json' -d '{{\"target\":\"a.example\"}}'  # spoofed header ignored"
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
