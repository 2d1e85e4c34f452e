//! The pipeline API's task bodies: `/api/v1/tasks`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use switchboard_domain::policy::{
    BACKOFF_FACTOR_MAX, BACKOFF_MAX, Backoff, CONCURRENCY_LIMIT_MAX, Concurrency, ConcurrencyStrategy, Ending,
    RetryPolicy,
};
use switchboard_domain::selector::parse_selectors;
use switchboard_domain::task::{FieldError, PAYLOAD_MAX_BYTES, limits};
use switchboard_domain::{
    Attempt, Capability, ConnectorId, Failure, Ident, InstanceId, NewTask, Scope, Selector, Task, TaskAttempt, TaskId,
    TaskState, TaskType,
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
        // A limit is checked whether or not a key comes with it; without one it limits
        // nothing (the task view shows no key).
        let limit = r.concurrency_limit.unwrap_or(1);
        if !(1..=CONCURRENCY_LIMIT_MAX).contains(&limit) {
            return Err(FieldError::new(
                "concurrency_limit",
                format!("concurrency_limit must be 1 to {CONCURRENCY_LIMIT_MAX}"),
            ));
        }
        let concurrency = match r.concurrency_key {
            None => None,
            Some(key) => Some(
                Concurrency::new(key, limit, r.concurrency_strategy.unwrap_or_default())
                    .map_err(|(field, e)| FieldError::new(field, e))?,
            ),
        };
        let retry = r.retry.map(RetryInput::checked).transpose()?;
        if r.secrets.len() > switchboard_domain::vault::MAX_PER_TASK {
            return Err(FieldError::new(
                "secrets",
                format!(
                    "a task names at most {} secrets",
                    switchboard_domain::vault::MAX_PER_TASK
                ),
            ));
        }
        if let Some(twice) = r
            .secrets
            .iter()
            .enumerate()
            .find_map(|(i, n)| r.secrets[..i].contains(n).then_some(n))
        {
            return Err(FieldError::new("secrets", format!("the secret {twice} is named twice")));
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
            concurrency,
            retry,
            // Resolved to the secrets they name by the server, which sees the store.
            secrets: Vec::new(),
        })
    }
}

/// A retry policy as a submission gives it: every field may be left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RetryInput {
    /// The endings retried (default `["delegate_lost"]`).
    #[serde(default)]
    pub on: Option<Vec<Ending>>,
    /// With `failed` in `on`: only failures reported with one of these codes (at most 16).
    #[serde(default)]
    pub error_codes: Vec<String>,
    /// The wait before the first retry, in milliseconds (default 0, at most 1 day).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 86_400_000))]
    pub initial_delay_ms: Option<u64>,
    /// What each later wait is multiplied by (default 2, 1 to 10).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10))]
    pub backoff_factor: Option<f64>,
    /// The longest wait, in milliseconds (default the larger of the initial delay and 5
    /// min, at most 1 day; at least the initial delay).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 86_400_000))]
    pub max_delay_ms: Option<u64>,
    /// Prefer an instance that has not run the task (default true).
    #[serde(default)]
    pub prefer_different_instance: Option<bool>,
}

impl RetryInput {
    /// The policy it gives, every field checked (and named, as `retry.backoff_factor`).
    pub fn checked(self) -> Result<RetryPolicy, FieldError> {
        self.check()?;
        let policy = RetryPolicy::from(self);
        policy.check().map_err(|(field, e)| FieldError::new(field, e))?;
        Ok(policy)
    }

    /// Checks each field as given, naming it (`retry.backoff_factor`).
    fn check(&self) -> Result<(), FieldError> {
        let most = u64::try_from(BACKOFF_MAX.as_millis()).unwrap_or(u64::MAX);
        for (field, value) in [
            ("retry.initial_delay_ms", self.initial_delay_ms),
            ("retry.max_delay_ms", self.max_delay_ms),
        ] {
            if value.is_some_and(|ms| ms > most) {
                return Err(FieldError::new(field, format!("must be at most {most} (1 day)")));
            }
        }
        if let Some(f) = self.backoff_factor
            && !(1.0..=BACKOFF_FACTOR_MAX).contains(&f)
        {
            return Err(FieldError::new(
                "retry.backoff_factor",
                format!("must be 1 to {BACKOFF_FACTOR_MAX}"),
            ));
        }
        if let (Some(initial), Some(max)) = (self.initial_delay_ms, self.max_delay_ms)
            && max < initial
        {
            return Err(FieldError::new(
                "retry.max_delay_ms",
                "must be at least initial_delay_ms",
            ));
        }
        Ok(())
    }
}

impl From<RetryInput> for RetryPolicy {
    fn from(r: RetryInput) -> Self {
        let initial_ms = r.initial_delay_ms.unwrap_or(0);
        RetryPolicy {
            on: match r.on {
                Some(on) => on.into_iter().collect(),
                None => RetryPolicy::default().on,
            },
            error_codes: r.error_codes,
            backoff: Backoff {
                initial_ms,
                factor: r.backoff_factor.unwrap_or(2.0),
                max_ms: r.max_delay_ms.unwrap_or(initial_ms.max(5 * 60 * 1000)),
            },
            prefer_different_instance: r.prefer_different_instance.unwrap_or(true),
        }
    }
}

/// A retry policy as the API shows it (the same fields as [`RetryInput`], all given).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RetryView {
    pub on: Vec<Ending>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_codes: Vec<String>,
    pub initial_delay_ms: u64,
    pub backoff_factor: f64,
    pub max_delay_ms: u64,
    pub prefer_different_instance: bool,
}

