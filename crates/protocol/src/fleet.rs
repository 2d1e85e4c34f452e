//! The operator's view of delegates: `/api/v1/delegates`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use switchboard_domain::{GroupId, Ident, ImageFlavour, InstanceId, Liveness, Selector, TaskType, TokenId};

/// A delegate group with its instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DelegateView {
    pub id: GroupId,
    pub name: Ident,
    pub account: Ident,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<Ident>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<Ident>,
    pub tags: Vec<Selector>,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    pub instances: Vec<InstanceView>,
}

/// One running process of a delegate, as an operator sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstanceView {
    pub id: InstanceId,
    pub hostname: String,
    pub version: String,
    pub flavour: ImageFlavour,
    pub state: Liveness,
    pub last_heartbeat_at: DateTime<Utc>,
    /// Milliseconds since the last heartbeat, as of the answer.
    pub heartbeat_age_ms: i64,
    /// Tasks assigned to or running on it.
    pub load: u32,
    pub capacity: u32,
    /// The instance's own tags.
    pub tags: Vec<Selector>,
    /// Everything a task can select it by: group tags, own tags, group name, hostname, id.
    pub selectors: Vec<Selector>,
    pub task_types: Vec<TaskType>,
    pub token_id: TokenId,
    /// The token's name, when the token still exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_name: Option<Ident>,
    pub registered_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DelegateList {
    pub items: Vec<DelegateView>,
}

/// `PUT /api/v1/delegates/{id}/tags`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetTags {
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::schema::SelectorInput>))]
    pub tags: Vec<String>,
}
