//! Tasks and their lifecycle.
//!
//! The lifecycle is one pure function, [`transition`]: every state change anywhere in
//! Switchboard (the stores included) goes through it, so an invalid change is refused in
//! one place. Every change after assignment is also *fenced* by the task's [`Attempt`]:
//! a report that names an attempt which is no longer current changes nothing.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::capability::Capability;
use crate::ident::{Ident, Scope};
use crate::ids::{ConnectorId, InstanceId, TaskId};
use crate::policy::{self, Concurrency, Ending, RetryPolicy};
use crate::selector::Selectors;

/// The largest payload accepted, in bytes of JSON.
pub const PAYLOAD_MAX_BYTES: usize = 1024 * 1024;

/// What kind of work a task is (`http_check`, `echo`, `shell`...); instances list the
/// types they support.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct TaskType(pub Ident);

impl TaskType {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for TaskType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl fmt::Debug for TaskType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0.as_str(), f)
    }
}

/// The fencing number of a task: 1 for its first assignment, one more for each later one.
/// 0 means never assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct Attempt(pub u32);

impl Attempt {
    pub const NONE: Attempt = Attempt(0);

    pub fn next(self) -> Attempt {
        Attempt(self.0 + 1)
    }
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for an instance.
    Queued,
    /// Pushed to one instance, which has not acquired it yet.
    Assigned,
    /// Acquired by its instance and running.
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// Not assigned within its assign timeout.
    Expired,
    /// Ran past its execution timeout.
    TimedOut,
}