impl From<&RetryPolicy> for RetryView {
    fn from(p: &RetryPolicy) -> Self {
        RetryView {
            on: p.on.iter().copied().collect(),
            error_codes: p.error_codes.clone(),
            initial_delay_ms: p.backoff.initial_ms,
            backoff_factor: p.backoff.factor,
            max_delay_ms: p.backoff.max_ms,
            prefer_different_instance: p.prefer_different_instance,
        }
    }
}

/// One attempt of a task, as `GET /api/v1/tasks/{id}/attempts` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttemptView {
    pub attempt: Attempt,
    pub instance_id: InstanceId,
    pub assigned_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquired_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    /// How it ended: the task's state after it (`queued` when given back or re-queued),
    /// or `failed` / `timed_out` for a run its retry policy retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<TaskState>,
    /// Why it ended, when it ended badly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// When it was retried: when the next attempt was due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<DateTime<Utc>>,
}

impl From<&TaskAttempt> for AttemptView {
    fn from(a: &TaskAttempt) -> Self {
        AttemptView {
            attempt: a.attempt,
            instance_id: a.instance_id,
            assigned_at: a.assigned_at,
            acquired_at: a.acquired_at,
            ended_at: a.ended_at,
            outcome: a.outcome,
            failure: a.failure.clone(),
            retry_at: a.retry_at,
        }
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
    /// At most `concurrency_limit` tasks of this key (letters, digits and `. _ - : / @`,
    /// at most 128 bytes) are assigned or running at once in the account.
    #[serde(default)]
    pub concurrency_key: Option<String>,
    /// With `concurrency_key`: 1 to 10000 (default 1). Checked without one too, where it
    /// limits nothing.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10_000))]
    pub concurrency_limit: Option<u32>,
    /// With `concurrency_key`: `keep_all` (default), or `cancel_older` to cancel the key's
    /// waiting tasks when this one arrives. Without a key it has no effect.
    #[serde(default)]
    pub concurrency_strategy: Option<ConcurrencyStrategy>,
    /// How its runs are retried (default: re-queued only when its instance is lost).
    #[serde(default)]
    pub retry: Option<RetryInput>,
    /// Secrets it uses, by name (at most 32, no repeats): each resolves to the secret of
    /// that name nearest the task's scope that serves it, and needs `secrets:access` at
    /// that secret's scope. Their values reach only the instance that acquires it.
    #[serde(default)]
    pub secrets: Vec<Ident>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_strategy: Option<ConcurrencyStrategy>,
    /// The retry policy that applies (its own, or the default).
    pub retry: RetryView,
    /// While it waits for a retry's backoff: when the next attempt is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<DateTime<Utc>>,
    /// The secrets it uses, by name (never their values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<Ident>,
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
            concurrency_key: s.concurrency.as_ref().map(|c| c.key.clone()),
            concurrency_limit: s.concurrency.as_ref().map(|c| c.limit),
            concurrency_strategy: s.concurrency.as_ref().map(|c| c.strategy),
            retry: RetryView::from(s.retry_policy().as_ref()),
            retry_at: t.retry_at.filter(|_| t.state == TaskState::Queued),
            secrets: s.secrets.iter().map(|u| u.name.clone()).collect(),
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
        assert_eq!(
            refused(serde_json::json!({"concurrency_limit": 0})).field,
            "concurrency_limit"
        );
        assert_eq!(
            refused(serde_json::json!({"concurrency_key": "a b"})).field,
            "concurrency_key"
        );
        assert_eq!(
            refused(serde_json::json!({"concurrency_key": "k", "concurrency_limit": 0})).field,
            "concurrency_limit"
        );
        assert_eq!(
            refused(serde_json::json!({"retry": {"backoff_factor": 0.5}})).field,
            "retry.backoff_factor"
        );
        assert_eq!(
            refused(serde_json::json!({"retry": {"initial_delay_ms": 90_000_000u64}})).field,
            "retry.initial_delay_ms"
        );
        assert_eq!(
            refused(serde_json::json!({"retry": {"initial_delay_ms": 5000, "max_delay_ms": 10}})).field,
            "retry.max_delay_ms"
        );
        assert_eq!(
            refused(serde_json::json!({"retry": {"on": ["timed_out"], "error_codes": ["E"]}})).field,
            "retry.error_codes"
        );
    }

    #[test]
    fn a_submission_may_carry_a_concurrency_key_and_a_retry_policy() {
        let task = NewTask::try_from(body(serde_json::json!({
            "concurrency_key": "deploy-prod",
            "concurrency_strategy": "cancel_older",
            "retry": {"on": ["failed", "timed_out"], "initial_delay_ms": 500, "backoff_factor": 3}
        })))
        .unwrap();
        let c = task.concurrency.expect("a key");
        assert_eq!(
            (c.key.as_str(), c.limit, c.strategy),
            ("deploy-prod", 1, ConcurrencyStrategy::CancelOlder)
        );
        let retry = task.retry.expect("a policy");
        assert_eq!(retry.on, [Ending::Failed, Ending::TimedOut].into());
        assert_eq!(
            (retry.backoff.initial_ms, retry.backoff.factor, retry.backoff.max_ms),
            (500, 3.0, 300_000)
        );
        assert!(retry.prefer_different_instance);
    }
}

/// `GET /api/v1/tasks/{id}/logs`: a page of a task's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskLogPage {
    pub task_id: TaskId,
    /// In order: attempt, then offset. A chunk with `cut_bytes` is the marker where
    /// output was cut to keep the log within its bound (its `text` is empty).
    pub chunks: Vec<switchboard_domain::tasklog::LogChunk>,
    /// Where to read on from (`attempt` and `offset`).
    pub next: switchboard_domain::tasklog::LogPosition,
    /// The task has ended and this page reached the end of its log: nothing more will
    /// come.
    pub ended: bool,
    /// The task's state when the page was read.
    pub state: TaskState,
}
