//! From verified claims to a [`Principal`]: the registered claims the
//! verifier checks, and the configurable paths where subject, tenant, roles
//! and scopes live.
//!
//! The default mapping reads what common identity providers write:
//! scopes from `scope` (space-delimited), `scp` and `permissions`; roles from
//! `roles`, Keycloak's `realm_access.roles` and Cognito's `cognito:groups`;
//! the tenant from `tenant_id`.
//!
//! ```
//! use palisade_auth::claims::ClaimMapping;
//!
//! // Auth0-style namespaced claims; a name with dots is tried whole first.
//! let mapping = ClaimMapping::default()
//!     .role_claims(["https://example.com/roles"])
//!     .tenant_claim("org_id");
//! # let _ = mapping;
//! ```

use std::sync::Arc;
use std::time::Duration;

use palisade_core::principal::{AuthMethod, Principal};
use serde_json::{Map, Value};

use crate::failure::AuthFailure;

/// A claim's place in the payload: a top-level name, or a dotted path into
/// nested objects (`realm_access.roles`). A name that itself contains dots
/// (`https://example.com/roles`) is found whole before it is split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimPath {
    whole: Arc<str>,
    segments: Arc<[Box<str>]>,
}

impl ClaimPath {
    /// A path; `.` separates nested names.
    pub fn new(path: &str) -> Self {
        Self {
            whole: path.into(),
            segments: path.split('.').map(Into::into).collect(),
        }
    }

    /// The value at this path.
    pub fn find<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        if let Some(value) = claims.get(&*self.whole) {
            return Some(value);
        }
        if self.segments.len() < 2 {
            return None;
        }
        let (first, rest) = self.segments.split_first()?;
        let mut value = claims.get(&**first)?;
        for segment in rest {
            value = value.as_object()?.get(&**segment)?;
        }
        Some(value)
    }
}

impl From<&str> for ClaimPath {
    fn from(path: &str) -> Self {
        Self::new(path)
    }
}

/// Where a principal's subject, tenant, roles and scopes are read from.
#[derive(Clone, Debug)]
pub struct ClaimMapping {
    subject: ClaimPath,
    tenant: Vec<ClaimPath>,
    roles: Vec<ClaimPath>,
    scopes: Vec<ClaimPath>,
    keep_claims: bool,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        Self {
            subject: ClaimPath::new("sub"),
            tenant: vec![ClaimPath::new("tenant_id")],
            roles: ["roles", "realm_access.roles", "cognito:groups"]
                .into_iter()
                .map(ClaimPath::new)
                .collect(),
            scopes: ["scope", "scp", "permissions"]
                .into_iter()
                .map(ClaimPath::new)
                .collect(),
            keep_claims: true,
        }
    }
}

impl ClaimMapping {
    /// The claim that names the subject (default `sub`).
    pub fn subject_claim(mut self, path: &str) -> Self {
        self.subject = ClaimPath::new(path);
        self
    }

    /// The claim that names the tenant (default `tenant_id`), replacing the
    /// default.
    pub fn tenant_claim(mut self, path: &str) -> Self {
        self.tenant = vec![ClaimPath::new(path)];
        self
    }

    /// The claims roles are read from, replacing the defaults.
    pub fn role_claims<'a>(mut self, paths: impl IntoIterator<Item = &'a str>) -> Self {
        self.roles = paths.into_iter().map(ClaimPath::new).collect();
        self
    }

    /// The claims scopes are read from, replacing the defaults.
    pub fn scope_claims<'a>(mut self, paths: impl IntoIterator<Item = &'a str>) -> Self {
        self.scopes = paths.into_iter().map(ClaimPath::new).collect();
        self
    }

    /// Whether the principal keeps the raw claims (default yes; handlers
    /// read custom claims from them).
    pub fn keep_claims(mut self, keep: bool) -> Self {
        self.keep_claims = keep;
        self
    }

    /// The principal for verified `claims`.
    pub(crate) fn principal(
        &self,
        claims: Map<String, Value>,
        issuer: &str,
        kid: Option<&str>,
        expires_at: u64,
    ) -> Result<Principal, AuthFailure> {
        let subject = match self.subject.find(&claims) {
            Some(Value::String(subject)) if !subject.is_empty() => subject.clone(),
            _ => return Err(AuthFailure::MissingSubject),
        };
        let mut builder = Principal::builder(subject)
            .method(AuthMethod::Jwt {
                issuer: issuer.to_owned(),
                kid: kid.map(str::to_owned),
            })
            .expires_at(Duration::from_secs(expires_at));
        if let Some(tenant) = self
            .tenant
            .iter()
            .find_map(|path| match path.find(&claims) {
                Some(Value::String(tenant)) if !tenant.is_empty() => Some(tenant.clone()),
                _ => None,
            })
        {
            builder = builder.tenant(tenant);
        }
        for path in &self.roles {
            builder = builder.roles(strings(path.find(&claims)));
        }
        for path in &self.scopes {
            builder = builder.scopes(strings(path.find(&claims)));
        }
        if self.keep_claims {
            builder = builder.claims(Value::Object(claims));
        }
        Ok(builder.build())
    }
}

