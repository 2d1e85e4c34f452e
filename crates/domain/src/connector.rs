//! Connectors: named connections to external infrastructure, with optional delegate
//! selectors that tasks naming the connector inherit when they have none of their own.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ident::{Ident, Scope};
use crate::ids::{ConnectorId, GroupId, InstanceId};
use crate::selector::Selectors;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connector {
    pub id: ConnectorId,
    #[serde(flatten)]
    pub scope: Scope,
    /// Unique in its scope.
    pub name: Ident,
    pub selectors: Selectors,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The instance (and its group) that last succeeded for a connector: the engine tries it
/// first next time, because it has been shown to reach that infrastructure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastSuccess {
    pub connector_id: ConnectorId,
    pub instance_id: InstanceId,
    pub group_id: GroupId,
    pub at: DateTime<Utc>,
}
