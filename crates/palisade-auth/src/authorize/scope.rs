//! Scope matching with wildcards: pure functions, no request in sight.

use palisade_core::ConfigError;
use palisade_core::principal::Principal;

/// Whether the granted scope (or permission) `granted` covers `needed`.
///
/// - `*` grants everything.
/// - `prefix:*` grants every scope that starts with `prefix:` and has
///   something after the colon: `agent:*` grants `agent:read` and
///   `agent:runs:cancel`, but not `agent` itself, not `agent:`, and not
///   `agentx:read`.
/// - Anything else grants only itself, compared exactly (scopes are
///   case-sensitive, RFC 6749 §3.3). A `*` that does not follow a colon
///   (`agent*`) or sits mid-scope (`agent:*:read`) is an ordinary
///   character, not a wildcard.
/// - An empty scope grants nothing and is granted by nothing.
///
/// ```
/// use palisade_auth::authorize::scope_grants;
///
/// assert!(scope_grants("agent:*", "agent:read"));
/// assert!(scope_grants("agent:*", "agent:runs:cancel"));
/// assert!(scope_grants("*", "anything:at:all"));
/// assert!(scope_grants("scans:read", "scans:read"));
///
/// assert!(!scope_grants("agent:*", "agent"));
/// assert!(!scope_grants("agent:*", "agentx:read"));
/// assert!(!scope_grants("agent*", "agent:read"));
/// assert!(!scope_grants("agent:", "agent:read"));
/// assert!(!scope_grants("scans:read", "scans:write"));
/// ```
#[inline]
pub fn scope_grants(granted: &str, needed: &str) -> bool {
    if granted.is_empty() || needed.is_empty() {
        return false;
    }
    if granted == "*" || granted == needed {
        return true;
    }
    // `prefix:*`: the prefix keeps its colon, so `agent:*` is `agent:` and
    // the boundary is part of the comparison.
    match granted.strip_suffix('*') {
        Some(prefix) if prefix.ends_with(':') => {
            needed.len() > prefix.len() && needed.starts_with(prefix)
        }
        _ => false,
    }
}

/// Whether any scope of `principal` grants `needed` (see [`scope_grants`]).
///
/// Unlike [`Principal::has_scope`], which compares exactly, this applies the
/// wildcard rules.
///
/// ```
/// use palisade_auth::authorize::has_scope;
/// use palisade_core::principal::Principal;
///
/// let principal = Principal::builder("svc").scopes(["agent:*", "scans:read"]).build();
/// assert!(has_scope(&principal, "agent:execute"));
/// assert!(has_scope(&principal, "scans:read"));
/// assert!(!has_scope(&principal, "scans:write"));
/// ```
#[inline]
pub fn has_scope(principal: &Principal, needed: &str) -> bool {
    principal
        .scopes()
        .iter()
        .any(|granted| scope_grants(granted, needed))
}

/// Checks a scope or permission name given in configuration: one RFC 6749
/// scope token (printable ASCII without spaces, quotes or backslashes), so
/// it can be matched against tokens and written in a `WWW-Authenticate`
/// challenge unchanged.
pub(crate) fn validate_scope(field: &'static str, scope: &str) -> Result<(), ConfigError> {
    if scope.is_empty() {
        return Err(ConfigError::invalid(
            field,
            "an empty scope can never match",
        ));
    }
    let valid = scope
        .bytes()
        .all(|b| matches!(b, 0x21 | 0x23..=0x5b | 0x5d..=0x7e));
    if !valid {
        return Err(ConfigError::invalid(
            field,
            format!(
                "`{}` is not a scope token: printable ASCII only, without spaces, quotes or backslashes",
                scope.escape_default()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_need_the_colon_boundary() {
        assert!(scope_grants("a:*", "a:b"));
        assert!(scope_grants("a:*", "a:*"));
        assert!(scope_grants("a:b:*", "a:b:c"));
        assert!(!scope_grants("a:b:*", "a:c"));
        assert!(!scope_grants("a:*", "a:"));
        assert!(!scope_grants("a:*", "a"));
        assert!(!scope_grants("a*", "ab"));
        assert!(!scope_grants(":*", ""));
        assert!(scope_grants(":*", ":x"));
        assert!(!scope_grants("a:*:c", "a:b:c"));
        assert!(!scope_grants("", ""));
        assert!(!scope_grants("a:*", "*"));
        assert!(!scope_grants("Scans:read", "scans:read"));
    }

    #[test]
    fn configured_scopes_must_be_scope_tokens() {
        assert!(validate_scope("scopes", "scans:read").is_ok());
        assert!(validate_scope("scopes", "*").is_ok());
        assert!(validate_scope("scopes", "").is_err());
        assert!(validate_scope("scopes", "a b").is_err());
        assert!(validate_scope("scopes", "a\"b").is_err());
        assert!(validate_scope("scopes", "a\\b").is_err());
        assert!(validate_scope("scopes", "caf\u{e9}").is_err());
    }
}
