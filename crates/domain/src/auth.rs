//! API keys and permissions.
//!
//! A key carries a scope and a set of permissions; a permission granted at a scope holds
//! for every resource below it. `delegates:view` is always granted and cannot be removed.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ident::{Ident, Scope};
use crate::ids::ApiKeyId;

/// What an API key may do, within its scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Permission {
    #[serde(rename = "delegates:view")]
    DelegatesView,
    #[serde(rename = "delegates:edit")]
    DelegatesEdit,
    #[serde(rename = "delegates:delete")]
    DelegatesDelete,
    #[serde(rename = "pipelines:execute")]
    PipelinesExecute,
    #[serde(rename = "connectors:access")]
    ConnectorsAccess,
    #[serde(rename = "secrets:access")]
    SecretsAccess,
}

impl Permission {
    pub const ALL: [Permission; 6] = [
        Permission::DelegatesView,
        Permission::DelegatesEdit,
        Permission::DelegatesDelete,
        Permission::PipelinesExecute,
        Permission::ConnectorsAccess,
        Permission::SecretsAccess,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::DelegatesView => "delegates:view",
            Permission::DelegatesEdit => "delegates:edit",
            Permission::DelegatesDelete => "delegates:delete",
            Permission::PipelinesExecute => "pipelines:execute",
            Permission::ConnectorsAccess => "connectors:access",
            Permission::SecretsAccess => "secrets:access",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key's permissions; always includes `delegates:view`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "BTreeSet<Permission>", into = "BTreeSet<Permission>")]
pub struct Permissions(BTreeSet<Permission>);

impl Permissions {
    pub fn all() -> Self {
        Self(Permission::ALL.into_iter().collect())
    }

    pub fn contains(&self, p: Permission) -> bool {
        self.0.contains(&p)
    }

    pub fn iter(&self) -> impl Iterator<Item = Permission> + '_ {
        self.0.iter().copied()
    }
}

impl From<BTreeSet<Permission>> for Permissions {
    fn from(mut set: BTreeSet<Permission>) -> Self {
        set.insert(Permission::DelegatesView);
        Self(set)
    }
}

impl FromIterator<Permission> for Permissions {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        iter.into_iter().collect::<BTreeSet<_>>().into()
    }
}

impl From<Permissions> for BTreeSet<Permission> {
    fn from(p: Permissions) -> Self {
        p.0
    }
}

/// An API key, as stored (its secret only as a hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub name: Ident,
    #[serde(flatten)]
    pub scope: Scope,
    pub permissions: Permissions,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Why a key may not do something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// The resource is outside the key's scope: answer as if it did not exist.
    OutOfScope,
    /// In scope, but the key lacks this permission.
    Missing(Permission),
    Revoked,
}

impl ApiKey {
    /// Whether this key may do what `permission` covers to a resource in `scope`.
    pub fn check(&self, permission: Permission, scope: &Scope) -> Result<(), Denied> {
        if self.revoked_at.is_some() {
            return Err(Denied::Revoked);
        }
        if !self.scope.contains(scope) {
            return Err(Denied::OutOfScope);
        }
        if !self.permissions.contains(permission) {
            return Err(Denied::Missing(permission));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(scope: &str, perms: &[Permission]) -> ApiKey {
        ApiKey {
            id: ApiKeyId::new(),
            name: Ident::parse("ci").expect("valid"),
            scope: Scope::parse_path(scope).expect("valid"),
            permissions: perms.iter().copied().collect(),
            created_at: Utc::now(),
            revoked_at: None,
        }
    }

    #[test]
    fn view_is_always_granted() {
        let k = key("a", &[]);
        assert!(k.permissions.contains(Permission::DelegatesView));
        let parsed: Permissions = serde_json::from_str(r#"["pipelines:execute"]"#).expect("valid");
        assert!(parsed.contains(Permission::DelegatesView));
    }

    #[test]
    fn permissions_hold_below_their_scope_and_nowhere_else() {
        let k = key("a/o", &[Permission::PipelinesExecute]);
        let s = |p: &str| Scope::parse_path(p).expect("valid");
        assert_eq!(k.check(Permission::PipelinesExecute, &s("a/o/p")), Ok(()));
        assert_eq!(k.check(Permission::PipelinesExecute, &s("a")), Err(Denied::OutOfScope));
        assert_eq!(
            k.check(Permission::PipelinesExecute, &s("b/o")),
            Err(Denied::OutOfScope)
        );
        assert_eq!(
            k.check(Permission::DelegatesDelete, &s("a/o")),
            Err(Denied::Missing(Permission::DelegatesDelete))
        );
    }

    #[test]
    fn unknown_permissions_are_refused() {
        assert!(serde_json::from_str::<Permissions>(r#"["root"]"#).is_err());
    }
}
