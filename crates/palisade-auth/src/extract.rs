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

use axum::extract::FromRequestParts;
use http::request::Parts;
use palisade_core::Rejection;
use palisade_core::principal::Principal;
use serde::de::DeserializeOwned;

/// The verified token's claims, deserialized into `T`.
///
/// Refused with 401 when the route has no authenticated principal with
/// claims, or when the claims do not fit `T` (the token lacks what the
/// handler needs).
#[derive(Clone, Debug)]
pub struct Claims<T>(pub T);

impl<S, T> FromRequestParts<S> for Claims<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let claims = parts
            .extensions
            .get::<Principal>()
            .and_then(Principal::claims)
            .ok_or_else(|| crate::AuthFailure::Missing.rejection(None))?;
        T::deserialize(claims)
            .map(Claims)
            .map_err(|_| crate::AuthFailure::Malformed.rejection(None))
    }
}
