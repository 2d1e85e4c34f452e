//! Connector management: `/api/v1/connectors`.
//!
//! Selectors travel as plain strings in requests, so the server can name the offending
//! one in its answer; answers carry them normalized (trimmed, lower-case, deduplicated,
//! sorted).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use switchboard_domain::{Connector, ConnectorId, Ident, Selectors};

/// `POST /api/v1/connectors`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateConnector {
    /// Unique in the connector's scope.
    pub name: Ident,
    pub account: Ident,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<Ident>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<Ident>,
    /// The delegate selectors that tasks naming this connector inherit when they have
    /// none of their own.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::schema::SelectorInput>))]
    pub selectors: Vec<String>,
}

/// `PUT /api/v1/connectors/{id}`: replaces the name and the selectors. The scope is not
/// here because a connector never moves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateConnector {
    pub name: Ident,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::schema::SelectorInput>))]
    pub selectors: Vec<String>,
}

/// A connector as answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConnectorView {
    pub id: ConnectorId,
    pub name: Ident,
    pub account: Ident,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<Ident>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<Ident>,
    /// Normalized: trimmed, lower-case, deduplicated, sorted.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<switchboard_domain::Selector>))]
    pub selectors: Selectors,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&Connector> for ConnectorView {
    fn from(c: &Connector) -> Self {
        Self {
            id: c.id,
            name: c.name.clone(),
            account: c.scope.account_id().clone(),
            org: c.scope.org().cloned(),
            project: c.scope.project().cloned(),
            selectors: c.selectors.clone(),
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// A list answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConnectorList {
    pub items: Vec<ConnectorView>,
}
