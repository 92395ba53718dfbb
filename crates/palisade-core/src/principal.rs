//! Who is calling: inserted by authentication layers, read by everyone else.
//!
//! A [`Principal`] is cheap to clone (one `Arc`), so an authentication layer
//! can cache it per verified credential and insert a clone per request.
//!
//! ```
//! use palisade_core::principal::{AuthMethod, Principal};
//!
//! let principal = Principal::builder("user-42")
//!     .tenant("acme")
//!     .roles(["operator"])
//!     .scopes_from_claim("scans:read scans:write")
//!     .method(AuthMethod::ApiKey { id: "key_1".into() })
//!     .build();
//! assert!(principal.has_scope("scans:write"));
//! assert!(principal.has_role("operator"));
//! assert_eq!(principal.tenant(), Some("acme"));
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// How a principal authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthMethod {
    /// No credential: let through by an optional authentication layer.
    Anonymous,
    /// A verified JWT.
    Jwt {
        /// The token's issuer.
        issuer: String,
        /// The id of the key that verified it.
        kid: Option<String>,
    },
    /// An API key, by its public id (never the key itself).
    ApiKey {
        /// The key's id.
        id: String,
    },
    /// A client certificate.
    Mtls {
        /// The SPIFFE id, when the certificate has one.
        spiffe_id: Option<String>,
        /// The certificate subject.
        subject: String,
    },
    /// Authentication switched off for development; a fixed principal.
    Development,
}

impl AuthMethod {
    /// A name for logs and audit events.
    pub fn as_str(&self) -> &'static str {
        match self {
            AuthMethod::Anonymous => "anonymous",
            AuthMethod::Jwt { .. } => "jwt",
            AuthMethod::ApiKey { .. } => "api_key",
            AuthMethod::Mtls { .. } => "mtls",
            AuthMethod::Development => "development",
        }
    }
}

/// An authenticated (or anonymous) caller.
#[derive(Clone, PartialEq)]
pub struct Principal {
    inner: Arc<Inner>,
}

#[derive(PartialEq)]
struct Inner {
    subject: String,
    tenant: Option<String>,
    roles: Vec<String>,
    scopes: Vec<String>,
    method: AuthMethod,
    expires_at: Option<Duration>,
    claims: Option<serde_json::Value>,
}

impl Principal {
    /// A builder for a principal with this subject.
    pub fn builder(subject: impl Into<String>) -> PrincipalBuilder {
        PrincipalBuilder {
            inner: Inner {
                subject: subject.into(),
                tenant: None,
                roles: Vec::new(),
                scopes: Vec::new(),
                method: AuthMethod::Anonymous,
                expires_at: None,
                claims: None,
            },
        }
    }

    /// The anonymous principal, subject `anonymous`, no roles or scopes.
    pub fn anonymous() -> Self {
        Self::builder("anonymous").build()
    }

    /// The subject (`sub` claim, API key owner, certificate identity).
    #[inline]
    pub fn subject(&self) -> &str {
        &self.inner.subject
    }

    /// The tenant, when known.
    #[inline]
    pub fn tenant(&self) -> Option<&str> {
        self.inner.tenant.as_deref()
    }

    /// The roles.
    #[inline]
    pub fn roles(&self) -> &[String] {
        &self.inner.roles
    }

    /// The scopes.
    #[inline]
    pub fn scopes(&self) -> &[String] {
        &self.inner.scopes
    }

    /// How the principal authenticated.
    #[inline]
    pub fn method(&self) -> &AuthMethod {
        &self.inner.method
    }

    /// Whether this is the anonymous principal.
    #[inline]
    pub fn is_anonymous(&self) -> bool {
        self.inner.method == AuthMethod::Anonymous
    }

    /// The API key id, when authenticated by API key.
    pub fn api_key_id(&self) -> Option<&str> {
        match &self.inner.method {
            AuthMethod::ApiKey { id } => Some(id),
            _ => None,
        }
    }