impl TaskState {
    pub const ALL: [TaskState; 8] = [
        TaskState::Queued,
        TaskState::Assigned,
        TaskState::Running,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Cancelled,
        TaskState::Expired,
        TaskState::TimedOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Assigned => "assigned",
            TaskState::Running => "running",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
            TaskState::Expired => "expired",
            TaskState::TimedOut => "timed_out",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, TaskState::Queued | TaskState::Assigned | TaskState::Running)
    }

    /// Whether a task in this state occupies a slot of its instance.
    pub fn holds_instance(self) -> bool {
        matches!(self, TaskState::Assigned | TaskState::Running)
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that happens to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskEvent {
    /// Claimed for an instance and pushed to it.
    Assign,
    /// The instance fetched it and started.
    Acquire,
    /// The assignment was lost before the task started (acknowledge timeout, the instance
    /// disappeared, refused, or failed validation): back to the queue.
    Release,
    /// A running task's instance was lost and attempts remain: back to the queue.
    Requeue,
    Succeed,
    Fail,
    Cancel,
    Expire,
    TimeOut,
}

impl TaskEvent {
    pub const ALL: [TaskEvent; 9] = [
        TaskEvent::Assign,
        TaskEvent::Acquire,
        TaskEvent::Release,
        TaskEvent::Requeue,
        TaskEvent::Succeed,
        TaskEvent::Fail,
        TaskEvent::Cancel,
        TaskEvent::Expire,
        TaskEvent::TimeOut,
    ];

    /// The states this event may be applied in, derived from [`transition`] so that SQL
    /// predicates built from it can never disagree with the state machine.
    pub fn sources(self) -> Vec<TaskState> {
        TaskState::ALL
            .into_iter()
            .filter(|s| transition(*s, self).is_ok())
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a task that is {from} cannot {event:?}")]
pub struct InvalidTransition {
    pub from: TaskState,
    pub event: TaskEvent,
}

/// The task state machine. Returns the state after `event`, or refuses it.
pub fn transition(from: TaskState, event: TaskEvent) -> Result<TaskState, InvalidTransition> {
    use TaskEvent as E;
    use TaskState as S;
    let to = match (from, event) {
        (S::Queued, E::Assign) => S::Assigned,
        (S::Assigned, E::Acquire) => S::Running,
        (S::Assigned, E::Release) => S::Queued,
        (S::Running, E::Requeue) => S::Queued,
        (S::Running, E::Succeed) => S::Succeeded,
        // A queued task fails when no delegate could ever take it or every candidate failed
        // validation; an assigned one when its instance is lost and no attempts remain.
        (S::Queued | S::Assigned | S::Running, E::Fail) => S::Failed,
        (S::Queued | S::Assigned | S::Running, E::Cancel) => S::Cancelled,
        (S::Queued, E::Expire) => S::Expired,
        (S::Running, E::TimeOut) => S::TimedOut,
        _ => return Err(InvalidTransition { from, event }),
    };
    Ok(to)
}

/// Why a task failed, as a stable machine-readable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// No registered delegate could ever take it (scope, selectors, task type).
    NoEligibleDelegate,
    /// Every eligible instance answered that it cannot reach a capability.
    ValidationFailed,
    /// Its instance disappeared and no attempts remained.
    DelegateLost,
    /// The delegate ran it and reported failure.
    TaskError,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::NoEligibleDelegate => "no_eligible_delegate",
            FailureReason::ValidationFailed => "validation_failed",
            FailureReason::DelegateLost => "delegate_lost",
            FailureReason::TaskError => "task_error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::NoEligibleDelegate,
            Self::ValidationFailed,
            Self::DelegateLost,
            Self::TaskError,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// A failure: its code and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Failure {
    pub reason: FailureReason,
    pub detail: String,
    /// The delegate's own error code for a `task_error`, which a retry policy's
    /// `error_codes` match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// `false` when the delegate said that running it again cannot help: no retry policy
    /// retries it.
    #[serde(default = "crate::task::yes", skip_serializing_if = "crate::task::is_true")]
    pub retryable: bool,
}

impl Failure {
    /// A retryable failure without a code.
    pub fn new(reason: FailureReason, detail: impl Into<String>) -> Self {
        Failure {
            reason,
            detail: detail.into(),
            code: None,
            retryable: true,
        }
    }
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// How a waiting task's priority rises: by one for every `PRIORITY_AGING_STEP_MS` it has
/// waited, so that a low priority is delayed, never starved (docs/rules.md, "The queue's
/// order"). At 10 s a step, a task of priority -1000 overtakes fresh tasks of priority
/// 1000 after 20,000 s (5.6 h) of waiting; one of priority 0 overtakes fresh tasks of
/// priority 6 after a minute.
pub const PRIORITY_AGING_STEP_MS: i64 = 10_000;

/// The queue's order, as one number: smaller goes first. A task of priority `p` sorts as
/// if it had been created `p` aging steps earlier, which orders by effective priority
/// (priority plus steps waited) at every instant alike, since every waiting task ages at
/// the same rate; among equals, the older first. Stored with each task, so the order is
/// an index, not a computation over the queue.
pub fn queue_key(created_at: DateTime<Utc>, priority: i32) -> i64 {
    created_at
        .timestamp_millis()
        .saturating_sub(i64::from(priority).saturating_mul(PRIORITY_AGING_STEP_MS))
}

/// Limits of a task's settings; the defaults apply when a submission leaves them out.
pub mod limits {
    use std::time::Duration;

    pub const DEFAULT_ASSIGN_TIMEOUT: Duration = Duration::from_secs(5 * 60);
    pub const MAX_ASSIGN_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
    pub const DEFAULT_EXECUTION_TIMEOUT: Duration = Duration::from_secs(30 * 60);
    pub const MAX_EXECUTION_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 1;
    pub const MAX_MAX_ATTEMPTS: u32 = 10;
    pub const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -1000..=1000;
    pub const MAX_SELECTORS: usize = 32;
    pub const MAX_CAPABILITIES: usize = 16;
}

/// Why a submission does not make a task: the field at fault and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
    /// The payload is over [`PAYLOAD_MAX_BYTES`]: too large rather than malformed.
    pub too_large: bool,
}

impl FieldError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
            too_large: false,
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

/// A validated submission: everything a task is made of before it has a state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewTask {
    pub id: TaskId,
    #[serde(flatten)]
    pub scope: Scope,
    pub task_type: TaskType,
    pub payload: serde_json::Value,
    pub selectors: Selectors,
    pub connector_id: Option<ConnectorId>,
    pub capabilities: Vec<Capability>,
    pub priority: i32,
    #[serde(with = "duration_ms")]
    pub assign_timeout: Duration,
    #[serde(with = "duration_ms")]
    pub execution_timeout: Duration,
    pub max_attempts: u32,
    pub wait_for_delegate: bool,
    /// The submitter's `Idempotency-Key`, with the fingerprint of the body it came with.
    pub idempotency: Option<Idempotency>,
    pub created_at: DateTime<Utc>,
    /// At most so many tasks of this key run at once in the account.
    #[serde(default)]
    pub concurrency: Option<Concurrency>,
    /// How its runs are retried; `None`: [`RetryPolicy::default`].
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    /// The secrets it uses, by the names it was submitted with (see [`crate::vault`]).
    #[serde(default)]
    pub secrets: Vec<crate::vault::SecretUse>,
}

impl NewTask {
    /// The retry policy that applies: its own, else the default.
    pub fn retry_policy(&self) -> std::borrow::Cow<'_, RetryPolicy> {
        match &self.retry {
            Some(p) => std::borrow::Cow::Borrowed(p),
            None => std::borrow::Cow::Owned(RetryPolicy::default()),
        }
    }
}

