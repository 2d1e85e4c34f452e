//! The audit log: every change made through the API, who made it and from where.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ident::Scope;
use crate::ids::ApiKeyId;

/// One change made through the API (a successful POST, PUT or DELETE under `/api/v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// Assigned by the store, increasing; `0` before it is stored.
    pub id: i64,
    pub at: DateTime<Utc>,
    /// Who, for people: "admin key" or "API key NAME".
    pub actor: String,
    /// The API key used; `None` for the admin key.
    pub key_id: Option<ApiKeyId>,
    /// The scope of that key: a key sees the entries of keys at or below its own scope.
    /// `None` for the admin key (only the admin key sees those).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::ident::ScopeParts>))]
    pub key_scope: Option<Scope>,
    pub method: String,
    /// The route template, e.g. `/api/v1/tasks/{id}/cancel`.
    pub route: String,
    /// The path as requested.
    pub path: String,
    pub status: u16,
    /// The client's address.
    pub remote: Option<String>,
}