    /// When the credential expires, as time since the Unix epoch.
    #[inline]
    pub fn expires_at(&self) -> Option<Duration> {
        self.inner.expires_at
    }

    /// The raw claims of the credential, when it had any.
    #[inline]
    pub fn claims(&self) -> Option<&serde_json::Value> {
        self.inner.claims.as_ref()
    }

    /// Whether the principal has exactly this role.
    pub fn has_role(&self, role: &str) -> bool {
        self.inner.roles.iter().any(|r| r == role)
    }

    /// Whether the principal has exactly this scope.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.inner.scopes.iter().any(|s| s == scope)
    }
}

impl fmt::Debug for Principal {
    /// Identity only: claims can hold personal data and are left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("subject", &self.inner.subject)
            .field("tenant", &self.inner.tenant)
            .field("roles", &self.inner.roles)
            .field("scopes", &self.inner.scopes)
            .field("method", &self.inner.method)
            .field("expires_at", &self.inner.expires_at)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Principal`].
pub struct PrincipalBuilder {
    inner: Inner,
}

impl fmt::Debug for PrincipalBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrincipalBuilder")
            .field("subject", &self.inner.subject)
            .finish_non_exhaustive()
    }
}

impl PrincipalBuilder {
    /// Sets the tenant.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.inner.tenant = Some(tenant.into());
        self
    }

    /// Adds roles; duplicates are dropped.
    pub fn roles<I, T>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        extend_unique(&mut self.inner.roles, roles.into_iter().map(Into::into));
        self
    }

    /// Adds scopes; duplicates are dropped.
    pub fn scopes<I, T>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        extend_unique(&mut self.inner.scopes, scopes.into_iter().map(Into::into));
        self
    }

    /// Adds the scopes of a space-delimited claim (OAuth 2 `scope`).
    pub fn scopes_from_claim(mut self, claim: &str) -> Self {
        extend_unique(
            &mut self.inner.scopes,
            claim.split_ascii_whitespace().map(str::to_owned),
        );
        self
    }

    /// Sets how the principal authenticated.
    pub fn method(mut self, method: AuthMethod) -> Self {
        self.inner.method = method;
        self
    }

    /// Sets when the credential expires (time since the Unix epoch).
    pub fn expires_at(mut self, at: Duration) -> Self {
        self.inner.expires_at = Some(at);
        self
    }

    /// Keeps the raw claims.
    pub fn claims(mut self, claims: serde_json::Value) -> Self {
        self.inner.claims = Some(claims);
        self
    }

    /// Builds the principal.
    pub fn build(self) -> Principal {
        Principal {
            inner: Arc::new(self.inner),
        }
    }
}

fn extend_unique(into: &mut Vec<String>, items: impl Iterator<Item = String>) {
    for item in items {
        if !item.is_empty() && !into.contains(&item) {
            into.push(item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_normalised_from_space_delimited_and_array_claims() {
        let principal = Principal::builder("u")
            .scopes_from_claim("  a  b\tc a ")
            .scopes(["c", "d"])
            .build();
        assert_eq!(principal.scopes(), ["a", "b", "c", "d"]);
    }

    #[test]
    fn debug_leaves_claims_out() {
        let principal = Principal::builder("u")
            .claims(serde_json::json!({"email": "someone@example.com"}))
            .build();
        let debug = format!("{principal:?}");
        assert!(debug.contains("\"u\""));
        assert!(!debug.contains("someone@example.com"));
    }

    #[test]
    fn anonymous_is_anonymous_and_api_key_id_is_exposed() {
        assert!(Principal::anonymous().is_anonymous());
        let keyed = Principal::builder("svc")
            .method(AuthMethod::ApiKey { id: "k1".into() })
            .build();
        assert_eq!(keyed.api_key_id(), Some("k1"));
        assert!(!keyed.is_anonymous());
    }
}