/// The fingerprint of a request body for idempotency: the SHA-256 of its canonical bytes,
/// in hex.
pub fn fingerprint(canonical: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(canonical)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An `Idempotency-Key` and the fingerprint (a hash) of the request it was first used with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Idempotency {
    pub key: String,
    pub fingerprint: String,
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    #[serde(flatten)]
    pub spec: NewTask,
    pub state: TaskState,
    /// The current attempt: every report must name it.
    pub attempt: Attempt,
    /// How many times it has started running (acquired); `max_attempts` bounds this.
    pub runs: u32,
    /// The instance it is assigned to or running on.
    pub instance_id: Option<InstanceId>,
    pub failure: Option<Failure>,
    pub result: Option<serde_json::Value>,
    pub progress: Option<serde_json::Value>,
    pub updated_at: DateTime<Utc>,
    pub assigned_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// While running: when it times out unless a heartbeat lists it again first. Set to
    /// acquire time + execution timeout, pushed forward by every heartbeat that lists the
    /// task ("heartbeats keep a running task's execution timeout alive").
    pub run_deadline: Option<DateTime<Utc>>,
    /// While queued for a retry: not placed before this (its backoff).
    pub retry_at: Option<DateTime<Utc>>,
}

/// What [`Task::apply`] did besides changing the task.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Applied {
    /// The instance whose slot this frees.
    pub freed: Option<InstanceId>,
    /// The run ended in a way its retry policy retries: how, and why. The task is queued
    /// again (with [`Task::retry_at`]).
    pub retried: Option<(Ending, Option<Failure>)>,
}

impl Task {
    /// A freshly submitted task: queued, never assigned.
    pub fn queued(spec: NewTask) -> Self {
        let at = spec.created_at;
        Task {
            spec,
            state: TaskState::Queued,
            attempt: Attempt::NONE,
            runs: 0,
            instance_id: None,
            failure: None,
            result: None,
            progress: None,
            updated_at: at,
            assigned_at: None,
            started_at: None,
            finished_at: None,
            run_deadline: None,
            retry_at: None,
        }
    }