/// The strings of a claim: a space-delimited string or an array of strings;
/// anything else is ignored.
fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(text)) => text.split_ascii_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// The registered claims the verifier checks.
#[derive(Debug, Default)]
pub(crate) struct Registered {
    pub(crate) exp: Option<u64>,
    pub(crate) nbf: Option<u64>,
    pub(crate) iat: Option<u64>,
}

/// A NumericDate: non-negative seconds, fractions allowed and dropped.
fn numeric_date(value: Option<&Value>) -> Result<Option<u64>, AuthFailure> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(number)) => {
            if let Some(whole) = number.as_u64() {
                Ok(Some(whole))
            } else {
                match number.as_f64() {
                    Some(float) if float.is_finite() && (0.0..1e18).contains(&float) => {
                        Ok(Some(float as u64))
                    }
                    _ => Err(AuthFailure::Malformed),
                }
            }
        }
        Some(_) => Err(AuthFailure::Malformed),
    }
}

pub(crate) fn registered(claims: &Map<String, Value>) -> Result<Registered, AuthFailure> {
    Ok(Registered {
        exp: numeric_date(claims.get("exp"))?,
        nbf: numeric_date(claims.get("nbf"))?,
        iat: numeric_date(claims.get("iat"))?,
    })
}

/// The issuer claim, when it is a string.
pub(crate) fn issuer(claims: &Map<String, Value>) -> Result<Option<&str>, AuthFailure> {
    match claims.get("iss") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(iss)) => Ok(Some(iss)),
        Some(_) => Err(AuthFailure::Malformed),
    }
}

/// The token id, when it is a string.
pub(crate) fn jti(claims: &Map<String, Value>) -> Option<&str> {
    claims.get("jti").and_then(Value::as_str)
}

/// Whether the `aud` claim (a string or an array of strings) names one of
/// `accepted`.
pub(crate) fn audience_matches(claims: &Map<String, Value>, accepted: &[String]) -> bool {
    match claims.get("aud") {
        Some(Value::String(aud)) => accepted.iter().any(|a| a == aud),
        Some(Value::Array(auds)) => auds
            .iter()
            .filter_map(Value::as_str)
            .any(|aud| accepted.iter().any(|a| a == aud)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn built_in_paths_read_common_identity_providers() {
        let claims = object(json!({
            "sub": "u1",
            "tenant_id": "acme",
            "scope": "scans:read  scans:write",
            "scp": ["agent:run"],
            "permissions": ["billing:read"],
            "realm_access": {"roles": ["operator"]},
            "cognito:groups": ["viewers"],
            "roles": "admin"
        }));
        let principal = ClaimMapping::default()
            .principal(claims, "https://id", Some("k1"), 100)
            .unwrap();
        assert_eq!(principal.subject(), "u1");
        assert_eq!(principal.tenant(), Some("acme"));
        assert_eq!(principal.roles(), ["admin", "operator", "viewers"]);
        assert_eq!(
            principal.scopes(),
            ["scans:read", "scans:write", "agent:run", "billing:read"]
        );
        assert_eq!(principal.expires_at(), Some(Duration::from_secs(100)));
        assert!(principal.claims().is_some());
    }

    #[test]
    fn dotted_names_are_found_whole_before_nested() {
        let claims = object(json!({"sub": "u", "https://example.com/roles": ["a"]}));
        let principal = ClaimMapping::default()
            .role_claims(["https://example.com/roles"])
            .keep_claims(false)
            .principal(claims, "i", None, 1)
            .unwrap();
        assert_eq!(principal.roles(), ["a"]);
        assert!(principal.claims().is_none());
    }

    #[test]
    fn subject_is_required_and_dates_must_be_numbers() {
        let mapping = ClaimMapping::default();
        assert_eq!(
            mapping.principal(object(json!({"sub": 5})), "i", None, 1),
            Err(AuthFailure::MissingSubject)
        );
        assert_eq!(
            registered(&object(json!({"exp": "soon"}))).unwrap_err(),
            AuthFailure::Malformed
        );
        assert_eq!(
            registered(&object(json!({"exp": 12.9}))).unwrap().exp,
            Some(12)
        );
        assert!(registered(&object(json!({"exp": -1}))).is_err());
    }

    #[test]
    fn audience_is_a_string_or_an_array() {
        let accepted = vec!["api".to_owned()];
        assert!(audience_matches(&object(json!({"aud": "api"})), &accepted));
        assert!(audience_matches(
            &object(json!({"aud": ["x", "api"]})),
            &accepted
        ));
        assert!(!audience_matches(&object(json!({"aud": ["x"]})), &accepted));
        assert!(!audience_matches(&object(json!({})), &accepted));
    }
}
