//! API keys: `/api/v1/api-keys`.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use switchboard_domain::{ApiKey, ApiKeyId, Ident, Permission, Secret};

/// `POST /api/v1/api-keys`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    pub name: Ident,
    pub account: Ident,
    #[serde(default)]
    pub org: Option<Ident>,
    #[serde(default)]
    pub project: Option<Ident>,
    /// `delegates:view` is always granted, listed or not. Each may be listed once.
    #[serde(default, deserialize_with = "crate::unique::set")]
    pub permissions: BTreeSet<Permission>,
}

/// A key as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiKeyView {
    pub id: ApiKeyId,
    pub name: Ident,
    pub account: Ident,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<Ident>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<Ident>,
    pub permissions: Vec<Permission>,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<&ApiKey> for ApiKeyView {
    fn from(k: &ApiKey) -> Self {
        Self {
            id: k.id,
            name: k.name.clone(),
            account: k.scope.account_id().clone(),
            org: k.scope.org().cloned(),
            project: k.scope.project().cloned(),
            permissions: k.permissions.iter().collect(),
            created_at: k.created_at,
            revoked_at: k.revoked_at,
        }
    }
}

/// The answer to a creation: the key, and its secret, shown this once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiKeyCreated {
    #[serde(flatten)]
    pub view: ApiKeyView,
    // A `Secret`: `Debug` masks it; on the wire it is the plain string.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub key: Secret,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiKeyList {
    pub items: Vec<ApiKeyView>,
}