    /// When a queued task expires: its assign timeout after its creation, or, waiting
    /// for a retry, after the retry is due (a retry's wait for an instance starts then).
    pub fn assign_deadline(&self) -> DateTime<Utc> {
        let from = self.retry_at.unwrap_or(self.spec.created_at);
        from.checked_add_signed(chrono::Duration::from_std(self.spec.assign_timeout).unwrap_or(chrono::Duration::MAX))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    pub fn id(&self) -> TaskId {
        self.spec.id
    }

    /// Applies `event` to this task as of `at`: the pure half of every stored transition
    /// except [`TaskEvent::Assign`] (which needs the store's claim, to respect capacity).
    /// On refusal nothing changes.
    ///
    /// A run that ends (`Fail`, `TimeOut`, `Requeue`) in a way the task's retry policy
    /// retries, while `max_attempts` allow another run, sends the task back to the queue
    /// instead, due after its backoff (docs/rules.md, "Retries"); the failure is then the
    /// attempt's, not the task's.
    pub fn apply(
        &mut self,
        event: TaskEvent,
        at: DateTime<Utc>,
        failure: Option<Failure>,
        result: Option<serde_json::Value>,
    ) -> Result<Applied, InvalidTransition> {
        if event == TaskEvent::Assign {
            return Err(InvalidTransition {
                from: self.state,
                event,
            });
        }
        let mut to = transition(self.state, event)?;
        let mut applied = Applied::default();
        if self.state == TaskState::Running
            && let Some(ending) = policy::ending_of(event, failure.as_ref())
        {
            let policy = self.spec.retry_policy();
            if self.attempts_remain() && policy.retries(ending, failure.as_ref()) {
                to = TaskState::Queued;
                let wait = chrono::Duration::from_std(policy.backoff.delay(self.runs)).unwrap_or(chrono::Duration::MAX);
                self.retry_at = Some(at.checked_add_signed(wait).unwrap_or(at));
                applied.retried = Some((ending, failure.clone()));
            }
        }
        let from = std::mem::replace(&mut self.state, to);
        self.updated_at = at;
        if event == TaskEvent::Acquire {
            self.runs += 1;
            self.started_at = Some(at);
            let budget = chrono::Duration::from_std(self.spec.execution_timeout).unwrap_or(chrono::Duration::MAX);
            self.run_deadline = Some(at + budget);
        }
        if to != TaskState::Running {
            self.run_deadline = None;
        }
        // Kept through the retry's assignment, so that an offer given back keeps the
        // retry's assign deadline; gone once it runs or ends.
        if !matches!(to, TaskState::Queued | TaskState::Assigned) {
            self.retry_at = None;
        }
        if applied.retried.is_none() {
            if failure.is_some() {
                self.failure = failure;
            }
            if result.is_some() {
                self.result = result;
            }
        }
        if to.is_terminal() {
            self.finished_at = Some(at);
        }
        if from.holds_instance() && !to.holds_instance() {
            applied.freed = self.instance_id.take();
        }
        Ok(applied)
    }

    /// Whether a running task that lost its instance may run again.
    pub fn attempts_remain(&self) -> bool {
        self.runs < self.spec.max_attempts
    }

    /// Its priority plus one for every aging step it has waited since it was submitted,
    /// at `now` (what orders the queue: see [`queue_key`]).
    pub fn effective_priority(&self, now: DateTime<Utc>) -> i64 {
        let waited = (now - self.spec.created_at).num_milliseconds().max(0);
        i64::from(self.spec.priority).saturating_add(waited / PRIORITY_AGING_STEP_MS)
    }
}

/// One assignment of a task to an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskAttempt {
    pub task_id: TaskId,
    pub attempt: Attempt,
    pub instance_id: InstanceId,
    pub assigned_at: DateTime<Utc>,
    pub acquired_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// How the attempt ended, once it did: the task's state after it (`queued` for a
    /// release or a re-queue), or, for a run its retry policy retried, how the run ended
    /// (`failed`, `timed_out`; the task went back to the queue).
    pub outcome: Option<TaskState>,
    /// Why it ended, when it ended badly.
    #[serde(default)]
    pub failure: Option<Failure>,
    /// When it was retried: when the next attempt was due.
    #[serde(default)]
    pub retry_at: Option<DateTime<Utc>>,
}

