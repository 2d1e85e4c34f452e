//! The pipeline API's task bodies: `/api/v1/tasks`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use switchboard_domain::selector::parse_selectors;
use switchboard_domain::task::{FieldError, PAYLOAD_MAX_BYTES, limits};
use switchboard_domain::{
    Attempt, Capability, ConnectorId, Failure, Ident, InstanceId, NewTask, Scope, Selector, Task, TaskId, TaskState,
    TaskType,
};

/// A submission's body made into a task, by the domain's limits
/// ([`switchboard_domain::task::limits`]): the scope, the payload's size, the selectors
/// (normalized), the counts, the priority, the timeouts and the attempts. The first field
/// at fault is the error. The task gets a new id and is stamped now; what needs the store
/// (does its connector exist, and contain its scope) and the request (idempotency) is
/// the caller's to add.
impl TryFrom<SubmitTask> for NewTask {
    type Error = FieldError;

    fn try_from(r: SubmitTask) -> Result<Self, FieldError> {
        let scope = Scope::new(r.account, r.org, r.project).map_err(|e| FieldError::new("project", e.to_string()))?;
        let size = serde_json::to_vec(&r.payload).map_or(usize::MAX, |v| v.len());
        if size > PAYLOAD_MAX_BYTES {
            return Err(FieldError {
                too_large: true,
                ..FieldError::new(
                    "payload",
                    format!("the payload is {size} bytes of JSON; at most {PAYLOAD_MAX_BYTES} are accepted"),
                )
            });
        }
        if r.selectors.len() > limits::MAX_SELECTORS {
            return Err(FieldError::new(
                "selectors",
                format!("at most {} selectors", limits::MAX_SELECTORS),
            ));
        }
        let selectors = parse_selectors(r.selectors.iter().map(String::as_str))
            .map_err(|(s, e)| FieldError::new("selectors", format!("selector {s:?}: {e}")))?;
        if r.capabilities.len() > limits::MAX_CAPABILITIES {
            return Err(FieldError::new(
                "capabilities",
                format!("at most {} capabilities", limits::MAX_CAPABILITIES),
            ));
        }
        if !limits::PRIORITY_RANGE.contains(&r.priority) {
            return Err(FieldError::new(
                "priority",
                format!("priority must be within {:?}", limits::PRIORITY_RANGE),
            ));
        }
        let assign_timeout = timeout(
            "assign_timeout_ms",
            r.assign_timeout_ms,
            limits::DEFAULT_ASSIGN_TIMEOUT,
            limits::MAX_ASSIGN_TIMEOUT,
        )?;
        let execution_timeout = timeout(
            "execution_timeout_ms",
            r.execution_timeout_ms,
            limits::DEFAULT_EXECUTION_TIMEOUT,
            limits::MAX_EXECUTION_TIMEOUT,
        )?;
        let max_attempts = r.max_attempts.unwrap_or(limits::DEFAULT_MAX_ATTEMPTS);
        if !(1..=limits::MAX_MAX_ATTEMPTS).contains(&max_attempts) {
            return Err(FieldError::new(
                "max_attempts",
                format!("max_attempts must be 1 to {}", limits::MAX_MAX_ATTEMPTS),
            ));
        }
        Ok(NewTask {
            id: TaskId::new(),
            scope,
            task_type: r.task_type,
            payload: r.payload,
            selectors,
            connector_id: r.connector,
            capabilities: r.capabilities,
            priority: r.priority,
            assign_timeout,
            execution_timeout,
            max_attempts,
            wait_for_delegate: r.wait_for_delegate,
            idempotency: None,
            created_at: Utc::now(),
        })
    }
}

/// `ms` (or `default`) as a duration, refused when zero or over `max`.
fn timeout(field: &'static str, ms: Option<u64>, default: Duration, max: Duration) -> Result<Duration, FieldError> {
    let d = ms.map_or(default, Duration::from_millis);
    if d.is_zero() || d > max {
        return Err(FieldError::new(
            field,
            format!("{field} must be 1 to {} milliseconds", max.as_millis()),
        ));
    }
    Ok(d)
}

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
    /// While it waits: its priority plus one for every 10 s it has waited, which orders
    /// the queue (docs/rules.md, "The queue's order"), as of this answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_priority: Option<i64>,
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
            effective_priority: (t.state == TaskState::Queued).then(|| t.effective_priority(chrono::Utc::now())),
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

#[cfg(test)]
mod submission_tests {
    use super::*;

    fn body(extra: serde_json::Value) -> SubmitTask {
        let mut v = serde_json::json!({"account": "acme", "type": "echo"});
        if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
            v.extend(extra.clone());
        }
        serde_json::from_value(v).unwrap()
    }

    fn refused(extra: serde_json::Value) -> FieldError {
        NewTask::try_from(body(extra)).expect_err("refused")
    }

    #[test]
    fn a_submission_makes_a_task_with_the_defaults_and_normalized_selectors() {
        let task = NewTask::try_from(body(serde_json::json!({"org": "web", "selectors": [" GPU "]}))).unwrap();
        assert_eq!(task.scope.to_string(), "acme/web");
        assert_eq!(task.assign_timeout, limits::DEFAULT_ASSIGN_TIMEOUT);
        assert_eq!(task.execution_timeout, limits::DEFAULT_EXECUTION_TIMEOUT);
        assert_eq!(task.max_attempts, limits::DEFAULT_MAX_ATTEMPTS);
        assert_eq!(
            task.selectors.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            vec!["gpu"]
        );
        assert!(task.idempotency.is_none(), "the caller adds it");
    }

    #[test]
    fn each_limit_is_refused_naming_its_field() {
        assert_eq!(refused(serde_json::json!({"project": "p"})).field, "project");
        assert_eq!(refused(serde_json::json!({"priority": 1001})).field, "priority");
        assert_eq!(
            refused(serde_json::json!({"assign_timeout_ms": 0})).field,
            "assign_timeout_ms"
        );
        assert_eq!(
            refused(serde_json::json!({"execution_timeout_ms": 86_400_001u64})).field,
            "execution_timeout_ms"
        );
        assert_eq!(refused(serde_json::json!({"max_attempts": 11})).field, "max_attempts");
        let many: Vec<String> = (0..=limits::MAX_SELECTORS).map(|i| format!("s{i}")).collect();
        assert_eq!(refused(serde_json::json!({"selectors": many})).field, "selectors");
        assert_eq!(refused(serde_json::json!({"selectors": ["  "]})).field, "selectors");
        let big = "x".repeat(PAYLOAD_MAX_BYTES);
        let e = refused(serde_json::json!({"payload": big}));
        assert_eq!((e.field, e.too_large), ("payload", true));
        assert!(!refused(serde_json::json!({"priority": -1001})).too_large);
    }
}
