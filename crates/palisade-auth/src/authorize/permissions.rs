//! Roles mapped to permissions: who may do what, in configuration.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use palisade_core::ConfigError;
use palisade_core::principal::Principal;

use super::scope::{has_scope, scope_grants, validate_scope};

/// A map from role to the permissions it grants; cheap to clone (one
/// `Arc`).
///
/// Permissions are scope-like names and follow the rules of
/// [`scope_grants`]: `*` grants every permission, `scans:*` grants
/// `scans:read`. Name them by action (`read`, `create`, `execute`,
/// `delete`, as the [preset](Self::admin_operator_viewer) does) or by
/// resource and action (`scans:read`); a route asks for one permission with
/// [`RequirePermission`](super::RequirePermission).
///
/// A principal is allowed a permission when one of its roles grants it, or
/// when one of its scopes grants it directly (a token scoped `delete`, or
/// `*`, needs no role).
///
/// ```
/// use palisade_auth::authorize::RolePermissions;
/// use palisade_core::principal::Principal;
///
/// let roles = RolePermissions::builder()
///     .role("auditor", ["read", "reports:*"])
///     .role("admin", ["*"])
///     .build()?;
/// let auditor = Principal::builder("u1").roles(["auditor"]).build();
/// assert!(roles.allows(&auditor, "reports:export"));
/// assert!(!roles.allows(&auditor, "delete"));
/// # Ok::<(), palisade_core::ConfigError>(())
/// ```
///
/// With feature `serde` it reads from configuration, as a map of role to
/// permissions; each permission is checked as in [`RolePermissionsBuilder::build`]:
///
/// ```toml
/// [roles]
/// admin = ["*"]
/// operator = ["read", "create", "execute"]
/// viewer = ["read"]
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "HashMap<String, Vec<String>>"))]
pub struct RolePermissions {
    roles: Arc<RoleMap>,
}

/// Role name → the permissions it grants.
type RoleMap = HashMap<Box<str>, Box<[Box<str>]>>;

impl fmt::Debug for RolePermissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Sorted, so the output is stable.
        let mut roles: Vec<_> = self.roles.iter().collect();
        roles.sort_unstable_by(|a, b| a.0.cmp(b.0));
        f.debug_map().entries(roles).finish()
    }
}

impl RolePermissions {
    /// The permission to read.
    pub const READ: &'static str = "read";
    /// The permission to create.
    pub const CREATE: &'static str = "create";
    /// The permission to run or trigger (start a scan, run a job).
    pub const EXECUTE: &'static str = "execute";
    /// The permission to delete.
    pub const DELETE: &'static str = "delete";

    /// A builder.
    pub fn builder() -> RolePermissionsBuilder {
        RolePermissionsBuilder::default()
    }

    /// The preset: `admin` has every permission (`*`), `operator` has
    /// [`READ`](Self::READ), [`CREATE`](Self::CREATE) and
    /// [`EXECUTE`](Self::EXECUTE) (not [`DELETE`](Self::DELETE)), `viewer`
    /// has [`READ`](Self::READ) only.
    ///
    /// ```
    /// use palisade_auth::authorize::RolePermissions;
    ///
    /// let roles = RolePermissions::admin_operator_viewer();
    /// assert!(roles.role_grants("admin", "delete"));
    /// assert!(roles.role_grants("operator", "execute"));
    /// assert!(!roles.role_grants("operator", "delete"));
    /// assert!(roles.role_grants("viewer", "read"));
    /// assert!(!roles.role_grants("viewer", "create"));
    /// ```
    pub fn admin_operator_viewer() -> Self {
        let preset: [(&str, &[&str]); 3] = [
            ("admin", &["*"]),
            ("operator", &[Self::READ, Self::CREATE, Self::EXECUTE]),
            ("viewer", &[Self::READ]),
        ];
        let roles = preset
            .into_iter()
            .map(|(role, permissions)| {
                let permissions: Box<[Box<str>]> =
                    permissions.iter().map(|p| Box::from(*p)).collect();
                (Box::from(role), permissions)
            })
            .collect();
        Self {
            roles: Arc::new(roles),
        }
    }

    /// The permissions of `role`, as configured.
    pub fn permissions(&self, role: &str) -> Option<&[Box<str>]> {
        self.roles.get(role).map(|permissions| &**permissions)
    }

