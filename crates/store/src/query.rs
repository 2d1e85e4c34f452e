//! Filters and pages for list calls.

use chrono::{DateTime, Utc};
use switchboard_domain::{Capability, ConnectorId, Scope, Selectors, TaskId, TaskState, TaskType};

/// The largest page a list returns, whatever the caller asks.
pub const MAX_PAGE: u32 = 500;

/// A filter over tasks, newest first. Every field narrows; an empty query lists all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskQuery {
    pub within: Option<Scope>,
    /// Any of these states (empty: any state).
    pub states: Vec<TaskState>,
    pub task_type: Option<TaskType>,
    pub connector: Option<ConnectorId>,
    /// Only tasks older than this one: the cursor of the previous page.
    pub before: Option<TaskId>,
    /// At most this many (capped at [`MAX_PAGE`]).
    pub limit: u32,
}

impl TaskQuery {
    pub fn effective_limit(&self) -> u32 {
        self.limit.clamp(1, MAX_PAGE)
    }
}

/// One page of results, with the cursor of the next page when there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<TaskId>,
}

/// A filter over the audit log, newest first. Every field narrows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditQuery {
    /// `None`: every entry. `Some(scope)`: only entries made by API keys whose scope lies
    /// at or below `scope` (never the admin key's).
    pub within: Option<switchboard_domain::Scope>,
    /// Only entries made with this key.
    pub key_id: Option<switchboard_domain::ApiKeyId>,
    /// Only entries at or after this time.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only entries with an id below this one: the cursor of the previous page.
    pub before_id: Option<i64>,
    /// At most this many (capped at [`MAX_PAGE`]).
    pub limit: u32,
}

/// A filter over the queue, for [`crate::Store::queue_shapes`]: queued tasks within a
/// scope, of a type, naming a connector.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueQuery {
    pub within: Option<Scope>,
    pub task_type: Option<TaskType>,
    pub connector: Option<ConnectorId>,
    /// At most this many shapes, the largest first.
    pub max_shapes: u32,
}

/// Queued tasks that placement cannot tell apart: the same scope, type, own selectors,
/// connector and capabilities, and attempted before or not. One engine decision speaks
/// for all of them (but for the instances each already tried).
#[derive(Debug, Clone, PartialEq)]
pub struct QueueShape {
    pub scope: Scope,
    pub task_type: TaskType,
    pub selectors: Selectors,
    pub connector_id: Option<ConnectorId>,
    pub capabilities: Vec<Capability>,
    /// Whether these tasks had an attempt before (they went back to the queue).
    pub retried: bool,
    pub count: u64,
    /// The oldest and the newest of them (ids are time-ordered).
    pub oldest: TaskId,
    pub newest: TaskId,
    pub oldest_created_at: DateTime<Utc>,
    /// Their concurrency key and its limit (the largest any of them names), and how many
    /// of the key's tasks are assigned or running now.
    pub concurrency: Option<KeyUse>,
    /// How many of them wait for a retry's backoff.
    pub backing_off: u64,
}

/// A concurrency key, its limit and how many of its tasks hold an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUse {
    pub key: String,
    pub limit: u32,
    pub running: u32,
}

/// The queue by shape: how many tasks wait in all, and the largest shapes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueShapes {
    /// Every queued task the query matches, in shapes listed or not.
    pub waiting: u64,
    /// Largest first, at most the query's `max_shapes`.
    pub shapes: Vec<QueueShape>,
}
