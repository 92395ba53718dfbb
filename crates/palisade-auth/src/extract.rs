//! Typed claims in axum handlers.
//!
//! ```
//! use palisade_auth::extract::Claims;
//!
//! #[derive(serde::Deserialize)]
//! struct Custom {
//!     sub: String,
//!     plan: String,
//! }
//!
//! async fn handler(Claims(claims): Claims<Custom>) -> String {
//!     format!("{} is on {}", claims.sub, claims.plan)
//! }
//! let app: axum::Router = axum::Router::new().route("/me", axum::routing::get(handler));
//! # let _ = app;
//! ```

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use http::request::Parts;
use palisade_core::Rejection;
use palisade_core::principal::Principal;
use serde::de::DeserializeOwned;

/// The verified token's claims, deserialized into `T`.
///
/// Refused with 401 when the route has no authenticated principal, and
/// with 403 when its claims do not fit `T` (the token lacks what the
/// handler needs) or were not kept (`ClaimMapping::keep_claims(false)`).
/// `Option<Claims<T>>` is `None` without a principal.
#[derive(Clone, Debug)]
pub struct Claims<T>(pub T);

impl<S, T> FromRequestParts<S> for Claims<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match principal_claims(parts) {
            None => Err(crate::AuthFailure::Missing.rejection(None)),
            Some(claims) => fit(claims),
        }
    }
}

impl<S, T> OptionalFromRequestParts<S> for Claims<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = Rejection;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        match principal_claims(parts) {
            None => Ok(None),
            Some(claims) => fit(claims).map(Some),
        }
    }
}

/// The claims of an authenticated principal: `None` without one (or with
/// the anonymous one), `Some(None)` when its claims were not kept.
fn principal_claims(parts: &Parts) -> Option<Option<&serde_json::Value>> {
    let principal = parts
        .extensions
        .get::<Principal>()
        .filter(|p| !p.is_anonymous())?;
    Some(principal.claims())
}

fn fit<T: DeserializeOwned>(claims: Option<&serde_json::Value>) -> Result<Claims<T>, Rejection> {
    let refused =
        || Rejection::forbidden().with_detail("The credential lacks what this route needs.");
    let claims = claims.ok_or_else(refused)?;
    T::deserialize(claims).map(Claims).map_err(|_| refused())
}