    /// The configured roles, in no particular order.
    pub fn roles(&self) -> impl Iterator<Item = &str> {
        self.roles.keys().map(|role| &**role)
    }

    /// Whether `role` grants `permission` (wildcards included).
    pub fn role_grants(&self, role: &str, permission: &str) -> bool {
        self.permissions(role).is_some_and(|granted| {
            granted
                .iter()
                .any(|granted| scope_grants(granted, permission))
        })
    }

    /// Whether `principal` may `permission`: one of its roles grants it, or
    /// one of its scopes does directly. Says nothing of whether the
    /// principal is authenticated (the layers and `require_*` checks refuse
    /// the anonymous principal first).
    pub fn allows(&self, principal: &Principal, permission: &str) -> bool {
        principal
            .roles()
            .iter()
            .any(|role| self.role_grants(role, permission))
            || has_scope(principal, permission)
    }
}

impl TryFrom<HashMap<String, Vec<String>>> for RolePermissions {
    type Error = ConfigError;

    /// Checks every permission as [`RolePermissionsBuilder::build`] does.
    fn try_from(map: HashMap<String, Vec<String>>) -> Result<Self, Self::Error> {
        map.into_iter()
            .fold(Self::builder(), |builder, (role, permissions)| {
                builder.role(role, permissions)
            })
            .build()
    }
}

/// Builds a [`RolePermissions`].
#[derive(Debug, Default)]
#[must_use = "a builder does nothing until built"]
pub struct RolePermissionsBuilder {
    roles: HashMap<Box<str>, Vec<Box<str>>>,
}

impl RolePermissionsBuilder {
    /// Grants `permissions` to `role`; given twice, a role has both sets.
    pub fn role<I, T>(mut self, role: impl Into<String>, permissions: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let granted = self.roles.entry(role.into().into_boxed_str()).or_default();
        for permission in permissions {
            let permission = permission.into().into_boxed_str();
            if !granted.contains(&permission) {
                granted.push(permission);
            }
        }
        self
    }

    /// Builds the map. Refused: an empty role name, and a permission that is
    /// not a scope token (empty, spaces, quotes, backslashes, non-ASCII). A
    /// role with no permission is allowed: it grants nothing.
    pub fn build(self) -> Result<RolePermissions, ConfigError> {
        let mut roles = HashMap::with_capacity(self.roles.len());
        for (role, permissions) in self.roles {
            if role.is_empty() {
                return Err(ConfigError::invalid("roles", "an empty role name"));
            }
            for permission in &permissions {
                validate_scope("permissions", permission)?;
            }
            roles.insert(role, permissions.into_boxed_slice());
        }
        Ok(RolePermissions {
            roles: Arc::new(roles),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preset_matches_the_documented_table() {
        let roles = RolePermissions::admin_operator_viewer();
        let table = [
            ("admin", ["read", "create", "execute", "delete"], [true; 4]),
            (
                "operator",
                ["read", "create", "execute", "delete"],
                [true, true, true, false],
            ),
            (
                "viewer",
                ["read", "create", "execute", "delete"],
                [true, false, false, false],
            ),
        ];
        for (role, permissions, expected) in table {
            for (permission, expected) in permissions.into_iter().zip(expected) {
                assert_eq!(
                    roles.role_grants(role, permission),
                    expected,
                    "{role} {permission}"
                );
            }
        }
        assert!(!roles.role_grants("guest", "read"));
    }

    #[test]
    fn bad_permissions_and_roles_are_refused_at_build() {
        assert!(
            RolePermissions::builder()
                .role("a", ["x y"])
                .build()
                .is_err()
        );
        assert!(RolePermissions::builder().role("a", [""]).build().is_err());
        assert!(
            RolePermissions::builder()
                .role("", ["read"])
                .build()
                .is_err()
        );
        let empty = RolePermissions::builder()
            .role("nobody", Vec::<String>::new())
            .build()
            .unwrap_or_default();
        assert_eq!(empty.permissions("nobody"), Some(&[][..]));
    }

    #[test]
    fn scopes_grant_permissions_directly() {
        let roles = RolePermissions::admin_operator_viewer();
        let scoped = Principal::builder("svc").scopes(["delete"]).build();
        assert!(roles.allows(&scoped, "delete"));
        assert!(!roles.allows(&scoped, "read"));
    }
}