/// Serializes a [`Duration`] as whole milliseconds.
pub mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_happy_path_is_allowed() {
        let mut s = TaskState::Queued;
        for e in [TaskEvent::Assign, TaskEvent::Acquire, TaskEvent::Succeed] {
            s = transition(s, e).expect("allowed");
        }
        assert_eq!(s, TaskState::Succeeded);
    }

    #[test]
    fn releases_and_requeues_return_to_the_queue() {
        assert_eq!(
            transition(TaskState::Assigned, TaskEvent::Release),
            Ok(TaskState::Queued)
        );
        assert_eq!(
            transition(TaskState::Running, TaskEvent::Requeue),
            Ok(TaskState::Queued)
        );
        assert!(transition(TaskState::Running, TaskEvent::Release).is_err());
        assert!(
            transition(TaskState::Assigned, TaskEvent::Succeed).is_err(),
            "must acquire first"
        );
    }

    #[test]
    fn only_queued_tasks_expire_and_only_running_ones_time_out() {
        assert_eq!(TaskEvent::Expire.sources(), vec![TaskState::Queued]);
        assert_eq!(TaskEvent::TimeOut.sources(), vec![TaskState::Running]);
        assert_eq!(TaskEvent::Assign.sources(), vec![TaskState::Queued]);
    }

    #[test]
    fn state_names_round_trip() {
        for s in TaskState::ALL {
            assert_eq!(TaskState::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).expect("serializes"), s.as_str());
        }
    }

    #[test]
    fn applying_an_event_frees_the_slot_only_when_leaving_a_held_state() {
        let now = Utc::now();
        let instance = InstanceId::new();
        let mut task = Task {
            spec: NewTask {
                created_at: now,
                ..sample_task()
            },
            state: TaskState::Assigned,
            attempt: Attempt(1),
            runs: 0,
            instance_id: Some(instance),
            failure: None,
            result: None,
            progress: None,
            updated_at: now,
            assigned_at: Some(now),
            started_at: None,
            finished_at: None,
            run_deadline: None,
            retry_at: None,
        };
        assert_eq!(task.apply(TaskEvent::Acquire, now, None, None), Ok(Applied::default()));
        assert_eq!(
            (task.state, task.runs, task.started_at),
            (TaskState::Running, 1, Some(now))
        );
        assert_eq!(
            task.run_deadline,
            Some(now + chrono::Duration::minutes(30)),
            "acquire + execution timeout"
        );
        assert!(!task.attempts_remain());
        let before = task.clone();
        assert!(task.apply(TaskEvent::Expire, now, None, None).is_err());
        assert_eq!(task, before, "a refused event changes nothing");
        let out = serde_json::json!({"ok": true});
        assert_eq!(
            task.apply(TaskEvent::Succeed, now, None, Some(out.clone()))
                .map(|a| a.freed),
            Ok(Some(instance))
        );
        assert_eq!(task.run_deadline, None, "only a running task has a run deadline");
        assert_eq!(
            (task.state, task.instance_id, task.result, task.finished_at),
            (TaskState::Succeeded, None, Some(out), Some(now))
        );
    }

    fn any_state() -> impl Strategy<Value = TaskState> {
        proptest::sample::select(TaskState::ALL.to_vec())
    }

    fn sample_task() -> NewTask {
        NewTask {
            id: TaskId::new(),
            scope: crate::Scope::parse_path("a").expect("valid"),
            task_type: TaskType(Ident::parse("echo").expect("valid")),
            payload: serde_json::json!({}),
            selectors: Selectors::new(),
            connector_id: None,
            capabilities: vec![],
            priority: 0,
            assign_timeout: limits::DEFAULT_ASSIGN_TIMEOUT,
            execution_timeout: limits::DEFAULT_EXECUTION_TIMEOUT,
            max_attempts: 1,
            wait_for_delegate: false,
            idempotency: None,
            created_at: Utc::now(),
            concurrency: None,
            retry: None,
            secrets: Vec::new(),
        }
    }

    /// A task running on `instance` as attempt `runs`, having started `runs` times.
    fn running(spec: NewTask, instance: InstanceId, runs: u32) -> Task {
        let mut t = Task::queued(spec);
        t.state = TaskState::Running;
        t.attempt = Attempt(runs);
        t.runs = runs;
        t.instance_id = Some(instance);
        t
    }

    #[test]
    fn a_retried_run_goes_back_to_the_queue_after_its_backoff_until_attempts_run_out() {
        use crate::policy::{Backoff, Ending};
        let spec = NewTask {
            max_attempts: 3,
            retry: Some(RetryPolicy {
                on: [Ending::Failed].into(),
                backoff: Backoff {
                    initial_ms: 1_000,
                    factor: 3.0,
                    max_ms: 60_000,
                },
                ..RetryPolicy::default()
            }),
            ..sample_task()
        };
        let (i, at) = (InstanceId::new(), Utc::now());
        let failed = Failure::new(FailureReason::TaskError, "exit 1");
        let mut t = running(spec.clone(), i, 2);
        let applied = t.apply(TaskEvent::Fail, at, Some(failed.clone()), None).unwrap();
        assert_eq!(applied.freed, Some(i));
        assert_eq!(applied.retried, Some((Ending::Failed, Some(failed.clone()))));
        assert_eq!(t.state, TaskState::Queued);
        assert_eq!(
            t.retry_at,
            Some(at + chrono::Duration::seconds(3)),
            "second retry: 1 s x 3"
        );
        assert_eq!((t.failure, t.finished_at), (None, None), "the failure is the attempt's");

        let mut last = running(spec.clone(), i, 3);
        let applied = last.apply(TaskEvent::Fail, at, Some(failed.clone()), None).unwrap();
        assert_eq!(applied.retried, None, "no attempts remain");
        assert_eq!((last.state, last.failure), (TaskState::Failed, Some(failed.clone())));

        let mut timed_out = running(spec.clone(), i, 1);
        timed_out.apply(TaskEvent::TimeOut, at, None, None).unwrap();
        assert_eq!(timed_out.state, TaskState::TimedOut, "timed_out is not in `on`");

        let mut fatal = running(spec, i, 1);
        let not_retryable = Failure {
            retryable: false,
            ..failed
        };
        fatal.apply(TaskEvent::Fail, at, Some(not_retryable), None).unwrap();
        assert_eq!(fatal.state, TaskState::Failed, "the delegate said not retryable");
    }

    #[test]
    fn by_default_only_a_lost_instance_retries() {
        let spec = NewTask {
            max_attempts: 2,
            ..sample_task()
        };
        let (i, at) = (InstanceId::new(), Utc::now());
        let mut lost = running(spec.clone(), i, 1);
        let why = Failure::new(FailureReason::DelegateLost, "gone");
        lost.apply(TaskEvent::Fail, at, Some(why), None).unwrap();
        assert_eq!((lost.state, lost.retry_at), (TaskState::Queued, Some(at)), "at once");
        let mut failed = running(spec, i, 1);
        failed
            .apply(
                TaskEvent::Fail,
                at,
                Some(Failure::new(FailureReason::TaskError, "x")),
                None,
            )
            .unwrap();
        assert_eq!(failed.state, TaskState::Failed);
    }

    fn any_event() -> impl Strategy<Value = TaskEvent> {
        proptest::sample::select(TaskEvent::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn terminal_states_never_change(s in any_state(), e in any_event()) {
            if s.is_terminal() {
                prop_assert!(transition(s, e).is_err());
            }
        }

        #[test]
        fn every_event_has_one_target(e in any_event()) {
            let targets: std::collections::BTreeSet<_> =
                e.sources().into_iter().filter_map(|s| transition(s, e).ok()).collect();
            prop_assert_eq!(targets.len(), 1);
        }

        #[test]
        fn a_task_runs_only_after_an_assignment(events in proptest::collection::vec(any_event(), 0..30)) {
            // Whatever happens, every start was preceded by its own assignment: a task
            // cannot be acquired twice on one attempt, nor without being assigned.
            let (mut s, mut assigns, mut acquires) = (TaskState::Queued, 0, 0);
            for e in events {
                if let Ok(next) = transition(s, e) {
                    assigns += usize::from(e == TaskEvent::Assign);
                    acquires += usize::from(e == TaskEvent::Acquire);
                    prop_assert!(acquires <= assigns);
                    s = next;
                }
            }
        }

        #[test]
        fn aging_never_starves_a_task(
            old in limits::PRIORITY_RANGE,
            new in limits::PRIORITY_RANGE,
            later_ms in 0i64..30_000_000,
        ) {
            // A task submitted `later_ms` after another goes ahead of it only while it was
            // submitted within the head start its higher priority buys (its priority minus
            // the other's, in aging steps); from then on the older one goes first,
            // whatever the newer one's priority: nothing waits for ever.
            let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
            let first = queue_key(t0, old);
            let second = queue_key(t0 + chrono::Duration::milliseconds(later_ms), new);
            let head_start = i64::from(new - old) * PRIORITY_AGING_STEP_MS;
            if later_ms > head_start {
                prop_assert!(first < second);
            }
            if later_ms < head_start {
                prop_assert!(second < first);
            }
        }

        #[test]
        fn the_queue_key_orders_as_the_effective_priority_at_any_instant(
            (a_p, b_p) in (limits::PRIORITY_RANGE, limits::PRIORITY_RANGE),
            (a_age, b_age) in (0i64..20_000_000, 0i64..20_000_000),
            later in 0i64..10_000_000,
        ) {
            let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
            let task = |priority: i32, age_ms: i64| {
                let mut t = Task::queued(sample_task());
                t.spec.priority = priority;
                t.spec.created_at = now - chrono::Duration::milliseconds(age_ms);
                t
            };
            let (a, b) = (task(a_p, a_age), task(b_p, b_age));
            let at = now + chrono::Duration::milliseconds(later);
            if queue_key(a.spec.created_at, a_p) < queue_key(b.spec.created_at, b_p) {
                prop_assert!(a.effective_priority(at) >= b.effective_priority(at));
            }
        }
    }

    #[test]
    fn the_effective_priority_rises_a_step_every_ten_seconds() {
        let mut t = Task::queued(sample_task());
        t.spec.priority = -3;
        let created = t.spec.created_at;
        assert_eq!(t.effective_priority(created), -3);
        assert_eq!(
            t.effective_priority(created + chrono::Duration::milliseconds(9_999)),
            -3
        );
        assert_eq!(t.effective_priority(created + chrono::Duration::seconds(10)), -2);
        assert_eq!(t.effective_priority(created + chrono::Duration::seconds(95)), 6);
        assert_eq!(
            t.effective_priority(created - chrono::Duration::seconds(5)),
            -3,
            "never below its priority"
        );
    }
}
