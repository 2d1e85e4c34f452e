//! The pipeline API's task bodies: `/api/v1/tasks`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use switchboard_domain::{
    Attempt, Capability, ConnectorId, Failure, Ident, InstanceId, Selector, Task, TaskId, TaskState, TaskType,
};

/// How long `GET /api/v1/tasks/{id}/wait` waits without a `timeout_ms`, in milliseconds.
pub const WAIT_DEFAULT_MS: u64 = 30_000;

/// The longest `timeout_ms` of `GET /api/v1/tasks/{id}/wait` (5 min); more is refused.
pub const WAIT_MAX_MS: u64 = 300_000;

/// `POST /api/v1/tasks` (and the same body for `POST /api/v1/tasks/explain`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SubmitTask {
    pub account: Ident,
    #[serde(default)]
    pub org: Option<Ident>,
    #[serde(default)]
    pub project: Option<Ident>,
    #[serde(rename = "type")]
    pub task_type: TaskType,
    /// Any JSON, at most 1 MiB; handed to the delegate when it acquires the task.
    #[serde(default)]
    pub payload: serde_json::Value,
    /// Delegate selectors (raw; normalized by the server), at most 32. When empty, the
    /// connector's selectors apply.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(max_items = 32, value_type = Vec<crate::schema::SelectorInput>)
    )]
    pub selectors: Vec<String>,
    #[serde(default)]
    pub connector: Option<ConnectorId>,
    /// At most 16.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_items = 16))]
    pub capabilities: Vec<Capability>,
    /// Higher runs first, -1000 to 1000 (default 0).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = -1000, maximum = 1000))]
    pub priority: i32,
    /// How long it may wait to be assigned (default 5 min, at most 7 days).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 604_800_000))]
    pub assign_timeout_ms: Option<u64>,
    /// How long it may run without a heartbeat listing it (default 30 min, at most 24 h).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 86_400_000))]
    pub execution_timeout_ms: Option<u64>,
    /// How many times it may start running (default 1, at most 10).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10))]
    pub max_attempts: Option<u32>,
    /// Wait in the queue even when no registered delegate could ever take it.
    #[serde(default)]
    pub wait_for_delegate: bool,
}

/// A task as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskView {
    pub id: TaskId,
    pub account: Ident,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<Ident>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<Ident>,
    #[serde(rename = "type")]
    pub task_type: TaskType,
    pub state: TaskState,
    pub attempt: Attempt,
    pub runs: u32,
    pub max_attempts: u32,
    pub priority: i32,
    pub selectors: Vec<Selector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector: Option<ConnectorId>,
    pub capabilities: Vec<Capability>,
    pub wait_for_delegate: bool,
    pub assign_timeout_ms: u64,
    pub execution_timeout_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<InstanceId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl From<&Task> for TaskView {
    fn from(t: &Task) -> Self {
        let s = &t.spec;
        Self {
            id: s.id,
            account: s.scope.account_id().clone(),
            org: s.scope.org().cloned(),
            project: s.scope.project().cloned(),
            task_type: s.task_type.clone(),
            state: t.state,
            attempt: t.attempt,
            runs: t.runs,
            max_attempts: s.max_attempts,
            priority: s.priority,
            selectors: s.selectors.iter().cloned().collect(),
            connector: s.connector_id,
            capabilities: s.capabilities.clone(),
            wait_for_delegate: s.wait_for_delegate,
            assign_timeout_ms: millis(s.assign_timeout),
            execution_timeout_ms: millis(s.execution_timeout),
            instance_id: t.instance_id,
            failure: t.failure.clone(),
            result: t.result.clone(),
            progress: t.progress.clone(),
            created_at: s.created_at,
            updated_at: t.updated_at,
            assigned_at: t.assigned_at,
            started_at: t.started_at,
            finished_at: t.finished_at,
        }
    }
}

/// The answer to a submission: the task, and the engine's one-line explanation when it
/// was not assigned at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Submitted {
    #[serde(flatten)]
    pub task: TaskView,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<String>,
}
