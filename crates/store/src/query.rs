//! Filters and pages for list calls.

use switchboard_domain::{ConnectorId, Scope, TaskId, TaskState, TaskType};

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
